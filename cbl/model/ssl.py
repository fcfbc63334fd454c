"""The self-supervised speech front-end: loading, fine-tuning settings, exact layer selection, padding-safe batches.

One loading path for every family this field fine-tunes: ``transformers``' Auto
classes read the checkpoint's ``config.json`` and build the class its
``model_type`` names (:data:`SUPPORTED_MODEL_TYPES`: wav2vec2 / XLS-R / MMS,
HuBERT, WavLM, data2vec-audio), so ``microsoft/wavlm-large`` is fine-tuned as
WavLM, with its relative position bias. A hub name, a local ``save_pretrained``
folder and a cached download take that same path. The one exception is ``tiny``:
a randomly initialised, CPU-sized wav2vec2 that lets the demo and the tests run
the whole pipeline without any download; its numbers say that the code runs, not
how well anything detects spoofs.

What cbl adds around the encoder, so that a real checkpoint means what its name says:

- **Layer selection** (:class:`_LayerRecorder`): hidden state 0 (the encoder's
  input, after the positional convolution) and every layer's output are recorded
  by forward hooks, whatever ``transformers`` returns. In train mode LayerDrop
  skips layers and ``transformers`` 5 then returns only the states of the layers
  that ran; here a skipped layer's state is its input (what LayerDrop means), so
  ``weighted`` always sees L+1 states and ``index=k`` is always layer k. With
  ``index=k`` the layers above k are not run at all.
- **Fine-tuning settings**: ``model.layerdrop``, ``model.mask_time_prob`` and
  ``model.mask_feature_prob`` replace the checkpoint's values (see ModelConfig).
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
import json
import logging
from collections.abc import Iterator
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cbl.config import LAYER_MODES, NORMALIZE_INPUT, looks_like_local_path
from cbl.errors import CblError, ConfigError

__all__ = ["SUPPORTED_MODEL_TYPES", "TINY_NAME", "SSLFrontEnd", "load_ssl_model", "load_wav2vec2", "quiet_transformers",
           "normalize_waveform", "tiny_wav2vec2_config"]

logger = logging.getLogger(__name__)

TINY_NAME = "tiny"
# config.model_type of the speech SSL encoders cbl fine-tunes (XLS-R 300M/1B/2B and MMS are "wav2vec2")
SUPPORTED_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
# families whose padded frames cannot reach the real ones once the conv stack is layer-normed per frame: the
# encoder zeroes padded frames before its single positional convolution and masks them in attention
_MASKABLE_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm")
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
    if (mask_time_prob > 0 or mask_feature_prob > 0) and not (config.mask_time_prob > 0 or config.mask_feature_prob > 0):
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


def load_ssl_model(name_or_path: str, *, layerdrop: float = 0.0, mask_time_prob: float = 0.0,
                   mask_feature_prob: float = 0.0) -> tuple[nn.Module, bool]:
    """Return ``(encoder, is_random_init)`` for ``tiny``, a hub name or a local folder.

    The class comes from the checkpoint's ``config.model_type`` (``AutoModel``):
    ``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel`` or ``Data2VecAudioModel``.
    LayerDrop and SpecAugment are cbl's settings, not the checkpoint's. Raises
    CblError (one sentence) when the weights cannot be loaded (e.g. offline and not
    in the Hugging Face cache) or the checkpoint is not a speech SSL encoder.
    """
    from transformers import AutoConfig, AutoModel, Wav2Vec2Model

    global _warned_random_init
    if name_or_path == TINY_NAME:
        if not _warned_random_init:
            logger.warning(
                "model.ssl=tiny: a randomly initialised wav2vec2 (~100k parameters) for checking the pipeline; "
                "its EERs are not results"
            )
            _warned_random_init = True
        model = Wav2Vec2Model(_construction_config(tiny_wav2vec2_config(), mask_time_prob, mask_feature_prob))
        _apply_fine_tuning(model.config, layerdrop, mask_time_prob, mask_feature_prob)
        return model, True
    source = _source(name_or_path)
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise _cannot_load(name_or_path, exc) from None
    model_type = getattr(config, "model_type", "")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CblError(f"model.ssl='{name_or_path}' is a '{model_type}' model, not a speech SSL encoder cbl can "
                       f"fine-tune (supported model types: {', '.join(SUPPORTED_MODEL_TYPES)})")
    try:
        with quiet_transformers():
            model, info = AutoModel.from_pretrained(
                source, config=_construction_config(config, mask_time_prob, mask_feature_prob),
                output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise _cannot_load(name_or_path, exc) from None
    _apply_fine_tuning(model.config, layerdrop, mask_time_prob, mask_feature_prob)
    # masked_spec_embed is missing from checkpoints saved without SpecAugment; cbl's masking then starts it afresh
    missing = sorted(k for k in info.get("missing_keys", ()) if k != "masked_spec_embed")
    if missing:
        shown = ", ".join(missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
        logger.warning("model.ssl='%s': %d weights are not in the checkpoint and start random: %s",
                       name_or_path, len(missing), shown)
    if info.get("unexpected_keys"):
        logger.info("model.ssl='%s': %d checkpoint weights belong to heads cbl does not use (e.g. the "
                    "pre-training quantizer) and were left out", name_or_path, len(info["unexpected_keys"]))
    return model, False


def load_wav2vec2(name_or_path: str) -> tuple[nn.Module, bool]:
    """The former name of :func:`load_ssl_model` (any supported family, cbl's default fine-tuning settings)."""
    return load_ssl_model(name_or_path)


def checkpoint_normalizes(name_or_path: str) -> bool:
    """The checkpoint's ``do_normalize`` (its ``preprocessor_config.json``); False for ``tiny`` and where there
    is no such file (a model saved without its feature extractor)."""
    if name_or_path == TINY_NAME:
        return False
    source = _source(name_or_path)
    if Path(source).is_dir():
        path: str | None = str(Path(source) / "preprocessor_config.json")
        if not Path(path).is_file():
            path = None
    else:
        from transformers.utils import cached_file

        path = cached_file(source, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    if path is None:
        logger.warning("model.ssl='%s' has no preprocessor_config.json: its input is not normalised (set "
                       "model.normalize_input=true for a model pre-trained on normalised audio, such as XLS-R)",
                       name_or_path)
        return False
    try:
        return bool(json.loads(Path(path).read_text(encoding="utf-8")).get("do_normalize", False))
    except (OSError, ValueError) as exc:
        raise CblError(f"{path}: not a readable preprocessor config ({exc})") from None


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

    def __init__(self, encoder: nn.Module, upto: int, keep_all: bool) -> None:
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
            return state
        states = self.states
        for position in range(1, len(states)):
            if states[position] is None:
                states[position] = states[position - 1]
        self.states = []
        return torch.stack(states, dim=2)


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
    ) -> None:
        super().__init__()
        for key, value, options in (("model.layer_mode", layer_mode, LAYER_MODES),
                                    ("model.normalize_input", normalize_input, NORMALIZE_INPUT)):
            if value not in options:
                raise ConfigError(f"key '{key}': unknown value {value!r}, expected one of: {', '.join(options)}")
        self.ssl, self.is_random_init = load_ssl_model(name_or_path, layerdrop=layerdrop,
                                                       mask_time_prob=mask_time_prob,
                                                       mask_feature_prob=mask_feature_prob)
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
        self.normalize_input: bool = (checkpoint_normalizes(name_or_path) if normalize_input == "auto"
                                      else normalize_input == "true")
        # group norm over time (first conv layer) or a stack of positional convs: padding changes the output
        self.padding_safe: bool = (config.model_type in _MASKABLE_MODEL_TYPES
                                   and getattr(config, "feat_extract_norm", "") == "layer")
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

    def train(self, mode: bool = True) -> "SSLFrontEnd":
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
        cache stores (:mod:`cbl.feature_cache`); :meth:`select` turns it into frames.
        An utterance's states do not depend on what else is in the batch: a front-end
        that is not :attr:`padding_safe` runs each group of equal-length utterances
        unpadded.
        """
        if attention_mask is None:
            return self._encode(audio, None), None
        lengths = attention_mask.sum(-1)
        self._check_lengths(lengths)
        if self.padding_safe:
            states = self._encode(audio, attention_mask)
        else:
            states = self._encode_by_length(audio, lengths)
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
        with (torch.no_grad() if self.freeze_ssl else nullcontext()), _numpy_draws_from_torch(masking):
            if self._recorder is None:
                return self.ssl(audio, attention_mask=mask).last_hidden_state
            with self._recorder.recording():
                try:
                    self.ssl(audio, attention_mask=mask)
                except _EnoughLayers:
                    pass  # the selected layer has run; the ones above it are not needed
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
