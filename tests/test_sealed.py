"""A sealed sweep: no part of it opens the eval split before the final evaluation; every scoring of held-out
data is logged; the Optuna study is kept in a journal file that optuna.load_study opens.

One small Optuna sweep (two trials) on a 2019 LA root written from the demo corpus, whose eval protocol and
eval audio are moved out of reach while the sweep runs: any read of them would fail a trial or the run. The
space file's final_eval scores the dev split and an In-the-Wild root at the end, so `run` itself is seen
doing the cross-corpus evaluation; `final-eval` scores the eval split once it is back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from cbl.cli import cli
from cbl.config import resolve_config
from cbl.data import demo_root, load_split
from cbl.sweep.store import read_trials

from corpus_roots import write_in_the_wild
from tiny import TINY_SWEEP, as_set_args

EVAL_PROTOCOL = Path("ASVspoof2019_LA_cm_protocols") / "ASVspoof2019.LA.cm.eval.trl.txt"
EVAL_AUDIO = Path("ASVspoof2019_LA_eval")


@pytest.mark.ray
def test_the_sweep_never_opens_eval_and_every_scoring_is_logged(ray_session, tmp_path):
    demo = resolve_config(None, TINY_SWEEP, demo=True).data
    root = tmp_path / "LA"
    shutil.copytree(demo_root(demo), root)
    itw = write_in_the_wild(tmp_path / "itw", load_split(demo, "eval"))
    sealed = tmp_path / "sealed"
    sealed.mkdir()
    (root / EVAL_PROTOCOL).rename(sealed / "protocol.txt")
    (root / EVAL_AUDIO).rename(sealed / "audio")
    space = tmp_path / "space.yaml"
    space.write_text(
        "name: sealed\nspace:\n  loss.alpha: {choice: [0.5, 2.0]}\n"
        "search: {algorithm: optuna, num_samples: 2, seed: 0}\nscheduler: {name: none}\n"
        f"final_eval:\n  split: dev\n  corpora:\n    in_the_wild: {itw}\n"
    )
    sets = ["--set", "data.corpus=asvspoof2019_la", "--set", f"data.root={root}", "--set", "model.ssl=tiny"]
    sets += ["--set", "loss.num_clusters=3", "--set", "train.device=cpu", *as_set_args(TINY_SWEEP)]
    result = CliRunner().invoke(cli, ["run", str(space), "--storage", str(tmp_path / "runs"), *sets])
    assert result.exit_code == 0, result.output
    experiment = tmp_path / "runs" / "sealed"
    trials = read_trials(experiment)
    assert len(trials) == 2 and all(t.state == "finished" and not t.error for t in trials)
    log = [json.loads(line) for line in (experiment / "final_eval" / "log.jsonl").read_text().splitlines()]
    # run scored the dev split and the In-the-Wild root at the end, nothing else
    assert [(entry["corpus"], entry["root"]) for entry in log] == [
        ("asvspoof2019_la", f"{root} (dev split)"),
        ("in_the_wild", str(itw)),
    ]
    summary = json.loads((experiment / "final_eval" / "summary.json").read_text())
    assert [row["corpus"] for row in summary["corpora"]] == ["in_the_wild"]

    (sealed / "protocol.txt").rename(root / EVAL_PROTOCOL)
    (sealed / "audio").rename(root / EVAL_AUDIO)
    final = CliRunner().invoke(cli, ["final-eval", str(experiment)])
    assert final.exit_code == 0, final.output
    log = [json.loads(line) for line in (experiment / "final_eval" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and log[-1]["root"] == f"{root} (eval split)"
    assert log[-1]["signature"].startswith(str((experiment / "trials").resolve()))

    # the Optuna study, from its journal file in the experiment folder
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(experiment / "optuna_journal.log"))
    )
    study = optuna.load_study(study_name="sealed", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2
    assert sorted(t.value for t in done) == sorted(t.last_dev_eer for t in trials)
    assert {t.params["loss.alpha"] for t in done} <= {0.5, 2.0}
