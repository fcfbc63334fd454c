"""The tiny demo settings every training, evaluation and sweep test shares (seconds per run on 2 cores).

One definition: a test that needs other sizes lays its own ``KEY=VALUE`` after these
(the later one wins).
"""

TINY = (
    "data.demo_utterances=40",
    "data.demo_seconds=0.5",
    "data.max_len=8000",
    "data.eval_window=8000",
    "loss.num_clusters=4",
    "train.epochs=2",
    "train.batch_size=8",
    "train.eval_batch_size=20",
    "train.num_threads=1",
)

# A sweep's trials: the same sizes without loss.num_clusters (a --set has the last word, so it would replace a
# searched K).
TINY_SWEEP = tuple(item for item in TINY if not item.startswith("loss.num_clusters="))
# A capped initial center pass, for sweeps whose K stays below its 16 bonafide utterances.
QUICK_CENTERS = "centers.init_max_utterances=16"


def as_set_args(items=TINY) -> list[str]:
    """``("a=1", ...)`` -> ``["--set", "a=1", ...]`` for the command line."""
    return [arg for item in items for arg in ("--set", item)]
