"""The self-supervised (wav2vec2 / XLS-R) front-end: loading, freezing, hidden-state selection.

Everything goes through ``transformers.Wav2Vec2Model.from_pretrained`` so that a
hub name (``facebook/wav2vec2-xls-r-300m``), a local ``save_pretrained`` folder and
a cached download take the same path. The one exception is ``tiny``: a randomly
initialised, CPU-sized wav2vec2 that lets the demo and the tests run the whole
pipeline without any download. Its weights are random, so its numbers say that the
code runs, not how well anything detects spoofs.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor, nn

from cbl.config import LAYER_MODES, looks_like_local_path
from cbl.errors import CblError, ConfigError

__all__ = ["TINY_NAME", "SSLFrontEnd", "load_wav2vec2", "tiny_wav2vec2_config"]

logger = logging.getLogger(__name__)

TINY_NAME = "tiny"
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


def load_wav2vec2(name_or_path: str) -> tuple[nn.Module, bool]:
    """Return ``(Wav2Vec2Model, is_random_init)`` for ``tiny``, a hub name or a local folder.

    Raises CblError (one sentence) when the weights cannot be loaded, e.g. offline
    and not in the Hugging Face cache.
    """
    from transformers import Wav2Vec2Model

    global _warned_random_init
    if name_or_path == TINY_NAME:
        if not _warned_random_init:
            logger.warning(
                "model.ssl=tiny: a randomly initialised wav2vec2 (~100k parameters) for checking the pipeline; "
                "its EERs are not results"
            )
            _warned_random_init = True
        return Wav2Vec2Model(tiny_wav2vec2_config()), True
    looks_like_path = looks_like_local_path(name_or_path)
    if looks_like_path and not Path(name_or_path).expanduser().is_dir():
        raise CblError(f"model.ssl='{name_or_path}' looks like a local path, but there is no such folder")
    try:
        model = Wav2Vec2Model.from_pretrained(str(Path(name_or_path).expanduser()) if looks_like_path else name_or_path)
    except (OSError, ValueError, EnvironmentError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CblError(
            f"cannot load the SSL front-end model.ssl='{name_or_path}': not a local save_pretrained folder and "
            f"not downloadable or cached (offline?) ({reason})"
        ) from None
    return model, False


class SSLFrontEnd(nn.Module):
    """wav2vec2 plus the choice of which hidden states feed the head.

    ``forward(audio (B, T), attention_mask (B, T) or None) -> (frames (B, F, H), frame_mask (B, F) or None)``.
    ``index`` and ``weighted`` read ``hidden_states`` as transformers returns them
    (embeddings, then each layer's output); for pre-LN models such as XLS-R the
    encoder's final layer norm is part of ``last`` only, so ``index=-1`` differs from
    ``last`` there. The learnable layer weights (``layer_mode == "weighted"``) belong to the head for
    optimisation purposes: they live here only because this module knows how many
    hidden states there are.
    """

    def __init__(
        self,
        name_or_path: str = TINY_NAME,
        *,
        layer_mode: str = "last",
        layer_index: int = -1,
        freeze_feature_encoder: bool = True,
        freeze_ssl: bool = False,
    ) -> None:
        super().__init__()
        if layer_mode not in LAYER_MODES:
            options = ", ".join(LAYER_MODES)
            raise ConfigError(f"key 'model.layer_mode': unknown value {layer_mode!r}, expected one of: {options}")
        self.ssl, self.is_random_init = load_wav2vec2(name_or_path)
        self.hidden_size: int = int(self.ssl.config.hidden_size)
        self.num_hidden_states: int = int(self.ssl.config.num_hidden_layers) + 1  # embeddings + every layer
        if layer_mode == "index" and not -self.num_hidden_states <= layer_index < self.num_hidden_states:
            raise ConfigError(
                f"key 'model.layer_index' is {layer_index}, but '{name_or_path}' has {self.num_hidden_states} hidden "
                f"states, so it must be in [{-self.num_hidden_states}, {self.num_hidden_states - 1}]"
            )
        self.layer_mode = layer_mode
        self.layer_index = layer_index
        self.freeze_ssl = freeze_ssl
        # zeros = uniform softmax: start from the plain average, as SUPERB's weighted sum does
        self.layer_weights = nn.Parameter(torch.zeros(self.num_hidden_states)) if layer_mode == "weighted" else None
        if freeze_ssl:
            self.ssl.requires_grad_(False)
            self.ssl.eval()
        elif freeze_feature_encoder:
            self.ssl.freeze_feature_encoder()

    def train(self, mode: bool = True) -> "SSLFrontEnd":
        """A frozen front-end stays in eval mode: dropout in a model nobody trains only adds noise to its features."""
        super().train(mode)
        if self.freeze_ssl:
            self.ssl.eval()
        return self

    def frame_mask(self, num_frames: int, attention_mask: Tensor) -> Tensor:
        """Sample-level mask (B, T), right-padded -> frame-level bool mask (B, F) by the conv length formula."""
        lengths = attention_mask.sum(-1)
        frame_lengths = self.ssl._get_feat_extract_output_lengths(lengths)
        if int(frame_lengths.min()) < 1:
            shortest = int(lengths.min())
            raise CblError(
                f"an utterance of {shortest} samples is shorter than the front-end's receptive field "
                "(400 samples for wav2vec2), so it has no frames to pool"
            )
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
        frames). With a frozen front-end this is exactly what the frozen-feature cache
        stores (:mod:`cbl.feature_cache`); :meth:`select` turns it into frames.
        """
        context = torch.no_grad() if self.freeze_ssl else nullcontext()
        with context:
            out = self.ssl(
                audio,
                attention_mask=None if attention_mask is None else attention_mask.long(),
                output_hidden_states=self.layer_mode != "last",
            )
        if self.layer_mode == "last":
            states = out.last_hidden_state
        elif self.layer_mode == "index":
            states = out.hidden_states[self.layer_index]
        else:
            states = torch.stack(tuple(out.hidden_states), dim=2)  # (B, F, L+1, H)
        frame_mask = None if attention_mask is None else self.frame_mask(states.shape[1], attention_mask)
        return states, frame_mask

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
