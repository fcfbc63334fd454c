"""Sampling a search space: define-by-run for Optuna (:func:`suggest`), and grids (:func:`expand_grid`).

Sampling is define-by-run, which is what lets a parameter depend on another
(``when:``): K and alpha are not sampled for ``ce_only``. Grids are expanded here,
conditions applied and duplicates removed, so a grid over loss type x K runs
``ce_only`` once, not once per K.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cbl.errors import ConfigError
from cbl.sweep.space import Param, SearchSpace

__all__ = ["active", "expand_grid", "grid_size", "suggest", "total_trials"]


def active(param: Param, values: Mapping[str, Any]) -> bool:
    """Whether ``param``'s ``when`` holds for the values decided so far (fixed + sampled)."""
    return all(values.get(other) in allowed for other, allowed in param.when)


def suggest(trial: Any, spec: SearchSpace) -> dict[str, Any]:
    """Define-by-run sampling for Optuna: ``trial.suggest_*`` for each active key, in file order.

    Returns the sampled values (dotted keys). Inactive keys are not sampled at all,
    so Optuna's TPE never learns from a K that a ``ce_only`` trial did not use.
    """
    values: dict[str, Any] = dict(spec.fixed)
    sampled: dict[str, Any] = {}
    for p in spec.params:
        if not active(p, values):
            continue
        if p.kind == "choice":
            value = trial.suggest_categorical(p.key, list(p.values))
        elif p.kind == "uniform":
            value = trial.suggest_float(p.key, p.low, p.high)
        elif p.kind == "loguniform":
            value = trial.suggest_float(p.key, p.low, p.high, log=True)
        elif p.kind == "int":
            value = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1)
        else:  # grid: rejected by validation for samplers
            raise ConfigError(f"{spec.source}: '{p.key}' uses grid, which needs search.algorithm: grid")
        values[p.key] = sampled[p.key] = value
    return sampled


def expand_grid(spec: SearchSpace) -> list[dict[str, Any]]:
    """Every combination of grid/choice values, conditions applied, duplicates removed, file order."""
    combos: list[dict[str, Any]] = [{}]
    for p in spec.params:
        nxt: list[dict[str, Any]] = []
        for combo in combos:
            if active(p, {**spec.fixed, **combo}):
                nxt.extend({**combo, p.key: v} for v in p.values)
            else:
                nxt.append(combo)
        combos = nxt
    unique: list[dict[str, Any]] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for combo in combos:
        signature = tuple(sorted((k, repr(v)) for k, v in combo.items()))
        if signature not in seen:
            seen.add(signature)
            unique.append(combo)
    return unique


def grid_size(spec: SearchSpace) -> int:
    return len(expand_grid(spec)) if spec.algorithm == "grid" else 0


def total_trials(spec: SearchSpace) -> int:
    """How many trials the sweep will run in all."""
    if spec.algorithm == "grid":
        return len(expand_grid(spec)) * spec.num_samples
    return spec.num_samples
