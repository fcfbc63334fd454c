"""The synthetic demo corpus: exact ASVspoof 2019 LA layout, determinism, attacks, caching."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cbl.config import DataConfig
from cbl.data.demo import BONAFIDE_SHARE, SEEN_ATTACKS, UNSEEN_ATTACKS, demo_root, generate_demo_corpus
from cbl.data.protocols import read_asvspoof2019

SMALL = dict(utterances=24, seconds=0.25)
SPLITS = {"train": ("T", "train.trn"), "dev": ("D", "dev.trl"), "eval": ("E", "eval.trl")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_corpus(tmp_path_factory.mktemp("demo") / "a", seed=0, **SMALL)


def protocol_path(root: Path, split: str) -> Path:
    return root / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{SPLITS[split][1]}.txt"


def read(root: Path, split: str):  # type: ignore[no-untyped-def]
    return read_asvspoof2019(protocol_path(root, split), root / f"ASVspoof2019_LA_{split}" / "flac")


def test_layout_matches_asvspoof2019_la(corpus: Path) -> None:
    assert sorted(p.name for p in corpus.iterdir()) == [
        "ASVspoof2019_LA_cm_protocols",
        "ASVspoof2019_LA_dev",
        "ASVspoof2019_LA_eval",
        "ASVspoof2019_LA_train",
    ]
    for split, (letter, _) in SPLITS.items():
        records = read(corpus, split)
        assert len(records) == SMALL["utterances"]
        assert all(re.fullmatch(rf"LA_{letter}_\d{{7}}", r.utt_id) for r in records)
        assert all(re.fullmatch(r"LA_00\d\d", r.speaker) for r in records)
        assert all(r.attack == "-" for r in records if r.label == 1)
        assert sum(r.label for r in records) == round(BONAFIDE_SHARE * SMALL["utterances"])
        info = sf.info(records[0].path)
        assert (info.format, info.samplerate, info.frames) == ("FLAC", 16000, 4000)
    line = protocol_path(corpus, "train").read_text().splitlines()[0]
    assert re.fullmatch(r"LA_00\d\d LA_T_\d{7} - (-|A0\d) (bonafide|spoof)", line)


def test_unseen_attacks_only_in_eval(corpus: Path) -> None:
    train = {r.attack for r in read(corpus, "train")} - {"-"}
    dev = {r.attack for r in read(corpus, "dev")} - {"-"}
    evaluation = {r.attack for r in read(corpus, "eval")} - {"-"}
    assert train == dev == set(SEEN_ATTACKS)
    assert evaluation == set(SEEN_ATTACKS) | set(UNSEEN_ATTACKS)
    assert evaluation - train == set(UNSEEN_ATTACKS)


def test_speakers_are_disjoint_between_splits(corpus: Path) -> None:
    speakers = {split: {r.speaker for r in read(corpus, split)} for split in SPLITS}
    assert not speakers["train"] & speakers["dev"] and not speakers["train"] & speakers["eval"]


def test_loudness_does_not_give_the_label_away(corpus: Path) -> None:
    levels = {0: [], 1: []}
    for record in read(corpus, "train"):
        x = sf.read(record.path, dtype="float32")[0]
        levels[record.label].append(20 * np.log10(np.sqrt(np.mean(x**2))))
    for label in (0, 1):
        assert min(levels[label]) > -31 and max(levels[label]) < -19
    assert abs(np.mean(levels[0]) - np.mean(levels[1])) < 3


def test_same_seed_same_corpus_other_seed_differs(corpus: Path, tmp_path: Path) -> None:
    again = generate_demo_corpus(tmp_path / "b", seed=0, **SMALL)
    other = generate_demo_corpus(tmp_path / "c", seed=1, **SMALL)
    for split in SPLITS:
        assert protocol_path(again, split).read_bytes() == protocol_path(corpus, split).read_bytes()
        for a, b in zip(read(corpus, split), read(again, split), strict=True):
            np.testing.assert_array_equal(sf.read(a.path)[0], sf.read(b.path)[0])
    first = read(corpus, "train")[0]
    other_first = read(other, "train")[0]
    differs = protocol_path(other, "train").read_bytes() != protocol_path(corpus, "train").read_bytes()
    assert differs or not np.array_equal(sf.read(first.path)[0], sf.read(other_first.path)[0])


def test_too_few_utterances_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="utterances is 5, but must be >= 12"):
        generate_demo_corpus(tmp_path, utterances=5)


def test_demo_root_caches_by_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBL_CACHE", str(tmp_path / "cache"))
    config = DataConfig(corpus="demo", demo_utterances=20, demo_seconds=0.25)
    root = demo_root(config)
    assert root.parent == tmp_path / "cache" and root.name.startswith("demo-")
    marker = protocol_path(root, "eval").stat().st_mtime_ns
    assert demo_root(config) == root and protocol_path(root, "eval").stat().st_mtime_ns == marker
    other = demo_root(DataConfig(corpus="demo", demo_utterances=20, demo_seconds=0.25, demo_seed=3))
    assert other != root


def test_demo_root_race_leaves_one_complete_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBL_CACHE", str(tmp_path / "cache"))
    config = DataConfig(corpus="demo", demo_utterances=20, demo_seconds=0.25)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(demo_root(config))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [results[0].name]  # no staging leftovers
    assert len(read(results[0], "eval")) == 20


# --------------------------------------------------------------------------- version 2: artefacts and channels
def frame_normalised_spectrum(x: np.ndarray, frame: int = 160) -> np.ndarray:
    """Mean log power spectrum of 10 ms frames, each divided by its own RMS first.

    What survives a front-end that normalises every frame (wav2vec2's conv stack
    with layer norm): any per-frame gain is gone, the spectral shape is not.
    """
    frames = x[: x.shape[0] // frame * frame].reshape(-1, frame)
    frames = frames / np.maximum(np.sqrt(np.mean(frames**2, axis=1, keepdims=True)), 1e-12)
    return np.log(np.mean(np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1)) ** 2, axis=0) + 1e-12)


def utterances(attack: str, channel: str = "studio", count: int = 6, seed: int = 0) -> list[np.ndarray]:
    from cbl.data.demo import _utterance
    from cbl.data.speech import voice_for_speaker

    voice = voice_for_speaker(0, "LA_0081")
    return [
        _utterance(voice, attack, channel, np.random.default_rng([seed, i]), 16000, 16000).astype(np.float64)
        for i in range(count)
    ]


def spectral_distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """RMS difference (in log power, i.e. nepers) of two sets' mean frame-normalised spectra."""

    def mean(xs: list[np.ndarray]) -> np.ndarray:
        return np.mean([frame_normalised_spectrum(x) for x in xs], axis=0)

    return float(np.sqrt(np.mean((mean(a) - mean(b)) ** 2)))


