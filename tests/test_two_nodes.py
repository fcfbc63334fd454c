"""A sweep on a two-node Ray cluster (Ray's local multi-node facility): trials run on both nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tiny import QUICK_CENTERS, TINY_SWEEP, as_set_args

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"

SCRIPT = textwrap.dedent("""
    import sys
    from cbl.sweep import quiet_ray_environment
    quiet_ray_environment()
    import ray
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    from cbl.cli import main
    code = 0
    try:
        main(sys.argv[1:] + ["--address", cluster.address])
    except SystemExit as exc:
        code = exc.code or 0
    finally:
        ray.shutdown()
        cluster.shutdown()
    sys.exit(code)
""")


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_runs_trials_on_both_nodes(tmp_path):
    env = {**os.environ, "CBL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    args = [
        "run",
        str(SPACES / "loss_type.yaml"),
        "--demo",
        "--storage",
        str(tmp_path / "runs"),
        "--no-final-eval",
        # 3 epochs: a trial must outlast the next one's start, or Ray may run all three on the freed head node
        # one after another (seen with 1-epoch tiny trials on a quiet machine and under load alike)
        *as_set_args((*TINY_SWEEP, QUICK_CENTERS, "train.epochs=3", "loss.num_clusters=2")),
    ]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "loss_type" / "trials").glob("*/trial.json")]
    assert len(trials) == 3 and all(t["state"] == "finished" for t in trials)
    assert len({t["node_id"] for t in trials}) == 2, "all trials ran on one node"
