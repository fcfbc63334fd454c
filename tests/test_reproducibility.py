"""The same search-space seed gives the same sampled configurations and, on CPU, the same dev EER per trial."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny import as_set_args

from cbl.cli import cli
from cbl.sweep_store import read_trials

SPACE = """
name: repro
space:
  loss.type: {choice: [cluster_only, combined, ce_only]}
  loss.alpha: {uniform: [0.5, 2.0], when: {loss.type: [cluster_only, combined]}}
  optim.lr: {loguniform: [5.0e-4, 3.0e-3]}
search: {algorithm: optuna, num_samples: 3, seed: 7, max_concurrent: 1}
scheduler: {name: none}
resources: {cpu: 1, gpu: 0}
"""


def sweep(space: Path, storage: Path, name: str) -> list[tuple[dict, list[float]]]:
    """Run the sweep; return (sampled parameters, dev EER per epoch) per trial, in the order they were made."""
    result = CliRunner().invoke(cli, ["run", str(space), "--demo", "--storage", str(storage), "--name", name,
                                      "--no-final-eval", *as_set_args(), "--set", "centers.init_max_utterances=16"])
    assert result.exit_code == 0, result.output
    # one trial at a time, each writes its config.yaml once as it starts: that orders them
    trials = sorted(read_trials(storage / name), key=lambda t: (t.path / "config.yaml").stat().st_mtime_ns)
    assert len(trials) == 3 and all(t.state == "finished" for t in trials), result.output
    return [(t.params, [h["dev_eer"] for h in t.history]) for t in trials]


@pytest.mark.slow  # two sweeps of three trials: about a minute on 2 cores
def test_same_seed_same_configurations_and_dev_eer(ray_session, tmp_path):
    space = tmp_path / "repro.yaml"
    space.write_text(SPACE)
    first = sweep(space, tmp_path / "runs", "first")
    second = sweep(space, tmp_path / "runs", "second")
    assert [params for params, _ in first] == [params for params, _ in second]
    assert [eers for _, eers in first] == [eers for _, eers in second]  # exactly, not approximately
    assert all(len(eers) == 2 for _, eers in first)
    assert len({str(params) for params, _ in first}) == 3  # three different configurations were sampled
