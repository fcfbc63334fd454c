"""cbl-search report: tables, importance, figures, HTML, projector, CLI.

The experiment is built without Ray, once per module: three tiny trials trained
with :func:`cbl.engine.fit` into the folder layout a sweep leaves (sweep.json from
:class:`cbl.sweep.settings.SweepSettings`, trial.json via ``write_trial_state``), one of
them cut after its first epoch as ASHA would.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import re
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from cbl.cli import cli
from cbl.report import build_report
from cbl.report.tables import Importance, marginal_rows, param_importance
from cbl.sweep.space import Param
from cbl.sweep.store import TrialInfo, write_sweep, write_trial_state

from tiny import QUICK_CENTERS, TINY_SWEEP

TINY_SETS = [*TINY_SWEEP, QUICK_CENTERS]
CLUSTER_TYPES = ["cluster_only", "combined"]
SPACE = {
    "name": "reportdemo",
    "fixed": {"train.epochs": 2},
    "space": {
        "loss.type": {"choice": ["cluster_only", "combined", "ce_only"]},
        "loss.num_clusters": {"choice": [2, 3], "when": {"loss.type": CLUSTER_TYPES}},
        "loss.alpha": {"choice": [0.5, 1.0], "when": {"loss.type": CLUSTER_TYPES}},
        "model.pooling": {"choice": ["mean", "max"]},
        "optim.lr": {"loguniform": [1.0e-3, 1.0e-2]},
    },
    "search": {"algorithm": "optuna", "num_samples": 3, "seed": 0},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3},
}
# trial id -> (sampled parameters, epochs it runs before its state is written)
TRIALS = {
    "a1b2c_00000": (
        {
            "loss.type": "cluster_only",
            "loss.num_clusters": 2,
            "loss.alpha": 1.0,
            "model.pooling": "mean",
            "optim.lr": 0.003,
        },
        2,
    ),
    "a1b2c_00001": (
        {"loss.type": "combined", "loss.num_clusters": 3, "loss.alpha": 0.5, "model.pooling": "max", "optim.lr": 0.006},
        1,
    ),
    "a1b2c_00002": ({"loss.type": "ce_only", "model.pooling": "max", "optim.lr": 0.002}, 2),
}


class _StoppedByAsha(Exception):
    pass


class _StopAfter:
    """Stands in for ASHA: the trial is killed right after its report of epoch ``epochs``."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def report(self, metrics, checkpoint_dir):
        if metrics["epoch"] >= self.epochs:
            raise _StoppedByAsha


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    from cbl.engine import fit
    from cbl.sweep.settings import SweepSettings

    exp = tmp_path_factory.mktemp("storage") / SPACE["name"]
    settings = SweepSettings(
        space_data=SPACE,
        space_source="report_space.yaml",
        demo=True,
        set_options=TINY_SETS,
        experiment_dir=str(exp),
        num_samples=3,
    )
    write_sweep(exp, {"settings": asdict(settings), "state": "running", "started": time.time(), "total_trials": 3})
    for trial_id, (params, epochs) in TRIALS.items():
        path = exp / "trials" / trial_id
        write_trial_state(path, trial_id=trial_id, params=params, state="running", error="")
        config = settings.trial_config(params)
        with contextlib.suppress(_StoppedByAsha):
            fit(config, _StopAfter(epochs) if epochs < config.train.epochs else None, path)
        write_trial_state(path, state="finished" if epochs == config.train.epochs else "stopped")
    write_sweep(exp, {**json.loads((exp / "sweep.json").read_text()), "state": "finished"})
    return exp


@pytest.fixture(scope="module")
def report(experiment, tmp_path_factory):
    lines: list[str] = []
    files = build_report(experiment, tmp_path_factory.mktemp("report"), max_points=30, echo=lines.append)
    return files, files.markdown.read_text(), lines


def _best_eer(experiment: Path, trial_id: str) -> float:
    lines = (experiment / "trials" / trial_id / "metrics.jsonl").read_text().splitlines()
    return min(json.loads(line)["dev_eer"] for line in lines if line.strip())


