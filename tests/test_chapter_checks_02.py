"""Chapter 02's checks: the reference passes; each classic mistake is named; stubs are 'not attempted'."""
import pytest
import torch
import torch.nn.functional as F

from course_utils import checks, protonet
from course_utils.chapter_checks import ch02
from conftest import message, status, stub  # shared check-test helpers






# --- 2.1 cosine attention ------------------------------------------------------

def att_right(f, g, scale=1.0):
    f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-8)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return torch.softmax(scale * f @ g.T, dim=1)


def att_eps_added(f, g, scale=1.0):
    f = f / (f.norm(dim=1, keepdim=True) + 1e-8)
    g = g / (g.norm(dim=1, keepdim=True) + 1e-8)
    return torch.softmax(scale * f @ g.T, dim=1)


def att_normalize(f, g, scale=1.0):
    return torch.softmax(scale * F.normalize(f, dim=1) @ F.normalize(g, dim=1).T, dim=1)


def att_no_eps(f, g, scale=1.0):
    f = f / f.norm(dim=1, keepdim=True)
    g = g / g.norm(dim=1, keepdim=True)
    return torch.softmax(scale * f @ g.T, dim=1)


def att_scale_divided(f, g, scale=1.0):
    return torch.softmax(F.normalize(f, dim=1) @ F.normalize(g, dim=1).T / scale, dim=1)


def att_wrong_axis(f, g, scale=1.0):
    return torch.softmax(scale * F.normalize(f, dim=1) @ F.normalize(g, dim=1).T, dim=0)


def att_dot(f, g, scale=1.0):
    return torch.softmax(scale * f @ g.T, dim=1)


def att_no_softmax(f, g, scale=1.0):
    return scale * F.normalize(f, dim=1) @ F.normalize(g, dim=1).T


def att_transposed(f, g, scale=1.0):
    return att_right(f, g, scale).T


def att_scale_after(f, g, scale=1.0):
    return scale * att_right(f, g)


def att_scale_ignored(f, g, scale=1.0):
    return att_right(f, g)


def att_query_only(f, g, scale=1.0):
    return torch.softmax(scale * F.normalize(f, dim=1) @ g.T, dim=1)


def att_detached(f, g, scale=1.0):
    return att_right(f, g, scale).detach()


def att_cosine_builtin(f, g, scale=1.0):
    return torch.softmax(scale * F.cosine_similarity(f[:, None], g[None], dim=-1), dim=-1)


@pytest.mark.parametrize("fn", [att_right, att_cosine_builtin, att_eps_added, att_normalize])
def test_attention_right(fn):
    assert ch02.cosine_attention(fn) is fn
    assert status("2.1") == "right"


@pytest.mark.parametrize("fn,phrase", [
    (att_wrong_axis, "over the queries (dim=0)"),
    (att_dot, "dot product"),
    (att_no_softmax, "apply the softmax over the support set"),
    (att_transposed, "transposed"),
    (att_scale_after, "after the softmax"),
    (att_scale_ignored, "scale was ignored"),
    (att_query_only, "only the queries are normalised"),
    (att_detached, "does not carry gradients"),
    (att_no_eps, "all-zero embedding"),
    (att_scale_divided, "divided by scale"),
])
def test_attention_mistakes_are_named(fn, phrase):
    out = ch02.cosine_attention(fn)
    assert out is not fn and status("2.1") == "wrong"
    assert phrase in message("2.1"), message("2.1")


def test_attention_rows_not_summing_to_one_is_explained():
    def half(f, g, scale=1.0):
        return 0.5 * att_right(f, g, scale)
    ch02.cosine_attention(half)
    assert status("2.1") == "wrong" and "do not sum to 1" in message("2.1")


