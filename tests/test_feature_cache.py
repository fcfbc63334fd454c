"""The frozen-feature cache: same results as without it, built once, keyed, shared; fixed crops; chunked scoring."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cbl.cli import cli
from cbl.config import DataConfig, resolve_config
from cbl.data import TrainDataset, load_split
from cbl.engine import fit, load_checkpoint, read_history
from cbl.engine.feature_build import open_or_build
from cbl.engine.feature_cache import FeatureDataset, cache_key, collate_features, describe_cache, frontend_fingerprint
from cbl.errors import ConfigError
from cbl.model import build_model

from tiny import TINY, as_set_args

HEAD_ONLY = (
    "model.freeze_ssl=true",
    "data.train_crop=fixed",
    "data.demo_seconds=1.0",
    "centers.refresh_every=1",
    "train.epochs=2",
)


def head_config(*sets: str):
    return resolve_config(None, [*TINY, *HEAD_ONLY, *sets], demo=True)


def _entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.parametrize("sets", [(), ("model.layer_mode=weighted", "loss.type=combined")], ids=["last", "weighted"])
def test_cache_gives_the_same_run_as_audio(tmp_path, sets):
    """Same config and seed: the same dev EER every epoch and the same trained weights, with or without the cache."""
    plain = fit(head_config(*sets), None, tmp_path / "plain")
    cached_config = head_config(*sets, "train.feature_cache=true")
    cached = fit(cached_config, None, tmp_path / "cached")
    plain_eers = [m["dev_eer"] for m in read_history(tmp_path / "plain")]
    cached_eers = [m["dev_eer"] for m in read_history(tmp_path / "cached")]
    assert cached_eers == pytest.approx(plain_eers, abs=1e-9)
    assert cached.best_epoch == plain.best_epoch
    a, _ = load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")
    b, _ = load_checkpoint(tmp_path / "cached" / "checkpoints" / "last.pt")
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    root = tmp_path / "cached" / "feature_cache"
    assert [e.split("-")[0] for e in _entries(root)] == ["dev", "train"]
    meta = json.loads(next(root.glob("train-*/meta.json")).read_text())
    assert meta["layer_mode"] == ("weighted" if sets else "last") and meta["crop"] == "fixed"
    assert meta["utterances"] == len(load_split(cached_config.data, "train"))


def test_cache_is_built_once_and_reused(tmp_path):
    root = tmp_path / "cache"
    config = head_config("train.feature_cache=true", f"train.feature_cache_dir={root}", "train.epochs=1")
    fit(config, None, tmp_path / "a")
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("*/features.npy")}
    fit(config, None, tmp_path / "b")
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/features.npy")} == stamps
    sizes = describe_cache(root)
    assert {e["split"] for e in sizes} == {"train", "dev"} and all(e["bytes"] > 0 for e in sizes)


@pytest.mark.parametrize("change", ["model.layer_mode=weighted", "train.seed=1", "data.max_len=4000"])
def test_a_changed_key_is_a_new_entry(tmp_path, change):
    """The weights (seed of the tiny model), the layer selection and the crop are all part of the key."""
    root = tmp_path / "cache"
    base = ("train.feature_cache=true", f"train.feature_cache_dir={root}", "train.epochs=1")
    fit(head_config(*base), None, tmp_path / "a")
    before = set(_entries(root))
    fit(head_config(*base, change), None, tmp_path / "b")
    after = set(_entries(root))
    assert before < after and any(e.startswith("train-") for e in after - before)


def test_changed_audio_is_a_new_entry(tmp_path):
    config = head_config("train.feature_cache=true", "train.epochs=1")
    records = load_split(config.data, "dev")[:6]
    model = build_model(config.model)
    fingerprint = frontend_fingerprint(model.frontend)
    first = open_or_build(tmp_path, "dev", records, config, model, torch.device("cpu"), fingerprint)
    copy = tmp_path / "copy.wav"
    copy.write_bytes(Path(records[0].path).read_bytes())
    moved = [dataclasses.replace(records[0], path=str(copy)), *records[1:]]
    second = open_or_build(tmp_path, "dev", moved, config, model, torch.device("cpu"), fingerprint)
    assert first.path != second.path
    np.testing.assert_allclose(first.features, second.features)  # same audio, same values


def test_concurrent_builders_share_one_entry(tmp_path):
    """Several trials asking at once: one builds, the others wait and read the same entry."""
    config = head_config("train.feature_cache=true")
    records = load_split(config.data, "dev")
    model = build_model(config.model)
    fingerprint = frontend_fingerprint(model.frontend)
    results: list = []

    def build():
        results.append(open_or_build(tmp_path, "dev", records, config, model, torch.device("cpu"), fingerprint))

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.path for r in results}) == 1 and sum(r.built_seconds > 0 for r in results) == 1
    assert _entries(tmp_path) == [results[0].path.name]
    # every item's cached states are what the front-end computes for that utterance alone
    dataset = FeatureDataset(records, results[0])
    model.eval()
    with torch.no_grad():
        for i in (0, len(records) - 1):
            from cbl.data import EvalDataset

            audio = EvalDataset(records, config.data)[i]["audio"][None]
            states, _ = model.frontend.hidden(audio)
            torch.testing.assert_close(dataset[i]["states"], states[0], rtol=1e-4, atol=1e-5)


def test_collate_pads_and_masks_frames():
    items = [{"states": torch.ones(n, 3), "label": 1, "utt_id": str(n), "attack": "-", "index": n} for n in (4, 2)]
    batch = collate_features(items)
    assert batch["states"].shape == (2, 4, 3) and batch["states"][1, 2:].abs().sum() == 0
    assert batch["frame_mask"].tolist() == [[True] * 4, [True, True, False, False]]
    assert collate_features(items[:1])["frame_mask"] is None


@pytest.mark.parametrize(
    "sets, needs",
    [
        (("model.freeze_ssl=false",), "model.freeze_ssl=true"),
        (("data.train_crop=random",), "data.train_crop=fixed"),
        (("data.rawboost_algo=3",), "data.rawboost_algo=0"),
    ],
)
def test_cache_refuses_configs_it_cannot_serve(tmp_path, sets, needs):
    with pytest.raises(ConfigError, match=needs.replace(".", r"\.")):
        fit(head_config("train.feature_cache=true", *sets), None, tmp_path / "r")
    assert not (tmp_path / "r").exists()  # refused before anything was written
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--demo",
            *as_set_args((*TINY, *HEAD_ONLY, "train.feature_cache=true", *sets)),
            "--out",
            str(tmp_path / "c"),
        ],
    )
    assert result.exit_code == 2 and needs in result.output and "Traceback" not in result.output


def test_fixed_crops_do_not_change_with_the_epoch(tmp_path):
    config = head_config()
    records = load_split(config.data, "train")[:4]
    data = DataConfig(**{**config.data.__dict__, "max_len": 4000})
    fixed = TrainDataset(records, data, seed=0)
    random_data = DataConfig(**{**data.__dict__, "train_crop": "random"})
    moving = TrainDataset(records, random_data, seed=0)
    first_fixed, first_moving = fixed[0]["audio"], moving[0]["audio"]
    fixed.set_epoch(1)
    moving.set_epoch(1)
    assert torch.equal(fixed[0]["audio"], first_fixed)
    assert not torch.equal(moving[0]["audio"], first_moving)


def test_dev_longer_than_eval_max_len_is_scored_from_audio(tmp_path, caplog):
    config = head_config("train.feature_cache=true", "data.eval_max_len=4000", "train.epochs=1")
    caplog.set_level("WARNING")
    fit(config, None, tmp_path / "r")
    assert "dev is scored from audio" in caplog.text
    assert [e.split("-")[0] for e in _entries(tmp_path / "r" / "feature_cache")] == ["train"]
    assert len(read_history(tmp_path / "r")) == 1


HEAD_SWEEP = """
name: heads
fixed:
  model.freeze_ssl: true
  data.train_crop: fixed
  train.feature_cache: true
