"""Chapter 01's checks: the references pass; each listed mistake is diagnosed with its reason;
stubs are 'not attempted'; strict mode raises."""
import pytest
import torch

from course_utils import checks, contrastive, siamese
from course_utils.chapter_checks import ch01
from conftest import message, status, stub  # shared check-test helpers




def relu(t):
    return torch.clamp(t, min=0)


# ----------------------------------------------------------------------------- 1.1

def loss_right(d, y, margin=1.0):
    return (1 - y) * d ** 2 + y * torch.clamp(margin - d, min=0) ** 2


def loss_inverted(d, y, margin=1.0):  # the seed article: y = 1 for the same class
    return y * d ** 2 + (1 - y) * relu(margin - d) ** 2


def loss_margin_on_similar(d, y, margin=1.0):  # also the inverted labels, written the other way round
    return (1 - y) * relu(margin - d) ** 2 + y * d ** 2


def loss_no_square_d(d, y, margin=1.0):
    return (1 - y) * d + y * relu(margin - d) ** 2


def loss_no_square_hinge(d, y, margin=1.0):
    return (1 - y) * d ** 2 + y * relu(margin - d)


def loss_margin_wrong_term(d, y, margin=1.0):
    return (1 - y) * relu(d - margin) ** 2 + y * relu(margin - d) ** 2


def loss_hinge_backwards(d, y, margin=1.0):
    return (1 - y) * d ** 2 + y * relu(d - margin) ** 2


def loss_margin_vs_d2(d, y, margin=1.0):
    return (1 - y) * d ** 2 + y * relu(margin - d ** 2) ** 2


def loss_no_max(d, y, margin=1.0):
    return (1 - y) * d ** 2 + y * (margin - d) ** 2


def loss_half(d, y, margin=1.0):
    return 0.5 * loss_right(d, y, margin)


def loss_mean(d, y, margin=1.0):
    return loss_right(d, y, margin).mean()


def loss_detached(d, y, margin=1.0):
    return torch.tensor([float(v) for v in loss_right(d.detach(), y, margin)])


def loss_fixed_margin(d, y, margin=1.0):
    return loss_right(d, y, 2.0)


def loss_default_margin(d, y, margin=1.0):  # hard-codes m = 1, whatever margin is passed
    return (1 - y) * d ** 2 + y * relu(1.0 - d) ** 2


def loss_hinge_on_squares(d, y, margin=1.0):  # max(0, m² - D²) instead of max(0, m - D)²
    return (1 - y) * d ** 2 + y * relu(margin ** 2 - d ** 2)


def loss_hinge_on_squares_squared(d, y, margin=1.0):
    return (1 - y) * d ** 2 + y * relu(margin ** 2 - d ** 2) ** 2


def loss_unknown_bug(d, y, margin=1.0):  # wrong in no catalogued way
    return loss_right(d, y, margin) + 0.1 * y * d


def test_loss_reference_and_right_answer_pass():
    ch01.contrastive_loss(loss_right)
    assert status("1.1") == "right"
    checks.reset()
    ch01.contrastive_loss(lambda d, y, margin=1.0: contrastive.contrastive_loss(d, y, margin))
    assert status("1.1") == "right"


@pytest.mark.parametrize("fn,phrase", [
    (loss_inverted, "you used y=1 for similar pairs: that pulls different classes together and pushes "
                    "same-class pairs apart — the seed article's mistake"),
    (loss_margin_on_similar, "the seed article's mistake"),
    (loss_no_square_d, "square is missing on the similar-pair term"),
    (loss_no_square_hinge, "square is missing on the margin term"),
    (loss_margin_wrong_term, "margin is on the wrong term"),
    (loss_hinge_backwards, "hinge is backwards"),
    (loss_margin_vs_d2, "compared with D²"),
    (loss_no_max, "max(0, ·) is missing"),
    (loss_half, "factor 1/2"),
    (loss_mean, "mean over pairs"),
    (loss_detached, "does not carry gradients"),
    (loss_fixed_margin, "the margin argument is ignored"),
    (loss_default_margin, "the margin argument is ignored"),
    (loss_hinge_on_squares, "the hinge compares m with D, not m² with D²"),
    (loss_hinge_on_squares_squared, "the hinge compares m with D, not m² with D²"),
])
def test_loss_mistakes_are_named(fn, phrase):
    use = ch01.contrastive_loss(fn)
    assert status("1.1") == "wrong"
    assert phrase in message("1.1")
    assert use is not fn  # the chapter continues with the reference


