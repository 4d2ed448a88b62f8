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


def att_einsum(f, g, scale=1.0):
    cos = torch.einsum("qd,kd->qk", F.normalize(f, dim=1), F.normalize(g, dim=1))
    return (scale * cos).softmax(dim=-1)


def att_loops(f, g, scale=1.0):
    rows = []
    for q in range(f.shape[0]):
        u = f[q] / f[q].norm().clamp_min(1e-8)
        sims = torch.stack([u @ (g[i] / g[i].norm().clamp_min(1e-8)) for i in range(g.shape[0])])
        e = torch.exp(scale * sims - (scale * sims).max())
        rows.append(e / e.sum())
    return torch.stack(rows)


def att_cdist(f, g, scale=1.0):      # for unit vectors, ||u - v||^2 = 2 - 2 cos; not for a zero vector
    u, v = F.normalize(f, dim=1), F.normalize(g, dim=1)
    return torch.softmax(scale * (1 - torch.cdist(u, v) ** 2 / 2), dim=1)


def att_manual_softmax(f, g, scale=1.0):
    e = torch.exp(scale * F.normalize(f, dim=1) @ F.normalize(g, dim=1).T)
    return e / e.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("fn", [att_right, att_cosine_builtin, att_eps_added, att_normalize, att_einsum,
                                att_loops, att_manual_softmax])
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


def att_support_only(f, g, scale=1.0):
    return torch.softmax(scale * f @ F.normalize(g, dim=1).T, dim=1)


def att_squared_norm(f, g, scale=1.0):
    f = f / (f ** 2).sum(dim=1, keepdim=True).clamp_min(1e-8)
    g = g / (g ** 2).sum(dim=1, keepdim=True).clamp_min(1e-8)
    return torch.softmax(scale * f @ g.T, dim=1)


def att_norm_dim0(f, g, scale=1.0):
    return torch.softmax(scale * F.normalize(f, dim=0) @ F.normalize(g, dim=0).T, dim=1)


def att_swapped(f, g, scale=1.0):           # the support set attends over the queries
    return att_right(g, f, scale)


def att_queries_only(f, g, scale=1.0):
    return att_right(f, f, scale)


def att_log_softmax(f, g, scale=1.0):
    return torch.log_softmax(scale * F.normalize(f, dim=1) @ F.normalize(g, dim=1).T, dim=1)


def att_negative(f, g, scale=1.0):
    return torch.softmax(-scale * F.normalize(f, dim=1) @ F.normalize(g, dim=1).T, dim=1)


def att_dot_scaled_wrong_axis(f, g, scale=1.0):
    return torch.softmax(scale * f @ g.T, dim=0)


def att_tuple(f, g, scale=1.0):
    return att_right(f, g, scale), F.normalize(f, dim=1) @ F.normalize(g, dim=1).T


def att_numpy(f, g, scale=1.0):
    return att_right(f, g, scale).detach().numpy()


def att_float32(f, g, scale=1.0):
    return att_right(f.float(), g.float(), scale)


def att_double(f, g, scale=1.0):
    return att_right(f.double(), g.double(), scale)


def att_in_place(f, g, scale=1.0):
    f /= f.norm(dim=1, keepdim=True).clamp_min(1e-8)
    g /= g.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return torch.softmax(scale * f @ g.T, dim=1)


def att_partial(f, g, scale=1.0):
    f = F.normalize(f, dim=1)
    raise NotImplementedError("TODO: the softmax")


def att_cpu_mask(f, g, scale=1.0):          # right on a CPU, crashes on a GPU
    return att_right(f, g, scale) * torch.ones(f.shape[0], g.shape[0], dtype=f.dtype)


def att_scale_squared(f, g, scale=1.0):
    return att_right(f, g, scale * scale)


def att_hardcoded_sizes(f, g, scale=1.0):
    return att_right(f, g, scale).reshape(4, 6)


@pytest.mark.parametrize("fn,phrase", [
    (att_support_only, "only the support embeddings are normalised"),
    (att_squared_norm, "squared norm"),
    (att_norm_dim0, "along dim=0"),
    (att_swapped, "query and support are swapped"),
    (att_queries_only, "queries with themselves"),
    (att_log_softmax, "log-softmax"),
    (att_negative, "least* similar"),
    (att_dot_scaled_wrong_axis, "dot product with the softmax over the wrong axis"),
    (att_tuple, "returned a tuple of 2"),
    (att_numpy, ".numpy()"),
    (att_float32, "keep the inputs' dtype"),
    (att_double, "float64 for torch.float32 inputs"),
    (att_in_place, "changed its input `f` in place"),
    (att_partial, "not the exercise's stub"),
    (att_cpu_mask, "makes a tensor on the CPU"),
    (att_scale_squared, "scale=5"),
    (att_hardcoded_sizes, "your code raised RuntimeError"),
    (att_cdist, "all-zero embedding (support row 3)"),
])
def test_attention_more_mistakes_are_named(fn, phrase):
    out = ch02.cosine_attention(fn)
    assert out is not fn and status("2.1") == "wrong"
    assert phrase in message("2.1"), message("2.1")


