"""Published configuration values of the speech SSL checkpoints cbl is used with, for random-weight stand-ins.

No model hub is reachable from the machines the tests and ``cbl-search bench``
run on, yet what breaks on a real checkpoint is its *layout*: group norm or layer
norm in the conv stack, pre-LN ("stable layer norm") or post-LN encoder,
LayerDrop and SpecAugment settings, WavLM's relative position bias. Each
:class:`Family` holds those values as its checkpoint publishes them, with where
they come from; :func:`save_random` writes a model with that layout (any size,
random weights) as a ``save_pretrained`` folder, which cbl then loads through the
very path a downloaded checkpoint takes (``model.ssl=FOLDER``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES", "SMALL", "Family", "build_config", "save_random"]


@dataclass(frozen=True)
class Family:
    """One checkpoint's architecture: its ``config.json`` values that decide layout and fine-tuning behaviour."""

    hub_name: str
    model_type: str
    source: str  # where the values below were read
    config: dict[str, Any] = field(default_factory=dict)
    do_normalize: bool | None = None  # its preprocessor_config.json's do_normalize; None: not recorded here


_CONV = {"conv_dim": (512,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2)}
_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
_POSITIONAL = {"num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16}  # one conv, kernel 128
_WAVLM_BUCKETS = {"num_buckets": 320, "max_bucket_distance": 800}  # WavLM's relative position bias
_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
# LayerDrop, SpecAugment and dropout of transformers' config defaults (the documented base checkpoints)
_DEFAULT_REGULARISERS = {
    "layerdrop": 0.1,
    "mask_time_prob": 0.05,
    "mask_time_length": 10,
    "mask_feature_prob": 0.0,
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.1,
    "feat_proj_dropout": 0.0,
}

FAMILIES: dict[str, Family] = {
    "xls-r-300m": Family(
        "facebook/wav2vec2-xls-r-300m",
        "wav2vec2",
        "the checkpoint's config.json on the Hugging Face hub (exported with transformers 4.12.0.dev0)",
        {
            **_LARGE,
            **_CONV,
            "conv_bias": True,
            "feat_extract_norm": "layer",
            "do_stable_layer_norm": True,
            "feat_extract_activation": "gelu",
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-5,
            **_POSITIONAL,
            "layerdrop": 0.1,
            "mask_time_prob": 0.075,
            "mask_time_length": 10,
            "mask_feature_prob": 0.0,
            "mask_feature_length": 10,
            "apply_spec_augment": True,
            "hidden_dropout": 0.1,
            "attention_dropout": 0.1,
            "activation_dropout": 0.0,
            "feat_proj_dropout": 0.1,
        },
        do_normalize=True,  # XLS-R's feature extractor normalises the waveform
    ),
    "wav2vec2-base": Family(
        "facebook/wav2vec2-base",
        "wav2vec2",
        "transformers' Wav2Vec2Config defaults, which its documentation gives as facebook/wav2vec2-base-960h's "
        "architecture",
        {
            **_BASE,
            **_CONV,
            "conv_bias": False,
            "feat_extract_norm": "group",
            "do_stable_layer_norm": False,
            **_POSITIONAL,
            **_DEFAULT_REGULARISERS,
        },
        do_normalize=False,
    ),
    "hubert-base": Family(
        "facebook/hubert-base-ls960",
        "hubert",
        "transformers' HubertConfig defaults, which its documentation gives as facebook/hubert-base-ls960's "
        "architecture",
        {
            **_BASE,
            **_CONV,
            "conv_bias": False,
            "feat_extract_norm": "group",
            "do_stable_layer_norm": False,
            "feat_proj_layer_norm": True,
            **_POSITIONAL,
            **_DEFAULT_REGULARISERS,
        },
    ),
    "wavlm-base": Family(
        "microsoft/wavlm-base",
        "wavlm",
        "transformers' WavLMConfig defaults, which its documentation gives as microsoft/wavlm-base's architecture",
        {
            **_BASE,
            **_CONV,
            "conv_bias": False,
            "feat_extract_norm": "group",
            "do_stable_layer_norm": False,
            **_POSITIONAL,
            **_WAVLM_BUCKETS,
            **_DEFAULT_REGULARISERS,
        },
    ),
    "wavlm-large": Family(
        "microsoft/wavlm-large",
        "wavlm",
        "the checkpoint's config.json on the Hugging Face hub for the layout (layer-norm conv stack without bias, "
        "stable layer norm, 24 x 1024, 320 buckets up to 800); LayerDrop and masking: WavLMConfig's defaults",
        {
            **_LARGE,
            **_CONV,
            "conv_bias": False,
            "feat_extract_norm": "layer",
            "do_stable_layer_norm": True,
            **_POSITIONAL,
            **_WAVLM_BUCKETS,
            **_DEFAULT_REGULARISERS,
        },
    ),
    "data2vec-audio-base": Family(
        "facebook/data2vec-audio-base",
        "data2vec-audio",
        "transformers' Data2VecAudioConfig defaults, which its documentation gives as "
        "facebook/data2vec-audio-base-960h's architecture (layer norm in every conv layer, post-LN encoder, a "
        "stack of 5 positional convolutions of width 19)",
        {
            **_BASE,
            **_CONV,
            "conv_bias": False,
            "num_conv_pos_embeddings": 5,
            "conv_pos_kernel_size": 19,
            "num_conv_pos_embedding_groups": 16,
            **_DEFAULT_REGULARISERS,
        },
    ),
}

# fewer and narrower layers, every flag kept: seconds per training step on a CPU core
SMALL: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16,) * 7,
}
_SMALL_POSITIONAL = {"num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}
_SMALL_POSITIONAL_STACK = {"conv_pos_kernel_size": 5, "num_conv_pos_embedding_groups": 4}  # data2vec: 5 convs kept


def build_config(family: Family, **overrides: Any):  # -> transformers.PretrainedConfig
    """The family's config (its published values), with ``overrides`` (e.g. :data:`SMALL`) on top.

    Shrinking the width also shrinks the positional convolution (kernel 16, 4
    groups) so that its groups still divide the width.
    """
    from transformers import AutoConfig

    values = dict(family.config)
    if overrides.get("hidden_size", values["hidden_size"]) != values["hidden_size"]:
        values.update(_SMALL_POSITIONAL_STACK if family.model_type == "data2vec-audio" else _SMALL_POSITIONAL)
    values.update(overrides)
    return AutoConfig.for_model(family.model_type, **values)


def save_random(family: Family, folder: str | Path, *, seed: int = 0, **overrides: Any) -> Path:
    """A random-weight model of the family's layout as a ``save_pretrained`` folder (+ its preprocessor config).

    ``overrides`` change sizes (:data:`SMALL`), never needed for the full-size
    architecture. The preprocessor config is written only when the family's
    ``do_normalize`` is recorded here, as a checkpoint saved with its feature
    extractor has one.
    """
    import torch
    from transformers import AutoModel

    from cbl.model.loading import quiet_transformers

    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModel.from_config(build_config(family, **overrides))
    with quiet_transformers():
        model.save_pretrained(folder)
    if family.do_normalize is not None:
        preprocessor = {
            "feature_extractor_type": "Wav2Vec2FeatureExtractor",
            "feature_size": 1,
            "sampling_rate": 16000,
            "padding_value": 0.0,
            "padding_side": "right",
            "do_normalize": family.do_normalize,
            "return_attention_mask": family.config.get("feat_extract_norm") == "layer",
        }
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return folder
