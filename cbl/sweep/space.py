"""Search-space files: schema and strict validation (sampling them: :mod:`cbl.sweep.sampling`).

A search-space file names an experiment, the metric, fixed overrides, the space
of dotted keys to search, the search algorithm, the scheduler and the resources
per trial (schema in ``search_spaces/README.md``). Everything is checked against
:mod:`cbl.config` before Ray starts, so a typo is a one-line error naming the
file, the line and the key, never a failed trial ten minutes into a sweep.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbl.config import PROTOCOL_FORMATS, ExperimentConfig, apply_overrides, check_key, coerce_value, suggest_key
from cbl.errors import ConfigError
from cbl.yamlio import LineMap, load_yaml

__all__ = [
    "ALGORITHMS",
    "DISTRIBUTIONS",
    "METRICS",
    "SCHEDULERS",
    "Param",
    "SearchSpace",
    "load_search_space",
    "parse_search_space",
]

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "int")
ALGORITHMS = ("optuna", "random", "grid")
SCHEDULERS = ("asha", "none")
METRICS = ("dev_eer",)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

_TOP_KEYS = (
    "name",
    "metric",
    "mode",
    "fixed",
    "space",
    "search",
    "scheduler",
    "resources",
    "final_eval",
    "failure",
    "checkpoints",
    "demo",
)
# Sections a `demo:` block may override; its values replace the main file's key by key.
_DEMO_SECTIONS = ("fixed", "space", "search", "scheduler", "resources", "final_eval", "checkpoints")
# --demo runs on a laptop's CPU unless the demo block asks for more.
_DEMO_RESOURCES = {"cpu": 1, "gpu": 0}
_SECTION_KEYS = {
    "search": ("algorithm", "num_samples", "seed", "max_concurrent", "tell_pruned"),
    "scheduler": ("name", "grace_period", "reduction_factor", "max_t"),
    "resources": ("cpu", "gpu"),
    "final_eval": ("seeds", "split", "corpora"),
    "failure": ("max_failures",),
    "checkpoints": ("keep_best",),
}


@dataclass(frozen=True)
class Param:
    """One searched key: its distribution, its arguments and its condition."""

    key: str
    kind: str  # one of DISTRIBUTIONS
    values: tuple[Any, ...] = ()  # choice / grid
    low: float | int | None = None  # uniform / loguniform / int
    high: float | int | None = None
    step: int | None = None  # int only
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # all must hold


@dataclass
class SearchSpace:
    """A validated search-space file."""

    name: str
    source: str
    metric: str = "dev_eer"
    mode: str = "min"
    fixed: dict[str, Any] = field(default_factory=dict)
    params: list[Param] = field(default_factory=list)
    algorithm: str = "optuna"
    num_samples: int = 16
    seed: int = 0
    max_concurrent: int = 0  # 0 = as many as resources allow
    # tell Optuna an ASHA-stopped trial was PRUNED (with its per-epoch values), not COMPLETE with a truncated
    # score: measured to find the grid's best in fewer epochs (cbl-search bench, row 5c)
    tell_pruned: bool = True
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 3.0
    max_t: int = 0  # 0 = train.epochs of the resolved config
    cpu: float = 1.0
    gpu: float = 0.0
    final_eval_seeds: int = 0  # fresh seeds the final evaluation retrains (the selection run is not one)
    final_eval_split: str = "eval"
    # corpus name -> root the final evaluation also scores the best checkpoint on (cbl.sweep.cross_corpus)
    final_eval_corpora: dict[str, str] = field(default_factory=dict)
    max_failures: int = 1
    # ended trials whose best.pt is kept (cbl.sweep.retention): the final evaluation needs the first, the
    # report the best of another loss type; 3 keeps a runner-up or two without 24 trials' worth of weights
    keep_best: int = 3

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]


class _Reader:
    """Helpers that turn a bad value into a ConfigError naming file, line and key."""

    def __init__(self, source: str, lines: LineMap):
        self.source = source
        self.lines = lines

    def where(self, path: str) -> str:
        line = self.lines.get(path)
        return f"{self.source}:{line}: " if line else f"{self.source}: "

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where(path)}{message}")

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"'{path}' must be a mapping, got {value!r}")
        return value

    def only_keys(self, data: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in data:
            if key not in allowed:
                dotted = f"{path}.{key}" if path else str(key)
                raise self.fail(
                    dotted,
                    f"unknown key '{dotted}'{suggest_key(str(key), allowed)}; expected one of: {', '.join(allowed)}",
                )

    def number(
        self, value: Any, path: str, *, integer: bool = False, low: float | None = None, low_inclusive: bool = True
    ) -> Any:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
            raise self.fail(path, f"'{path}' must be {'an integer' if integer else 'a number'}, got {value!r}")
        if low is not None and (value < low or (value == low and not low_inclusive)):
            raise self.fail(path, f"'{path}' is {value!r}, but must be {'>=' if low_inclusive else '>'} {low}")
        return value

    def choice(self, value: Any, path: str, options: tuple[str, ...]) -> str:
        if value not in options:
            raise self.fail(path, f"'{path}' is {value!r}, expected one of: {', '.join(options)}")
        return value


def load_search_space(path: str | os.PathLike[str], *, demo: bool = False) -> SearchSpace:
    """Read and validate a search-space YAML file (with its ``demo:`` block applied if ``demo``)."""
    data, lines = load_yaml(path, expect_mapping=True)
    return parse_search_space(data, source=str(path), lines=lines, demo=demo)


def _merge_demo(r: _Reader, data: Mapping[str, Any]) -> dict[str, Any]:
    """The file with its ``demo:`` block laid over it, section by section, key by key."""
    block = r.mapping(data.get("demo"), "demo")
    r.only_keys(block, _DEMO_SECTIONS, "demo")
    merged = {k: v for k, v in data.items() if k != "demo"}
    merged["resources"] = {**r.mapping(data.get("resources"), "resources"), **_DEMO_RESOURCES}
    for section, values in block.items():
        merged[section] = {**r.mapping(merged.get(section), section), **r.mapping(values, f"demo.{section}")}
        for key in r.mapping(values, f"demo.{section}"):
            # errors in a demo value should point at the demo block's line
            for path, line in list(r.lines.items()):
                if path == f"demo.{section}.{key}" or path.startswith(f"demo.{section}.{key}."):
                    r.lines[path[len("demo.") :]] = line
    return merged


def parse_search_space(
    data: Mapping[str, Any], *, source: str = "<search space>", lines: LineMap | None = None, demo: bool = False
) -> SearchSpace:
    """Validate a parsed search-space mapping (see :func:`load_search_space`)."""
    r = _Reader(source, dict(lines or {}))
    r.only_keys(data, _TOP_KEYS, "")
    if demo:
        data = _merge_demo(r, data)
    elif data.get("demo") is not None:
        # validate the demo variant now too: a typo there should not wait for --demo
        parse_search_space(data, source=source, lines=lines, demo=True)
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise r.fail("name", f"'name' must be a folder-safe name (letters, digits, _ . -), got {name!r}")
    spec = SearchSpace(name=name, source=source)
    spec.metric = r.choice(data.get("metric", "dev_eer"), "metric", METRICS)
    spec.mode = r.choice(data.get("mode", "min"), "mode", ("min", "max"))

    fixed = r.mapping(data.get("fixed"), "fixed")
    for key, value in fixed.items():
        check_key(str(key), r.where(f"fixed.{key}"))
        spec.fixed[str(key)] = coerce_value(str(key), value, where=r.where(f"fixed.{key}") + "fixed ")
    # the fixed values must also make a valid config together
    apply_overrides(ExperimentConfig(), spec.fixed, source=source)

    space = r.mapping(data.get("space"), "space")
    for key, body in space.items():
        spec.params.append(_parse_param(r, str(key), body, spec))
    _check_conditions(r, spec)

    search = r.mapping(data.get("search"), "search")
    r.only_keys(search, _SECTION_KEYS["search"], "search")
    spec.algorithm = r.choice(search.get("algorithm", "optuna"), "search.algorithm", ALGORITHMS)
    spec.num_samples = r.number(
        search.get("num_samples", 1 if spec.algorithm == "grid" else 16), "search.num_samples", integer=True, low=1
    )
    spec.seed = r.number(search.get("seed", 0), "search.seed", integer=True, low=0)
    spec.max_concurrent = r.number(search.get("max_concurrent", 0), "search.max_concurrent", integer=True, low=0)
    spec.tell_pruned = search.get("tell_pruned", True)
    if not isinstance(spec.tell_pruned, bool):
        raise r.fail("search.tell_pruned", f"expected true or false, got {spec.tell_pruned!r}")

    scheduler = r.mapping(data.get("scheduler"), "scheduler")
    r.only_keys(scheduler, _SECTION_KEYS["scheduler"], "scheduler")
    spec.scheduler = r.choice(scheduler.get("name", "asha"), "scheduler.name", SCHEDULERS)
    spec.grace_period = r.number(scheduler.get("grace_period", 1), "scheduler.grace_period", integer=True, low=1)
    spec.reduction_factor = float(
        r.number(scheduler.get("reduction_factor", 3), "scheduler.reduction_factor", low=1, low_inclusive=False)
    )
    spec.max_t = r.number(scheduler.get("max_t", 0), "scheduler.max_t", integer=True, low=0)
    if spec.max_t and spec.max_t < spec.grace_period:
        raise r.fail(
            "scheduler.max_t",
            f"'scheduler.max_t' is {spec.max_t}, but must be >= scheduler.grace_period ({spec.grace_period})",
        )

    resources = r.mapping(data.get("resources"), "resources")
    r.only_keys(resources, _SECTION_KEYS["resources"], "resources")
    spec.cpu = float(r.number(resources.get("cpu", 1), "resources.cpu", low=0, low_inclusive=False))
    spec.gpu = float(r.number(resources.get("gpu", 0), "resources.gpu", low=0))
    if spec.gpu > 1 and not float(spec.gpu).is_integer():
        raise r.fail(
            "resources.gpu",
            f"'resources.gpu' is {spec.gpu}: a fraction must be below 1 "
            "(several trials per GPU), above 1 it must be a whole number",
        )

    _parse_after_the_run(r, data, spec)
    _check_algorithm(r, spec)
    return spec


def _parse_after_the_run(r: _Reader, data: Mapping[str, Any], spec: SearchSpace) -> None:
    """The sections on what happens around the trials: ``final_eval``, ``failure``, ``checkpoints``."""
    final_eval = r.mapping(data.get("final_eval"), "final_eval")
    r.only_keys(final_eval, _SECTION_KEYS["final_eval"], "final_eval")
    spec.final_eval_seeds = r.number(final_eval.get("seeds", 0), "final_eval.seeds", integer=True, low=0)
    spec.final_eval_split = r.choice(final_eval.get("split", "eval"), "final_eval.split", ("eval", "dev"))
    spec.final_eval_corpora = _parse_corpora(r, final_eval.get("corpora"))

    failure = r.mapping(data.get("failure"), "failure")
    r.only_keys(failure, _SECTION_KEYS["failure"], "failure")
    spec.max_failures = r.number(failure.get("max_failures", 1), "failure.max_failures", integer=True, low=0)

    checkpoints = r.mapping(data.get("checkpoints"), "checkpoints")
    r.only_keys(checkpoints, _SECTION_KEYS["checkpoints"], "checkpoints")
    spec.keep_best = r.number(checkpoints.get("keep_best", 3), "checkpoints.keep_best", integer=True, low=1)


def _parse_corpora(r: _Reader, corpora: Any) -> dict[str, str]:
    """``final_eval.corpora``: corpus name (a ``data.corpus`` format) -> its root folder (``folder``: a protocol)."""
    out = {}
    for name, root in r.mapping(corpora, "final_eval.corpora").items():
        path = f"final_eval.corpora.{name}"
        if name not in PROTOCOL_FORMATS:
            raise r.fail(
                path,
                f"unknown corpus '{name}'{suggest_key(str(name), PROTOCOL_FORMATS)}; "
                f"expected one of: {', '.join(PROTOCOL_FORMATS)}",
            )
        if not isinstance(root, str) or not root.strip():
            raise r.fail(path, f"'{path}' must be the corpus's root folder (a path), got {root!r}")
        out[str(name)] = root
    return out


def _parse_param(r: _Reader, key: str, body: Any, spec: SearchSpace) -> Param:
    path = f"space.{key}"
    typ = check_key(key, r.where(path))
    if key in spec.fixed:
        raise r.fail(path, f"key '{key}' is both fixed and searched; keep one")
    if not isinstance(body, dict):
        raise r.fail(path, f"'{path}' must be a mapping like {{choice: [...]}}, got {body!r}")
    kinds = [k for k in body if k in DISTRIBUTIONS]
    extra = [k for k in body if k not in DISTRIBUTIONS and k not in ("when", "step")]
    if extra:
        raise r.fail(
            path,
            f"unknown key '{path}.{extra[0]}'{suggest_key(str(extra[0]), DISTRIBUTIONS)}; "
            f"expected one of: {', '.join(DISTRIBUTIONS)}, when",
        )
    if len(kinds) != 1:
        raise r.fail(path, f"'{path}' needs exactly one distribution ({', '.join(DISTRIBUTIONS)}), got {len(kinds)}")
    kind = kinds[0]
    arg = body[kind]
    where = r.where(f"{path}.{kind}")
    when = _parse_when(r, key, body.get("when"))
    if kind in ("choice", "grid"):
        if not isinstance(arg, list) or not arg:
            raise r.fail(f"{path}.{kind}", f"'{path}.{kind}' must be a non-empty list of values, got {arg!r}")
        values = tuple(coerce_value(key, v, where=where) for v in arg)
        if len(set(map(repr, values))) != len(values):
            raise r.fail(f"{path}.{kind}", f"'{path}.{kind}' lists a value twice: {list(arg)!r}")
        return Param(key, kind, values=values, when=when)
    return _parse_range(r, key, typ, kind, body, when)


def _parse_range(
    r: _Reader, key: str, typ: type, kind: str, body: dict[str, Any], when: tuple[tuple[str, tuple[Any, ...]], ...]
) -> Param:
    """A ``uniform``/``loguniform``/``int`` distribution: ``[low, high]`` of the key's type, and ``step`` for int."""
    path = f"space.{key}"
    arg = body[kind]
    where = r.where(f"{path}.{kind}")
    if not isinstance(arg, list) or len(arg) != 2:
        raise r.fail(f"{path}.{kind}", f"'{path}.{kind}' must be [low, high], got {arg!r}")
    if kind == "int" and typ is not int:
        raise r.fail(f"{path}.{kind}", f"key '{key}' holds a {typ.__name__}: use uniform or loguniform, not int")
    if kind in ("uniform", "loguniform") and typ is not float:
        hint = "int" if typ is int else "choice"
        raise r.fail(f"{path}.{kind}", f"key '{key}' holds a {typ.__name__}: use {hint}, not {kind}")
    low, high = (coerce_value(key, v, where=where) for v in arg)
    if low >= high:
        raise r.fail(f"{path}.{kind}", f"'{path}.{kind}' has low {low!r} >= high {high!r}; expected low < high")
    if kind == "loguniform" and low <= 0:
        raise r.fail(f"{path}.{kind}", f"'{path}.{kind}' low bound is {low!r}; loguniform needs both bounds > 0")
    step = body.get("step")
    if step is not None:
        if kind != "int":
            raise r.fail(f"{path}.step", f"'{path}.step' is only allowed with int")
        step = r.number(step, f"{path}.step", integer=True, low=1)
    return Param(key, kind, low=low, high=high, step=step, when=when)


