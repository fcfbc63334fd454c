"""What one run needs of disk and GPU memory, estimated from the configuration alone (no weight is read).

:func:`parameter_counts` builds the SSL encoder on PyTorch's ``meta`` device from its
transformers config (and the head from cbl's), so a 315M-parameter model is counted in
a fraction of a second. From the counts, at 4 bytes per fp32 parameter:

- :func:`checkpoint_sizes`: ``last.pt`` (and ``previous.pt`` with
  ``train.keep_previous_checkpoint``) holds the trainable weights and
  AdamW's two moments (12 bytes per trainable parameter), ``best.pt`` the trainable
  weights (4), the frozen store the frozen ones once (4); before the store
  (:mod:`cbl.engine.frozen`) every file held the frozen weights too.
- :func:`gpu_memory_estimate`: fp32 weights (4 bytes per parameter), the autocast copy
  of the trainable ones in bf16 (2), gradients (4), AdamW moments (8), and the
  activations one training step keeps for the backward pass (:func:`activation_bytes`).

Not counted: the CUDA context (some hundreds of MiB), the allocator's fragmentation,
cuDNN/cuBLAS workspaces, buffers (a few kB for these models) and the dev pass (no
gradients, batch ``train.eval_batch_size``). Unmeasured against a GPU here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cbl.config import ExperimentConfig, ModelConfig
from cbl.model import build_pooling
from cbl.model.loading import ssl_config

__all__ = [
    "GIB",
    "CheckpointSizes",
    "GpuEstimate",
    "ParameterCounts",
    "activation_bytes",
    "checkpoint_sizes",
    "footprint_lines",
    "format_bytes",
    "gpu_memory_estimate",
    "parameter_counts",
]

FP32 = 4  # bytes per parameter, weights and each AdamW moment
GIB = 1024**3


@dataclass(frozen=True)
class ParameterCounts:
    total: int
    trainable: int
    ssl_config: Any = None  # the encoder's transformers config (for the activation formula)

    @property
    def frozen(self) -> int:
        return self.total - self.trainable


def parameter_counts(model_config: ModelConfig) -> ParameterCounts:
    """Total and trainable parameters of the detector ``model_config`` describes, counted on the meta device."""
    from transformers import AutoModel

    config = ssl_config(
        model_config.ssl, mask_time_prob=model_config.mask_time_prob, mask_feature_prob=model_config.mask_feature_prob
    )
    with torch.device("meta"):
        ssl = AutoModel.from_config(config)
        pooling = build_pooling(model_config.pooling, int(config.hidden_size))
        head = nn.ModuleList(
            [
                pooling,
                nn.Linear(pooling.output_dim, model_config.embedding_dim),
                nn.Linear(model_config.embedding_dim, 2),
            ]
        )
    ssl_total = sum(p.numel() for p in ssl.parameters())
    head_total = sum(p.numel() for p in head.parameters())
    if model_config.layer_mode == "weighted":
        head_total += int(config.num_hidden_layers) + 1  # the layer weights
    if model_config.freeze_ssl:
        frozen = ssl_total
    elif model_config.freeze_feature_encoder:
        frozen = sum(p.numel() for p in ssl.feature_extractor.parameters())
    else:
        frozen = 0
    total = ssl_total + head_total
    return ParameterCounts(total=total, trainable=total - frozen, ssl_config=config)


@dataclass(frozen=True)
class CheckpointSizes:
    """Bytes of each checkpoint file of a run, as written now and as cbl wrote them before the frozen store."""

    resume: int  # last.pt (previous.pt when kept): trainable weights + AdamW moments
    best: int  # best.pt: trainable weights
    frozen: int  # <experiment>/frozen/<hash>.pt, once
    resume_before: int  # with the frozen weights inside, as before
    best_before: int


def checkpoint_sizes(counts: ParameterCounts) -> CheckpointSizes:
    trainable, frozen = FP32 * counts.trainable, FP32 * counts.frozen
    resume = trainable + 2 * FP32 * counts.trainable
    return CheckpointSizes(
        resume=resume, best=trainable, frozen=frozen, resume_before=resume + frozen, best_before=trainable + frozen
    )


def _conv_lengths(samples: int, kernels: tuple[int, ...], strides: tuple[int, ...]) -> list[int]:
    lengths, length = [], samples
    for kernel, stride in zip(kernels, strides, strict=True):
        length = (length - kernel) // stride + 1
        lengths.append(max(length, 0))
    return lengths


def activation_bytes(model_config: ModelConfig, config: Any, batch: int, samples: int, half: bool) -> int:
    """Bytes one training step keeps for its backward pass, for ``batch`` crops of ``samples`` samples.

    ``half``: activations in bf16 (2 bytes; fp32: 4). Per utterance, with F frames,
    hidden size h, intermediate size i, a heads:

    - conv feature encoder, when trained: conv output, its norm and its GELU kept
      per layer, ``3 C_l L_l`` elements (L_l the layer's output length); when frozen
      nothing is kept, and the largest layer's input and output (``2 C_l L_l``) are the
      transient peak instead;
    - feature projection: ``F (C + 2h)`` (its layer norm and linear inputs);
    - each transformer layer, as Korthikanti et al. 2022 ("Reducing Activation
      Recomputation in Large Transformer Models", sec. 4.1) count them for a
      pre-LN block: ``F (8h + 2i) + 2 a F^2`` elements (layer-norm, QKV, attention
      and MLP inputs, the softmax output and the attention-weighted values) and
      ``2hF + aF^2`` one-byte dropout masks; with ``model.gradient_checkpointing``
      only the layer input ``hF`` per layer, plus one layer's full set while it is
      recomputed;
    - with ``model.freeze_ssl`` the encoder runs without gradients: only its output
      ``hF`` (all L+1 states for ``layer_mode: weighted``).
    """
    width = 2 if half else 4
    h, i, a = int(config.hidden_size), int(config.intermediate_size), int(config.num_attention_heads)
    layers = int(config.num_hidden_layers)
    conv = _conv_lengths(samples, tuple(config.conv_kernel), tuple(config.conv_stride))
    channels = tuple(config.conv_dim)
    frames = conv[-1]
    states = layers + 1 if model_config.layer_mode == "weighted" else 1
    if model_config.freeze_ssl:
        return batch * frames * h * states * width
    conv_kept = (
        0 if model_config.freeze_feature_encoder else sum(3 * c * n for c, n in zip(channels, conv, strict=True))
    )
    conv_transient = max(2 * c * n for c, n in zip(channels, conv, strict=True))
    projection = frames * (channels[-1] + 2 * h)
    layer = frames * (8 * h + 2 * i) * width + 2 * a * frames**2 * width + (2 * h * frames + a * frames**2)
    # checkpointed: each layer's input, and one layer's full set while it is recomputed
    encoder = layers * h * frames * width + layer if model_config.gradient_checkpointing else layers * layer
    kept = (conv_kept + projection + frames * h * states) * width + encoder
    return batch * max(kept, conv_transient * width)


def _gib(size: int) -> str:
    return f"{size / GIB:.3g}"


@dataclass(frozen=True)
class GpuEstimate:
    """One trial's GPU memory at its peak (a training step), in bytes, by part."""

    weights: int  # fp32 weights, and the bf16 autocast copy of the trainable ones
    gradients: int
    optimizer: int  # AdamW's two moments
    activations: int
    batch: int
    samples: int
    precision: str  # bf16 or fp32

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def line(self) -> str:
        parts = (
            f"weights {_gib(self.weights)} + gradients {_gib(self.gradients)} + AdamW {_gib(self.optimizer)} + "
            f"activations {_gib(self.activations)} (batch {self.batch} x {self.samples} samples, {self.precision})"
        )
        return f"GPU memory per trial: ~{_gib(self.total)} GiB = {parts} GiB; CUDA context not included"


def gpu_memory_estimate(config: ExperimentConfig, counts: ParameterCounts | None = None) -> GpuEstimate:
    """The estimate for a training run of ``config`` on a GPU (bf16 when ``train.bf16``)."""
    counts = counts or parameter_counts(config.model)
    half = config.train.bf16
    batch, samples = config.train.batch_size, config.data.max_len
    return GpuEstimate(
        weights=FP32 * counts.total + (2 * counts.trainable if half else 0),
        gradients=FP32 * counts.trainable,
        optimizer=2 * FP32 * counts.trainable,
        activations=activation_bytes(config.model, counts.ssl_config, batch, samples, half),
        batch=batch,
        samples=samples,
        precision="bf16" if half else "fp32",
    )


def format_bytes(size: float) -> str:
    """``1.26 GB``: decimal units, 3 significant digits."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000:
            return f"{int(size)} B" if unit == "B" else f"{size:.3g} {unit}"
        size /= 1000
    return f"{size:.3g} TB"


def footprint_lines(config: ExperimentConfig) -> list[str]:
    """The estimates for ``config`` in a few lines (one saying why, when the model's config cannot be read)."""
    from cbl.errors import CblError

    try:
        counts = parameter_counts(config.model)
    except CblError as exc:
        return [f"no disk or GPU memory estimate: {exc}"]
    sizes = checkpoint_sizes(counts)
    return [
        f"estimates (cbl.engine.footprint): {counts.total / 1e6:.1f}M parameters, {counts.trainable / 1e6:.1f}M "
        "trainable",
        f"checkpoints: last.pt {format_bytes(sizes.resume)}"
        + (
            " and previous.pt the same (train.keep_previous_checkpoint)"
            if config.train.keep_previous_checkpoint
            else ""
        )
        + f", best.pt {format_bytes(sizes.best)}, frozen weights {format_bytes(sizes.frozen)} stored once",
        gpu_memory_estimate(config, counts).line(),
    ]
