"""Ray's environment knobs that cbl sets: quiet console output and frequent experiment snapshots.

Some are read when Ray is imported, so :mod:`cbl.sweep` applies them before any of
its modules imports Ray; Ray's workers inherit them from the driver's environment.
"""

from __future__ import annotations

import os

__all__ = ["QUIET_RAY_ENV", "quiet_ray_environment"]

QUIET_RAY_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Ray snapshots the experiment every 10 s by default; a driver killed in between
    # forgets trials started since. A snapshot is a few KB: take one every 2 s.
    "TUNE_GLOBAL_CHECKPOINT_S": "2",
}


def quiet_ray_environment() -> None:
    """Keep Ray's console output out of the user's way (our own trial lines instead)."""
    for key, value in QUIET_RAY_ENV.items():
        os.environ.setdefault(key, value)