def test_unknown_loss_bug_shows_the_inputs_of_the_first_wrong_pair():
    ch01.contrastive_loss(loss_unknown_bug)
    assert status("1.1") == "wrong"
    msg = message("1.1")
    d, y, m = ch01._loss_probe_inputs()
    k = next(i for i in range(len(d)) if y[i] == 1 and d[i] != 0)
    assert f"differs at index {k}" in msg
    assert f"d = {float(d[k]):.6g}, y = 1 (different classes) and margin = {m:g}" in msg


def test_loss_mistakes_are_all_different_on_the_probe():
    d, y, m = ch01._loss_probe_inputs()
    outs = list(ch01.loss_mistakes(d, y, m).values()) + [loss_right(d, y, m)]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.allclose(outs[i], outs[j], atol=1e-3), (i, j)


# ----------------------------------------------------------------------------- 1.2

def dist_naive(z1, z2):
    return ((z1 - z2) ** 2).sum(-1).sqrt()


def dist_where(z1, z2):
    s = ((z1 - z2) ** 2).sum(-1)
    return torch.where(s > 0, s.sqrt(), torch.zeros_like(s))


def dist_squared(z1, z2):
    return ((z1 - z2) ** 2).sum(-1)


def dist_l1(z1, z2):
    return (z1 - z2).abs().sum(-1)


def dist_mean(z1, z2):
    return ((z1 - z2) ** 2).mean(-1).add(1e-12).sqrt()


def dist_big_eps(z1, z2):
    return ((z1 - z2) ** 2).sum(-1).add(1e-2).sqrt()


def dist_wrong_dim(z1, z2):
    return ((z1 - z2) ** 2).sum(0).add(1e-12).sqrt()


@pytest.mark.parametrize("fn", [
    contrastive.euclidean_distance,
    lambda z1, z2: (z1 - z2).norm(dim=-1),
    lambda z1, z2: torch.nn.functional.pairwise_distance(z1, z2),
    lambda z1, z2: ((z1 - z2) ** 2).sum(-1).clamp_min(1e-12).sqrt(),
])
def test_safe_distances_pass(fn):
    ch01.euclidean_distance(fn)
    assert status("1.2") == "right"


@pytest.mark.parametrize("fn,phrase", [
    (dist_naive, "NaN where the two embeddings are identical"),
    (dist_where, "NaN where the two embeddings are identical"),
    (dist_squared, "SQUARED distance"),
    (dist_l1, "L1 (Manhattan)"),
    (dist_mean, "averaged the squared differences"),
    (dist_big_eps, "eps is too large"),
    (dist_wrong_dim, "has shape"),
])
def test_distance_mistakes_are_named(fn, phrase):
    ch01.euclidean_distance(fn)
    assert status("1.2") == "wrong"
    assert phrase in message("1.2")


def test_nan_message_explains_the_fix():
    ch01.euclidean_distance(dist_naive)
    assert "0 · inf = NaN" in message("1.2") and "sqrt(s + 1e-12)" in message("1.2")


# ----------------------------------------------------------------------------- 1.3