def att_numpy_needs_grad(f, g, scale=1.0):     # no .detach(): PyTorch refuses it on inputs that need grad
    return att_right(f, g, scale).numpy()


def test_numpy_return_is_named_not_pytorchs_requires_grad_error():
    assert ch02.cosine_attention(att_numpy_needs_grad) is not att_numpy_needs_grad and status("2.1") == "wrong"
    msg = message("2.1")
    assert "returned a NumPy array of shape (4, 6)" in msg and "without .numpy()" in msg, msg
    assert "requires grad" not in msg and "detach().numpy()" not in msg, msg


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


def proto_index_add(z, n_way, k_shot):
    labels = torch.arange(n_way, device=z.device).repeat_interleave(k_shot)
    return torch.zeros(n_way, z.shape[1], dtype=z.dtype, device=z.device).index_add(0, labels, z) / k_shot


def proto_scatter_mean(z, n_way, k_shot):
    labels = torch.arange(n_way, device=z.device).repeat_interleave(k_shot)
    index = labels[:, None].expand_as(z)
    return torch.zeros(n_way, z.shape[1], dtype=z.dtype, device=z.device).scatter_reduce(
        0, index, z, reduce="mean", include_self=False)


def proto_one_hot(z, n_way, k_shot):
    labels = torch.arange(n_way, device=z.device).repeat_interleave(k_shot)
    onehot = F.one_hot(labels, n_way).to(z.dtype)              # (N*K, N)
    return onehot.T @ z / onehot.sum(0)[:, None]


def proto_einsum(z, n_way, k_shot):
    return torch.einsum("nkd->nd", z.reshape(n_way, k_shot, -1)) / k_shot


def proto_ignores_k(z, n_way, k_shot):          # k_shot follows from the shape
    return z.view(n_way, -1, z.shape[1]).mean(1)


def proto_ignores_n(z, n_way, k_shot):          # so does n_way
    return z.reshape(-1, k_shot, z.shape[1]).mean(1)


def proto_split(z, n_way, k_shot):
    return torch.stack([chunk.mean(0) for chunk in z.split(k_shot)])


def proto_unflatten(z, n_way, k_shot):
    return z.unflatten(0, (n_way, k_shot)).mean(1)


@pytest.mark.parametrize("fn", [proto_right, proto_loop, proto_index_add, proto_scatter_mean, proto_one_hot,
                                proto_einsum, proto_ignores_k, proto_ignores_n, proto_split, proto_unflatten])
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


def proto_divided_by_n(z, n_way, k_shot):
    return z.reshape(n_way, k_shot, -1).sum(1) / n_way


def proto_divided_by_nk(z, n_way, k_shot):
    return z.reshape(n_way, k_shot, -1).sum(1) / z.shape[0]


def proto_reshape_swapped(z, n_way, k_shot):
    return z.reshape(k_shot, n_way, -1).mean(1)


def proto_strided(z, n_way, k_shot):        # every n_way-th row: shot-major
    return torch.stack([z[c::n_way].mean(0) for c in range(n_way)])


def proto_hardcoded_k(z, n_way, k_shot):
    return z.reshape(n_way, 4, -1).mean(1)


def proto_float(z, n_way, k_shot):
    return z.float().reshape(n_way, k_shot, -1).mean(1)


def proto_list(z, n_way, k_shot):
    return [z[c * k_shot:(c + 1) * k_shot].mean(0) for c in range(n_way)]


def proto_in_place(z, n_way, k_shot):
    z /= k_shot
    return z.reshape(n_way, k_shot, -1).sum(1)


def proto_detached(z, n_way, k_shot):
    return torch.tensor(z.reshape(n_way, k_shot, -1).mean(1).tolist(), dtype=z.dtype)


def proto_cpu_labels(z, n_way, k_shot):     # right on a CPU, crashes on a GPU
    labels = torch.arange(n_way).repeat_interleave(k_shot)
    return torch.zeros(n_way, z.shape[1], dtype=z.dtype).index_add(0, labels, z) / k_shot


