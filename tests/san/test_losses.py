"""Batch-hard triplet against a brute-force loop over anchors; Eq. 8 composition."""

from __future__ import annotations

import math

import pytest
import torch

from san.model.network import SANOutput
from san.training.losses import batch_hard_triplet, san_loss


def brute_force(emb: torch.Tensor, pids: list[int], margin: float, soft: bool) -> float:
    """Hermans et al. batch hard, one anchor at a time, in float64."""
    e = emb.double().tolist()
    dist = lambda i, j: math.sqrt(sum((a - b) ** 2 for a, b in zip(e[i], e[j])))  # noqa: E731
    losses = []
    for i in range(len(pids)):
        pos = [dist(i, j) for j in range(len(pids)) if j != i and pids[j] == pids[i]]
        neg = [dist(i, j) for j in range(len(pids)) if pids[j] != pids[i]]
        if not pos or not neg:
            continue
        gap = max(pos) - min(neg)
        losses.append(math.log1p(math.exp(gap)) if soft else max(0.0, margin + gap))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_hard_equals_brute_force(soft: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    pids = [0, 0, 0, 1, 1, 2, 2, 2, 3, 4]  # pid 4 has no positive: not an anchor
    emb = torch.randn(len(pids), 8, generator=g) * 0.3
    got = batch_hard_triplet(emb, torch.tensor(pids), margin=0.5, soft=soft)
    assert got.item() == pytest.approx(brute_force(emb, pids, 0.5, soft), rel=1e-5, abs=1e-6)


def test_gradient_is_finite_with_duplicate_embeddings() -> None:
    emb = torch.randn(4, 5)
    emb = torch.cat([emb, emb[:1]]).requires_grad_()  # rows 0 and 4 identical: distance 0
    loss = batch_hard_triplet(emb, torch.tensor([0, 1, 1, 2, 0]))
    loss.backward()
    assert torch.isfinite(emb.grad).all()


def test_batch_without_valid_anchor_gives_zero() -> None:
    emb = torch.randn(3, 4, requires_grad=True)
    loss = batch_hard_triplet(emb, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph


def test_san_loss_is_triplet_plus_mu_tv() -> None:
    torch.manual_seed(0)
    a = [torch.rand(4, 3, 6, 5), torch.rand(4, 2, 3, 3)]
    out = SANOutput(torch.randn(4, 8), a, [torch.ones_like(x) for x in a], [torch.ones_like(x) for x in a])
    pids = torch.tensor([0, 0, 1, 1])
    parts = san_loss(out, pids, margin=0.5, mu=0.1)
    # Per-element TV by hand: squared row and column differences / (C*H*W), batch mean, summed.
    tv = sum(
        (((x[:, :, 1:] - x[:, :, :-1]) ** 2).flatten(1).sum(1) + ((x[..., 1:] - x[..., :-1]) ** 2).flatten(1).sum(1)).mean()
        / x[0].numel()
        for x in a
    )
    assert parts.tv.item() == pytest.approx(tv.item(), rel=1e-6)
    assert parts.triplet.item() == pytest.approx(brute_force(out.embeddings, [0, 0, 1, 1], 0.5, False), rel=1e-5)
    assert parts.total.item() == pytest.approx(parts.triplet.item() + 0.1 * tv.item(), rel=1e-6)


def test_san_loss_scores_mixed_precision_outputs_in_float32() -> None:
    torch.manual_seed(1)
    a = [torch.rand(4, 3, 6, 5).bfloat16()]
    half = SANOutput(torch.randn(4, 8).bfloat16(), a, a, a)
    full = SANOutput(half.embeddings.float(), [x.float() for x in a], a, a)
    pids = torch.tensor([0, 0, 1, 1])
    got, want = san_loss(half, pids), san_loss(full, pids)
    assert got.total.dtype == torch.float32
    assert got.total.item() == want.total.item() and got.tv.item() == want.tv.item()
