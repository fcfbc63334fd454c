"""The sweep's numbers as tables: every trial, best/median dev EER per parameter value, importance.

Everything here reads :class:`cbl.sweep_store.TrialInfo` records only (no Ray, no
model), so these tables can be made while a sweep is still running.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from cbl.report.document import Table
from cbl.space import Param
from cbl.sweep_store import TrialInfo

__all__ = ["diagnostics_table", "format_eer", "format_value", "searched_keys", "rank_trials", "results_table",
           "MarginalRow",
           "marginal_rows", "marginal_table", "Importance", "param_importance", "importance_table"]

# A continuous parameter is shown per bin: a table row per sampled learning rate says nothing.
_BINS = 3
_MAX_DISCRETE = 8  # an int (or unlisted) key with more distinct values than this is binned too
_ENDED = ("finished", "stopped", "error")


def format_eer(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def format_value(value: Any) -> str:
    """Floats to 3 significant digits, keeping them recognisable as floats (alpha 1.0, not 1)."""
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.3g}"
    return text if any(c in text for c in ".eni") else f"{text}.0"


def searched_keys(params: Sequence[Param], trials: Sequence[TrialInfo]) -> list[str]:
    """The search space's keys in file order, then any other key a trial was given (sorted)."""
    keys = [p.key for p in params]
    extra = sorted({k for t in trials for k in t.params} - set(keys))
    return keys + extra


def rank_trials(trials: Sequence[TrialInfo], mode: str = "min") -> list[TrialInfo]:
    """Best dev EER first (``mode``); trials without a dev EER last, by id."""
    sign = 1.0 if mode == "min" else -1.0
    return sorted(trials, key=lambda t: (math.isnan(t.best_dev_eer), 0.0 if math.isnan(t.best_dev_eer)
                                         else sign * t.best_dev_eer, t.trial_id))


def results_table(trials: Sequence[TrialInfo], keys: Sequence[str], mode: str = "min") -> Table:
    """One row per trial: id, state, epochs run, best dev EER, its epoch, then each searched key."""
    header = ["rank", "trial", "state", "epochs", "best dev EER", "best epoch", *keys]
    rows = []
    for rank, t in enumerate(rank_trials(trials, mode), start=1):
        rows.append([str(rank), t.trial_id, t.state, str(t.epochs), format_eer(t.best_dev_eer),
                     str(t.best_epoch) if t.epochs else "-",
                     *(format_value(t.params[k]) if k in t.params else "-" for k in keys)])
    return Table(header, rows, right=(0, 3, 4, 5))


# --------------------------------------------------------------------------- marginals
@dataclass
class MarginalRow:
    key: str
    value: str  # the value, or a bin such as "[0.001, 0.00215)"
    trials: int
    best: float
    median: float


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bins(param: Param | None, values: list[float]) -> tuple[np.ndarray, bool] | None:
    """Bin edges for a continuous key (log-spaced for loguniform), or None to list values as they are."""
    if not values or not all(_is_number(v) for v in values):
        return None
    continuous = param is not None and param.kind in ("uniform", "loguniform")
    if not continuous and len(set(values)) <= _MAX_DISCRETE:
        return None
    low = min(values) if param is None or param.low is None else min(float(param.low), min(values))
    high = max(values) if param is None or param.high is None else max(float(param.high), max(values))
    log = (param is not None and param.kind == "loguniform") and low > 0
    count = _BINS if param is not None else min(_BINS, len(set(values)))  # fixed bins: stable while a sweep runs
    edges = np.geomspace(low, high, count + 1) if log else np.linspace(low, high, count + 1)
    return edges, log


def _bin_label(edges: np.ndarray, index: int) -> str:
    close = "]" if index == len(edges) - 2 else ")"
    return f"[{edges[index]:.3g}, {edges[index + 1]:.3g}{close}"


def marginal_rows(trials: Sequence[TrialInfo], keys: Sequence[str], params: dict[str, Param],
                  mode: str = "min") -> tuple[list[MarginalRow], list[str]]:
    """Best and median dev EER per value of each key, over the trials that reported a dev EER.

    Returns the rows and notes (binned keys, conditional keys). A value of the
    space that no trial drew gets a row with 0 trials.
    """
    pick = min if mode == "min" else max
    scored = [t for t in trials if not math.isnan(t.best_dev_eer)]
    rows: list[MarginalRow] = []
    notes: list[str] = []
    for key in keys:
        param = params.get(key)
        having = [t for t in scored if key in t.params]
        groups: dict[str, list[float]] = {}
        binned = _bins(param, [t.params[key] for t in having])
        if binned is not None:
            edges, log = binned
            for i in range(len(edges) - 1):
                groups[_bin_label(edges, i)] = []
            for t in having:
                index = min(int(np.searchsorted(edges, t.params[key], side="right")) - 1, len(edges) - 2)
                groups[_bin_label(edges, max(index, 0))].append(t.best_dev_eer)
            notes.append(f"`{key}` is continuous: its values are grouped into {len(edges) - 1} "
                         f"{'log-spaced' if log else 'equal-width'} bins of the searched range.")
        else:
            for value in (param.values if param is not None else ()):
                groups[format_value(value)] = []
            for t in having:
                groups.setdefault(format_value(t.params[key]), []).append(t.best_dev_eer)
        if param is not None and param.when:
            condition = " and ".join(f"{k} in [{', '.join(map(format_value, v))}]" for k, v in param.when)
            notes.append(f"`{key}` is sampled only when {condition}; its rows count only those trials.")
        for label, eers in groups.items():
            rows.append(MarginalRow(key, label, len(eers), pick(eers) if eers else math.nan,
                                    statistics.median(eers) if eers else math.nan))
    return rows, notes


