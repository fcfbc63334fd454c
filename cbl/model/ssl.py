"""The self-supervised speech front-end: fine-tuning settings, exact layer selection, padding-safe batches.

The encoder comes from :mod:`cbl.model.loading` (every supported family through
``transformers``' Auto classes). What :class:`SSLFrontEnd` adds around it, so that a
real checkpoint means what its name says:

- **Layer selection** (:class:`_LayerRecorder`): hidden state 0 (the encoder's
  input, after the positional convolution) and every layer's output are recorded
  by forward hooks, whatever ``transformers`` returns. In train mode LayerDrop
  skips layers and ``transformers`` 5 then returns only the states of the layers
  that ran; here a skipped layer's state is its input (what LayerDrop means), so
  ``weighted`` always sees L+1 states and ``index=k`` is always layer k. With
  ``index=k`` the layers above k are not run at all.
- **Fine-tuning settings**: ``model.layerdrop``, ``model.mask_time_prob`` and
  ``model.mask_feature_prob`` replace the checkpoint's values (see ModelConfig);
  SpecAugment's masks are drawn from the torch RNG, which checkpoints hold.
- **Input normalisation** (``model.normalize_input``): zero mean, unit variance
  per utterance over its real samples, as the checkpoint's feature extractor does
  when its ``do_normalize`` is true.
- **Padding**: a front-end whose output depends on the padding beside an
  utterance (group norm over time in the first conv layer, as in wav2vec2-base and
  HuBERT-base; data2vec-audio's stack of positional convolutions) is run on groups
  of equal-length utterances, so nothing is padded; layer-norm conv stacks take
  the padded batch with its attention mask, which is exact for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import nullcontext
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cbl.config import LAYER_MODES, NORMALIZE_INPUT
from cbl.errors import CblError, ConfigError
from cbl.model.loading import (
    SUPPORTED_MODEL_TYPES,
    TINY_NAME,
    checkpoint_normalizes,
    load_ssl_model,
    load_wav2vec2,
    quiet_transformers,
    tiny_wav2vec2_config,
)

# the loading names stay importable from here (their home before cbl.model.loading)
__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "TINY_NAME",
    "SSLFrontEnd",
    "checkpoint_normalizes",
    "load_ssl_model",
    "load_wav2vec2",
    "normalize_waveform",
    "quiet_transformers",
    "tiny_wav2vec2_config",
]


# families whose padded frames cannot reach the real ones once the conv stack is layer-normed per frame: the
# encoder zeroes padded frames before its single positional convolution and masks them in attention
_MASKABLE_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm")


def normalize_waveform(audio: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Zero mean, unit variance per utterance over its real samples; padded samples stay 0.

    ``audio (B, T)``, ``attention_mask (B, T)`` (1 = real sample) or None. The
    definition of transformers' ``Wav2Vec2FeatureExtractor`` with ``do_normalize``:
    ``(x - mean) / sqrt(var + 1e-7)``, the population variance of the real samples.
    """
    if attention_mask is None:
        mean = audio.mean(-1, keepdim=True)
        variance = audio.var(-1, unbiased=False, keepdim=True)
        return (audio - mean) / torch.sqrt(variance + 1e-7)
    mask = attention_mask.to(audio.dtype)
    count = mask.sum(-1, keepdim=True).clamp(min=1)
    mean = (audio * mask).sum(-1, keepdim=True) / count
    variance = (((audio - mean) * mask) ** 2).sum(-1, keepdim=True) / count
    return (audio - mean) / torch.sqrt(variance + 1e-7) * mask


@contextlib.contextmanager
def _numpy_draws_from_torch(active: bool) -> Iterator[None]:
    """transformers draws SpecAugment's masks from numpy's global generator: seed it from torch's for one forward.

    The masks are then a function of the torch RNG state, which the checkpoint
    holds, so a resumed run masks as the uninterrupted one did; numpy's own state is
    put back afterwards.
    """
    if not active:
        yield
        return
    saved = np.random.get_state()
    np.random.seed(int(torch.randint(0, 2**31 - 1, ())))
    try:
        yield
    finally:
        np.random.set_state(saved)


class _EnoughLayers(Exception):
    """Raised by a hook once the selected layer has run: the layers above it are not needed."""


