"""Chapter 01's checks: right answers in several styles pass; each listed mistake is diagnosed with its
reason; stubs are 'not attempted', a partial answer's own NotImplementedError is not; strict mode raises."""
import random

import pytest
import torch

from course_utils import checks, contrastive, siamese
from course_utils.chapter_checks import ch01
from conftest import message, status, stub  # shared check-test helpers


def relu(t):
    return torch.clamp(t, min=0)


def assert_wrong(number, phrase):
    assert status(number) == "wrong", message(number)
    assert phrase in message(number), message(number)


# ----------------------------------------------------------------------------- 1.1

def loss_right(D, Y, margin=1.0):
    return (1 - Y) * D ** 2 + Y * torch.clamp(margin - D, min=0) ** 2


def loss_notebook(D, Y, margin=1.0):  # the solution in the notebook
    Y = Y.to(D.dtype)
    return (1 - Y) * D ** 2 + Y * torch.clamp(margin - D, min=0) ** 2


def loss_where(D, Y, margin=1.0):
    return torch.where(Y == 0, D ** 2, torch.relu(margin - D) ** 2)


def loss_maximum(D, Y, margin=1.0):
    return (1 - Y) * D.pow(2) + Y * torch.maximum(torch.zeros_like(D), margin - D).pow(2)


def loss_loop(D, Y, margin=1.0):  # one pair at a time
    Y = Y.to(D.dtype)
    return torch.stack([(1 - y) * d * d + y * torch.clamp(margin - d, min=0) ** 2 for d, y in zip(D, Y)])


def loss_hadsell_half(D, Y, margin=1.0):  # Hadsell et al.'s form: right too
    return 0.5 * ((1 - Y) * D ** 2 + Y * relu(margin - D) ** 2)


def loss_inverted(D, Y, margin=1.0):  # the seed article: Y = 1 for the same class
    return Y * D ** 2 + (1 - Y) * relu(margin - D) ** 2


def loss_inverted_half(D, Y, margin=1.0):
    return 0.5 * loss_inverted(D, Y, margin)


def loss_margin_on_similar(D, Y, margin=1.0):  # also the inverted labels, written the other way round
    return (1 - Y) * relu(margin - D) ** 2 + Y * D ** 2


def loss_no_square_d(D, Y, margin=1.0):
    return (1 - Y) * D + Y * relu(margin - D) ** 2


def loss_no_square_hinge(D, Y, margin=1.0):  # hinge instead of squared hinge
    return (1 - Y) * D ** 2 + Y * relu(margin - D)


def loss_margin_wrong_term(D, Y, margin=1.0):
    return (1 - Y) * relu(D - margin) ** 2 + Y * relu(margin - D) ** 2


def loss_hinge_backwards(D, Y, margin=1.0):
    return (1 - Y) * D ** 2 + Y * relu(D - margin) ** 2


def loss_margin_vs_d2(D, Y, margin=1.0):
    return (1 - Y) * D ** 2 + Y * relu(margin - D ** 2) ** 2


def loss_no_max(D, Y, margin=1.0):
    return (1 - Y) * D ** 2 + Y * (margin - D) ** 2


def loss_half_one_term(D, Y, margin=1.0):
    return 0.5 * (1 - Y) * D ** 2 + Y * relu(margin - D) ** 2


def loss_mean(D, Y, margin=1.0):
    return loss_right(D, Y, margin).mean()


def loss_sum(D, Y, margin=1.0):
    return loss_right(D, Y, margin).sum()


def loss_detached(D, Y, margin=1.0):
    return torch.tensor([float(v) for v in loss_right(D.detach(), Y, margin)])


def loss_fixed_margin(D, Y, margin=1.0):
    return loss_right(D, Y, 2.0)


def loss_default_margin(D, Y, margin=1.0):  # hard-codes m = 1, whatever margin is passed
    return (1 - Y) * D ** 2 + Y * relu(1.0 - D) ** 2


def loss_hinge_on_squares(D, Y, margin=1.0):  # max(0, m² - D²) instead of max(0, m - D)²
    return (1 - Y) * D ** 2 + Y * relu(margin ** 2 - D ** 2)


def loss_hinge_on_squares_squared(D, Y, margin=1.0):
    return (1 - Y) * D ** 2 + Y * relu(margin ** 2 - D ** 2) ** 2


def loss_positional(D, Y, margin=1.0):  # ignores Y: assumes the similar pairs come first
    k = int((Y == 0).sum())
    return torch.cat([D[:k] ** 2, relu(margin - D[k:]) ** 2])


def loss_float32(D, Y, margin=1.0):
    return loss_right(D.float(), Y.float(), margin)


def loss_int_labels_break(D, Y, margin=1.0):  # integer Y: (1 - Y) stays integer, then ... // 1
    return ((1 - Y) * D ** 2 + Y * relu(margin - D) ** 2) * (Y.dtype.is_floating_point or 0.5)


