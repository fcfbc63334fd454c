"""What every measurement shares: sizes, rows, the context, demo configs, per-epoch times, the table, the machine."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cbl.config import resolve_config
from cbl.engine import available_cpus, read_history

__all__ = [
    "SIZES",
    "BenchContext",
    "Row",
    "Sizes",
    "base_model_dir",
    "demo_config",
    "demo_sets",
    "epoch_seconds",
    "format_table",
    "machine_info",
]


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is; ``quick`` fits the 2-core CPU machine in a few minutes."""

    name: str
    utterances: int  # demo utterances per split (train/dev/eval)
    seconds: float  # demo utterance length
    epochs: int  # epochs of each timed fit (the first one is dropped from the medians)
    pairs: int  # A/B pairs for the cluster-loss comparison (ABAB...)
    loader_batches: int  # batches timed for loader and model throughput
    refresh_sizes: tuple[int, ...]  # bonafide embeddings per center refresh
    grid: tuple[tuple[str, tuple[Any, ...]], ...]  # the space of the search-efficiency benchmark
    grid_epochs: int  # max_t of that benchmark
    replay_seeds: int  # sampler seeds per replayed variant
    eval_utterances: int  # utterances of the evaluation-throughput set
    eval_max_seconds: float  # its lengths are log-uniform in [1 s, this] (or [0.25 s, this] when < 1)
    ray_epochs: int  # epochs of the 1-trial sweep and its direct twin


_GRID_12 = (
    ("loss.type", ("cluster_only", "combined", "ce_only")),
    ("model.pooling", ("mean", "max")),
    ("optim.lr", (1.0e-3, 3.0e-3)),
)


_GRID_18 = (
    ("loss.type", ("cluster_only", "combined", "ce_only")),
    ("model.pooling", ("mean", "max")),
    ("optim.lr", (5.0e-4, 1.0e-3, 3.0e-3)),
)


SIZES: dict[str, Sizes] = {
    # for the tests: seconds, not a measurement
    "tiny": Sizes(
        "tiny",
        utterances=24,
        seconds=0.25,
        epochs=2,
        pairs=1,
        loader_batches=2,
        refresh_sizes=(100, 200),
        grid=(("loss.type", ("cluster_only", "ce_only")), ("model.pooling", ("mean", "max"))),
        grid_epochs=3,
        replay_seeds=3,
        eval_utterances=8,
        eval_max_seconds=0.75,
        ray_epochs=2,
    ),
    "quick": Sizes(
        "quick",
        utterances=160,
        seconds=0.5,
        epochs=3,
        pairs=2,
        loader_batches=10,
        refresh_sizes=(1000, 5000, 25000),
        grid=_GRID_12,
        grid_epochs=6,
        replay_seeds=200,
        eval_utterances=96,
        eval_max_seconds=8.0,
        ray_epochs=4,
    ),
    "full": Sizes(
        "full",
        utterances=480,
        seconds=1.0,
        epochs=4,
        pairs=3,
        loader_batches=30,
        refresh_sizes=(1000, 5000, 25000, 100000),
        grid=_GRID_18,
        grid_epochs=9,
        replay_seeds=500,
        eval_utterances=320,
        eval_max_seconds=8.0,
        ray_epochs=6,
    ),
}


@dataclass
class Row:
    """One line of the table: side A vs side B, their ratio, the target and whether it is met."""

    id: str
    what: str
    a_label: str
    a: float | None
    b_label: str
    b: float | None
    unit: str
    target: str = "report"  # "report": a number to know, no target
    met: bool | None = None  # None: no target, or not measured
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.a is None or self.b is None or not self.b:
            return None
        return self.a / self.b


@dataclass
class BenchContext:
    """What every measurement gets: sizes, a scratch folder, the device, and where to say what it is doing."""

    sizes: Sizes
    work_dir: Path
    device: str = "cpu"
    echo: Callable[[str], None] = print
    threads: int = 1  # torch threads for every timed fit: the same on both sides, less noise on a shared CPU
    cache: dict[str, Any] = field(default_factory=dict)  # results shared between measurements

    @property
    def models(self) -> list[str]:
        """Model sizes for the model-bound rows: the tiny model, and a base-sized one where a GPU is present."""
        return ["tiny", "base"] if self.device == "cuda" else ["tiny"]


def demo_sets(ctx: BenchContext, model: str = "tiny", **extra: Any) -> list[str]:
    """``--set`` items for a demo run of ``ctx.sizes`` (on top of the ``--demo`` profile)."""
    s = ctx.sizes
    length = int(s.seconds * 16000)
    items = {
        "data.demo_utterances": s.utterances,
        "data.demo_seconds": s.seconds,
        "data.max_len": length,
        "data.eval_window": length,
        "train.epochs": s.epochs,
        "train.num_threads": ctx.threads,
        "train.device": ctx.device,
        "centers.init_max_utterances": min(64, s.utterances),
        "loss.num_clusters": 4 if s.name == "tiny" else 10,
    }
    if model == "base":
        # the real fine-tuning settings and crop length (the demo profile's are for a random tiny model)
        items.update(
            {
                "model.ssl": str(base_model_dir(ctx)),
                "model.embedding_dim": 256,
                "model.freeze_feature_encoder": True,
                "optim.lr": 1.0e-5,
                "optim.head_lr": 1.0e-3,
                "data.max_len": 64600,
            }
        )
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def demo_config(ctx: BenchContext, model: str = "tiny", **extra: Any):
    return resolve_config(None, demo_sets(ctx, model, **extra), demo=True)


def base_model_dir(ctx: BenchContext) -> Path:
    """A wav2vec2-base-sized model with random weights, saved once (no hub access on these machines)."""
    folder = ctx.work_dir / "wav2vec2-base-random"
    if not (folder / "config.json").is_file():
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder)
    return folder


def epoch_seconds(run_dir: Path, key: str = "epoch_seconds") -> list[float]:
    """Per-epoch times of a run, without its first epoch (warm-up) when it has more than one.

    ``epoch_seconds`` leaves out the centers' refit pass (``refit_seconds``): its cost is
    row 4r's, so that row 1 compares the loss and the loop alone.
    """
    values = [
        float(h[key]) - float(h.get("refit_seconds", 0.0)) * (key == "epoch_seconds") for h in read_history(run_dir)
    ]
    return values[1:] if len(values) > 1 else values


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, library versions and GPU: the numbers mean nothing without them."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    versions = {}
    for name in ("ray", "optuna", "transformers", "sklearn"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": available_cpus(),
        "memory_gib": round(memory_kib / 2**20, 1),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        **versions,
    }


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit in ("MiB", "epochs"):
        return f"{value:.0f} {unit}"
    return f"{value:.1f} {unit}"


def format_table(rows: Sequence[Row]) -> str:
    """The one table: what, side A, side B, A/B, target, met."""
    header = ("#", "measurement", "A", "B", "A/B", "target", "met")
    lines = [
        (
            r.id,
            r.what,
            f"{r.a_label} {_number(r.a, r.unit)}",
            f"{r.b_label} {_number(r.b, r.unit)}",
            "-" if r.ratio is None else f"{r.ratio:.3g}",
            r.target,
            {True: "yes", False: "NO", None: "-"}[r.met],
        )
        for r in rows
    ]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
    out = [
        "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() for cells in [header, *lines]
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    out += [f"  {r.id}: {r.note}" for r in rows if r.note]
    return "\n".join(out)
