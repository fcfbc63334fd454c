"""Dotted keys, their coercion and checks, and the one path every value takes: :func:`apply_overrides`.

A YAML file's values, the values a search trial samples and ``--set key=value``
options all go through :func:`apply_overrides`, so an unknown key, a wrong type or
an out-of-range number gets the same one-line :class:`ConfigError` wherever it came
from. The order the layers are laid in is :func:`cbl.config.resolve.resolve_config`'s.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cbl.config.schema import CHOICES, RANGES, ExperimentConfig
from cbl.errors import ConfigError
from cbl.yamlio import LineMap, atomic_write_text, dump_yaml, load_yaml

__all__ = [
    "allowed_values",
    "apply_overrides",
    "check_key",
    "coerce_value",
    "config_from_dict",
    "config_to_dict",
    "copy_config",
    "flat_keys",
    "load_config",
    "parse_set_options",
    "save_config",
    "suggest_key",
]


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def flat_keys(config: ExperimentConfig | None = None) -> dict[str, type]:
    """Every dotted key of the experiment config with its Python type."""
    out: dict[str, type] = {}
    for section in dataclasses.fields(ExperimentConfig):
        section_cls = _field_types(ExperimentConfig)[section.name]
        for name, typ in _field_types(section_cls).items():
            out[f"{section.name}.{name}"] = typ
    return out


_KEYS = flat_keys()


def suggest_key(key: str, candidates: Iterable[str] | None = None) -> str:
    """' (did you mean 'x'?)' or '' when nothing is close."""
    pool = list(candidates if candidates is not None else _KEYS)
    close = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
    if not close:
        # a bare field name ("num_clusters") maps to its dotted key
        close = [k for k in pool if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _where(source: str | None, lines: LineMap | None, key: str) -> str:
    if not source:
        return ""
    line = lines.get(key) if lines else None
    return f"{source}:{line}: " if line else f"{source}: "


def check_key(key: str, where: str = "") -> type:
    """Return the type of a dotted key, or raise ConfigError naming it with a suggestion.

    ``where`` prefixes the message, e.g. ``"space.yaml:12: "``.
    """
    if key not in _KEYS:
        raise ConfigError(f"{where}unknown key '{key}'{suggest_key(key)}")
    return _KEYS[key]


def _parse_text(text: str, typ: type) -> Any:
    """Command-line text to a value of ``typ``; unparseable text is returned as is (and rejected later)."""
    if typ is str:
        return text
    stripped = text.strip()
    if typ is bool:
        return {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}.get(
            stripped.lower(), text
        )
    for parse in (int, float) if typ is int else (float,):
        try:
            return parse(stripped)
        except ValueError:
            continue
    return text


def coerce_value(key: str, value: Any, *, from_string: bool = False, where: str = "") -> Any:
    """Convert ``value`` to the type of ``key`` and check enum and range rules.

    ``from_string`` parses command-line text (``--set loss.alpha=2``), so
    ``true``/``2``/``1e-4`` mean what they look like.
    """
    typ = _KEYS[key]
    if from_string and isinstance(value, str):
        value = _parse_text(value, typ)
    value = _of_type(key, value, typ, where)
    if key in CHOICES and value not in CHOICES[key]:
        options = ", ".join(CHOICES[key])
        raise ConfigError(f"{where}key '{key}': unknown value {value!r}, expected one of: {options}")
    if key in RANGES:
        low, high, low_inclusive = RANGES[key]
        if low is not None and (value < low or (value == low and not low_inclusive)):
            op = ">=" if low_inclusive else ">"
            raise ConfigError(f"{where}key '{key}' is {value!r}, but must be {op} {low}")
        if high is not None and value > high:
            raise ConfigError(f"{where}key '{key}' is {value!r}, but must be <= {high}")
    return value


def _of_type(key: str, value: Any, typ: type, where: str) -> Any:
    """``value`` as a ``typ`` (an integral float as an int, an int as a float), or ConfigError naming the key."""
    expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[typ]
    bad = ConfigError(f"{where}key '{key}': expected {expected}, got {value!r}")
    if typ is bool:
        if not isinstance(value, bool):
            raise bad
    elif typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if not (isinstance(value, float) and value.is_integer()):
                raise bad
            value = int(value)
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}key '{key}': expected a finite number, got {value!r}")
    elif typ is str:
        if isinstance(value, bool) and "true" in CHOICES.get(key, ()):
            value = "true" if value else "false"  # YAML's `normalize_input: true` for an auto|true|false key
        if not isinstance(value, str):
            raise bad
    return value


def allowed_values(key: str) -> tuple[str, ...] | None:
    """The enum values of a key, or None when it is not an enum."""
    return CHOICES.get(key)


def _flatten(data: Mapping[str, Any], source: str | None, lines: LineMap | None) -> dict[str, Any]:
    """Nested ``{section: {field: v}}`` and/or dotted ``{"section.field": v}`` -> dotted dict."""
    flat: dict[str, Any] = {}
    for top, value in data.items():
        top = str(top)
        if "." in top:
            flat[top] = value
            continue
        if isinstance(value, Mapping):
            for name, inner in value.items():
                flat[f"{top}.{name}"] = inner
        else:
            where = _where(source, lines, top)
            if top in {s.name for s in dataclasses.fields(ExperimentConfig)}:
                raise ConfigError(f"{where}key '{top}': expected a mapping of settings, got {value!r}")
            raise ConfigError(f"{where}unknown key '{top}'{suggest_key(top)}")
    return flat


def apply_overrides(
    config: ExperimentConfig,
    values: Mapping[str, Any],
    *,
    source: str | None = None,
    lines: LineMap | None = None,
    from_string: bool = False,
) -> ExperimentConfig:
    """Return a copy of ``config`` with ``values`` (nested or dotted keys) applied and validated."""
    new = copy_config(config)
    for key, value in _flatten(values, source, lines).items():
        check_key(key, _where(source, lines, key))
        section, name = key.split(".", 1)
        coerced = coerce_value(key, value, from_string=from_string, where=_where(source, lines, key))
        setattr(getattr(new, section), name, coerced)
    return new


def copy_config(config: ExperimentConfig) -> ExperimentConfig:
    return config_from_dict(config_to_dict(config), validate_values=False)


def config_to_dict(config: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dict (YAML/JSON-ready)."""
    return dataclasses.asdict(config)


def config_from_dict(data: Mapping[str, Any], *, validate_values: bool = True) -> ExperimentConfig:
    """Defaults overridden by ``data`` (nested or dotted keys)."""
    if not validate_values:
        config = ExperimentConfig()
        for key, value in _flatten(data, None, None).items():
            section, name = key.split(".", 1)
            setattr(getattr(config, section), name, value)
        return config
    return apply_overrides(ExperimentConfig(), data)


def parse_set_options(items: Iterable[str]) -> dict[str, str]:
    """``["loss.alpha=2", ...]`` -> ``{"loss.alpha": "2"}``; raises ConfigError on a bad item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set loss.alpha=2.0")
        check_key(key, "--set: ")
        out[key] = value
    return out


def load_config(path: str | os.PathLike[str] | None = None) -> ExperimentConfig:
    """Defaults overridden by the YAML file at ``path`` (the full order: :func:`cbl.config.resolve_config`)."""
    config = ExperimentConfig()
    if path is not None:
        data, lines = load_yaml(path, expect_mapping=True)
        config = apply_overrides(config, data, source=str(path), lines=lines)
    return config


def save_config(config: ExperimentConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as YAML (atomically); load_config(path) gives it back."""
    return atomic_write_text(path, dump_yaml(config_to_dict(config)))
