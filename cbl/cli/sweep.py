"""Commands that run a sweep and name its result: ``run``, ``resume``, ``best``, ``final-eval``.

Reading an experiment (``status``, ``tensorboard``, ``report``) is in :mod:`cbl.cli.results`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cbl.cli.options import (
    asv_key_option,
    asv_scores_option,
    corpus_option,
    demo_option,
    experiment_argument,
    on_corpora_option,
    set_option,
    split_choice,
)
from cbl.cli.results import echo_cache, echo_collapse, echo_status_table
from cbl.errors import UsageError

if TYPE_CHECKING:  # annotations only: --help stays free of torch
    pass

__all__ = [
    "COMMANDS",
    "best_command",
    "final_eval_command",
    "final_eval_pending",
    "resume_command",
    "run_command",
]


def _storage(storage: str | None) -> Path:
    if storage and "://" in storage:
        raise UsageError(
            f"--storage {storage}: cbl keeps trial checkpoints on a filesystem; give a folder "
            "that every node can reach (e.g. an NFS mount), not a URI"
        )
    return Path(storage or "cbl_runs").expanduser().resolve()


def _best_line(best) -> str:
    """``best trial ID: dev EER 21.50% (95% CI 17.80-25.40%) at epoch 4``."""
    from cbl.sweep.store import best_epoch_line
    from cbl.uncertainty import format_interval

    interval = format_interval(best_epoch_line(best))
    return (
        f"best trial {best.trial_id}: dev EER {100 * best.best_dev_eer:.2f}%"
        f"{f' ({interval})' if interval else ''} at epoch {best.best_epoch}"
    )


def _echo_best_and_final(experiment_dir: Path, mode: str, seeds: int, split: str) -> None:
    from cbl.sweep.final_eval import export_best_config, final_evaluation, require_best

    best = require_best(experiment_dir, mode)
    params = ", ".join(f"{k}={v}" for k, v in sorted(best.params.items()))
    click.echo(f"{_best_line(best)}  ({params or 'grid point'})")
    click.echo(f"best configuration exported to {export_best_config(experiment_dir, best)}")
    click.echo(f"final evaluation of the best checkpoint on the {split} split:")
    result = final_evaluation(experiment_dir, seeds=seeds, split=split, mode=mode, echo=click.echo)
    click.echo(result.attack_table)
    click.echo(result.summary_line())


def _finish(experiment_dir: Path, final_seeds: int | None, skip_final: bool) -> None:
    """After tuner.fit(): say whether the sweep is complete; if so, best + final evaluation."""
    from cbl.sweep.store import read_sweep, read_trials, write_sweep

    sweep = read_sweep(experiment_dir)
    trials = read_trials(experiment_dir)
    total = sweep["total_trials"]
    trials = [t for t in trials if t.state != "lost"]  # see cbl.sweep.driver.mark_lost_trials
    ended = [t for t in trials if t.state in ("finished", "stopped", "error")]
    echo_status_table(trials, total)
    echo_cache(experiment_dir)
    echo_collapse(trials)
    if len(ended) < total:
        write_sweep(experiment_dir, {**sweep, "state": "interrupted"})
        click.echo(
            f"sweep interrupted: {len(ended)} of {total} trials ended.\n"
            f"resume it with: cbl-search resume {experiment_dir}"
        )
        raise SystemExit(130)
    errored = sum(t.state == "error" for t in trials)
    if errored:
        click.echo(f"{errored} trial(s) errored (retry them: cbl-search resume {experiment_dir} --retry-errored)")
    spec = _space_of(sweep)
    # recorded before it starts: a driver killed during the final evaluation leaves it "pending",
    # and `resume` then runs it (again: scoring and retraining both continue where they stopped)
    final: dict[str, Any] = (
        {"state": "skipped"}
        if skip_final
        else {"state": "pending", "seeds": spec.final_eval_seeds if final_seeds is None else final_seeds}
    )
    write_sweep(experiment_dir, {**sweep, "state": "finished", "final_eval": final})
    if not skip_final:
        _final_evaluation(experiment_dir, final["seeds"])
    click.echo(f"TensorBoard: tensorboard --logdir {experiment_dir}   (or: cbl-search tensorboard {experiment_dir})")


def _space_of(sweep: dict):
    from cbl.sweep.settings import SweepSettings

    return SweepSettings(**sweep["settings"]).space()


def _final_evaluation(experiment_dir: Path, seeds: int) -> None:
    """Best trial, best_config.yaml and the final evaluation; marked done in sweep.json once complete."""
    from cbl.sweep.cross_corpus import evaluate_space_corpora
    from cbl.sweep.store import read_sweep, write_sweep

    sweep = read_sweep(experiment_dir)
    spec = _space_of(sweep)
    _echo_best_and_final(experiment_dir, spec.mode, seeds, spec.final_eval_split)
    if spec.final_eval_corpora:  # the space file's final_eval.corpora: the other corpora, one summary
        evaluate_space_corpora(experiment_dir, sweep, spec, echo=click.echo)
    sweep = read_sweep(experiment_dir)
    write_sweep(experiment_dir, {**sweep, "final_eval": {"state": "done", "seeds": seeds}})


def final_eval_pending(sweep: dict) -> bool:
    """A finished sweep whose final evaluation started but never completed (the driver was killed in it)."""
    return sweep.get("state") == "finished" and sweep.get("final_eval", {}).get("state") == "pending"


@click.command("run")
@click.argument("space_path", metavar="SPACE.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@demo_option
@set_option
@click.option(
    "--storage", default=None, help="Folder for experiments (default: ./cbl_runs). Shared by all nodes on a cluster."
)
@click.option("--name", default=None, help="Experiment name (default: the file's name:).")
@click.option(
    "--address",
    default=None,
    envvar="RAY_ADDRESS",
    help="Join a Ray cluster (auto, or host:port) instead of starting a private local one.",
)
@click.option("--num-samples", type=int, default=None, help="Override search.num_samples.")
@click.option(
    "--final-seeds",
    type=click.IntRange(min=0),
    default=None,
    help="Retrain the best configuration with this many fresh seeds for the final evaluation "
    "(default: the space file's final_eval.seeds).",
)
@click.option("--resume", "resume_existing", is_flag=True, help="Resume the experiment if it exists unfinished.")
@click.option("--no-final-eval", is_flag=True, help="Stop after the sweep (run final-eval later).")
def run_command(
    space_path: Path,
    demo: bool,
    set_options: tuple[str, ...],
    storage: str | None,
    name: str | None,
    address: str | None,
    num_samples: int | None,
    final_seeds: int | None,
    resume_existing: bool,
    no_final_eval: bool,
) -> None:
    """Run a hyperparameter sweep: trials, best configuration, final evaluation."""
    from cbl.config import DEMO_NOTICE
    from cbl.sweep.lock import experiment_lock
    from cbl.sweep.settings import prepare_sweep
    from cbl.sweep.store import SWEEP_FILE, read_sweep

    settings, spec = prepare_sweep(
        space_path,
        demo=demo,
        set_options=list(set_options),
        storage=_storage(storage),
        name=name,
        num_samples=num_samples,
    )
    experiment_dir = Path(settings.experiment_dir)
    fresh_folder = not experiment_dir.exists() or not any(experiment_dir.iterdir())
    experiment_dir.mkdir(parents=True, exist_ok=True)
    with experiment_lock(experiment_dir):  # first: a running sweep is the reason to refuse
        resume = False
        if (experiment_dir / SWEEP_FILE).is_file():
            sweep = read_sweep(experiment_dir)
            state = sweep.get("state")
            if resume_existing and final_eval_pending(sweep):
                _resume_finished(experiment_dir, sweep, final_seeds, no_final_eval)
                return
            if state == "finished":
                raise UsageError(
                    f"{experiment_dir}: this experiment already finished; pick another --name "
                    "(or look at it: cbl-search status / best / final-eval)"
                )
            if not resume_existing:
                raise UsageError(
                    f"{experiment_dir}: this experiment exists and is unfinished; continue it with "
                    f"`cbl-search resume {experiment_dir}` (or run with --resume), or pick another "
                    "--name"
                )
            resume = True
        elif not fresh_folder and any(p.name != ".lock" for p in experiment_dir.iterdir()):
            raise UsageError(f"{experiment_dir}: folder exists and is not a cbl experiment; pick another --name")
        _sweep(settings, spec, address, resume, False, final_seeds, no_final_eval, DEMO_NOTICE if demo else None)


def _sweep(settings, spec, address, resume, retry_errored, final_seeds, no_final_eval, notice) -> None:
    """Run or resume the sweep, then finish it; the caller holds the experiment lock."""
    from cbl.sweep.driver import run_sweep
    from cbl.sweep.sampling import total_trials

    experiment_dir = Path(settings.experiment_dir)
    if notice:
        click.echo(notice)
    click.echo(
        f"experiment {spec.name}: {total_trials(spec)} trials ({spec.algorithm}"
        f"{', ASHA' if spec.scheduler == 'asha' else ''}), {spec.cpu:g} CPU + {spec.gpu:g} GPU per trial"
        f"\nfolder: {experiment_dir}"
    )
    run_sweep(settings, spec, address=address, resume=resume, retry_errored=retry_errored)
    _finish(experiment_dir, final_seeds, no_final_eval)


@click.command("resume")
@experiment_argument
@click.option("--address", default=None, envvar="RAY_ADDRESS", help="Join a Ray cluster instead of a local Ray.")
@click.option(
    "--retry-errored",
    is_flag=True,
    help="Also retry errored trials (from their last checkpoint; a pruned one from its first epoch).",
)
@click.option("--final-seeds", type=click.IntRange(min=0), default=None)
@click.option("--no-final-eval", is_flag=True)
def resume_command(
    experiment_dir: Path, address: str | None, retry_errored: bool, final_seeds: int | None, no_final_eval: bool
) -> None:
    """Finish an interrupted sweep (driver killed, reboot, Ctrl-C): no trial lost, none run twice."""
    from cbl.sweep.settings import SweepSettings
    from cbl.sweep.store import read_sweep, require_experiment

    experiment_dir = require_experiment(experiment_dir.resolve())
    sweep = read_sweep(experiment_dir)
    settings = SweepSettings(**{**sweep["settings"], "experiment_dir": str(experiment_dir)})
    spec = settings.space()
    from cbl.config import DEMO_NOTICE
    from cbl.sweep.lock import experiment_lock

    with experiment_lock(experiment_dir):
        sweep = read_sweep(experiment_dir)
        if sweep.get("state") == "finished" and not retry_errored:
            _resume_finished(experiment_dir, sweep, final_seeds, no_final_eval)
            return
        _sweep(
            settings,
            spec,
            address,
            True,
            retry_errored,
            final_seeds,
            no_final_eval,
            DEMO_NOTICE if settings.demo else None,
        )


def _resume_finished(experiment_dir: Path, sweep: dict, final_seeds: int | None, no_final_eval: bool) -> None:
    """Every trial has ended: finish an interrupted final evaluation, or say there is nothing to do."""
    if not final_eval_pending(sweep):
        click.echo(f"{experiment_dir}: the sweep already finished; nothing to resume")
        return
    if no_final_eval:
        click.echo(
            f"{experiment_dir}: the sweep finished, its final evaluation did not; run `cbl-search resume "
            f"{experiment_dir}` without --no-final-eval to finish it"
        )
        return
    click.echo(f"{experiment_dir}: every trial ended; finishing the interrupted final evaluation")
    _final_evaluation(experiment_dir, final_seeds if final_seeds is not None else sweep["final_eval"].get("seeds", 0))


@click.command("best")
@experiment_argument
@click.option(
    "--export",
    "export_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the best configuration here (default: EXPERIMENT_DIR/best_config.yaml).",
)
def best_command(experiment_dir: Path, export_path: Path | None) -> None:
    """The best trial by dev EER, and its configuration as YAML."""
    from cbl.sweep.final_eval import export_best_config, require_best
    from cbl.sweep.store import require_experiment

    experiment_dir = require_experiment(experiment_dir)
    best = require_best(experiment_dir)
    click.echo(_best_line(best))
    for key, value in sorted(best.params.items()):
        click.echo(f"  {key}: {value}")
    click.echo(f"checkpoint: {best.best_checkpoint}")
    click.echo(f"configuration: {export_best_config(experiment_dir, best, export_path)}")


@click.command("final-eval")
@experiment_argument
@click.option("--split", type=split_choice("train"), default="eval", show_default=True)
@click.option(
    "--protocol",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Evaluate on this protocol instead (e.g. ASVspoof 2021 DF keys, In-the-Wild meta.csv).",
)
@click.option("--audio-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@corpus_option("Format of --protocol (default: the best trial's corpus).")
@click.option(
    "--seeds",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also retrain the best configuration with this many fresh seeds (not counting the run that won "
    "the selection) and report their mean +- std.",
)
@asv_scores_option
@asv_key_option
@on_corpora_option
def final_eval_command(
    experiment_dir: Path,
    split: str,
    protocol: Path | None,
    audio_dir: Path | None,
    corpus: str | None,
    seeds: int,
    asv_scores: Path | None,
    asv_key: Path | None,
    on_corpora: tuple[str, ...],
) -> None:
    """Evaluate the best checkpoint of a sweep on the eval split or another protocol, or (--on) on corpora.

    The selection run (the checkpoint that won on dev) is reported on its own line: its number is biased
    optimistically. --seeds N trains N fresh seeds and reports their mean +- std.
    """
    from cbl.engine import asv_option_scores
    from cbl.sweep.cross_corpus import evaluate_on_corpora
    from cbl.sweep.final_eval import final_evaluation
    from cbl.sweep.store import require_experiment

    experiment_dir = require_experiment(experiment_dir)
    if on_corpora:
        if protocol is not None or seeds or asv_scores is not None:  # each corpus's ASV scores come from its root
            raise UsageError("--on scores corpus roots: give it without --protocol, --seeds and --asv-scores")
        evaluate_on_corpora(experiment_dir, list(on_corpora), echo=click.echo)
        return
    if protocol is not None and audio_dir is None:
        raise UsageError("--protocol needs --audio-dir (the folder its utterance ids point into)")
    asv = asv_option_scores(asv_scores, asv_key)
    result = final_evaluation(
        experiment_dir,
        seeds=seeds,
        split=split,
        protocol=protocol,
        audio_dir=audio_dir,
        corpus=corpus,
        echo=click.echo,
        asv=asv,
    )
    click.echo(result.attack_table)
    click.echo(result.summary_line())


COMMANDS = (
    run_command,
    resume_command,
    best_command,
    final_eval_command,
)
