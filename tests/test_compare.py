"""Is the best trial really better? Paired comparisons on the kept dev scores, in `status` and its table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from cbl.cli import cli
from cbl.engine.dev_scores import DEV_SCORES, write_dev_scores
from cbl.metrics import compute_eer
from cbl.sweep.compare import compare_to_best, vs_best_column
from cbl.sweep.store import SWEEP_FILE, read_trials

N_PER_CLASS = 300


def _dev(seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """A shared dev set: ids, labels, a base score per utterance, 10 speakers holding both classes."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(N_PER_CLASS, dtype=int), np.zeros(N_PER_CLASS, dtype=int)]
    base = rng.normal(size=labels.size)
    ids = [f"D_{i:05d}" for i in range(labels.size)]
    speakers = [f"spk{i % 10}" for i in range(labels.size)]
    return ids, labels, base, speakers


def _trial(experiment: Path, trial_id: str, scores: np.ndarray | None, ids, labels, speakers, k: int = 2) -> None:
    """A trial folder as a sweep leaves it: trial.json, metrics.jsonl, best.pt, the best epoch's dev scores."""
    folder = experiment / "trials" / trial_id
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "trial.json").write_text(json.dumps({"params": {"loss.num_clusters": k}, "state": "finished"}))
    epochs = 2
    eer = compute_eer(scores[labels == 1], scores[labels == 0])[0] if scores is not None else 0.3
    lines = [
        {"epoch": e, "dev_eer": eer + 0.01 * (epochs - e), "dev_eer_low": eer - 0.02, "dev_eer_high": eer + 0.02}
        for e in range(1, epochs + 1)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "checkpoints" / "best.pt").write_bytes(b"")
    if scores is not None:
        write_dev_scores(folder / "checkpoints" / DEV_SCORES, epochs, ids, labels, scores, speakers)


def _experiment(tmp_path: Path) -> Path:
    experiment = tmp_path / "exp"
    ids, labels, base, speakers = _dev()
    good = base + 2.0 * labels
    _trial(experiment, "aaaa0001", good, ids, labels, speakers)  # the best
    _trial(experiment, "aaaa0002", good.copy(), ids, labels, speakers)  # the same scores: no difference
    _trial(experiment, "aaaa0003", base + 1.0 * labels, ids, labels, speakers, k=3)  # clearly worse
    _trial(experiment, "aaaa0004", None, ids, labels, speakers, k=4)  # an old trial: no dev scores kept
    (experiment / SWEEP_FILE).write_text(json.dumps({"state": "done", "total_trials": 4}))
    return experiment


def test_a_trial_with_the_same_dev_scores_as_the_best_is_indistinguishable(tmp_path):
    experiment = _experiment(tmp_path)
    trials = {t.trial_id: t for t in read_trials(experiment)}
    result = compare_to_best(trials["aaaa0001"], [trials["aaaa0002"]])["aaaa0002"]
    assert result.by_speaker and result.result is not None
    assert result.result.difference == 0.0 and result.result.p_value == 1.0


def test_a_clearly_worse_trial_is_distinguishable_with_p_below_one_percent(tmp_path):
    experiment = _experiment(tmp_path)
    trials = {t.trial_id: t for t in read_trials(experiment)}
    comparison = compare_to_best(trials["aaaa0001"], [trials["aaaa0003"]])["aaaa0003"].result
    assert comparison is not None
    assert comparison.difference == trials["aaaa0003"].best_dev_eer - trials["aaaa0001"].best_dev_eer > 0
    assert comparison.low > 0 and comparison.p_value < 0.01


