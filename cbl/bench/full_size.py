"""Row 10 (opt-in): an XLS-R-300M-sized front-end through ``cbl-search train``, wall time and peak memory."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from safetensors import safe_open

from cbl.bench.core import BenchContext, Row
from cbl.bench.processes import cli_command, run_measured
from cbl.engine import read_history
from cbl.errors import CblError
from cbl.model.families import FAMILIES, SMALL

__all__ = ["FULL_SIZE_THREADS", "measure_full_size"]


FULL_SIZE_THREADS = 2  # the 2-core machine's cores: a 315M-parameter model on one thread takes minutes per step


def measure_full_size(ctx: BenchContext) -> list[Row]:
    """An XLS-R-300M-sized random model (its published config, random weights, no download) through ``train``.

    A ``save_pretrained`` folder with XLS-R 300M's layout (cbl.model.families) is
    given as ``model.ssl``, as a downloaded checkpoint would be; ``cbl-search train``
    (a subprocess: its peak RSS is its own) runs one optimizer step at batch 2 on
    4-s crops with the checkpoint's LayerDrop and SpecAugment, then scores the dev
    split (demo utterances of 4 s). The tiny size uses the same layout, narrowed.
    """
    full = ctx.sizes.name != "tiny"
    family = FAMILIES["xls-r-300m"]
    folder = _save_layout(ctx, full)
    seconds = 4.0 if full else 0.5
    sets = {
        "data.demo_utterances": 20,
        "data.demo_seconds": seconds,
        "data.max_len": 64600 if full else 8000,
        "data.eval_window": 64600 if full else 8000,
        "model.ssl": str(folder),
        "model.embedding_dim": 256,
        "model.freeze_feature_encoder": True,
        "model.layerdrop": family.config["layerdrop"],
        "model.mask_time_prob": family.config["mask_time_prob"],
        "loss.type": "ce_only",
        "optim.lr": 1.0e-5,
        "optim.head_lr": 1.0e-3,
        "train.epochs": 1,
        "train.batch_size": 2,
        "train.max_steps_per_epoch": 1,
        "train.eval_batch_size": 4,
        "train.device": ctx.device,
        "train.num_threads": FULL_SIZE_THREADS if full else ctx.threads,
    }
    run_dir = ctx.work_dir / "full-size-run"
    command = cli_command(
        "train",
        "--demo",
        "--out",
        str(run_dir),
        "--no-progress",
        sets=[f"{key}={value}" for key, value in sets.items()],
    )
    ctx.echo("  [10] cbl-search train: 1 step at batch 2 of 4-s crops, then dev scoring")
    run = run_measured(command, ctx.work_dir / "full-size.log")
    history = read_history(run_dir)
    if run["returncode"] != 0 or not history:
        raise CblError(
            f"bench: the XLS-R-sized run failed (exit {run['returncode']}); see {ctx.work_dir / 'full-size.log'}"
        )
    epoch = history[0]
    parameters = _parameter_count(folder)
    count = f"{parameters / 1e6:.0f}M" if parameters >= 1e6 else f"{parameters / 1e3:.0f}k"
    what = (
        f"XLS-R 300M layout, random weights ({count} parameters): cbl-search train, 1 step "
        f"at batch 2 + scoring 20 dev utterances of {seconds:g} s"
    )
    timing = (
        f"train step {epoch['train_seconds']:.1f} s, dev scoring "
        f"{epoch['epoch_seconds'] - epoch['train_seconds']:.1f} s (metrics.jsonl); the rest is start-up and "
        f"loading; {sets['train.num_threads']} torch threads, {ctx.device}"
    )
    return [
        Row("10", what, "wall", run["seconds"], "", None, "s", note=timing),
        Row(
            "10.mem",
            "the same run: peak RSS",
            "peak",
            run["peak_self_mib"],
            "",
            None,
            "MiB",
            note="of the training process (rusage at exit)",
        ),
    ]


def _save_layout(ctx: BenchContext, full: bool) -> Path:
    """XLS-R 300M's layout with random weights (narrowed unless ``full``), saved once in a subprocess."""
    folder = ctx.work_dir / ("xls-r-300m-random" if full else "xls-r-300m-small")
    ctx.echo(f"  [10] saving a random {'full-size' if full else 'narrowed'} XLS-R 300M layout")
    sizes = "" if full else f", **{SMALL!r}"
    saved = run_measured(
        [
            sys.executable,
            "-c",
            "from cbl.model.families import FAMILIES, SMALL, save_random; "
            f"save_random(FAMILIES['xls-r-300m'], {str(folder)!r}{sizes})",
        ],
        ctx.work_dir / "save.log",
    )
    if saved["returncode"] != 0:
        raise CblError(f"bench: saving the XLS-R-sized model failed; see {ctx.work_dir / 'save.log'}")
    return folder


def _parameter_count(folder: Path) -> int:
    """Parameters of a saved model, from the shapes in its safetensors header (no tensor is read)."""
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        # safe_open is no dict (iterating it yields nothing): its keys() are the tensor names
        return sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
