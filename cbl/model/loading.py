"""Loading a speech SSL encoder: one path (transformers' Auto classes) for every supported family.

The class comes from the checkpoint's ``config.json`` (``model_type``), so a WavLM
checkpoint is fine-tuned as WavLM, with its relative position bias; a hub name, a
local ``save_pretrained`` folder and a cached download take that same path.
cbl's LayerDrop and SpecAugment settings replace the checkpoint's. ``tiny`` is a
randomly initialised, CPU-sized wav2vec2 built from a config (the demo and the
tests): its numbers say that the code runs, not how well anything detects spoofs.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cbl.config import looks_like_local_path
from cbl.errors import CblError, join_first

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "TINY_NAME",
    "checkpoint_normalizes",
    "load_ssl_model",
    "load_wav2vec2",
    "quiet_transformers",
    "ssl_config",
    "tiny_wav2vec2_config",
]

logger = logging.getLogger(__name__)

TINY_NAME = "tiny"
# config.model_type of the speech SSL encoders cbl fine-tunes (XLS-R 300M/1B/2B and MMS are "wav2vec2")
SUPPORTED_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
_warned_random_init = False  # the random-weights notice is printed once per process, not once per trial model


def tiny_wav2vec2_config():  # -> transformers.Wav2Vec2Config (lazy import keeps `import cbl` light)
    """A ~100k-parameter wav2vec2 with the standard 7-layer conv stack (20 ms frames, 400-sample receptive field)."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        conv_dim=(32,) * 7,
        # the real wav2vec2 kernels/strides, so frame rate and length arithmetic match XLS-R
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        # 64 instead of 128 keeps the positional conv (the largest single weight) proportionate to a 64-wide model
        num_conv_pos_embeddings=64,
        num_conv_pos_embedding_groups=16,
        # XLS-R's layout: layer norm in the conv stack (padding-safe, unlike group norm) and pre-LN transformer
        do_stable_layer_norm=True,
        feat_extract_norm="layer",
        # no SpecAugment, LayerDrop or dropout: a random-init model of this size underfits, it does not overfit
        mask_time_prob=0.0,
        layerdrop=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
    )


def _apply_fine_tuning(config: Any, layerdrop: float, mask_time_prob: float, mask_feature_prob: float) -> None:
    """cbl's LayerDrop and SpecAugment settings in place of the checkpoint's, on the config the model reads at
    every forward (its encoder holds the same object)."""
    config.layerdrop = float(layerdrop)
    config.mask_time_prob = float(mask_time_prob)
    config.mask_feature_prob = float(mask_feature_prob)
    config.apply_spec_augment = mask_time_prob > 0 or mask_feature_prob > 0