def loss_mutates(D, Y, margin=1.0):
    D.clamp_(min=0.5)  # changes the caller's distances
    return loss_right(D, Y, margin)


def loss_tuple(D, Y, margin=1.0):
    out = loss_right(D, Y, margin)
    return out, out.mean()


def loss_partial(D, Y, margin=1.0):
    similar = (1 - Y) * D ** 2
    raise NotImplementedError("the margin term is still to do")


def loss_cpu_zeros(D, Y, margin=1.0):  # a device-less tensor: crashes on a GPU
    return (1 - Y) * D ** 2 + Y * torch.maximum(torch.zeros(len(D)), margin - D) ** 2


def loss_unknown_bug(D, Y, margin=1.0):  # wrong in no catalogued way
    return loss_right(D, Y, margin) + 0.1 * Y * D


@pytest.mark.parametrize("fn", [loss_right, loss_notebook, loss_where, loss_maximum, loss_loop,
                                lambda D, Y, margin=1.0: contrastive.contrastive_loss(D, Y, margin)])
def test_loss_right_answers_pass(fn):
    ch01.contrastive_loss(fn)
    assert status("1.1") == "right", message("1.1")


def test_hadsells_half_is_accepted_and_said(capsys):
    use = ch01.contrastive_loss(loss_hadsell_half)
    assert status("1.1") == "right" and use is loss_hadsell_half
    assert "factor 1/2. That is right too" in capsys.readouterr().out


@pytest.mark.parametrize("fn,phrase", [
    (loss_inverted, "you used Y = 1 for similar pairs: that pulls different classes together and pushes "
                    "same-class pairs apart — the seed article's mistake"),
    (loss_inverted_half, "the seed article's mistake"),
    (loss_margin_on_similar, "the seed article's mistake"),
    (loss_no_square_d, "square is missing on the similar-pair term"),
    (loss_no_square_hinge, "a plain hinge instead of the squared hinge"),
    (loss_margin_wrong_term, "margin is on the wrong term"),
    (loss_hinge_backwards, "hinge is backwards"),
    (loss_margin_vs_d2, "compared with D²"),
    (loss_no_max, "max(0, ·) is missing"),
    (loss_half_one_term, "the factor 1/2 is on one term only"),
    (loss_mean, "mean over pairs"),
    (loss_sum, "sum over pairs"),
    (loss_detached, "does not carry gradients"),
    (loss_fixed_margin, "the margin argument is ignored"),
    (loss_default_margin, "the margin argument is ignored"),
    (loss_hinge_on_squares, "the hinge compares m with D, not m² with D²"),
    (loss_hinge_on_squares_squared, "the hinge compares m with D, not m² with D²"),
    (loss_positional, "does not read the labels Y"),
    (loss_float32, "compute in float64"),
    (loss_int_labels_break, "with integer labels"),
    (loss_mutates, "changed its input `D` in place"),
    (loss_tuple, "returned a tuple of 2"),
    (loss_partial, "not the exercise's stub, so it counts as an attempt"),
    (loss_cpu_zeros, "makes a tensor on the CPU"),
])
def test_loss_mistakes_are_named(fn, phrase):
    use = ch01.contrastive_loss(fn)
    assert_wrong("1.1", phrase)
    assert use is not fn  # the chapter continues with the reference


def test_unknown_loss_bug_shows_the_inputs_of_the_first_wrong_pair():
    ch01.contrastive_loss(loss_unknown_bug)
    assert status("1.1") == "wrong"
    msg = message("1.1")
    D, Y, m = ch01._loss_probe_inputs()
    k = next(i for i in range(len(D)) if Y[i] == 1 and D[i] != 0)
    assert f"differs at index {k}" in msg
    assert f"D = {float(D[k]):.6g}, Y = 1 (different classes) and margin = {m:g}" in msg


def test_loss_mistakes_are_all_different_on_the_probe():
    D, Y, m = ch01._loss_probe_inputs()
    right = loss_right(D, Y, m).double()
    outs = list(ch01.loss_mistakes(D, Y, m).values()) + [right, 0.5 * right]
    outs += [0.5 * o for o in ch01.loss_mistakes(D, Y, m).values()]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.allclose(outs[i], outs[j], atol=1e-3), (i, j)


# ----------------------------------------------------------------------------- 1.2

def dist_naive(z1, z2):
    return ((z1 - z2) ** 2).sum(-1).sqrt()


def dist_where(z1, z2):
    u = ((z1 - z2) ** 2).sum(-1)
    return torch.where(u > 0, u.sqrt(), torch.zeros_like(u))


def dist_eps_after_root(z1, z2):
    return ((z1 - z2) ** 2).sum(-1).sqrt() + 1e-12


def dist_clamp_after_root(z1, z2):  # clamping after the root: the same mistake as eps after it
    return ((z1 - z2) ** 2).sum(-1).sqrt().clamp_min(1e-12)


def dist_detach_z1(z1, z2):  # no gradient reaches z1
    return ((z1.detach() - z2) ** 2).sum(-1).add(1e-12).sqrt()


