"""Row 9: RawBoost as published (vectorised) against the implementation before it, per core."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from cbl.bench.core import BenchContext, Row
from cbl.bench.rawboost_legacy import algorithm_4
from cbl.data.rawboost import apply_rawboost

__all__ = ["RAWBOOST_TARGET", "measure_rawboost"]


RAWBOOST_TARGET = 200.0  # utt/s per core for algorithm 4 on 4-s audio: a few loader workers feed a GPU trial


def measure_rawboost(ctx: BenchContext) -> list[Row]:
    """Utterances/s of RawBoost algorithm 4 (1+2+3) on 4-s audio (64,600 samples), one thread, ABAB.

    A: cbl's RawBoost as published (vectorised); B: the implementation before it
    (:mod:`cbl.bench.rawboost_legacy`: per-band filter design, direct filtering), kept
    for this row only. Each round times both on the same utterances.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the per-core figure (numpy and scipy's FFT run on one thread anyway)
    try:
        count = max(4, 4 * ctx.sizes.loader_batches)
        draw = np.random.default_rng(0)
        t = np.arange(64600) / 16000.0
        voiced = sum(np.sin(2 * np.pi * 140.0 * k * t) / k for k in range(1, 25))
        utterances = [
            (0.3 * np.abs(np.sin(2 * np.pi * 1.5 * t + i)) * voiced + 0.01 * draw.standard_normal(t.size)).astype(
                np.float32
            )
            for i in range(count)
        ]
        rates: dict[str, list[float]] = {"published": [], "previous": []}
        sides = {"published": lambda x, rng: apply_rawboost(x, 4, rng), "previous": algorithm_4}
        for round_ in range(max(2, ctx.sizes.pairs)):
            for name, augment in sides.items():
                started = time.perf_counter()
                for i, x in enumerate(utterances):
                    augment(x, np.random.default_rng([round_, i]))
                rates[name].append(count / (time.perf_counter() - started))
    finally:
        torch.set_num_threads(previous_threads)
    published, previous = statistics.median(rates["published"]), statistics.median(rates["previous"])
    return [
        Row(
            "9",
            "RawBoost algo 4 (1+2+3) on 4-s audio, one thread: as published (vectorised) vs the previous "
            "implementation (utterances/s)",
            "published",
            published,
            "previous",
            previous,
            "utt/s",
            f"published >= {RAWBOOST_TARGET:.0f}",
            published >= RAWBOOST_TARGET,
            note=f"64,600-sample speech-like signals, {count} per side and round, median of "
            f"{len(rates['published'])} ABAB rounds",
        )
    ]
