import math
from types import SimpleNamespace

import pytest
import torch

from course_utils.soft_kmeans import fit_radius
from course_utils.self_training import (SelfTraining, pool_labels, round_metrics, scores, select_balanced,
                                        self_train)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- select_balanced
# Class 0's four items are all more confident than any item of class 1.
P_TOP = torch.tensor([[0.99, 0.01], [0.98, 0.02], [0.97, 0.03], [0.96, 0.04],
                      [0.10, 0.90], [0.15, 0.85], [0.20, 0.80], [0.45, 0.55]])


def test_balanced_gives_z_per_class_although_top_z_overall_is_one_class():
    top4_overall = P_TOP.max(1).values.argsort(descending=True)[:4]
    assert set(P_TOP[top4_overall].argmax(1).tolist()) == {0}
    idx, lab = select_balanced(P_TOP, tau=0.5, z_per_class=2)
    assert idx.tolist() == [0, 1, 4, 5] and lab.tolist() == [0, 0, 1, 1]


def test_balanced_respects_tau_and_the_argmax_class():
    idx, lab = select_balanced(P_TOP, tau=0.86, z_per_class=3)
    assert idx.tolist() == [0, 1, 2, 4] and lab.tolist() == [0, 0, 0, 1]
    # item 7 (0.45, 0.55) can only ever be class 1, never class 0
    idx, lab = select_balanced(P_TOP, tau=0.5, z_per_class=10)
    assert idx.tolist() == list(range(8)) and lab[-1].item() == 1
    assert select_balanced(P_TOP, tau=1.0, z_per_class=5)[0].numel() == 0
    # eligible removes candidates; the next most confident take their place
    keep = torch.ones(8, dtype=torch.bool)
    keep[[0, 4]] = False
    assert select_balanced(P_TOP, 0.5, 2, eligible=keep)[0].tolist() == [1, 2, 5, 6]


def test_balanced_ties_go_to_the_lower_index_and_output_is_sorted():
    p = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.1, 0.9], [0.1, 0.9], [0.8, 0.2]])
    idx, lab = select_balanced(p, tau=0.5, z_per_class=1)
    assert idx.tolist() == [0, 1] and lab.tolist() == [1, 0]
    idx, _ = select_balanced(torch.zeros(0, 3), 0.5, 2)
    assert idx.numel() == 0


# ---------------------------------------------------------------- self_train on a hand-made line
# Human supports at x = 0 (class 0) and x = 6 (class 1); four pool items in between.
SZ = torch.tensor([[0., 0.], [6., 0.]], dtype=torch.float64)
SY = torch.tensor([0, 1])
POOL = torch.tensor([[2.8, 0.], [3.5, 0.], [3.3, 0.], [3.9, 0.]], dtype=torch.float64)


def _pairs(res, r):
    return set(zip(res.selected[r].tolist(), res.labels[r].tolist()))


def test_round_zero_scores_with_the_human_prototypes():
    res = self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, rounds=1)
    assert torch.equal(res.prototypes[0], SZ)
    # item 0: d = (7.84, 10.24) -> p_0 = sigmoid(2.4); item 3: d = (15.21, 4.41) -> p_1 = sigmoid(10.8)
    assert res.confidence[0][0].item() == pytest.approx(sigmoid(2.4))
    assert _pairs(res, 0) == {(0, 0), (3, 1)}       # Z = 1: the most confident item of each class


def test_unanchored_locks_every_accepted_item_in():
    res = self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, rounds=6, anchored=False)
    assert len(res.selected) >= 3
    for r in range(1, len(res.selected)):
        assert _pairs(res, r - 1) <= _pairs(res, r)   # nothing is ever dropped or relabelled
    assert (0, 0) in _pairs(res, len(res.selected) - 1)
    # plain means of humans + locked items: round 1 has c_0 = (0 + 2.8) / 2, c_1 = (6 + 3.9) / 2
    assert torch.allclose(res.prototypes[1], torch.tensor([[1.4, 0.], [4.95, 0.]], dtype=torch.float64))