def dist_data_z2(z1, z2):  # no gradient reaches z2
    return ((z1 - z2.data) ** 2).sum(-1).add(1e-12).sqrt()


def dist_squared(z1, z2):
    return ((z1 - z2) ** 2).sum(-1)


def dist_l1(z1, z2):
    return (z1 - z2).abs().sum(-1)


def dist_mean(z1, z2):
    return ((z1 - z2) ** 2).mean(-1).add(1e-12).sqrt()


def dist_big_eps(z1, z2):
    return ((z1 - z2) ** 2).sum(-1).add(1e-2).sqrt()


def dist_eps_1e_5(z1, z2):  # D(x, x) = 3.2e-3: over the bound
    return ((z1 - z2) ** 2).sum(-1).add(1e-5).sqrt()


def dist_wrong_dim(z1, z2):
    return ((z1 - z2) ** 2).sum(0).add(1e-12).sqrt()


def dist_wrong_dim_padded(z1, z2):  # right shape on the first probe, wrong axis underneath
    u = ((z1 - z2) ** 2)
    return (u.sum(1) if u.shape[0] != u.shape[1] else u.sum(0)).add(1e-12).sqrt()


def dist_all(z1, z2):
    return ((z1 - z2) ** 2).sum().add(1e-12).sqrt()


def dist_keepdim(z1, z2):
    return ((z1 - z2) ** 2).sum(-1, keepdim=True).add(1e-12).sqrt()


def dist_float32(z1, z2):
    return ((z1.float() - z2.float()) ** 2).sum(-1).add(1e-12).sqrt()


def dist_mutates(z1, z2):
    z1.sub_(z2)
    return (z1 ** 2).sum(-1).add(1e-12).sqrt()


def dist_tuple(z1, z2):
    u = ((z1 - z2) ** 2).sum(-1)
    return (u + 1e-12).sqrt(), u


def dist_partial(z1, z2):
    u = ((z1 - z2) ** 2).sum(-1)
    raise NotImplementedError("TODO: make it safe at zero")


def dist_cpu_eps(z1, z2):
    return (((z1 - z2) ** 2).sum(-1) + torch.full((len(z1),), 1e-12)).sqrt()


@pytest.mark.parametrize("fn", [
    contrastive.euclidean_distance,
    lambda z1, z2: (z1 - z2).norm(dim=-1),
    lambda z1, z2: torch.linalg.vector_norm(z1 - z2, dim=1),
    lambda z1, z2: torch.nn.functional.pairwise_distance(z1, z2),
    lambda z1, z2: ((z1 - z2) ** 2).sum(-1).clamp_min(1e-12).sqrt(),
    lambda z1, z2: ((z1 - z2) ** 2).sum(1).add(1e-6).sqrt(),       # eps = 1e-6: D(x, x) = 1e-3, accepted
    lambda z1, z2: ((z1 - z2) ** 2).sum(-1).clamp_min(1e-6).sqrt(),
    lambda z1, z2: (((z1 - z2) ** 2).sum(-1) + 1e-12) ** 0.5,
    lambda z1, z2: torch.stack([((a - b) ** 2).sum().add(1e-12).sqrt() for a, b in zip(z1, z2)]),
])
def test_safe_distances_pass(fn):
    ch01.euclidean_distance(fn)
    assert status("1.2") == "right", message("1.2")


def test_the_zero_bound_admits_eps_1e_6_in_float32():
    d0 = torch.tensor(1e-6).sqrt().item()  # float32: 1.00000005e-3
    assert d0 > 1e-3 and d0 <= ch01.ZERO_DISTANCE_BOUND


@pytest.mark.parametrize("fn,phrase", [
    (dist_naive, "NaN where the two embeddings are identical"),
    (dist_where, "NaN where the two embeddings are identical"),
    (dist_eps_after_root, "The eps goes under the root, not after it"),
    (dist_clamp_after_root, "The eps goes under the root, not after it"),
    (dist_detach_z1, "no gradient reaches z1"),
    (dist_data_z2, "no gradient reaches z2"),
    (dist_squared, "SQUARED distance"),
    (dist_l1, "L1 (Manhattan)"),
    (dist_mean, "averaged the squared differences"),
    (dist_big_eps, "eps is too large"),
    (dist_eps_1e_5, "accepts D(x, x) up to about 1e-3"),
    (dist_wrong_dim, "reduced over the wrong axis"),
    (dist_wrong_dim_padded, "reduced over the wrong axis"),
    (dist_all, "you reduced over every axis"),
    (dist_keepdim, "drop keepdim=True"),
    (dist_float32, "compute in float64"),
    (dist_mutates, "changed its input `z1` in place"),
    (dist_tuple, "returned a tuple of 2"),
    (dist_partial, "counts as an attempt"),
    (dist_cpu_eps, "makes a tensor on the CPU"),
])
def test_distance_mistakes_are_named(fn, phrase):
    ch01.euclidean_distance(fn)
    assert_wrong("1.2", phrase)


