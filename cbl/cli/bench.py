"""``cbl-search bench``: the measurements of :mod:`cbl.bench`, side by side in one table."""

from __future__ import annotations

import time
from pathlib import Path

import click

__all__ = ["COMMANDS", "bench_command"]


@click.command("bench")
@click.option("--quick", is_flag=True, help="Smaller sizes: under 10 minutes on a 2-core CPU machine.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON file for the numbers (default: cbl_runs/bench-<time>.json).",
)
@click.option(
    "--only",
    default=None,
    metavar="NAME,...",
    help="Run only these measurements: cluster_loss, ray_trial, data_loading, center_refresh, refit_cost, "
    "search_efficiency, eval_throughput, memory, feature_cache, feature_cache_sweep, rawboost; "
    "full_size (an XLS-R-300M-sized model, ~10 GB of RAM) and checkpoint_disk (the same run: checkpoint "
    "bytes before/after, the ablation's peak disk) only when named here.",
)
@click.option("--size", "size_name", type=click.Choice(["tiny", "quick", "full"]), default=None, hidden=True)
def bench_command(quick: bool, out: Path | None, only: str | None, size_name: str | None) -> None:
    """Measure what the framework adds to training, side by side: one table of ratios and targets, plus JSON.

    Uses the demo corpus and the tiny model; with a GPU, also a wav2vec2-base-sized
    random-init model. A benchmark, not a test: the numbers depend on the machine it prints.
    """
    from cbl.bench import parse_only, run_bench, sizes_for

    names = parse_only(only)
    out = out or Path("cbl_runs") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    run_bench(sizes_for(quick, size_name), names, out, echo=click.echo)


COMMANDS = (bench_command,)