def _table(markdown: str, header: str) -> list[list[str]]:
    """Rows (cells) of the Markdown table whose header starts with the cells ``header`` ("a | b")."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


# --------------------------------------------------------------------------- the report files
def test_report_writes_markdown_html_and_every_figure(report):
    files, markdown, _ = report
    names = {p.name for p in files.figures}
    assert {"learning_curves.png", "importance.png", "det_eval.png", "attack_eer_eval.png"} <= names
    # the best trial and its counterpart; the ce_only trial is one of them either way
    embeddings = {n for n in names if n.startswith("embeddings_")}
    assert len(embeddings) == 2 and "embeddings_a1b2c_00002.png" in embeddings
    for path in [files.markdown, files.html, *files.figures]:
        assert path.is_file() and path.stat().st_size > 0
    for path in files.figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({path.name})" in markdown
    assert not list(files.markdown.parent.glob(".*.tmp"))  # atomic writes leave no temporaries
    assert files.warnings == []


def test_results_table_holds_every_trial_sorted_by_dev_eer(experiment, report):
    _, markdown, _ = report
    rows = _table(markdown, "rank")
    expected = sorted(TRIALS, key=lambda t: (_best_eer(experiment, t), t))
    assert [row[1] for row in rows] == expected
    for row in rows:
        _params, epochs = TRIALS[row[1]]
        assert row[2] == ("stopped" if epochs == 1 else "finished")
        assert row[3] == str(epochs)
        assert row[4] == _pct(_best_eer(experiment, row[1]))
    header = markdown.splitlines()[
        markdown.splitlines().index(next(line for line in markdown.splitlines() if line.startswith("| rank |")))
    ]
    assert "loss.num_clusters" in header and "optim.lr" in header
    ce_row = next(row for row in rows if row[1] == "a1b2c_00002")
    assert ce_row[header.strip("|").split(" | ").index("loss.num_clusters")].strip() == "-"


def test_marginal_table_matches_an_independent_computation(experiment, report):
    _, markdown, _ = report
    rows = {(r[0], r[1]): r[2:] for r in _table(markdown, "parameter | value")}
    for key in ("loss.type", "loss.num_clusters", "loss.alpha", "model.pooling"):
        values = {params[key] for params, _ in TRIALS.values() if key in params}
        for value in values:
            eers = [_best_eer(experiment, t) for t, (params, _) in TRIALS.items() if params.get(key) == value]
            assert rows[(key, str(value))] == [str(len(eers)), _pct(min(eers)), _pct(statistics.median(eers))]
    # continuous: binned over the searched range, every trial in exactly one bin
    lr_rows = [(value, cells) for (key, value), cells in rows.items() if key == "optim.lr"]
    assert lr_rows and all(value.startswith("[") for value, _ in lr_rows)
    assert sum(int(cells[0]) for _, cells in lr_rows) == len(TRIALS)
    assert "`optim.lr` is continuous" in markdown


def test_importance_uses_finished_trials_and_names_what_it_left_out(report):
    _, markdown, _ = report
    rows = {r[0]: float(r[1]) for r in _table(markdown, "parameter | importance")}
    assert set(rows) == {"loss.type", "model.pooling", "optim.lr"}
    assert math.isclose(sum(rows.values()), 1.0, abs_tol=0.01)
    assert "on the 2 finished trials" in markdown
    assert "`loss.num_clusters`: absent from 1 of 2 finished trials" in markdown


def test_model_sections_compare_best_and_ce_only_with_seen_and_unseen_attacks(report):
    _, markdown, _ = report
    roles = {row[0] for row in _table(markdown, "role")}
    assert "best trial" in roles and len(roles) == 2
    attack_rows = {row[0]: row[1] for row in _table(markdown, "attack")}
    assert {a: attack_rows[a] for a in ("A01", "A04", "A05", "A06")} == {
        "A01": "yes",
        "A04": "yes",
        "A05": "no",
        "A06": "no",
    }


def test_html_is_self_contained_with_embedded_images(report):
    files, _, _ = report
    page = files.html.read_text()
    images = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert len(images) == len(files.figures)
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert "<table>" in page and "a1b2c_00001" in page


def test_projector_gets_the_embeddings_with_metadata(experiment, report):
    files, _, _ = report
    assert files.projector == experiment / "projector"
    config = (files.projector / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == 2
    metadata = sorted(files.projector.glob("00000/*/metadata.tsv"))
    assert len(metadata) == 2
    lines = metadata[0].read_text().splitlines()
    assert lines[0] == "label\tattack\tnearest_center"
    assert {line.split("\t")[0] for line in lines[1:]} <= {"bonafide", "spoof", "center"}


def test_second_report_reuses_the_cached_passes(experiment, report, tmp_path):
    _, _, first_lines = report
    assert any("scoring the eval split" in line for line in first_lines)
    cache = report[0].markdown.parent / "cache"
    out = tmp_path / "again"
    out.mkdir()
    (out / "cache").mkdir()
    for file in cache.iterdir():
        (out / "cache" / file.name).write_bytes(file.read_bytes())
    lines: list[str] = []
    again = build_report(experiment, out, max_points=30, echo=lines.append)
    assert lines == []
    assert _table(again.markdown.read_text(), "role") == _table(report[1], "role")


# --------------------------------------------------------------------------- CLI
def test_cli_report_writes_into_the_experiment_by_default(experiment):
    result = CliRunner().invoke(cli, ["report", str(experiment), "--no-models"])
    assert result.exit_code == 0, result.output
    assert (experiment / "report" / "report.md").is_file()
    assert (experiment / "report" / "report.html").is_file()
    assert "report written" in result.output


def test_cli_report_on_a_folder_that_is_no_experiment_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a cbl experiment folder" in result.output


# --------------------------------------------------------------------------- tables without a model
def _trial(trial_id: str, params: dict, state: str, eer: float) -> TrialInfo:
    history = [] if math.isnan(eer) else [{"epoch": 1, "dev_eer": eer}]
    return TrialInfo(trial_id, params, state, len(history), eer, 1 if history else 0, eer, "", Path(trial_id), history)


def test_importance_with_fewer_than_two_finished_trials_says_so():
    trials = [
        _trial("t1", {"model.pooling": "mean", "optim.lr": 0.01}, "finished", 0.2),
        _trial("t2", {"model.pooling": "max", "optim.lr": 0.02}, "stopped", 0.3),
    ]
    result = param_importance(trials, ["model.pooling", "optim.lr"], {})
    assert result.values == {} and "1 finished trial(s)" in result.reason


def test_importance_with_one_varying_parameter_says_so():
    trials = [
        _trial(f"t{i}", {"model.pooling": "mean", "optim.lr": 0.01 * (i + 1)}, "finished", 0.1 * i) for i in range(3)
    ]
    result = param_importance(trials, ["model.pooling", "optim.lr"], {})
    assert isinstance(result, Importance) and result.values == {}
    assert "1 parameter(s) left to compare (optim.lr)" in result.reason
    assert any("`model.pooling`: one value" in why for why in result.left_out)


def test_marginal_rows_list_unsampled_values_and_skip_trials_without_eer():
    param = Param("loss.num_clusters", "choice", values=(5, 10, 15))
    trials = [
        _trial("t1", {"loss.num_clusters": 5}, "finished", 0.2),
        _trial("t2", {"loss.num_clusters": 5}, "stopped", 0.4),
        _trial("t3", {"loss.num_clusters": 10}, "error", math.nan),
    ]
    rows, _ = marginal_rows(trials, ["loss.num_clusters"], {"loss.num_clusters": param})
    by_value = {r.value: r for r in rows}
    assert by_value["5"].trials == 2 and by_value["5"].best == 0.2 and math.isclose(by_value["5"].median, 0.3)
    assert by_value["10"].trials == 0 and by_value["15"].trials == 0


def test_learning_curves_draw_running_trials_and_ignore_pending_ones():
    from cbl.report.figures import learning_curves

    png = learning_curves(
        [("t1", "running", [1, 2], [0.4, 0.3]), ("t2", "pending", [], []), ("t3", "stopped", [1], [0.45])], best="t1"
    )
    assert png[:4] == b"\x89PNG"


def test_report_reuses_the_final_eval_scores_of_the_best_checkpoint(experiment, tmp_path):
    from cbl.sweep.final_eval import final_evaluation

    final = final_evaluation(experiment, echo=lambda line: None)
    lines: list[str] = []
    files = build_report(experiment, tmp_path / "with_final", max_points=30, echo=lines.append)
    assert not any(f"scoring the eval split (40 utterances) with trial {final.trial_id}" in line for line in lines)
    markdown = files.markdown.read_text()
    assert f"`{final.score_files[0]}`" in markdown
    best_row = next(row for row in _table(markdown, "role") if row[0] == "best trial")
    assert best_row[5] == _pct(final.selection[1])


def test_report_shows_the_embedding_diagnostics_of_every_trial(report, experiment):
    files, markdown, _ = report
    assert "diagnostics.png" in {p.name for p in files.figures}
    rows = {r[0]: r for r in _table(markdown, "trial | epoch | empty centers")}
    assert set(rows) == set(TRIALS)  # every trial reported an epoch with diagnostics
    for trial_id, row in rows.items():
        last = json.loads((experiment / "trials" / trial_id / "metrics.jsonl").read_text().splitlines()[-1])
        assert row[1] == str(last["epoch"]) and row[7] == f"{last['embedding_mean_cosine']:.2f}"
        if "cluster_sizes" in last:  # the cluster losses: sizes by center id, as in metrics.jsonl
            assert row[2] == f"{last['cluster_empty_clusters']}/{len(last['cluster_sizes'])}"
            assert row[3] == " ".join(str(n) for n in last["cluster_sizes"])
            assert row[4] == f"{last['cluster_bonafide_similarity']:.2f}"
        else:
            assert row[2:7] == ["-"] * 5


def test_ablation_panels_draw_one_panel_per_parameter():
    from matplotlib.image import imread

    from cbl.report.figures import ablation_panels

    one = ablation_panels([("loss.num_clusters", [("5", 0.05, 0.06), ("10", 0.04, 0.05)])], "K")
    three = ablation_panels([("a", [("x", 0.1, 0.2)]), ("b", [("y", 0.1, 0.2)]), ("c", [("z", 0.3, 0.3)])], "three")
    assert one[:4] == three[:4] == b"\x89PNG"
    widths = [imread(io.BytesIO(png)).shape[1] for png in (one, three)]
    assert widths[1] > 2 * widths[0]  # side by side
