"""The cluster metric loss: geometry (gradient directions, zero points, bounds), edge cases, CE weighting."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from cbl.centers import KMeansCenters
from cbl.config import LossConfig
from cbl.data import class_weights_from_labels
from cbl.errors import CblError
from cbl.losses import (
    BonafideClusterLoss,
    LossParts,
    compute_loss,
    repulsion_from_similarities,
)
from cbl.model import DetectorOutput

torch.set_num_threads(2)


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def output_of(embedding: torch.Tensor, logits: torch.Tensor | None = None) -> DetectorOutput:
    if logits is None:
        logits = torch.zeros(embedding.shape[0], 2)
    return DetectorOutput(embedding=embedding, logits=logits)


@pytest.mark.parametrize("repulsion", ["all", "nearest"])
def test_bonafide_gradient_points_toward_nearest_center(repulsion: str) -> None:
    centers = unit(5, 16, seed=1)
    z = unit(8, 16, seed=2).requires_grad_(True)
    loss = BonafideClusterLoss(margin=0.2, temperature=0.1, repulsion=repulsion, alpha=1.0)
    loss(z, centers, torch.ones(8, dtype=torch.long)).total.backward()
    nearest = centers[(z.detach() @ centers.T).argmax(dim=1)]
    toward = (-z.grad * (nearest - z.detach())).sum(dim=1)
    assert (toward > 0).all()


@pytest.mark.parametrize("repulsion", ["all", "nearest"])
def test_spoof_gradient_points_away_from_centers(repulsion: str) -> None:
    centers = unit(3, 16, seed=3)
    # spoofs close to center 0: well inside the margin
    z = F.normalize(centers[0] + 0.3 * unit(6, 16, seed=4), dim=-1).requires_grad_(True)
    loss = BonafideClusterLoss(margin=0.2, temperature=0.1, repulsion=repulsion, alpha=1.0)
    parts = loss(z, centers, torch.zeros(6, dtype=torch.long))
    assert parts.repulsion > 0
    parts.total.backward()
    assert ((-z.grad * (centers[0] - z.detach())).sum(dim=1) < 0).all()
    # a small step along the negative gradient lowers the similarity to the nearest center
    stepped = F.normalize(z.detach() - 0.01 * z.grad, dim=-1)
    assert ((stepped @ centers[0]) < (z.detach() @ centers[0])).all()


def test_loss_is_zero_when_bonafide_on_centers_and_spoofs_beyond_margin() -> None:
    centers = torch.eye(4, 8)  # orthonormal centers
    bonafide = centers.clone()
    spoof = F.normalize(-torch.ones(3, 8) + 0.1 * unit(3, 8, seed=5), dim=-1)  # cos <= 0 < margin to every center
    assert ((spoof @ centers.T) <= 0.2).all()
    z = torch.cat([bonafide, spoof])
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    parts = BonafideClusterLoss(margin=0.2, temperature=0.1, alpha=2.0)(z, centers, labels)
    assert parts.attraction.item() == pytest.approx(0.0, abs=1e-6)
    assert parts.repulsion.item() == 0.0
    assert parts.total.item() == pytest.approx(0.0, abs=1e-6)


def chord_hinge(similarities: torch.Tensor, margin: float) -> torch.Tensor:
    """Per-center hinge on the chord distance: relu(d(m) - d(s)), d(s) = sqrt(2 - 2 s)."""
    return F.relu(math.sqrt(2 - 2 * margin) - torch.sqrt(2 - 2 * similarities))


@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0])
def test_repulsion_bounded_below_and_close_to_hinge_on_max(temperature: float) -> None:
    similarities = torch.rand(200, 7, generator=torch.Generator().manual_seed(6)) * 2 - 1
    margin = 0.2
    rep = repulsion_from_similarities(similarities, margin, temperature, "all")
    hinge_max = chord_hinge(similarities, margin).max(dim=1).values
    assert (rep >= 0).all()
    assert (rep >= hinge_max - 1e-3).all()  # never under-penalises the nearest center
    assert (rep <= hinge_max * 7 ** (1 / (1 + 1 / temperature)) + 1e-5).all()
    beyond = (similarities <= margin).all(dim=1)
    assert beyond.any() and (rep[beyond] == 0).all()


def test_repulsion_temperature_limits_are_max_and_sum_of_hinges() -> None:
    similarities = torch.tensor([[0.9, 0.6, 0.1]])
    hinges = chord_hinge(similarities, 0.2)
    cold = repulsion_from_similarities(similarities, 0.2, 1e-3, "all")
    hot = repulsion_from_similarities(similarities, 0.2, 1e3, "all")
    assert cold.item() == pytest.approx(hinges.max().item(), abs=1e-3)
    assert hot.item() == pytest.approx(hinges.sum().item(), rel=1e-2)
    single = repulsion_from_similarities(torch.tensor([[0.7, -0.5, 0.0]]), 0.2, 0.1, "all")
    expected = math.sqrt(2 - 2 * 0.2) - math.sqrt(2 - 2 * 0.7)
    assert single.item() == pytest.approx(expected, abs=1e-4)  # one violated center: exactly its hinge


def test_repulsion_push_is_strongest_on_a_center_not_zero() -> None:
    """A spoof sitting on a bonafide center must be pushed (the cosine hinge's push vanished there)."""
    centers = unit(1, 16, seed=12)
    offsets = [1e-2, 0.1, 0.5]  # cos ~0.99995, ~0.995, ~0.89
    pushes = []
    for offset in offsets:
        z = F.normalize(centers[0] + offset * unit(1, 16, seed=13), dim=-1).requires_grad_(True)
        BonafideClusterLoss(margin=0.2)(z, centers, torch.zeros(1, dtype=torch.long)).total.backward()
        pushes.append(z.grad.norm().item())
    # about the full unit push at every distance inside the margin; the cosine hinge gave 0.01, 0.09, 0.38
    assert min(pushes) > 0.9


def test_near_duplicate_centers_do_not_multiply_the_push() -> None:
    """K similar centers push a spoof near the margin about as hard as one (the old smooth max: 2.2x here, up to K)."""
    base = unit(1, 32, seed=14)
    bundle = F.normalize(base + 0.02 * unit(10, 32, seed=15), dim=-1)  # 10 centers, cos ~0.99 to each other
    # a spoof just inside the margin of all of them
    direction = F.normalize(unit(1, 32, seed=16) - (unit(1, 32, seed=16) @ base.T) * base, dim=-1)
    z0 = F.normalize(0.25 * base + math.sqrt(1 - 0.25**2) * direction, dim=-1)
    grads = []
    for centers in (base, bundle):
        z = z0.clone().requires_grad_(True)
        BonafideClusterLoss(margin=0.2)(z, centers, torch.zeros(1, dtype=torch.long)).total.backward()
        grads.append(z.grad.norm().item())
    assert grads[1] <= 10 ** (1 / 11) * grads[0] * 1.05


def test_spoof_near_a_non_nearest_center_is_still_penalised_under_all() -> None:
    near_second = torch.tensor([[0.9, 0.8]])
    far_second = torch.tensor([[0.9, 0.1]])

    def rep_all(s):
        return repulsion_from_similarities(s, 0.2, 0.1, "all")

    def rep_nearest(s):
        return repulsion_from_similarities(s, 0.2, 0.1, "nearest")

    assert rep_all(near_second) > rep_all(far_second)
    assert rep_nearest(near_second) == rep_nearest(far_second)
    sims = near_second.clone().requires_grad_(True)
    rep_all(sims).sum().backward()
    assert sims.grad[0, 1] > 0  # the second center pushes too
    sims = near_second.clone().requires_grad_(True)
    rep_nearest(sims).sum().backward()
    assert sims.grad[0, 1] == 0


def test_repulsion_is_finite_for_extreme_temperatures() -> None:
    sims = torch.tensor([[1.0, 1.0, -1.0], [0.2, 0.2, 0.2]], requires_grad=True)
    rep = repulsion_from_similarities(sims, -1.0, 1e-4, "all")
    rep.sum().backward()
    assert torch.isfinite(rep).all() and torch.isfinite(sims.grad).all()


@pytest.mark.parametrize("loss_type", ["cluster_only", "combined", "ce_only"])
@pytest.mark.parametrize(
    "labels, num_centers",
    [([1, 1, 1, 1], 3), ([0, 0, 0, 0], 3), ([1, 0, 1, 0], 1), ([1], 1), ([0], 4)],
    ids=["no-spoof", "no-bonafide", "K=1", "single-bonafide", "single-spoof"],
)
def test_defined_edge_cases_are_finite(loss_type: str, labels: list[int], num_centers: int) -> None:
    z = unit(len(labels), 8, seed=7).requires_grad_(True)
    logits = torch.randn(len(labels), 2, requires_grad=True)
    config = LossConfig(type=loss_type, ce_bonafide_weight=5.0)
    parts = compute_loss(output_of(z, logits), torch.tensor(labels), unit(num_centers, 8, seed=8), config)
    assert isinstance(parts, LossParts)
    for value in parts:
        assert value.ndim == 0 and torch.isfinite(value)
    parts.total.backward()
    assert torch.isfinite(z.grad if z.grad is not None else torch.zeros(1)).all()
    if loss_type == "ce_only":
        assert parts.attraction.item() == 0.0 and parts.repulsion.item() == 0.0
    if loss_type == "cluster_only":
        assert parts.ce.item() == 0.0
    if 1 not in labels:
        assert parts.attraction.item() == 0.0
    if 0 not in labels:
        assert parts.repulsion.item() == 0.0


def test_combined_total_is_ce_plus_lambda_cluster() -> None:
    z, logits, centers = unit(6, 8, seed=9), torch.randn(6, 2), unit(3, 8, seed=10)
    labels = torch.tensor([1, 0, 1, 0, 0, 0])
    config = LossConfig(type="combined", ce_lambda=0.5, alpha=2.0, ce_bonafide_weight=3.0)
    parts = compute_loss(output_of(z, logits), labels, centers, config)
    expected = parts.ce + 0.5 * (parts.attraction + 2.0 * parts.repulsion)
    assert parts.total.item() == pytest.approx(expected.item(), rel=1e-6)
    cluster_only = compute_loss(output_of(z, logits), labels, centers, LossConfig(type="cluster_only", alpha=2.0))
    assert cluster_only.total.item() == pytest.approx((parts.attraction + 2.0 * parts.repulsion).item(), rel=1e-6)


def test_compute_loss_accepts_a_centers_object() -> None:
    centers = KMeansCenters(2, 8)
    centers.fit(unit(20, 8, seed=11))
    parts = compute_loss(output_of(unit(4, 8)), torch.tensor([1, 0, 1, 0]), centers, LossConfig())
    assert torch.isfinite(parts.total)


@pytest.mark.parametrize("loss_type", ["cluster_only", "combined"])
def test_cluster_loss_without_centers_is_a_clear_error(loss_type: str) -> None:
    with pytest.raises(CblError, match=f"loss.type={loss_type} needs bonafide centers"):
        compute_loss(output_of(unit(2, 8)), torch.tensor([1, 0]), None, LossConfig(type=loss_type), torch.ones(2))


def test_class_weights_give_the_minority_bonafide_class_the_larger_weight() -> None:
    labels = torch.tensor([1] * 10 + [0] * 90)  # ASVspoof-like: ~10% bonafide
    weights = class_weights_from_labels(labels)
    assert weights[1] > weights[0]  # index 1 is bonafide
    assert weights.tolist() == pytest.approx([100 / (2 * 90), 100 / (2 * 10)])


@pytest.mark.parametrize("source", ["frequency", "explicit"])
def test_weighted_ce_penalises_a_missed_bonafide_more_than_a_missed_spoof(source: str) -> None:
    """Guards against the label swap of a public implementation (which weighted the majority class)."""
    confident = torch.tensor([[4.0, -4.0], [-4.0, 4.0]])  # row 0 says spoof, row 1 says bonafide
    if source == "frequency":
        config, weights = LossConfig(type="ce_only"), class_weights_from_labels([1] * 10 + [0] * 90)
    else:
        config, weights = LossConfig(type="ce_only", ce_bonafide_weight=9.0), None
    # batch A: a bonafide called spoof + a spoof called spoof
    # batch B: a spoof called bonafide + a bonafide called bonafide
    batch_a = compute_loss(output_of(unit(2, 4), confident), torch.tensor([1, 0]), None, config, weights)
    batch_b = compute_loss(output_of(unit(2, 4), confident), torch.tensor([0, 1]), None, config, weights)
    assert batch_a.ce > batch_b.ce


def test_ce_needs_weights_and_valid_labels() -> None:
    out = output_of(unit(2, 4))
    with pytest.raises(CblError, match="weighted CE needs class_weights"):
        compute_loss(out, torch.tensor([1, 0]), None, LossConfig(type="ce_only"))
    with pytest.raises(CblError, match="class_weights must be 2 positive"):
        compute_loss(out, torch.tensor([1, 0]), None, LossConfig(type="ce_only"), torch.tensor([1.0, -1.0]))
    with pytest.raises(CblError, match=r"labels must be 1 \(bonafide\) or 0 \(spoof\), got \[2\]"):
        compute_loss(out, torch.tensor([1, 2]), None, LossConfig(type="ce_only"), torch.ones(2))


def test_centers_of_the_wrong_dimension_are_a_clear_error() -> None:
    with pytest.raises(CblError, match=r"centers have shape \(3, 4\), expected \(K, 8\)"):
        compute_loss(output_of(unit(2, 8)), torch.tensor([1, 0]), torch.ones(3, 4), LossConfig())


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError, match=re.escape("'loss.temperature' is 0, but must be > 0")):
        BonafideClusterLoss(temperature=0)
    with pytest.raises(ValueError, match="unknown value 'mean'"):
        BonafideClusterLoss(repulsion="mean")