def proto_partial(z, n_way, k_shot):
    z = z.reshape(n_way, k_shot, -1)
    raise NotImplementedError("average over the shots")


@pytest.mark.parametrize("fn,phrase", [
    (proto_divided_by_n, "divided by n_way"),
    (proto_divided_by_nk, "N*K"),
    (proto_reshape_swapped, "n_way and k_shot swapped"),
    (proto_strided, "shot-major"),
    (proto_hardcoded_k, "your code raised RuntimeError"),
    (proto_float, "keep the inputs' dtype"),
    (proto_list, "returned a list of 3"),
    (proto_in_place, "changed its input `z` in place"),
    (proto_detached, "does not carry gradients"),
    (proto_cpu_labels, "makes a tensor on the CPU"),
    (proto_partial, "not the exercise's stub"),
])
def test_more_prototype_mistakes_are_named(fn, phrase):
    assert ch02.prototypes(fn) is not fn and status("2.2") == "wrong"
    assert phrase in message("2.2"), message("2.2")


def proto_global_repeated(z, n_way, k_shot):     # the global mean, one copy per class: shape (N, D)
    return z.mean(0, keepdim=True).expand(n_way, -1)


def proto_global_repeat(z, n_way, k_shot):
    return z.mean(0).repeat(n_way, 1)


def proto_view_n_way(z, n_way, k_shot):          # view(n_way, -1) ignores k_shot and mixes in the features
    return z.view(n_way, -1).mean(1, keepdim=True).expand(n_way, z.shape[1])


def proto_view_n_way_keepdim(z, n_way, k_shot):
    return z.view(n_way, -1).mean(1, keepdim=True)


def proto_view_n_way_flat(z, n_way, k_shot):
    return z.reshape(n_way, -1).mean(1)


def proto_numpy(z, n_way, k_shot):               # .numpy() on a tensor that (later) requires grad
    return z.reshape(n_way, k_shot, -1).mean(1).numpy()


@pytest.mark.parametrize("fn,phrase", [
    (proto_global_repeated, "every row is the mean of the whole support set"),
    (proto_global_repeat, "every row is the mean of the whole support set"),
    (proto_view_n_way, "view(n_way, -1)"),
    (proto_view_n_way_keepdim, "view(n_way, -1)"),
    (proto_view_n_way_flat, "averages the features too"),
    (proto_numpy, "returned a NumPy array of shape (3, 2)"),
    (proto_shot_major, "rows n*K .. n*K+K-1 are class n"),
])
def test_unusual_prototype_mistakes_get_their_own_diagnosis(fn, phrase):
    assert ch02.prototypes(fn) is not fn and status("2.2") == "wrong"
    assert phrase in message("2.2"), message("2.2")
    assert "differs at index" not in message("2.2"), message("2.2")


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


def loss_expansion(z_support, z_query, query_y, n_way, k_shot):   # ||z||^2 - 2 z.c + ||c||^2
    c = z_support.reshape(n_way, k_shot, -1).mean(1)
    d2 = (z_query ** 2).sum(1, keepdim=True) - 2 * z_query @ c.T + (c ** 2).sum(1)
    return F.cross_entropy(-d2, query_y), -d2


def loss_log_softmax_nll(z_support, z_query, query_y, n_way, k_shot):
    c = protonet.prototypes(z_support, n_way, k_shot)
    logits = -torch.einsum("qnd->qn", (z_query[:, None] - c[None]) ** 2)
    return F.nll_loss(F.log_softmax(logits, dim=1), query_y), logits


def loss_gather(z_support, z_query, query_y, n_way, k_shot):
    c = z_support.reshape(n_way, k_shot, -1).mean(1)
    logits = -((z_query[:, None] - c[None]) ** 2).sum(-1)
    logp = logits.log_softmax(1)
    return -logp.gather(1, query_y[:, None]).mean(), logits


@pytest.mark.parametrize("fn", [loss_right, loss_cdist, loss_expansion, loss_log_softmax_nll, loss_gather])
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


