"""final-eval --on: the best checkpoint of a sweep scored on several corpus roots, one summary.

The experiment is built without Ray (one tiny trial trained with :func:`cbl.engine.fit` into the layout a
sweep leaves, as in test_report.py); the demo's eval split is written as a 2021 LA root (with the
organisers' ASV files in their standard place), a 2021 DF root and an In-the-Wild root.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cbl.engine.evaluate
from cbl.cli import cli
from cbl.data import demo_root, load_split
from cbl.metrics import compute_eer
from cbl.sweep.space import load_search_space
from cbl.sweep.store import write_sweep, write_trial_state
from cbl.uncertainty import bootstrap_eer_ci

from corpus_roots import write_2021_df, write_2021_la, write_folder_protocol, write_in_the_wild
from tiny import TINY

SPACE = {"name": "cross", "space": {"loss.alpha": {"choice": [1.0]}}, "search": {"algorithm": "random"}}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    from cbl.engine import fit
    from cbl.sweep.settings import SweepSettings

    exp = tmp_path_factory.mktemp("storage") / "cross"
    settings = SweepSettings(
        space_data=SPACE, space_source="cross.yaml", demo=True, set_options=list(TINY), experiment_dir=str(exp),
        num_samples=1,
    )  # fmt: skip
    write_sweep(exp, {"settings": asdict(settings), "state": "finished", "started": time.time(), "total_trials": 1})
    trial = exp / "trials" / "t_00000"
    write_trial_state(trial, trial_id="t_00000", params={"loss.alpha": 1.0}, state="running", error="")
    fit(settings.trial_config({"loss.alpha": 1.0}), None, trial)
    write_trial_state(trial, state="finished")
    return exp


@pytest.fixture(scope="module")
def demo_eval(experiment):
    from cbl.engine import load_model

    data = load_model(experiment / "trials" / "t_00000" / "checkpoints" / "best.pt").config.data
    return demo_root(data), load_split(data, "eval")


@pytest.fixture(scope="module")
def roots(demo_eval, tmp_path_factory):
    base = tmp_path_factory.mktemp("roots")
    demo, records = demo_eval
    return {
        "asvspoof2019_la": demo,
        "asvspoof2021_la": write_2021_la(base / "LA21", records),
        "asvspoof2021_df": write_2021_df(base / "DF21", records),
        "in_the_wild": write_in_the_wild(base / "itw", records),
        "folder": write_folder_protocol(base / "itw" / "folder.txt", records),  # audio paths beside it
    }


def final_eval(experiment: Path, roots: dict[str, Path], *names: str):
    args = [arg for name in names for arg in ("--on", f"{name}={roots[name]}")]
    return CliRunner().invoke(cli, ["final-eval", str(experiment), *args])


def _simple_eer(bonafide: np.ndarray, spoof: np.ndarray) -> float:
    """A straightforward ROC sweep (not cbl's code): every score as a threshold, accept when >= it."""
    best_gap, eer = np.inf, 0.0
    for threshold in np.concatenate([bonafide, spoof, [np.inf]]):
        miss, false_alarm = np.mean(bonafide < threshold), np.mean(spoof >= threshold)
        if abs(miss - false_alarm) < best_gap:
            best_gap, eer = abs(miss - false_alarm), (miss + false_alarm) / 2
    return float(eer)


def _read_scores(path: Path, columns: int) -> dict[str, float]:
    rows = [line.split() for line in path.read_text().splitlines()]
    assert {len(row) for row in rows} == {columns}, path
    return {row[0]: float(row[-1]) for row in rows}


def test_one_summary_with_a_row_per_corpus_each_in_its_official_format(experiment, roots, demo_eval):
    result = final_eval(experiment, roots, *roots)
    assert result.exit_code == 0, result.output
    out = experiment / "final_eval"
    summary = json.loads((out / "summary.json").read_text())
    rows = {row["corpus"]: row for row in summary["corpora"]}
    assert list(rows) == ["asvspoof2019_la", "asvspoof2021_la", "asvspoof2021_df", "in_the_wild", "folder"]
    markdown = (out / "summary.md").read_text()
    records = demo_eval[1]
    labels = {r.utt_id: r.label for r in records}
    speakers = {r.utt_id: r.speaker for r in records}
    for corpus, row in rows.items():
        # 2019: UTT_ID ATTACK KEY SCORE (evaluate_tDCF_asvspoof19.py); the others: UTT_ID SCORE
        scores = _read_scores(Path(row["score_file"]), 4 if corpus == "asvspoof2019_la" else 2)
        assert sorted(scores) == sorted(labels) and row["trials"] == len(records)
        bonafide = np.array([s for u, s in scores.items() if labels[u] == 1])
        spoof = np.array([s for u, s in scores.items() if labels[u] == 0])
        assert row["eer"] == compute_eer(bonafide, spoof)[0]
        assert row["eer"] == pytest.approx(_simple_eer(bonafide, spoof), abs=1e-12)
        # the 95% CI: a speaker bootstrap (every demo utterance names its speaker), seeded; trials in key order
        ids = [r.utt_id for r in records]
        interval = bootstrap_eer_ci(
            [scores[u] for u in ids], [labels[u] for u in ids], groups=[speakers[u] for u in ids], seed=0
        )
        assert (row["eer_low"], row["eer_high"]) == (interval.low, interval.high)
        assert row["eer_low"] <= row["eer"] <= row["eer_high"] and row["ci_speakers"] == len(set(speakers.values()))
        ci_cell = f"{100 * row['eer_low']:.2f}-{100 * row['eer_high']:.2f} (by {row['ci_speakers']} speakers)"
        assert f"| {100 * row['eer']:.2f} | {ci_cell} |" in markdown
        assert f"| {corpus} | {len(records)} | " in markdown and f"| {100 * row['eer']:.2f} |" in markdown
    # min t-DCF where defined and the ASV scores lie in the root: 2021 LA only
    assert set(rows["asvspoof2021_la"]["min_tdcf"]) == {"2019", "2021"}
    assert all(not rows[c]["min_tdcf"] for c in ("asvspoof2019_la", "asvspoof2021_df", "in_the_wild", "folder"))
    titles = {corpus: [b["title"] for b in row["breakdowns"]] for corpus, row in rows.items()}
    assert titles["asvspoof2021_la"] == ["attack", "codec condition (2021 LA)"]
    assert titles["asvspoof2021_df"][0] == "attack" and "vocoder group (2021 DF)" in titles["asvspoof2021_df"]
    assert "codec condition (2021 LA)" in markdown and "vocoder group (2021 DF)" in markdown
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.tmp"))
    # every scoring of a corpus is in the log: time, checkpoint and its signature, corpus, root
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [entry["corpus"] for entry in log] == list(rows)
    assert all(entry["checkpoint"] == summary["checkpoint"] and "mtime_ns=" in entry["signature"] for entry in log)

    again = final_eval(experiment, roots, "asvspoof2021_df")
    assert again.exit_code == 0, again.output
    assert "asvspoof2021_df: already scored by this checkpoint" in again.output
    assert len((out / "log.jsonl").read_text().splitlines()) == len(log)  # not scored, not logged
    assert len(json.loads((out / "summary.json").read_text())["corpora"]) == 5


def test_an_interrupted_corpus_continues_where_it_stopped(experiment, roots, monkeypatch, tmp_path):
    for name in ("corpora/in_the_wild.json", "scores-in_the_wild.txt"):  # as if never scored
        (experiment / "final_eval" / name).unlink(missing_ok=True)
    real_score, real_embed = cbl.engine.evaluate.score_records, cbl.engine.evaluate.embed
    monkeypatch.setattr(cbl.engine.evaluate, "score_records", lambda *a, **k: real_score(*a, **k, fsync_every=1))
    embedded: list[int] = []

    def crash_on_second_chunk(model, loader, config, device):
        if len(embedded) == 1:
            raise KeyboardInterrupt
        outputs = real_embed(model, loader, config, device)
        embedded.append(len(outputs["utt_id"]))
        return outputs

    monkeypatch.setattr(cbl.engine.evaluate, "embed", crash_on_second_chunk)
    interrupted = final_eval(experiment, roots, "in_the_wild")
    assert interrupted.exit_code != 0 and not (experiment / "final_eval" / "scores-in_the_wild.txt").exists()
    partial = experiment / "final_eval" / "scores-in_the_wild.txt.partial"
    assert len(partial.read_text().splitlines()) == 1 + embedded[0]  # header + the first chunk
    embedded.append(0)  # from now on, no crash
    resumed = final_eval(experiment, roots, "in_the_wild")
    assert resumed.exit_code == 0, resumed.output
    assert sum(embedded[2:]) == 40 - embedded[0]  # only the rest was scored
    assert not partial.exists()


def test_final_eval_on_usage_errors_exit_2(experiment, roots, tmp_path):
    runner = CliRunner()
    for args, message in [
        (["--on", "in_the_wild"], "expected CORPUS=ROOT"),
        (["--on", f"wild={tmp_path}"], "corpus 'wild' is unknown"),
        (["--on", f"in_the_wild={tmp_path}", "--on", f"in_the_wild={tmp_path}"], "is given twice"),
        (["--on", f"in_the_wild={tmp_path / 'none'}"], "folder not found"),
        (["--on", f"in_the_wild={roots['in_the_wild']}", "--seeds", "1"], "give it without --protocol, --seeds"),
    ]:
        result = runner.invoke(cli, ["final-eval", str(experiment), *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "corpora:\n    in_the_wlid: /data/itw\n",
            "x.yaml:3: unknown corpus 'in_the_wlid' (did you mean 'in_the_wild'?)",
        ),
        ("corpora:\n    in_the_wild: 3\n", "x.yaml:3: 'final_eval.corpora.in_the_wild' must be the corpus's root"),
        ("corpora: [a]\n", "x.yaml:2: 'final_eval.corpora' must be a mapping"),
    ],
)
def test_space_file_final_eval_corpora_is_validated_with_its_line(tmp_path, body, message):
    from cbl.errors import ConfigError

    path = tmp_path / "x.yaml"
    path.write_text("final_eval:\n  " + body)
    with pytest.raises(ConfigError) as caught:
        load_search_space(path)
    assert str(caught.value).startswith(f"{tmp_path}/{message}")


