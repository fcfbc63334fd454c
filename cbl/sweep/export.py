"""A reproducibility bundle of a finished sweep: ``cbl-search export EXPERIMENT_DIR OUT_DIR``.

``OUT_DIR`` receives:

- ``config.yaml``: the best trial's resolved config (``cbl-search train OUT_DIR/config.yaml`` trains it again);
- ``bundle.json``: the best trial, its seeds, its dev-EER threshold, cbl's version and git commit (when cbl
  runs from a git checkout), Python's and the dependencies' versions, and the sha256 of every protocol file the
  runs read (train, dev, eval, and each corpus of the cross-corpus final evaluation);
- ``final_eval/``: the score files, the summaries and ``log.jsonl`` of the final evaluation, as they are.

Every file is written under a temporary name and renamed; an existing bundle is replaced file by file.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import cbl
from cbl.config import DataConfig, load_config
from cbl.data import load_split
from cbl.errors import CblError, UsageError
from cbl.sweep.cross_corpus import corpus_data  # the root -> protocol rule the final evaluation used
from cbl.sweep.final_eval import FINAL_DIR, export_best_config, require_best
from cbl.sweep.settings import SweepSettings
from cbl.sweep.store import read_sweep
from cbl.yamlio import atomic_write_bytes, atomic_write_text

__all__ = ["BUNDLE_FILE", "PACKAGES", "export_bundle", "file_sha256", "git_commit"]

BUNDLE_FILE = "bundle.json"
# the dependencies whose versions a result depends on (pyproject.toml's), and what tests run with
PACKAGES = (
    "torch",
    "torchaudio",
    "transformers",
    "ray",
    "optuna",
    "scikit-learn",
    "numpy",
    "scipy",
    "soundfile",
    "click",
    "tensorboard",
    "PyYAML",
)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> dict[str, Any] | None:
    """The commit of the cbl source tree and whether it had uncommitted changes; None outside a git checkout."""
    source = Path(cbl.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(status.strip())}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _protocols(data: DataConfig, corpora: dict[str, str]) -> dict[str, dict[str, str]]:
    """``name -> {path, sha256}`` of the protocol file of each split and of each cross-corpus root."""
    readable = replace(data, skip_missing=True, max_train_utterances=0)
    sources = {split: readable for split in ("train", "dev", "eval")}
    sources.update({f"final_eval:{name}": corpus_data(readable, name, Path(root)) for name, root in corpora.items()})
    out = {}
    for name, source in sources.items():
        split = name if not name.startswith("final_eval:") else "eval"
        try:
            path = Path(load_split(source, split).source)
        except CblError:
            continue  # not there on this machine (an eval root moved away): the bundle says what it could check
        out[name] = {"path": str(path), "sha256": file_sha256(path)}
    return out


def export_bundle(experiment_dir: Path, out_dir: Path) -> Path:
    """Write the bundle of ``experiment_dir`` into ``out_dir``; returns the path of ``bundle.json``."""
    sweep = read_sweep(experiment_dir)
    if sweep.get("state") != "finished":
        raise UsageError(f"{experiment_dir}: the sweep is {sweep.get('state', 'not started')}; export a finished one")
    best = require_best(experiment_dir)
    if out_dir.resolve() == experiment_dir.resolve() or experiment_dir.resolve() in out_dir.resolve().parents:
        raise UsageError(f"{out_dir}: give a folder outside the experiment folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = export_best_config(experiment_dir, best, out_dir / "config.yaml")
    config = load_config(best.path / "config.yaml")
    final_dir = experiment_dir / FINAL_DIR
    copied = []
    for path in sorted(final_dir.glob("*")) if final_dir.is_dir() else []:
        if path.is_file() and not path.name.endswith(".partial") and not path.name.startswith("."):
            atomic_write_bytes(out_dir / FINAL_DIR / path.name, path.read_bytes())
            copied.append(f"{FINAL_DIR}/{path.name}")
    corpora = {}
    for path in sorted((final_dir / "corpora").glob("*.json")):
        stored = json.loads(path.read_text(encoding="utf-8"))
        corpora[stored["corpus"]] = stored["root"]
    best_row = best.history[best.best_epoch - 1] if 0 < best.best_epoch <= len(best.history) else {}
    bundle = {
        "experiment": experiment_dir.name,
        "best_trial": best.trial_id,
        "params": best.params,
        "dev_eer": best.best_dev_eer,
        "dev_epoch": best.best_epoch,
        "threshold": best_row.get("dev_threshold"),
        "seeds": {
            "train.seed": config.train.seed,
            "search.seed": SweepSettings(**sweep["settings"]).space().seed,
            "data.demo_seed": config.data.demo_seed if config.data.corpus == "demo" else None,
        },
        "retrain": f"cbl-search train {config_path.name}",
        "cbl": {"version": cbl.__version__, "git": git_commit()},
        "versions": _versions(),
        "protocols": _protocols(config.data, corpora),
        "files": ["config.yaml", *copied],
    }
    return atomic_write_text(out_dir / BUNDLE_FILE, json.dumps(bundle, indent=2))
