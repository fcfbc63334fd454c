"""Scoring with a checkpoint: ``cbl-search evaluate`` (splits, protocols, resume) and ``cbl-search score``."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import cbl.engine.evaluate
from cbl.cli import cli
from cbl.config import resolve_config
from cbl.data import load_split
from cbl.engine import evaluate_records, fit, load_model, read_history, score_records
from cbl.metrics import compute_eer

from tiny import TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained tiny cluster_only run: (config, run_dir)."""
    config = resolve_config(None, TINY, demo=True)
    run_dir = tmp_path_factory.mktemp("evaluate") / "run"
    fit(config, None, run_dir)
    return config, run_dir


@pytest.fixture
def checkpoint(run, tmp_path):
    """A private copy of best.pt (tests may corrupt or replace it)."""
    path = tmp_path / "best.pt"
    shutil.copy(run[1] / "checkpoints" / "best.pt", path)
    return path


def read_scores(path: Path) -> dict[str, float]:
    return {utt: float(score) for utt, score in (line.split() for line in path.read_text().splitlines())}


def count_forwards(monkeypatch) -> list[int]:
    """Utterances put through the model by every ``embed`` call of scoring from now on."""
    seen: list[int] = []
    real = cbl.engine.evaluate.embed

    def counting(model, loader, config, device):
        outputs = real(model, loader, config, device)
        seen.append(len(outputs["utt_id"]))
        return outputs

    monkeypatch.setattr(cbl.engine.evaluate, "embed", counting)
    return seen


# --------------------------------------------------------------------------- the rebuilt model
def test_rebuilt_model_reproduces_the_training_dev_eer(run, tmp_path):
    config, run_dir = run
    loaded = load_model(run_dir / "checkpoints" / "best.pt")
    # rebuilt from its own config, not from the caller's (runtime keys such as data.num_workers: -1 made concrete)
    from cbl.config import config_differences

    assert config_differences(loaded.config, config) == [] and loaded.config.data.num_workers == 0
    result = evaluate_records(loaded, load_split(config.data, "dev"), tmp_path / "dev.txt")
    history = read_history(run_dir)
    assert result.eer == min(m["dev_eer"] for m in history)
    assert loaded.threshold == history[loaded.epoch - 1]["dev_threshold"]


# --------------------------------------------------------------------------- evaluate
def test_evaluate_prints_the_eer_of_its_score_file(run, checkpoint, tmp_path):
    out = tmp_path / "scores" / "eval.txt"
    result = CliRunner().invoke(cli, ["evaluate", str(checkpoint), "--split", "eval", "--out", str(out)])
    assert result.exit_code == 0, result.output
    scores = read_scores(out)
    records = load_split(run[0].data, "eval")
    assert sorted(scores) == sorted(r.utt_id for r in records)
    bonafide = [scores[r.utt_id] for r in records if r.label == 1]
    spoof = [scores[r.utt_id] for r in records if r.label == 0]
    eer, _ = compute_eer(bonafide, spoof)
    assert f"EER {100 * eer:.2f}% (threshold " in result.stdout
    for attack in [*sorted({r.attack for r in records if r.label == 0}), "pooled"]:
        assert re.search(rf"^{attack}\s+\d+\s+\d+\.\d{{3}}$", result.stdout, re.M), attack
    assert sorted(p.name for p in out.parent.iterdir()) == ["eval.txt"]  # no .partial, no temporary file


def _write_2019_protocol(path: Path, records, bonafide_ids: set[str]) -> None:
    path.write_text(
        "".join(
            f"{r.speaker} {r.utt_id} - {'-' if r.utt_id in bonafide_ids else r.attack if r.attack != '-' else 'A01'} "
            f"{'bonafide' if r.utt_id in bonafide_ids else 'spoof'}\n"
            for r in records
        )
    )