class _LayerRecorder:
    """Forward hooks recording hidden state 0 and each encoder layer's output during one forward.

    Position 0 is the output of the encoder's ``dropout`` (applied once, after the
    positional convolution: the input of the first layer); position p is layer p's
    output (before the final layer norm of a pre-LN encoder). A layer LayerDrop
    skipped fires no hook; its state is its input, the last state recorded. A layer
    above ``upto`` stops the forward (``_EnoughLayers``) before it runs.
    """

    def __init__(self, encoder: Any, upto: int, keep_all: bool) -> None:
        self.num_layers = len(encoder.layers)
        self.upto, self.keep_all = upto, keep_all
        self.active = False
        self.states: list[Tensor | None] = []
        self.latest: Tensor | None = None
        encoder.dropout.register_forward_hook(partial(self._record, 0))
        for position, layer in enumerate(encoder.layers, start=1):
            layer.register_forward_hook(partial(self._record, position))
            if position > upto:
                layer.register_forward_pre_hook(self._stop)

    def _stop(self, _module: nn.Module, _args: Any) -> None:
        if self.active:
            raise _EnoughLayers

    def _record(self, position: int, _module: nn.Module, _args: Any, output: Any) -> None:
        if not self.active:
            return
        state = output[0] if isinstance(output, tuple) else output
        if self.keep_all:
            self.states[position] = state
        self.latest = state

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        self.states, self.latest, self.active = [None] * (self.num_layers + 1), None, True
        try:
            yield
        finally:
            self.active = False

    def result(self) -> Tensor:
        """``(B, F, H)`` for one position, ``(B, F, L+1, H)`` for all; the recorded tensors are then let go."""
        if not self.keep_all:
            state, self.latest = self.latest, None
            if state is None:
                raise RuntimeError("no hidden state was recorded: the encoder ran no layer")
            return state
        states, filled = self.states, list[Tensor]()
        for state in states:  # a layer LayerDrop skipped holds its input: the state before it
            filled.append(state if state is not None else filled[-1])
        self.states = []
        return torch.stack(filled, dim=2)


