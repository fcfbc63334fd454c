"""The detector on the tiny random-init wav2vec2: pooling x loss, padding, layers, freezing, loading."""

from __future__ import annotations

import logging
import re

import pytest
import torch

import cbl.model.loading as loading_module
import cbl.model.ssl as ssl_module
from cbl.centers import KMeansCenters
from cbl.config import LossConfig, ModelConfig, OptimConfig
from cbl.errors import CblError, ConfigError
from cbl.losses import compute_loss
from cbl.model import POOLING, DetectorOutput, SpoofDetector, build_model, build_pooling, param_groups

torch.set_num_threads(2)

SAMPLES = 4000  # 0.25 s at 16 kHz: 12 frames, plenty for the tiny model


def audio(batch: int = 4, samples: int = SAMPLES, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def small_model(**overrides) -> SpoofDetector:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{"ssl": "tiny", "embedding_dim": 16, **overrides}))


@pytest.mark.parametrize("loss_type", ["cluster_only", "combined", "ce_only"])
@pytest.mark.parametrize("pooling", sorted(POOLING))
def test_forward_backward_for_each_pooling_and_loss(pooling: str, loss_type: str) -> None:
    model = small_model(pooling=pooling)
    model.train()
    mask = torch.ones(4, SAMPLES)
    mask[1, SAMPLES // 2 :] = 0
    output = model(audio(), mask)
    assert isinstance(output, DetectorOutput)
    assert output.embedding.shape == (4, 16) and output.logits.shape == (4, 2)
    assert torch.allclose(output.embedding.norm(dim=1), torch.ones(4), atol=1e-5)
    centers = KMeansCenters(2, 16)
    centers.fit(torch.randn(8, 16))
    labels, weights = torch.tensor([1, 0, 1, 0]), torch.tensor([0.6, 3.0])
    parts = compute_loss(output, labels, centers, LossConfig(type=loss_type), weights)
    parts.total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert model.projection.weight.grad is not None and model.projection.weight.grad.abs().sum() > 0
    assert model.frontend.ssl.encoder.layers[0].feed_forward.output_dense.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("pooling", sorted(POOLING))
def test_pooling_ignores_padded_frames(pooling: str) -> None:
    torch.manual_seed(1)
    pool = build_pooling(pooling, 8)
    frames = torch.randn(2, 10, 8)
    frames[0, 6:] = 1e3  # garbage in the padding must not leak into the result
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 6:] = False
    batched = pool(frames, mask)
    alone = pool(frames[:1, :6], None)
    assert batched.shape == (2, pool.output_dim)
    assert torch.allclose(batched[0], alone[0], atol=1e-5)


@pytest.mark.parametrize("pooling", sorted(POOLING))
def test_detector_output_does_not_depend_on_padding(pooling: str) -> None:
    model = small_model(pooling=pooling).eval()
    short, long = audio(1, 3200, seed=2), audio(1, 6400, seed=3)
    batch = torch.zeros(2, 6400)
    batch[0, :3200], batch[1] = short[0], long[0]
    mask = torch.ones(2, 6400)
    mask[0, 3200:] = 0
    with torch.no_grad():
        padded = model(batch, mask)
        alone = model(short, None)
    assert torch.allclose(padded.embedding[0], alone.embedding[0], atol=1e-5)
    assert torch.allclose(padded.logits[0], alone.logits[0], atol=1e-5)


@pytest.mark.parametrize("layer_mode, layer_index", [("last", -1), ("index", 0), ("index", -1), ("weighted", -1)])
def test_layer_modes(layer_mode: str, layer_index: int) -> None:
    model = small_model(layer_mode=layer_mode, layer_index=layer_index)
    output = model(audio(2))
    output.logits.sum().backward()
    weights = model.frontend.layer_weights
    if layer_mode == "weighted":
        assert weights is not None and weights.shape == (3,) and weights.grad is not None
    else:
        assert weights is None


def test_layer_index_selects_that_hidden_state() -> None:
    first = small_model(layer_mode="index", layer_index=0).eval()
    frames, _ = first.frontend(audio(1))
    with torch.no_grad():
        expected = first.frontend.ssl(audio(1), output_hidden_states=True).hidden_states[0]
    assert torch.allclose(frames, expected)
    with pytest.raises(ConfigError, match=re.escape("'model.layer_index' is 3, but 'tiny' has 3 hidden states")):
        small_model(layer_mode="index", layer_index=3)


def test_default_freezes_only_the_feature_encoder() -> None:
    model = small_model()
    assert not any(p.requires_grad for p in model.frontend.ssl.feature_extractor.parameters())
    assert all(p.requires_grad for p in model.frontend.ssl.encoder.parameters())
    unfrozen = small_model(freeze_feature_encoder=False)
    assert all(p.requires_grad for p in unfrozen.frontend.ssl.parameters())