def loss_ignores_labels(z_support, z_query, query_y, n_way, k_shot):
    _, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
    y = torch.arange(n_way, device=z_query.device).repeat_interleave(z_query.shape[0] // n_way)
    return F.cross_entropy(logits, y), logits


def loss_swapped_sets(z_support, z_query, query_y, n_way, k_shot):
    return loss_right(z_query, z_support, query_y, n_way, z_query.shape[0] // n_way)


def loss_prototypes_from_queries(z_support, z_query, query_y, n_way, k_shot):
    c = z_query.reshape(n_way, -1, z_query.shape[1]).mean(1)
    logits = -torch.cdist(z_query, c) ** 2
    return F.cross_entropy(logits, query_y), logits


def loss_mse_mean(z_support, z_query, query_y, n_way, k_shot):
    c = z_support.reshape(n_way, k_shot, -1).mean(1)
    d = F.mse_loss(z_query[:, None].expand(-1, n_way, -1), c[None].expand(z_query.shape[0], -1, -1),
                   reduction="none").mean(-1)
    return F.cross_entropy(-d, query_y), -d


def loss_cosine(z_support, z_query, query_y, n_way, k_shot):
    c = z_support.reshape(n_way, k_shot, -1).mean(1)
    logits = F.normalize(z_query, dim=1) @ F.normalize(c, dim=1).T
    return F.cross_entropy(logits, query_y), logits


def loss_dot(z_support, z_query, query_y, n_way, k_shot):
    c = z_support.reshape(n_way, k_shot, -1).mean(1)
    return F.cross_entropy(z_query @ c.T, query_y), z_query @ c.T


def loss_sum_prototypes(z_support, z_query, query_y, n_way, k_shot):
    c = z_support.reshape(n_way, k_shot, -1).sum(1)
    logits = -torch.cdist(z_query, c) ** 2
    return F.cross_entropy(logits, query_y), logits


def loss_per_query(z_support, z_query, query_y, n_way, k_shot):
    _, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
    return F.cross_entropy(logits, query_y, reduction="none"), logits


def loss_negated(z_support, z_query, query_y, n_way, k_shot):
    loss, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
    return -loss, logits


def loss_list(z_support, z_query, query_y, n_way, k_shot):
    return list(loss_right(z_support, z_query, query_y, n_way, k_shot))


def loss_item(z_support, z_query, query_y, n_way, k_shot):
    loss, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
    return loss.item(), logits


def loss_in_place(z_support, z_query, query_y, n_way, k_shot):
    c = z_support.reshape(n_way, k_shot, -1).mean(1)
    z_query -= 0.0 * z_query + c[query_y]          # "centre" the queries in place
    logits = -(z_query[:, None] ** 2).sum(-1) * 0 - ((z_query[:, None] + c[query_y][:, None] - c[None]) ** 2).sum(-1)
    return F.cross_entropy(logits, query_y), logits


def loss_cpu_weight(z_support, z_query, query_y, n_way, k_shot):     # right on a CPU only
    loss, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
    return F.cross_entropy(logits, query_y, weight=torch.ones(n_way, dtype=logits.dtype)), logits


def loss_q_as_k(z_support, z_query, query_y, n_way, k_shot):    # labels rebuilt with k_shot
    _, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
    return F.cross_entropy(logits, torch.arange(n_way).repeat_interleave(k_shot)), logits


def loss_partial(z_support, z_query, query_y, n_way, k_shot):
    c = protonet.prototypes(z_support, n_way, k_shot)
    raise NotImplementedError("logits: not yet")


def loss_float(z_support, z_query, query_y, n_way, k_shot):
    return loss_right(z_support.float(), z_query.float(), query_y, n_way, k_shot)


@pytest.mark.parametrize("fn,phrase", [
    (loss_ignores_labels, "ignores query_y"),
    (loss_swapped_sets, "support and query are swapped"),
    (loss_prototypes_from_queries, "built from the *query* set"),
    (loss_mse_mean, "averaged over the D embedding dimensions"),
    (loss_cosine, "cosine similarities"),
    (loss_dot, "dot products"),
    (loss_sum_prototypes, "sums of the support embeddings"),
    (loss_per_query, "per-query losses"),
    (loss_negated, "wrong sign"),
    (loss_list, "return a tuple (loss, logits)"),
    (loss_item, "Python float"),
    (loss_in_place, "changed its input `z_query` in place"),
    (loss_cpu_weight, "makes a tensor on the CPU"),
    (loss_q_as_k, "your code raised"),
    (loss_partial, "not the exercise's stub"),
    (loss_float, "keep the inputs' dtype"),
])
def test_more_loss_mistakes_are_named(fn, phrase):
    assert ch02.prototypical_loss(fn) is not fn and status("2.3") == "wrong"
    assert phrase in message("2.3"), message("2.3")


def loss_numpy_logits(z_support, z_query, query_y, n_way, k_shot):
    loss, logits = loss_right(z_support, z_query, query_y, n_way, k_shot)
    return loss, logits.numpy()


def test_loss_with_numpy_logits_is_named():
    assert ch02.prototypical_loss(loss_numpy_logits) is not loss_numpy_logits and status("2.3") == "wrong"
    msg = message("2.3")
    assert "the logits should be a torch.Tensor" in msg and "NumPy array of shape (6, 3)" in msg, msg
    assert "requires grad" not in msg, msg


def lin_numpy(c):
    return (2 * c).numpy(), -(c * c).sum(1)


def test_linear_with_numpy_weights_is_named():
    assert ch02.linear_classifier(lin_numpy) is not lin_numpy and status("2.4") == "wrong"
    assert "W should be a torch.Tensor" in message("2.4") and "NumPy array" in message("2.4"), message("2.4")


def test_loss_probe_uses_queries_that_are_not_class_major():
    # a loss that assumes class-major queries passes a class-major episode but not a shuffled one
    zs, zq = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    y = torch.arange(3).repeat_interleave(2)
    assert torch.allclose(loss_ignores_labels(zs, zq, y, 3, 2)[0], loss_right(zs, zq, y, 3, 2)[0])
    ch02.prototypical_loss(loss_ignores_labels)
    assert status("2.3") == "wrong" and "shuffled order" in message("2.3"), message("2.3")


# --- 2.4 linear classifier --------------------------------------------------------

def lin_right(c):
    return 2 * c, -(c * c).sum(1)


def lin_no_two(c):
    return c, -(c * c).sum(1)


def lin_bias_sign(c):
    return 2 * c, (c * c).sum(1)


def lin_bias_norm(c):
    return 2 * c, -c.norm(dim=1)


def lin_einsum(c):
    return c + c, -torch.einsum("nd,nd->n", c, c)


def lin_norm_squared(c):
    return 2 * c, -c.norm(dim=1) ** 2


def lin_list(c):
    return [2 * c, -(c ** 2).sum(-1)]


@pytest.mark.parametrize("fn", [lin_right, lin_einsum, lin_norm_squared, lin_list])
def test_linear_right(fn):
    assert ch02.linear_classifier(fn) is fn and status("2.4") == "right"


@pytest.mark.parametrize("fn,phrase", [
    (lin_no_two, "W = c"),
    (lin_bias_sign, "b = +||c_n||^2"),
    (lin_bias_norm, "not squared"),
    (lin_bias_sign, "b is wrong"),
])
def test_linear_mistakes_are_named(fn, phrase):
    assert ch02.linear_classifier(fn) is not fn and status("2.4") == "wrong"
    assert phrase in message("2.4"), message("2.4")


def lin_w_negative(c):
    return -2 * c, -(c * c).sum(1)


def lin_w_transposed(c):
    return 2 * c.T, -(c * c).sum(1)


def lin_b_neepdim(c):
    return 2 * c, -(c * c).sum(1, keepdim=True)


def lin_b_over_classes(c):
    return 2 * c, -(c * c).sum(0)


def lin_b_scalar(c):
    return 2 * c, -(c * c).sum()


def lin_b_doubled(c):
    return 2 * c, -2 * (c * c).sum(1)


def lin_half(c):
    return c / 2, -(c * c).sum(1)


def lin_triple(c):
    return 2 * c, -(c * c).sum(1), c


def lin_float(c):
    return 2 * c.float(), -(c.float() ** 2).sum(1)


def lin_in_place(c):
    b = -(c * c).sum(1)
    return c.mul_(2), b


def lin_detached(c):
    return torch.tensor((2 * c).tolist(), dtype=c.dtype), -(c * c).sum(1)


def lin_partial(c):
    W = 2 * c
    raise NotImplementedError("b: to do")


@pytest.mark.parametrize("fn,phrase", [
    (lin_w_negative, "W = -2 c"),
    (lin_w_transposed, "transposed"),
    (lin_b_neepdim, "keepdim"),
    (lin_b_over_classes, "summed over the classes"),
    (lin_b_scalar, "b is one number"),
    (lin_b_doubled, "only the cross term gets the factor 2"),
    (lin_half, "W = c / 2"),
    (lin_triple, "returned a tuple of 3"),
    (lin_float, "keep the inputs' dtype"),
    (lin_in_place, "changed its input `c` in place"),
    (lin_detached, "does not carry gradients"),
    (lin_partial, "not the exercise's stub"),
    (lin_no_two, "factor 2 is missing"),
])
def test_more_linear_mistakes_are_named(fn, phrase):
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
