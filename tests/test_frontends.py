"""Every speech SSL family through the path a downloaded checkpoint takes: loading, layer selection, normalisation.

Each family is a small random-weight model with its checkpoint's published layout
(cbl.model.families: conv norm, stable layer norm, LayerDrop, SpecAugment; fewer
and narrower layers), saved with ``save_pretrained`` and given to cbl as
``model.ssl=FOLDER``.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from cbl.config import ConfigError, ExperimentConfig, ModelConfig, apply_overrides
from cbl.errors import CblError
from cbl.model import SSLFrontEnd, build_model, normalize_waveform
from cbl.model.families import FAMILIES, SMALL, build_config, save_random

torch.set_num_threads(1)

# the class transformers' AutoModel must build for each family (what the checkpoint's model_type names)
CLASSES = {
    "xls-r-300m": "Wav2Vec2Model",
    "wav2vec2-base": "Wav2Vec2Model",
    "hubert-base": "HubertModel",
    "wavlm-base": "WavLMModel",
    "wavlm-large": "WavLMModel",
    "data2vec-audio-base": "Data2VecAudioModel",
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {
        name: save_random(family, root / name, seed=index, **SMALL)
        for index, (name, family) in enumerate(FAMILIES.items())
    }


def waveform(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed)) * 0.1


# --------------------------------------------------------------------------- published layouts
def test_family_facts_are_the_published_layouts() -> None:
    """The flags that decide what cbl must do differently, as the checkpoints publish them."""
    xlsr = build_config(FAMILIES["xls-r-300m"])
    assert (xlsr.feat_extract_norm, xlsr.do_stable_layer_norm, xlsr.layerdrop, xlsr.mask_time_prob) == (
        "layer",
        True,
        0.1,
        0.075,
    )
    assert (xlsr.hidden_size, xlsr.num_hidden_layers, xlsr.num_attention_heads) == (1024, 24, 16)
    base = build_config(FAMILIES["wav2vec2-base"])
    assert (base.feat_extract_norm, base.do_stable_layer_norm) == ("group", False)
    assert build_config(FAMILIES["hubert-base"]).feat_extract_norm == "group"
    large = build_config(FAMILIES["wavlm-large"])
    assert (large.feat_extract_norm, large.do_stable_layer_norm, large.num_buckets) == ("layer", True, 320)
    small = build_config(FAMILIES["wavlm-large"], **SMALL)
    assert (small.hidden_size, small.num_hidden_layers, small.do_stable_layer_norm, small.layerdrop) == (
        32,
        3,
        True,
        0.1,
    )


# --------------------------------------------------------------------------- 1. one loading path
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_loads_as_its_own_class_with_every_weight(folders, name, caplog) -> None:
    from transformers import AutoModel

    saved = AutoModel.from_pretrained(folders[name])
    with caplog.at_level(logging.WARNING, logger="cbl.model.loading"):
        model = build_model(ModelConfig(ssl=str(folders[name]), embedding_dim=8))
    ssl = model.frontend.ssl
    assert type(ssl).__name__ == CLASSES[name] and not model.is_random_init
    assert not [r for r in caplog.records if "start random" in r.getMessage()]  # no MISSING weights
    ours, theirs = ssl.state_dict(), saved.state_dict()
    assert ours.keys() == theirs.keys()  # no UNEXPECTED weights left behind (WavLM's relative position bias)
    for key, tensor in theirs.items():
        assert torch.equal(ours[key], tensor), key
    if CLASSES[name] == "WavLMModel":
        assert "encoder.layers.0.attention.rel_attn_embed.weight" in ours


def test_a_model_that_is_not_a_speech_encoder_is_one_line_naming_its_type(tmp_path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "bert"
    )
    with pytest.raises(
        CblError,
        match=r"is a 'bert' model, not a speech SSL encoder cbl can fine-tune \(supported "
        r"model types: wav2vec2, hubert, wavlm, data2vec-audio\)$",
    ):
        build_model(ModelConfig(ssl=str(tmp_path / "bert")))


def test_missing_weights_are_named_in_one_warning(tmp_path, caplog) -> None:
    from safetensors.torch import load_file, save_file

    folder = save_random(FAMILIES["xls-r-300m"], tmp_path / "xlsr", **SMALL)
    weights = load_file(folder / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if "encoder.layers.2." not in k},
        folder / "model.safetensors",
        metadata={"format": "pt"},
    )
    with caplog.at_level(logging.WARNING, logger="cbl.model.loading"):
        SSLFrontEnd(str(folder))
    warnings = [r.getMessage() for r in caplog.records if "start random" in r.getMessage()]
    assert len(warnings) == 1 and "encoder.layers.2." in warnings[0]


# --------------------------------------------------------------------------- fine-tuning settings
def test_cbl_settings_replace_the_checkpoints_layerdrop_and_specaugment(folders) -> None:
    default = SSLFrontEnd(str(folders["xls-r-300m"]))
    assert (default.ssl.config.layerdrop, default.ssl.config.mask_time_prob) == (0.0, 0.0)  # cbl's defaults
    assert not default.ssl.config.apply_spec_augment
    chosen = SSLFrontEnd(str(folders["xls-r-300m"]), layerdrop=0.1, mask_time_prob=0.075, mask_feature_prob=0.01)
    config = chosen.ssl.config
    assert (config.layerdrop, config.mask_time_prob, config.mask_feature_prob, config.apply_spec_augment) == (
        0.1,
        0.075,
        0.01,
        True,
    )
    assert hasattr(chosen.ssl, "masked_spec_embed")  # SpecAugment's learnt mask vector exists to be trained


def test_tiny_keeps_no_layerdrop_no_masking_and_no_dropout() -> None:
    config = SSLFrontEnd("tiny").ssl.config
    assert (config.layerdrop, config.mask_time_prob, config.mask_feature_prob) == (0.0, 0.0, 0.0)
    assert (config.hidden_dropout, config.attention_dropout, config.activation_dropout) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model.layerdrop", 1.5, "key 'model.layerdrop' is 1.5, but must be <= 1.0"),
        ("model.mask_time_prob", -0.1, "key 'model.mask_time_prob' is -0.1, but must be >= 0"),
        (
            "model.normalize_input",
            "yes",
            ("key 'model.normalize_input': unknown value 'yes', expected one of: auto, true, false"),
        ),
    ],
)
def test_fine_tuning_keys_are_validated(key, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(ExperimentConfig(), {key: value})


def test_normalize_input_accepts_a_yaml_boolean() -> None:
    assert apply_overrides(ExperimentConfig(), {"model.normalize_input": True}).model.normalize_input == "true"
    assert apply_overrides(ExperimentConfig(), {"model.normalize_input": False}).model.normalize_input == "false"


# --------------------------------------------------------------------------- 2. exact layer selection
class LayerProbe:
    """Test-side hooks: which layers ran in a forward, each one's input and output (run before cbl's own)."""

    def __init__(self, encoder) -> None:
        self.inputs, self.outputs = {}, {}
        for position, layer in enumerate(encoder.layers, start=1):
            layer.register_forward_hook(self._hook(position), prepend=True)

    def _hook(self, position):
        def record(_module, args, output):
            self.inputs[position] = args[0].detach().clone()
            self.outputs[position] = (output[0] if isinstance(output, tuple) else output).detach().clone()

        return record

    def clear(self) -> None:
        self.inputs.clear()
        self.outputs.clear()


def _train_mode_frontend(folder, **kwargs) -> tuple[SSLFrontEnd, LayerProbe]:
    frontend = SSLFrontEnd(str(folder), layerdrop=0.5, freeze_feature_encoder=False, **kwargs).train()
    return frontend, LayerProbe(frontend.ssl.encoder)


@pytest.mark.parametrize("name", ["xls-r-300m", "wavlm-base"])
def test_weighted_always_sees_every_layer_and_a_skipped_layer_is_its_input(folders, name) -> None:
    frontend, probe = _train_mode_frontend(folders[name], layer_mode="weighted")
    layers = frontend.num_hidden_states - 1
    skipped_any = False
    for seed in range(6):
        torch.manual_seed(seed)
        probe.clear()
        frames, _ = frontend(waveform(2, 6000, seed))  # through select: the einsum sees L+1 states
        frames.sum().backward()
        torch.manual_seed(seed)
        probe.clear()
        stacked, _ = frontend.hidden(waveform(2, 6000, seed))
        assert stacked.shape[2] == layers + 1
        ran = sorted(probe.outputs)
        skipped_any |= len(ran) < layers
        first = ran[0] if ran else None
        if first is not None:  # hidden state 0 is the first layer's input (every layer below it was skipped)
            assert torch.allclose(stacked[:, :, 0], probe.inputs[first])
        for position in range(1, layers + 1):
            expected = probe.outputs[position] if position in probe.outputs else stacked[:, :, position - 1]
            assert torch.allclose(stacked[:, :, position], expected), (seed, position)
    assert skipped_any  # LayerDrop 0.5 did skip layers in train mode, which is what this test is about


@pytest.mark.parametrize("index", [0, 1, 2, -1])
def test_index_is_always_that_layer_and_nothing_above_it_runs(folders, index) -> None:
    frontend, probe = _train_mode_frontend(folders["xls-r-300m"], layer_mode="index", layer_index=index)
    layers = frontend.num_hidden_states - 1
    position = index % (layers + 1)
    for seed in range(6):
        torch.manual_seed(seed)
        probe.clear()
        states, _ = frontend.hidden(waveform(2, 6000, seed))
        assert all(p <= position for p in probe.outputs)  # layers above k are not run
        ran = sorted(probe.outputs)
        if ran and ran[-1] == position:  # layer k ran: its output
            assert torch.allclose(states, probe.outputs[position])
        elif ran:  # layer k was skipped: its input, the output of the last layer below it that ran
            assert torch.allclose(states, probe.outputs[ran[-1]])


def test_index_matches_transformers_hidden_states_when_nothing_is_skipped(folders) -> None:
    """In eval mode (no LayerDrop) hidden state k is transformers' hidden_states[k], for pre- and post-LN."""
    for name in ("xls-r-300m", "wav2vec2-base"):
        for index in range(4):
            frontend = SSLFrontEnd(
                str(folders[name]), layer_mode="index", layer_index=index, normalize_input="false"
            ).eval()
            with torch.no_grad():
                ours, _ = frontend.hidden(waveform(1, 6000))
                theirs = frontend.ssl(waveform(1, 6000), output_hidden_states=True)
            assert torch.allclose(ours, theirs.hidden_states[index], atol=1e-6), (name, index)
        last = SSLFrontEnd(str(folders[name]), layer_mode="last", normalize_input="false").eval()
        with torch.no_grad():
            assert torch.allclose(last.hidden(waveform(1, 6000))[0], theirs.last_hidden_state, atol=1e-6)
        if name == "xls-r-300m":  # pre-LN: `last` is after the final layer norm, index -1 (= L) before it
            assert not torch.allclose(theirs.last_hidden_state, theirs.hidden_states[-1])