def test_evaluate_a_2021_la_key_prints_codec_conditions_and_both_min_tdcf_forms(run, checkpoint, tmp_path):
    from cbl.tdcf import min_tdcf_2019, min_tdcf_2021, read_asv_scores

    records = load_split(run[0].data, "eval")
    channels = [("none", "none"), ("alaw", "ita_tx"), ("gsm", "loc_tx")]
    key = tmp_path / "trial_metadata.txt"
    key.write_text(
        "".join(
            f"{r.speaker} {r.utt_id} {channels[i % 3][0]} {channels[i % 3][1]} {'-' if r.label else r.attack} "
            f"{'bonafide' if r.label else 'spoof'} notrim eval\n"
            for i, r in enumerate(records)
        )
    )
    attacks = sorted({r.attack for r in records if r.label == 0})
    asv = tmp_path / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"  # the 2019 format: SOURCE KEY SCORE
    asv.write_text(
        "".join(f"bonafide target {3 + i / 10}\nbonafide nontarget {i / 10 - 2}\n" for i in range(10))
        + "".join(f"{a} spoof {1.5 - j}\n" for a in attacks for j in range(3))
    )
    out = tmp_path / "scores.txt"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(checkpoint),
            "--protocol",
            str(key),
            "--audio-dir",
            str(Path(records[0].path).parent),
            "--corpus",
            "asvspoof2021_la",
            "--asv-scores",
            str(asv),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = read_scores(out)
    bonafide = [scores[r.utt_id] for r in records if r.label == 1]
    spoof = [scores[r.utt_id] for r in records if r.label == 0]
    rates = read_asv_scores(asv).rates()
    line = next(line for line in result.stdout.splitlines() if line.startswith("min t-DCF "))
    assert line == (
        f"min t-DCF {min_tdcf_2019(bonafide, spoof, rates)[0]:.4f} (ASVspoof 2019 form), "
        f"{min_tdcf_2021(bonafide, spoof, rates)[0]:.4f} (ASVspoof 2021 form)"
    )
    assert re.search(r"^attack\s+bonafide\s+spoof\s+EER \(%\)\s+min t-DCF \(2021\)$", result.stdout, re.M)
    for attack in [*attacks, "pooled"]:
        assert re.search(rf"^{attack}\s+\d+\s+\d+\s+\d+\.\d{{3}}\s+\d\.\d{{4}}$", result.stdout, re.M), attack
    assert re.search(r"^codec condition \(2021 LA\)\s+bonafide\s+spoof\s+EER \(%\)$", result.stdout, re.M)
    for condition in ("C1", "C2", "C6", "pooled"):  # none, alaw, gsm
        assert re.search(rf"^{condition}\s+\d+\s+\d+\s+(\d+\.\d{{3}}|-)$", result.stdout, re.M), condition
    bad = CliRunner().invoke(cli, ["evaluate", str(checkpoint), "--asv-key", str(key), "--out", str(out)])
    assert bad.exit_code == 2 and "--asv-key needs --asv-scores" in bad.output


def test_evaluate_protocol_warns_when_labels_look_swapped(run, checkpoint, tmp_path):
    records = load_split(run[0].data, "eval")
    first = tmp_path / "first.txt"
    assert CliRunner().invoke(cli, ["evaluate", str(checkpoint), "--out", str(first)]).exit_code == 0
    scores = read_scores(first)
    ranked = sorted(records, key=lambda r: scores[r.utt_id])
    half = len(ranked) // 2
    audio_dir = Path(records[0].path).parent
    cases = {"agrees": {r.utt_id for r in ranked[half:]}, "swapped": {r.utt_id for r in ranked[:half]}}
    for name, bonafide_ids in cases.items():
        protocol = tmp_path / f"{name}.trl"
        _write_2019_protocol(protocol, records, bonafide_ids)
        result = CliRunner().invoke(
            cli,
            [
                "evaluate",
                str(checkpoint),
                "--protocol",
                str(protocol),
                "--audio-dir",
                str(audio_dir),
                "--corpus",
                "asvspoof2019_la",
                "--out",
                str(tmp_path / f"{name}-scores.txt"),
            ],
        )
        assert result.exit_code == 0, result.output
        assert read_scores(tmp_path / f"{name}-scores.txt") == scores
        warned = "warning: negated scores give a lower EER" in result.stderr
        assert warned == (name == "swapped"), result.output
    assert "EER 100.00%" in result.stdout