def test_nan_message_explains_the_fix():
    ch01.euclidean_distance(dist_naive)
    assert "0 · inf = NaN" in message("1.2") and "sqrt(u + 1e-12)" in message("1.2")


def test_eps_after_the_root_gets_its_own_line_not_the_generic_one():
    ch01.euclidean_distance(dist_eps_after_root)
    assert "AFTER the square root" in message("1.2") and "0 · inf = NaN" not in message("1.2")
    ch01.euclidean_distance(dist_naive)  # a plain sqrt keeps the generic explanation
    assert "AFTER the square root" not in message("1.2")


def test_a_detached_input_is_not_reported_as_a_check_failure():
    ch01.euclidean_distance(dist_detach_z1)
    assert "could not use what your function returned" not in message("1.2")
    assert "allow_unused" not in message("1.2")


# ----------------------------------------------------------------------------- 1.3

def pairs_notebook(classes, n_pairs, generator=None):  # the solution in the notebook
    C, half = len(classes), n_pairs // 2
    first, second = [], []
    for _ in range(half):
        c = int(torch.randint(C, (1,), generator=generator))
        i, j = torch.randperm(len(classes.examples(c)), generator=generator)[:2].tolist()
        first.append(classes.examples(c)[i]); second.append(classes.examples(c)[j])
    for _ in range(half):
        c1, c2 = torch.randperm(C, generator=generator)[:2].tolist()
        first.append(classes.examples(c1)[int(torch.randint(len(classes.examples(c1)), (1,), generator=generator))])
        second.append(classes.examples(c2)[int(torch.randint(len(classes.examples(c2)), (1,), generator=generator))])
    y = torch.cat([torch.zeros(half), torch.ones(half)])
    return torch.stack(first).float() / 255, torch.stack(second).float() / 255, y


def pairs_vectorised(classes, n_pairs, generator=None):  # all random numbers at once
    C, half, M = len(classes), n_pairs // 2, classes.min_examples()
    c = torch.randint(C, (half,), generator=generator)
    i = torch.randint(M, (half,), generator=generator)
    j = (i + 1 + torch.randint(M - 1, (half,), generator=generator)) % M
    c1 = torch.randint(C, (half,), generator=generator)
    c2 = (c1 + 1 + torch.randint(C - 1, (half,), generator=generator)) % C
    k1, k2 = torch.randint(M, (half,), generator=generator), torch.randint(M, (half,), generator=generator)
    get = lambda cs, ks: torch.stack([classes.examples(int(a))[int(b)] for a, b in zip(cs, ks)])
    x1 = torch.cat([get(c, i), get(c1, k1)]).float() / 255
    x2 = torch.cat([get(c, j), get(c2, k2)]).float() / 255
    return x1, x2, torch.cat([torch.zeros(half), torch.ones(half)])


def pairs_shuffled(classes, n_pairs, generator=None):  # right, in a random order
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    order = torch.randperm(n_pairs, generator=generator)
    return x1[order], x2[order], y[order]


def pairs_interleaved(classes, n_pairs, generator=None):  # right: same / different pairs alternate
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    h = n_pairs // 2
    order = torch.stack([torch.arange(h), h + torch.arange(h)], 1).reshape(-1)
    return x1[order], x2[order], y[order]


def pairs_odd_value_error(classes, n_pairs, generator=None):  # right: refuses an odd n_pairs itself
    if n_pairs % 2:
        raise ValueError("n_pairs must be even")
    return pairs_vectorised(classes, n_pairs, generator)


