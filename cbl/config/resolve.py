"""A run's configuration resolved from its layers, in the one order every command uses; paths; differences.

Order (later wins): dataclass defaults, the file (a config file, or a search
space's ``fixed:``), the ``--demo`` profile, the space file's own ``demo.fixed``,
the values a search trial samples, ``--set`` options, then relative paths made
absolute against the folder the command ran in. The demo profile comes after the
file so that ``--demo`` turns any experiment file into a laptop-sized pipeline
check; ``--set`` comes last so that the user always has the final word.
``cbl-search train`` and ``config`` and every trial of a sweep
(:meth:`cbl.sweep.settings.SweepSettings.trial_config`) resolve through
:func:`resolve_config`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from cbl.config.overrides import apply_overrides, config_to_dict, copy_config, load_config, parse_set_options
from cbl.config.schema import ExperimentConfig
from cbl.errors import UsageError, join_first

__all__ = [
    "DEMO_NOTICE",
    "DEMO_OVERRIDES",
    "PATH_KEYS",
    "RUNTIME_KEYS",
    "absolute_paths",
    "check_same_config",
    "config_differences",
    "looks_like_local_path",
    "resolve_config",
]

# The tiny wav2vec2 starts from random weights, so it needs far larger learning
# rates than fine-tuning a pre-trained XLS-R, and its feature encoder must learn too.
DEMO_OVERRIDES: dict[str, Any] = {
    "data.corpus": "demo",
    "data.root": "",
    "data.max_len": 16000,
    "data.eval_window": 16000,
    "model.ssl": "tiny",
    "model.freeze_feature_encoder": False,
    "model.freeze_ssl": False,
    "model.embedding_dim": 64,
    "optim.lr": 3.0e-3,
    "optim.head_lr": 3.0e-3,
    # one epoch of linear warm-up: at 3e-3 from the first step, Adam drove the random model into a state
    # whose output ignores its input (dev embeddings' mean pairwise cosine 1.00, ce_only stuck at loss 0.69
    # for 3-4 epochs, best dev EER 32%); with the warm-up ce_only reached 9.6% in the same 6 epochs
    "optim.warmup_epochs": 1,
    "train.epochs": 6,
    "train.batch_size": 16,
}


DEMO_NOTICE = (
    "demo mode: synthetic corpus and a tiny wav2vec2 with RANDOM weights - "
    "a check that the pipeline runs end to end, not a result to report"
)


def resolve_config(
    path: str | os.PathLike[str] | None = None,
    set_options: Iterable[str] = (),
    *,
    demo: bool = False,
    sampled: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
    fixed_source: str = "",
    demo_fixed: Mapping[str, Any] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> ExperimentConfig:
    """Defaults -> file (``path``, or a space's ``fixed`` from ``fixed_source``) -> demo profile -> the space's
    ``demo.fixed`` -> ``sampled`` -> ``--set`` options -> paths absolute against ``base_dir`` (when given)."""
    config = load_config(path)
    if fixed:
        config = apply_overrides(config, fixed, source=fixed_source)
    if demo:
        config = apply_overrides(config, DEMO_OVERRIDES, source="--demo")
        if demo_fixed:  # the space file's own demo block has the last word over the built-in demo profile
            config = apply_overrides(config, demo_fixed, source=f"{fixed_source} (demo.fixed)")
    if sampled:
        config = apply_overrides(config, sampled, source="search space")
    sets = parse_set_options(set_options)
    if sets:
        config = apply_overrides(config, sets, source="--set", from_string=True)
    if base_dir:
        config = absolute_paths(config, base_dir)
    return config


# keys holding a filesystem path (model.ssl only when it is written as one: ./dir, ../dir, ~/dir)
PATH_KEYS = (
    "data.root",
    "data.train_protocol",
    "data.dev_protocol",
    "data.eval_protocol",
    "train.feature_cache_dir",
    "train.frozen_dir",
)


def looks_like_local_path(name: str) -> bool:
    """``model.ssl`` written as a path (``./x``, ``~/x``, ``/x``, ``a/b/c``) rather than a hub name (``org/model``)."""
    return name.startswith((".", "~", os.sep)) or name.count("/") > 1


def absolute_paths(config: ExperimentConfig, base_dir: str | os.PathLike[str]) -> ExperimentConfig:
    """Relative path values made absolute against ``base_dir`` (the folder the command ran in).

    A sweep's trials run in their own folders (Ray changes the working directory),
    on any node: a path relative to where the user typed the command must not
    change meaning there.
    """
    new = copy_config(config)
    ssl = config.model.ssl
    # model.ssl is a hub name unless written as a path or naming a folder that exists here
    ssl_is_path = looks_like_local_path(ssl) or (bool(ssl) and os.path.isdir(os.path.join(base_dir, ssl)))
    keys = list(PATH_KEYS) + (["model.ssl"] if ssl_is_path else [])
    for key in keys:
        section, name = key.split(".", 1)
        value = getattr(getattr(new, section), name)
        if value and not os.path.isabs(os.path.expanduser(value)):
            setattr(getattr(new, section), name, os.path.normpath(os.path.join(base_dir, value)))
        elif value:
            setattr(getattr(new, section), name, os.path.expanduser(value))
    return new


# Keys that say where and how fast a run executes, not what it computes: a run may
# resume with other values (a dataset moved to another disk, another thread count).
RUNTIME_KEYS = frozenset(
    {
        "data.root",
        "data.num_workers",
        "train.num_threads",
        "train.device",
        "train.eval_batch_size",
        "train.feature_cache",
        "train.feature_cache_dir",
        "train.frozen_dir",
        "train.keep_previous_checkpoint",
    }
)


def config_differences(saved: ExperimentConfig, current: ExperimentConfig, *, ignore=RUNTIME_KEYS) -> list[str]:
    """``key: saved -> current`` for every dotted key whose value differs (keys in ``ignore`` skipped)."""
    old, new = config_to_dict(saved), config_to_dict(current)
    return [
        f"{section}.{name}: {old[section][name]!r} -> {value!r}"
        for section, fields in new.items()
        for name, value in fields.items()
        if f"{section}.{name}" not in ignore and old[section][name] != value
    ]


def check_same_config(saved: ExperimentConfig, current: ExperimentConfig, *, folder: Any, advice: str) -> None:
    """Refuse to continue a run in ``folder`` with another configuration (runtime keys aside).

    Raises :class:`UsageError`: ``<folder>: holds a run with another configuration
    (key: saved -> current; ... (+N more)); <advice>``.
    """
    differences = config_differences(saved, current)
    if differences:
        raise UsageError(
            f"{folder}: holds a run with another configuration ({join_first(differences, '; ')}); {advice}"
        )