def _construction_config(config: Any, mask_time_prob: float, mask_feature_prob: float) -> Any:
    """The config to build the model with: the checkpoint's own, so that its weights load one to one
    (``masked_spec_embed`` exists when its mask probabilities are above 0), with masking turned on where cbl
    masks and the checkpoint did not (the mask vector then starts afresh)."""
    if (mask_time_prob > 0 or mask_feature_prob > 0) and not (
        config.mask_time_prob > 0 or config.mask_feature_prob > 0
    ):
        config.mask_time_prob, config.mask_feature_prob = float(mask_time_prob), float(mask_feature_prob)
    return config


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bar or load report from transformers: stdout and stderr stay the user's.

    What matters in a load report (weights missing from the checkpoint) is said by
    :func:`load_ssl_model` in one line instead.
    """
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _source(name_or_path: str) -> str:
    """What ``from_pretrained`` gets: an expanded folder for a local path, else the hub name (CblError if a
    path names no folder)."""
    if looks_like_local_path(name_or_path):
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise CblError(f"model.ssl='{name_or_path}' looks like a local path, but there is no such folder")
        return str(folder)
    return name_or_path


def _cannot_load(name_or_path: str, exc: BaseException) -> CblError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return CblError(
        f"cannot load the SSL front-end model.ssl='{name_or_path}': not a local save_pretrained folder and "
        f"not downloadable or cached (offline?) ({reason})"
    )


def ssl_config(name_or_path: str, *, mask_time_prob: float = 0.0, mask_feature_prob: float = 0.0) -> Any:
    """The transformers config :func:`load_ssl_model` builds the encoder from, read without any weight.

    CblError when it cannot be read or is no speech SSL encoder's.
    """
    from transformers import AutoConfig

    if name_or_path == TINY_NAME:
        return _construction_config(tiny_wav2vec2_config(), mask_time_prob, mask_feature_prob)
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(_source(name_or_path))
    except (OSError, ValueError, KeyError) as exc:
        raise _cannot_load(name_or_path, exc) from None
    model_type = getattr(config, "model_type", "")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CblError(
            f"model.ssl='{name_or_path}' is a '{model_type}' model, not a speech SSL encoder cbl can "
            f"fine-tune (supported model types: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return _construction_config(config, mask_time_prob, mask_feature_prob)


def load_ssl_model(
    name_or_path: str, *, layerdrop: float = 0.0, mask_time_prob: float = 0.0, mask_feature_prob: float = 0.0
) -> tuple[Any, bool]:
    """Return ``(encoder, is_random_init)`` for ``tiny``, a hub name or a local folder.

    The class comes from the checkpoint's ``config.model_type`` (``AutoModel``):
    ``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel`` or ``Data2VecAudioModel``.
    LayerDrop and SpecAugment are cbl's settings, not the checkpoint's. Raises
    CblError (one sentence) when the weights cannot be loaded (e.g. offline and not
    in the Hugging Face cache) or the checkpoint is not a speech SSL encoder.
    """
    from transformers import AutoModel, Wav2Vec2Model

    global _warned_random_init
    if name_or_path == TINY_NAME:
        if not _warned_random_init:
            logger.warning(
                "model.ssl=tiny: a randomly initialised wav2vec2 (~100k parameters) for checking the pipeline; "
                "its EERs are not results"
            )
            _warned_random_init = True
        model = Wav2Vec2Model(ssl_config(TINY_NAME, mask_time_prob=mask_time_prob, mask_feature_prob=mask_feature_prob))
        _apply_fine_tuning(model.config, layerdrop, mask_time_prob, mask_feature_prob)
        return model, True
    source = _source(name_or_path)
    config = ssl_config(name_or_path, mask_time_prob=mask_time_prob, mask_feature_prob=mask_feature_prob)
    try:
        with quiet_transformers():
            model, info = AutoModel.from_pretrained(source, config=config, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise _cannot_load(name_or_path, exc) from None
    _apply_fine_tuning(model.config, layerdrop, mask_time_prob, mask_feature_prob)
    # masked_spec_embed is missing from checkpoints saved without SpecAugment; cbl's masking then starts it afresh
    missing = sorted(k for k in info.get("missing_keys", ()) if k != "masked_spec_embed")
    if missing:
        shown = join_first(missing, limit=3)
        logger.warning(
            "model.ssl='%s': %d weights are not in the checkpoint and start random: %s",
            name_or_path,
            len(missing),
            shown,
        )
    if info.get("unexpected_keys"):
        logger.info(
            "model.ssl='%s': %d checkpoint weights belong to heads cbl does not use (e.g. the "
            "pre-training quantizer) and were left out",
            name_or_path,
            len(info["unexpected_keys"]),
        )
    return model, False


def load_wav2vec2(name_or_path: str) -> tuple[Any, bool]:
    """The former name of :func:`load_ssl_model` (any supported family, cbl's default fine-tuning settings)."""
    return load_ssl_model(name_or_path)


def checkpoint_normalizes(name_or_path: str) -> bool:
    """The checkpoint's ``do_normalize`` (its ``preprocessor_config.json``); False for ``tiny`` and where there
    is no such file (a model saved without its feature extractor)."""
    if name_or_path == TINY_NAME:
        return False
    source = _source(name_or_path)
    path: str | None
    if Path(source).is_dir():
        found = Path(source) / "preprocessor_config.json"
        path = str(found) if found.is_file() else None
    else:
        from transformers.utils import cached_file

        path = cached_file(
            source,
            "preprocessor_config.json",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    if path is None:
        where = "" if Path(source).is_dir() else " in the Hugging Face cache"
        logger.warning(
            "model.ssl='%s' has no preprocessor_config.json%s: its input is not normalised (set "
            "model.normalize_input=true for a model pre-trained on normalised audio, such as XLS-R)",
            name_or_path,
            where,
        )
        return False
    try:
        return bool(json.loads(Path(path).read_text(encoding="utf-8")).get("do_normalize", False))
    except (OSError, ValueError) as exc:
        raise CblError(f"{path}: not a readable preprocessor config ({exc})") from None
