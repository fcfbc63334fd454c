"""Long recordings at evaluation: fed in chunks of at most data.eval_max_len samples, memory bounded."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from cbl.config import ModelConfig, resolve_config
from cbl.engine import fit, forward_chunked
from cbl.model import build_model

from tiny import TINY


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(ssl="tiny", embedding_dim=16)).eval()


def test_short_batches_are_one_plain_forward(model):
    audio = torch.randn(3, 4000)
    with torch.no_grad():
        plain, chunked = model(audio), forward_chunked(model, audio, None, max_len=4000)
    torch.testing.assert_close(chunked.embedding, plain.embedding)
    torch.testing.assert_close(chunked.logits, plain.logits)


def test_long_audio_never_reaches_the_model_longer_than_max_len(model, monkeypatch):
    seen: list[tuple[int, ...]] = []
    forward = type(model).forward

    def spy(self, audio, attention_mask=None):
        seen.append(tuple(audio.shape))
        return forward(self, audio, attention_mask)

    monkeypatch.setattr(type(model), "forward", spy)
    audio = torch.randn(2, 10_000)
    mask = torch.ones(2, 10_000, dtype=torch.long)
    mask[1, 7_000:] = 0  # the second utterance is 7000 samples long
    with torch.no_grad():
        out = forward_chunked(model, audio, mask, max_len=3000, chunks_per_batch=2)
    assert out.embedding.shape == (2, 16) and out.logits.shape == (2, 2)
    assert max(shape[1] for shape in seen) <= 3000
    assert torch.allclose(out.embedding.norm(dim=-1), torch.ones(2))
    # 10000 -> 4 chunks of 2500 (2 calls of 2); 7000 -> 3 chunks of ~2333 (2 calls)
    assert [shape[0] for shape in seen] == [2, 2, 2, 1]
    # an utterance's result depends only on its own samples: row 1 alone gives the same
    with torch.no_grad():
        alone = forward_chunked(model, audio[1:, :7000], None, max_len=3000)
    torch.testing.assert_close(out.embedding[1], alone.embedding[0], rtol=1e-4, atol=1e-5)


def test_a_ten_minute_file_is_scored_within_bounded_memory(tmp_path):
    """`cbl-search score` on 10 minutes of audio: a finite score, and the process stays far below what one
    10-minute forward pass would need (30,000 frames: ~7 GB per attention layer of the tiny model alone)."""
    config = resolve_config(None, [*TINY, "train.epochs=1"], demo=True)
    fit(config, None, tmp_path / "run")
    long = tmp_path / "long.flac"
    rng = np.random.default_rng(0)
    sf.write(long, (0.1 * rng.standard_normal(16000 * 600)).astype(np.float32), 16000, subtype="PCM_16")
    script = (
        "import resource, sys; from cbl.cli import main; code = 0\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, "score", str(tmp_path / "run" / "checkpoints" / "best.pt"), str(long)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(out for out in result.stdout.splitlines() if out.startswith(str(long)) or "long.flac" in out)
    assert np.isfinite(float(line.split()[1]))
    peak_mib = int(result.stdout.split("MAXRSS")[1].split()[0]) / 1024  # ru_maxrss is in KiB on Linux
    assert peak_mib < 2500, f"peak resident memory {peak_mib:.0f} MiB"
