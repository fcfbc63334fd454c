"""fit(): per-epoch reports, checkpoints, resume equivalence, best epoch, divergence, device settings.

Every run here is tiny (40 utterances of 0.5 s per split, batch 8, one thread): the
point is the training loop's bookkeeping, not what the model learns.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

import cbl.engine.trainer
from cbl.config import resolve_config
from cbl.data import load_split
from cbl.engine import (
    CheckpointError,
    TrainingDiverged,
    autocast_for,
    fit,
    learning_rate_scale,
    load_checkpoint,
    pick_device,
    read_history,
    set_threads,
)
from cbl.errors import CblError, DataRootError, UsageError

from tiny import TINY as _TINY

TINY = tuple(item if item != "train.epochs=2" else "train.epochs=3" for item in _TINY)  # 3: resume mid-run


def tiny_config(*sets: str):
    return resolve_config(None, [*TINY, *sets], demo=True)


class Recorder:
    """Keeps every report, and what last.pt held when it arrived; raises after epoch ``stop_after``."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.reports: list[tuple[dict, Path, int]] = []

    def report(self, metrics, checkpoint_dir):
        payload, _ = load_checkpoint(Path(checkpoint_dir) / "last.pt")
        self.reports.append((dict(metrics), Path(checkpoint_dir), payload["epoch"]))
        if self.stop_after is not None and metrics["epoch"] == self.stop_after:
            raise Interrupted


class Interrupted(Exception):
    """Stands in for a killed process."""


@pytest.fixture(scope="module")
def kmeans_run(tmp_path_factory):
    config = tiny_config()
    run_dir = tmp_path_factory.mktemp("kmeans") / "run"
    recorder = Recorder()
    result = fit(config, recorder, run_dir)
    return config, run_dir, recorder, result


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _train_batches(config) -> int:
    return math.ceil(len(load_split(config.data, "train")) / config.train.batch_size)


# --------------------------------------------------------------------------- reports and checkpoints
def test_fit_reports_every_epoch_with_metrics_and_checkpoint_dir(kmeans_run):
    config, run_dir, recorder, result = kmeans_run
    assert [m["epoch"] for m, _, _ in recorder.reports] == [1, 2, 3]
    for metrics, checkpoint_dir, saved_epoch in recorder.reports:
        assert checkpoint_dir == run_dir / "checkpoints"
        assert saved_epoch == metrics["epoch"] - 1  # last.pt is written before the report
        for key in (
            "dev_eer",
            "dev_threshold",
            "train_loss",
            "train_attraction",
            "train_repulsion",
            "train_ce",
            "lr",
            "head_lr",
            "best_dev_eer",
            "best_epoch",
        ):
            assert math.isfinite(metrics[key]), key
        assert 0.0 <= metrics["dev_eer"] <= 1.0
        assert any(key.startswith("cluster_") for key in metrics)
        # cluster_only: the total is attraction + alpha * repulsion + spread_weight * spread, averaged the same way
        expected = (
            metrics["train_attraction"]
            + config.loss.alpha * metrics["train_repulsion"]
            + config.loss.spread_weight * metrics["train_spread"]
        )
        assert metrics["train_loss"] == pytest.approx(expected, rel=1e-5)
        assert metrics["train_ce"] == 0.0
    lrs = [m["lr"] for m, _, _ in recorder.reports]
    assert lrs[0] > lrs[1] > lrs[2]  # cosine decay over train.epochs
    assert read_history(run_dir) == [m for m, _, _ in recorder.reports]
    assert result.run_dir == run_dir
    assert (result.best_epoch, result.best_dev_eer) == min(
        ((m["epoch"], m["dev_eer"]) for m, _, _ in recorder.reports), key=lambda pair: pair[1]
    )


def test_fitting_a_finished_run_again_trains_nothing_and_gives_its_result(kmeans_run):
    """The resume rule at its end point: every epoch is checkpointed, so nothing is left to train or report."""
    config, run_dir, _, result = kmeans_run
    recorder = Recorder()
    again = fit(config, recorder, run_dir)
    assert recorder.reports == []
    assert (again.epochs_run, again.best_epoch, again.best_dev_eer) == (3, result.best_epoch, result.best_dev_eer)
    assert [m["epoch"] for m in read_history(run_dir)] == [1, 2, 3]