def test_layerdrop_zero_runs_every_layer_in_train_mode(folders) -> None:
    frontend = SSLFrontEnd(str(folders["xls-r-300m"]), layer_mode="weighted").train()
    probe = LayerProbe(frontend.ssl.encoder)
    for seed in range(3):
        torch.manual_seed(seed)
        probe.clear()
        frontend.hidden(waveform(1, 6000, seed))
        assert sorted(probe.outputs) == [1, 2, 3]


# --------------------------------------------------------------------------- 3. input normalisation
def test_normalisation_is_the_feature_extractors_with_padding_excluded() -> None:
    from transformers import Wav2Vec2FeatureExtractor

    signals = [
        np.random.default_rng(1).normal(0.3, 0.2, 5000).astype(np.float32),
        np.random.default_rng(2).normal(-0.1, 0.05, 3000).astype(np.float32),
    ]
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    reference = extractor(signals, sampling_rate=16000, padding=True, return_tensors="np")
    audio = torch.zeros(2, 5000)
    audio[0], audio[1, :3000] = torch.from_numpy(signals[0]), torch.from_numpy(signals[1])
    mask = torch.tensor(reference["attention_mask"])
    ours = normalize_waveform(audio, mask)
    np.testing.assert_allclose(ours.numpy(), reference["input_values"], atol=1e-5)
    assert ours[1, 3000:].abs().sum() == 0  # padding stays zero
    np.testing.assert_allclose(normalize_waveform(audio[:1]).numpy(), reference["input_values"][:1], atol=1e-5)


