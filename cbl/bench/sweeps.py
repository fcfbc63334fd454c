"""Rows 2 and 7: a trial inside Ray Tune against the same fit called directly, in time per epoch and in memory."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from cbl.bench.core import BenchContext, Row, demo_config, demo_sets, epoch_seconds
from cbl.bench.processes import cli_command, run_measured
from cbl.config import save_config
from cbl.data import load_split
from cbl.errors import CblError

__all__ = ["measure_memory", "measure_ray_trial"]


_RAY_SPACE = """\
name: bench_ray
space:
  loss.type: {{grid: [cluster_only]}}
search: {{algorithm: grid}}
scheduler: {{name: none}}
resources: {{cpu: 1, gpu: {gpu}}}
"""


def _sweep_and_direct(ctx: BenchContext) -> dict[str, Any]:
    """A 1-trial sweep (``cbl-search run`` in a subprocess) and the same config as ``cbl-search train``.

    Both are subprocesses so that each side starts cold alike and its peak memory
    is its own. Shared by measurements 2 and 7; run once.
    """
    if "sweep" in ctx.cache:
        return ctx.cache["sweep"]
    extra: dict[str, Any] = {"train.epochs": ctx.sizes.ray_epochs, "loss.type": "cluster_only"}
    sets = demo_sets(ctx, **extra)
    config = demo_config(ctx, **extra)
    for split in ("train", "dev"):
        load_split(config.data, split)  # generate the demo corpus before either side starts its clock
    folder = Path(tempfile.mkdtemp(prefix="sweep-", dir=ctx.work_dir))
    space = folder / "space.yaml"
    space.write_text(_RAY_SPACE.format(gpu=1 if ctx.device == "cuda" else 0))
    command = cli_command("run", str(space), "--demo", "--storage", str(folder / "runs"), "--no-final-eval", sets=sets)
    ctx.echo("  [2/7] 1-trial sweep through Ray (cbl-search run)")
    sweep = run_measured(command, folder / "sweep.log", spawns_children=True)
    trials = sorted((folder / "runs" / "bench_ray" / "trials").glob("*/metrics.jsonl"))
    if sweep["returncode"] != 0 or not trials:
        raise CblError(f"bench: the 1-trial sweep failed (exit {sweep['returncode']}); see {folder / 'sweep.log'}")
    save_config(config, folder / "direct.yaml")
    ctx.echo("  [2/7] the same configuration called directly (cbl-search train)")
    direct = run_measured(
        cli_command("train", str(folder / "direct.yaml"), "--out", str(folder / "direct"), "--no-progress"),
        folder / "direct.log",
    )
    if direct["returncode"] != 0:
        raise CblError(
            f"bench: the direct training run failed (exit {direct['returncode']}); see {folder / 'direct.log'}"
        )
    ctx.cache["sweep"] = {
        "sweep": sweep,
        "direct": direct,
        "trial_epochs": epoch_seconds(trials[0].parent),
        "direct_epochs": epoch_seconds(folder / "direct"),
    }
    return ctx.cache["sweep"]


def measure_ray_trial(ctx: BenchContext) -> list[Row]:
    """Time per epoch of a trial inside Ray Tune vs the same fit called directly (start-up excluded)."""
    result = _sweep_and_direct(ctx)
    a, b = statistics.median(result["trial_epochs"]), statistics.median(result["direct_epochs"])
    return [
        Row(
            "2",
            "time per epoch: a trial inside Ray Tune vs the same fit called directly",
            "Ray trial",
            a,
            "direct fit",
            b,
            "s",
            "ratio <= 1.10",
            a / b <= 1.10,
            note=f"median of {len(result['trial_epochs'])} epochs per side (first dropped); start-up excluded",
        )
    ]


def measure_memory(ctx: BenchContext) -> list[Row]:
    """Peak resident memory of the sweep driver and of all the sweep's processes, vs one trial."""
    result = _sweep_and_direct(ctx)
    trial = result["direct"]["peak_self_mib"]
    return [
        Row(
            "7a",
            "peak RSS: sweep driver (cbl-search run) vs one trial (cbl-search train)",
            "driver",
            result["sweep"]["peak_self_mib"],
            "trial",
            trial,
            "MiB",
        ),
        Row(
            "7b",
            "peak RSS: all processes of a 1-trial sweep (driver + Ray + trial) vs one trial",
            "sweep",
            result["sweep"]["peak_tree_mib"],
            "trial",
            trial,
            "MiB",
            note="peak of the summed PSS (shared pages "
            "split between processes) over the driver's process tree, sampled every 0.25 s",
        ),
    ]
