"""Storage that fills up or turns unwritable: one clear line, exit code 1, and nothing already written damaged."""

from __future__ import annotations

import errno
import os
import pathlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import cbl.yamlio
from cbl.cli import cli, describe_os_error
from cbl.config import resolve_config
from cbl.engine import load_checkpoint, read_history, save_checkpoint
from cbl.yamlio import atomic_write_text

from tiny import as_set_args

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def disk_full(fd: int, payload: bytes) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[str]:
    """Temporary files of an atomic write (``.NAME.XXXX.tmp``) anywhere under ``folder``."""
    return sorted(str(p) for p in folder.rglob("*.tmp"))


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, output
    return lines[0]


# --------------------------------------------------------------------------- the write itself
@pytest.mark.parametrize("fails_in", ["write", "fsync", "rename"])
def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary_file(monkeypatch, tmp_path, fails_in):
    target = tmp_path / "sweep.json"
    atomic_write_text(target, '{"state": "running"}')
    if fails_in == "write":
        monkeypatch.setattr(cbl.yamlio, "_write_all", disk_full)
    else:
        monkeypatch.setattr(cbl.yamlio.os, "fsync" if fails_in == "fsync" else "replace", lambda *a: disk_full(0, b""))
    with pytest.raises(OSError) as caught:
        atomic_write_text(target, '{"state": "finished"}')
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    monkeypatch.undo()
    assert target.read_text() == '{"state": "running"}'
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"]


def test_a_full_disk_keeps_the_previous_checkpoint_loadable(monkeypatch, tmp_path):
    config = resolve_config(None, demo=True)
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 0}, config)
    before = path.read_bytes()
    monkeypatch.setattr(cbl.yamlio, "_write_all", disk_full)
    with pytest.raises(OSError, match="No space left on device") as caught:
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 1}, config)
    assert caught.value.filename == str(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and leftovers(tmp_path) == []
    payload, _ = load_checkpoint(path)
    assert payload["epoch"] == 0 and torch.equal(payload["model"]["w"], torch.ones(3))


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "read-only file system"),
    ],
)
def test_storage_errors_are_one_sentence_naming_the_path(code, says):
    message = describe_os_error(OSError(code, os.strerror(code), "/runs/exp\nx/last.pt"))
    assert message.startswith("/runs/exp\\nx/last.pt: " + says) and "\n" not in message


# --------------------------------------------------------------------------- through the CLI
def test_disk_full_during_training_is_one_line_and_the_run_resumes(monkeypatch, tmp_path):
    """The disk fills while epoch 2's last.pt is written: exit 1, files intact, the rerun finishes the run."""
    out = tmp_path / "run"
    real_write = cbl.yamlio._write_all
    written_when_full: dict[str, bytes] = {}

    def full_at_second_last_pt(fd: int, payload: bytes) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if Path(name).name.startswith(".last.pt.") and (out / "checkpoints" / "last.pt").exists():
            written_when_full.update({k: v for k, v in file_bytes(out).items() if not k.endswith(".tmp")})
            disk_full(fd, payload)
        real_write(fd, payload)

    monkeypatch.setattr(cbl.yamlio, "_write_all", full_at_second_last_pt)
    args = ["train", "--demo", *as_set_args(), "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    line = error_line(result.output)
    assert line == (
        f"Error: {out / 'checkpoints' / 'last.pt'}: no space left on device; free some space, then rerun "
        "or resume (files already written are intact)"
    )
    assert "Traceback" not in result.output
    assert written_when_full and leftovers(out) == []
    after = file_bytes(out)
    for name, content in written_when_full.items():
        if name != "metrics.jsonl":  # epoch 2's line is already there; the rerun drops it (not checkpointed)
            assert after[name] == content, f"{name} changed after the disk filled"

    monkeypatch.setattr(cbl.yamlio, "_write_all", real_write)
    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    assert [m["epoch"] for m in read_history(out)] == [1, 2]


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_unwritable_storage_stops_run_before_anything_starts(monkeypatch, tmp_path, code):
    """What the kernel answers for a read-only folder (EACCES) or mount (EROFS); works as root too."""
    storage = tmp_path / "runs"
    real_mkdir = pathlib.Path.mkdir

    def refuse(self, *args, **kwargs):
        if str(self).startswith(str(storage)):
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    result = CliRunner().invoke(
        cli, ["run", str(SPACES / "loss_type.yaml"), "--demo", "--storage", str(storage), *as_set_args()]
    )
    assert result.exit_code == 1, result.output
    assert error_line(result.output).startswith(
        f"Error: {storage / 'loss_type'}: {'permission denied' if code == errno.EACCES else 'read-only'}"
    )
    assert "Traceback" not in result.output and not storage.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_storage_folder_is_one_line(tmp_path):
    storage = tmp_path / "runs"
    storage.mkdir()
    storage.chmod(0o555)
    try:
        result = CliRunner().invoke(
            cli, ["run", str(SPACES / "loss_type.yaml"), "--demo", "--storage", str(storage), *as_set_args()]
        )
    finally:
        storage.chmod(0o755)
    assert result.exit_code == 1, result.output
    assert error_line(result.output).startswith(f"Error: {storage / 'loss_type'}: permission denied")
    assert list(storage.iterdir()) == []


# ----------------------------------------------------------------------- out of memory (not storage, same CLI mapping)
@pytest.mark.parametrize(
    "error",
    [MemoryError(), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")],
    ids=["host", "cuda"],
)
def test_out_of_memory_is_one_line_with_what_to_do(monkeypatch, tmp_path, error):
    import cbl.engine

    def oom(*args, **kwargs):
        raise error

    monkeypatch.setattr(cbl.engine, "fit", oom)
    result = CliRunner().invoke(cli, ["train", "--demo", *as_set_args(), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    where = "GPU " if isinstance(error, torch.OutOfMemoryError) else ""
    assert error_line(result.output) == (
        f"Error: out of {where}memory (try a smaller train.batch_size, with "
        "optim.grad_accum to keep the effective batch)"
    )
