import math
import sys
import types
from dataclasses import dataclass

import pytest
import torch

from course_utils import labelling as L
from course_utils.labelling import NONE, UNLABELLED, LabellingSession
from course_utils.labelling_data import Pool
from course_utils.protonet import protonet_logits
from conftest import cuda


def sig(x):
    return 1 / (1 + math.exp(-x))


def line_session(**kw):
    """1-D hand example: supports 0.0 (class 0) and 10.0 (class 1); pool 1, 9, 5, 4, 6; T = 10.

    Logits -d/T: item z=4 has p0 = sigmoid((36 - 16) / 10) = sigmoid(2) = 0.881; z=1 has
    sigmoid(8) = 0.99966; z=5 sits halfway (0.5, 0.5)."""
    pool_z = torch.tensor([[1.0], [9.0], [5.0], [4.0], [6.0]])
    kw.setdefault("temperature", 10.0)
    support_z, support_y = torch.tensor([[0.0], [10.0]]), torch.tensor([0, 1])
    return LabellingSession(pool_z, support_z, support_y, ["zero", "one"], **kw)


def gaussian_pool(n_way=4, m=15, dim=8, spread=1.0, sep=4.0, h=0, seed=0, k=1):
    """Seeded Gaussian clusters: class centres sep * N(0, I); items centre + spread * N(0, I)."""
    g = torch.Generator().manual_seed(seed)
    centres = sep * torch.randn(n_way + h, dim, generator=g)
    support_y = torch.arange(n_way).repeat_interleave(k)
    support_z = centres[support_y] + spread * torch.randn(n_way * k, dim, generator=g)
    true = torch.arange(n_way + h).repeat_interleave(m)
    pool_z = centres[true] + spread * torch.randn(true.numel(), dim, generator=g)
    pool_y = torch.where(true < n_way, true, torch.full_like(true, NONE))
    order = torch.randperm(true.numel(), generator=g)
    return Pool(support_z, support_y, pool_z[order], pool_y[order], n_way, k,
                [f"c{n}" for n in range(n_way)], [f"d{n}" for n in range(h)])


