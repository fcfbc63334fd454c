"""Row 6: full-length scoring, length-bucketed batches against padding to the longest in protocol order."""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from cbl.bench.core import BenchContext, Row, demo_config
from cbl.bench.processes import peak_memory_mib, reset_peak_memory, sync_device
from cbl.data import EvalDataset, Record, collate, make_eval_loader
from cbl.engine import autocast_for
from cbl.model import build_model

__all__ = ["measure_eval_throughput"]


def measure_eval_throughput(ctx: BenchContext) -> list[Row]:
    """Full-length scoring: length-bucketed batches (cbl's eval loader) vs padding to the longest in protocol order."""
    rows = []
    records = _eval_records(ctx)
    for model in ctx.models:
        config = demo_config(ctx, model)
        results: dict[str, list[tuple[float, float]]] = {"bucketed": [], "naive": []}
        for _ in range(max(1, ctx.sizes.pairs - 1)):
            for side in ("bucketed", "naive"):
                ctx.echo(f"  [6] {model} model, {side} batches")
                results[side].append(_score_throughput(ctx, config, records, bucketed=side == "bucketed"))
        speed = {side: statistics.median(r[0] for r in runs) for side, runs in results.items()}
        memory = {side: max(r[1] for r in runs) for side, runs in results.items()}
        suffix = "b" if model == "base" else ""
        what = (
            f"{len(records)} utterances of {_eval_low(ctx):g}-{ctx.sizes.eval_max_seconds:g} s (log-uniform), "
            f"batch {config.train.eval_batch_size}, {model} model"
        )
        rows.append(
            Row(
                f"6{suffix}",
                f"eval throughput: length-bucketed vs padded in protocol order ({what})",
                "bucketed",
                speed["bucketed"],
                "naive",
                speed["naive"],
                "utt/s",
                "ratio >= 2",
                speed["bucketed"] / speed["naive"] >= 2,
            )
        )
        rows.append(
            Row(
                f"6{suffix}.mem",
                f"eval peak memory: bucketed vs naive ({model} model)",
                "bucketed",
                memory["bucketed"],
                "naive",
                memory["naive"],
                "MiB",
                note="peak GPU memory allocated" if ctx.device == "cuda" else "peak RSS growth of the process",
            )
        )
    return rows


def _eval_records(ctx: BenchContext):
    """A protocol with realistic lengths: log-uniform in [1 s, eval_max_seconds] (short utterances dominate)."""
    folder = ctx.work_dir / "eval_audio"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    seconds = np.exp(
        rng.uniform(math.log(_eval_low(ctx)), math.log(ctx.sizes.eval_max_seconds), ctx.sizes.eval_utterances)
    )
    records = []
    for index, length in enumerate(seconds):
        path = folder / f"utt{index:05d}.flac"
        if not path.is_file():
            # noise: the model's cost depends on the length, not on what it hears
            sf.write(path, (0.1 * rng.standard_normal(int(length * 16000))).astype(np.float32), 16000)
        records.append(Record(utt_id=f"utt{index:05d}", path=str(path), label=index % 2, attack="-", speaker="bench"))
    return records


def _eval_low(ctx: BenchContext) -> float:
    return 1.0 if ctx.sizes.eval_max_seconds > 1 else 0.25


def _score_throughput(ctx: BenchContext, config, records, *, bucketed: bool) -> tuple[float, float]:
    """(utterances/s, peak memory MiB) of scoring ``records`` with the tiny or base model."""
    torch.set_num_threads(ctx.threads)
    device = torch.device(ctx.device)
    model = build_model(config.model).to(device).eval()
    with torch.no_grad():  # warm-up outside the clock
        model(torch.zeros(2, 16000, device=device), None)
    batch_size = config.train.eval_batch_size
    baseline = reset_peak_memory(device)
    started = time.perf_counter()
    if bucketed:
        loader = make_eval_loader(records, config.data, batch_size=batch_size)
    else:
        loader = DataLoader(EvalDataset(records, config.data), batch_size=batch_size, shuffle=False, collate_fn=collate)
    count = 0
    with torch.no_grad():
        for batch in loader:
            mask = batch["attention_mask"]
            with autocast_for(config, device):
                model(batch["audio"].to(device), None if mask is None else mask.to(device))
            count += batch["label"].numel()
    sync_device(device)
    seconds = time.perf_counter() - started
    return count / seconds, max(0.0, peak_memory_mib(device) - baseline)
