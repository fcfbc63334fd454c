"""The ``cbl-search`` command line: one click group; each command group lives in its own module.

Errors: our :class:`~cbl.errors.UsageError` (bad file, key, option) exits 2,
any other :class:`~cbl.errors.CblError` exits 1, both as one line without a
traceback; ``--debug`` shows the traceback instead. The command modules define
plain click commands; this module adds them to the group (none of them imports it).
"""

from __future__ import annotations

import errno
import os
from typing import Any

import click

from cbl import __version__
from cbl.cli import bench, bundle, data, prune, results, run, sweep
from cbl.errors import CblError, UsageError

__all__ = ["CblGroup", "InputError", "cli", "describe_os_error", "main"]


class InputError(click.ClickException):
    """Bad input: exit code 2 like click's usage errors, but without the usage banner."""

    exit_code = 2


def _translate(exc: BaseException) -> click.ClickException:
    if isinstance(exc, UsageError):
        return InputError(str(exc))
    if isinstance(exc, CblError):
        return click.ClickException(str(exc))
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's (CUDA) OOM by name:
        where = "GPU " if type(exc).__name__ == "OutOfMemoryError" else ""  # no torch import for --help
        return click.ClickException(
            f"out of {where}memory (try a smaller train.batch_size, with optim.grad_accum to keep the effective batch)"
        )
    if isinstance(exc, OSError):
        return click.ClickException(describe_os_error(exc))
    return click.ClickException(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")


# Storage faults a long sweep meets (full disk, quota, lost permissions, a remount read-only):
# what to say about each, after "<path>: ". Files already written stay intact (atomic writes).
_STORAGE_FAULTS = {
    errno.ENOSPC: "no space left on device; free some space, then rerun or resume (files already written are intact)",
    errno.EDQUOT: "disk quota exceeded; free some space, then rerun or resume (files already written are intact)",
    errno.EACCES: "permission denied (reading: check the file's permissions; writing: give a folder this user can "
    "write to, e.g. --storage or --out)",
    errno.EPERM: "operation not permitted (reading: check the file's permissions; writing: give a folder this user "
    "can write to, e.g. --storage or --out)",
    errno.EROFS: "read-only file system; give a writable folder (e.g. --storage or --out)",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the path first (when known), then what went wrong and what to do."""
    what = (
        (_STORAGE_FAULTS.get(exc.errno) if exc.errno is not None else None)
        or exc.strerror
        or str(exc)
        or type(exc).__name__
    )
    line = f"{exc.filename}: {what}" if exc.filename is not None else what
    return line.replace("\n", "\\n").replace("\r", "\\r")  # one line whatever the path held


class CblGroup(click.Group):
    """Turns our exceptions into one-line messages with the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
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


for module in (run, sweep, results, prune, bundle, data, bench):
    for command in module.COMMANDS:
        cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="cbl-search")
