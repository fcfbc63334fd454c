"""Per-epoch embedding diagnostics (spread, center sizes, similarities), the collapse warning, the eval-mode refit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cbl.config import resolve_config
from cbl.diagnostics import (
    collapse_reasons,
    collapse_warning,
    effective_rank,
    embedding_diagnostics,
    mean_pairwise_cosine,
)
from cbl.engine import fit, read_history
from cbl.sweep.store import TrialInfo

from tiny import TINY

torch.set_num_threads(2)


def test_effective_rank_is_one_for_a_point_and_d_for_orthogonal_directions() -> None:
    assert effective_rank(torch.ones(50, 8)) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(torch.eye(6).repeat(5, 1)) == pytest.approx(6.0, rel=1e-6)
    two = torch.cat([torch.eye(8)[0].repeat(30, 1), torch.eye(8)[1].repeat(10, 1)])
    assert 1.0 < effective_rank(two) < 2.0  # two directions, unevenly filled
    assert math.isnan(effective_rank(torch.ones(1, 8)))


def test_mean_pairwise_cosine_matches_the_brute_force() -> None:
    z = F.normalize(torch.randn(40, 16, generator=torch.Generator().manual_seed(0)) + 0.7, dim=-1)
    similarity = z @ z.T
    brute = (similarity.sum() - similarity.diagonal().sum()) / (40 * 39)
    assert mean_pairwise_cosine(z) == pytest.approx(float(brute), abs=1e-6)
    assert mean_pairwise_cosine(torch.ones(5, 3)) == pytest.approx(1.0)
    assert math.isnan(mean_pairwise_cosine(torch.ones(1, 3)))


def test_embedding_diagnostics_keys_and_values() -> None:
    centers = torch.eye(3, 8)
    bonafide = torch.stack([torch.eye(8)[0], torch.eye(8)[0], torch.eye(8)[1]])
    spoof = -torch.eye(8)[:2]
    z = torch.cat([bonafide, spoof])
    labels = torch.tensor([1, 1, 1, 0, 0])
    out = embedding_diagnostics(z, labels, centers)
    assert out["cluster_sizes"] == [2, 1, 0]
    assert (out["cluster_size_c0"], out["cluster_size_c1"], out["cluster_size_c2"]) == (2, 1, 0)
    assert out["cluster_empty_clusters"] == 1
    assert out["cluster_bonafide_similarity"] == pytest.approx(1.0)
    assert out["cluster_spoof_similarity"] == pytest.approx(0.0)
    assert out["cluster_similarity_gap"] == pytest.approx(1.0)
    assert out["embedding_mean_cosine"] == pytest.approx(mean_pairwise_cosine(z))
    no_centers = embedding_diagnostics(z, labels, None)
    assert set(no_centers) == {"embedding_effective_rank", "embedding_mean_cosine"}


def collapsed_metrics(**extra):
    return {
        "epoch": 6,
        "embedding_mean_cosine": 0.999,
        "cluster_bonafide_similarity": 1.0,
        "cluster_spoof_similarity": 1.0,
        "cluster_sizes": [40, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        "cluster_empty_clusters": 8,
        **extra,
    }


def test_a_collapsed_epoch_gives_one_warning_line_naming_what_to_change() -> None:
    config = resolve_config(None, ["loss.type=cluster_only"])
    line = collapse_warning(collapsed_metrics(), config)
    assert line is not None and "\n" not in line
    assert line.startswith("warning: the embedding collapsed by epoch 6")
    assert "mean pairwise cosine 1.00" in line and "8 of 10 centers empty" in line
    assert "loss.alpha" in line
    assert len(collapse_reasons(collapsed_metrics())) == 3


def test_a_healthy_epoch_gives_no_warning() -> None:
    healthy = {
        "epoch": 6,
        "embedding_mean_cosine": 0.3,
        "cluster_bonafide_similarity": 0.85,
        "cluster_spoof_similarity": 0.2,
        "cluster_sizes": [5, 6, 7, 0, 5],
        "cluster_empty_clusters": 1,
    }
    assert collapse_reasons(healthy) == [] and collapse_warning(healthy) is None


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    # refit_step 1: the centers are then k-means' own, a fixed point of the points they were fitted on
    config = resolve_config(
        None, [*TINY, "loss.type=cluster_only", "centers.refresh_every=1", "centers.refit_step=1"], demo=True
    )
    run_dir = tmp_path_factory.mktemp("run")
    fit(config, None, run_dir)
    return config, run_dir


def test_every_epoch_writes_the_diagnostics(tiny_run) -> None:
    config, run_dir = tiny_run
    history = read_history(run_dir)
    assert len(history) == config.train.epochs
    for metrics in history:
        k = config.loss.num_clusters
        assert len(metrics["cluster_sizes"]) == k and all(f"cluster_size_c{i}" in metrics for i in range(k))
        assert sum(metrics["cluster_sizes"]) == 16  # the dev bonafide of the tiny demo (40% of 40)
        assert 1.0 <= metrics["embedding_effective_rank"] <= config.model.embedding_dim
        assert -1.0 <= metrics["embedding_mean_cosine"] <= 1.0
        for key in (
            "cluster_bonafide_similarity",
            "cluster_spoof_similarity",
            "cluster_similarity_gap",
            "cluster_empty_clusters",
            "centers_reseeded",
            "centers_min_cosine_to_previous",
            "refit_seconds",
        ):
            assert key in metrics
        assert metrics["centers_refit"] == 1


def test_refit_centers_come_from_eval_mode_embeddings_with_the_end_of_epoch_weights(tiny_run) -> None:
    """The saved centers are a k-means fixed point of the final model's eval-mode bonafide embeddings."""
    from cbl.data import load_split
    from cbl.engine import embed, load_model
    from cbl.engine.center_passes import center_sample_loader

    config, run_dir = tiny_run
    loaded = load_model(run_dir / "checkpoints" / "last.pt")
    records = load_split(config.data, "train")
    loader = center_sample_loader(records, config, None, config.centers.refit_max_utterances)
    embeddings = F.normalize(embed(loaded.model, loader, config, loaded.device)["embedding"], dim=-1)
    assert embeddings.shape[0] == sum(r.label for r in records)  # the cap exceeds the tiny demo's bonafide
    centers = loaded.centers.centers
    assignment = (embeddings @ centers.T).argmax(dim=1)
    for k in assignment.unique().tolist():
        mean = F.normalize(embeddings[assignment == k].mean(dim=0), dim=0)
        assert float(mean @ centers[k]) > 0.999  # center k is the mean of its eval-mode points
    np.testing.assert_array_equal(
        np.bincount(assignment.numpy(), minlength=centers.shape[0]) > 0, np.ones(centers.shape[0], dtype=bool)
    )