# --------------------------------------------------------------------------- no-collapse properties
def test_repulsion_push_has_unit_norm_however_close_the_spoof_is_to_a_center() -> None:
    """No dead ball around a center: the seed's sqrt(2 - 2s + 1e-6) gave 3e-11 at distance 1e-5."""
    center = unit(1, 16, seed=20)
    tangent = F.normalize(unit(1, 16, seed=21) - (unit(1, 16, seed=21) @ center.T) * center, dim=-1)
    for distance in (1e-5, 1e-3, 1e-1):
        z = F.normalize(center + distance * tangent, dim=-1).requires_grad_(True)
        BonafideClusterLoss(margin=0.2, spread_weight=0.0)(z, center, torch.zeros(1, dtype=torch.long)).total.backward()
        push = z.grad - (z.grad @ z.detach().T) * z.detach()  # the part that moves z on the sphere
        assert push.norm().item() == pytest.approx(1.0, rel=0.02)
        assert float(-push @ tangent.T) > 0.99  # descending moves the spoof straight away from the center


@pytest.mark.parametrize("attraction", ["distance", "margin", "to_center"])
def test_attraction_modes_and_their_zero_points(attraction: str) -> None:
    center = unit(1, 16, seed=22)
    loss = BonafideClusterLoss(attraction=attraction, bonafide_margin=0.9, spread_weight=0.0)
    ones = torch.ones(1, dtype=torch.long)
    on_center = loss(center.clone(), center, ones).attraction.item()
    assert on_center == pytest.approx(0.0, abs=1e-6)
    inside = F.normalize(center + 0.3 * unit(1, 16, seed=23), dim=-1)  # cos ~0.95: inside the 0.9 margin
    value = loss(inside, center, ones).attraction.item()
    if attraction == "margin":
        assert value == 0.0  # a bonafide within the margin is left alone
    else:
        assert value > 0.0
    far = -center  # the farthest point: the pull has a known size in every mode
    expected = {"distance": math.sqrt(4 + 0.2) - math.sqrt(0.2), "margin": 1.9, "to_center": 2.0}[attraction]
    assert loss(far, center, ones).attraction.item() == pytest.approx(expected, rel=1e-5)