def test_interrupted_scoring_scores_only_the_rest(run, checkpoint, monkeypatch, tmp_path):
    records = load_split(run[0].data, "eval")
    reference = score_records(load_model(checkpoint), records, batch_size=4, fsync_every=1)

    partial = tmp_path / "scores.txt.partial"
    real = cbl.engine.evaluate.embed
    calls = {"n": 0}

    def crash_on_third_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(cbl.engine.evaluate, "embed", crash_on_third_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        score_records(load_model(checkpoint), records, batch_size=4, partial=partial, fsync_every=1)
    assert len(partial.read_text().splitlines()) == 1 + 8  # header + two chunks of 4

    monkeypatch.setattr(cbl.engine.evaluate, "embed", real)
    seen = count_forwards(monkeypatch)
    resumed = score_records(load_model(checkpoint), records, batch_size=4, partial=partial, fsync_every=1)
    assert sum(seen) == len(records) - 8
    np.testing.assert_array_equal(resumed, reference)


def test_interrupted_evaluate_command_resumes(run, checkpoint, monkeypatch, tmp_path):
    args = ["evaluate", str(checkpoint), "--split", "eval", "--batch-size", "1"]  # chunks of 20 utterances
    reference = tmp_path / "reference.txt"
    assert CliRunner().invoke(cli, [*args, "--out", str(reference)]).exit_code == 0

    out = tmp_path / "scores.txt"
    real = cbl.engine.evaluate.embed
    calls = {"n": 0}

    def crash_on_second_chunk(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("killed")
        return real(*a, **k)

    monkeypatch.setattr(cbl.engine.evaluate, "embed", crash_on_second_chunk)
    crashed = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert crashed.exit_code == 1 and "Traceback" not in crashed.output
    assert not out.exists() and Path(f"{out}.partial").is_file()

    monkeypatch.setattr(cbl.engine.evaluate, "embed", real)
    seen = count_forwards(monkeypatch)
    resumed = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert sum(seen) == 40 - 20
    assert out.read_text() == reference.read_text()
    assert not Path(f"{out}.partial").exists()


def test_partial_scores_of_a_replaced_checkpoint_are_not_reused(run, checkpoint, monkeypatch, tmp_path):
    records = load_split(run[0].data, "eval")
    partial = tmp_path / "scores.txt.partial"
    score_records(load_model(checkpoint), records[:20], batch_size=4, partial=partial)
    # same path, another model (best.pt rewritten by a continued training)
    shutil.copy(run[1] / "checkpoints" / "last.pt", checkpoint)
    os.utime(checkpoint, ns=(0, 0))
    seen = count_forwards(monkeypatch)
    score_records(load_model(checkpoint), records[:20], batch_size=4, partial=partial)
    assert sum(seen) == 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "eval", "--protocol", "{protocol}"], "give either --split or --protocol, not both"),
        (["--protocol", "{protocol}"], "--protocol needs --audio-dir"),
        (["--set", "loss.alpha=3"], "only data.* and train.* settings can change at evaluation, not loss.*"),
    ],
    ids=["split-and-protocol", "protocol-without-audio", "model-override"],
)
def test_evaluate_usage_errors_exit_2(checkpoint, tmp_path, args, message):
    protocol = tmp_path / "p.trl"
    protocol.write_text("LA_0001 LA_E_1 - - bonafide\n")
    result = CliRunner().invoke(cli, ["evaluate", str(checkpoint), *[a.format(protocol=protocol) for a in args]])
    assert result.exit_code == 2
    assert message in result.output


