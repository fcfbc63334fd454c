"""What a sweep's trials share: :class:`SweepSettings` (plain data a trial rebuilds its config from) and
:func:`prepare_sweep` (every check that can be made before Ray starts)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbl.config import ExperimentConfig, resolve_config
from cbl.data.doctor import check_training_data
from cbl.engine import check_cache_config
from cbl.errors import UsageError
from cbl.sweep.cross_corpus import corpus_roots
from cbl.sweep.sampling import expand_grid
from cbl.sweep.space import SearchSpace, parse_search_space
from cbl.yamlio import load_yaml

__all__ = ["SweepSettings", "prepare_sweep"]


@dataclass
class SweepSettings:
    """Everything a trial (and ``resume``) needs to rebuild its config: plain data, JSON-safe."""

    space_data: dict[str, Any]  # the search-space file as parsed YAML
    space_source: str
    demo: bool
    set_options: list[str]
    experiment_dir: str
    num_samples: int
    base_dir: str = ""  # where the command ran: relative paths in the config are relative to it

    def space(self) -> SearchSpace:
        spec = parse_search_space(self.space_data, source=self.space_source, demo=self.demo)
        spec.num_samples = self.num_samples
        return spec

    def trial_config(self, sampled: dict[str, Any]) -> ExperimentConfig:
        """A trial's config in :func:`cbl.config.resolve_config`'s order, the space file's ``fixed`` as its file."""
        return resolve_config(
            None,
            self.set_options,
            demo=self.demo,
            sampled=sampled,
            fixed=self.space().fixed,
            fixed_source=self.space_source,
            demo_fixed=(self.space_data.get("demo") or {}).get("fixed") or {},
            base_dir=self.base_dir or None,
        )


def prepare_sweep(
    space_path: Path, *, demo: bool, set_options: list[str], storage: Path, name: str | None, num_samples: int | None
) -> tuple[SweepSettings, SearchSpace]:
    """Validate everything before Ray starts; return the settings and the parsed space."""
    data, lines = load_yaml(space_path, expect_mapping=True)
    spec = parse_search_space(data, source=str(space_path), lines=lines, demo=demo)
    if name is not None:
        data = {**data, "name": name}
        spec = parse_search_space(data, source=str(space_path), lines=lines, demo=demo)
    if num_samples is not None:
        if num_samples < 1:
            raise UsageError(f"--num-samples is {num_samples}, but must be >= 1")
        spec.num_samples = num_samples
    settings = SweepSettings(
        space_data=data,
        space_source=str(space_path),
        demo=demo,
        set_options=list(set_options),
        experiment_dir=str(storage / spec.name),
        num_samples=spec.num_samples,
        base_dir=os.getcwd(),
    )
    # every trial's config must resolve: check the fixed part and one point of each value now
    base = settings.trial_config({})
    check_cache_config(base)
    if spec.algorithm == "grid":
        for point in expand_grid(spec):
            settings.trial_config(point)
    else:
        for p in spec.params:
            for value in p.values or (p.low, p.high):
                settings.trial_config({p.key: value})
    # the data must be there before any trial starts (and the demo corpus generated once, here): the dataset
    # doctor's cheap part (layout, protocol lines, missing audio, speakers shared; the eval split stays sealed)
    check_training_data(base.data)
    corpus_roots(spec.final_eval_corpora, settings.base_dir, str(space_path))
    if spec.scheduler == "asha" and base.train.epochs < spec.grace_period:
        raise UsageError(
            f"{space_path}: train.epochs ({base.train.epochs}) is below scheduler.grace_period "
            f"({spec.grace_period}); ASHA could never stop a trial"
        )
    return settings, spec