def test_anchored_redecides_and_can_drop_an_earlier_pseudo_label():
    res = self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, rounds=6, anchored=True)
    assert _pairs(res, 0) == {(0, 0), (3, 1)}
    # round 1, scored without self-scoring: item 3 no longer props c_1 up (its own weight is left out:
    # c_1 -> (6, 0), d_1 = 4.41) while item 0 pulled c_0 to 1.4 (d_0 = 6.25): p_1 = sigmoid(1.84) < 0.9
    assert res.confidence[1][3].item() == pytest.approx(sigmoid(6.25 - 4.41))
    # item 0 left out of c_0 (back to (0, 0), d_0 = 7.84); c_1 = (6 + 3.9) / 2 = 4.95, d_1 = 2.15^2
    assert res.confidence[1][0].item() == pytest.approx(sigmoid(7.84 - 2.15 ** 2))
    assert (0, 0) not in _pairs(res, 1) and 3 not in res.selected[1].tolist()


def test_anchored_prototypes_keep_half_their_weight_on_the_humans():
    res = self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, rounds=6, anchored=True)
    r = next(r for r in range(len(res.selected)) if _pairs(res, r) == {(1, 1), (2, 1), (3, 1)})
    # three pseudo-labels vs one human: lambda_1 = 3, c_1 = (3 * 6 + 3.5 + 3.3 + 3.9) / 6; c_0 = human
    expected = torch.tensor([[0., 0.], [(18 + 3.5 + 3.3 + 3.9) / 6, 0.]], dtype=torch.float64)
    assert torch.allclose(res.prototypes[r + 1], expected)
    free = self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, rounds=6, anchored=True, human_share=0.0)
    assert free.prototypes[1][1, 0].item() == pytest.approx((6 + 3.9) / 2)   # share 0: a plain mean


def test_stop_rule_fires_at_a_fixed_point():
    res = self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, rounds=10, anchored=False)
    assert res.converged and res.stopped_at < 10 and res.stopped_at == len(res.selected)
    assert _pairs(res, -1) == _pairs(res, -2)
    assert _pairs(res, -1) != _pairs(res, -3)
    short = self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, rounds=2, anchored=False)
    assert not short.converged and short.stopped_at == 2
    nothing = self_train(SZ, SY, POOL, 2, tau=1.0, z_per_class=1, rounds=5)
    assert nothing.converged and nothing.stopped_at == 1 and nothing.selected[0].numel() == 0
    assert torch.equal(nothing.final_prototypes, SZ)


def test_accepted_and_pool_labels():
    res = self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, rounds=1)
    assert res.accepted().tolist() == [0, -1, -1, 1]
    c = SZ
    assert pool_labels(c, POOL, tau=0.9).tolist() == [0, 1, 1, 1]
    assert pool_labels(c, POOL, tau=0.95).tolist() == [-1, 1, 1, 1]
    assert pool_labels(res, POOL, tau=0.0).shape == (4,)
    # a far item is confident by softmax alone; the mask refuses it
    far = torch.tensor([[0., 0.], [60., 0.]], dtype=torch.float64)
    assert pool_labels(c, far, tau=0.9).tolist() == [0, 1]
    assert pool_labels(c, far, tau=0.9, radius=4.0).tolist() == [0, -1]


def test_scores_mask_keeps_the_argmax_and_lowers_far_items():
    d = torch.tensor([[1., 9.], [400., 500.], [9., 1.]])
    p = scores(d, temperature=2.0)
    assert torch.allclose(p, torch.softmax(-d / 2.0, dim=1))
    q = scores(d, temperature=2.0, radius=4.0, sharpness=1.0)
    assert torch.equal(q.argmax(1), p.argmax(1))
    assert q[0, 0].item() == pytest.approx(p[0, 0].item() * sigmoid(3.0))
    assert q[1].max() < 1e-6 < p[1].max()


