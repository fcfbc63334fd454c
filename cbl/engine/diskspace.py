"""Free space checked before a large write: a clear error instead of a disk that fills half-way through a file."""

from __future__ import annotations

import shutil
from pathlib import Path

from cbl.errors import CblError

__all__ = ["DiskFullError", "require_free_space"]

MARGIN = 64 * 1024**2  # left free for what else writes meanwhile (history lines, trial.json, Ray's snapshots)


class DiskFullError(CblError):
    """A file would not fit on its filesystem."""


def require_free_space(path: Path, needed: int) -> None:
    """Raise :class:`DiskFullError` naming ``path`` when its filesystem has less than ``needed`` bytes (+ margin).

    ``path`` is the file about to be written (its folder may not exist yet: the nearest existing one is asked).
    """
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed + MARGIN:
        raise DiskFullError(
            f"{path}: not enough free space to write it ({_mb(needed)} needed + {_mb(MARGIN)} margin, "
            f"{_mb(free)} free on {folder}); free some space (`cbl-search prune` removes checkpoints an experiment "
            "no longer needs), then resume"
        )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
