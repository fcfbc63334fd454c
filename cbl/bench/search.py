"""Row 5: ASHA + Optuna TPE against the full grid, replayed over many sampler seeds on curves trained once."""

from __future__ import annotations

import itertools
import math
import multiprocessing
import statistics
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from cbl.bench.core import BenchContext, Row, demo_config
from cbl.data import load_split
from cbl.engine import available_cpus, fit, read_history
from cbl.sweep.searchers import MAX_REDRAWS, config_key, draw_unfinished

__all__ = [
    "ASHA_FACTOR",
    "ASHA_GRACE",
    "SEARCH_CONCURRENCY",
    "WITHIN_POINTS",
    "measure_search_efficiency",
    "replay_search",
]


# ASHA as in search_spaces/ablation.yaml (grace 1, factor 3), with its concurrency (4 trials at a time)
ASHA_GRACE, ASHA_FACTOR, SEARCH_CONCURRENCY = 1, 3.0, 4
WITHIN_POINTS = 0.5  # "a configuration within 0.5 points (of EER, in %) of the grid's best"


def measure_search_efficiency(ctx: BenchContext) -> list[Row]:
    """ASHA + Optuna TPE vs the full grid: epochs to reach a config within 0.5 points of the grid's best.

    The grid is trained once for real (every epoch's dev EER of every config: a
    tabular benchmark); the search is then replayed against those curves over many
    sampler seeds, once as Ray does it today (an ASHA-stopped trial is told to
    Optuna as COMPLETE with its truncated score) and once telling the truth
    (intermediate values reported, state PRUNED). Replaying is cheap and exact for
    ASHA's rule; it assumes a config retrained with the same seed gives the same
    curve, which holds for cbl (deterministic data order and init).
    """
    curves = _grid_curves(ctx)
    grid_epochs = sum(len(c) for c in curves.values())
    best = min(min(c) for c in curves.values())
    keys = [k for k, _ in ctx.sizes.grid]
    ctx.cache.setdefault("data", {})["grid_curves"] = [
        {"config": dict(zip(keys, point, strict=True)), "dev_eer": curve} for point, curve in curves.items()
    ]
    variants = {"ray": ("complete", True), "pruned": ("pruned", True), "cbl": ("pruned", False)}
    costs = {
        name: [
            replay_search(
                curves, ctx.sizes.grid, seed=seed, tell=tell, max_t=ctx.sizes.grid_epochs, rerun_finished=rerun
            )
            for seed in range(ctx.sizes.replay_seeds)
        ]
        for name, (tell, rerun) in variants.items()
    }
    ctx.cache["data"]["replay"] = costs
    rows = []
    for row_id, name, label in (
        ("5a", "ray", "Ray's way: stopped trials told COMPLETE, repeats rerun"),
        ("5b", "cbl", "cbl's way: stopped told PRUNED, finished configs not rerun"),
    ):
        runs = costs[name]
        median = statistics.median(_cost(c) for c in runs)
        rows.append(
            Row(
                row_id,
                f"epochs to within {WITHIN_POINTS} pts of the grid's best dev EER: ASHA+TPE ({label}) vs full grid",
                "ASHA+TPE",
                median,
                "grid",
                grid_epochs,
                "epochs",
                "ratio <= 0.35",
                median / grid_epochs <= 0.35,
                note=f"median over {len(runs)} seeds (a search that never gets there counts as endless), "
                f"reached in {sum(c['reached'] for c in runs)}; {len(curves)} configs x "
                f"{ctx.sizes.grid_epochs} epochs, grid best {100 * best:.2f}%; {SEARCH_CONCURRENCY} trials "
                f"at a time, ASHA grace {ASHA_GRACE}, factor {ASHA_FACTOR:g}",
            )
        )
    for row_id, a_name, b_name, what, a_label, b_label in (
        ("5c", "pruned", "ray", "stopped trials told PRUNED vs COMPLETE", "PRUNED", "COMPLETE"),
        ("5d", "cbl", "pruned", "finished configs answered from their result vs trained again", "reused", "rerun"),
    ):
        a_runs, b_runs = costs[a_name], costs[b_name]
        a, b = (statistics.mean(c["epochs"] for c in runs) for runs in (a_runs, b_runs))
        wins = sum(_cost(x) < _cost(y) for x, y in zip(a_runs, b_runs, strict=True))
        losses = sum(_cost(x) > _cost(y) for x, y in zip(a_runs, b_runs, strict=True))
        rows.append(
            Row(
                row_id,
                f"mean epochs spent: {what} (TPE, paired seeds)",
                a_label,
                a,
                b_label,
                b,
                "epochs",
                "ratio < 1: better",
                a < b,
                note=f"paired over {len(a_runs)} seeds: {a_label} sooner in {wins}, later in {losses}; "
                f"reached {sum(c['reached'] for c in a_runs)} vs {sum(c['reached'] for c in b_runs)}",
            )
        )
    return rows


def _cost(run: dict[str, Any]) -> float:
    """Epochs a replayed search spent to reach the target; endless when it never did."""
    return run["epochs"] if run["reached"] else math.inf


