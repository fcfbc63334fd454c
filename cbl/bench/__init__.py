"""``cbl-search bench``: what the framework adds to the cost of training, as one table of side-by-side ratios.

Every row compares two things measured in the same run on the same machine (a
ratio of two noisy timings taken minutes apart says little), on the built-in demo
corpus with the tiny model; with a GPU, the model-bound rows are repeated with a
wav2vec2-base-sized random-init model (no download). The numbers go to a JSON
file too, with the machine they came from. A benchmark, not a test: nothing here
asserts a timing.

Each measurement is a function ``measure_<name>(ctx) -> list[Row]`` registered in
:data:`MEASUREMENTS` (``run``); ``--only`` picks some of them by name. Modules:
``core`` (sizes, rows, the context, demo configs, the table), ``processes``
(wall time and memory of a process tree), one module per group of rows
(``training`` 1/3/4, ``refit`` 4r, ``sweeps`` 2/7, ``search`` 5, ``evaluation`` 6,
``feature_cache`` 8, ``rawboost`` 9, ``full_size`` 10, ``uncertainty`` 11, ``disk`` 12), ``run``.
"""

from cbl.bench.core import SIZES, BenchContext, Row, Sizes, format_table, machine_info
from cbl.bench.run import MEASUREMENTS, OPT_IN, parse_only, run_bench, sizes_for
from cbl.bench.search import replay_search

__all__ = [
    "MEASUREMENTS",
    "OPT_IN",
    "SIZES",
    "BenchContext",
    "Row",
    "Sizes",
    "format_table",
    "machine_info",
    "parse_only",
    "replay_search",
    "run_bench",
    "sizes_for",
]