def test_every_attack_survives_per_frame_normalisation_unlike_version_1s_gain_steps() -> None:
    """Paired: the same synthesised speech (same seeds) as bonafide and through each attack."""
    bonafide = utterances("-")
    for attack in SEEN_ATTACKS + UNSEEN_ATTACKS:
        assert spectral_distance(utterances(attack), bonafide) > 0.15, attack  # A04, the least: 0.23
    # version 1's A02 (a gain step every 10 ms) leaves nothing once each frame is normalised
    gains = np.random.default_rng(5).uniform(0.25, 1.75, size=101)
    stepped = [x * np.repeat(gains, 160)[: x.shape[0]] for x in bonafide]
    assert spectral_distance(stepped, bonafide) < 1e-6


def test_channels_are_bonafide_sub_populations_and_spoofs_share_them() -> None:
    from cbl.data.demo import CHANNELS

    assert list(CHANNELS) == ["studio", "headset", "laptop"]
    studio = utterances("-", "studio")
    for channel in ("headset", "laptop"):
        assert spectral_distance(utterances("-", channel), studio) > 0.1, channel
        # a spoof of that channel is coloured like its bonafide: the channel never gives the label away
        spoof, bonafide = utterances("A02", channel), utterances("-", channel)
        assert spectral_distance(spoof, bonafide) < spectral_distance(spoof, studio) + 0.05


def test_a05_is_a02s_family_and_a06_a_new_kind() -> None:
    """A05 and A02 leave images above their vocoder's band (energy where the low-passed source had none)."""

    def high_band_share(xs: list[np.ndarray], low_hz: float) -> float:
        power = np.mean([np.abs(np.fft.rfft(x)) ** 2 for x in xs], axis=0)
        freqs = np.fft.rfftfreq(16000, 1 / 16000)
        return float(power[freqs > low_hz].sum() / power.sum())

    bonafide = utterances("-")
    assert high_band_share(utterances("A02"), 4000) > 3 * high_band_share(bonafide, 4000)
    assert high_band_share(utterances("A05"), 2700) > 1.5 * high_band_share(bonafide, 2700)
    assert high_band_share(utterances("A06"), 4000) < 0.2 * high_band_share(bonafide, 4000)  # band-limited


def test_demo_version_is_in_the_cache_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A corpus cached by another generator version is never reused."""
    import cbl.data.demo as demo

    assert demo.DEMO_VERSION == 2
    monkeypatch.setenv("CBL_CACHE", str(tmp_path / "cache"))
    config = DataConfig(corpus="demo", demo_utterances=20, demo_seconds=0.25)
    current = demo_root(config)
    monkeypatch.setattr(demo, "DEMO_VERSION", 1)
    assert demo_root(config) != current