# ---------------------------------------------------------------- round_metrics
def test_round_metrics_counts_a_distractor_as_wrong():
    rec = SelfTraining(selected=[torch.tensor([0, 2]), torch.tensor([0, 1, 2, 3]), torch.tensor([], dtype=torch.long)],
                       labels=[torch.tensor([0, 1]), torch.tensor([0, 1, 1, 0]), torch.tensor([], dtype=torch.long)],
                       prototypes=[], confidence=[], final_prototypes=torch.zeros(2, 2), stopped_at=3,
                       converged=False, anchored=True, tau=0.5, z_per_class=2, pool_size=5)
    pool_y = torch.tensor([0, -1, 1, 0, 1])       # item 1 is a distractor
    m = round_metrics(rec, pool_y)
    assert m[0] == dict(precision=1.0, coverage=0.4, n_selected=2, n_correct=2, n_distractors=0)
    assert m[1]["precision"] == 0.75 and m[1]["n_distractors"] == 1 and m[1]["coverage"] == 0.8
    assert math.isnan(m[2]["precision"]) and m[2]["coverage"] == 0.0
    # labelling the distractor "-1" is not a pseudo-label and must not count as right
    rec.labels[1] = torch.tensor([0, -1, 1, 0])
    assert round_metrics(rec, pool_y)[1]["n_correct"] == 3
    with pytest.raises(ValueError, match="one true label per pool item"):
        round_metrics(rec, pool_y[:4])


# ---------------------------------------------------------------- drift, on seeded synthetic pools
def _pool(g, k=1, bridge=True, n=5, m=30, dim=8, spread=1.5, n_bridge=20, lo=3.0, hi=10.0):
    """n Gaussian classes (unit noise) and, per class, a trail of distractors leading away from it."""
    centres = torch.randn(n, dim, generator=g) * spread
    sz = (centres[:, None] + torch.randn(n, k, dim, generator=g)).reshape(-1, dim)
    pool = (centres[:, None] + torch.randn(n, m, dim, generator=g)).reshape(-1, dim)
    py = torch.arange(n).repeat_interleave(m)
    if bridge:
        means = torch.stack([pool[py == c].mean(0) for c in range(n)])
        u = torch.randn(n, 1, dim, generator=g)
        t = lo + (hi - lo) * torch.rand(n, n_bridge, 1, generator=g)
        trail = means[:, None] + t * u / u.norm(dim=2, keepdim=True) + 0.5 * torch.randn(n, n_bridge, dim, generator=g)
        pool, py = torch.cat([pool, trail.reshape(-1, dim)]), torch.cat([py, torch.full((n * n_bridge,), -1)])
    return sz, torch.arange(n).repeat_interleave(k), pool, py


def _precision(pools, **kw):
    """Mean accepted-label precision per round (a run that stopped early keeps its last value)."""
    rounds = kw["rounds"]
    total = torch.zeros(rounds)
    for sz, sy, pool, py in pools:
        m = round_metrics(self_train(sz, sy, pool, 5, z_per_class=5, temperature=10.0, **kw), py)
        total += torch.tensor([m[min(r, len(m) - 1)]["precision"] for r in range(rounds)])
    return (total / len(pools)).tolist()


def test_drift_and_its_repair():
    g = torch.Generator().manual_seed(0)
    val = [SimpleNamespace(support_z=sz, support_y=sy, pool_z=pool, pool_y=py, n_way=5)
           for sz, sy, pool, py in (_pool(g, bridge=False) for _ in range(5))]
    r = fit_radius(val, quantile=0.9)
    clean = [_pool(g, bridge=False) for _ in range(10)]
    dirty = [_pool(g) for _ in range(10)]
    # (a) no distractors, sensible tau: precision stays high round after round
    assert min(_precision(clean, tau=0.9, anchored=True, rounds=6)) > 0.95
    # (b) distractors, no mask: the locked-in loop drifts (measured 0.56 -> 0.46 over 8 rounds; seeds
    # 1-3: drops of 0.16-0.19)
    drift = _precision(dirty, tau=0.5, anchored=False, rounds=8)
    assert drift[-1] < drift[0] - 0.05 and drift[-1] < 0.6
    # ... and the mask alone does not stop it, since it walks with the unanchored prototypes (0.82 -> 0.68)
    walk = _precision(dirty, tau=0.9, anchored=False, radius=r, rounds=8)
    assert walk[-1] < walk[0] - 0.05
    # ... nor does a higher tau alone: the trail is far from the other classes, so softmax is sure of it
    assert max(_precision(dirty, tau=0.9, anchored=True, rounds=8)) < 0.7
    # (c) anchored + higher tau + the mask: precision holds (0.82 -> 0.85)
    fixed = _precision(dirty, tau=0.9, anchored=True, radius=r, rounds=8)
    assert fixed[-1] > fixed[0] - 0.03 and fixed[-1] > walk[-1] + 0.07


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_stays_on_the_inputs_device():
    dev = torch.device("cuda")
    res = self_train(SZ.to(dev), SY.to(dev), POOL.to(dev), 2, tau=0.9, z_per_class=1, radius=30.0)
    assert res.selected[-1].device.type == "cuda" and res.final_prototypes.device.type == "cuda"
    assert round_metrics(res, torch.tensor([0, 1, 1, 1]))[0]["n_selected"] == 2