# --------------------------------------------------------------------------- score
def _write_formats(folder: Path, source: Path) -> list[Path]:
    audio, rate = sf.read(source, dtype="float32")
    assert rate == 16000
    t = np.arange(int(0.5 * 48000)) / 48000
    stereo = np.stack([np.sin(2 * np.pi * 220 * t), 0.5 * np.sin(2 * np.pi * 330 * t)], axis=1).astype("float32") * 0.3
    files = [folder / "speech_8k.wav", folder / "tones_48k_stereo.wav", folder / "copy.flac"]
    sf.write(files[0], audio[::2], 8000)
    sf.write(files[1], stereo, 48000)
    sf.write(files[2], audio, 16000)
    if "OGG" in sf.available_formats() and "VORBIS" in sf.available_subtypes("OGG"):
        files.append(folder / "copy.ogg")
        sf.write(files[3], audio, 16000, format="OGG", subtype="VORBIS")
    return files


def test_score_prints_one_decision_per_file_and_writes_a_tsv(run, checkpoint, tmp_path):
    records = load_split(run[0].data, "eval")
    folder = tmp_path / "audio"
    folder.mkdir()
    files = _write_formats(folder, Path(records[0].path))
    tsv = tmp_path / "scores.tsv"
    result = CliRunner().invoke(cli, ["score", str(checkpoint), str(records[0].path), str(folder), "--out", str(tsv)])
    assert result.exit_code == 0, result.output
    threshold = float(
        re.search(
            r"\(threshold (\S+) = dev EER threshold of epoch \d; bonafide when the score is "
            r"above it\)",
            result.stderr,
        ).group(1)
    )
    lines = result.stdout.splitlines()
    assert [Path(line.split("\t")[0]) for line in lines] == [Path(records[0].path), *sorted(files)]
    for line in lines:
        _, score, decision = line.split("\t")
        assert decision == ("bonafide" if float(score) > threshold else "spoof")
    assert tsv.read_text().splitlines() == ["path\tscore\tdecision", *lines]
    # the same file scores as evaluation scored it
    evaluated = score_records(load_model(checkpoint), records[:1])[0]
    assert float(lines[0].split("\t")[1]) == pytest.approx(evaluated, abs=1e-5)
    flac = next(line for line in lines if line.startswith(str(folder / "copy.flac")))
    assert float(flac.split("\t")[1]) == pytest.approx(evaluated, abs=1e-5)


def test_a_checkpoint_decides_with_its_own_epochs_threshold(run, tmp_path):
    """last.pt holds its epoch's threshold and the best epoch's: `score` on it uses its own."""
    from cbl.engine import load_checkpoint, save_checkpoint

    _, run_dir = run
    payload, config = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    history = read_history(run_dir)
    assert payload["threshold"] == history[-1]["dev_threshold"]
    payload["best_threshold"] = payload["threshold"] + 123.0  # as if another epoch had been the best
    last = save_checkpoint(tmp_path / "last.pt", payload, config)
    assert load_model(last).threshold == payload["threshold"]
    audio = load_split(run[0].data, "eval")[0].path
    result = CliRunner().invoke(cli, ["score", str(last), audio])
    assert result.exit_code == 0, result.output
    assert f"(threshold {payload['threshold']:.6g} = dev EER threshold of epoch {len(history)};" in result.stderr
    best = load_model(run_dir / "checkpoints" / "best.pt")
    assert best.threshold == history[best.epoch - 1]["dev_threshold"]


# --------------------------------------------------------------------------- bad checkpoints
@pytest.mark.parametrize("command", ["evaluate", "score"])
def test_corrupt_checkpoint_exits_1_naming_the_file(checkpoint, tmp_path, command):
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    extra = [str(tmp_path)] if command == "score" else ["--out", str(tmp_path / "s.txt")]
    if command == "score":
        sf.write(tmp_path / "a.wav", np.zeros(8000, dtype="float32"), 16000)
    result = CliRunner().invoke(cli, [command, str(checkpoint), *extra])
    assert result.exit_code == 1
    assert f"Error: {checkpoint}: not a readable cbl checkpoint (truncated or corrupt?)" in result.output
    assert "Traceback" not in result.output


def test_missing_checkpoint_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "nope.pt")])
    assert result.exit_code == 2
    assert "Path" in result.output and "does not exist" in result.output
