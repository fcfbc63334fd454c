"""An exclusive lock on an experiment folder, so two drivers never interleave one sweep."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cbl.errors import UsageError

__all__ = ["experiment_lock"]


@contextmanager
def experiment_lock(experiment_dir: Path) -> Iterator[None]:
    """Hold ``experiment_dir/.lock`` (flock) for the duration; refuse at once if another process holds it.

    The kernel drops a flock when its process dies, so a killed driver never leaves a stale lock.
    """
    path = experiment_dir / ".lock"
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held (with its lock) until the finally below
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise UsageError(
            f"{experiment_dir}: a sweep is already running on this experiment ({holder}); "
            "wait for it, or watch it with `cbl-search status`"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
