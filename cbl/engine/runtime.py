"""Where and how a run executes: the device, CPU threads, DataLoader workers, autocast, determinism.

None of it changes what a run computes on the CPU (the config keys involved are
:data:`cbl.config.RUNTIME_KEYS`, apart from ``train.deterministic`` and ``train.bf16``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from contextlib import AbstractContextManager, nullcontext

import torch

from cbl.config import ExperimentConfig
from cbl.errors import CblError

__all__ = [
    "CUBLAS_WORKSPACE",
    "apply_determinism",
    "autocast_for",
    "available_cpus",
    "pick_device",
    "resolve_workers",
    "set_threads",
]

logger = logging.getLogger(__name__)

CUBLAS_WORKSPACE = ":4096:8"  # the cuBLAS workspace setting the CUDA and PyTorch docs give for determinism


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pick_device(config: ExperimentConfig) -> torch.device:
    """``train.device``: ``cuda`` (an error when none is visible), ``cpu``, or ``auto`` (CUDA when available)."""
    if config.train.device == "cuda" and not torch.cuda.is_available():
        raise CblError("train.device is cuda, but no CUDA device is visible (use train.device=auto or cpu)")
    if config.train.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def set_threads(config: ExperimentConfig, cpus: float | None) -> int:
    """torch threads = train.num_threads, else the run's CPU allotment (a trial's ``resources.cpu``)."""
    if config.train.num_threads:
        threads = config.train.num_threads
    elif cpus:
        threads = max(1, int(cpus))
    else:
        threads = available_cpus()
    torch.set_num_threads(threads)
    return threads


def resolve_workers(config: ExperimentConfig, device: torch.device, cpus: float | None) -> ExperimentConfig:
    """``data.num_workers: -1`` (auto) made concrete: on CUDA the run's CPUs minus one (1..8), on the CPU 0.

    RawBoost algorithm 4 on one core runs at ~350 4-s utterances/s (``cbl-search bench``,
    row 9), below what a GPU may train on; on the CPU the workers would only take
    cores from the model.
    """
    if config.data.num_workers >= 0:
        return config
    if device.type == "cuda":
        available = cpus or available_cpus()
        workers = min(8, max(1, int(available) - 1))
    else:
        workers = 0
    return dataclasses.replace(config, data=dataclasses.replace(config.data, num_workers=workers))


def apply_determinism(config: ExperimentConfig) -> None:
    """``train.deterministic``: torch's deterministic algorithms, cuDNN deterministic, cuBLAS's workspace fixed.

    Applied (or undone: a Ray worker may run several trials) at the start of every
    run. ``CUBLAS_WORKSPACE_CONFIG`` must be set before CUDA creates its first cuBLAS
    handle: set here when absent, before ``fit`` touches CUDA. cuDNN's benchmark mode
    (auto-tuning, which may pick other kernels per run) stays off either way.
    """
    on = config.train.deterministic
    if on and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            logger.warning(
                "train.deterministic: CUDA was initialised before CUBLAS_WORKSPACE_CONFIG could be set; "
                "set CUBLAS_WORKSPACE_CONFIG=%s in the environment for repeatable cuBLAS results",
                CUBLAS_WORKSPACE,
            )
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False


def autocast_for(config: ExperimentConfig, device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast on CUDA when ``train.bf16`` (the default), nothing on CPU."""
    if device.type == "cuda" and config.train.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
