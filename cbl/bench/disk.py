"""Row 11 (opt-in): checkpoint bytes before and after issue 17, the ablation's peak disk, one trial's peak RSS.

The XLS-R-300M-sized random model of row 10 (:func:`cbl.bench.full_size.measure_full_size`,
which this row runs: ask for one of the two) trains one step; its run folder gives
the measured sizes: ``last.pt`` and ``best.pt`` as written now (frozen weights in
the store, once) and as cbl wrote them before (the same payload with the frozen
weights inside, serialised the same way). :func:`simulate_sweep_disk` then plays
the 24-trial ablation (``search_spaces/ablation.yaml``: ASHA, grace 1, reduction 3,
10 epochs, 4 trials at once) with those sizes under both policies.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cbl.bench.core import BenchContext, Row
from cbl.bench.full_size import measure_full_size
from cbl.engine import load_checkpoint
from cbl.engine.footprint import format_bytes

__all__ = ["ABLATION", "Lifecycle", "measure_checkpoint_disk", "simulate_sweep_disk"]

TARGET_BYTES = 25e9  # issue 17: the ablation's peak checkpoint disk


@dataclass(frozen=True)
class Lifecycle:
    """A sweep to simulate: its trials, how many at once, ASHA's settings and the retention policy."""

    trials: int = 24
    concurrent: int = 4
    max_t: int = 10
    grace_period: int = 1
    reduction_factor: float = 3.0
    keep_best: int = 3
    prune: bool = True  # False: everything kept, as before issue 17
    keep_previous: bool = False  # train.keep_previous_checkpoint (True: previous.pt as well, as before issue 17)
    seed: int = 0


ABLATION = Lifecycle()  # search_spaces/ablation.yaml


@dataclass
class _Trial:
    quality: float  # the dev EER it converges to
    epochs: int = 0
    files: dict[str, int] = field(default_factory=dict)  # name -> bytes
    best_eer: float = 1.0
    ended: bool = False


def _eer(trial: _Trial, epoch: int) -> float:
    """A learning curve that improves every epoch (best.pt written each epoch: the most disk)."""
    return trial.quality + 0.3 / epoch


def simulate_sweep_disk(life: Lifecycle, resume: int, best: int, frozen: int = 0) -> tuple[int, list[int]]:
    """Peak bytes of the sweep's checkpoints, and each trial's epoch count, by playing its lifecycle.

    Time advances one epoch at a time for every running trial (a freed slot takes the next
    trial at once); an epoch end writes best.pt (a temporary copy next to the old one), then
    last.pt: its temporary file next to the old last.pt, renamed over it (with
    ``keep_previous`` the old one is moved to previous.pt first). The peak is taken at each
    write, the running trials' epoch ends played one after another: one write in progress at
    a time (a write takes seconds, an XLS-R epoch tens of minutes; the estimate of
    :mod:`cbl.sweep.budget` takes the worst case, all writing at once). ASHA like Ray's
    (asynchronous): at each milestone ``grace * factor^k`` below ``max_t`` a trial stops
    unless its EER is within the best ``1/factor`` of those recorded there so far. With
    ``prune`` an ended trial keeps only best.pt, and only the best ``keep_best`` trials keep that.
    ``frozen``: the store, written once.
    """
    rng = random.Random(life.seed)
    trials = [_Trial(quality=rng.uniform(0.01, 0.3)) for _ in range(life.trials)]
    milestones, m = [], float(life.grace_period)
    while m < life.max_t:
        milestones.append(int(m))
        m *= life.reduction_factor
    recorded: dict[int, list[float]] = {m: [] for m in milestones}
    waiting, running = list(range(life.trials)), list[int]()
    stored = frozen if life.prune else 0
    peak = stored

    def disk() -> int:
        return stored + sum(sum(t.files.values()) for t in trials)

    while waiting or running:
        while waiting and len(running) < life.concurrent:
            running.append(waiting.pop(0))
        for index in list(running):
            trial = trials[index]
            trial.epochs += 1
            eer = _eer(trial, trial.epochs)
            if eer < trial.best_eer:
                trial.best_eer = eer
                peak = max(peak, disk() + best)  # the new best.pt's temporary copy next to the old one
                trial.files["best"] = best
            if life.keep_previous and "last" in trial.files:
                trial.files["previous"] = trial.files.pop("last")
            peak = max(peak, disk() + resume)  # the new last.pt's temporary file, next to the old one
            trial.files["last"] = resume
            peak = max(peak, disk())
            if not _continues(trial, eer, recorded, life):
                trial.ended = True
                running.remove(index)
                if life.prune:
                    _prune(trials, life.keep_best)
    return peak, [t.epochs for t in trials]


