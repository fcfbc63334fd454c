"""Every private attribute, function or knob of transformers, Ray and Optuna that cbl relies on, checked by shape.

setup.cfg bounds these libraries to the major versions cbl is tested with; within
them a minor release may still rename a private name. This file names each one
cbl uses (found by grepping cbl/ for ``._name`` on library objects and for
internal module layouts) and checks that it is there and behaves as cbl assumes,
so an upgrade fails here, in one place, rather than hours into a sweep.

Optuna: cbl uses only its public API (``Study.ask/tell``, ``Trial.report``,
``TrialState.PRUNED``, the samplers, distributions and fANOVA), through Ray's
OptunaSearch, whose private attributes are checked below.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from cbl.model.families import FAMILIES, SMALL, build_config

FAMILY_NAMES = ("xls-r-300m", "wav2vec2-base", "hubert-base", "wavlm-base", "data2vec-audio-base")


def _model(name: str):
    from transformers import AutoModel

    torch.manual_seed(0)
    return AutoModel.from_config(build_config(FAMILIES[name], **SMALL))


# --------------------------------------------------------------------------- transformers
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_get_feat_extract_output_lengths_is_the_conv_length_formula(name) -> None:
    """cbl.model.ssl.SSLFrontEnd.frame_lengths (frame masks, feature-cache frame counts)."""
    model = _model(name)
    lengths = torch.tensor([400, 16000, 64600])
    expected = lengths.clone()
    for kernel, stride in zip(model.config.conv_kernel, model.config.conv_stride, strict=True):
        expected = torch.div(expected - kernel, stride, rounding_mode="floor") + 1
    assert torch.equal(model._get_feat_extract_output_lengths(lengths), expected)
    assert model._get_feat_extract_output_lengths(lengths).tolist() == [1, 49, 201]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_feature_encoder_freeze_parameters(name) -> None:
    """SSLFrontEnd freezes the conv stack with ``feature_extractor._freeze_parameters()`` (HubertModel has no
    ``freeze_feature_encoder``): no gradients for its weights, none requested for the waveform."""
    model = _model(name)
    model.feature_extractor._freeze_parameters()
    assert not any(p.requires_grad for p in model.feature_extractor.parameters())
    assert model.feature_extractor._requires_grad is False


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_encoder_layout_the_layer_recorder_hooks_into(name) -> None:
    """cbl.model.ssl._LayerRecorder: ``encoder.dropout`` runs once per forward and gives the first layer its
    input; ``encoder.layers`` are the L layers, each returning its state (or a tuple starting with it); the
    encoder reads LayerDrop from the model's own config object at forward time."""
    model = _model(name).eval()
    encoder = model.encoder
    assert isinstance(encoder.dropout, torch.nn.Dropout) and isinstance(encoder.layers, torch.nn.ModuleList)
    assert len(encoder.layers) == model.config.num_hidden_layers
    assert encoder.config is model.config
    seen: dict[str, list] = {"dropout": [], "first_input": []}
    encoder.dropout.register_forward_hook(lambda _m, _a, out: seen["dropout"].append(out))
    encoder.layers[0].register_forward_hook(lambda _m, args, _o: seen["first_input"].append(args[0]))
    with torch.no_grad():
        model(torch.randn(1, 4000))
    assert len(seen["dropout"]) == 1 and seen["dropout"][0] is seen["first_input"][0]


def test_layerdrop_skips_layers_in_train_mode_reading_config_at_forward_time() -> None:
    """Why the recorder exists: in train mode transformers skips LayerDrop'd layers (and returns only the
    hidden states of the layers that ran); ``config.layerdrop`` set after construction takes effect."""
    model = _model("xls-r-300m").train()
    model.config.layerdrop = 1.0
    ran: list[int] = []
    for index, layer in enumerate(model.encoder.layers):
        layer.register_forward_hook(lambda _m, _a, _o, index=index: ran.append(index))
    out = model(torch.randn(1, 4000), output_hidden_states=True)
    assert ran == [] and len(out.hidden_states) < model.config.num_hidden_layers + 1


