"""Frozen parameters stored once (cbl.engine.frozen): smaller checkpoints, exact round trips, clear mismatches."""

from __future__ import annotations

import pytest
import torch

from cbl.config import resolve_config
from cbl.engine import fit, load_model
from cbl.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cbl.engine.frozen import FROZEN_KEY, split_frozen, weights_hash
from cbl.model import build_model

from tiny import TINY


def tiny_config(*extra: str):
    # the demo tunes the feature encoder too; freezing it is the default outside the demo
    return resolve_config(
        None, [*TINY, "model.embedding_dim=16", "model.freeze_feature_encoder=true", *extra], demo=True
    )


def save_both(model, config, folder):
    """The same payload as a full state dict (cbl before) and with the frozen part stored once."""
    payload = {"model": model.state_dict(), "epoch": 0}
    full = save_checkpoint(folder / "full" / "checkpoints" / "best.pt", payload, config)
    checkpoints = folder / "split" / "checkpoints"
    split = save_checkpoint(
        checkpoints / "best.pt", split_frozen(payload, model, folder / "split" / "frozen", checkpoints), config
    )
    return full, split


@pytest.mark.parametrize("freeze", ["model.freeze_feature_encoder=true", "model.freeze_ssl=true"])
def test_a_frozen_part_is_stored_once_and_loads_back_bit_for_bit(tmp_path, freeze):
    config = tiny_config(freeze)
    torch.manual_seed(0)
    model = build_model(config.model)
    full, split = save_both(model, config, tmp_path)
    assert split.stat().st_size < full.stat().st_size
    frozen_files = list((tmp_path / "split" / "frozen").glob("*.pt"))
    assert len(frozen_files) == 1
    frozen = {n: p for n, p in model.state_dict().items() if n in dict(model.named_parameters())}
    frozen = {n: frozen[n] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen_files[0].stem == weights_hash(frozen)
    if freeze.startswith("model.freeze_ssl"):  # nearly every parameter is the front-end's
        assert split.stat().st_size < 0.25 * full.stat().st_size
    raw = torch.load(split, weights_only=True)
    assert FROZEN_KEY in raw and not set(raw[FROZEN_KEY]["keys"]) & set(raw["model"])
    payload, _ = load_checkpoint(split)
    original = model.state_dict()
    assert payload["model"].keys() == original.keys()
    assert all(torch.equal(payload["model"][k], original[k]) for k in original)
    assert FROZEN_KEY not in payload


def test_a_second_checkpoint_reuses_the_stored_file(tmp_path):
    config = tiny_config()
    model = build_model(config.model)
    checkpoints = tmp_path / "checkpoints"
    payload = {"model": model.state_dict()}
    split_frozen(payload, model, tmp_path / "frozen", checkpoints)
    (stored,) = (tmp_path / "frozen").glob("*.pt")
    before = stored.stat().st_mtime_ns
    split_frozen(payload, model, tmp_path / "frozen", checkpoints)
    assert stored.stat().st_mtime_ns == before and len(list((tmp_path / "frozen").iterdir())) == 1


def damage_store(store, how: str) -> None:
    """Replace the store's weights with other ones, or remove the file."""
    (stored,) = store.glob("*.pt")
    if how == "missing":
        stored.unlink()
        return
    content = torch.load(stored, weights_only=True)
    name = next(iter(content["tensors"]))
    content["tensors"][name] = content["tensors"][name] + 1.0
    torch.save(content, stored)


@pytest.mark.parametrize(
    "how, message",
    [
        ("other weights", r"best\.pt: .*holds frozen weights with hash \w+\.\.\., but the checkpoint expects \w+"),
        ("missing", r"best\.pt: its frozen weights .* are not in a 'frozen' folder .*copy the experiment's frozen/"),
    ],
)
def test_a_mismatched_or_missing_store_file_is_a_clear_error(tmp_path, how, message):
    config = tiny_config()
    model = build_model(config.model)
    _, split = save_both(model, config, tmp_path)
    damage_store(tmp_path / "split" / "frozen", how)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(split)


def test_an_old_full_state_checkpoint_still_loads(tmp_path):
    config = tiny_config()
    model = build_model(config.model)
    full, _ = save_both(model, config, tmp_path)
    payload, _ = load_checkpoint(full)
    assert payload["model"].keys() == model.state_dict().keys()


def test_training_writes_the_frozen_part_once_and_resume_and_scoring_rebuild_the_model(tmp_path):
    config = tiny_config("train.epochs=2")
    run_dir = tmp_path / "run"
    result = fit(config, None, run_dir)
    assert len(list((run_dir / "frozen").glob("*.pt"))) == 1
    assert not (run_dir / "checkpoints" / "previous.pt").exists()  # one resume checkpoint by default
    for name in ("best.pt", "last.pt"):
        assert FROZEN_KEY in torch.load(run_dir / "checkpoints" / name, weights_only=True)
    loaded = load_model(result.best_checkpoint)
    torch.manual_seed(config.train.seed)  # fit builds its model right after this seed: the frozen part is as built
    fresh = build_model(config.model)
    frozen = [n for n, p in fresh.named_parameters() if not p.requires_grad]
    assert frozen and all(torch.equal(loaded.model.state_dict()[n], fresh.state_dict()[n]) for n in frozen)
    # a moved run folder still loads (the reference is relative to the checkpoint's folder), and resumes
    moved = tmp_path / "moved"
    run_dir.rename(moved)
    assert load_model(moved / "checkpoints" / "best.pt").config == loaded.config
    again = fit(config, None, moved)
    assert again.epochs_run == 2 and again.best_dev_eer == result.best_dev_eer