def test_checkpoint_holds_the_whole_training_state(kmeans_run):
    config, run_dir, recorder, _ = kmeans_run
    payload, saved_config = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert saved_config == config
    assert payload["epoch"] == 2
    assert payload["step"] == 3 * _train_batches(config)
    assert payload["optimizer"]["state"]  # AdamW moments, not an empty shell
    assert tuple(payload["centers"]["centers"].shape) == (config.loss.num_clusters, config.model.embedding_dim)
    assert isinstance(payload["rng"]["torch"], torch.Tensor)
    history = [m["dev_eer"] for m, _, _ in recorder.reports]
    assert payload["best_dev_eer"] == min(history)
    assert payload["dev_eer"] == history[-1]
    assert (run_dir / "config.yaml").is_file()


def test_best_checkpoint_is_the_epoch_with_the_lowest_dev_eer(kmeans_run):
    _, run_dir, _, result = kmeans_run
    history = [m["dev_eer"] for m in read_history(run_dir)]
    best, _ = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] + 1 == history.index(min(history)) + 1 == result.best_epoch
    assert best["best_dev_eer"] == min(history) == result.best_dev_eer
    assert "optimizer" not in best


def test_best_and_last_checkpoints_are_kept_apart(monkeypatch, tmp_path):
    # scripted dev EERs: epoch 2 is best, epoch 3 is last
    scripted = iter([(0.30, 0.1), (0.10, 0.2), (0.20, 0.3)])
    monkeypatch.setattr(cbl.engine.trainer, "compute_eer", lambda bonafide, spoof: next(scripted))
    result = fit(tiny_config("loss.type=ce_only"), None, tmp_path)
    best, _ = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    last, _ = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    history = [m["dev_eer"] for m in read_history(tmp_path)]
    assert history == [0.30, 0.10, 0.20]
    assert (result.best_epoch, result.best_dev_eer) == (2, 0.10)
    assert best["epoch"] == 1 and best["best_threshold"] == 0.2
    assert last["epoch"] == 2 and last["best_epoch"] == 2
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in best["model"])


# --------------------------------------------------------------------------- resume equivalence
def _final_state(run_dir: Path):
    payload, _ = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    return payload


@pytest.mark.parametrize(
    "sets",
    [
        ("loss.type=cluster_only", "centers.method=kmeans", "centers.refresh_every=1"),  # refits on resume
        ("loss.type=cluster_only", "centers.method=online"),
        ("loss.type=ce_only",),
        ("loss.type=combined", "loss.score=sum", "optim.grad_accum=2"),
    ],
    ids=["kmeans", "online", "ce_only", "combined-sum-accum2"],
)
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, sets):
    config = tiny_config(*sets)
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    fit(config, None, whole)
    with pytest.raises(Interrupted):
        fit(config, Recorder(stop_after=1), pieces)
    assert len(read_history(pieces)) == 1
    fit(config, None, pieces)

    timings = ("epoch_seconds", "train_seconds", "refit_seconds")
    assert read_history(pieces) == [
        {**m, **{key: p[key] for key in timings if key in p}}
        for m, p in zip(read_history(whole), read_history(pieces), strict=True)
    ]
    a, b = _final_state(whole), _final_state(pieces)
    assert a["step"] == b["step"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["centers"][k], b["centers"][k]) for k in a["centers"])
    assert a["score_norm"] == b["score_norm"]


def test_resume_restores_the_torch_random_state(monkeypatch, tmp_path):
    # the tiny model has no dropout: draw from torch's RNG in the loss so the history depends on it
    real = cbl.engine.trainer.compute_loss
    monkeypatch.setattr(
        cbl.engine.trainer,
        "compute_loss",
        lambda *a, **k: (lambda p: p._replace(total=p.total + 1e-3 * torch.rand(())))(real(*a, **k)),
    )
    config = tiny_config("loss.type=ce_only")
    fit(config, None, tmp_path / "whole")
    with pytest.raises(Interrupted):
        fit(config, Recorder(stop_after=1), tmp_path / "pieces")
    torch.manual_seed(1234)  # whatever the process did in between
    fit(config, None, tmp_path / "pieces")
    losses = [[m["train_loss"] for m in read_history(tmp_path / name)] for name in ("whole", "pieces")]
    assert losses[0] == losses[1]


