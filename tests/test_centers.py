"""Bonafide centers: k-means recovery and warm starts, online EMA and re-seeding, checkpoints, stats."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from cbl.centers import (
    KMeansCenters,
    OnlineCenters,
    build_centers,
    cluster_stats,
    match_centers,
    reseed_dead_centers,
)
from cbl.config import CentersConfig
from cbl.errors import CblError

torch.set_num_threads(2)


def clusters(num_clusters: int = 4, per_cluster: int = 30, dim: int = 16, noise: float = 0.05, seed: int = 0):
    """Well-separated synthetic clusters around orthogonal directions: (points (N, D), true directions (K, D))."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.eye(dim)[:num_clusters]
    points = directions.repeat_interleave(per_cluster, dim=0)
    points = F.normalize(points + noise * torch.randn(points.shape, generator=generator), dim=-1)
    return points, directions


def test_kmeans_recovers_well_separated_clusters() -> None:
    points, directions = clusters()
    centers = KMeansCenters(4, 16, seed=0)
    fitted = centers.fit(points)
    assert fitted.shape == (4, 16)
    assert torch.allclose(fitted.norm(dim=1), torch.ones(4), atol=1e-5)
    similarity = directions @ fitted.T  # (true, fitted)
    assert (similarity.max(dim=1).values > 0.99).all()
    assert sorted(similarity.argmax(dim=1).tolist()) == [0, 1, 2, 3]  # one center per true cluster
    assert cluster_stats(centers, points)["cluster_sizes"] == [30, 30, 30, 30]


def test_refresh_warm_start_keeps_cluster_ids_stable() -> None:
    points, _ = clusters(seed=1)
    centers = KMeansCenters(4, 16, seed=0)
    before = centers.fit(points).clone()
    moved, _ = clusters(seed=2)  # same clusters, new noise, shuffled order
    moved = moved[torch.randperm(moved.shape[0], generator=torch.Generator().manual_seed(3))]
    after = centers.refresh(moved)
    assert ((before * after).sum(dim=1) > 0.99).all()  # center i is still cluster i


def test_refresh_before_fit_fits() -> None:
    points, _ = clusters()
    centers = KMeansCenters(4, 16)
    centers.refresh(points)
    assert centers.is_fitted


@pytest.mark.parametrize("method", ["kmeans", "online"])
def test_more_clusters_than_bonafide_embeddings_names_both_numbers(method: str) -> None:
    centers = build_centers(CentersConfig(method=method), num_clusters=20, dim=8)
    with pytest.raises(CblError, match="num_clusters K=20 but only 12 bonafide embeddings are available"):
        centers.fit(torch.randn(12, 8))


def test_non_finite_or_wrong_shape_embeddings_are_rejected() -> None:
    centers = KMeansCenters(2, 8)
    with pytest.raises(CblError, match="contain NaN or inf"):
        centers.fit(torch.full((10, 8), float("nan")))
    with pytest.raises(CblError, match="have dimension 4, but the centers have 8"):
        centers.fit(torch.randn(10, 4))


def test_online_ema_moves_the_assigned_center_toward_its_points() -> None:
    points, directions = clusters(seed=4)
    centers = OnlineCenters(4, 16, momentum=0.5)
    start = centers.fit(points).clone()
    target_id = int((start @ directions[0]).argmax())
    target = F.normalize(directions[0] + 0.5 * torch.eye(16)[5], dim=-1)  # pull cluster 0's center sideways
    centers.update_step(target.repeat(3, 1))
    after = centers.centers
    assert (after[target_id] @ target) > (start[target_id] @ target)
    others = [k for k in range(4) if k != target_id]
    assert torch.allclose(after[others], start[others])  # unassigned centers do not move
    assert torch.allclose(after.norm(dim=1), torch.ones(4), atol=1e-5)


