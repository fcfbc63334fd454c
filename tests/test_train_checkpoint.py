"""Checkpoints: round trip with the resolved config, strict model loading, safe and clear failures."""

from __future__ import annotations

import io
import pathlib
import shutil

import pytest
import torch

from cbl.config import ModelConfig, resolve_config
from cbl.engine.checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from cbl.model import build_model


@pytest.fixture(scope="module")
def config():
    return resolve_config(None, ["model.embedding_dim=16", "train.num_threads=1"], demo=True)


@pytest.fixture(scope="module")
def model(config):
    torch.manual_seed(0)
    return build_model(config.model)


@pytest.fixture
def saved(config, model, tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"model": model.state_dict(), "epoch": 4, "step": 40, "best_dev_eer": 0.25}, config)
    return path


def test_round_trip_keeps_state_and_resolved_config(saved, config, model):
    payload, loaded_config = load_checkpoint(saved)
    assert loaded_config == config
    assert (payload["epoch"], payload["step"], payload["best_dev_eer"]) == (4, 40, 0.25)
    rebuilt = build_model(loaded_config.model)
    load_model_state(rebuilt, payload["model"], str(saved))
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in model.state_dict().items())
    assert sorted(p.name for p in saved.parent.iterdir()) == ["last.pt"]  # written atomically, no leftovers


def test_a_folder_means_its_best_or_last_checkpoint(saved, tmp_path):
    assert load_checkpoint(saved.parent)[0]["epoch"] == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: folder holds no best\.pt or last\.pt checkpoint"):
        load_checkpoint(tmp_path / "empty")
    with pytest.raises(CheckpointError, match=r"nope\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"pooling": "attention"}, r"missing: pooling\.score\.0\.bias, .*; shape mismatch: projection\.weight"),
        ({"embedding_dim": 32}, r"shape mismatch: .*projection\.weight"),
    ],
    ids=["pooling", "embedding_dim"],
)
def test_loading_into_another_model_lists_the_mismatched_keys(saved, config, change, expected):
    payload, _ = load_checkpoint(saved)
    other = build_model(ModelConfig(**{**vars(config.model), **change}))
    with pytest.raises(CheckpointError, match=rf"last\.pt: checkpoint does not fit the model \(.*{expected}"):
        load_model_state(other, payload["model"], str(saved))


def test_unexpected_keys_are_listed(saved, config, model):
    payload, _ = load_checkpoint(saved)
    state = {**payload["model"], "head.extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected: head\.extra\.weight"):
        load_model_state(build_model(config.model), state, "x.pt")


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[: len(data) // 2], lambda data: b"", lambda data: b"not a checkpoint at all" * 10],
    ids=["truncated", "empty", "garbage"],
)
def test_damaged_file_is_a_checkpoint_error_naming_it(saved, damage):
    saved.write_bytes(damage(saved.read_bytes()))
    with pytest.raises(CheckpointError, match=rf"{saved}: not a readable cbl checkpoint \(truncated or corrupt\?\)"):
        load_checkpoint(saved)


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match=r"weights\.pt: not a cbl checkpoint \(no model state or config"):
        load_checkpoint(path)


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickled_objects_are_refused_without_running_them(saved, tmp_path):
    marker = tmp_path / "code-ran"
    buffer = io.BytesIO()
    payload = torch.load(saved, weights_only=True)
    torch.save({**payload, "extra": _RunsCodeWhenUnpickled(marker)}, buffer)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused: the file holds a pickled Python object \(\w+\)"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_checkpoint_of_an_incompatible_config_is_refused(saved, tmp_path):
    payload = torch.load(saved, weights_only=True)
    payload["config"]["loss"]["flavour"] = "x"
    bad = tmp_path / "old.pt"
    torch.save(payload, bad)
    with pytest.raises(
        CheckpointError, match=r"old\.pt: its config does not load with this version of cbl: .*loss\.flavour"
    ):
        load_checkpoint(bad)
    shutil.rmtree(saved.parent)
