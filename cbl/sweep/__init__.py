"""A sweep: a search-space file run as Ray Tune trials (Optuna TPE / random / grid, ASHA), read back without Ray.

Modules: ``space`` (the search-space file: schema, validation), ``sampling`` (define-by-run, grids), ``settings``
(what every trial needs to rebuild its config; checks before Ray starts), ``trial``
(the trainable: one :func:`cbl.engine.fit` per trial), ``searchers`` (grid,
pruned-aware Optuna, the redraw rule), ``asha`` (ASHA whose decisions survive a
resume), ``driver`` (Ray, the tuner, one line per result), ``store`` (the experiment
folder, read without Ray), ``final_eval`` (best trial, held-out evaluation), ``lock``.

Ray reads some of its environment when it is imported: :func:`quiet_ray_environment`
runs here, before any module of this package imports Ray.
"""

from cbl.sweep.ray_env import quiet_ray_environment

quiet_ray_environment()

__all__ = ["quiet_ray_environment"]