def test_train_prints_one_warning_line_when_the_run_collapsed(monkeypatch, tmp_path) -> None:
    from click.testing import CliRunner

    import cbl.engine
    from cbl.cli import cli
    from cbl.engine import FitResult

    def collapsing_fit(config, reporter, run_dir, **kwargs):
        for epoch in (1, 2):
            metrics = {
                "epoch": epoch,
                "dev_eer": 0.4,
                "best_dev_eer": 0.4,
                "best_epoch": 1,
                "train_loss": 1.0,
                "train_attraction": 0.0,
                "train_repulsion": 1.0,
                "train_ce": 0.0,
                "epoch_seconds": 1.0,
                **(collapsed_metrics(epoch=2) if epoch == 2 else {"embedding_mean_cosine": 0.5}),
            }
            reporter.report(metrics, run_dir)
        return FitResult(0.4, 1, 2, run_dir)

    monkeypatch.setattr(cbl.engine, "fit", collapsing_fit)
    result = CliRunner().invoke(cli, ["train", "--demo", "--out", str(tmp_path / "run"), "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: the embedding collapsed")]
    assert len(warnings) == 1 and "by epoch 2" in warnings[0] and "loss.alpha" in warnings[0]


def trial(trial_id: str, history: list[dict], tmp_path) -> TrialInfo:
    eers = [h["dev_eer"] for h in history]
    return TrialInfo(
        trial_id,
        {"loss.num_clusters": 10},
        "finished",
        len(history),
        min(eers),
        1,
        eers[-1],
        "",
        tmp_path / trial_id,
        history,
    )


def test_status_table_shows_the_last_epochs_diagnostics_and_run_warns_once(tmp_path) -> None:
    from cbl.diagnostics import sweep_collapse_warning
    from cbl.sweep.store import format_status_table

    healthy = {
        "epoch": 2,
        "dev_eer": 0.1,
        "embedding_mean_cosine": 0.31,
        "embedding_effective_rank": 7.25,
        "cluster_sizes": [3, 4, 0, 5],
        "cluster_empty_clusters": 1,
        "cluster_bonafide_similarity": 0.86,
        "cluster_spoof_similarity": 0.12,
    }
    trials = [
        trial("aaaa0001", [{"epoch": 1, "dev_eer": 0.3}, healthy], tmp_path),
        trial("aaaa0002", [{"dev_eer": 0.45, **collapsed_metrics()}], tmp_path),
    ]
    table = format_status_table(trials).splitlines()
    assert table[0].split()[6:15] == ["95%", "CI", "@epoch", "empty", "sim", "b/s", "mean", "cos", "rank"]
    # no dev_eer_low/high in these histories: the CI cell is "-"
    assert table[1].split()[:10] == ["aaaa0001", "finished", "2", "10.00%", "-", "1", "1/4", "0.86/0.12", "0.31", "7.2"]
    assert table[2].split()[6:9] == ["8/10", "1.00/1.00", "1.00"]
    line = sweep_collapse_warning(trials)
    assert line is not None and "\n" not in line
    assert line.startswith("warning: 1 of 2 trials ended with a collapsed embedding (aaaa0002;")
    assert sweep_collapse_warning(trials[:1]) is None


def test_empty_centers_alone_are_not_a_collapse() -> None:
    early = {
        "epoch": 2,
        "embedding_mean_cosine": 0.65,
        "cluster_bonafide_similarity": 0.97,
        "cluster_spoof_similarity": 0.59,
        "cluster_sizes": [30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 5, 9],
        "cluster_empty_clusters": 11,
    }
    assert collapse_reasons(early) == []
