"""The ``cbl-search`` command line (``app``: the group and its error handling; ``options``: shared options;
``run``, ``sweep``, ``bench``: the commands). Nothing in cbl imports it: it is the top."""

from cbl.cli.app import cli, describe_os_error, main

__all__ = ["cli", "describe_os_error", "main"]
