"""Experiment config: defaults, loading order, validation messages, round trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cbl.config import (
    DEMO_OVERRIDES,
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    parse_set_options,
    resolve_config,
    save_config,
)


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_match_the_seed():
    c = ExperimentConfig()
    assert c.loss.num_clusters == 10
    assert c.loss.alpha == 0.5  # the seed's 1.0 halved: below 1 / K^(1/p) the loss cannot fall by moving everything
    assert c.centers.method == "kmeans" and c.centers.refresh_every == 1
    assert c.loss.type == "cluster_only"
    assert c.model.embedding_dim == 256
    assert c.data.max_len == 64600


def test_file_then_set_order(tmp_path):
    path = write(tmp_path, "loss:\n  num_clusters: 5\n  alpha: 2.0\nmodel.pooling: max\n")
    c = resolve_config(path, ["loss.alpha=0.5", "train.bf16=false", "optim.lr=1e-4"])
    assert c.loss.num_clusters == 5  # from the file
    assert c.loss.alpha == 0.5  # --set wins over the file
    assert c.model.pooling == "max"  # dotted keys at top level work too
    assert c.train.bf16 is False and isinstance(c.train.bf16, bool)
    assert c.optim.lr == pytest.approx(1e-4) and isinstance(c.optim.lr, float)


def test_set_values_are_parsed_to_the_field_type():
    c = resolve_config(None, ["loss.num_clusters=15", "loss.alpha=2", "data.root=/data/LA", "model.ssl=123"])
    assert c.loss.num_clusters == 15 and isinstance(c.loss.num_clusters, int)
    assert c.loss.alpha == 2.0 and isinstance(c.loss.alpha, float)
    assert c.data.root == "/data/LA"
    assert c.model.ssl == "123"  # a string field keeps the text as written


def test_demo_profile_comes_after_the_file_and_before_set(tmp_path):
    path = write(tmp_path, "model:\n  ssl: facebook/wav2vec2-xls-r-300m\ntrain:\n  epochs: 50\n")
    c = resolve_config(path, ["train.epochs=2"], demo=True)
    assert c.model.ssl == "tiny" and c.data.corpus == "demo"
    assert c.train.epochs == 2
    assert resolve_config(path, demo=True).train.epochs == DEMO_OVERRIDES["train.epochs"]


@pytest.mark.parametrize(
    "text, match",
    [
        (
            "loss:\n  num_cluster: 5\n",
            r"c\.yaml:2: unknown key 'loss\.num_cluster' \(did you mean 'loss\.num_clusters'\?\)",
        ),
        ("los:\n  alpha: 1\n", r"c\.yaml:2: unknown key 'los\.alpha' \(did you mean 'loss\.alpha'\?\)"),
        ("loss:\n  num_clusters: 0\n", r"c\.yaml:2: key 'loss\.num_clusters' is 0, but must be >= 1"),
        ("loss:\n  alpha: -1\n", r"key 'loss\.alpha' is -1\.0, but must be >= 0"),
        ("optim:\n  lr: 0\n", r"key 'optim\.lr' is 0\.0, but must be > 0"),
        ("loss:\n  num_clusters: ten\n", r"key 'loss\.num_clusters': expected an integer, got 'ten'"),
        ("loss:\n  num_clusters: 2.5\n", r"expected an integer, got 2\.5"),
        ("train:\n  bf16: 'yes'\n", r"key 'train\.bf16': expected true or false"),
        (
            "model:\n  pooling: mena\n",
            r"key 'model\.pooling': unknown value 'mena', expected one of: mean, max, attention",
        ),
        ("loss:\n  type: cluster\n", r"unknown value 'cluster', expected one of: cluster_only, combined, ce_only"),
        ("centers:\n  method: dbscan\n", r"expected one of: kmeans, online"),
        ("data:\n  corpus: asvspoof2017\n", r"key 'data\.corpus': unknown value 'asvspoof2017'"),
        ("loss: 3\n", r"key 'loss': expected a mapping of settings"),
        ("loss:\n  alpha: .nan\n", r"expected a finite number"),
    ],
)
def test_validation_errors_name_file_line_key_and_expectation(tmp_path, text, match):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


@pytest.mark.parametrize(
    "text, match",
    [
        ("", r"file is empty, expected a mapping"),
        ("- a\n- b\n", r":1: expected a mapping of settings at the top level, got list"),
        ("loss: {alpha: [1\n", r"c\.yaml:2: YAML error"),
        ("x: !!python/object/apply:os.system ['echo pwned']\n", r"YAML tag not allowed"),
    ],
)
def test_bad_yaml_files(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, expected a YAML file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "item, match",
    [
        ("loss.alpha", r"expected KEY=VALUE"),
        ("=3", r"expected KEY=VALUE"),
        ("loss.alpah=3", r"--set: unknown key 'loss\.alpah' \(did you mean 'loss\.alpha'\?\)"),
        ("num_clusters=3", r"did you mean 'loss\.num_clusters'"),
    ],
)
def test_bad_set_options(item, match):
    with pytest.raises(ConfigError, match=match):
        parse_set_options([item])


def test_bad_set_value_names_the_option():
    with pytest.raises(ConfigError, match=r"--set: key 'loss\.alpha': expected a number, got 'big'"):
        resolve_config(None, ["loss.alpha=big"])


def test_round_trip(tmp_path):
    c = apply_overrides(
        ExperimentConfig(),
        {"loss.alpha": 2.5, "model.ssl": "/models/xlsr", "data.root": "", "train.bf16": False, "optim.lr": 3e-6},
    )
    path = save_config(c, tmp_path / "resolved.yaml")
    again = load_config(path)
    assert again == c
    assert config_to_dict(again) == config_to_dict(c)
    # writing it again gives the same bytes (stable order)
    assert save_config(again, tmp_path / "again.yaml").read_text() == path.read_text()


def test_overrides_do_not_mutate_the_input():
    base = ExperimentConfig()
    apply_overrides(base, {"loss.alpha": 3.0})
    assert base.loss.alpha == 0.5


def test_absolute_paths_resolves_relative_path_keys_only():
    from cbl.config import absolute_paths, apply_overrides

    config = apply_overrides(
        ExperimentConfig(),
        {
            "data.root": "data/LA",
            "data.dev_protocol": "/abs/dev.txt",
            "train.feature_cache_dir": "~/cache",
            "model.ssl": "./my_xlsr",
        },
    )
    out = absolute_paths(config, "/work/here")
    assert out.data.root == "/work/here/data/LA" and out.data.dev_protocol == "/abs/dev.txt"
    assert out.train.feature_cache_dir == os.path.expanduser("~/cache") and out.model.ssl == "/work/here/my_xlsr"
    assert out.data.train_protocol == ""  # empty stays empty
    hub = absolute_paths(apply_overrides(ExperimentConfig(), {"model.ssl": "facebook/wav2vec2-base"}), "/x")
    assert hub.model.ssl == "facebook/wav2vec2-base"  # a hub name is not a path
    assert config.data.root == "data/LA"  # a copy: the input is untouched
    deep = absolute_paths(apply_overrides(ExperimentConfig(), {"model.ssl": "models/xlsr/300m"}), "/x")
    assert deep.model.ssl == "/x/models/xlsr/300m"  # two slashes: a local path, as load_wav2vec2 reads it


def test_a_one_slash_model_folder_that_exists_is_a_path(tmp_path):
    from cbl.config import absolute_paths, apply_overrides

    (tmp_path / "models" / "xlsr").mkdir(parents=True)
    config = apply_overrides(ExperimentConfig(), {"model.ssl": "models/xlsr"})
    assert absolute_paths(config, str(tmp_path)).model.ssl == str(tmp_path / "models" / "xlsr")