def pairs_inverted(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return x1, x2, 1 - y


def pairs_unbalanced(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs + 20, generator)
    keep = torch.arange(n_pairs) + 20  # drops 20 similar pairs: 30% / 70%
    return x1[keep], x2[keep], y[keep]


def _pick(classes, c, i):
    return classes.examples(c)[i].float() / 255


def pairs_self(classes, n_pairs, generator=None):  # positive = an image with itself
    c = torch.randint(len(classes), (n_pairs,), generator=generator)
    i = torch.randint(classes.min_examples(), (n_pairs,), generator=generator)
    j = torch.randint(classes.min_examples(), (n_pairs,), generator=generator)
    c2 = (c + 1 + torch.randint(len(classes) - 1, (n_pairs,), generator=generator)) % len(classes)
    half = n_pairs // 2
    x1 = torch.stack([_pick(classes, c[k], i[k]) for k in range(n_pairs)])
    x2 = torch.stack([_pick(classes, c[k], i[k]) if k < half else _pick(classes, c2[k], j[k])
                      for k in range(n_pairs)])
    return x1, x2, torch.cat([torch.zeros(half), torch.ones(half)])


def pairs_negatives_with_replacement(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    half = n_pairs // 2
    c = torch.randint(len(classes), (half,), generator=generator)
    c2 = torch.randint(len(classes), (half,), generator=generator)  # may equal c
    x1[half:] = torch.stack([_pick(classes, a, 0) for a in c])
    x2[half:] = torch.stack([_pick(classes, b, 1) for b in c2])
    return x1, x2, y


def pairs_uint8(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return (x1 * 255).round(), (x2 * 255).round(), y


def pairs_long_labels(classes, n_pairs, generator=None):
    x1, x2, y = siamese.sample_pairs(classes, n_pairs, generator)
    return x1, x2, y.long()


def pairs_no_generator(classes, n_pairs, generator=None):
    return siamese.sample_pairs(classes, n_pairs, None)


def pairs_tensor_indexing(classes, n_pairs, generator=None):  # assumes classes.x is one tensor
    return classes.x[0, 0], classes.x[0, 1], torch.zeros(n_pairs)


def test_pair_sampler_reference_passes():
    ch01.sample_pairs(siamese.sample_pairs)
    assert status("1.3") == "right"


@pytest.mark.parametrize("fn,phrase", [
    (pairs_inverted, "you labelled same-class pairs y = 1"),
    (pairs_unbalanced, "not balanced"),
    (pairs_self, "one image paired with itself"),
    (pairs_negatives_with_replacement, "hold the same class twice"),
    (pairs_uint8, "float in [0, 1]"),
    (pairs_long_labels, "should be a float tensor"),
    (pairs_no_generator, "seeded alike gave different pairs"),
    (pairs_tensor_indexing, "your code raised TypeError"),
])
def test_pair_sampler_mistakes_are_named(fn, phrase):
    ch01.sample_pairs(fn)
    assert status("1.3") == "wrong"
    assert phrase in message("1.3")


# ----------------------------------------------------------------------------- 1.4

def _scores(score_pairs, support_x, query_x):
    nq, ns = len(query_x), len(support_x)
    return score_pairs(query_x.repeat_interleave(ns, 0), support_x.repeat(nq, 1)).reshape(nq, ns)


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


def clf_broadcast(score_pairs, support_x, support_y, query_x, n_way):
    return score_pairs(query_x, support_x)


def test_classify_reference_passes():
    ch01.classify_by_verification(siamese.classify_by_verification)
    assert status("1.4") == "right"


@pytest.mark.parametrize("fn,phrase", [
    (clf_negated, "treated the score as a distance"),
    (clf_mean, "averaged the scores"),
    (clf_min, "WORST match"),
    (clf_class_major, "sorted by class"),
    (clf_labels, "you returned labels"),
    (clf_misaligned, "pairs are misaligned"),
    (clf_broadcast, "SAME shape"),
])
def test_classify_mistakes_are_named(fn, phrase):
    ch01.classify_by_verification(fn)
    assert status("1.4") == "wrong"
    assert phrase in message("1.4")


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


def test_exercise_list():
    assert ch01.EXERCISES == ["1.1", "1.2", "1.3", "1.4"]
