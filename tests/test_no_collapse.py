"""Refit-every-epoch training on the demo keeps the embedding spread out and the spoofs off the centers.

The seed's loss collapsed here: with k-means refit every epoch, every dev embedding
ended on the centers (mean pairwise cosine ~1, bonafide and spoof both at cosine
~1 to the nearest center). The checks read the checkpoint, not the run's own
diagnostics, so that the same test runs against code from before they existed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from cbl.config import resolve_config
from cbl.engine import fit

SMALL_DEMO = (
    "data.demo_utterances=240",
    "data.demo_seconds=0.5",
    "data.max_len=8000",
    "data.eval_window=8000",
    "train.epochs=4",
    "train.batch_size=8",
    "train.eval_batch_size=40",
    "train.num_threads=2",
    "loss.type=cluster_only",
    "centers.refresh_every=1",  # the default; the seed's demo profile avoided it with 1000
)
SPREAD_FLOOR = 0.9  # mean pairwise cosine of the dev embeddings: the collapsed seed loss ends at ~1.0


def dev_geometry(run_dir: Path) -> dict[str, float]:
    """Mean pairwise cosine of the final model's dev embeddings, and mean similarity to the nearest center."""
    from cbl.data import load_split, make_eval_loader
    from cbl.engine import embed, load_model

    loaded = load_model(run_dir / "checkpoints" / "last.pt", threads=2)
    records = load_split(loaded.config.data, "dev")
    out = embed(
        loaded.model, make_eval_loader(records, loaded.config.data, batch_size=40), loaded.config, loaded.device
    )
    z = F.normalize(out["embedding"], dim=-1).double()
    n = z.shape[0]
    nearest = (z.float() @ F.normalize(loaded.centers.centers, dim=-1).T).max(dim=1).values
    labels = out["label"]
    return {
        "mean_cosine": float(((z.sum(0) ** 2).sum() - n) / (n * (n - 1))),
        "bonafide": float(nearest[labels == 1].mean()),
        "spoof": float(nearest[labels == 0].mean()),
    }


def test_refits_every_epoch_keep_the_embedding_spread_and_the_spoofs_away(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    fit(resolve_config(None, SMALL_DEMO, demo=True), None, tmp_path / "run")
    geometry = dev_geometry(tmp_path / "run")
    assert geometry["mean_cosine"] < SPREAD_FLOOR, geometry
    assert geometry["bonafide"] - geometry["spoof"] > 0.1, geometry  # the centers still tell the classes apart
