"""The ``cbl-search`` command line: one click group, one function per command.

Errors: our :class:`~cbl.errors.UsageError` (bad file, key, option) exits 2,
any other :class:`~cbl.errors.CblError` exits 1, both as one line without a
traceback; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from cbl import __version__
from cbl.errors import CblError, UsageError

__all__ = ["cli", "main"]


class InputError(click.ClickException):
    """Bad input: exit code 2 like click's usage errors, but without the usage banner."""

    exit_code = 2


def _translate(exc: BaseException) -> click.ClickException:
    if isinstance(exc, UsageError):
        return InputError(str(exc))
    if isinstance(exc, CblError):
        return click.ClickException(str(exc))
    if isinstance(exc, MemoryError):
        return click.ClickException("out of memory (try a smaller train.batch_size)")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return click.ClickException(f"{exc.strerror or exc}{where}")
    return click.ClickException(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")


class CblGroup(click.Group):
    """Turns our exceptions into one-line messages with the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI boundary
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise _translate(exc) from None


@click.group(cls=CblGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cbl-search")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Hyperparameter search for audio deepfake detection with a bonafide-only cluster metric loss.

    \b
    Quick start (synthetic corpus, tiny random-weight wav2vec2: a pipeline check, not results):
      cbl-search run search_spaces/ablation.yaml --demo
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


config_file = click.argument(
    "config_path", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
set_option = click.option(
    "--set",
    "set_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set loss.alpha=2.0 (repeatable).",
)
demo_option = click.option(
    "--demo", is_flag=True, help="Use the built-in synthetic corpus and the tiny random-weight model."
)


@cli.command("config")
@config_file
@set_option
@demo_option
def config_command(config_path: Path | None, set_options: tuple[str, ...], demo: bool) -> None:
    """Validate a config file and print the resolved configuration as YAML."""
    from cbl.config import config_to_dict
    from cbl.profiles import resolve_config
    from cbl.yamlio import dump_yaml

    config = resolve_config(config_path, set_options, demo=demo)
    click.echo(dump_yaml(config_to_dict(config)), nl=False)


@cli.command("demo-data")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="The corpus is deterministic for a seed.")
@click.option("--utterances", default=480, show_default=True, help="Utterances per split.")
@click.option("--seconds", default=1.0, show_default=True, help="Length of each utterance.")
def demo_data_command(out_dir: Path, seed: int, utterances: int, seconds: float) -> None:
    """Write the synthetic demo corpus in the ASVspoof 2019 LA layout to OUT_DIR."""
    from cbl.data.demo import generate_demo_corpus

    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"{out_dir}: folder exists and is not empty; choose a new folder")
    path = generate_demo_corpus(out_dir, seed=seed, utterances=utterances, seconds=seconds)
    click.echo(f"demo corpus written to {path} (synthetic: for trying the pipeline, not for results)")


def _default_run_dir(config_path: Path | None, demo: bool) -> Path:
    import time

    stem = "demo" if demo else (config_path.stem if config_path else "run")
    return Path("cbl_runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


@cli.command("train")
@config_file
@set_option
@demo_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (default: cbl_runs/<config>-<time>). An existing run folder resumes.")
@click.option("--progress/--no-progress", default=None, help="Progress bar per epoch (default: on a terminal).")
def train_command(config_path: Path | None, set_options: tuple[str, ...], demo: bool, out_dir: Path | None,
                  progress: bool | None) -> None:
    """Train one configuration; checkpoints, metrics and TensorBoard events go to the run folder.

    Rerunning the same command with the same --out resumes an interrupted run.
    """
    from cbl.config import load_config
    from cbl.profiles import DEMO_NOTICE, resolve_config
    from cbl.reporting import ConsoleReporter
    from cbl.train import config_differences, fit

    config = resolve_config(config_path, set_options, demo=demo)
    run_dir = out_dir or _default_run_dir(config_path, demo)
    existing = run_dir / "config.yaml"
    if (run_dir / "checkpoints" / "last.pt").is_file() and existing.is_file():
        differences = config_differences(load_config(existing), config)
        if differences:
            shown = "; ".join(differences[:5]) + (f" (+{len(differences) - 5} more)" if len(differences) > 5 else "")
            raise UsageError(f"{run_dir}: holds a run with another configuration ({shown}); "
                             "choose a new --out folder")
        click.echo(f"resuming the run in {run_dir}")
    if config.data.corpus == "demo" or config.model.ssl == "tiny":
        click.echo(DEMO_NOTICE)
    click.echo(f"run folder: {run_dir}")
    reporter = ConsoleReporter(config, run_dir, echo=click.echo)
    try:
        result = fit(config, reporter, run_dir, progress=sys.stderr.isatty() if progress is None else progress)
    except KeyboardInterrupt:
        done = reporter.last.get("epoch")
        click.echo(f"interrupted{f' after epoch {done}' if done else ''}: rerun the same command "
                   f"(with --out {run_dir}) to resume from the last checkpoint", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        reporter.close()
    click.echo(
        f"best dev EER {100 * result.best_dev_eer:.2f}% at epoch {result.best_epoch}; "
        f"checkpoint {result.best_checkpoint}\n"
        f"TensorBoard: tensorboard --logdir {run_dir}"
    )


def _echo_eval(result, out: Path) -> None:
    from cbl.metrics import format_attack_table

    click.echo(f"scores written to {out} ({len(result.scores)} utterances)")
    if result.eer is None:
        click.echo("no EER: the protocol does not hold both bonafide and spoof labels")
        return
    click.echo(f"EER {100 * result.eer:.2f}% (threshold {result.threshold:.6g})")
    click.echo(format_attack_table(result.attack_rows))
    if result.sign_suspicious:
        click.echo(
            f"warning: negated scores give a lower EER ({100 * result.negated_eer:.2f}%): "
            "are the labels or the score sign swapped? (higher score must mean bonafide)",
            err=True,
        )


@cli.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option("--split", type=click.Choice(["train", "dev", "eval"]), default=None,
              help="A split of the checkpoint's own corpus (default: eval).")
@click.option("--protocol", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Score this protocol instead (read with --corpus).")
@click.option("--audio-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Audio folder of --protocol.")
@click.option("--corpus", type=click.Choice(["asvspoof2019_la", "asvspoof2021_la", "asvspoof2021_df",
                                             "in_the_wild", "folder"]), default=None,
              help="Format of --protocol (default: the checkpoint's corpus).")
@click.option("--overrides", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML of config values laid over the checkpoint's own (e.g. data.root on this machine).")
@set_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Score file (default: scores-<split>.txt beside the checkpoint).")
@click.option("--style", type=click.Choice(["2021", "2019"]), default="2021", show_default=True,
              help="2021: UTT_ID SCORE; 2019: UTT_ID ATTACK KEY SCORE.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
def evaluate_command(checkpoint: Path, split: str | None, protocol: Path | None, audio_dir: Path | None,
                     corpus: str | None, overrides: Path | None, set_options: tuple[str, ...], out: Path | None,
                     style: str, batch_size: int | None) -> None:
    """Score a split or a protocol with a saved model; print EER and the per-attack table.

    An interrupted run resumes where it stopped (from OUT.partial).
    """
    from cbl.evaluate import evaluate_records, load_model, records_for

    if protocol is not None and split is not None:
        raise UsageError("give either --split or --protocol, not both")
    loaded = load_model(checkpoint)
    loaded.config = _override_eval_config(loaded.config, overrides, set_options)
    records = records_for(loaded.config, split, protocol, audio_dir, corpus)
    name = f"scores-{split or 'eval'}.txt" if protocol is None else f"scores-{protocol.stem}.txt"
    out = out or (checkpoint if checkpoint.is_dir() else checkpoint.parent) / name
    result = evaluate_records(loaded, records, out, style=style, batch_size=batch_size)
    _echo_eval(result, out)


def _override_eval_config(config, overrides: Path | None, set_options: tuple[str, ...]):
    """Only data settings may change at evaluation: the model must stay the one that was trained."""
    from cbl.config import apply_overrides, parse_set_options
    from cbl.yamlio import load_yaml

    original = config
    if overrides is not None:
        data, lines = load_yaml(overrides)
        config = apply_overrides(config, data, source=str(overrides), lines=lines)
    if set_options:
        config = apply_overrides(config, parse_set_options(set_options), source="--set", from_string=True)
    for section in ("model", "loss", "centers", "optim"):
        if getattr(config, section) != getattr(original, section):
            raise UsageError(f"only data.* and train.* settings can change at evaluation, not {section}.*: "
                             "the model is the one the checkpoint holds")
    return config


@cli.command("score")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("audio", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write a TSV here.")
def score_command(checkpoint: Path, audio: tuple[Path, ...], out: Path | None) -> None:
    """Score your own audio files (any rate, mono or stereo; folders are searched).

    Prints one line per file: score and decision at the dev-EER threshold saved in the checkpoint.
    """
    from cbl.evaluate import expand_audio_paths, load_model, score_audio_files
    from cbl.yamlio import atomic_write_text

    loaded = load_model(checkpoint)
    rows = score_audio_files(loaded, expand_audio_paths(list(audio)))
    lines = []
    for path, score in rows:
        decision = "bonafide" if score >= loaded.threshold else "spoof"
        lines.append(f"{path}\t{score:.6f}\t{decision}")
        click.echo(lines[-1])
    click.echo(f"(threshold {loaded.threshold:.6g} = dev EER threshold of epoch {loaded.epoch})", err=True)
    if out is not None:
        atomic_write_text(out, "path\tscore\tdecision\n" + "".join(f"{line}\n" for line in lines))


def _storage(storage: str | None) -> Path:
    if storage and "://" in storage:
        raise UsageError(f"--storage {storage}: cbl keeps trial checkpoints on a filesystem; give a folder "
                         "that every node can reach (e.g. an NFS mount), not a URI")
    return Path(storage or "cbl_runs").expanduser().resolve()


def _echo_best_and_final(experiment_dir: Path, mode: str, seeds: int, split: str) -> None:
    from cbl.final_eval import export_best_config, final_evaluation, require_best

    best = require_best(experiment_dir, mode)
    params = ", ".join(f"{k}={v}" for k, v in sorted(best.params.items()))
    click.echo(f"best trial {best.trial_id}: dev EER {100 * best.best_dev_eer:.2f}% at epoch {best.best_epoch}"
               f"  ({params or 'grid point'})")
    click.echo(f"best configuration exported to {export_best_config(experiment_dir, best)}")
    click.echo(f"final evaluation of the best checkpoint on the {split} split:")
    result = final_evaluation(experiment_dir, seeds=seeds, split=split, mode=mode, echo=click.echo)
    click.echo(result.attack_table)
    click.echo(result.summary_line())


def _finish(experiment_dir: Path, final_seeds: int | None, skip_final: bool) -> None:
    """After tuner.fit(): say whether the sweep is complete; if so, best + final evaluation."""
    from cbl.sweep_store import format_status_table, read_sweep, read_trials, write_sweep

    sweep = read_sweep(experiment_dir)
    trials = read_trials(experiment_dir)
    total = sweep["total_trials"]
    trials = [t for t in trials if t.state != "lost"]  # see cbl.search._mark_lost_trials
    ended = [t for t in trials if t.state in ("finished", "stopped", "error")]
    click.echo(format_status_table(trials, total=total))
    if len(ended) < total:
        write_sweep(experiment_dir, {**sweep, "state": "interrupted"})
        click.echo(f"sweep interrupted: {len(ended)} of {total} trials ended.\n"
                   f"resume it with: cbl-search resume {experiment_dir}")
        raise SystemExit(130)
    errored = sum(t.state == "error" for t in trials)
    if errored:
        click.echo(f"{errored} trial(s) errored (retry them: cbl-search resume {experiment_dir} --retry-errored)")
    write_sweep(experiment_dir, {**sweep, "state": "finished"})
    settings = sweep["settings"]
    from cbl.search import SweepSettings

    spec = SweepSettings(**settings).space()
    if not skip_final:
        _echo_best_and_final(experiment_dir, spec.mode, final_seeds or spec.final_eval_seeds, spec.final_eval_split)
    click.echo(f"TensorBoard: tensorboard --logdir {experiment_dir}   (or: cbl-search tensorboard {experiment_dir})")


@cli.command("run")
@click.argument("space_path", metavar="SPACE.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@demo_option
@set_option
@click.option("--storage", default=None, help="Folder for experiments (default: ./cbl_runs). Shared by all nodes "
              "on a cluster.")
@click.option("--name", default=None, help="Experiment name (default: the file's name:).")
@click.option("--address", default=None, envvar="RAY_ADDRESS",
              help="Join a Ray cluster (auto, or host:port) instead of starting a private local one.")
@click.option("--num-samples", type=int, default=None, help="Override search.num_samples.")
@click.option("--final-seeds", type=click.IntRange(min=1), default=None,
              help="Retrain the best configuration with this many seeds for the final evaluation.")
@click.option("--resume", "resume_existing", is_flag=True, help="Resume the experiment if it exists unfinished.")
@click.option("--no-final-eval", is_flag=True, help="Stop after the sweep (run final-eval later).")
def run_command(space_path: Path, demo: bool, set_options: tuple[str, ...], storage: str | None, name: str | None,
                address: str | None, num_samples: int | None, final_seeds: int | None, resume_existing: bool,
                no_final_eval: bool) -> None:
    """Run a hyperparameter sweep: trials, best configuration, final evaluation."""
    from cbl.lock import experiment_lock
    from cbl.profiles import DEMO_NOTICE
    from cbl.search import prepare_sweep
    from cbl.sweep_store import SWEEP_FILE, read_sweep

    settings, spec = prepare_sweep(space_path, demo=demo, set_options=list(set_options), storage=_storage(storage),
                                   name=name, num_samples=num_samples)
    experiment_dir = Path(settings.experiment_dir)
    fresh_folder = not experiment_dir.exists() or not any(experiment_dir.iterdir())
    experiment_dir.mkdir(parents=True, exist_ok=True)
    with experiment_lock(experiment_dir):  # first: a running sweep is the reason to refuse
        resume = False
        if (experiment_dir / SWEEP_FILE).is_file():
            state = read_sweep(experiment_dir).get("state")
            if state == "finished":
                raise UsageError(f"{experiment_dir}: this experiment already finished; pick another --name "
                                 "(or look at it: cbl-search status / best / final-eval)")
            if not resume_existing:
                raise UsageError(f"{experiment_dir}: this experiment exists and is unfinished; continue it with "
                                 f"`cbl-search resume {experiment_dir}` (or run with --resume), or pick another "
                                 "--name")
            resume = True
        elif not fresh_folder and any(p.name != ".lock" for p in experiment_dir.iterdir()):
            raise UsageError(f"{experiment_dir}: folder exists and is not a cbl experiment; pick another --name")
        _sweep(settings, spec, address, resume, False, final_seeds, no_final_eval, DEMO_NOTICE if demo else None)


def _sweep(settings, spec, address, resume, retry_errored, final_seeds, no_final_eval, notice) -> None:
    """Run or resume the sweep, then finish it; the caller holds the experiment lock."""
    from cbl.search import run_sweep
    from cbl.space import total_trials

    experiment_dir = Path(settings.experiment_dir)
    if notice:
        click.echo(notice)
    click.echo(f"experiment {spec.name}: {total_trials(spec)} trials ({spec.algorithm}"
               f"{', ASHA' if spec.scheduler == 'asha' else ''}), {spec.cpu:g} CPU + {spec.gpu:g} GPU per trial"
               f"\nfolder: {experiment_dir}")
    run_sweep(settings, spec, address=address, resume=resume, retry_errored=retry_errored)
    _finish(experiment_dir, final_seeds, no_final_eval)


@cli.command("resume")
@click.argument("experiment_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--address", default=None, envvar="RAY_ADDRESS", help="Join a Ray cluster instead of a local Ray.")
@click.option("--retry-errored", is_flag=True, help="Also retry errored trials (from their last checkpoint).")
@click.option("--final-seeds", type=click.IntRange(min=1), default=None)
@click.option("--no-final-eval", is_flag=True)
def resume_command(experiment_dir: Path, address: str | None, retry_errored: bool, final_seeds: int | None,
                   no_final_eval: bool) -> None:
    """Finish an interrupted sweep (driver killed, reboot, Ctrl-C): no trial lost, none run twice."""
    from cbl.search import SweepSettings
    from cbl.sweep_store import read_sweep, require_experiment

    experiment_dir = require_experiment(experiment_dir.resolve())
    sweep = read_sweep(experiment_dir)
    settings = SweepSettings(**{**sweep["settings"], "experiment_dir": str(experiment_dir)})
    spec = settings.space()
    from cbl.lock import experiment_lock
    from cbl.profiles import DEMO_NOTICE

    with experiment_lock(experiment_dir):
        sweep = read_sweep(experiment_dir)
        if sweep.get("state") == "finished" and not retry_errored:
            click.echo(f"{experiment_dir}: the sweep already finished; nothing to resume")
            return
        _sweep(settings, spec, address, True, retry_errored, final_seeds, no_final_eval,
               DEMO_NOTICE if settings.demo else None)


@cli.command("status")
@click.argument("experiment_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def status_command(experiment_dir: Path) -> None:
    """Table of trials (state, parameters, epochs, best dev EER), best first; works while a sweep runs."""
    from cbl.sweep_store import format_status_table, read_sweep, read_trials, require_experiment

    experiment_dir = require_experiment(experiment_dir)
    sweep = read_sweep(experiment_dir)
    click.echo(f"experiment {experiment_dir.name}: {sweep.get('state', '?')}")
    click.echo(format_status_table(read_trials(experiment_dir), total=sweep.get("total_trials")))


@cli.command("best")
@click.argument("experiment_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--export", "export_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the best configuration here (default: EXPERIMENT_DIR/best_config.yaml).")
def best_command(experiment_dir: Path, export_path: Path | None) -> None:
    """The best trial by dev EER, and its configuration as YAML."""
    from cbl.final_eval import export_best_config, require_best
    from cbl.sweep_store import require_experiment

    experiment_dir = require_experiment(experiment_dir)
    best = require_best(experiment_dir)
    click.echo(f"best trial {best.trial_id}: dev EER {100 * best.best_dev_eer:.2f}% at epoch {best.best_epoch}")
    for key, value in sorted(best.params.items()):
        click.echo(f"  {key}: {value}")
    click.echo(f"checkpoint: {best.best_checkpoint}")
    click.echo(f"configuration: {export_best_config(experiment_dir, best, export_path)}")


@cli.command("final-eval")
@click.argument("experiment_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["dev", "eval"]), default="eval", show_default=True)
@click.option("--protocol", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Evaluate on this protocol instead (e.g. ASVspoof 2021 DF keys, In-the-Wild meta.csv).")
@click.option("--audio-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@click.option("--corpus", type=click.Choice(["asvspoof2019_la", "asvspoof2021_la", "asvspoof2021_df",
                                             "in_the_wild", "folder"]), default=None)
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Retrain the best configuration with this many seeds and report mean +- std.")
def final_eval_command(experiment_dir: Path, split: str, protocol: Path | None, audio_dir: Path | None,
                       corpus: str | None, seeds: int) -> None:
    """Evaluate the best checkpoint of a sweep on the eval split or another protocol."""
    from cbl.final_eval import final_evaluation
    from cbl.sweep_store import require_experiment

    experiment_dir = require_experiment(experiment_dir)
    if protocol is not None and audio_dir is None:
        raise UsageError("--protocol needs --audio-dir (the folder its utterance ids point into)")
    result = final_evaluation(experiment_dir, seeds=seeds, split=split, protocol=protocol, audio_dir=audio_dir,
                              corpus=corpus, echo=click.echo)
    click.echo(result.attack_table)
    click.echo(result.summary_line())


@cli.command("tensorboard")
@click.argument("experiment_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", type=int, default=6006, show_default=True)
@click.option("--print-only", is_flag=True, help="Print the command instead of starting TensorBoard.")
def tensorboard_command(experiment_dir: Path, port: int, print_only: bool) -> None:
    """Start TensorBoard on an experiment: one run per trial, HParams dashboard for comparing them."""
    import subprocess

    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(experiment_dir), "--port", str(port)]
    click.echo(f"tensorboard --logdir {experiment_dir} --port {port}")
    if not print_only:
        subprocess.run(command, check=False)  # a list, no shell: the path is never interpreted


@cli.command("report")
@click.argument("experiment_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report folder (default: EXPERIMENT_DIR/report).")
@click.option("--max-points", type=click.IntRange(min=10), default=2000, show_default=True,
              help="Dev utterances (a fixed random sample) embedded for the 2-D projection and the projector.")
@click.option("--no-models", is_flag=True, help="Only the sweep tables and learning curves: load no checkpoint.")
def report_command(experiment_dir: Path, out_dir: Path | None, max_points: int, no_models: bool) -> None:
    """Write report.md, report.html and figures for a sweep (works without Ray, also while it runs).

    Results and per-value tables, hyperparameter importance, learning curves; for the best
    trial and the best ce_only trial: DET curves, per-attack EER, dev embeddings (also in
    TensorBoard's projector under EXPERIMENT_DIR/projector).
    """
    from cbl.report import build_report
    from cbl.sweep_store import require_experiment

    experiment_dir = require_experiment(experiment_dir)
    files = build_report(experiment_dir, out_dir, max_points=max_points, models=not no_models, echo=click.echo)
    click.echo(f"report written: {files.markdown} and {files.html} ({len(files.figures)} figures)")
    if files.projector is not None:
        click.echo(f"embeddings for the projector: tensorboard --logdir {files.projector}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="cbl-search")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
