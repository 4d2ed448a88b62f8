"""The contrastive loss (y = 0 similar) and the distance that is safe at zero."""
import pytest
import torch

from course_utils.contrastive import (DISSIMILAR, SIMILAR, contrastive_loss, euclidean_distance,
                                      inverted_contrastive_loss)


def test_label_constants_follow_hadsell():
    assert SIMILAR == 0 and DISSIMILAR == 1


def test_loss_hand_computed_cases():
    d = torch.tensor([0.0, 1.0, 3.0, 0.0, 1.0, 0.5, 3.0])
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    # similar: D^2 = 0, 1, 9; dissimilar with m = 2: max(0, 2 - D)^2 = 4, 1, 2.25, 0
    want = torch.tensor([0.0, 1.0, 9.0, 4.0, 1.0, 2.25, 0.0])
    assert torch.allclose(contrastive_loss(d, y, margin=2.0), want)
    assert torch.allclose(contrastive_loss(d, y.float(), 2.0, reduction="mean"), want.mean())
    assert torch.allclose(contrastive_loss(d, y.bool(), 2.0, reduction="sum"), want.sum())


def test_default_margin_is_one():
    assert contrastive_loss(torch.tensor([0.25]), torch.tensor([1.0])).item() == pytest.approx(0.75 ** 2)


def test_inverted_loss_swaps_the_roles():
    d = torch.rand(10) * 3
    y = (torch.arange(10) % 2).float()
    assert torch.allclose(inverted_contrastive_loss(d, y, 1.5), contrastive_loss(d, 1 - y, 1.5))
    # same-class pair at distance 0 costs m^2 under the inverted convention: it is pushed apart
    assert inverted_contrastive_loss(torch.tensor([0.0]), torch.tensor([0.0]), 1.5).item() == pytest.approx(2.25)


def test_loss_gradient_matches_finite_differences():
    d = torch.tensor([0.3, 1.2, 0.4, 2.5], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: contrastive_loss(t, y, 1.7), (d,))
    (g,) = torch.autograd.grad(contrastive_loss(d, y, 1.7).sum(), d)
    want = torch.tensor([0.6, 2.4, -2 * (1.7 - 0.4), 0.0], dtype=torch.float64)
    assert torch.allclose(g, want)


@pytest.mark.parametrize("kwargs,phrase", [
    (dict(D=torch.ones(3), Y=torch.zeros(4)), "same shape"),
    (dict(D=torch.ones(3), Y=torch.zeros(3), margin=0.0), "margin must be > 0"),
    (dict(D=torch.ones(3), Y=torch.tensor([0.0, 2.0, 1.0])), "hold 0"),
    (dict(D=torch.ones(3), Y=torch.zeros(3), reduction="avg"), "reduction"),
])
def test_loss_bad_inputs(kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        contrastive_loss(**kwargs)


def test_distance_values():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert torch.allclose(euclidean_distance(a, b), torch.cdist(a, b).diagonal(), atol=1e-5)
    assert euclidean_distance(a, a).max().item() <= 1e-6  # moved by at most sqrt(eps)


def test_distance_gradient_is_finite_and_zero_at_identical_embeddings():
    a = torch.randn(4, 3)
    z1, z2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
    d = euclidean_distance(z1, z2)
    g1, g2 = torch.autograd.grad(contrastive_loss(d, torch.zeros(4)).sum() + d.sum(), (z1, z2))
    assert torch.isfinite(g1).all() and torch.isfinite(g2).all()
    assert torch.equal(g1, torch.zeros_like(g1))


def test_the_naive_sqrt_really_is_a_trap():
    """The chapter's claim: sqrt(sum (z1 - z2)^2) has NaN gradients at identical embeddings."""
    z1 = torch.ones(2, 3, requires_grad=True)
    naive = ((z1 - torch.ones(2, 3)) ** 2).sum(-1).sqrt()
    (g,) = torch.autograd.grad(naive.sum(), z1)
    assert torch.isnan(g).all()


def test_distance_gradcheck_away_from_zero():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(euclidean_distance, (a, b))


@pytest.mark.parametrize("z1,z2,eps,phrase", [
    (torch.ones(3, 2), torch.ones(3, 4), 1e-12, "same shape"),
    (torch.tensor(1.0), torch.tensor(2.0), 1e-12, "scalars"),
    (torch.ones(3, 2), torch.ones(3, 2), 0.0, "eps must be > 0"),
])
def test_distance_bad_inputs(z1, z2, eps, phrase):
    with pytest.raises(ValueError, match=phrase):
        euclidean_distance(z1, z2, eps)


def _train_toy(loss_fn, steps=150, seed=0):
    """A 2-D embedding of 3 Gaussian classes in 6-D, trained on balanced pairs; returns (within, between)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 6, generator=g) * 2
    x = centres[:, None] + 0.5 * torch.randn(3, 30, 6, generator=g)
    torch.manual_seed(seed)
    f = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(f.parameters(), lr=0.02)
    for _ in range(steps):
        c1 = torch.randint(3, (64,), generator=g)
        same = torch.arange(64) < 32
        c2 = torch.where(same, c1, (c1 + 1 + torch.randint(2, (64,), generator=g)) % 3)
        i1, i2 = torch.randint(30, (64,), generator=g), torch.randint(30, (64,), generator=g)
        y = (~same).float()
        d = euclidean_distance(f(x[c1, i1]), f(x[c2, i2]))
        loss = loss_fn(d, y, 1.0).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        z = f(x.reshape(-1, 6)).reshape(3, 30, 2)
        within = torch.stack([torch.pdist(z[c]).mean() for c in range(3)]).mean()
        between = torch.stack([torch.cdist(z[a], z[b]).mean() for a in range(3) for b in range(3) if a != b]).mean()
    return within.item(), between.item()


def test_right_convention_clusters_and_inverted_convention_scatters():
    w, b = _train_toy(contrastive_loss)
    assert w < 0.5 * b  # same class close, different classes apart
    w_inv, b_inv = _train_toy(inverted_contrastive_loss)
    assert w_inv > b_inv  # the seed article's labels: same-class pairs end up farther apart