def test_online_dead_center_is_reseeded_from_the_farthest_bonafide_sample() -> None:
    points, directions = clusters(seed=5)
    centers = OnlineCenters(4, 16, momentum=0.9, dead_after_steps=3)
    start = centers.fit(points).clone()
    live_id = int((start @ directions[0]).argmax())
    # still nearest to the live center, but far from it
    far = F.normalize(directions[0] + 0.9 * torch.eye(16)[9], dim=-1)
    batch = torch.stack([directions[0], far])
    for _ in range(3):
        centers.update_step(batch)
    dead = [k for k in range(4) if k != live_id]
    reseeded = [k for k in dead if torch.allclose(centers.centers[k], far, atol=1e-6)]
    assert len(reseeded) == 1  # the farthest sample seeds one dead center
    assert centers.steps_since_assigned[reseeded[0]] == 0


def test_online_update_with_no_bonafide_and_before_fit() -> None:
    centers = OnlineCenters(2, 8)
    with pytest.raises(CblError, match="must be initialised with fit"):
        centers.update_step(torch.randn(3, 8))
    centers.fit(torch.randn(10, 8))
    before = centers.centers.clone()
    centers.update_step(torch.zeros(0, 8))
    assert torch.equal(before, centers.centers)
    assert centers.steps_since_assigned.tolist() == [1, 1]
    assert torch.equal(centers.refresh(torch.randn(10, 8)), before)  # online: refresh is a no-op once fitted