@pytest.mark.parametrize(
    "name, setting, expected",
    [
        ("xls-r-300m", "auto", True),  # its preprocessor_config.json says do_normalize: true
        ("wav2vec2-base", "auto", False),  # do_normalize: false
        ("hubert-base", "auto", False),  # saved without a preprocessor config: not normalised (and a warning)
        ("hubert-base", "true", True),
        ("xls-r-300m", "false", False),
    ],
)
def test_normalize_input_follows_the_checkpoint_unless_configured(folders, name, setting, expected) -> None:
    assert SSLFrontEnd(str(folders[name]), normalize_input=setting).normalize_input is expected


def test_tiny_is_not_normalised() -> None:
    assert SSLFrontEnd("tiny").normalize_input is False


def test_a_folder_without_preprocessor_config_warns_once_what_to_set(folders, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cbl.model.loading"):
        SSLFrontEnd(str(folders["hubert-base"]))
    notes = [r.getMessage() for r in caplog.records if "preprocessor_config.json" in r.getMessage()]
    assert len(notes) == 1 and "model.normalize_input=true" in notes[0]


def test_a_normalising_front_end_ignores_the_input_gain(folders) -> None:
    normalising = SSLFrontEnd(str(folders["xls-r-300m"])).eval()
    raw = SSLFrontEnd(str(folders["xls-r-300m"]), normalize_input="false").eval()
    audio = waveform(1, 6000)
    with torch.no_grad():
        assert torch.allclose(normalising(audio)[0], normalising(audio * 7.0)[0], atol=1e-4)
        assert torch.allclose(normalising(audio)[0], raw(normalize_waveform(audio))[0], atol=1e-6)
        assert not torch.allclose(raw(audio)[0], raw(audio * 7.0)[0], atol=1e-3)


def test_normalisation_is_part_of_the_feature_cache_key(tmp_path, folders) -> None:
    from cbl.config import resolve_config
    from cbl.data import load_split
    from cbl.engine.feature_build import open_or_build
    from cbl.engine.feature_cache import frontend_fingerprint

    entries = []
    for setting in ("true", "false"):
        config = resolve_config(
            None,
            [
                "data.demo_utterances=20",
                "data.demo_seconds=0.5",
                "model.freeze_ssl=true",
                f"model.ssl={folders['xls-r-300m']}",
                f"model.normalize_input={setting}",
            ],
            demo=True,
        )
        records = load_split(config.data, "dev")[:4]
        model = build_model(config.model)
        entry = open_or_build(
            tmp_path, "dev", records, config, model, torch.device("cpu"), frontend_fingerprint(model.frontend)
        )
        entries.append(entry)
        assert json.loads((entry.path / "meta.json").read_text())["normalize_input"] is (setting == "true")
    assert entries[0].path != entries[1].path
    assert not np.allclose(entries[0].features, entries[1].features)


# --------------------------------------------------------------------------- SpecAugment's randomness
def test_specaugment_masks_follow_the_torch_seed_and_leave_numpy_alone(folders) -> None:
    frontend = SSLFrontEnd(str(folders["xls-r-300m"]), mask_time_prob=0.5).train()
    outputs = []
    for numpy_seed in (123, 456):  # transformers draws the masks from numpy: its state must not matter
        np.random.seed(numpy_seed)
        torch.manual_seed(7)
        outputs.append(frontend.hidden(waveform(2, 8000))[0].detach())
        assert np.random.randint(1 << 30) == np.random.RandomState(numpy_seed).randint(1 << 30)  # put back
    assert torch.equal(outputs[0], outputs[1])
    torch.manual_seed(8)
    assert not torch.equal(outputs[0], frontend.hidden(waveform(2, 8000))[0].detach())


# --------------------------------------------------------------------------- 4 + 5. train and score each family
DEV_LENGTHS = (4000, 4400, 4800, 5200, 5600, 6000, 6100, 7000, 8000, 9000)  # samples: every batch is padded


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A `folder` corpus: 16 training files of 0.5 s, dev and eval of mixed lengths (both classes everywhere)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)

    def write(split: str, lengths) -> None:
        lines = []
        for i, length in enumerate(lengths):
            t = np.arange(length) / 16000
            tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t)
            noise = rng.normal(0, 0.05 if i % 2 else 0.2, length)  # spoofs (odd) are cleaner
            sf.write(root / f"{split}_{i}.wav", (tone + noise).astype(np.float32), 16000)
            lines.append(f"{split}_{i}.wav {'spoof' if i % 2 else 'bonafide'}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")

    write("train", [8000] * 16)
    write("dev", DEV_LENGTHS)
    write("eval", DEV_LENGTHS[::-1])
    return root