# ------------------------------------------------------------------------------ scoring pieces
def test_probabilities_softmax_over_classes_with_temperature():
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 2.0]])
    assert torch.allclose(L.probabilities(logits), torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    r = math.sqrt(3.0)
    assert torch.allclose(L.probabilities(logits, 2.0)[0], torch.tensor([1 / (1 + r), r / (1 + r)]))


def test_class_means_with_unequal_counts_in_any_order():
    z = torch.tensor([[1.0, 0.0], [0.0, 4.0], [3.0, 0.0], [0.0, 2.0], [5.0, 0.0]])
    y = torch.tensor([0, 1, 0, 1, 0])
    assert torch.allclose(L.class_means(z, y, 2), torch.tensor([[3.0, 0.0], [0.0, 3.0]]))
    with pytest.raises(ValueError, match="no labelled example"):
        L.class_means(z, y, 3)


def test_initial_probabilities_match_hand_computation():
    s = line_session()
    assert torch.allclose(s.p[3], torch.tensor([sig(2.0), 1 - sig(2.0)]), atol=1e-6)
    assert torch.allclose(s.p[0, 0], torch.tensor(sig(8.0)), atol=1e-6)
    assert torch.allclose(s.p[2], torch.tensor([0.5, 0.5]))
    assert torch.allclose(s.p.sum(dim=1), torch.ones(5))


# ---------------------------------------------------------------------------------- acquisition
def test_least_margin_and_entropy_orders_differ_as_computed_by_hand():
    # a: margin 0, entropy ln 2 = 0.69; b: margin 0.1, entropy 1.09; c: confident
    p = torch.tensor([[0.5, 0.5, 0.0], [0.4, 0.3, 0.3], [0.9, 0.05, 0.05], [0.5, 0.5, 0.0]])
    mask = torch.tensor([False, False, False, True])
    z = torch.zeros(4, 2)
    assert L.least_margin(p, z, mask, None).tolist() == [0, 1, 2]
    assert L.entropy(p, z, mask, None).tolist() == [1, 0, 2]
    assert L.least_margin(p, z, mask, None, limit=1).tolist() == [0]


def test_kcenter_greedy_farthest_from_labelled_and_supports():
    z = torch.tensor([[0.0], [1.0], [5.0], [10.0]])
    p = torch.full((4, 2), 0.5)
    mask = torch.tensor([True, False, False, False])
    assert L.kcenter(p, z, mask, None).tolist() == [3, 2, 1]
    assert L.kcenter(p, z, mask, None, support_z=torch.tensor([[10.0]])).tolist() == [2, 1, 3]
    assert L.kcenter(p, z, mask, None, limit=1).tolist() == [3]


def test_random_is_a_seeded_permutation_of_the_unlabelled():
    p, z = torch.full((6, 2), 0.5), torch.zeros(6, 1)
    mask = torch.tensor([True, False, False, True, False, False])
    a = L.random(p, z, mask, torch.Generator().manual_seed(3))
    b = L.random(p, z, mask, torch.Generator().manual_seed(3))
    assert a.tolist() == b.tolist() and sorted(a.tolist()) == [1, 2, 4, 5]


@pytest.mark.parametrize("name", sorted(L.ACQUISITIONS))
def test_every_acquisition_orders_exactly_the_unlabelled_items(name):
    pool = gaussian_pool()
    p = L.probabilities(protonet_logits(pool.pool_z, L.class_means(pool.support_z, pool.support_y, 4)))
    mask = torch.rand(pool.pool_z.shape[0], generator=torch.Generator().manual_seed(1)) < 0.4
    order = L.ACQUISITIONS[name](p, pool.pool_z, mask, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == (~mask).nonzero().flatten().tolist()


def test_a_custom_acquisition_with_the_plain_signature():
    def last_first(p, z, labelled_mask, generator):  # no limit / support_z keywords
        return (~labelled_mask).nonzero().flatten().flip(0)

    s = line_session(acquisition=last_first)
    assert s.propose().index == 4
    s.answer(1)
    assert s.propose().index == 3


# --------------------------------------------------------------------------------- the session
def test_propose_asks_about_the_least_certain_item_and_is_stable():
    s = line_session()
    prop = s.propose()
    assert prop.index == 2 and sorted(prop.classes) == [0, 1] and prop.probs == pytest.approx([0.5, 0.5])
    assert sorted(prop.names) == ["one", "zero"]
    assert s.propose().index == 2  # the same item until something changes


def test_answer_adds_a_support_and_retrains():
    s = line_session()
    s.propose()
    s.answer(1)  # item z=5 is class 1: c_1 = mean(10, 5) = 7.5
    assert torch.allclose(s.prototypes, torch.tensor([[0.0], [7.5]]))
    # z=4: d0 = 16, d1 = 12.25 -> p1 = sigmoid(0.375)
    assert s.p[3, 1].item() == pytest.approx(sig(0.375), abs=1e-6)
    assert s.labels().tolist() == [UNLABELLED, UNLABELLED, 1, UNLABELLED, UNLABELLED]
    assert s.sources() == [None, None, "human", None, None]
    assert s.stats()["human_clicks"] == 1 and s.stats()["remaining"] == 4


def test_none_of_these_is_not_a_support():
    s = line_session()
    before = s.prototypes.clone()
    s.propose()
    s.answer(None)
    assert torch.equal(s.prototypes, before)
    assert s.labels()[2].item() == NONE and s.sources()[2] == "none-of-these"
    st = s.stats()
    assert st["human_clicks"] == 1 and st["none_of_these"] == 1 and st["auto_labelled"] == 0


def test_accept_above_counts_and_estimated_precision():
    s = line_session()
    assert s.count_above(0.9) == 2  # z = 1 and z = 9
    assert s.accept_above(0.85) == 4  # + z = 4 and z = 6 (0.881); not z = 5 (0.5)
    st = s.stats()
    assert st["auto_labelled"] == 4 and st["coverage"] == pytest.approx(0.8) and st["remaining"] == 1
    assert st["estimated_precision"] == pytest.approx((2 * sig(8.0) + 2 * sig(2.0)) / 4, abs=1e-6)
    assert s.labels().tolist() == [0, 1, UNLABELLED, 0, 1]
    assert s.sources() == ["auto", "auto", None, "auto", "auto"]
    assert s.accept_above(0.85) == 0  # nothing new
    assert math.isnan(line_session().stats()["estimated_precision"])


def test_auto_labels_never_overwrite_human_labels():
    s = line_session()
    s.answer(1, index=0)  # a human says z = 1 is class 1, against the model
    s.accept_above(0.0)
    assert s.labels()[0].item() == 1 and s.sources()[0] == "human"
    assert s.sources()[1:] == ["auto"] * 4
    assert s.stats()["human_clicks"] == 1 and s.stats()["auto_labelled"] == 4


def test_retrain_refreshes_auto_labels_flip_and_withdraw():
    s = line_session()
    s.accept_above(0.55)  # items 0, 1, 3, 4
    s.propose()
    s.answer(1)  # z=5 is class 1 -> c_1 = 7.5; z=4 now prefers class 1 with p = sigmoid(0.375) = 0.593
    assert s.labels().tolist() == [0, 1, 1, 1, 1]
    assert s.sources() == ["auto", "auto", "human", "auto", "auto"]
    s = line_session()
    s.accept_above(0.85)
    s.propose()
    s.answer(1)  # z=4: 0.593 < 0.85 -> withdrawn, back in the queue
    assert s.labels().tolist() == [0, 1, 1, UNLABELLED, 1]
    assert s.sources()[3] is None and s.stats()["auto_labelled"] == 3
    assert s.propose().index == 3


def test_undo_restores_answer_skip_and_accept_in_reverse_order():
    s = line_session()
    first = s.propose().index
    p0, c0 = s.p.clone(), s.prototypes.clone()
    s.answer(1)
    skipped = s.propose().index
    s.skip()
    assert s.accept_above(0.5) == 3  # all but the answered and the skipped item
    s.undo()  # the accept
    st = s.stats()
    assert math.isnan(st.pop("estimated_precision"))
    assert st == dict(auto_labelled=0, human_clicks=1, coverage=0.0, remaining=4, skipped=1, none_of_these=0,
                      pool_size=5)
    s.undo()  # the skip
    assert s.stats()["skipped"] == 0 and s.propose().index == skipped
    s.undo()  # the answer
    assert torch.equal(s.p, p0) and torch.equal(s.prototypes, c0)
    assert s.labels().tolist() == [UNLABELLED] * 5 and s.sources() == [None] * 5
    assert s.propose().index == first
    with pytest.raises(ValueError, match="Nothing to undo"):
        s.undo()


def test_undo_of_each_kind_exactly():
    s = line_session()
    s.accept_above(0.85)
    s.undo()
    assert s.stats()["auto_labelled"] == 0
    s.propose()
    s.skip()
    assert s.stats()["skipped"] == 1
    s.undo()
    assert s.stats()["skipped"] == 0 and s.propose().index == 2
    assert not s.can_undo


def test_skip_puts_an_item_aside_and_it_comes_back_last():
    s = line_session()
    s.propose()
    s.skip()  # item 2
    st = s.stats()
    assert st["skipped"] == 1 and st["remaining"] == 5 and st["human_clicks"] == 0
    assert s.propose().index != 2
    s.accept_above(0.0)  # everything but the skipped item
    assert s.labels()[2].item() == UNLABELLED and s.stats()["auto_labelled"] == 4
    assert s.propose().index == 2  # only skipped items are left: it comes back
    s.answer(0)
    assert s.stats()["skipped"] == 0 and s.stats()["remaining"] == 0
    assert s.propose() is None
    with pytest.raises(ValueError, match="propose"):
        s.answer(0)
    with pytest.raises(ValueError, match="propose"):
        s.skip()


def test_skipped_items_cycle_oldest_first():
    s = line_session(temperature=1.0)
    s.accept_above(0.99)  # z = 1, 9, 4, 6 are certain at T = 1
    assert s.stats()["remaining"] == 1
    s.propose()
    s.skip()
    assert s.propose().index == 2  # the only one left comes back
    s.skip()
    assert s.propose().index == 2 and s.stats()["skipped"] == 1


def test_retrain_every_n_answers_and_manual_retrain():
    s = line_session(retrain_every=2)
    c0 = s.prototypes.clone()
    s.answer(1, index=2)
    assert torch.equal(s.prototypes, c0)  # not yet
    s.answer(0, index=3)
    assert torch.allclose(s.prototypes, torch.tensor([[2.0], [7.5]]))
    s = line_session(retrain_every=0)
    s.answer(1, index=2)
    assert torch.equal(s.prototypes, c0)
    s.retrain()
    assert torch.allclose(s.prototypes, torch.tensor([[0.0], [7.5]]))


def test_custom_scorer_gets_human_supports_class_major():
    seen = {}

    def scorer(sz, sy, n, z):
        seen["y"], seen["z"] = sy.tolist(), sz.flatten().tolist()
        return torch.zeros(z.shape[0], n)

    s = line_session(scorer=scorer)
    assert torch.allclose(s.p, torch.full((5, 2), 0.5)) and s.prototypes is None
    s.answer(0, index=1)
    assert seen["y"] == [0, 0, 1] and seen["z"] == [0.0, 9.0, 10.0]
    with pytest.raises(ValueError, match=r"shape \(P, N\)"):
        line_session(scorer=lambda sz, sy, n, z: torch.zeros(3, n))
    with pytest.raises(ValueError, match="default scorer"):
        line_session(scorer=scorer, self_training=True)


# ----------------------------------------------------------------------------- self-training hook
@dataclass
class _FakeResult:
    prototypes: list


def test_self_training_hook_uses_the_last_prototypes(monkeypatch):
    calls = []

    def self_train(support_z, support_y, pool_z, n_way, tau, z_per_class, rounds, temperature=1.0,
                   anchored=False, radius=None, sharpness=None):
        calls.append(dict(sz=support_z.flatten().tolist(), sy=support_y.tolist(),
                          pool=pool_z.flatten().tolist(), n=n_way, tau=tau, z=z_per_class, rounds=rounds,
                          T=temperature, anchored=anchored))
        return _FakeResult([torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [8.0]])])

    fake = types.SimpleNamespace(self_train=self_train)
    monkeypatch.setitem(sys.modules, "course_utils.self_training", fake)
    s = line_session(self_training=True, tau=0.8, z_per_class=2, rounds=4)
    assert torch.allclose(s.prototypes, torch.tensor([[2.0], [8.0]]))
    assert calls[0] == dict(sz=[0.0, 10.0], sy=[0, 1], pool=[1.0, 9.0, 5.0, 4.0, 6.0], n=2, tau=0.8, z=2,
                            rounds=4, T=10.0, anchored=True)
    s.answer(1, index=2)
    s.answer(None, index=0)  # neither a human-labelled nor a none-of-these item is in the pool
    assert calls[-1]["sz"] == [0.0, 10.0, 5.0] and calls[-1]["pool"] == [9.0, 4.0, 6.0]