def test_crash_inside_an_epoch_resumes_to_the_same_result(monkeypatch, tmp_path, kmeans_run):
    config, reference_dir, _, _ = kmeans_run
    real = cbl.engine.trainer.compute_loss
    calls = {"n": 0}
    batches = _train_batches(config)

    def crash_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == batches + 3:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(cbl.engine.trainer, "compute_loss", crash_in_epoch_two)
    with pytest.raises(Interrupted):
        fit(config, None, tmp_path)
    monkeypatch.setattr(cbl.engine.trainer, "compute_loss", real)
    fit(config, None, tmp_path)
    assert [m["dev_eer"] for m in read_history(tmp_path)] == [m["dev_eer"] for m in read_history(reference_dir)]
    a, b = _final_state(reference_dir), _final_state(tmp_path)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_fit_refuses_to_resume_a_run_of_another_config(kmeans_run, tmp_path):
    _config, run_dir, _, _ = kmeans_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    with pytest.raises(UsageError, match=r"another configuration \(loss\.alpha: 0\.5 -> 2\.0\)"):
        fit(tiny_config("loss.alpha=2.0"), None, copy)
    # where and how fast it runs may change (a dataset moved, another thread count)
    result = fit(tiny_config("train.eval_batch_size=7"), None, copy)
    assert result.best_dev_eer == min(m["dev_eer"] for m in read_history(run_dir))


def test_learning_rate_schedule_is_a_pure_function_of_the_step():
    config = tiny_config("optim.warmup_epochs=1")
    scales = [learning_rate_scale(step, 5, config) for step in range(15)]
    assert scales[:5] == [0.2, 0.4, 0.6, 0.8, 1.0]  # warm-up over the first epoch
    assert scales[5] == 1.0 and scales[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 10)))
    assert all(a >= b for a, b in itertools.pairwise(scales[5:]))
    assert learning_rate_scale(12, 5, tiny_config("optim.schedule=constant")) == 1.0


# --------------------------------------------------------------------------- divergence
def test_nan_loss_stops_the_run_naming_epoch_and_step(monkeypatch, tmp_path):
    config = tiny_config("loss.type=ce_only")
    batches = _train_batches(config)
    real = cbl.engine.trainer.compute_loss
    calls = {"n": 0}

    def nan_on_second_batch_of_epoch_two(*args, **kwargs):
        calls["n"] += 1
        parts = real(*args, **kwargs)
        if calls["n"] == batches + 2:
            return parts._replace(total=parts.total * float("nan"))
        return parts

    monkeypatch.setattr(cbl.engine.trainer, "compute_loss", nan_on_second_batch_of_epoch_two)
    with pytest.raises(TrainingDiverged, match=rf"loss became nan at epoch 2, step {batches + 2} \(batch 2 of "):
        fit(config, None, tmp_path)
    assert [m["epoch"] for m in read_history(tmp_path)] == [1]  # no NaN row in the history


def test_non_finite_gradient_norm_stops_the_run(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: torch.tensor(float("inf")))
    with pytest.raises(TrainingDiverged, match=r"gradient norm became inf at epoch 1, step 1 "):
        fit(tiny_config("loss.type=ce_only"), None, tmp_path)


def test_non_finite_dev_scores_stop_the_run(monkeypatch, tmp_path):
    monkeypatch.setattr(
        cbl.engine.trainer, "score_embeddings", lambda outputs, *a, **k: outputs["logits"][:, 0].numpy() * math.nan
    )
    with pytest.raises(TrainingDiverged, match=r"dev scores became non-finite at epoch 1"):
        fit(tiny_config("loss.type=ce_only", "train.epochs=1"), None, tmp_path)
    assert read_history(tmp_path) == []