def test_space_file_final_eval_corpora_is_read(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("final_eval:\n  corpora: {asvspoof2021_df: /data/DF, in_the_wild: itw}\n")
    assert load_search_space(path).final_eval_corpora == {"asvspoof2021_df": "/data/DF", "in_the_wild": "itw"}


# --------------------------------------------------------------------------- the reproducibility bundle
def test_the_bundle_round_trip_retrains_the_best_configuration(experiment, roots, tmp_path):
    import hashlib

    import cbl
    from cbl.engine import read_history

    assert final_eval(experiment, roots, "in_the_wild").exit_code == 0
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["export", str(experiment), str(out)])
    assert result.exit_code == 0, result.output
    bundle = json.loads((out / "bundle.json").read_text())
    trial = experiment / "trials" / "t_00000"
    history = read_history(trial)
    best = min(history, key=lambda row: row["dev_eer"])
    assert bundle["best_trial"] == "t_00000" and bundle["dev_eer"] == best["dev_eer"]
    assert bundle["threshold"] == best["dev_threshold"] and bundle["seeds"]["train.seed"] == 0
    assert bundle["cbl"]["version"] == cbl.__version__
    assert bundle["cbl"]["git"] is None or len(bundle["cbl"]["git"]["commit"]) == 40
    assert bundle["versions"]["torch"] and bundle["versions"]["optuna"] and bundle["versions"]["python"]
    assert set(bundle["protocols"]) >= {"train", "dev", "eval", "final_eval:in_the_wild"}
    for entry in bundle["protocols"].values():
        assert entry["sha256"] == hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest()
    assert (out / "final_eval" / "summary.json").read_bytes() == (
        experiment / "final_eval" / "summary.json"
    ).read_bytes()
    assert (out / "final_eval" / "scores-in_the_wild.txt").is_file() and "final_eval/log.jsonl" in bundle["files"]

    retrained = CliRunner().invoke(cli, ["train", str(out / "config.yaml"), "--out", str(tmp_path / "again")])
    assert retrained.exit_code == 0, retrained.output
    again = read_history(tmp_path / "again")
    assert [row["dev_eer"] for row in again] == [row["dev_eer"] for row in history]  # seeded: the same run