def family_config(corpus, folder, family, **extra):
    """cbl's config for training ``folder`` in train mode with the family's own LayerDrop and SpecAugment."""
    from cbl.config import config_from_dict

    values = {
        "data.corpus": "folder",
        "data.root": str(corpus),
        "data.max_len": 8000,
        **{f"data.{split}_protocol": str(corpus / f"{split}.txt") for split in ("train", "dev", "eval")},
        "model.ssl": str(folder),
        "model.embedding_dim": 8,
        "model.layer_mode": "weighted",
        "model.layerdrop": family.config["layerdrop"],
        "model.mask_time_prob": family.config["mask_time_prob"],
        "loss.num_clusters": 2,
        "train.epochs": 1,
        "train.batch_size": 4,
        "train.eval_batch_size": 8,
        "train.num_threads": 1,
        "optim.lr": 1.0e-4,
    }
    values.update(extra)
    return config_from_dict(values)


@pytest.fixture(scope="module")
def trained(folders, corpus, tmp_path_factory):
    """Each family trained one epoch through `fit` (4 steps), as a downloaded checkpoint would be."""
    from cbl.engine import fit

    runs = {}
    for name, family in FAMILIES.items():
        run_dir = tmp_path_factory.mktemp(f"run-{name}")
        result = fit(family_config(corpus, folders[name], family), None, run_dir)
        runs[name] = result
    return runs


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_trains_in_train_mode_with_its_layerdrop_and_specaugment(trained, folders, name) -> None:
    from safetensors.torch import load_file

    from cbl.engine import load_checkpoint, read_history

    result = trained[name]
    history = read_history(result.run_dir)
    assert len(history) == 1 and np.isfinite(history[0]["dev_eer"]) and np.isfinite(history[0]["train_loss"])
    payload, config = load_checkpoint(result.best_checkpoint)
    assert (config.model.layerdrop, config.model.mask_time_prob) == (
        FAMILIES[name].config["layerdrop"],
        FAMILIES[name].config["mask_time_prob"],
    )
    state = payload["model"]
    original = load_file(folders[name] / "model.safetensors")
    # SpecAugment ran: its mask vector got gradients (it gets none unless frames were masked)
    assert not torch.equal(state["frontend.ssl.masked_spec_embed"], original["masked_spec_embed"])
    assert not torch.equal(
        state["frontend.ssl.encoder.layers.0.feed_forward.output_dense.weight"],
        original["encoder.layers.0.feed_forward.output_dense.weight"],
    )
    assert state["frontend.layer_weights"].shape == (SMALL["num_hidden_layers"] + 1,)