def test_distance_attraction_pulls_about_as_hard_as_the_repulsion_pushes_far_from_the_center() -> None:
    """Linear far from the center: moving everything away from the centers together gains alpha < 1 per unit
    of repulsion and costs ~1 per unit of attraction, so the indiscriminate move does not pay (see the module)."""
    center = unit(1, 16, seed=24)
    tangent = F.normalize(unit(1, 16, seed=25) - (unit(1, 16, seed=25) @ center.T) * center, dim=-1)
    z = F.normalize(center + 1.0 * tangent, dim=-1).requires_grad_(True)  # 45 degrees away
    BonafideClusterLoss(spread_weight=0.0)(z, center, torch.ones(1, dtype=torch.long)).attraction.backward()
    pull = z.grad - (z.grad @ z.detach().T) * z.detach()
    assert 0.75 < pull.norm().item() < 1.0


def test_spread_term_is_zero_for_a_spread_batch_and_pushes_a_collapsed_one_apart() -> None:
    from cbl.losses import batch_spread_shortfall

    spread = torch.eye(8)  # orthogonal: |mean|^2 = 1/8, RMS spread sqrt(7/8)
    assert batch_spread_shortfall(spread, 0.5).item() == 0.0
    base = unit(1, 16, seed=26)
    z = F.normalize(base + 1e-4 * torch.randn(16, 16, generator=torch.Generator().manual_seed(27)), dim=-1)
    z.requires_grad_(True)
    value = batch_spread_shortfall(z, 0.5)
    assert value.item() == pytest.approx(0.5, abs=1e-3)
    value.backward()
    push = z.grad - (z.grad * z.detach()).sum(dim=1, keepdim=True) * z.detach()
    assert push.norm().item() > 0.1  # ~1/sqrt(B) at a near-collapse, not of order the 1e-4 spread
    stepped = F.normalize(z.detach() - 1e-5 * z.grad, dim=-1)
    assert batch_spread_shortfall(stepped, 0.5) < value  # descending spreads the batch
    assert batch_spread_shortfall(z[:1], 0.5).item() == 0.0


def test_bonafide_spread_target_adds_the_hinge_on_the_bonafide_alone() -> None:
    point = unit(1, 16, seed=28)
    bonafide = F.normalize(point + 1e-3 * torch.randn(6, 16, generator=torch.Generator().manual_seed(29)), dim=-1)
    spoofs = -torch.eye(16)[:6]  # spread: the whole batch is not collapsed
    z, labels = torch.cat([bonafide, spoofs]), torch.tensor([1] * 6 + [0] * 6)
    centers = point
    off = BonafideClusterLoss(spread_weight=1.0)(z, centers, labels)
    on = BonafideClusterLoss(spread_weight=1.0, bonafide_spread_target=0.6)(z, centers, labels)
    assert off.spread.item() == 0.0
    assert on.spread.item() == pytest.approx(0.6, abs=0.01)  # the bonafide sit on one point