def test_specaugment_masks_come_from_numpy_and_read_config_at_forward_time() -> None:
    """cbl.model.ssl._numpy_draws_from_torch seeds numpy's global generator per forward: transformers'
    ``_compute_mask_indices`` must still draw from it, and the mask probability is read from the config."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

    draws = []
    for _ in range(2):
        np.random.seed(3)
        draws.append(_compute_mask_indices((2, 50), mask_prob=0.3, mask_length=5, min_masks=2))
    assert np.array_equal(draws[0], draws[1]) and draws[0].any()
    model = _model("xls-r-300m").train()  # built with mask_time_prob 0.075: it has masked_spec_embed
    hidden = torch.randn(1, 50, model.config.hidden_size)
    with torch.no_grad():
        model.config.mask_time_prob = 0.0
        assert torch.equal(model._mask_hidden_states(hidden.clone()), hidden)
        model.config.mask_time_prob = 0.9
        assert (model._mask_hidden_states(hidden.clone()) == model.masked_spec_embed).all(-1).any()


def test_cached_file_private_flags() -> None:
    """cbl.model.ssl.checkpoint_normalizes: ``cached_file(..., _raise_exceptions_for_missing_entries=False,
    _raise_exceptions_for_connection_errors=False)`` answers None for a file a repository does not have."""
    from transformers.utils import cached_file
    from transformers.utils.hub import cached_files

    parameters = inspect.signature(cached_files).parameters
    assert "_raise_exceptions_for_missing_entries" in parameters
    assert "_raise_exceptions_for_connection_errors" in parameters
    assert (
        cached_file(
            "facebook/not-a-cached-repo",
            "preprocessor_config.json",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        is None
    )


def test_logging_switches_for_quiet_loading() -> None:
    """cbl.model.ssl.quiet_transformers."""
    from transformers.utils import logging as hf_logging

    for name in (
        "get_verbosity",
        "set_verbosity",
        "set_verbosity_error",
        "is_progress_bar_enabled",
        "disable_progress_bar",
        "enable_progress_bar",
    ):
        assert callable(getattr(hf_logging, name)), name


def test_from_pretrained_reports_loading_info(tmp_path) -> None:
    """cbl.model.ssl.load_ssl_model reads ``missing_keys`` from ``output_loading_info=True``."""
    from transformers import AutoModel

    _model("wavlm-base").save_pretrained(tmp_path / "wavlm")
    model, info = AutoModel.from_pretrained(tmp_path / "wavlm", output_loading_info=True)
    assert type(model).__name__ == "WavLMModel" and set(info) >= {"missing_keys", "unexpected_keys"}
    assert not info["missing_keys"] and not info["unexpected_keys"]


# --------------------------------------------------------------------------- Ray Tune
def test_optuna_search_private_state() -> None:
    """cbl.sweep.searchers.PrunedAwareOptunaSearch reads and writes ``_ot_trials`` (Ray trial id -> optuna Trial),
    ``_ot_study`` and ``_completed_trials``; the tests read them from searcher-state pickles too."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    def space(trial):
        trial.suggest_categorical("model.pooling", ["mean", "max"])

    search = OptunaSearch(space=space, metric="dev_eer", mode="min", sampler=optuna.samplers.RandomSampler(seed=0))
    config = search.suggest("t1")
    assert config["model.pooling"] in ("mean", "max")
    assert isinstance(search._ot_study, optuna.Study)
    assert isinstance(search._ot_trials["t1"], optuna.trial.Trial)
    assert search._ot_trials["t1"].params == {"model.pooling": config["model.pooling"]}
    assert isinstance(search._completed_trials, set) and "t1" not in search._completed_trials
    search.on_trial_complete("t1", result={"dev_eer": 0.2})
    assert "t1" in search._completed_trials
    assert search._ot_study.get_trials(deepcopy=False)[0].state == optuna.trial.TrialState.COMPLETE


def test_asha_private_state() -> None:
    """cbl.sweep.asha.PersistentASHA persists ``_brackets[i]._rungs`` (a list of (milestone, {trial_id: score})) and
    reads ``_time_attr`` / ``_max_t``; cbl.bench replays ``async_hyperband._Bracket``'s rule."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.schedulers.async_hyperband import _Bracket

    scheduler = ASHAScheduler(time_attr="epoch", max_t=9, grace_period=1, reduction_factor=3)
    assert scheduler._time_attr == "epoch" and scheduler._max_t == 9
    assert len(scheduler._brackets) == 1
    rungs = scheduler._brackets[0]._rungs
    assert [milestone for milestone, _ in rungs] == [9, 3, 1] and all(recorded == {} for _, recorded in rungs)
    bracket = _Bracket(min_t=1, max_t=9, reduction_factor=3, s=0)
    assert [milestone for milestone, _ in bracket._rungs] == [9, 3, 1]


@pytest.mark.parametrize(
    "variable",
    [
        "TUNE_GLOBAL_CHECKPOINT_S",
        "TUNE_DISABLE_STRICT_METRIC_CHECKING",
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S",
    ],
)
def test_ray_tune_environment_knobs_are_still_read(variable) -> None:
    """cbl.sweep.ray_env.QUIET_RAY_ENV: a resume relies on TUNE_GLOBAL_CHECKPOINT_S (snapshots every 2 s)."""
    import ray.tune

    from cbl.sweep.ray_env import QUIET_RAY_ENV

    assert variable in QUIET_RAY_ENV
    source = Path(ray.tune.__file__).parent
    assert any(variable in path.read_text(errors="ignore") for path in source.rglob("*.py")), variable


# --------------------------------------------------------------------------- the pins
@pytest.mark.parametrize("package", ["transformers", "ray", "optuna"])
def test_installed_versions_are_within_the_pins_of_setup_cfg(package) -> None:
    """The checks above hold for the installed versions; setup.cfg must not allow a major version they miss."""
    import configparser
    from importlib.metadata import version

    from packaging.requirements import Requirement

    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    requirements = [Requirement(line) for line in parser["options"]["install_requires"].split("\n") if line.strip()]
    (requirement,) = [r for r in requirements if r.name == package]
    assert any(spec.operator == "<" for spec in requirement.specifier), f"{package} has no upper bound"
    assert version(package) in requirement.specifier, (package, version(package), str(requirement.specifier))