space:
  model.pooling: {grid: [mean, max]}
  loss.type: {grid: [cluster_only, ce_only]}
search: {algorithm: grid, max_concurrent: 2}
scheduler: {name: none}
resources: {cpu: 1, gpu: 0}
demo:
  fixed: {model.freeze_ssl: true}
"""


@pytest.mark.ray
def test_a_head_only_sweep_shares_one_cache(ray_session, tmp_path):
    """Every trial of the sweep reads the cache one trial built in the experiment folder; results match audio."""
    from cbl.sweep.store import read_trials

    space = tmp_path / "heads.yaml"
    space.write_text(HEAD_SWEEP)
    sets = [*TINY, "data.demo_seconds=1.0", "train.epochs=2", "centers.refresh_every=1"]
    result = CliRunner().invoke(
        cli, ["run", str(space), "--demo", "--storage", str(tmp_path / "runs"), *as_set_args(sets)]
    )
    assert result.exit_code == 0, result.output
    experiment = tmp_path / "runs" / "heads"
    assert f"feature cache {experiment / 'feature_cache'}: dev " in result.output  # the size, after the table
    trials = read_trials(experiment)
    assert len(trials) == 4 and {t.state for t in trials} == {"finished"}
    assert [e.split("-")[0] for e in _entries(experiment / "feature_cache")] == ["dev", "train"]
    # one trial, trained again from audio alone, reaches the same dev EER every epoch
    trial = next(t for t in trials if t.params == {"model.pooling": "max", "loss.type": "cluster_only"})
    config = resolve_config(
        None,
        [
            *sets,
            *HEAD_ONLY[:2],
            "model.pooling=max",
            "loss.type=cluster_only",
            "train.epochs=2",
            "data.demo_seconds=1.0",
        ],
        demo=True,
    )
    fit(config, None, tmp_path / "audio")
    assert [m["dev_eer"] for m in read_history(trial.path)] == pytest.approx(
        [m["dev_eer"] for m in read_history(tmp_path / "audio")], abs=1e-9
    )
    status = CliRunner().invoke(cli, ["status", str(experiment)])
    assert status.exit_code == 0 and f"feature cache {experiment / 'feature_cache'}: " in status.output
    assert re.search(r"dev \d+\.\d MB \(40 utterances, last\), train \d+\.\d MB .*MB in all", status.output)


def test_train_reports_the_cache_size(tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--demo",
            *as_set_args((*TINY, *HEAD_ONLY, "train.feature_cache=true", "train.epochs=1")),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert re.search(
        rf"feature cache {re.escape(str(tmp_path / 'r' / 'feature_cache'))}: dev \d+\.\d MB", result.output
    )


@pytest.mark.ray
def test_relative_paths_in_a_sweep_mean_where_the_command_ran(ray_session, tmp_path, monkeypatch):
    """Ray runs each trial in its own folder: `--set train.feature_cache_dir=shared` must still be ./shared."""
    from cbl.sweep.store import read_trials

    space = tmp_path / "heads.yaml"
    space.write_text(HEAD_SWEEP.replace("loss.type: {grid: [cluster_only, ce_only]}", "loss.type: {grid: [ce_only]}"))
    monkeypatch.chdir(tmp_path)
    sets = [*TINY, "data.demo_seconds=1.0", "train.epochs=1", "train.feature_cache_dir=shared"]
    result = CliRunner().invoke(
        cli, ["run", "heads.yaml", "--demo", "--storage", "runs", "--no-final-eval", *as_set_args(sets)]
    )
    assert result.exit_code == 0, result.output
    trials = read_trials(tmp_path / "runs" / "heads")
    assert len(trials) == 2 and {t.state for t in trials} == {"finished"}
    assert [e.split("-")[0] for e in _entries(tmp_path / "shared")] == ["dev", "train"]
    assert not list((tmp_path / "runs").rglob("feature_cache")) and not list((tmp_path / "runs").rglob("shared"))
    saved = (trials[0].path / "config.yaml").read_text()
    assert f"feature_cache_dir: {tmp_path / 'shared'}" in saved
    status = CliRunner().invoke(cli, ["status", "runs/heads"])
    assert f"feature cache {tmp_path / 'shared'}: dev " in status.output  # found through the trials' config


@pytest.fixture
def dev_setup():
    config = head_config("train.feature_cache=true")
    records = load_split(config.data, "dev")[:6]
    model = build_model(config.model)
    return config, records, model, frontend_fingerprint(model.frontend)


def _build(root, setup):
    config, records, model, fingerprint = setup
    return open_or_build(root, "dev", records, config, model, torch.device("cpu"), fingerprint)


def test_a_dead_builders_temporary_folder_is_removed(tmp_path, dev_setup):
    name = _build(tmp_path, dev_setup).path.name
    shutil.rmtree(tmp_path / name)
    stale = tmp_path / f".{name}.tmp-othernode-4242"
    stale.mkdir()
    (stale / "features.npy").write_bytes(b"half")
    assert _build(tmp_path, dev_setup).built_seconds > 0
    assert not stale.exists() and _entries(tmp_path) == [name]


def test_a_full_disk_while_building_is_an_oserror_naming_the_file(tmp_path, dev_setup, monkeypatch):
    """Disk blocks are reserved before the memmap is written: ENOSPC, not a SIGBUS, and nothing left behind."""

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match=r"features\.npy") as raised:
        _build(tmp_path, dev_setup)
    assert raised.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_a_filesystem_without_locks_still_builds(tmp_path, dev_setup, monkeypatch, caplog):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    caplog.set_level("WARNING")
    assert _build(tmp_path, dev_setup).built_seconds > 0
    assert "has no file locks" in caplog.text


def test_losing_the_rename_race_to_another_node_reads_its_entry(tmp_path, dev_setup, monkeypatch):
    import cbl.engine.feature_build as fc

    real_replace = os.replace

    def other_node_first(src, dst):
        shutil.copytree(src, dst)  # the other node's identical entry lands first
        real_replace(src, dst)  # -> ENOTEMPTY, as on a shared filesystem

    monkeypatch.setattr(fc.os, "replace", other_node_first)
    cached = _build(tmp_path, dev_setup)
    assert (cached.path / "meta.json").is_file() and _entries(tmp_path) == [cached.path.name]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_the_key_holds_precision_and_the_dev_batch_size(dev_setup):
    config, records, _, fingerprint = dev_setup
    cpu = cache_key("dev", records, config, fingerprint, torch.device("cpu"))
    assert cpu["precision"] == "float32" and cpu["batch"] == config.train.eval_batch_size
    assert cache_key("dev", records, config, fingerprint, torch.device("cuda"))["precision"] == "bf16-autocast"


def test_rawboost_copies_give_the_same_run_as_audio(tmp_path):
    """data.augment_copies=2: epochs 1 and 3 train on copy 0, epoch 2 on copy 1; two train entries, same results."""
    sets = ("data.rawboost_algo=2", "data.augment_copies=2", "train.epochs=3")
    fit(head_config(*sets), None, tmp_path / "plain")
    fit(head_config(*sets, "train.feature_cache=true"), None, tmp_path / "cached")
    assert [m["dev_eer"] for m in read_history(tmp_path / "cached")] == pytest.approx(
        [m["dev_eer"] for m in read_history(tmp_path / "plain")], abs=1e-9
    )
    a, _ = load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")
    b, _ = load_checkpoint(tmp_path / "cached" / "checkpoints" / "last.pt")
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cached" / "feature_cache").glob("train-*/meta.json")]
    assert sorted((m["rawboost"], m["copy"]) for m in metas) == [(2, 0), (2, 1)]


def test_augment_copies_repeat_every_n_epochs():
    config = head_config("data.rawboost_algo=2", "data.augment_copies=2")
    records = load_split(config.data, "train")[:3]
    dataset = TrainDataset(records, config.data, seed=0)
    by_epoch = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        by_epoch.append(dataset[1]["audio"])
    assert torch.equal(by_epoch[0], by_epoch[2]) and not torch.equal(by_epoch[0], by_epoch[1])
    fresh = TrainDataset(records, DataConfig(**{**config.data.__dict__, "augment_copies": 0}), seed=0)
    draws = []
    for epoch in (0, 2):
        fresh.set_epoch(epoch)
        draws.append(fresh[1]["audio"])
    assert not torch.equal(draws[0], draws[1])  # without copies every epoch draws anew
