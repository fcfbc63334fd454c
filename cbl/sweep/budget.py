"""A sweep's disk and GPU budget, said before its first trial starts.

Disk: each running trial holds one ``last.pt`` (weights and AdamW state; read back
and checked before it replaces the old one, :func:`cbl.engine.run_dir.write_epoch`)
and its ``best.pt``; while it writes one of them, the temporary file next to the old
one (for last.pt the larger: 2 resume + best); ``train.keep_previous_checkpoint``
adds ``previous.pt``, one more resume-sized file. Ended trials keep only ``best.pt``,
and only the best ``checkpoints.keep_best`` of them (:mod:`cbl.sweep.retention`);
the frozen weights are stored once. The estimate takes the worst case, every running
trial writing last.pt at the same moment::

    concurrent x (2 resume + best) + keep_best x best + frozen     (+ concurrent x resume with previous.pt)

(sizes from :func:`cbl.engine.footprint.checkpoint_sizes`). The bench simulates the
trial lifecycle under ASHA for a realistic peak, which is lower (one write at a time).

GPU: with ``resources.gpu`` below 1, ``floor(1 / gpu)`` trials share a GPU; each
needs :func:`cbl.engine.footprint.gpu_memory_estimate`. A packing that cannot fit
the GPUs is refused with the numbers before any trial starts.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cbl.config import ExperimentConfig
from cbl.engine.footprint import (
    GIB,
    CheckpointSizes,
    GpuEstimate,
    checkpoint_sizes,
    format_bytes,
    gpu_memory_estimate,
    parameter_counts,
)
from cbl.errors import CblError
from cbl.sweep.space import SearchSpace

__all__ = [
    "DiskEstimate",
    "check_gpu_packing",
    "concurrent_trials",
    "disk_estimate",
    "local_gpu_memory",
    "say_budget",
]


@dataclass(frozen=True)
class DiskEstimate:
    sizes: CheckpointSizes
    concurrent: int
    keep_best: int
    keep_previous: bool = False  # train.keep_previous_checkpoint: previous.pt kept too

    @property
    def resume_files(self) -> int:
        """Resume checkpoints a running trial holds between writes: last.pt (and previous.pt when kept)."""
        return 2 if self.keep_previous else 1

    @property
    def running_trial(self) -> int:
        """A running trial at its most: its resume file(s) and best.pt, and the temporary last.pt being written."""
        return (self.resume_files + 1) * self.sizes.resume + self.sizes.best

    @property
    def peak(self) -> int:
        return self.concurrent * self.running_trial + self.keep_best * self.sizes.best + self.sizes.frozen

    def line(self) -> str:
        s = self.sizes
        held = "last + previous" if self.keep_previous else "last"
        return (
            f"checkpoint disk: at most {format_bytes(self.peak)} = {self.concurrent} running trial(s) x "
            f"{format_bytes(self.running_trial)} ({held} {format_bytes(s.resume)} each, best "
            f"{format_bytes(s.best)}, a last.pt write in progress) + {self.keep_best} kept best.pt + frozen weights "
            f"{format_bytes(s.frozen)} once"
        )


def disk_estimate(sizes: CheckpointSizes, concurrent: int, keep_best: int, keep_previous: bool = False) -> DiskEstimate:
    return DiskEstimate(sizes, max(1, concurrent), keep_best, keep_previous)


def concurrent_trials(spec: SearchSpace, resources: dict[str, float], total: int) -> int:
    """How many trials run at once: search.max_concurrent, else what the cluster's CPUs and GPUs allow."""
    fits = [total]
    if spec.max_concurrent:
        fits.append(spec.max_concurrent)
    fits.append(int(resources.get("CPU", 1) // spec.cpu) if spec.cpu else total)
    if spec.gpu > 0:
        fits.append(int(resources.get("GPU", 0) // spec.gpu))
    return max(1, min(fits))


def local_gpu_memory() -> int | None:
    """The smallest visible GPU's memory in bytes; None without CUDA here (a driver on a CPU-only head node)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))


def check_gpu_packing(estimate: GpuEstimate, spec: SearchSpace, gpu_memory: int | None) -> None:
    """Refuse ``resources.gpu`` < 1 when ``floor(1 / gpu)`` trials' estimates exceed one GPU's memory."""
    if not 0 < spec.gpu < 1 or gpu_memory is None:
        return
    per_gpu = math.floor(1 / spec.gpu + 1e-9)
    needed = per_gpu * estimate.total
    if needed <= gpu_memory:
        return
    fits = max(0, int(gpu_memory // estimate.total))
    advice = f"resources.gpu: {1 / fits:.3g} ({fits} per GPU)" if fits >= 1 else "resources.gpu: 1"
    raise CblError(
        f"{spec.source}: resources.gpu is {spec.gpu:g}, so {per_gpu} trials share a GPU, each needing "
        f"~{estimate.total / GIB:.1f} GiB: {needed / GIB:.1f} GiB, but the GPU has {gpu_memory / GIB:.1f} GiB "
        f"({estimate.line()}); use {advice}, a smaller train.batch_size or data.max_len, or "
        "model.gradient_checkpointing: true"
    )


def say_budget(
    config: ExperimentConfig,
    spec: SearchSpace,
    experiment_dir: Path,
    concurrent: int,
    echo: Callable[[str], None],
    gpu_memory: int | None = None,
) -> DiskEstimate | None:
    """Print the disk estimate (a warning when the storage has less free), the GPU estimate when trials use
    a GPU, and refuse a packing that cannot fit (``gpu_memory``: one GPU's bytes, None = not known here)."""
    try:
        counts = parameter_counts(config.model)
    except CblError as exc:  # the trials will say it again when they load the model
        echo(f"no disk or GPU memory estimate: {exc}")
        return None
    keep_previous = config.train.keep_previous_checkpoint
    disk = disk_estimate(checkpoint_sizes(counts), concurrent, spec.keep_best, keep_previous)
    echo(disk.line())
    free = shutil.disk_usage(experiment_dir).free
    if free < disk.peak:
        echo(
            f"warning: {experiment_dir} has {format_bytes(free)} free, less than the {format_bytes(disk.peak)} "
            "the checkpoints may need; a write that would not fit stops its trial with a clear error"
        )
    if spec.gpu > 0:
        estimate = gpu_memory_estimate(config, counts)
        echo(estimate.line())
        check_gpu_packing(estimate, spec, gpu_memory)
    return disk
