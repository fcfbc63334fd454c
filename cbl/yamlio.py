"""YAML reading with line numbers, YAML writing, and atomic file writes.

Only ``yaml.SafeLoader`` is used: YAML holds data, never objects. The loader also
records the line of every key so that errors can say ``file.yaml:12: ...``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cbl.errors import ConfigError

__all__ = ["LineMap", "atomic_write_bytes", "atomic_write_text", "dump_yaml", "load_yaml", "read_text_file"]

LineMap = dict[str, int]  # dotted key path -> 1-based line number

_UMASK = os.umask(0)  # read once at import (umask can only be read by setting it)
os.umask(_UMASK)


def _collect_lines(node: yaml.Node, prefix: str, out: LineMap) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            dotted = f"{prefix}.{key}" if prefix else key
            out.setdefault(dotted, key_node.start_mark.line + 1)
            _collect_lines(value_node, dotted, out)


def load_yaml(path: str | os.PathLike[str], *, expect_mapping: bool = True) -> tuple[Any, LineMap]:
    """Parse a YAML file safely; return (data, line map).

    Raises ConfigError (one line, naming the file and line) for a missing file, a
    directory, a syntax error, a tag that tries to build an object, an empty file
    when a mapping is expected, or a top level that is not a mapping.
    """
    p = Path(path)
    text = read_text_file(p, ConfigError, "YAML file", missing="no such file")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        if "could not determine a constructor" in problem:
            problem = f"YAML tag not allowed ({problem.split('tag')[-1].strip()}): files hold data only"
        raise ConfigError(f"{p}{line}: YAML error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: YAML error: {str(exc).splitlines()[0]}") from None
    lines: LineMap = {}
    if node is not None:
        _collect_lines(node, "", lines)
    if expect_mapping:
        if data is None:
            raise ConfigError(f"{p}: file is empty, expected a mapping of settings")
        if not isinstance(data, dict):
            raise ConfigError(f"{p}:1: expected a mapping of settings at the top level, got {type(data).__name__}")
    return data, lines


def read_text_file(path: Path, error: type[Exception], kind: str, *, missing: str | None = None) -> str:
    """A user's UTF-8 text file (a byte-order mark is dropped), or ``error`` with one line naming it.

    ``kind`` names what was expected ("protocol file"); ``missing`` replaces the
    default "<kind> not found" message.
    """
    if path.is_dir():
        raise error(f"{path}: is a directory, expected a {kind}")
    if not path.is_file():
        raise error(f"{path}: {missing or kind + ' not found'}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read as UTF-8 text ({exc.__class__.__name__})") from None


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def atomic_write_bytes(
    path: str | os.PathLike[str], payload: bytes, check: Callable[[str], None] | None = None
) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    ``check``: called with the temporary file's name after the fsync and before the
    rename; an exception from it leaves ``path`` as it was (and no temporary file).

    A crash, a full disk or a folder that became read-only leaves either the old
    file or the new one, never half of one, and no temporary file behind. An
    OSError (ENOSPC, EACCES, EROFS, ...) is raised again naming ``path``, since
    the bare one from ``write`` or ``fsync`` names no file.
    """
    target = Path(path)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results should read like any other file
            _write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        if check is not None:
            check(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        if tmp is not None:
            _remove_quietly(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and _names_no_result(exc, target):
            raise OSError(exc.errno, os.strerror(exc.errno), str(target)) from exc
        raise
    return target


def _names_no_result(exc: OSError, target: Path) -> bool:
    """True when the error names no file, or only our temporary one (a name the user never chose)."""
    return exc.filename is None or Path(str(exc.filename)).name.startswith(f".{target.name}.")


def _write_all(fd: int, payload: bytes) -> None:
    """``os.write`` until every byte is out (a write may be partial); the one place bytes reach the disk."""
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _remove_quietly(path: str) -> None:
    """Drop a temporary file; a folder that turned read-only may refuse, and the original error matters more."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