def _scores(model, records, config, batch_size):
    from cbl.data import make_eval_loader
    from cbl.engine import embed

    outputs = embed(model, make_eval_loader(records, config.data, batch_size=batch_size), config, torch.device("cpu"))
    by_id = dict(zip(outputs["utt_id"], outputs["embedding"], strict=True))
    return torch.stack([by_id[r.utt_id] for r in records])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_padding_never_changes_a_score(trained, name) -> None:
    """Alone or beside longer files, in dev scoring during training and in evaluate / score: the same score."""
    from cbl.data import load_split
    from cbl.engine import load_model, score_audio_files, score_records

    loaded = load_model(trained[name].best_checkpoint)
    config = loaded.config
    dev = load_split(config.data, "dev")
    assert loaded.model.frontend.padding_safe is (name in ("xls-r-300m", "wavlm-large"))
    # training-time dev scoring (cbl.engine.embed over the length-bucketed eval loader): padded batches of 8 vs 1
    padded, alone = _scores(loaded.model, dev, config, 8), _scores(loaded.model, dev, config, 1)
    assert torch.allclose(padded, alone, atol=1e-5)
    # evaluate (score_records) and score (one file at a time, as `cbl-search score` does)
    batched = score_records(loaded, dev, batch_size=8)
    singles = score_records(loaded, dev, batch_size=1)
    files = np.array([score for _, score in score_audio_files(loaded, [r.path for r in dev])])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    np.testing.assert_allclose(batched, files, atol=1e-5)
    assert np.ptp(batched) > 0  # the scores differ between utterances: the comparison is not vacuous