# --------------------------------------------------------------------------- optimizer steps and devices
@pytest.mark.parametrize(("accum", "clip"), [(1, 5.0), (2, 5.0), (2, 0.0)])
def test_gradient_accumulation_and_clipping(monkeypatch, tmp_path, accum, clip):
    real = torch.nn.utils.clip_grad_norm_
    clipped: list[float] = []

    def spy(parameters, max_norm):
        clipped.append(max_norm)
        return real(parameters, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    config = tiny_config(
        "loss.type=ce_only",
        "train.epochs=1",
        "train.max_steps_per_epoch=4",
        f"optim.grad_accum={accum}",
        f"optim.grad_clip={clip}",
    )
    fit(config, None, tmp_path)
    step = _final_state(tmp_path)["step"]
    assert step == 4 // accum
    assert clipped == ([clip] * step if clip else [])


@pytest.mark.parametrize(
    ("threads", "cpus", "expected"),
    [(1, None, 1), (0, 2.0, 2), (0, 0.5, 1), (2, 1.0, 2)],
    ids=["setting", "allotment", "fractional-allotment", "setting-wins"],
)
def test_torch_threads_follow_the_setting_or_the_cpu_allotment(restore_threads, threads, cpus, expected):
    config = tiny_config(f"train.num_threads={threads}")
    assert set_threads(config, cpus) == expected
    assert torch.get_num_threads() == expected


def test_cpu_runs_without_autocast():
    config = tiny_config("train.device=cpu", "train.bf16=true")
    assert pick_device(config).type == "cpu"
    assert isinstance(autocast_for(config, torch.device("cpu")), nullcontext)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error():
    assert pick_device(tiny_config("train.device=auto")).type == "cpu"
    with pytest.raises(CblError, match="no CUDA device is visible"):
        pick_device(tiny_config("train.device=cuda"))


def test_missing_dataset_fails_before_writing_anything(tmp_path):
    config = resolve_config(None, ["train.num_threads=1"])
    with pytest.raises(DataRootError, match=r"data\.root is not set .*--demo"):
        fit(config, None, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_history_lines_are_json_with_the_epoch(kmeans_run):
    _, run_dir, _, _ = kmeans_run
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    config = tiny_config("loss.type=ce_only", "train.keep_previous_checkpoint=true")
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    fit(config, None, whole)
    with pytest.raises(Interrupted):
        fit(config, Recorder(stop_after=2), pieces)
    last, previous = pieces / "checkpoints" / "last.pt", pieces / "checkpoints" / "previous.pt"
    assert load_checkpoint(previous)[0]["epoch"] == 0 and load_checkpoint(last)[0]["epoch"] == 1
    last.write_bytes(last.read_bytes()[:1000])  # truncated on disk after it was written
    with caplog.at_level("WARNING", logger="cbl.engine.run_dir"):
        fit(config, None, pieces)
    assert any("last.pt" in r.getMessage() and "previous" in r.getMessage() for r in caplog.records)
    # epoch 2 ran again from previous.pt, and the run ends where an uninterrupted one does
    assert [m["dev_eer"] for m in read_history(pieces)] == [m["dev_eer"] for m in read_history(whole)]
    a, b = _final_state(whole), _final_state(pieces)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_no_usable_checkpoint_is_a_clear_error_naming_both(tmp_path):
    config = tiny_config("loss.type=ce_only", "train.keep_previous_checkpoint=true")
    with pytest.raises(Interrupted):
        fit(config, Recorder(stop_after=2), tmp_path)
    for name in ("last.pt", "previous.pt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint to resume from: .*last\.pt.* / .*previous\.pt"):
        fit(config, None, tmp_path)


def test_auto_workers_are_zero_on_cpu_and_cpus_minus_one_on_gpu():
    from cbl.engine import resolve_workers

    config = tiny_config()
    assert config.data.num_workers == -1  # the default: auto
    assert resolve_workers(config, torch.device("cpu"), 4).data.num_workers == 0
    assert resolve_workers(config, torch.device("cuda"), 4).data.num_workers == 3
    assert resolve_workers(config, torch.device("cuda"), 1).data.num_workers == 1
    assert resolve_workers(config, torch.device("cuda"), 32).data.num_workers == 8
    fixed = tiny_config("data.num_workers=2")
    assert resolve_workers(fixed, torch.device("cuda"), 16).data.num_workers == 2


def test_a_history_line_cut_short_by_a_kill_is_dropped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "dev_eer": 0.3}\n{"epoch": 2, "dev_e')
    assert read_history(tmp_path) == [{"epoch": 1, "dev_eer": 0.3}]
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "dev_e\n{"epoch": 2, "dev_eer": 0.3}\n')
    with pytest.raises(CblError, match=r"metrics\.jsonl:1: not a JSON line"):
        read_history(tmp_path)


def test_a_fresh_start_drops_history_of_an_epoch_never_checkpointed(tmp_path):
    """Killed after writing epoch 1's line but before its last.pt: the retry records epoch 1 once."""
    config = tiny_config("train.epochs=1")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "dev_eer": 0.9}\n')
    fit(config, None, run_dir)
    history = read_history(run_dir)
    assert [m["epoch"] for m in history] == [1] and history[0]["dev_eer"] != 0.9
