"""Row 4r: the centers' eval-mode refit pass per epoch (cbl.engine.center_passes), on the demo and for XLS-R."""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from cbl.bench.core import BenchContext, Row, demo_config
from cbl.config import CentersConfig, resolve_config
from cbl.engine import fit, read_history
from cbl.model.families import FAMILIES, build_config

__all__ = ["measure_refit_cost"]

# ASVspoof 2019 LA: training and dev utterances (the refit cap is centers.refit_max_utterances)
LA_TRAIN, LA_DEV = 25380, 24844


def measure_refit_cost(ctx: BenchContext) -> list[Row]:
    """The centers' eval-mode refit pass per epoch: its share of a demo epoch, and an estimate for XLS-R on LA.

    Demo: one cluster_only run on the default demo at the default cap (every
    bonafide training utterance of the demo), ``refit_seconds`` / ``epoch_seconds``
    per epoch after the first, median.
    XLS-R: the per-utterance times of a training step (forward + backward, feature
    encoder frozen, train mode) and of an eval-mode forward, measured side by side
    on a random-weight XLS-R 300M (4-s crops), give the share of an ASVspoof 2019 LA
    epoch (25,380 training steps + 24,844 dev forwards) that ``cap`` refit
    forwards take. Same-device ratios; on a GPU the absolute times differ, the
    train/inference ratio of the same network much less.
    """
    ctx.echo("  [4r] a cluster_only run on the default demo, refit every epoch")
    if ctx.sizes.name == "tiny":  # the tests: seconds
        config = demo_config(ctx, "tiny", **{"loss.type": "cluster_only", "centers.refresh_every": 1})
    else:  # the demo as users run it (900 one-second utterances per split), 3 epochs
        sets = ["loss.type=cluster_only", "centers.refresh_every=1", "train.epochs=3"]
        sets += [f"train.num_threads={ctx.threads}", f"train.device={ctx.device}"]
        config = resolve_config(None, sets, demo=True)
    with tempfile.TemporaryDirectory(dir=ctx.work_dir) as run_dir:
        fit(config, None, run_dir)
        history = read_history(run_dir)[1:] or read_history(run_dir)
    refit = statistics.median(float(h["refit_seconds"]) for h in history)
    epoch = statistics.median(float(h["epoch_seconds"]) for h in history)
    rows = [
        Row(
            "4r",
            "eval-mode refit pass vs the whole epoch (train + refit + dev), demo, cap "
            f"{config.centers.refit_max_utterances}",
            "refit",
            refit,
            "epoch",
            epoch,
            "s",
            "ratio <= 0.10",
            refit / epoch <= 0.10,
            note=f"median of {len(history)} epochs",
        )
    ]
    if ctx.sizes.name == "tiny":
        return rows
    cap = CentersConfig().refit_max_utterances
    train_step, forward = _xlsr_seconds_per_utterance(ctx)
    whole = LA_TRAIN * train_step + LA_DEV * forward + cap * forward
    rows.append(
        Row(
            "4r.xlsr",
            f"the same for XLS-R 300M on ASVspoof 2019 LA train (estimate: {cap} refit forwards vs "
            f"{LA_TRAIN:,} training steps + {LA_DEV:,} dev forwards)",
            "refit",
            cap * forward,
            "epoch",
            whole,
            "s",
            "ratio <= 0.10",
            cap * forward / whole <= 0.10,
            note=f"per 4-s utterance on this {ctx.device.upper()}: training step {train_step:.2f} s, "
            f"eval forward {forward:.2f} s ({train_step / forward:.1f}x); random weights, batch 1",
        )
    )
    return rows


def _xlsr_seconds_per_utterance(ctx: BenchContext, repeats: int = 3) -> tuple[float, float]:
    """(training step, eval forward) seconds per 4-s utterance of a random XLS-R-300M-sized wav2vec2, medians."""
    from transformers import AutoModel

    ctx.echo("  [4r] XLS-R 300M-sized model (random weights): training step vs eval forward")
    # facebook/wav2vec2-xls-r-300m's architecture and regularisers, as its config.json gives them
    model = AutoModel.from_config(build_config(FAMILIES["xls-r-300m"])).to(ctx.device)
    model.freeze_feature_encoder()
    audio = torch.randn(1, 64600, device=ctx.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times: dict[str, list[float]] = {"train": [], "eval": []}
    for repeat in range(repeats + 1):  # the first round warms up
        model.train()
        started = time.perf_counter()
        model(audio).last_hidden_state.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_time = time.perf_counter() - started
        model.eval()
        started = time.perf_counter()
        with torch.no_grad():
            model(audio)
        eval_time = time.perf_counter() - started
        if repeat:
            times["train"].append(train_time)
            times["eval"].append(eval_time)
    return statistics.median(times["train"]), statistics.median(times["eval"])