def _grid_curves(ctx: BenchContext) -> dict[tuple, list[float]]:
    """Train every grid config for ``grid_epochs``; return config values -> dev EER per epoch."""
    if "grid_curves" in ctx.cache:
        return ctx.cache["grid_curves"]
    keys = [k for k, _ in ctx.sizes.grid]
    points = list(itertools.product(*(values for _, values in ctx.sizes.grid)))
    configs = [
        demo_config(ctx, **{"train.epochs": ctx.sizes.grid_epochs, **dict(zip(keys, point, strict=True))})
        for point in points
    ]
    for split in ("train", "dev"):
        load_split(configs[0].data, split)  # generate the corpus once, before the workers start
    workers = _grid_workers(ctx)
    ctx.echo(f"  [5] training the grid: {len(points)} configs x {ctx.sizes.grid_epochs} epochs, {workers} at a time")
    jobs = [(config, str(ctx.work_dir)) for config in configs]
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_train_curve, jobs))
    else:
        results = [_train_curve(job) for job in jobs]
    ctx.cache["grid_curves"] = dict(zip(points, results, strict=True))
    return ctx.cache["grid_curves"]


def _grid_workers(ctx: BenchContext) -> int:
    if ctx.sizes.name == "tiny" or ctx.device == "cuda":
        return 1
    return max(1, min(2, available_cpus()))


def _train_curve(job: tuple[Any, str]) -> list[float]:
    """One grid config trained to the end (a worker process): its dev EER per epoch."""
    config, work_dir = job
    with tempfile.TemporaryDirectory(dir=work_dir) as run_dir:
        fit(config, None, run_dir)
        return [float(h["dev_eer"]) for h in read_history(run_dir)]


def replay_search(
    curves: dict[tuple, list[float]],
    grid: Sequence[tuple[str, Sequence[Any]]],
    *,
    seed: int,
    tell: str,
    max_t: int,
    concurrency: int = SEARCH_CONCURRENCY,
    max_trials: int = 0,
    startup: int = 10,
    rerun_finished: bool = True,
) -> dict[str, Any]:
    """Replay ASHA + Optuna TPE against recorded curves; the epochs spent until a result within 0.5 points of the best.

    ``tell``: ``complete`` (an ASHA-stopped trial is told COMPLETE with its last
    score, as Ray's OptunaSearch does) or ``pruned`` (told PRUNED after reporting
    each epoch). ``concurrency`` trials run at once, one epoch per time step; the
    epochs of the whole step in which the target is seen count as spent. Stops
    after ``max_trials`` (default: twice the grid) without reaching it: the
    epochs spent so far are returned with ``reached`` False. ``startup``: TPE's
    random start-up trials (Optuna's default, and cbl's, is 10). ``rerun_finished``
    False: a suggestion equal to a configuration that already ran to ``max_t`` is
    answered from that result and drawn again, by the searcher's own rule
    (:func:`cbl.sweep.searchers.draw_unfinished`). The stopping decisions are Ray's
    own ``ASHAScheduler``'s (``epoch`` as its time, as in a sweep).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    target = min(min(c) for c in curves.values()) + WITHIN_POINTS / 100 + 1e-12
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    # Ray's own ASHA, driven without a Tune controller: it reads only each trial's trial_id
    asha: Any = ASHAScheduler(
        time_attr="epoch",
        metric="dev_eer",
        mode="min",
        max_t=max_t,
        grace_period=ASHA_GRACE,
        reduction_factor=ASHA_FACTOR,
    )
    keys = [key for key, _ in grid]
    running: list[_ReplayedTrial] = []
    launched, spent = 0, 0
    finished: dict[tuple, float] = {}  # configurations that ran to max_t (config_key) -> final dev EER
    max_trials = max_trials or 2 * len(curves)

    def draw() -> tuple[Any, tuple]:
        trial = study.ask()
        return trial, tuple(trial.suggest_categorical(key, list(values)) for key, values in grid)

    while True:
        while len(running) < concurrency and launched < max_trials:
            trial, point = draw_unfinished(
                draw,
                lambda drawn: config_key(dict(zip(keys, drawn[1], strict=True))),
                finished,
                lambda drawn, value: study.tell(drawn[0], value),
                0 if rerun_finished else MAX_REDRAWS,
            )
            running.append(_ReplayedTrial(str(launched), trial, point, curves[point]))
            asha.on_trial_add(None, running[-1])
            launched += 1
        if not running:
            return {"epochs": spent, "reached": False, "trials": launched}
        spent += len(running)
        ended = _one_epoch(running, asha, study, tell=tell, max_t=max_t)
        for item in ended:
            if item.epoch >= max_t:
                finished[config_key(dict(zip(keys, item.point, strict=True)))] = item.curve[item.epoch - 1]
        if any(item.curve[item.epoch - 1] <= target for item in [*running, *ended]):
            return {"epochs": spent, "reached": True, "trials": launched}


def _one_epoch(
    running: list[_ReplayedTrial], asha: Any, study: optuna.Study, *, tell: str, max_t: int
) -> list[_ReplayedTrial]:
    """Every running trial trains one more epoch; ASHA decides who goes on, Optuna hears of the rest.

    The trials ASHA stopped (or that reached ``max_t``) leave ``running`` and are returned.
    """
    ended = []
    for item in list(running):
        item.epoch += 1
        eer = item.curve[item.epoch - 1]
        if asha.on_trial_result(None, item, {"epoch": item.epoch, "dev_eer": eer}) == TrialScheduler.CONTINUE:
            item.trial.report(eer, item.epoch)
            continue
        running.remove(item)
        ended.append(item)
        if tell == "pruned" and item.epoch < max_t:
            item.trial.report(eer, item.epoch)
            study.tell(item.trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(item.trial, eer)
    return ended


@dataclass
class _ReplayedTrial:
    """One replayed trial: what ASHA sees of it (``trial_id``), its Optuna trial, and its recorded curve."""

    trial_id: str
    trial: Any  # optuna.trial.Trial
    point: tuple
    curve: list[float]
    epoch: int = 0