def pairs_odd_ceil(classes, n_pairs, generator=None):  # odd n_pairs: (n_pairs + 1) // 2 of each, one pair too many
    return pairs_vectorised(classes, 2 * ((n_pairs + 1) // 2), generator)


def pairs_odd_unbalanced(classes, n_pairs, generator=None):  # odd n_pairs: n_pairs pairs, one more negative
    x1, x2, y = siamese.sample_pairs(classes, 2 * ((n_pairs + 1) // 2), generator)
    keep = torch.arange(n_pairs) + (n_pairs % 2)  # drops one similar pair when n_pairs is odd
    return x1[keep], x2[keep], y[keep]


def pairs_shared_example_index(classes, n_pairs, generator=None):  # negatives: one k for both classes
    C, M, h = len(classes), classes.min_examples(), n_pairs // 2
    pos = [(_r(C, generator), *_distinct(M, generator)) for _ in range(h)]
    neg = [(c1, k, c2, k) for c1, _, c2, k in (_good_neg(C, M, generator) for _ in range(h))]
    return _build(classes, pos, neg)


def pairs_next_example_negatives(classes, n_pairs, generator=None):  # negatives: k2 = k1 + 1
    C, M, h = len(classes), classes.min_examples(), n_pairs // 2
    pos = [(_r(C, generator), *_distinct(M, generator)) for _ in range(h)]
    neg = [(c1, k, c2, (k + 1) % M) for c1, k, c2, _ in (_good_neg(C, M, generator) for _ in range(h))]
    return _build(classes, pos, neg)


def pairs_inverted(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return x1, x2, 1 - y


def pairs_unbalanced(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs + 20, generator)
    keep = torch.arange(n_pairs) + 20  # drops 20 similar pairs: 40% / 60%
    return x1[keep], x2[keep], y[keep]


def _pick(classes, c, i):
    return classes.examples(int(c))[int(i)].float() / 255


def _build(classes, pos, neg):
    """pos: list of (c, i, j); neg: list of (c1, i, c2, j) -> (x1, x2, y)."""
    x1 = [_pick(classes, c, i) for c, i, _ in pos] + [_pick(classes, c1, i) for c1, i, _, _ in neg]
    x2 = [_pick(classes, c, j) for c, _, j in pos] + [_pick(classes, c2, j) for _, _, c2, j in neg]
    return torch.stack(x1), torch.stack(x2), torch.cat([torch.zeros(len(pos)), torch.ones(len(neg))])


def _r(n, g):
    return int(torch.randint(n, (1,), generator=g))


def _distinct(m, g):
    i = _r(m, g)
    return i, (i + 1 + _r(m - 1, g)) % m


def _good_neg(C, M, g):
    c1 = _r(C, g)
    return c1, _r(M, g), (c1 + 1 + _r(C - 1, g)) % C, _r(M, g)


def pairs_self(classes, n_pairs, generator=None):  # positive = an image with itself
    C, M, h = len(classes), classes.min_examples(), n_pairs // 2
    pos = [(c, i, i) for c, i in ((_r(C, generator), _r(M, generator)) for _ in range(h))]
    return _build(classes, pos, [_good_neg(C, M, generator) for _ in range(h)])


def pairs_negatives_with_replacement(classes, n_pairs, generator=None):
    C, M, h = len(classes), classes.min_examples(), n_pairs // 2
    pos = [(_r(C, generator), *_distinct(M, generator)) for _ in range(h)]
    neg = [(_r(C, generator), _r(M, generator), _r(C, generator), _r(M, generator)) for _ in range(h)]  # may be equal
    return _build(classes, pos, neg)


def pairs_cyclic_classes(classes, n_pairs, generator=None):  # classes in turn, not at random
    C, M, h = len(classes), classes.min_examples(), n_pairs // 2
    pos = [(k % C, *_distinct(M, generator)) for k in range(h)]
    neg = [(k % C, _r(M, generator), (k + 3) % C, _r(M, generator)) for k in range(h)]
    return _build(classes, pos, neg)


def pairs_fixed_examples(classes, n_pairs, generator=None):  # random classes, examples by position
    C, M, h = len(classes), classes.min_examples(), n_pairs // 2
    pos = [(_r(C, generator), k % M, (k % M + 1 + (k // M) % (M - 1)) % M) for k in range(h)]
    neg = [(c1, k % M, c2, (k + 2) % M) for k, (c1, _, c2, _) in
           enumerate(_good_neg(C, M, generator) for _ in range(h))]
    return _build(classes, pos, neg)


def pairs_next_example(classes, n_pairs, generator=None):  # j = i + 1: not independent
    C, M, h = len(classes), classes.min_examples(), n_pairs // 2
    pos = [(_r(C, generator), i, (i + 1) % M) for i in (_r(M, generator) for _ in range(h))]
    return _build(classes, pos, [_good_neg(C, M, generator) for _ in range(h)])


def pairs_next_class(classes, n_pairs, generator=None):  # c2 = c1 + 1: not independent
    C, M, h = len(classes), classes.min_examples(), n_pairs // 2
    pos = [(_r(C, generator), *_distinct(M, generator)) for _ in range(h)]
    neg = [(c1, _r(M, generator), (c1 + 1) % C, _r(M, generator)) for c1 in (_r(C, generator) for _ in range(h))]
    return _build(classes, pos, neg)


def pairs_one_class_per_batch(classes, n_pairs, generator=None):
    C, M, h = len(classes), classes.min_examples(), n_pairs // 2
    c = _r(C, generator)
    pos = [(c, *_distinct(M, generator)) for _ in range(h)]
    return _build(classes, pos, [_good_neg(C, M, generator) for _ in range(h)])


def pairs_skewed(classes, n_pairs, generator=None):  # class 0 half of the time
    C, M, h = len(classes), classes.min_examples(), n_pairs // 2
    pos = [(0 if _r(2, generator) else _r(C, generator), *_distinct(M, generator)) for _ in range(h)]
    return _build(classes, pos, [_good_neg(C, M, generator) for _ in range(h)])


def pairs_tiled(classes, n_pairs, generator=None):  # a quarter of the pairs, four times over
    h = n_pairs // 2
    few = max(h // 4, 1)
    x1, x2, y = siamese.sample_pairs(classes, 2 * few, generator)
    idx = torch.cat([torch.arange(h) % few, few + torch.arange(h) % few])
    return x1[idx], x2[idx], y[idx]


def pairs_reseeded(classes, n_pairs, generator=None):  # re-seeds a private generator from the given one
    g = torch.Generator().manual_seed(generator.initial_seed()) if generator is not None else None
    return siamese.sample_pairs(classes, n_pairs, g)


def pairs_python_random(classes, n_pairs, generator=None):
    C, M, h = len(classes), classes.min_examples(), n_pairs // 2
    pos = [(random.randrange(C), *random.sample(range(M), 2)) for _ in range(h)]
    neg = [(a, random.randrange(M), b, random.randrange(M)) for a, b in (random.sample(range(C), 2) for _ in range(h))]
    return _build(classes, pos, neg)


def pairs_uint8_scale(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return (x1 * 255).round(), (x2 * 255).round(), y


def pairs_raw_uint8(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return (x1 * 255).round().to(torch.uint8), (x2 * 255).round().to(torch.uint8), y


def pairs_float64(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return x1.double(), x2.double(), y


def pairs_normalised(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return x1 * 2 - 1, x2 * 2 - 1, y


def pairs_transposed(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return x1.transpose(-1, -2), x2.transpose(-1, -2), y


def pairs_long_labels(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return x1, x2, y.long()


def pairs_bool_labels(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return x1, x2, y.bool()


def pairs_no_generator(classes, n_pairs, generator=None):
    return siamese.sample_pairs(classes, n_pairs, None)


def pairs_tensor_indexing(classes, n_pairs, generator=None):  # assumes classes.x is one tensor
    return classes.x[0, 0], classes.x[0, 1], torch.zeros(n_pairs)


def pairs_two_items(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return torch.stack([x1, x2], 1), y


def pairs_mutates_classes(classes, n_pairs, generator=None):
    out = siamese.sample_pairs(classes, n_pairs, generator)
    classes.x[0][0, 0, 3, 3] = 0  # writes into the class set
    return out


def pairs_partial(classes, n_pairs, generator=None):
    raise NotImplementedError("negatives not written yet")


@pytest.mark.parametrize("fn", [siamese.sample_pairs, pairs_notebook, pairs_vectorised, pairs_shuffled,
                                pairs_interleaved, pairs_odd_value_error])
def test_pair_sampler_right_answers_pass(fn):
    ch01.sample_pairs(fn)
    assert status("1.3") == "right", message("1.3")


@pytest.mark.parametrize("fn,phrase", [
    (pairs_inverted, "you labelled same-class pairs Y = 1"),
    (pairs_unbalanced, "not balanced"),
    (pairs_self, "one image paired with itself"),
    (pairs_negatives_with_replacement, "hold the same class twice"),
    (pairs_cyclic_classes, "are the same for every seed: they are not drawn at random"),
    (pairs_fixed_examples, "the examples of your pairs are the same for every seed"),
    (pairs_next_example, "the second example is not drawn independently"),
    (pairs_next_class, "the second class is not drawn independently"),
    (pairs_one_class_per_batch, "not once per batch"),
    (pairs_skewed, "do not draw the classes uniformly"),
    (pairs_tiled, "your batch repeats pairs"),
    (pairs_shared_example_index, "share one example index"),
    (pairs_shared_example_index, "the second example is not drawn independently of the first"),
    (pairs_next_example_negatives, "possible (first, second) example indices"),
    (pairs_odd_ceil, "with an odd n_pairs=9 your sampler returned 10 pairs"),
    (pairs_odd_unbalanced, "never an unbalanced batch"),
    (pairs_reseeded, "every training step would see the same batch"),
    (pairs_python_random, "seeded alike gave different pairs"),
    (pairs_uint8_scale, "should be in [0, 1]"),
    (pairs_raw_uint8, "should be float in [0, 1]"),
    (pairs_float64, "the network's weights are float32"),
    (pairs_normalised, "should be in [0, 1]"),
    (pairs_transposed, "not images of the class set"),
    (pairs_long_labels, "integer or bool labels"),
    (pairs_bool_labels, "integer or bool labels"),
    (pairs_no_generator, "seeded alike gave different pairs"),
    (pairs_tensor_indexing, "your code raised TypeError"),
    (pairs_two_items, "returned a tuple of 2"),
    (pairs_mutates_classes, "changed the class set's images in place"),
    (pairs_partial, "counts as an attempt"),
])
def test_pair_sampler_mistakes_are_named(fn, phrase):
    ch01.sample_pairs(fn)
    assert_wrong("1.3", phrase)


def test_shared_example_index_is_not_reported_as_repeated_pairs():
    ch01.sample_pairs(pairs_shared_example_index)
    assert "repeats pairs" not in message("1.3"), message("1.3")


def test_odd_n_pairs_gives_half_of_each_in_the_notebook_and_the_reference_refuses_it():
    cs = ch01._pair_probe_classes()
    x1, x2, y = pairs_notebook(cs, 9, torch.Generator().manual_seed(0))
    assert len(y) == 8 and int((y == 0).sum()) == 4
    with pytest.raises(ValueError):
        siamese.sample_pairs(cs, 9)


def test_pair_sampler_randomness_checks_hold_for_many_valid_streams():
    """The statistical thresholds must not reject a right sampler whatever its random stream."""
    for offset in range(1, 6):
        def shifted(classes, n_pairs, generator=None, offset=offset):
            if generator is not None:
                torch.randint(1000, (offset * 7,), generator=generator)  # another stretch of the stream
            return pairs_vectorised(classes, n_pairs, generator)
        checks.reset()
        ch01.sample_pairs(shifted)
        assert status("1.3") == "right", (offset, message("1.3"))


# ----------------------------------------------------------------------------- 1.4

def _scores(score_pairs, support_x, query_x):
    nq, ns = len(query_x), len(support_x)
    return score_pairs(query_x.repeat_interleave(ns, 0), support_x.repeat(nq, 1)).reshape(nq, ns)


def clf_notebook(score_pairs, support_x, support_y, query_x, n_way):
    nq, ns = len(query_x), len(support_x)
    a = query_x.repeat_interleave(ns, dim=0)
    b = support_x.repeat(nq, *[1] * (support_x.dim() - 1))
    s = score_pairs(a, b).reshape(nq, ns)
    return torch.stack([s[:, support_y == c].max(dim=1).values for c in range(n_way)], dim=1)


def clf_loops(score_pairs, support_x, support_y, query_x, n_way):  # one query at a time
    rows = []
    for q in query_x:
        s = score_pairs(q.expand(len(support_x), -1), support_x)
        rows.append(torch.stack([s[support_y == c].max() for c in range(n_way)]))
    return torch.stack(rows)


def clf_scatter(score_pairs, support_x, support_y, query_x, n_way):
    s = _scores(score_pairs, support_x, query_x)
    init = torch.full((len(query_x), n_way), float("-inf"), dtype=s.dtype, device=s.device)
    return init.scatter_reduce(1, support_y.expand(len(query_x), -1), s, "amax")


def clf_negated(score_pairs, support_x, support_y, query_x, n_way):
    s = -_scores(score_pairs, support_x, query_x)
    return torch.stack([s[:, support_y == c].max(1).values for c in range(n_way)], 1)


def clf_mean(score_pairs, support_x, support_y, query_x, n_way):
    s = _scores(score_pairs, support_x, query_x)
    return torch.stack([s[:, support_y == c].mean(1) for c in range(n_way)], 1)


def clf_min(score_pairs, support_x, support_y, query_x, n_way):
    s = _scores(score_pairs, support_x, query_x)
    return torch.stack([s[:, support_y == c].min(1).values for c in range(n_way)], 1)


def clf_class_major(score_pairs, support_x, support_y, query_x, n_way):
    s = _scores(score_pairs, support_x, query_x)
    return s.reshape(len(query_x), n_way, -1).max(-1).values


def clf_labels(score_pairs, support_x, support_y, query_x, n_way):
    s = _scores(score_pairs, support_x, query_x)
    return support_y[s.argmax(1)]


def clf_misaligned(score_pairs, support_x, support_y, query_x, n_way):
    nq, ns = len(query_x), len(support_x)
    s = score_pairs(query_x.repeat(ns, 1), support_x.repeat_interleave(nq, 0)).reshape(nq, ns)
    return torch.stack([s[:, support_y == c].max(1).values for c in range(n_way)], 1)


def clf_misaligned_loop(score_pairs, support_x, support_y, query_x, n_way):  # wrong reshape order
    nq, ns = len(query_x), len(support_x)
    s = score_pairs(query_x.repeat(ns, 1), support_x.repeat_interleave(nq, 0)).reshape(nq, ns)
    return torch.stack([s[:, support_y == c].max(1).values for c in range(n_way)], 1)


def clf_both_repeat(score_pairs, support_x, support_y, query_x, n_way):  # .repeat on both sides
    nq, ns = len(query_x), len(support_x)
    s = score_pairs(query_x.repeat(ns, 1), support_x.repeat(nq, 1)).reshape(nq, ns)
    return torch.stack([s[:, support_y == c].max(1).values for c in range(n_way)], 1)


def clf_both_interleave(score_pairs, support_x, support_y, query_x, n_way):  # repeat_interleave on both sides
    nq, ns = len(query_x), len(support_x)
    s = score_pairs(query_x.repeat_interleave(ns, 0), support_x.repeat_interleave(nq, 0)).reshape(nq, ns)
    return torch.stack([s[:, support_y == c].max(1).values for c in range(n_way)], 1)


def clf_shot_major(score_pairs, support_x, support_y, query_x, n_way):  # assumes one of each class, then the next
    s = _scores(score_pairs, support_x, query_x)
    return s.reshape(len(query_x), -1, n_way).max(1).values


def clf_broadcast(score_pairs, support_x, support_y, query_x, n_way):
    return score_pairs(query_x, support_x)


def clf_softmax(score_pairs, support_x, support_y, query_x, n_way):
    return clf_notebook(score_pairs, support_x, support_y, query_x, n_way).softmax(1)


def clf_queries_vs_queries(score_pairs, support_x, support_y, query_x, n_way):  # the wrong set
    s = _scores(score_pairs, query_x, query_x)
    return torch.stack([s[:, support_y == c].max(1).values for c in range(n_way)], 1)


def clf_support_vs_support(score_pairs, support_x, support_y, query_x, n_way):  # the wrong set
    s = _scores(score_pairs, support_x, support_x)
    return torch.stack([s[:, support_y == c].max(1).values for c in range(n_way)], 1)


def clf_transposed(score_pairs, support_x, support_y, query_x, n_way):
    s = _scores(score_pairs, query_x, support_x)  # rows = support, columns = queries
    return torch.stack([s[:, support_y == c].max(1).values for c in range(n_way)], 1)


def clf_own_distance(score_pairs, support_x, support_y, query_x, n_way):  # ignores score_pairs
    s = -torch.cdist(query_x, support_x)
    return torch.stack([s[:, support_y == c].max(1).values for c in range(n_way)], 1)


def clf_table(score_pairs, support_x, support_y, query_x, n_way):
    return _scores(score_pairs, support_x, query_x)


def clf_max_over_queries(score_pairs, support_x, support_y, query_x, n_way):
    s = _scores(score_pairs, support_x, query_x)
    return torch.stack([s[:, support_y == c].max(0).values for c in range(n_way)], 1)


def clf_tuple(score_pairs, support_x, support_y, query_x, n_way):
    out = clf_notebook(score_pairs, support_x, support_y, query_x, n_way)
    return out, out.argmax(1)


def clf_mutates(score_pairs, support_x, support_y, query_x, n_way):
    query_x -= query_x.mean(0)  # in place: changes the caller's queries
    return clf_notebook(score_pairs, support_x, support_y, query_x, n_way)


def clf_partial(score_pairs, support_x, support_y, query_x, n_way):
    s = _scores(score_pairs, support_x, query_x)
    raise NotImplementedError("the per-class max is still to do")


@pytest.mark.parametrize("fn", [siamese.classify_by_verification, clf_notebook, clf_loops, clf_scatter])
def test_classify_right_answers_pass(fn):
    ch01.classify_by_verification(fn)
    assert status("1.4") == "right", message("1.4")


@pytest.mark.parametrize("fn,phrase", [
    (clf_negated, "treated the score as a distance"),
    (clf_mean, "averaged the scores"),
    (clf_min, "WORST match"),
    (clf_class_major, "sorted by class (class-major"),
    (clf_shot_major, "sorted by class (shot-major"),
    (clf_both_repeat, "with .repeat on both sides"),
    (clf_both_interleave, "with repeat_interleave on both sides"),
    (clf_labels, "you returned labels"),
    (clf_misaligned, "pairs are misaligned"),
    (clf_misaligned_loop, "pairs are misaligned"),
    (clf_broadcast, "one score per query"),
    (clf_softmax, "applied a softmax"),
    (clf_queries_vs_queries, "against the QUERIES (the wrong set)"),
    (clf_support_vs_support, "support set against ITSELF"),
    (clf_transposed, "table is transposed"),
    (clf_own_distance, "you did not use score_pairs"),
    (clf_table, "(NQ, NS) table of pair scores"),
    (clf_max_over_queries, "over the queries (dim=0)"),
    (clf_tuple, "returned a tuple of 2"),
    (clf_mutates, "changed its input `query_x` in place"),
    (clf_partial, "counts as an attempt"),
])
def test_classify_mistakes_are_named(fn, phrase):
    ch01.classify_by_verification(fn)
    assert_wrong("1.4", phrase)


# ----------------------------------------------------------------------------- protocol

@pytest.mark.parametrize("check", [ch01.contrastive_loss, ch01.euclidean_distance, ch01.sample_pairs,
                                   ch01.classify_by_verification])
def test_stubs_are_not_attempted_and_strict_mode_raises(check, monkeypatch):
    use = check(stub)
    number = list(checks.results())[-1]
    assert status(number) == "not attempted"
    assert use is not stub
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError):
        check(stub)
    with pytest.raises(checks.ExerciseError):
        check({ch01.contrastive_loss: loss_inverted, ch01.euclidean_distance: dist_naive,
               ch01.sample_pairs: pairs_inverted, ch01.classify_by_verification: clf_min}[check])


def test_a_non_function_is_reported():
    ch01.contrastive_loss(3.0)  # (None hits a core quirk: see the report)
    assert_wrong("1.1", "the check needs a function")


def test_exercise_list():
    assert ch01.EXERCISES == ["1.1", "1.2", "1.3", "1.4"]
