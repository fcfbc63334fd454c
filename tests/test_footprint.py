"""Disk and GPU memory estimates (cbl.engine.footprint, cbl.sweep.budget) and the free-space check before writes."""

from __future__ import annotations

import shutil
from collections import namedtuple
from dataclasses import replace

import pytest

from cbl.config import apply_overrides, resolve_config
from cbl.engine import fit
from cbl.engine.checkpoint import save_checkpoint
from cbl.engine.diskspace import DiskFullError
from cbl.engine.footprint import (
    GIB,
    activation_bytes,
    checkpoint_sizes,
    gpu_memory_estimate,
    parameter_counts,
)
from cbl.errors import CblError
from cbl.model import build_model
from cbl.sweep.budget import check_gpu_packing, concurrent_trials, disk_estimate, say_budget
from cbl.sweep.space import parse_search_space

from tiny import TINY

Usage = namedtuple("Usage", "total used free")


def tiny_config(*extra: str):
    return resolve_config(None, [*TINY, "model.embedding_dim=16", *extra], demo=True)


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("model.freeze_feature_encoder=true",),
        ("model.freeze_ssl=true", "model.layer_mode=weighted", "model.pooling=attention"),
    ],
)
def test_parameter_counts_equal_the_built_models(extra):
    config = tiny_config(*extra)
    counts = parameter_counts(config.model)
    model = build_model(config.model)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_checkpoint_sizes_match_the_files_training_writes(tmp_path):
    config = tiny_config("model.freeze_feature_encoder=true", "train.epochs=2")
    fit(config, None, tmp_path)
    sizes = checkpoint_sizes(parameter_counts(config.model))
    written = {p.name: p.stat().st_size for p in (tmp_path / "checkpoints").iterdir()}
    (frozen,) = (tmp_path / "frozen").glob("*.pt")
    # the estimate counts tensors only: the files add the config, RNG states, centers and pickle framing
    for name, estimate in (("last.pt", sizes.resume), ("best.pt", sizes.best)):
        assert estimate <= written[name] <= estimate * 1.15 + 40_000, (name, estimate, written[name])
    assert sizes.frozen <= frozen.stat().st_size <= sizes.frozen * 1.15 + 20_000
    assert sizes.resume_before - sizes.resume == sizes.frozen == sizes.best_before - sizes.best


def test_the_disk_estimate_counts_running_trials_kept_bests_and_the_frozen_store():
    sizes = checkpoint_sizes(parameter_counts(tiny_config("model.freeze_feature_encoder=true").model))
    disk = disk_estimate(sizes, concurrent=4, keep_best=3)
    # each running trial: last.pt, best.pt and the temporary last.pt of a write (all four writing at once)
    assert disk.peak == 4 * (2 * sizes.resume + sizes.best) + 3 * sizes.best + sizes.frozen
    assert "(last " in disk.line()
    kept = disk_estimate(sizes, concurrent=4, keep_best=3, keep_previous=True)  # previous.pt too
    assert kept.peak == disk.peak + 4 * sizes.resume and "(last + previous " in kept.line()
    assert "4 running trial(s)" in disk.line() and "3 kept best.pt" in disk.line()


def test_concurrency_is_max_concurrent_or_what_the_cluster_allows():
    spec = parse_search_space(
        {"resources": {"cpu": 2, "gpu": 0.5}, "search": {"max_concurrent": 3}}, source="space.yaml"
    )
    assert concurrent_trials(spec, {"CPU": 16, "GPU": 1}, total=24) == 2  # two per GPU, one GPU
    assert concurrent_trials(spec, {"CPU": 16, "GPU": 4}, total=24) == 3  # max_concurrent
    assert concurrent_trials(spec, {"CPU": 4, "GPU": 4}, total=24) == 2  # CPUs
    assert concurrent_trials(spec, {"CPU": 16, "GPU": 4}, total=1) == 1


def xlsr_config(tmp_path, *extra: str):
    """XLS-R 300M's published layout (its config only: no weight is read to count or estimate)."""
    from transformers import Wav2Vec2Config

    from cbl.model.families import FAMILIES

    folder = tmp_path / "xlsr"
    Wav2Vec2Config(**FAMILIES["xls-r-300m"].config).save_pretrained(folder)
    return resolve_config(None, [f"model.ssl={folder}", "data.max_len=64600", *extra])


