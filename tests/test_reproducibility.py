"""The same search-space seed gives the same sampled configurations and, on CPU, the same dev EER per trial."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cbl.cli import cli
from cbl.sweep.store import read_trials

from tiny import as_set_args

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
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(space),
            "--demo",
            "--storage",
            str(storage),
            "--name",
            name,
            "--no-final-eval",
            *as_set_args(),
            "--set",
            "centers.init_max_utterances=16",
        ],
    )
    assert result.exit_code == 0, result.output
    # one trial at a time, each writes its config.yaml once as it starts: that orders them
    trials = sorted(read_trials(storage / name), key=lambda t: (t.path / "config.yaml").stat().st_mtime_ns)
    assert len(trials) == 3 and all(t.state == "finished" for t in trials), result.output
    return [(t.params, [h["dev_eer"] for h in t.history]) for t in trials]


@pytest.mark.ray
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


@pytest.fixture
def determinism_restored(monkeypatch):
    """Leave torch's global determinism settings as this test found them."""
    import torch

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]


def test_train_deterministic_applies_the_settings_and_two_runs_agree(tmp_path, determinism_restored):
    """On CPU: the settings are applied, and two runs give identical metrics and weights (the GPU is where it
    counts)."""
    import os

    import torch

    from cbl.config import resolve_config
    from cbl.engine import apply_determinism, fit, load_checkpoint, read_history

    from tiny import TINY

    config = resolve_config(None, [*TINY, "train.deterministic=true"], demo=True)
    torch.backends.cudnn.benchmark = True  # left on by something else: the run turns it off
    fit(config, None, tmp_path / "a")
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    fit(config, None, tmp_path / "b")
    timeless = [
        [{k: v for k, v in m.items() if not k.endswith("seconds")} for m in read_history(tmp_path / run)]
        for run in ("a", "b")
    ]
    assert len(timeless[0]) == 2 and timeless[0] == timeless[1]
    a, _ = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b, _ = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert all(torch.equal(a["model"][name], b["model"][name]) for name in a["model"])
    apply_determinism(resolve_config(None, TINY, demo=True))  # a later run without it undoes the settings
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