@pytest.mark.parametrize("call, message", [
    (lambda: select_balanced(P_TOP, tau=1.5, z_per_class=1), r"\[0, 1\]"),
    (lambda: select_balanced(P_TOP, tau=-0.1, z_per_class=1), r"\[0, 1\]"),
    (lambda: select_balanced(P_TOP, tau=0.5, z_per_class=0), "z_per_class"),
    (lambda: select_balanced(P_TOP, tau=0.5, z_per_class=1.5), "z_per_class"),
    (lambda: select_balanced(P_TOP[0], tau=0.5, z_per_class=1), "2-D"),
    (lambda: select_balanced(P_TOP * 3, tau=0.5, z_per_class=1), r"\[0, 1\]"),
    (lambda: select_balanced(P_TOP, 0.5, 1, eligible=torch.ones(3, dtype=torch.bool)), "eligible"),
    (lambda: self_train(SZ, SY, POOL, 2, tau=2.0, z_per_class=1), "tau"),
    (lambda: self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=0), "z_per_class"),
    (lambda: self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, rounds=0), "rounds"),
    (lambda: self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, temperature=0.0), "temperature"),
    (lambda: self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, human_share=1.0), "human_share"),
    (lambda: self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, sharpness=1.0), "radius"),
    (lambda: self_train(SZ, SY, POOL, 2, tau=0.9, z_per_class=1, radius=-1.0), "radius"),
    (lambda: self_train(SZ, SY, POOL[:, :1], 2, tau=0.9, z_per_class=1), "embeddings"),
    (lambda: self_train(SZ, SY, POOL[0], 2, tau=0.9, z_per_class=1), "2-D"),
    (lambda: self_train(SZ[0], SY, POOL, 2, tau=0.9, z_per_class=1), "2-D"),
    (lambda: self_train(SZ, torch.tensor([0, 2]), POOL, 2, tau=0.9, z_per_class=1), "0..1"),
    (lambda: self_train(SZ, torch.tensor([1, 1]), POOL, 2, tau=0.9, z_per_class=1), "no support"),
    (lambda: self_train(SZ, SY, POOL, 1, tau=0.9, z_per_class=1), "n_way"),
    (lambda: pool_labels(SZ, POOL, tau=1.2), "tau"),
    (lambda: pool_labels(SZ, POOL[:, :1], tau=0.5), "embeddings"),
])
def test_bad_input_messages(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_self_training_round_matches_the_chapter_reference():
    """The library's round is exercise 7.5's reference (chapter 07's check), on random inputs."""
    from course_utils.chapter_checks.ch07 import reference_self_training_round
    from course_utils.self_training import self_training_round

    g = torch.Generator().manual_seed(0)
    for trial in range(5):
        n, k, p = 4, 1 + trial % 3, 30
        centres = 3 * torch.randn(n, 5, generator=g, dtype=torch.float64)
        support_z = centres.repeat_interleave(k, 0) + torch.randn(n * k, 5, generator=g, dtype=torch.float64)
        support_y = torch.arange(n).repeat_interleave(k)
        pool_z = centres[torch.randint(n, (p,), generator=g)] + torch.randn(p, 5, generator=g, dtype=torch.float64)
        pseudo_idx = torch.randperm(p, generator=g)[:trial * 3].sort().values
        pseudo_y = torch.randint(n, (len(pseudo_idx),), generator=g)
        args = (support_z, support_y, pool_z, pseudo_idx, pseudo_y, n, 1.5, 0.6, 3)
        a, b = self_training_round(*args), reference_self_training_round(*args)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), f"trial {trial}"
        if trial:  # leave-one-out matters: scoring with itself inside gives another selection somewhere
            assert len(a[0]) > 0
