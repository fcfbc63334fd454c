"""The project's exception types.

The CLI maps them to exit codes: :class:`UsageError` subclasses (bad input the
user can fix in a file or an option) exit 2, :class:`CblError` otherwise exits 1.
Every message is one sentence naming the file, line or key and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["AudioError", "CblError", "ConfigError", "DataRootError", "ProtocolError", "UsageError", "join_first"]


class CblError(Exception):
    """A runtime failure with a message meant for the user (CLI exit code 1)."""


class UsageError(CblError):
    """Bad input the user must fix (CLI exit code 2).

    The message is kept to one line whatever the input held: a key or a protocol
    field with a line break in it is shown escaped.
    """

    def __init__(self, message: str = "", *args: object) -> None:
        one_line = "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in str(message))
        super().__init__(one_line, *args)


class ConfigError(UsageError, ValueError):
    """A config or search-space file, or a --set option, is invalid."""


class ProtocolError(UsageError, ValueError):
    """A protocol file is malformed or inconsistent with its audio folder."""


class DataRootError(UsageError):
    """No dataset is configured, or its folder does not exist."""


class AudioError(CblError, ValueError):
    """An audio file is empty, unreadable or holds non-finite samples."""


def join_first(items: Sequence[str], sep: str = ", ", limit: int = 5) -> str:
    """The first ``limit`` items joined by ``sep``, then ``(+N more)``: how a one-line message names many things."""
    shown = sep.join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