def test_export_refuses_an_unfinished_sweep_and_a_folder_inside_it(experiment, tmp_path):
    sweep = json.loads((experiment / "sweep.json").read_text())
    inside = CliRunner().invoke(cli, ["export", str(experiment), str(experiment / "bundle")])
    assert inside.exit_code == 2 and "give a folder outside the experiment folder" in inside.output
    write_sweep(experiment, {**sweep, "state": "running"})
    try:
        result = CliRunner().invoke(cli, ["export", str(experiment), str(tmp_path / "b")])
    finally:
        write_sweep(experiment, sweep)
    assert result.exit_code == 2 and "the sweep is running; export a finished one" in result.output


def test_every_corpus_has_a_score_file_format():
    from cbl.config import PROTOCOL_FORMATS
    from cbl.sweep.cross_corpus import SCORE_FORMATS

    assert set(SCORE_FORMATS) == set(PROTOCOL_FORMATS) and set(SCORE_FORMATS.values()) <= {"2019", "2021"}


def test_the_report_scoring_the_eval_split_is_logged(experiment, tmp_path):
    from cbl.report import build_report

    log = experiment / "final_eval" / "log.jsonl"
    before = log.read_text().splitlines() if log.is_file() else []
    lines: list[str] = []
    build_report(experiment, tmp_path / "report", max_points=20, echo=lines.append)
    assert any(line.startswith("scoring the eval split") for line in lines)
    after = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(after) == len(before) + 1
    assert (after[-1]["corpus"], after[-1]["root"]) == ("demo", "(built in) (eval split)")