def test_a_group_norm_front_end_would_change_the_score_if_it_saw_the_padding(trained) -> None:
    """Why the grouping exists: the same wav2vec2-base layout fed the padded batch directly differs."""
    from cbl.engine import load_model

    loaded = load_model(trained["wav2vec2-base"].best_checkpoint)
    frontend = loaded.model.frontend
    audio = torch.zeros(2, 9000)
    audio[0, :4000], audio[1] = waveform(1, 4000)[0], waveform(1, 9000, seed=1)[0]
    mask = torch.ones(2, 9000, dtype=torch.long)
    mask[0, 4000:] = 0
    with torch.no_grad():
        grouped, _ = frontend.hidden(audio, mask)
        alone, _ = frontend.hidden(audio[:1, :4000])
        direct = frontend._encode(audio, mask)  # one padded forward, which the grouping avoids
    frames = alone.shape[1]
    assert torch.allclose(grouped[0, :frames], alone[0], atol=1e-5)
    assert not torch.allclose(direct[0, :frames], alone[0], atol=1e-3)


# --------------------------------------------------------------------------- 8. stdout holds results only
def test_score_and_evaluate_print_results_only_on_stdout(trained, corpus, tmp_path) -> None:
    """No weight-loading progress bar or load report anywhere; stdout is what a script would parse."""
    import os
    import re
    import subprocess
    import sys

    checkpoint = trained["xls-r-300m"].best_checkpoint
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "cbl", *args], capture_output=True, text=True, env=env, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr
        for stream in (done.stdout, done.stderr):
            assert "Loading weights" not in stream and "LOAD REPORT" not in stream and "it/s]" not in stream
        return done

    files = [str(corpus / "dev_0.wav"), str(corpus / "dev_1.wav")]
    scored = cli("score", str(checkpoint), *files)
    lines = scored.stdout.splitlines()
    assert len(lines) == 2
    assert all(re.fullmatch(r"\S+\t-?\d+\.\d{6}\t(bonafide|spoof)", line) for line in lines), lines
    evaluated = cli("evaluate", str(checkpoint), "--split", "dev", "--out", str(tmp_path / "scores.txt"))
    out = evaluated.stdout.splitlines()
    assert out[0] == f"scores written to {tmp_path / 'scores.txt'} ({len(DEV_LENGTHS)} utterances)"
    assert re.fullmatch(r"EER \d+\.\d\d% \(threshold [^;\s]+; 95% CI \d+\.\d\d-\d+\.\d\d%\)", out[1])
    assert not any("warn" in line.lower() or "transformers" in line for line in out)