def test_comparisons_align_the_utterances_by_id(tmp_path):
    experiment = tmp_path / "exp"
    ids, labels, base, speakers = _dev()
    scores = base + 2.0 * labels
    _trial(experiment, "bbbb0001", scores, ids, labels, speakers)
    order = np.random.default_rng(1).permutation(len(ids))  # the other trial's loader met them in another order
    _trial(experiment, "bbbb0002", scores[order], [ids[i] for i in order], labels[order], [speakers[i] for i in order])
    trials = {t.trial_id: t for t in read_trials(experiment)}
    result = compare_to_best(trials["bbbb0001"], [trials["bbbb0002"]])["bbbb0002"].result
    assert result is not None and result.difference == 0.0 and result.p_value == 1.0


def test_a_trial_scored_on_other_utterances_is_not_compared(tmp_path):
    experiment = tmp_path / "exp"
    ids, labels, base, speakers = _dev()
    _trial(experiment, "cccc0001", base + 2 * labels, ids, labels, speakers)
    _trial(experiment, "cccc0002", (base + 2 * labels)[:-1], ids[:-1], labels[:-1], speakers[:-1])
    trials = {t.trial_id: t for t in read_trials(experiment)}
    comparison = compare_to_best(trials["cccc0001"], [trials["cccc0002"]])["cccc0002"]
    assert comparison.result is None and "other dev utterances" in comparison.reason


def test_status_shows_the_interval_and_the_paired_comparisons_with_the_best(tmp_path):
    experiment = _experiment(tmp_path)
    result = CliRunner().invoke(cli, ["status", str(experiment)])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines() if line.startswith("aaaa")}
    assert "95% CI" in result.output and "vs best: points [95% CI] p" in result.output
    assert re.search(r"aaaa0001 +finished +2 +\S+% +\d+\.\d\d-\d+\.\d\d% +2 +best", rows["aaaa0001"])
    assert "+0.00 [+0.00, +0.00] p=1" in rows["aaaa0002"]
    worse = re.search(r"\+(\d+\.\d\d) \[\+(\d+\.\d\d), \+(\d+\.\d\d)\] p=(\S+)", rows["aaaa0003"])
    assert worse is not None and float(worse.group(4)) < 0.01
    assert "vs best: aaaa0004: no dev scores kept" in result.output


def test_the_vs_best_column_covers_only_the_top_trials(tmp_path):
    experiment = _experiment(tmp_path)
    cells, _ = vs_best_column(read_trials(experiment), top=2)
    assert set(cells) == {"aaaa0001", "aaaa0002"}


def test_the_report_says_which_trials_and_parameter_values_are_distinguishable_from_the_best(tmp_path):
    from cbl.report import build_report

    files = build_report(_experiment(tmp_path), tmp_path / "report", models=False, echo=lambda _: None)
    markdown = files.markdown.read_text()
    assert "## Is the best trial really better?" in markdown
    top = _rows(markdown, "trial | best dev EER | 95% CI | difference")
    assert top["aaaa0001"][3] == "best"
    assert top["aaaa0002"][3:] == ["+0.00 [+0.00, +0.00]", "1", "no"]
    assert top["aaaa0003"][5] == "yes" and float(top["aaaa0003"][4]) < 0.01
    assert top["aaaa0004"][5].startswith("unknown: ") and "no dev scores kept" in top["aaaa0004"][5]
    values = _rows(markdown, "parameter | value | its best trial", column=1)
    assert values["2"][2] == "aaaa0001" and values["2"][4] == "best"
    assert values["3"][2] == "aaaa0003" and values["3"][6] == "yes"
    assert values["4"][6].startswith("unknown")
    results = _rows(markdown, "rank | trial")
    assert re.fullmatch(r"\d+\.\d\d-\d+\.\d\d%", results["1"][5])  # the results table's 95% CI column
    assert re.search(r"\*\*Best trial\*\* `aaaa0001`: dev EER \S+% \(95% CI \S+%\) at epoch 2", markdown)


def _rows(markdown: str, header: str, column: int = 0) -> dict[str, list[str]]:
    """Cell ``column`` -> cells of each row of the Markdown table whose header starts with ``header``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header}"))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        rows[cells[column]] = cells
    return rows
