"""Search-space files: the shipped files load, every kind of bad file gets a clear error, sampling honours `when`."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from cbl.config import ConfigError
from cbl.sweep.sampling import expand_grid, suggest, total_trials
from cbl.sweep.space import load_search_space

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["ablation", "num_clusters", "alpha", "pooling", "loss_type", "head_only"])
@pytest.mark.parametrize("demo", [False, True])
def test_shipped_files_load(name, demo):
    spec = load_search_space(SPACES / f"{name}.yaml", demo=demo)
    assert spec.name == name
    assert spec.metric == "dev_eer" and spec.mode == "min"
    if name == "ablation":
        assert spec.algorithm == "optuna" and spec.scheduler == "asha"
        assert set(spec.keys) == {"loss.type", "loss.num_clusters", "loss.alpha", "model.pooling", "optim.lr"}
    elif name == "head_only":
        assert spec.algorithm == "optuna" and spec.fixed["train.feature_cache"] is True
        assert spec.fixed["model.freeze_ssl"] is True and spec.fixed["data.train_crop"] == "fixed"
    else:
        assert spec.algorithm == "grid"


def test_checkpoints_keep_best_defaults_to_three_and_is_read(tmp_path):
    assert load_search_space(write(tmp_path, "name: x\n")).keep_best == 3
    assert load_search_space(write(tmp_path, "checkpoints: {keep_best: 5}\n")).keep_best == 5


def test_single_ablation_grids_are_the_seed_values():
    grids = {
        n: expand_grid(load_search_space(SPACES / f"{n}.yaml"))
        for n in ["num_clusters", "alpha", "pooling", "loss_type"]
    }
    assert [g["loss.num_clusters"] for g in grids["num_clusters"]] == [5, 10, 15, 20]
    # alpha: the seed's 0.5-5 cut to where the loss is stable, below 1 / K^(1/p) (see search_spaces/alpha.yaml)
    assert [g["loss.alpha"] for g in grids["alpha"]] == [0.125, 0.25, 0.5, 0.75]
    assert [g["model.pooling"] for g in grids["pooling"]] == ["mean", "max", "attention"]
    assert [g["loss.type"] for g in grids["loss_type"]] == ["cluster_only", "combined", "ce_only"]


def test_demo_block_overrides_only_in_demo_mode():
    normal = load_search_space(SPACES / "ablation.yaml")
    demo = load_search_space(SPACES / "ablation.yaml", demo=True)
    lr = {p.key: p for p in normal.params}["optim.lr"]
    demo_lr = {p.key: p for p in demo.params}["optim.lr"]
    assert (lr.low, lr.high) == (1e-6, 1e-4)
    assert (demo_lr.low, demo_lr.high) == (5e-4, 3e-3)
    assert normal.num_samples == 24 and demo.num_samples == 12
    assert normal.gpu == 0.5 and demo.gpu == 0.0  # the demo runs on a laptop CPU


def test_conditional_keys_are_not_sampled_for_ce_only():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_search_space(SPACES / "ablation.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_types = set()
    for _ in range(40):
        trial = study.ask()
        values = suggest(trial, spec)
        study.tell(trial, 0.5)
        seen_types.add(values["loss.type"])
        cluster = values["loss.type"] in ("cluster_only", "combined")
        assert ("loss.num_clusters" in values) == cluster
        assert ("loss.alpha" in values) == cluster
        assert 1e-6 <= values["optim.lr"] <= 1e-4
    assert seen_types == {"cluster_only", "combined", "ce_only"}


def test_seeded_sampling_repeats():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_search_space(SPACES / "ablation.yaml")

    def run() -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3))
        out = []
        for i in range(12):
            trial = study.ask()
            out.append(suggest(trial, spec))
            study.tell(trial, float(i % 5))
        return out

    assert run() == run()


def test_grid_with_conditions_removes_duplicates(tmp_path):
    spec = load_search_space(
        write(
            tmp_path,
            """
space:
  loss.type: {grid: [cluster_only, ce_only]}
  loss.num_clusters: {grid: [5, 10], when: {loss.type: cluster_only}}
search: {algorithm: grid, num_samples: 2}
""",
        )
    )
    grid = expand_grid(spec)
    assert grid == [
        {"loss.type": "cluster_only", "loss.num_clusters": 5},
        {"loss.type": "cluster_only", "loss.num_clusters": 10},
        {"loss.type": "ce_only"},
    ]
    assert total_trials(spec) == 6


def test_condition_order_does_not_depend_on_file_order(tmp_path):
    spec = load_search_space(
        write(
            tmp_path,
            """
space:
  loss.alpha: {choice: [1.0, 2.0], when: {loss.type: [cluster_only]}}
  loss.type: {choice: [cluster_only, ce_only]}
""",
        )
    )
    assert spec.keys == ["loss.type", "loss.alpha"]


def test_when_on_a_fixed_key(tmp_path):
    spec = load_search_space(
        write(
            tmp_path,
            """
fixed: {loss.type: ce_only}
space:
  loss.alpha: {grid: [1.0, 2.0], when: {loss.type: [cluster_only]}}
  model.pooling: {grid: [mean, max]}
