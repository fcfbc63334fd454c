"""Frozen parameters stored once: a checkpoint names them by a hash of their weights instead of holding them.

A frozen part of the model (the feature encoder when ``model.freeze_feature_encoder``;
the whole SSL model with ``model.freeze_ssl``) is the same in every checkpoint of
every trial. :func:`split_frozen` moves those parameters out of a checkpoint payload
into ``<store>/<sha256>.pt`` (content-addressed: written once, by whichever run
gets there first, atomically) and leaves a reference in the payload::

    "frozen_model": {"sha256": "<hex>", "keys": [...], "file": "<path relative to the checkpoint's folder>"}

:func:`join_frozen` puts them back when a checkpoint is loaded, after checking the
weights' hash: a store file that holds other weights is an error naming both
hashes, never a silently different model. A checkpoint without the reference (a
full state dict, as cbl wrote before) loads as it is. Store files are read with
``torch.load(..., weights_only=True)`` like checkpoints.

The hash covers each tensor's name, dtype, shape and bytes in name order
(SHA-256, Python's ``hashlib``).
"""

from __future__ import annotations

import hashlib
import io
import os
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cbl.engine.diskspace import require_free_space
from cbl.errors import CblError
from cbl.yamlio import atomic_write_bytes

__all__ = ["FROZEN_DIR", "FROZEN_KEY", "FrozenWeightsError", "join_frozen", "split_frozen", "weights_hash"]

FROZEN_DIR = "frozen"  # the store's folder name: <run folder>/frozen, or <experiment>/frozen in a sweep
FROZEN_KEY = "frozen_model"

# model -> (the frozen tensors' versions and storage, their hash): a frozen part is hashed once per run
_HASHES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()


class FrozenWeightsError(CblError):
    """A checkpoint's frozen weights are missing from the store, or the store holds other weights."""


def weights_hash(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over each tensor's name, dtype, shape and bytes, in name order (hex)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _frozen_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if not p.requires_grad]


def _cached_hash(model: nn.Module, tensors: dict[str, Tensor]) -> str:
    """The hash of ``tensors``, recomputed only when one of them was modified in place or replaced."""
    stamp = tuple((name, t.data_ptr(), t._version) for name, t in sorted(tensors.items()))
    cached = _HASHES.get(model)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    value = weights_hash(tensors)
    _HASHES[model] = (stamp, value)
    return value


def split_frozen(payload: dict[str, Any], model: nn.Module, store: Path, checkpoint_dir: Path) -> dict[str, Any]:
    """``payload`` with ``model``'s frozen parameters moved to ``store/<sha256>.pt`` and a reference left.

    ``checkpoint_dir`` is where the checkpoint goes (the reference is relative to it,
    so an experiment folder moved as a whole still loads). A model with no frozen
    parameter is returned unchanged.
    """
    names = _frozen_names(model)
    if not names:
        return payload
    state = payload["model"]
    frozen = {name: state[name] for name in names}
    digest = _cached_hash(model, frozen)
    path = store / f"{digest}.pt"
    if not path.is_file():
        buffer = io.BytesIO()
        torch.save({"sha256": digest, "tensors": {k: v.detach().cpu() for k, v in frozen.items()}}, buffer)
        require_free_space(path, buffer.getbuffer().nbytes)
        atomic_write_bytes(path, buffer.getvalue())
    reference = {"sha256": digest, "keys": sorted(names), "file": os.path.relpath(path, checkpoint_dir)}
    kept = {k: v for k, v in state.items() if k not in frozen}
    return {**payload, "model": kept, FROZEN_KEY: reference}


def _candidates(reference: dict[str, Any], checkpoint: Path) -> list[Path]:
    """Where the store file may be: the recorded relative path, then ``frozen/`` in each folder above."""
    name = f"{reference['sha256']}.pt"
    out = [checkpoint.parent / str(reference.get("file", name))]
    out += [folder / FROZEN_DIR / name for folder in checkpoint.resolve().parents]
    return out


def join_frozen(payload: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """``payload`` with the frozen parameters its reference names put back into ``payload["model"]``."""
    reference = payload.get(FROZEN_KEY)
    if not reference:
        return payload
    expected = str(reference["sha256"])
    found = next((p for p in _candidates(reference, checkpoint) if p.is_file()), None)
    if found is None:
        raise FrozenWeightsError(
            f"its frozen weights ({expected[:12]}..., {len(reference['keys'])} tensors) are not in a '{FROZEN_DIR}' "
            f"folder at {reference.get('file')} or above it; copy the experiment's {FROZEN_DIR}/ folder with it"
        )
    try:
        stored = torch.load(found, map_location="cpu", weights_only=True)
        tensors = stored["tensors"]
    except Exception as exc:
        raise FrozenWeightsError(f"{found}: not a readable frozen-weights file ({type(exc).__name__})") from None
    actual = weights_hash(tensors)
    if actual != expected or sorted(tensors) != sorted(reference["keys"]):
        raise FrozenWeightsError(
            f"{found}: holds frozen weights with hash {actual[:12]}..., but the checkpoint expects "
            f"{expected[:12]}... (the file was replaced or damaged)"
        )
    joined = {**payload, "model": {**tensors, **payload["model"]}}
    joined.pop(FROZEN_KEY)
    return joined