def test_xlsr_sized_counts_and_checkpoints_are_those_measured_in_issue_17(tmp_path):
    config = xlsr_config(tmp_path)
    counts = parameter_counts(config.model)
    assert 314e6 < counts.total < 317e6 and 4e6 < counts.frozen < 4.5e6  # the CNN feature encoder frozen
    sizes = checkpoint_sizes(counts)
    assert 3.7e9 < sizes.resume_before < 3.8e9 and 1.25e9 < sizes.best_before < 1.27e9  # last.pt 3.8 GB, best 1.26


def test_gpu_estimate_parts_and_what_each_setting_changes(tmp_path):
    config = xlsr_config(tmp_path, "train.batch_size=8")
    plain = gpu_memory_estimate(config)
    counts = parameter_counts(config.model)
    assert plain.optimizer == 8 * counts.trainable and plain.gradients == 4 * counts.trainable
    assert plain.total == plain.weights + plain.gradients + plain.optimizer + plain.activations
    checkpointed = gpu_memory_estimate(apply_overrides(config, {"model.gradient_checkpointing": True}))
    assert checkpointed.activations < plain.activations / 5 and checkpointed.optimizer == plain.optimizer
    double = gpu_memory_estimate(apply_overrides(config, {"train.batch_size": 16}))
    assert double.activations == 2 * plain.activations
    fp32 = gpu_memory_estimate(apply_overrides(config, {"train.bf16": False}))
    assert fp32.activations > plain.activations and fp32.precision == "fp32"
    head_only = gpu_memory_estimate(apply_overrides(config, {"model.freeze_ssl": True}))
    assert head_only.optimizer < 0.01 * plain.optimizer and head_only.activations < plain.activations / 20
    # longer crops: attention grows with the square of the frame count
    assert activation_bytes(config.model, counts.ssl_config, 1, 4 * 64600, True) > 4 * activation_bytes(
        config.model, counts.ssl_config, 1, 64600, True
    )


def test_a_packing_that_cannot_fit_the_gpu_is_refused_with_the_numbers(tmp_path):
    config = xlsr_config(tmp_path, "train.batch_size=8")
    estimate = gpu_memory_estimate(config)
    spec = parse_search_space({"resources": {"gpu": 0.25}}, source="space.yaml")
    with pytest.raises(CblError, match=r"space\.yaml: resources\.gpu is 0\.25, so 4 trials share a GPU, each") as err:
        check_gpu_packing(estimate, spec, gpu_memory=16 * GIB)  # a faked 16 GiB card
    message = str(err.value)
    assert f"~{estimate.total / GIB:.1f} GiB: {4 * estimate.total / GIB:.1f} GiB, but the GPU has 16.0 GiB" in message
    assert "use resources.gpu: 0.5 (2 per GPU)" in message and "model.gradient_checkpointing: true" in message
    check_gpu_packing(estimate, spec, gpu_memory=80 * GIB)  # fits an 80 GiB card
    check_gpu_packing(estimate, spec, gpu_memory=None)  # not known on this machine: not checked
    whole = parse_search_space({"resources": {"gpu": 1}}, source="space.yaml")
    check_gpu_packing(estimate, whole, gpu_memory=1 * GIB)  # one trial per GPU: nothing is packed


def test_say_budget_prints_the_estimates_and_warns_when_the_storage_is_too_small(tmp_path, monkeypatch):
    config = xlsr_config(tmp_path)
    spec = parse_search_space({"resources": {"gpu": 0.5}}, source="space.yaml")
    lines: list[str] = []
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: Usage(10**12, 0, 5 * 10**9))
    disk = say_budget(config, spec, tmp_path, 2, lines.append, gpu_memory=None)
    assert disk is not None and disk.line() == lines[0]
    assert lines[1] == (
        f"warning: {tmp_path} has 5 GB free, less than the {disk.line().split()[4]} GB the checkpoints may need; "
        "a write that would not fit stops its trial with a clear error"
    )
    assert lines[2].startswith("GPU memory per trial: ~")
    lines.clear()
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: Usage(10**13, 0, 10**13))
    say_budget(config, replace(spec, gpu=0.0), tmp_path, 2, lines.append)
    assert len(lines) == 1 and lines[0].startswith("checkpoint disk: at most 2")


def test_a_checkpoint_that_would_not_fit_is_a_clear_error_and_nothing_is_written(tmp_path, monkeypatch):
    config = tiny_config()
    model = build_model(config.model)
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: Usage(10**9, 10**9, 1000))
    target = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(DiskFullError, match=r"last\.pt: not enough free space to write it \(0\.\d+ MB needed"):
        save_checkpoint(target, {"model": model.state_dict()}, config)
    assert not target.exists() and not list(tmp_path.rglob("*.tmp"))