search: {algorithm: grid}
""",
        )
    )
    assert expand_grid(spec) == [{"model.pooling": "mean"}, {"model.pooling": "max"}]


@pytest.mark.parametrize(
    "text, match",
    [
        (
            "space:\n  loss.num_cluster: {choice: [5]}\n",
            r"space\.yaml:2: unknown key 'loss\.num_cluster' \(did you mean 'loss\.num_clusters'\?\)",
        ),
        ("fixed:\n  train.epoch: 3\n", r"space\.yaml:2: unknown key 'train\.epoch' \(did you mean 'train\.epochs'\?\)"),
        ("fixed:\n  train.epochs: 0\n", r"space\.yaml:2: fixed key 'train\.epochs' is 0, but must be >= 1"),
        (
            "space:\n  loss.num_clusters: {choice: []}\n",
            r"space\.yaml:2: 'space\.loss\.num_clusters\.choice' must be a non-empty list",
        ),
        ("space:\n  loss.num_clusters: {choice: [5, 0]}\n", r"key 'loss\.num_clusters' is 0, but must be >= 1"),
        (
            "space:\n  model.pooling: {choice: [mean, avg]}\n",
            r"unknown value 'avg', expected one of: mean, max, attention",
        ),
        ("space:\n  loss.alpha: {uniform: [2.0, 1.0]}\n", r"low 2\.0 >= high 1\.0; expected low < high"),
        ("space:\n  optim.lr: {loguniform: [0.0, 1.0e-3]}\n", r"(loguniform needs both bounds > 0|must be > 0)"),
        ("space:\n  loss.alpha: {loguniform: [-1.0, 1.0]}\n", r"must be >= 0|loguniform needs both bounds > 0"),
        ("space:\n  loss.alpha: {uniform: [1.0]}\n", r"must be \[low, high\]"),
        ("space:\n  loss.num_clusters: {uniform: [1, 5]}\n", r"holds a int: use int, not uniform"),
        ("space:\n  loss.alpha: {int: [1, 5]}\n", r"holds a float: use uniform or loguniform, not int"),
        ("space:\n  loss.alpha: {choice: [1.0], uniform: [0.0, 1.0]}\n", r"needs exactly one distribution"),
        (
            "space:\n  loss.alpha: {choise: [1.0]}\n",
            r"unknown key 'space\.loss\.alpha\.choise' \(did you mean 'choice'\?\)",
        ),
        ("space:\n  loss.alpha: 1.0\n", r"must be a mapping like \{choice"),
        (
            "space:\n  loss.alpha: {choice: [1.0], when: {loss.tpye: [ce_only]}}\n",
            r"unknown key 'loss\.tpye' \(did you mean 'loss\.type'\?\)",
        ),
        ("space:\n  loss.alpha: {choice: [1.0], when: {loss.type: [cluster]}}\n", r"unknown value 'cluster'"),
        (
            "space:\n  loss.alpha: {choice: [1.0], when: {model.pooling: [mean]}}\n",
            r"names 'model\.pooling', which is neither fixed nor searched",
        ),
        (
            "space:\n  loss.alpha: {choice: [1.0], when: {loss.margin: [0.1]}}\n"
            "  loss.margin: {choice: [0.1], when: {loss.alpha: [1.0]}}\n",
            r"depend on each other in a cycle",
        ),
        (
            "space:\n  loss.alpha: {grid: [1.0, 2.0]}\nsearch: {algorithm: optuna}\n",
            r"uses grid, but search\.algorithm is optuna",
        ),
        (
            "space:\n  optim.lr: {loguniform: [1.0e-5, 1.0e-3]}\nsearch: {algorithm: grid}\n",
            r"search\.algorithm is grid, but 'optim\.lr' uses loguniform",
        ),
        (
            "search: {algorithm: hyperopt}\n",
            r"'search\.algorithm' is 'hyperopt', expected one of: optuna, random, grid",
        ),
        ("search: {num_samples: 0}\n", r"'search\.num_samples' is 0, but must be >= 1"),
        ("search: {num_sample: 3}\n", r"unknown key 'search\.num_sample' \(did you mean 'num_samples'\?\)"),
        ("scheduler: {name: asha, reduction_factor: 1}\n", r"'scheduler\.reduction_factor' is 1, but must be > 1"),
        (
            "scheduler: {name: asha, grace_period: 3, max_t: 2}\n",
            r"'scheduler\.max_t' is 2, but must be >= scheduler\.grace_period \(3\)",
        ),
        ("resources: {gpu: -1}\n", r"'resources\.gpu' is -1, but must be >= 0"),
        ("resources: {gpu: 1.5}\n", r"a fraction must be below 1"),
        ("resources: {cpu: 0}\n", r"'resources\.cpu' is 0, but must be > 0"),
        ("metric: dev_acc\n", r"'metric' is 'dev_acc', expected one of: dev_eer"),
        ("name: x\ncheckpoints:\n  keep_best: 0\n", r"space\.yaml:3: 'checkpoints\.keep_best' is 0, but must be >= 1"),
        ("checkpoints: {keep_best: 2.5}\n", r"space\.yaml:1: 'checkpoints\.keep_best' must be an integer, got 2\.5"),
        ("checkpoints: {keep_bset: 2}\n", r"unknown key 'checkpoints\.keep_bset' \(did you mean 'keep_best'\?\)"),
        ("nmae: x\n", r"unknown key 'nmae' \(did you mean 'name'\?\)"),
        ("name: ../escape\n", r"'name' must be a folder-safe name"),
        ("space: [1, 2]\n", r"'space' must be a mapping"),
        ("fixed: {loss.alpha: 2.0}\nspace:\n  loss.alpha: {choice: [1.0]}\n", r"is both fixed and searched"),
        ("demo:\n  space:\n    optim.lr: {loguniform: [1.0, 0.5]}\n", r"space\.yaml:3: .*low 1\.0 >= high 0\.5"),
        ("demo:\n  serch: {}\n", r"unknown key 'demo\.serch'"),
        ("", r"file is empty"),
        ("space: {a: [1\n", r"space\.yaml:2: YAML error"),
        ("name: !!python/object/new:os.system [ls]\n", r"YAML tag not allowed"),
    ],
)
def test_bad_search_space_files(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_search_space(write(tmp_path, text))


def test_directory_given_as_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_search_space(tmp_path)
