"""The tiny demo settings the training and evaluation tests share (seconds per run on 2 cores)."""

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


def as_set_args(items=TINY) -> list[str]:
    """``("a=1", ...)`` -> ``["--set", "a=1", ...]`` for the command line."""
    return [arg for item in items for arg in ("--set", item)]