@pytest.mark.parametrize("method", ["kmeans", "online"])
def test_state_dict_round_trip_through_a_weights_only_checkpoint(method: str, tmp_path) -> None:
    points, _ = clusters(seed=6)
    config = CentersConfig(method=method)
    centers = build_centers(config, 4, 16)
    centers.fit(points)
    centers.update_step(points[:5])
    torch.save({"centers": centers.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["centers"]
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    restored = build_centers(config, 4, 16)
    restored.load_state_dict(state)
    assert torch.allclose(restored.centers, centers.centers)
    if method == "online":
        assert torch.equal(restored.steps_since_assigned, centers.steps_since_assigned)
    with pytest.raises(CblError, match=r"checkpoint centers have shape \(4, 16\), but this run expects K=5"):
        build_centers(config, 5, 16).load_state_dict(state)


def test_unfitted_state_dict_round_trips_as_unfitted() -> None:
    restored = KMeansCenters(3, 8)
    restored.load_state_dict(KMeansCenters(3, 8).state_dict())
    assert not restored.is_fitted


def test_cluster_stats_reports_sizes_and_similarities() -> None:
    center_tensor = torch.eye(3, 8)
    bonafide = torch.stack([torch.eye(8)[0], torch.eye(8)[0], torch.eye(8)[1]])
    spoof = -torch.eye(8)[:2] + 0.0
    stats = cluster_stats(center_tensor, bonafide, spoof)
    assert stats["cluster_sizes"] == [2, 1, 0]
    assert stats["empty_clusters"] == 1
    assert stats["bonafide_similarity"] == pytest.approx(1.0)
    assert stats["spoof_similarity"] == pytest.approx(0.0)  # -e0 is orthogonal to e1, e2
    assert "spoof_similarity" not in cluster_stats(center_tensor, bonafide, torch.zeros(0, 8))


def test_build_centers_uses_the_config() -> None:
    online = build_centers(CentersConfig(method="online", ema_momentum=0.9, seed=3), 5, 32)
    assert isinstance(online, OnlineCenters) and online.momentum == 0.9 and online.seed == 3
    assert isinstance(build_centers(CentersConfig(), 5, 32), KMeansCenters)
    with pytest.raises(ValueError, match=re.escape("'centers.ema_momentum' is 1.5")):
        OnlineCenters(2, 4, momentum=1.5)


# --------------------------------------------------------------------------- identities and dead centers
def test_match_centers_undoes_any_permutation() -> None:
    previous = F.normalize(torch.randn(12, 16, generator=torch.Generator().manual_seed(7)), dim=-1)
    permutation = torch.randperm(12, generator=torch.Generator().manual_seed(8))
    drifted = F.normalize(
        previous[permutation] + 0.05 * torch.randn(12, 16, generator=torch.Generator().manual_seed(9)), dim=-1
    )
    order = match_centers(drifted, previous)
    assert sorted(order.tolist()) == list(range(12))  # one to one
    assert torch.equal(permutation[order], torch.arange(12))  # new center order[k] came from previous center k


def test_match_centers_is_the_best_assignment_not_greedy() -> None:
    # greedy by row would give previous 0 the new center it likes most (new 0, cos 0.9), leaving previous 1
    # with new 1 (cos -1); the best one-to-one total gives previous 0 new 1 (cos 0.8) and previous 1 new 0
    previous = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    new = torch.tensor([[0.8, 0.6], [0.8, -0.6]])
    order = match_centers(new, previous)
    assert order.tolist() == [1, 0]


def test_refresh_keeps_identities_when_kmeans_returns_another_order(monkeypatch: pytest.MonkeyPatch) -> None:
    points, _ = clusters(num_clusters=5, seed=10)
    centers = KMeansCenters(5, 16, seed=0)
    before = centers.fit(points).clone()
    original = KMeansCenters._kmeans

    def shuffled(self, embeddings, init):  # k-means is free to return its clusters in any order
        return original(self, embeddings, init)[torch.tensor([3, 0, 4, 1, 2])]

    monkeypatch.setattr(KMeansCenters, "_kmeans", shuffled)
    moved, _ = clusters(num_clusters=5, seed=11)
    after = centers.refresh(moved)
    assert ((before * after).sum(dim=1) > 0.99).all()  # center k still holds cluster k
    assert centers.last_refit.permuted and centers.last_refit.min_cosine_to_previous > 0.99
    sizes = cluster_stats(after, moved)["cluster_sizes"]
    assert sizes == cluster_stats(before, moved)["cluster_sizes"] == [30] * 5


def test_reseed_moves_dead_centers_onto_the_farthest_distinct_points() -> None:
    points, directions = clusters(num_clusters=3, per_cluster=10, seed=12)
    far = F.normalize(torch.eye(16)[7] + 0.01 * torch.eye(16)[8], dim=-1)  # a fourth group no center is near
    points = torch.cat([points, far.repeat(4, 1), torch.eye(16)[10:11]])
    dead = -directions[0]  # nearest to no point
    centers = torch.stack([directions[0], directions[1], directions[2], dead, dead])
    reseeded, ids = reseed_dead_centers(centers, points)
    assert ids == [3, 4]
    assert torch.equal(reseeded[:3], centers[:3])  # live centers untouched
    placed = {tuple(torch.round(reseeded[k], decimals=4).tolist()) for k in ids}
    assert placed == {tuple(torch.round(far, decimals=4).tolist()), tuple(torch.eye(16)[10].tolist())}


def test_reseed_leaves_centers_dead_when_every_point_sits_on_a_center() -> None:
    collapsed = F.normalize(torch.ones(20, 8), dim=-1)  # the collapse: every embedding one point
    centers = torch.stack([collapsed[0], -collapsed[0]])
    reseeded, ids = reseed_dead_centers(centers, collapsed)
    assert ids == [] and torch.equal(reseeded, centers)


def test_kmeans_refresh_reseeds_a_center_the_embeddings_left() -> None:
    points, directions = clusters(num_clusters=4, seed=13)
    centers = KMeansCenters(4, 16, seed=0)
    centers.fit(points)
    # cluster 3's embeddings moved to a new direction; clusters 0-2 stay
    moved = torch.cat(
        [
            points[:90],
            F.normalize(
                torch.eye(16)[12] + 0.05 * torch.randn(30, 16, generator=torch.Generator().manual_seed(14)), dim=-1
            ),
        ]
    )
    moved[:90] = points[:90]
    old_id = int((centers.centers @ directions[3]).argmax())
    stale = centers.centers[old_id].clone()
    centers.centers[old_id] = -torch.eye(16)[12]  # make it dead for sure: nearest to none of the moved points
    after = centers.refresh(moved)
    assert centers.last_refit.reseeded == 1 and centers.last_refit.dead_after == 0
    assert float(after[old_id] @ torch.eye(16)[12]) > 0.95  # the dead center now holds the moved cluster
    assert float(after[old_id] @ stale) < 0.5
    assert cluster_stats(after, moved)["empty_clusters"] == 0
