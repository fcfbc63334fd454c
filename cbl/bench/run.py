"""The registry of measurements, ``--only``, and the run: every row in one table, the numbers in JSON."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cbl.bench.core import SIZES, BenchContext, Row, Sizes, format_table, machine_info
from cbl.bench.disk import measure_checkpoint_disk
from cbl.bench.evaluation import measure_eval_throughput
from cbl.bench.feature_cache import measure_feature_cache, measure_feature_cache_sweep
from cbl.bench.full_size import measure_full_size
from cbl.bench.rawboost import measure_rawboost
from cbl.bench.refit import measure_refit_cost
from cbl.bench.search import measure_search_efficiency
from cbl.bench.sweeps import measure_memory, measure_ray_trial
from cbl.bench.training import measure_center_refresh, measure_cluster_loss, measure_data_loading
from cbl.bench.uncertainty import measure_bootstrap
from cbl.errors import UsageError
from cbl.yamlio import atomic_write_text

__all__ = ["MEASUREMENTS", "OPT_IN", "parse_only", "run_bench", "sizes_for"]


MEASUREMENTS: dict[str, Callable[[BenchContext], list[Row]]] = {
    "cluster_loss": measure_cluster_loss,  # 1
    "ray_trial": measure_ray_trial,  # 2
    "data_loading": measure_data_loading,  # 3
    "center_refresh": measure_center_refresh,  # 4
    "refit_cost": measure_refit_cost,  # 4r
    "search_efficiency": measure_search_efficiency,  # 5
    "eval_throughput": measure_eval_throughput,  # 6
    "memory": measure_memory,  # 7
    "feature_cache": measure_feature_cache,  # 8
    "feature_cache_sweep": measure_feature_cache_sweep,  # 8, through Ray
    "rawboost": measure_rawboost,  # 9
    "full_size": measure_full_size,  # 10 (opt-in: --only full_size)
    "bootstrap": measure_bootstrap,  # 11
    "checkpoint_disk": measure_checkpoint_disk,  # 12 (opt-in: runs row 10's training itself)
}


# measurements a plain `cbl-search bench` leaves out: the full-size row needs ~10 GB of RAM and minutes
OPT_IN = ("full_size", "checkpoint_disk")


def parse_only(text: str | None) -> list[str]:
    """``--only a,b`` -> measurement names in table order (none: all but ``OPT_IN``).

    Raises UsageError naming an unknown one.
    """
    if not text:
        return [n for n in MEASUREMENTS if n not in OPT_IN]
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown or not names:
        raise UsageError(
            f"--only {text!r}: unknown measurement {', '.join(unknown) or '(none given)'}; "
            f"expected some of: {', '.join(MEASUREMENTS)}"
        )
    return [n for n in MEASUREMENTS if n in names]


def run_bench(
    sizes: Sizes, names: Sequence[str], out: Path, *, echo: Callable[[str], None] = print, work_dir: Path | None = None
) -> dict[str, Any]:
    """Run the named measurements, print the table and the machine, write the JSON (atomically) to ``out``."""
    started = time.monotonic()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = machine_info()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cbl-bench-", dir=work_dir) as scratch:
        ctx = BenchContext(sizes=sizes, work_dir=Path(scratch), device=device, echo=echo)
        for name in names:
            echo(f"measuring {name} ...")
            t0 = time.monotonic()
            rows += MEASUREMENTS[name](ctx)
            echo(f"  {name}: {time.monotonic() - t0:.0f} s")
    seconds = time.monotonic() - started
    echo(
        f"\ncbl-search bench ({sizes.name}): {seconds:.0f} s on {machine['cpu']}, {machine['cores_usable']} cores, "
        f"torch {machine['torch']}, GPU {machine['gpu'] or 'none'}; torch threads per run: {ctx.threads}"
    )
    echo(format_table(rows))
    result = {
        "sizes": asdict(sizes),
        "machine": machine,
        "seconds": seconds,
        "device": device,
        "measurements": list(names),
        "rows": [{**asdict(r), "ratio": r.ratio} for r in rows],
        "data": ctx.cache.get("data", {}),
    }
    atomic_write_text(out, json.dumps(result, indent=1, default=str) + "\n")
    echo(f"numbers written to {out}")
    return result


def sizes_for(quick: bool, name: str | None = None) -> Sizes:
    """``--quick`` -> quick, else full; a hidden ``--size`` names any preset (tests use ``tiny``)."""
    return SIZES[name] if name else SIZES["quick" if quick else "full"]