def test_zero_embedding_probe_names_the_missing_epsilon_for_queries_and_support():
    def zero_support_only(f, g, scale=1.0):     # guards the queries but not the support set
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-8)
        return torch.softmax(scale * f @ (g / g.norm(dim=1, keepdim=True)).T, dim=1)
    ch02.cosine_attention(att_no_eps)
    assert status("2.1") == "wrong" and "query row" in message("2.1"), message("2.1")
    assert "clamp" in message("2.1"), message("2.1")
    ch02.cosine_attention(zero_support_only)
    assert status("2.1") == "wrong" and "support row" in message("2.1"), message("2.1")


# --- 2.2 prototypes -------------------------------------------------------------

def proto_right(z, n_way, k_shot):
    return z.reshape(n_way, k_shot, -1).mean(dim=1)


def proto_loop(z, n_way, k_shot):
    return torch.stack([z[c * k_shot:(c + 1) * k_shot].mean(0) for c in range(n_way)])


def proto_shot_major(z, n_way, k_shot):
    return z.reshape(k_shot, n_way, -1).mean(dim=0)


def proto_over_classes(z, n_way, k_shot):
    return z.reshape(n_way, k_shot, -1).mean(dim=0)


def proto_over_features(z, n_way, k_shot):
    return z.reshape(n_way, k_shot, -1).mean(dim=2)


def proto_sum(z, n_way, k_shot):
    return z.reshape(n_way, k_shot, -1).sum(dim=1)


def proto_global(z, n_way, k_shot):
    return z.mean(0)


def proto_first(z, n_way, k_shot):
    return z[::k_shot]


@pytest.mark.parametrize("fn", [proto_right, proto_loop])
def test_prototypes_right(fn):
    assert ch02.prototypes(fn) is fn and status("2.2") == "right"


@pytest.mark.parametrize("fn,phrase", [
    (proto_shot_major, "shot-major"),
    (proto_over_classes, "averages over the classes"),
    (proto_over_features, "averages over the embedding dimension"),
    (proto_sum, "sum"),
    (proto_global, "whole support set"),
    (proto_first, "first example of each class"),
])
def test_prototype_mistakes_are_named(fn, phrase):
    assert ch02.prototypes(fn) is not fn and status("2.2") == "wrong"
    assert phrase in message("2.2"), message("2.2")


# --- 2.3 prototypical loss ------------------------------------------------------

def loss_right(z_support, z_query, query_y, n_way, k_shot):
    c = z_support.reshape(n_way, k_shot, -1).mean(1)
    logits = -((z_query[:, None] - c[None]) ** 2).sum(-1)
    return F.cross_entropy(logits, query_y), logits


def loss_cdist(z_support, z_query, query_y, n_way, k_shot):
    c = protonet.prototypes(z_support, n_way, k_shot)
    logits = -torch.cdist(z_query, c) ** 2
    return F.cross_entropy(logits, query_y), logits


def loss_positive(z_support, z_query, query_y, n_way, k_shot):
    c = z_support.reshape(n_way, k_shot, -1).mean(1)
    logits = ((z_query[:, None] - c[None]) ** 2).sum(-1)
    return F.cross_entropy(logits, query_y), logits


def loss_euclid(z_support, z_query, query_y, n_way, k_shot):
    c = z_support.reshape(n_way, k_shot, -1).mean(1)
    logits = -torch.cdist(z_query, c)
    return F.cross_entropy(logits, query_y), logits


def loss_on_support(z_support, z_query, query_y, n_way, k_shot):
    c = z_support.reshape(n_way, k_shot, -1).mean(1)
    logits = -((z_support[:, None] - c[None]) ** 2).sum(-1)
    return F.cross_entropy(logits, query_y), logits


def loss_on_support_logits_right(z_support, z_query, query_y, n_way, k_shot):
    _, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
    _, support_logits = loss_right(z_support, z_support, query_y, n_way, k_shot)
    return F.cross_entropy(support_logits, query_y), logits


def loss_nll(z_support, z_query, query_y, n_way, k_shot):
    _, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
    return F.nll_loss(logits, query_y), logits


def loss_sum(z_support, z_query, query_y, n_way, k_shot):
    _, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
    return F.cross_entropy(logits, query_y, reduction="sum"), logits