def test_freeze_ssl_trains_only_the_head() -> None:
    model = small_model(freeze_ssl=True, freeze_feature_encoder=False, layer_mode="weighted")
    model.train()
    assert not model.frontend.ssl.training  # a frozen front-end stays in eval mode
    assert not any(p.requires_grad for p in model.frontend.ssl.parameters())
    model(audio(2)).logits.sum().backward()
    assert all(p.grad is None for p in model.frontend.ssl.parameters())
    assert model.classifier.weight.grad is not None and model.frontend.layer_weights.grad is not None
    groups = param_groups(model, OptimConfig())
    assert [g["name"] for g in groups] == ["head"]


def test_param_groups_split_front_end_and_head_learning_rates() -> None:
    model = small_model(layer_mode="weighted")
    optim = OptimConfig(lr=1e-5, head_lr=1e-3, weight_decay=0.01)
    groups = param_groups(model, optim)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [("ssl", 1e-5, 0.01), ("head", 1e-3, 0.01)]
    ssl_ids = {id(p) for p in groups[0]["params"]}
    head_ids = {id(p) for p in groups[1]["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert ssl_ids.isdisjoint(head_ids) and ssl_ids | head_ids == trainable
    assert ssl_ids == {id(p) for p in model.frontend.ssl.parameters() if p.requires_grad}
    assert id(model.frontend.layer_weights) in head_ids
    assert not ({id(p) for p in model.frontend.ssl.feature_extractor.parameters()} & ssl_ids)
    torch.optim.AdamW(groups)  # the groups are directly usable


def test_tiny_is_flagged_random_and_warns_once(caplog) -> None:
    loading_module._warned_random_init = False
    with caplog.at_level(logging.WARNING, logger="cbl.model.loading"):
        first, second = small_model(), small_model()
    assert first.is_random_init and second.is_random_init
    notices = [r for r in caplog.records if "randomly initialised" in r.getMessage()]
    assert len(notices) == 1 and "not results" in notices[0].getMessage()


def test_save_pretrained_folder_loads_through_from_pretrained(tmp_path) -> None:
    from transformers import Wav2Vec2Model

    torch.manual_seed(4)
    saved = Wav2Vec2Model(ssl_module.tiny_wav2vec2_config())
    saved.save_pretrained(tmp_path / "w2v")
    model = build_model(ModelConfig(ssl=str(tmp_path / "w2v"), embedding_dim=16)).eval()
    assert not model.is_random_init
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.frontend.ssl.state_dict()[name], tensor), name
    with torch.no_grad():
        assert torch.allclose(model.frontend(audio(1))[0], saved.eval()(audio(1)).last_hidden_state)


@pytest.mark.parametrize(
    "name, message",
    [
        ("facebook/wav2vec2-nope", "cannot load the SSL front-end model.ssl='facebook/wav2vec2-nope'"),
        ("./no/such/folder", "looks like a local path, but there is no such folder"),
    ],
)
def test_unloadable_front_end_is_one_clear_error(name: str, message: str) -> None:
    with pytest.raises(CblError, match=message):
        build_model(ModelConfig(ssl=name))


def test_too_short_audio_in_a_batch_is_a_clear_error() -> None:
    model = small_model()
    mask = torch.ones(2, SAMPLES)
    mask[1, 300:] = 0
    with pytest.raises(CblError, match="an utterance of 300 samples is shorter than the front-end's receptive field"):
        model(audio(2), mask)


@pytest.mark.parametrize("layer_mode", ["last", "weighted"])
def test_gradient_checkpointing_gives_the_same_gradients(layer_mode: str) -> None:
    """The tiny model has dropout off (tiny_wav2vec2_config): recomputing a layer gives the same activations."""
    grads = []
    audio = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    for checkpointing in (False, True):
        torch.manual_seed(0)
        config = ModelConfig(
            ssl="tiny", layer_mode=layer_mode, freeze_feature_encoder=False, gradient_checkpointing=checkpointing
        )
        model = build_model(config).train()
        ssl = model.frontend.ssl
        flag = ssl.is_activation_checkpointing if hasattr(ssl, "is_activation_checkpointing") else None
        assert (ssl.is_gradient_checkpointing if flag is None else flag) == checkpointing
        out = model(audio)
        (out.logits.sum() + out.embedding.pow(3).sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    plain, checkpointed = grads
    assert plain.keys() == checkpointed.keys() and any("encoder.layers.1" in n for n in plain)
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], rtol=1e-5, atol=1e-7), name
