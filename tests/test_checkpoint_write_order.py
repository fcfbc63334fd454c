"""One resume checkpoint per run: last.pt checked before it replaces the old one; a kill at any step resumes."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import cbl.yamlio
from cbl.config import resolve_config
from cbl.engine.checkpoint import CheckpointError
from cbl.engine.run_dir import resume_payload, write_epoch
from cbl.engine.trainer import fit

from tiny import TINY


class Killed(BaseException):
    """What a SIGKILL does to the write: nothing after this point runs."""


def setup_run(run_dir: Path, *overrides: str):
    config = resolve_config(None, list(overrides), demo=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_epoch(run_dir, {"epoch": 1}, epoch_payload(0), config, improved=True)
    return config


def epoch_payload(epoch: int) -> dict:
    return {"model": {"w": torch.full((4,), float(epoch))}, "epoch": epoch}


def kill_at_call(monkeypatch, n: int) -> list[str]:
    """Let the first ``n`` os.replace/os.unlink calls run, raise Killed instead of call n + 1."""
    calls: list[str] = []
    for name in ("replace", "unlink"):
        real = getattr(os, name)

        def step(*args, _real=real, _name=name, **kwargs):
            if len(calls) == n:
                raise Killed(_name)
            calls.append(f"{_name}({', '.join(re.sub(r'[.][^.]+[.]tmp$', '.tmp', Path(a).name) for a in args)})")
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, step)
    return calls


@pytest.mark.parametrize("keep_previous", [False, True])
def test_a_kill_after_any_step_of_an_epoch_write_leaves_a_loadable_checkpoint(monkeypatch, tmp_path, keep_previous):
    overrides = [f"train.keep_previous_checkpoint={str(keep_previous).lower()}"]
    finished_at = None
    for n in range(10):
        run_dir = tmp_path / f"kill{n}"
        config = setup_run(run_dir, *overrides)
        calls = kill_at_call(monkeypatch, n)
        try:
            write_epoch(run_dir, {"epoch": 2}, epoch_payload(1), config, improved=True)
        except Killed:
            pass
        else:
            finished_at = n
        monkeypatch.undo()
        payload, path = resume_payload(run_dir, config)
        assert payload is not None, (n, calls)
        # before the new last.pt is in place the run resumes from epoch 1's checkpoint, after it from epoch 2's
        renamed = any(c.startswith("replace(.last.pt.") for c in calls)
        assert payload["epoch"] == (1 if renamed else 0), (n, calls, path)
        assert torch.equal(payload["model"]["w"], torch.full((4,), float(payload["epoch"])))
        if finished_at is not None:
            break
    assert finished_at is not None
    if keep_previous:  # the old last.pt moved aside first, then the new one written
        assert calls == [
            "replace(.best.pt.tmp, best.pt)",
            "replace(last.pt, previous.pt)",
            "replace(.last.pt.tmp, last.pt)",
        ]
    else:  # the new last.pt in place, then a previous.pt (none here) removed
        assert calls == ["replace(.best.pt.tmp, best.pt)", "replace(.last.pt.tmp, last.pt)", "unlink(previous.pt)"]
    ckpt = tmp_path / f"kill{finished_at}" / "checkpoints"
    assert (ckpt / "previous.pt").exists() == keep_previous
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(["best.pt", "last.pt"] + ["previous.pt"] * keep_previous)


def test_the_new_last_checkpoint_replaces_the_old_one_and_only_then_previous_goes(monkeypatch, tmp_path):
    config = setup_run(tmp_path)
    (tmp_path / "checkpoints" / "previous.pt").write_bytes((tmp_path / "checkpoints" / "last.pt").read_bytes())
    calls = kill_at_call(monkeypatch, 100)
    write_epoch(tmp_path, {"epoch": 2}, epoch_payload(1), config, improved=False)
    assert calls == ["replace(.last.pt.tmp, last.pt)", "unlink(previous.pt)"]
    assert not (tmp_path / "checkpoints" / "previous.pt").exists()


def test_a_checkpoint_the_storage_garbles_is_refused_and_the_old_one_kept(monkeypatch, tmp_path):
    config = setup_run(tmp_path)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    real_write = cbl.yamlio._write_all

    def garbled(fd: int, payload: bytes) -> None:  # one bit flipped on its way to the disk
        real_write(fd, payload[:100] + bytes([payload[100] ^ 1]) + payload[101:])

    monkeypatch.setattr(cbl.yamlio, "_write_all", garbled)
    with pytest.raises(CheckpointError, match=r"last\.pt: the checkpoint read back differs from the one written"):
        write_epoch(tmp_path, {"epoch": 2}, epoch_payload(1), config, improved=False)
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.parametrize("keep_previous", [False, True])
def test_training_keeps_previous_checkpoint_only_when_asked(tmp_path, keep_previous):
    sets = ["loss.type=ce_only", "train.epochs=2", f"train.keep_previous_checkpoint={str(keep_previous).lower()}"]
    config = resolve_config(None, [*TINY, *sets], demo=True)
    fit(config, None, tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    resume_files = ["last.pt", "previous.pt"] if keep_previous else ["last.pt"]
    assert names == ["best.pt", "best_dev_scores.txt", *resume_files]
    payload, _ = resume_payload(tmp_path, config)
    assert payload is not None and payload["epoch"] == 1