def loss_detached_prototypes(z_support, z_query, query_y, n_way, k_shot):
    return loss_right(z_support.detach(), z_query, query_y, n_way, k_shot)


def loss_swapped(z_support, z_query, query_y, n_way, k_shot):
    loss, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
    return logits, loss


def loss_only(z_support, z_query, query_y, n_way, k_shot):
    return loss_right(z_support, z_query, query_y, n_way, k_shot)[0]


@pytest.mark.parametrize("fn", [loss_right, loss_cdist])
def test_loss_right(fn):
    assert ch02.prototypical_loss(fn) is fn and status("2.3") == "right"


@pytest.mark.parametrize("fn,phrase", [
    (loss_positive, "+squared distances"),
    (loss_euclid, "*squared* distance"),
    (loss_on_support, "query set"),
    (loss_on_support_logits_right, "loss is computed on the support set"),
    (loss_nll, "nll_loss"),
    (loss_sum, "summed"),
    (loss_detached_prototypes, "prototypes are detached"),
    (loss_only, "(loss, logits)"),
    (loss_swapped, "you returned (logits, loss); return (loss, logits)"),
    (loss_euclid, "section 5 of this chapter"),
])
def test_loss_mistakes_are_named(fn, phrase):
    assert ch02.prototypical_loss(fn) is not fn and status("2.3") == "wrong"
    assert phrase in message("2.3"), message("2.3")


# --- 2.4 linear classifier --------------------------------------------------------

def lin_right(c):
    return 2 * c, -(c * c).sum(1)


def lin_no_two(c):
    return c, -(c * c).sum(1)


def lin_bias_sign(c):
    return 2 * c, (c * c).sum(1)


def lin_bias_norm(c):
    return 2 * c, -c.norm(dim=1)


def test_linear_right():
    assert ch02.linear_classifier(lin_right) is lin_right and status("2.4") == "right"


@pytest.mark.parametrize("fn,phrase", [
    (lin_no_two, "W = c"),
    (lin_bias_sign, "b = +||c_k||^2"),
    (lin_bias_norm, "not squared"),
    (lin_bias_sign, "b is wrong"),
])
def test_linear_mistakes_are_named(fn, phrase):
    assert ch02.linear_classifier(fn) is not fn and status("2.4") == "wrong"
    assert phrase in message("2.4"), message("2.4")


def test_messages_use_plural_verbs_for_plural_subjects():
    def proto_off(z, n_way, k_shot):
        return proto_right(z, n_way, k_shot) + 0.1

    def loss_off(z_support, z_query, query_y, n_way, k_shot):
        loss, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
        return loss, logits + 0.1 * torch.arange(logits.shape[1], dtype=logits.dtype)
    ch02.prototypes(proto_off)
    ch02.prototypical_loss(loss_off)
    for number in ("2.2", "2.3"):
        assert status(number) == "wrong" and "differs" in message(number), message(number)
        assert "prototypes c differs" not in message(number) and "logits differs" not in message(number)


# --- protocol ---------------------------------------------------------------------

@pytest.mark.parametrize("check,number", [(ch02.cosine_attention, "2.1"), (ch02.prototypes, "2.2"),
                                          (ch02.prototypical_loss, "2.3"), (ch02.linear_classifier, "2.4")])
def test_stub_is_not_attempted_and_strict_mode_raises(check, number, monkeypatch):
    ref = check(stub)
    assert ref is not stub and status(number) == "not attempted"
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError):
        check(stub)


def test_strict_mode_raises_on_wrong(monkeypatch):
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError, match="dot product"):
        ch02.cosine_attention(att_dot)


def test_reference_functions_pass_their_own_checks():
    assert ch02.cosine_attention(ch02._ref_attention) is ch02._ref_attention
    assert ch02.prototypes(ch02._ref_prototypes) is ch02._ref_prototypes
    assert ch02.prototypical_loss(ch02._ref_loss) is ch02._ref_loss
    assert ch02.linear_classifier(ch02._ref_linear) is ch02._ref_linear
    assert all(r.status == "right" for r in checks.results().values())