class SSLFrontEnd(nn.Module):
    """A speech SSL encoder plus the choice of which hidden states feed the head.

    ``forward(audio (B, T), attention_mask (B, T) or None) -> (frames (B, F, H), frame_mask (B, F) or None)``.

    Hidden states are numbered 0..L: 0 is the encoder's input (the projected conv
    features plus the positional convolution), p is the output of layer p. What the
    head reads:

    - ``last``: the encoder's ``last_hidden_state``: for a pre-LN encoder (XLS-R,
      WavLM-large: ``do_stable_layer_norm``) layer L's output *after* the final layer
      norm, for a post-LN one (wav2vec2-base, HuBERT-base, data2vec-audio) layer L's
      output, which each layer already normalises.
    - ``index`` with ``layer_index=k``: hidden state k (python indexing over 0..L, so
      ``-1`` is L: for a pre-LN encoder that is *before* the final layer norm, unlike
      ``last``; transformers 5's ``hidden_states[-1]`` is the same).
    - ``weighted``: a learnable softmax-weighted sum of all L+1 states (those of
      ``index``). Its layer weights belong to the head for optimisation purposes:
      they live here only because this module knows how many states there are.
    """

    def __init__(
        self,
        name_or_path: str = TINY_NAME,
        *,
        layer_mode: str = "last",
        layer_index: int = -1,
        freeze_feature_encoder: bool = True,
        freeze_ssl: bool = False,
        layerdrop: float = 0.0,
        mask_time_prob: float = 0.0,
        mask_feature_prob: float = 0.0,
        normalize_input: str = "auto",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        for key, value, options in (
            ("model.layer_mode", layer_mode, LAYER_MODES),
            ("model.normalize_input", normalize_input, NORMALIZE_INPUT),
        ):
            if value not in options:
                raise ConfigError(f"key '{key}': unknown value {value!r}, expected one of: {', '.join(options)}")
        self.ssl, self.is_random_init = load_ssl_model(
            name_or_path, layerdrop=layerdrop, mask_time_prob=mask_time_prob, mask_feature_prob=mask_feature_prob
        )
        config = self.ssl.config
        self.hidden_size: int = int(config.hidden_size)
        self.num_hidden_states: int = int(config.num_hidden_layers) + 1  # embeddings + every layer
        if layer_mode == "index" and not -self.num_hidden_states <= layer_index < self.num_hidden_states:
            raise ConfigError(
                f"key 'model.layer_index' is {layer_index}, but '{name_or_path}' has {self.num_hidden_states} hidden "
                f"states, so it must be in [{-self.num_hidden_states}, {self.num_hidden_states - 1}]"
            )
        self.layer_mode = layer_mode
        self.layer_index = layer_index
        self.freeze_ssl = freeze_ssl
        self.normalize_input: bool = (
            checkpoint_normalizes(name_or_path) if normalize_input == "auto" else normalize_input == "true"
        )
        # group norm over time (first conv layer) or a stack of positional convs: padding changes the output
        self.padding_safe: bool = (
            config.model_type in _MASKABLE_MODEL_TYPES and getattr(config, "feat_extract_norm", "") == "layer"
        )
        self._recorder = None
        if layer_mode != "last":
            upto = layer_index % self.num_hidden_states if layer_mode == "index" else self.num_hidden_states - 1
            self._recorder = _LayerRecorder(self.ssl.encoder, upto, keep_all=layer_mode == "weighted")
        # zeros = uniform softmax: start from the plain average, as SUPERB's weighted sum does
        self.layer_weights = nn.Parameter(torch.zeros(self.num_hidden_states)) if layer_mode == "weighted" else None
        if freeze_ssl:
            self.ssl.requires_grad_(False)
            self.ssl.eval()
        elif freeze_feature_encoder:
            # what Wav2Vec2Model.freeze_feature_encoder does (HubertModel has no such method): no gradients for the
            # conv weights, and none requested for the waveform (else autograd still runs back through the stack)
            self.ssl.feature_extractor._freeze_parameters()
        if gradient_checkpointing and not freeze_ssl:  # a frozen front-end keeps no activations to save
            # non-reentrant: gradients reach the layers' weights even when the layer input needs none
            kwargs = {"use_reentrant": False}
            if hasattr(self.ssl, "activation_checkpointing_enable"):  # its name from transformers 5.2x on
                self.ssl.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self.ssl.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def train(self, mode: bool = True) -> SSLFrontEnd:
        """A frozen front-end stays in eval mode: dropout in a model nobody trains only adds noise to its features."""
        super().train(mode)
        if self.freeze_ssl:
            self.ssl.eval()
        return self

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Samples per utterance ``(B,)`` -> frames per utterance ``(B,)`` (the conv stack's length formula)."""
        return self.ssl._get_feat_extract_output_lengths(lengths)

    def _check_lengths(self, lengths: Tensor) -> Tensor:
        frames = self.frame_lengths(lengths)
        if int(frames.min()) < 1:
            raise CblError(
                f"an utterance of {int(lengths.min())} samples is shorter than the front-end's receptive field "
                "(400 samples for wav2vec2), so it has no frames to pool"
            )
        return frames

    def frame_mask(self, num_frames: int, attention_mask: Tensor) -> Tensor:
        """Sample-level mask (B, T), right-padded -> frame-level bool mask (B, F) by the conv length formula."""
        frame_lengths = self._check_lengths(attention_mask.sum(-1))
        frames = torch.arange(num_frames, device=attention_mask.device)
        return frames.unsqueeze(0) < frame_lengths.unsqueeze(1)

    @property
    def stores_all_layers(self) -> bool:
        """True when the head needs every hidden state (learnable layer weights), not one layer."""
        return self.layer_mode == "weighted"

    def hidden(self, audio: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The front-end's output before any trainable part: ``(states, frame_mask)``.

        ``states`` is ``(B, F, H)`` for ``last``/``index`` and ``(B, F, L+1, H)`` for
        ``weighted`` (every hidden state, frames first so utterances concatenate along
        frames); frames past an utterance's end are zeros or padding, ``frame_mask``
        says which. With a frozen front-end this is exactly what the frozen-feature
        cache stores (:mod:`cbl.engine.feature_cache`); :meth:`select` turns it into frames.
        An utterance's states do not depend on what else is in the batch: a front-end
        that is not :attr:`padding_safe` runs each group of equal-length utterances
        unpadded.
        """
        if attention_mask is None:
            return self._encode(audio, None), None
        lengths = attention_mask.sum(-1)
        self._check_lengths(lengths)
        states = self._encode(audio, attention_mask) if self.padding_safe else self._encode_by_length(audio, lengths)
        return states, self.frame_mask(states.shape[1], attention_mask)

    def _encode_by_length(self, audio: Tensor, lengths: Tensor) -> Tensor:
        """Each group of equal-length rows through the encoder unpadded, reassembled as a padded ``(B, F, ...)``."""
        total = int(self.frame_lengths(torch.tensor(audio.shape[1])))
        out: Tensor | None = None
        for length in sorted({int(n) for n in lengths.tolist()}, reverse=True):
            rows = (lengths == length).nonzero().squeeze(1)
            group = self._encode(audio[rows, :length], None)
            if out is None:
                out = group.new_zeros((audio.shape[0], total, *group.shape[2:]))
            out[rows, : group.shape[1]] = group
        assert out is not None
        return out

    def _encode(self, audio: Tensor, attention_mask: Tensor | None) -> Tensor:
        """The selected states of one encoder forward (see :meth:`hidden` for the shapes)."""
        if self.normalize_input:
            audio = normalize_waveform(audio, attention_mask)
        mask = None if attention_mask is None else attention_mask.long()
        config = self.ssl.config
        masking = self.ssl.training and (config.mask_time_prob > 0 or config.mask_feature_prob > 0)
        with torch.no_grad() if self.freeze_ssl else nullcontext(), _numpy_draws_from_torch(masking):
            if self._recorder is None:
                return self.ssl(audio, attention_mask=mask).last_hidden_state
            # _EnoughLayers: the selected layer has run; the ones above it are not needed
            with self._recorder.recording(), contextlib.suppress(_EnoughLayers):
                self.ssl(audio, attention_mask=mask)
            return self._recorder.result()

    def select(self, states: Tensor) -> Tensor:
        """``hidden``'s states -> frames ``(B, F, H)`` (the learnable layer weighting for ``weighted``)."""
        if self.layer_weights is None:
            return states
        weights = torch.softmax(self.layer_weights, dim=0).to(states.dtype)
        return torch.einsum("l,bflh->bfh", weights, states)

    def forward(self, audio: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """audio: (B, T) float waveform; attention_mask: (B, T), 1 = real sample, 0 = right padding."""
        states, frame_mask = self.hidden(audio, attention_mask)
        return self.select(states), frame_mask