def test_self_training_hook_prefers_final_prototypes(monkeypatch):
    @dataclass
    class Result:
        prototypes: list
        final_prototypes: torch.Tensor

    result = Result([torch.zeros(2, 1)], torch.tensor([[3.0], [7.0]]))
    fake = types.SimpleNamespace(self_train=lambda *a, **k: result)
    monkeypatch.setitem(sys.modules, "course_utils.self_training", fake)
    assert torch.allclose(line_session(self_training=True).prototypes, torch.tensor([[3.0], [7.0]]))


def test_simulate_with_real_self_training():
    pytest.importorskip("course_utils.self_training",
                        reason="course_utils.self_training (helper B) is not written yet")
    pool = gaussian_pool(h=1, seed=2)
    r = L.simulate(pool, "least_margin", clicks=6, self_training=True, tau=0.9, z_per_class=3, rounds=2)
    assert r["self_training"] and len(r["pool_accuracy"]) == 7
    assert all(0.0 <= a <= 1.0 for a in r["pool_accuracy"])


# ------------------------------------------------------------------------------------ simulation
def test_pool_accuracy_counts_distractors_right_only_as_none_of_these():
    s = line_session()
    truth = torch.tensor([0, 1, NONE, 0, 1])  # z=5 is a distractor
    assert L.pool_accuracy(s, truth) == pytest.approx(0.8)
    s.propose()
    s.answer(None)
    assert L.pool_accuracy(s, truth) == pytest.approx(1.0)
    s.undo()
    s.answer(0, index=2)  # a class for a distractor is wrong, and c_0 = 2.5 now pulls z=6 into class 0
    assert L.pool_accuracy(s, truth) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="pool_y"):
        L.pool_accuracy(s, truth[:3])