def _continues(trial: _Trial, eer: float, recorded: dict[int, list[float]], life: Lifecycle) -> bool:
    if trial.epochs >= life.max_t:
        return False
    if trial.epochs not in recorded:
        return True
    seen = recorded[trial.epochs]
    seen.append(eer)
    keep = max(1, int(len(seen) / life.reduction_factor))
    return eer <= sorted(seen)[keep - 1]


def _prune(trials: list[_Trial], keep_best: int) -> None:
    ranked = sorted((t for t in trials if "best" in t.files), key=lambda t: t.best_eer)
    keep = {id(t) for t in ranked[:keep_best]}
    for t in trials:
        if t.ended:
            t.files.pop("last", None)
            t.files.pop("previous", None)
            if id(t) not in keep:
                t.files.pop("best", None)


def _serialised_before(path: Path) -> int:
    """Bytes of a checkpoint as cbl wrote it before the frozen store: the joined payload, saved the same way."""
    payload, _ = load_checkpoint(path)  # frozen weights put back
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # the config inside already: the same keys as the file before
    return buffer.getbuffer().nbytes


def measure_checkpoint_disk(ctx: BenchContext) -> list[Row]:
    """Rows 12a-12d from one XLS-R-sized training step (row 10's run)."""
    rows = measure_full_size(ctx)
    run_dir = ctx.work_dir / "full-size-run"
    ckpt = run_dir / "checkpoints"
    (frozen_file,) = (run_dir / "frozen").glob("*.pt")
    last, best, frozen = (
        (ckpt / "last.pt").stat().st_size,
        (ckpt / "best.pt").stat().st_size,
        frozen_file.stat().st_size,
    )
    last_before, best_before = _serialised_before(ckpt / "last.pt"), _serialised_before(ckpt / "best.pt")
    ctx.echo("  [11] simulating the 24-trial ablation's checkpoint disk (4 at once, ASHA) with these sizes")
    before, epochs = simulate_sweep_disk(Lifecycle(prune=False, keep_previous=True), last_before, best_before)
    after, _ = simulate_sweep_disk(ABLATION, last, best, frozen)
    with_previous, _ = simulate_sweep_disk(Lifecycle(keep_previous=True), last, best, frozen)
    peak_rss = next(r.a for r in rows if r.id == "10.mem")
    epoch_note = f"{sum(epochs)} trial-epochs, {sum(e == 1 for e in epochs)} of 24 trials stopped at epoch 1"
    return [
        Row("12a", "last.pt (weights + AdamW), XLS-R-sized", "after", last / 1e9, "before", last_before / 1e9, "GB",
            note=f"{format_bytes(last)} vs {format_bytes(last_before)}; frozen weights {format_bytes(frozen)} once"),
        Row("12b", "best.pt, XLS-R-sized", "after", best / 1e9, "before", best_before / 1e9, "GB",
            note=f"{format_bytes(best)} vs {format_bytes(best_before)}"),
        Row("12c", "24-trial ablation, 4 at once: peak checkpoint disk (simulated lifecycle, measured sizes)",
            "after", after / 1e9, "before", before / 1e9, "GB", target="after <= 25 GB", met=after <= TARGET_BYTES,
            note=f"{format_bytes(after)} vs {format_bytes(before)} (everything kept); {format_bytes(with_previous)} "
            f"with train.keep_previous_checkpoint; {epoch_note}"),
        Row("12d", "one XLS-R-sized trial: peak RSS (cbl-search train, batch 2)", "peak", peak_rss, "", None,
            "MiB", note="row 10's run"),
    ]  # fmt: skip