def marginal_table(rows: Sequence[MarginalRow]) -> Table:
    return Table(["parameter", "value", "trials", "best dev EER", "median dev EER"],
                 [[r.key, r.value, str(r.trials), format_eer(r.best), format_eer(r.median)] for r in rows],
                 right=(2, 3, 4))


# --------------------------------------------------------------------------- importance
@dataclass
class Importance:
    values: dict[str, float] = field(default_factory=dict)  # key -> share of the variance, summing to 1
    trials: int = 0  # finished trials the study was built from
    left_out: list[str] = field(default_factory=list)  # "key: why"
    reason: str = ""  # why nothing was computed (empty when values are given)


def _distribution(param: Param | None, observed: list[Any]):
    """The Optuna distribution of a key: from its search-space entry, widened to what trials really hold."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    numbers = all(_is_number(v) for v in observed)
    if param is not None and param.kind in ("uniform", "loguniform") and numbers:
        low, high = min(float(param.low), *observed), max(float(param.high), *observed)
        return FloatDistribution(low, high, log=param.kind == "loguniform" and low > 0)
    if param is not None and param.kind == "int" and all(isinstance(v, int) for v in observed):
        step = param.step or 1
        low = min(int(param.low), *observed)
        high = max(int(param.high), *observed)
        return IntDistribution(low, low + (high - low) // step * step, step=step)
    choices: list[Any] = list(param.values) if param is not None else []
    for value in observed:
        if value not in choices:
            choices.append(value)
    return CategoricalDistribution(choices)


def param_importance(trials: Sequence[TrialInfo], keys: Sequence[str], params: dict[str, Param],
                     mode: str = "min") -> Importance:
    """fANOVA importance of each key for the best dev EER of the finished trials.

    fANOVA needs every parameter in every trial, so a key missing from some
    finished trials (a conditional key such as K for ``ce_only``) is left out, as
    is a key that took one value only; both are named in ``left_out``.
    """
    import optuna

    finished = [t for t in trials if t.state == "finished" and not math.isnan(t.best_dev_eer)]
    result = Importance(trials=len(finished))
    if len(finished) < 2:
        result.reason = (f"{len(finished)} finished trial(s) with a dev EER: importance needs at least 2 "
                         "(stopped and errored trials are not counted: their EER comes from fewer epochs)")
        return result
    used: list[str] = []
    for key in keys:
        missing = sum(key not in t.params for t in finished)
        if missing:
            result.left_out.append(f"`{key}`: absent from {missing} of {len(finished)} finished trials "
                                   "(conditional), and fANOVA needs every parameter in every trial")
        elif len({repr(t.params[key]) for t in finished}) < 2:
            result.left_out.append(f"`{key}`: one value in every finished trial, so nothing to attribute")
        elif not all(isinstance(t.params[key], (str, int, float, bool)) for t in finished):
            result.left_out.append(f"`{key}`: values that are not numbers or strings")
        else:
            used.append(key)
    if len(used) < 2:
        result.reason = (f"{len(used)} parameter(s) left to compare ({', '.join(used) or 'none'}): importance "
                         "ranks two or more parameters")
        return result
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    distributions = {k: _distribution(params.get(k), [t.params[k] for t in finished]) for k in used}
    for t in finished:
        study.add_trial(optuna.trial.create_trial(params={k: t.params[k] for k in used},
                                                  distributions=distributions, value=t.best_dev_eer))
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        result.values = {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                                                         params=used).items()}
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. every trial with the same EER
        result.reason = f"Optuna could not compute importances: {exc}"
    return result


def importance_table(importance: Importance) -> Table:
    return Table(["parameter", "importance"],
                 [[k, f"{v:.3f}"] for k, v in sorted(importance.values.items(), key=lambda kv: -kv[1])], right=(1,))


def diagnostics_table(trials: Sequence[TrialInfo], keys: Sequence[str], mode: str = "min") -> Table | None:
    """The last epoch's embedding diagnostics of every trial (see :mod:`cbl.diagnostics`), or None if none has any.

    Columns: empty centers of K, the centers' sizes (dev bonafide nearest to each
    center, by center id), mean cosine of dev bonafide and spoof to the nearest
    center and their gap, the dev embeddings' mean pairwise cosine and effective rank.
    """
    from cbl.diagnostics import collapse_reasons

    rows = []
    for t in rank_trials(trials, mode):
        last = t.history[-1] if t.history else {}
        if "embedding_mean_cosine" not in last:
            continue
        sizes = last.get("cluster_sizes")
        number = lambda key, digits=2: (f"{last[key]:.{digits}f}" if isinstance(last.get(key), float)  # noqa: E731
                                        else "-")
        rows.append([t.trial_id, str(last.get("epoch", "-")),
                     f"{last['cluster_empty_clusters']}/{len(sizes)}" if isinstance(sizes, list) else "-",
                     " ".join(str(n) for n in sizes) if isinstance(sizes, list) else "-",
                     number("cluster_bonafide_similarity"), number("cluster_spoof_similarity"),
                     number("cluster_similarity_gap"), number("embedding_mean_cosine"),
                     number("embedding_effective_rank", 1), "yes" if collapse_reasons(last) else "no"])
    if not rows:
        return None
    return Table(["trial", "epoch", "empty centers", "center sizes (c0, c1, ...)", "bonafide sim", "spoof sim",
                  "gap", "mean cos", "effective rank", "collapsed"], rows, right=(1, 4, 5, 6, 7, 8))

