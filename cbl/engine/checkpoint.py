"""Checkpoints: one file that rebuilds its own model, written atomically, loaded safely.

A checkpoint holds the model, optimizer, learning-rate step, bonafide centers,
epoch, best dev EER and its threshold, the torch RNG states and the resolved
config. Everything in it is a tensor or a plain Python value, so it loads with
``torch.load(..., weights_only=True)``: a checkpoint from the internet cannot run
code on the machine that opens it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from cbl.config import ExperimentConfig, config_from_dict, config_to_dict
from cbl.engine.diskspace import require_free_space
from cbl.engine.frozen import FrozenWeightsError, join_frozen
from cbl.errors import CblError, join_first
from cbl.yamlio import atomic_write_bytes

__all__ = [
    "CheckpointError",
    "checkpoint_signature",
    "load_checkpoint",
    "load_model_state",
    "resolve_checkpoint_path",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "verify_written",
]

FORMAT_VERSION = 1


class CheckpointError(CblError):
    """A checkpoint is missing, truncated, corrupt, or does not fit its model."""


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):  # a different GPU count: CUDA re-seeds from torch's
            torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | os.PathLike[str], payload: dict[str, Any], config: ExperimentConfig, *, verify: bool = False
) -> Path:
    """Serialise ``payload`` plus the resolved config to ``path`` (temporary name, fsync, then rename).

    ``verify``: read the temporary file back before the rename and compare its SHA-256
    with that of the bytes serialised (:func:`verify_written`); a mismatch is a
    CheckpointError and ``path`` keeps its old content.
    """
    buffer = io.BytesIO()
    torch.save({**payload, "config": config_to_dict(config), "format_version": FORMAT_VERSION}, buffer)
    require_free_space(Path(path), buffer.getbuffer().nbytes)  # a clear error, not a disk full mid-file
    if not verify:
        return atomic_write_bytes(path, buffer.getvalue())
    expected = hashlib.sha256(buffer.getbuffer()).hexdigest()
    return atomic_write_bytes(path, buffer.getvalue(), check=lambda tmp: verify_written(tmp, expected, Path(path)))


def verify_written(written: str | os.PathLike[str], sha256: str, target: Path) -> None:
    """Read ``written`` back in full and check it hashes to ``sha256``; else a CheckpointError naming ``target``.

    A checksum instead of ``torch.load``: the bytes serialised were a valid checkpoint,
    so bytes read back equal to them are one too, and hashing reads the file once in
    16-MiB blocks (seconds for XLS-R's 3.6 GB) where a load would rebuild every tensor
    (another 3.6 GB of memory). What it catches: a write the filesystem shortened,
    dropped or garbled on its way (network and FUSE storage, a quota hit reported
    late). What it cannot: damage after this read (the read may come from the page
    cache, not the medium): ``train.keep_previous_checkpoint: true`` keeps a fallback for that.
    """
    digest = hashlib.sha256()
    with open(written, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise CheckpointError(
            f"{target}: the checkpoint read back differs from the one written (the storage damaged it); "
            "the previous one is kept"
        )


def checkpoint_signature(path: str | os.PathLike[str]) -> str:
    """``<absolute path> size=N mtime_ns=M``: what tells this very checkpoint file from a retrained one.

    Results cached from a checkpoint (partial scores, the report's embeddings) are
    kept only while its signature is the same.
    """
    p = Path(path)
    stat = p.stat()
    return f"{p.resolve()} size={stat.st_size} mtime_ns={stat.st_mtime_ns}"


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``path`` names: the file itself, or best.pt (else last.pt) inside a folder."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: folder holds no best.pt or last.pt checkpoint")
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    return p


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], ExperimentConfig]:
    """Load a checkpoint safely; return (payload, config). Raises CheckpointError naming the file."""
    p = resolve_checkpoint_path(path)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise CheckpointError(
                f"{p}: refused: the file holds a pickled Python object ({refused.group(1)}), not only tensors "
                "and plain values (cbl loads checkpoints with weights_only=True so that a file cannot run code)"
            ) from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise CheckpointError(
            f"{p}: not a readable cbl checkpoint (truncated or corrupt?): "
            f"{reason.group(1).strip() if reason else _first_line(exc)}"
        ) from None
    except Exception as exc:
        raise CheckpointError(
            f"{p}: not a readable cbl checkpoint (truncated or corrupt?): {_first_line(exc)}"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{p}: not a cbl checkpoint (no model state or config inside)")
    try:
        payload = join_frozen(payload, p)  # frozen parameters stored once (cbl.engine.frozen); none: as it is
    except FrozenWeightsError as exc:
        raise CheckpointError(f"{p}: {exc}") from None
    try:
        config = config_from_dict(payload["config"])
    except CblError as exc:
        raise CheckpointError(f"{p}: its config does not load with this version of cbl: {exc}") from None
    return payload, config


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that names every mismatched key instead of a silent partial load."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                parts.append(f"{label}: {join_first(keys)}")
        raise CheckpointError(f"{source}: checkpoint does not fit the model ({'; '.join(parts)})")
    model.load_state_dict(state, strict=True)