def test_simulate_curve_starts_at_the_protonet_accuracy_and_ends_at_one():
    pool = gaussian_pool(n_way=3, m=6, h=1, spread=1.5, sep=2.0, seed=4)
    P = pool.pool_z.shape[0]
    r = L.simulate(pool, "entropy")
    assert r["clicks"] == list(range(P + 1)) and r["pool_size"] == P
    pred = protonet_logits(pool.pool_z, L.class_means(pool.support_z, pool.support_y, 3)).argmax(1)
    assert r["pool_accuracy"][0] == pytest.approx((pred == pool.pool_y).float().mean().item())
    assert r["pool_accuracy"][0] <= 1 - 6 / P  # the 6 distractors start wrong
    assert r["pool_accuracy"][-1] == 1.0
    assert len(L.simulate(pool, "random", clicks=4)["pool_accuracy"]) == 5


def test_uncertainty_sampling_needs_fewer_clicks_than_random():
    total = {"least_margin": 0, "entropy": 0, "random": 0}
    for seed in range(5):  # overlapping 1-shot clusters: the supports alone get ~60-80 % right
        pool = gaussian_pool(n_way=4, m=15, spread=1.6, sep=2.0, seed=seed)
        for a in total:
            total[a] += L.clicks_to_reach(L.simulate(pool, a, temperature=2.0), 0.98)
    # measured: 84 and 84 clicks vs 172 (of 5 x 60 items)
    assert total["least_margin"] < 0.7 * total["random"], total
    assert total["entropy"] < 0.7 * total["random"], total


