"""Rows 1, 3 and 4: what the cluster loss, the data loader and the center refresh cost next to training itself."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cbl.bench.core import BenchContext, Row, demo_config, epoch_seconds
from cbl.bench.processes import sync_device
from cbl.centers import KMeansCenters
from cbl.data import load_split, make_train_loader
from cbl.engine import autocast_for, fit, resolve_workers
from cbl.losses import compute_loss
from cbl.model import build_model, param_groups

__all__ = ["measure_center_refresh", "measure_cluster_loss", "measure_data_loading"]


def measure_cluster_loss(ctx: BenchContext) -> list[Row]:
    """Time per epoch of cluster_only (k-means refresh every epoch) vs ce_only, alternated ABAB, medians.

    The refit pass is left out of the cluster side (measured on its own as row 4r).
    """
    rows = []
    for model in ctx.models:
        times: dict[str, list[float]] = {"cluster_only": [], "ce_only": []}
        for pair in range(ctx.sizes.pairs):
            for loss in ("cluster_only", "ce_only"):
                ctx.echo(f"  [1] {model} {loss} run {pair + 1}/{ctx.sizes.pairs}")
                config = demo_config(ctx, model, **{"loss.type": loss, "centers.refresh_every": 1})
                with tempfile.TemporaryDirectory(dir=ctx.work_dir) as run_dir:
                    fit(config, None, run_dir)
                    times[loss] += epoch_seconds(Path(run_dir))
        a, b = statistics.median(times["cluster_only"]), statistics.median(times["ce_only"])
        rows.append(
            Row(
                "1" + ("b" if model == "base" else ""),
                f"time per epoch, {model} model: cluster_only + k-means refresh (refit pass: row 4r) vs ce_only",
                "cluster",
                a,
                "ce_only",
                b,
                "s",
                "ratio <= 1.05",
                a / b <= 1.05,
                note=f"median of {len(times['ce_only'])} epochs per side, ABAB",
            )
        )
    return rows


def measure_data_loading(ctx: BenchContext) -> list[Row]:
    """Utterances/s of the train DataLoader alone (RawBoost off, then algo 4) vs a training step on batches in
    memory."""
    rows = []
    for model in ctx.models:
        consumed = _model_throughput(ctx, model)
        for algo, label in ((0, "off"), (4, "algo 4 = 1+2+3")):
            # the workers a run on this device gets by default (auto: none on the CPU, CPUs - 1 on a GPU)
            config = resolve_workers(
                demo_config(ctx, model, **{"data.rawboost_algo": algo}), torch.device(ctx.device), None
            )
            loaded = _loader_throughput(ctx, config)
            suffix = ("b" if model == "base" else "") + ("" if algo == 0 else "+rb")
            rows.append(
                Row(
                    f"3{suffix}",
                    f"train loader vs training step, {model} model, RawBoost {label}",
                    "loader",
                    loaded,
                    "model",
                    consumed,
                    "utt/s",
                    "ratio >= 3",
                    loaded / consumed >= 3,
                    note=f"data.num_workers -1 (auto) = {config.data.num_workers} on {ctx.device}, "
                    f"{config.data.max_len}-sample crops",
                )
            )
    return rows


def _loader_throughput(ctx: BenchContext, config) -> float:
    torch.set_num_threads(ctx.threads)
    records = load_split(config.data, "train")
    count, started, epoch = 0, time.perf_counter(), 0
    while True:  # as many epochs as it takes to time loader_batches batches
        loader = make_train_loader(records, config.data, batch_size=config.train.batch_size, seed=0, epoch=epoch)
        for batch in loader:
            count += batch["label"].numel()
            if count >= ctx.sizes.loader_batches * config.train.batch_size:
                return count / (time.perf_counter() - started)
        epoch += 1


def _model_throughput(ctx: BenchContext, model_name: str) -> float:
    """Forward + weighted CE + backward + AdamW step on batches already in memory (on the device)."""
    config = demo_config(ctx, model_name, **{"loss.type": "ce_only"})
    torch.set_num_threads(ctx.threads)
    device = torch.device(ctx.device)
    records = load_split(config.data, "train")
    loader = make_train_loader(records, config.data, batch_size=config.train.batch_size, seed=0)
    batches = [b for _, b in zip(range(min(len(loader), ctx.sizes.loader_batches)), loader, strict=False)]
    model = build_model(config.model).to(device).train()
    optimizer = torch.optim.AdamW(param_groups(model, config.optim))
    weights = torch.tensor([1.0, 1.0], device=device)

    def step(batch) -> None:
        audio, labels = batch["audio"].to(device), batch["label"].to(device)
        with autocast_for(config, device):
            out = model(audio, None)
        compute_loss(out, labels, None, config.loss, weights).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up: allocator, kernels
    sync_device(device)
    started = time.perf_counter()
    for batch in batches:
        step(batch)
    sync_device(device)
    return sum(b["label"].numel() for b in batches) / (time.perf_counter() - started)


def measure_center_refresh(ctx: BenchContext) -> list[Row]:
    """Seconds per k-means refresh (warm start, K=20, D=256) as bonafide embeddings grow; first fit beside it."""
    rows = []
    for n in ctx.sizes.refresh_sizes:
        points = _clustered_points(n, dim=256, clusters=20, seed=n)
        centers = KMeansCenters(20, 256, seed=0)
        started = time.perf_counter()
        centers.fit(points[: min(n, 2000)])  # what fit() does before epoch 1: a capped sample
        first = time.perf_counter() - started
        drifted = torch.nn.functional.normalize(points + 0.05 * torch.randn_like(points), dim=-1)
        started = time.perf_counter()
        centers.refresh(drifted)  # what every epoch does: warm start from the previous centers
        refresh = time.perf_counter() - started
        at_25k = n == 25000
        rows.append(
            Row(
                f"4.{n // 1000}k" if n >= 1000 else f"4.{n}",
                f"center refresh, {n:,} x 256, K=20 (vs the initial k-means++ fit on <= 2k)",
                "refresh",
                refresh,
                "first fit",
                first,
                "s",
                "refresh <= 1 s" if at_25k else "report",
                (refresh <= 1.0) if at_25k else None,
            )
        )
    return rows


def _clustered_points(n: int, *, dim: int, clusters: int, seed: int):
    """(n, dim) unit vectors around ``clusters`` random directions: embeddings after some training look so."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(clusters, dim, generator=generator), dim=-1)
    members = torch.randint(0, clusters, (n,), generator=generator)
    points = directions[members] + 0.3 * torch.randn(n, dim, generator=generator) / math.sqrt(dim) * 4
    return torch.nn.functional.normalize(points, dim=-1)
