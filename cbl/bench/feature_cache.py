"""Row 8: the frozen-feature cache on against off, in direct fits and through Ray, with the cost on disk."""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cbl.bench.core import BenchContext, Row, demo_config
from cbl.bench.processes import cli_command, run_measured
from cbl.engine import describe_cache, fit, read_history
from cbl.errors import CblError

__all__ = ["measure_feature_cache", "measure_feature_cache_sweep"]


_HEAD_GRID = (("model.pooling", ("mean", "max")), ("loss.type", ("cluster_only", "ce_only")))


def measure_feature_cache(ctx: BenchContext) -> list[Row]:
    """A head-only sweep (frozen front-end; pooling x loss type) with ``train.feature_cache`` on vs off.

    The same configs and seeds, one after another in this process, timed end to end
    (model build, the cache's one pass over train + dev, every epoch); both sides
    start from an empty cache folder. Then the dev EER of every config and epoch is
    compared between the two sides: the cache must not change what is learnt.
    """
    points = [
        dict(zip([k for k, _ in _HEAD_GRID], values, strict=True))
        for values in itertools.product(*[v for _, v in _HEAD_GRID])
    ]
    epochs = ctx.sizes.epochs + 2  # head-only sweeps train longer (search_spaces/head_only.yaml: 20 epochs)
    seconds: dict[str, float] = {}
    eers: dict[str, list[list[float]]] = {"cache": [], "audio": []}
    cache_bytes = 0
    for side in ("audio", "cache"):
        root = Path(tempfile.mkdtemp(prefix=f"fc-{side}-", dir=ctx.work_dir))
        started = time.perf_counter()
        for i, point in enumerate(points):
            ctx.echo(f"  [8] {side} config {i + 1}/{len(points)} {point}")
            sets: dict[str, Any] = {
                "model.freeze_ssl": True,
                "data.train_crop": "fixed",
                "train.epochs": epochs,
                "centers.refresh_every": 1,
                "train.feature_cache": side == "cache",
                "train.feature_cache_dir": str(root / "feature_cache"),
                **point,
            }
            config = demo_config(ctx, **sets)
            fit(config, None, root / f"run{i}")
            eers[side].append([float(h["dev_eer"]) for h in read_history(root / f"run{i}")])
        seconds[side] = time.perf_counter() - started
        if side == "cache":
            cache_bytes = sum(e["bytes"] for e in describe_cache(root / "feature_cache"))
    worst = max(
        abs(a - b) for ca, cb in zip(eers["cache"], eers["audio"], strict=True) for a, b in zip(ca, cb, strict=True)
    )
    sweep = f"{len(points)} configs x {epochs} epochs, frozen tiny front-end, {ctx.sizes.utterances} utt/split"
    return [
        Row(
            "8",
            "frozen-feature cache: head-only sweep time, cache vs audio",
            "cache",
            seconds["cache"],
            "audio",
            seconds["audio"],
            "s",
            "ratio <= 0.2",
            seconds["cache"] / seconds["audio"] <= 0.2,
            note=f"{sweep}; end to end incl. model builds and the cache's one pass (direct fits, no Ray)",
        ),
        Row(
            "8.eer",
            "frozen-feature cache: largest |dev EER difference| over configs and epochs",
            "|diff|",
            worst,
            "dev EER",
            statistics.mean(e for run in eers["audio"] for e in run),
            "",
            "difference = 0",
            worst <= 1e-9,
            note="the same config and seed with and without the cache",
        ),
        Row(
            "8.size",
            "frozen-feature cache: size on disk (train + dev)",
            "cache",
            cache_bytes / 2**20,
            "",
            None,
            "MiB",
            note="float32 front-end states, one layer",
        ),
    ]


def measure_feature_cache_sweep(ctx: BenchContext) -> list[Row]:
    """``search_spaces/head_only.yaml --demo`` through Ray (``cbl-search run``), cache on vs off, end to end.

    The shipped head-only sweep (8 Optuna trials, ASHA, 2 at a time, frozen tiny
    front-end), each side a cold ``cbl-search run`` subprocess from an empty
    experiment folder: Ray's start-up and every trial's included. The training
    time summed over trials (``epoch_seconds``) is reported beside it.
    """
    space = Path(__file__).resolve().parents[2] / "search_spaces" / "head_only.yaml"
    if not space.is_file():
        raise CblError(f"bench: {space} is missing (the head-only sweep ships with the repository)")
    sets = [
        f"data.demo_utterances={ctx.sizes.utterances}",
        f"data.demo_seconds={ctx.sizes.seconds}",
        f"train.num_threads={ctx.threads}",
        f"train.device={ctx.device}",
    ]
    wall, train = {}, {}
    for side in ("cache", "audio"):
        folder = Path(tempfile.mkdtemp(prefix=f"heads-{side}-", dir=ctx.work_dir))
        cache = f"train.feature_cache={'true' if side == 'cache' else 'false'}"
        command = cli_command(
            "run", str(space), "--demo", "--storage", str(folder), "--no-final-eval", sets=[cache, *sets]
        )
        ctx.echo(f"  [8] head_only.yaml --demo through Ray, {side}")
        run = run_measured(command, folder / "run.log", spawns_children=True)
        if run["returncode"] != 0:
            raise CblError(
                f"bench: the head-only sweep ({side}) failed (exit {run['returncode']}); see {folder / 'run.log'}"
            )
        wall[side] = run["seconds"]
        train[side] = sum(
            float(h["epoch_seconds"])
            for metrics in folder.glob("head_only/trials/*/metrics.jsonl")
            for h in read_history(metrics.parent)
        )
    return [
        Row(
            "8.ray",
            "head_only.yaml --demo through Ray (cbl-search run, 8 trials): cache vs audio, wall time",
            "cache",
            wall["cache"],
            "audio",
            wall["audio"],
            "s",
            "ratio <= 0.2",
            wall["cache"] / wall["audio"] <= 0.2,
            note="cold runs incl. Ray start-up and trial start-up; the two sweeps may sample different trials "
            "(trials run two at a time)",
        ),
        Row(
            "8.train",
            "the same sweeps: training time summed over trials (epoch_seconds)",
            "cache",
            train["cache"],
            "audio",
            train["audio"],
            "s",
            "report",
        ),
    ]