def test_clicks_to_reach_and_labels_saved():
    curve = [0.5, 0.8, 0.95, 0.9, 0.99]
    assert L.clicks_to_reach(curve, 0.9) == 2
    assert L.clicks_to_reach(curve, 0.99) == 4
    assert L.clicks_to_reach(curve, 1.0) is None
    assert L.clicks_to_reach({"clicks": [0, 1, 2], "pool_accuracy": [0.1, 0.2, 0.7]}, 0.5) == 2
    assert L.labels_saved(2, 10) == pytest.approx(0.8)
    assert L.labels_saved(None, 10) is None
    with pytest.raises(ValueError, match="target"):
        L.clicks_to_reach(curve, 1.5)
    with pytest.raises(ValueError, match="clicks <= pool_size"):
        L.labels_saved(11, 10)


# ------------------------------------------------------------------------------------- bad input
Z, SZ, SY = torch.zeros(5, 2), torch.zeros(2, 2), torch.tensor([0, 1])


@pytest.mark.parametrize("args, kwargs, match", [
    ((torch.zeros(5), SZ, SY, ["a", "b"]), {}, "pool_z must be a 2-D"),
    ((Z, torch.zeros(2, 3), SY, ["a", "b"]), {}, "same network"),
    ((Z, SZ, torch.tensor([0, 1, 1]), ["a", "b"]), {}, "one label per support row"),
    ((Z, SZ, torch.tensor([0.0, 1.0]), ["a", "b"]), {}, "integer class indices"),
    ((Z, SZ, torch.tensor([0, 2]), ["a", "b"]), {}, "one name per class"),
    ((Z, SZ, SY, ["a", "b", "c"]), {}, r"\['c'\] have no support"),
    ((Z, SZ[:1], SY[:1], ["a"]), {}, "at least 2 classes"),
    ((Z, SZ, SY, "ab"), {}, "class_names must be a list"),
    ((torch.zeros(0, 2), SZ, SY, ["a", "b"]), {}, "nothing to label"),
    ((Z, SZ, SY, ["a", "b"]), dict(tau=1.5), r"tau .* \[0, 1\]"),
    ((Z, SZ, SY, ["a", "b"]), dict(temperature=0.0), "temperature"),
    ((Z, SZ, SY, ["a", "b"]), dict(acquisition="bald"), "Unknown acquisition"),
    ((Z, SZ, SY, ["a", "b"]), dict(retrain_every=-1), "retrain_every"),
])
def test_bad_session_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LabellingSession(*args, **kwargs)


def test_bad_answers_and_thresholds():
    s = line_session()
    with pytest.raises(ValueError, match="propose"):
        s.answer(0)
    s.propose()
    with pytest.raises(ValueError, match="out of range"):
        s.answer(2)
    with pytest.raises(ValueError, match="out of range"):
        s.answer(-3)
    with pytest.raises(ValueError, match="class index"):
        s.answer("one")
    with pytest.raises(ValueError, match="class index"):
        s.answer(True)
    with pytest.raises(ValueError, match="index 9 is out of range"):
        s.answer(0, index=9)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.accept_above(-0.1)
    s.answer(torch.tensor(1))  # a 0-d integer tensor is a fine label
    assert s.labels()[2].item() == 1
    with pytest.raises(ValueError, match="clicks"):
        L.simulate(gaussian_pool(), clicks=-1)


@cuda
@pytest.mark.cuda
def test_session_stays_on_the_gpu():
    pool = gaussian_pool(h=1)
    s = LabellingSession(pool.pool_z.cuda(), pool.support_z.cuda(), pool.support_y.cuda(), pool.classes)
    s.answer(0, index=s.propose().index)
    s.accept_above(0.5)
    assert s.p.is_cuda and s.prototypes.is_cuda and s.labels().is_cuda
    for name in L.ACQUISITIONS:
        s2 = LabellingSession(pool.pool_z.cuda(), pool.support_z.cuda(), pool.support_y.cuda(), pool.classes,
                              acquisition=name)
        assert s2.propose() is not None
    r = L.simulate(Pool(pool.support_z.cuda(), pool.support_y.cuda(), pool.pool_z.cuda(), pool.pool_y.cuda(),
                        pool.n_way, 1, pool.classes), "kcenter", clicks=5)
    assert len(r["pool_accuracy"]) == 6
