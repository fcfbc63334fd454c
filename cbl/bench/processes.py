"""Measuring a process from outside: its wall time, its own peak RSS and its tree's (Ray's raylet, GCS, workers)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "cli_command",
    "peak_memory_mib",
    "proc_kib",
    "process_tree",
    "reset_peak_memory",
    "run_measured",
    "sync_device",
]


def cli_command(*args: str, sets: Sequence[str] = ()) -> list[str]:
    """``python -m cbl ARGS --set ITEM ...``: a ``cbl-search`` command for a subprocess (cold, its own memory)."""
    return [sys.executable, "-m", "cbl", *args, *(arg for item in sets for arg in ("--set", item))]


def run_measured(command: list[str], log: Path, *, spawns_children: bool = False) -> dict[str, Any]:
    """Run ``command``; return its exit code, wall time, its own peak RSS and the peak summed RSS of its tree.

    A plain process's own peak is its rusage at exit (exact). A process that
    spawns others (Ray) gets the rusage of its reaped children mixed in, so its
    own peak is the sampled VmHWM instead.
    """
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    peak_self = peak_tree = 0
    while True:
        pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak_self = max(peak_self, proc_kib(process.pid, "VmHWM"))
        peak_tree = max(peak_tree, sum(proc_kib(p, "Pss", "smaps_rollup") for p in process_tree(process.pid)))
        time.sleep(0.25)
    process.returncode = os.waitstatus_to_exitcode(status)
    if not spawns_children:
        peak_self = max(peak_self, rusage.ru_maxrss)  # KiB on Linux
    return {
        "returncode": process.returncode,
        "seconds": time.monotonic() - started,
        "peak_self_mib": peak_self / 1024,
        "peak_tree_mib": peak_tree / 1024,
    }


def proc_kib(pid: int, field_name: str, file: str = "status") -> int:
    """A ``kB`` field of ``/proc/PID/status`` (or ``smaps_rollup``); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc (Ray's raylet, GCS and workers descend from the driver)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def sync_device(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak_memory(device) -> float:
    """Reset the peak-memory counter; return the current level (MiB) to subtract from the peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    with contextlib.suppress(OSError):  # not Linux: the peak then includes what came before
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    return proc_kib(os.getpid(), "VmRSS") / 1024


def peak_memory_mib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return proc_kib(os.getpid(), "VmHWM") / 1024