def _parse_when(r: _Reader, key: str, when: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    path = f"space.{key}.when"
    if not isinstance(when, dict) or not when:
        raise r.fail(path, f"'{path}' must map keys to allowed values, e.g. {{loss.type: [cluster_only]}}")
    out = []
    for other, allowed in when.items():
        other = str(other)
        check_key(other, r.where(f"{path}.{other}"))
        allowed_list = allowed if isinstance(allowed, list) else [allowed]
        if not allowed_list:
            raise r.fail(f"{path}.{other}", f"'{path}.{other}' must list at least one value")
        values = tuple(coerce_value(other, v, where=r.where(f"{path}.{other}")) for v in allowed_list)
        out.append((other, values))
    return tuple(out)


def _check_conditions(r: _Reader, spec: SearchSpace) -> None:
    """Check every ``when`` names a fixed or searched key; order params so conditions come first.

    File order is kept where it already works; a parameter moves after the keys
    its condition reads, and a cycle is an error.
    """
    searched = {p.key for p in spec.params}
    for param in spec.params:
        for other, _ in param.when:
            if other == param.key:
                raise r.fail(f"space.{param.key}.when", f"key '{param.key}' cannot depend on itself")
            if other not in searched and other not in spec.fixed:
                raise r.fail(
                    f"space.{param.key}.when.{other}",
                    f"'when' of '{param.key}' names '{other}', which is neither fixed nor searched",
                )
    ordered: list[Param] = []
    placed: set[str] = set()
    pending = list(spec.params)
    while pending:
        ready = [p for p in pending if all(o in placed or o not in searched for o, _ in p.when)]
        if not ready:
            names = ", ".join(p.key for p in pending)
            raise r.fail(
                f"space.{pending[0].key}.when", f"the 'when' conditions of {names} depend on each other in a cycle"
            )
        ordered.append(ready[0])
        placed.add(ready[0].key)
        pending.remove(ready[0])
    spec.params = ordered


def _check_algorithm(r: _Reader, spec: SearchSpace) -> None:
    if spec.algorithm == "grid":
        for p in spec.params:
            if p.kind not in ("grid", "choice"):
                raise r.fail(
                    f"space.{p.key}",
                    f"search.algorithm is grid, but '{p.key}' uses {p.kind}; a grid needs grid or choice values",
                )
    else:
        for p in spec.params:
            if p.kind == "grid":
                raise r.fail(
                    f"space.{p.key}",
                    f"'{p.key}' uses grid, but search.algorithm is "
                    f"{spec.algorithm}; use choice, or set search.algorithm: grid",
                )
