"""Checks for chapter 02 (Matching and Prototypical networks).

Exercises:
    2.1 ``cosine_attention(f_query, g_support, scale=1.0) -> a (NQ, NK)``
    2.2 ``prototypes(z_support, n_way, k_shot) -> c (N, D)``
    2.3 ``prototypical_loss(z_support, z_query, query_y, n_way, k_shot) -> (loss, logits)``
    2.4 ``linear_classifier(c) -> (W, b)``

Each probe runs the student's function on small fixed inputs and names the classic mistakes:
softmax over the wrong axis, dot product instead of cosine, no epsilon guard (NaN for an all-zero
embedding), scale divided instead of multiplied, prototypes averaged over the wrong dimension, Euclidean instead of squared Euclidean distance, distances as logits with the wrong
sign, the loss computed on the support set instead of the query set, (logits, loss) returned in
the wrong order.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import matching, protonet
from ..checks import (Mistake, _close, expect, expect_close, expect_finite, expect_grad, expect_shape,
                      expect_type, run_check)

__all__ = ["cosine_attention", "prototypes", "prototypical_loss", "linear_classifier", "EXERCISES"]

EXERCISES = ["2.1", "2.2", "2.3", "2.4"]


def _named(actual: Tensor, what: str, mistakes: Mapping[str, Tensor], atol: float = 1e-5,
           hint: str = "", verb: str = "is") -> None:
    """Raise Mistake naming the first classic mistake whose output ``actual`` matches (any shape)."""
    a = actual.detach()
    head = what[0].upper() + what[1:] if what.startswith("the ") else what   # "b" stays "b"
    for explanation, wrong in mistakes.items():
        w = torch.as_tensor(wrong).detach()
        if a.shape == w.shape and _close(a, w, atol, 1e-4):
            raise Mistake(f"{head} {verb} wrong: {explanation}", hint)


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- 2.1

def _ref_attention(f_query: Tensor, g_support: Tensor, scale: float = 1.0) -> Tensor:
    return matching.cosine_attention(f_query, g_support, scale)


def _probe_attention(fn: Callable) -> None:
    # 4 queries, 6 support examples, D = 3; norms differ a lot so dot product != cosine
    f = torch.randn(4, 3, generator=_g(21), dtype=torch.float64) * torch.tensor([[0.5], [2.], [1.], [3.]],
                                                                                 dtype=torch.float64)
    g = torch.randn(6, 3, generator=_g(22), dtype=torch.float64) * torch.tensor(
        [[1.], [4.], [0.3], [2.], [1.5], [0.7]], dtype=torch.float64)
    f.requires_grad_(True)
    g.requires_grad_(True)
    a = fn(f, g)
    expect_type(a, Tensor, "the attention a")
    ref = _ref_attention(f, g)
    cos = matching.cosine_similarities(f, g)
    fn_, gn_ = F.normalize(f, dim=1), F.normalize(g, dim=1)
    rows = "Each row (one query) must sum to 1 over the support set: torch.softmax(..., dim=1)."
    mistakes = {
        "the softmax runs over the queries (dim=0), so each column sums to 1. " + rows:
            torch.softmax(cos, dim=0),
        "it uses the dot product f·g, not the cosine similarity: divide by the norms (or "
        "F.normalize both f and g along dim=1) before the product.": torch.softmax(f @ g.T, dim=1),
        "it is the dot product with the softmax over the wrong axis (dim=0). Normalise f and g, "
        "and take the softmax over dim=1.": torch.softmax(f @ g.T, dim=0),
        "these are the cosine similarities themselves: apply the softmax over the support set.": cos,
        "it is a log-softmax; attention weights are probabilities, use torch.softmax.":
            torch.log_softmax(cos, dim=1),
        "only the queries are normalised; normalise the support embeddings too.":
            torch.softmax(fn_ @ g.T, dim=1),
        "only the support embeddings are normalised; normalise the queries too.":
            torch.softmax(f @ gn_.T, dim=1),
        "the vectors are normalised along dim=0 (across examples) instead of dim=1 (across features).":
            torch.softmax(F.normalize(f, dim=0) @ F.normalize(g, dim=0).T, dim=1),
        "it attends most to the *least* similar support examples (softmax of minus the cosine).":
            torch.softmax(-cos, dim=1),
    }
    if a.shape == (6, 4):
        _named(a.T, "the attention a", {"it is transposed: shape (NK, NQ). Return (queries, support "
                                        "examples), one row per query.": ref})
    expect_shape(a, (4, 6), "the attention a for 4 queries and 6 support examples",
                 hint="one row per query, one column per support example: (NQ, NK).")
    expect_finite(a, "the attention a")
    _named(a, "the attention a", mistakes)
    expect(_close(a.sum(dim=1), torch.ones(4, dtype=a.dtype), 1e-5, 1e-5),
           f"the rows of a do not sum to 1 (they sum to {[round(v, 4) for v in a.sum(1).tolist()]}). {rows}")
    expect_close(a, ref, "the attention a", atol=1e-6)
    expect_grad(a, "the attention a", hint="keep everything as torch operations on f and g.")
    (a * torch.randn(4, 6, generator=_g(20), dtype=a.dtype)).sum().backward()
    expect(g.grad is not None and f.grad is not None and g.grad.abs().sum() > 0 and f.grad.abs().sum() > 0,
           "no gradient reaches f_query or g_support through your attention.")
    # scale: multiplies the similarities before the softmax
    a5 = fn(f.detach(), g.detach(), 5.0)
    _named(a5, "the attention with scale=5", {
        "scale was applied after the softmax (or not at all): multiply the cosine similarities by "
        "scale, then take the softmax.": 5.0 * ref.detach()})
    _named(a5, "the attention with scale=5", {
        "scale was ignored: multiply the cosine similarities by scale before the softmax.": ref.detach(),
        "the cosine similarities are divided by scale; multiply them by scale (s is an inverse "
        "temperature: a larger s makes the attention sharper).":
            torch.softmax(cos.detach() / 5.0, dim=1)})
    expect_close(a5, _ref_attention(f.detach(), g.detach(), 5.0), "the attention with scale=5", atol=1e-6)
    # the epsilon guard: an all-zero query or support embedding has no direction; its cosine is 0
    zero_hint = ("||x|| = 0 makes x / ||x|| a 0/0 = NaN: clamp the norm away from zero, "
                 "x.norm(dim=1, keepdim=True).clamp_min(1e-8), or use F.normalize(x, dim=1), which does.")
    for where, (fz, gz) in {"query row 1": (_zero_row(f, 1), g.detach()),
                            "support row 3": (f.detach(), _zero_row(g, 3))}.items():
        az = fn(fz, gz)
        expect_type(az, Tensor, "the attention a")
        expect(bool(torch.isfinite(az).all()),
               f"an all-zero embedding ({where}) gives NaN or inf in the attention: there is no epsilon "
               "guard in the normalisation.", zero_hint)
        expect(_close(az.sum(dim=1), torch.ones(az.shape[0], dtype=az.dtype), 1e-5, 1e-5),
               f"with an all-zero embedding ({where}) the rows of a do not sum to 1.", zero_hint)
        expect_close(az, _ref_attention(fz, gz), f"the attention with an all-zero embedding ({where})",
                     atol=1e-6, hint="an all-zero vector has cosine 0 with everything (after the epsilon guard).")
    # a query equal to one support example attends to it most (a soft nearest neighbour)
    a_same = fn(g.detach()[2:3] * 3.0, g.detach())
    expect(int(a_same.argmax()) == 2, "a query equal to support example 2 (up to length) does not "
           "attend most to it; with cosine similarity it must.")


def _zero_row(t: Tensor, row: int) -> Tensor:
    z = t.detach().clone()
    z[row] = 0.0
    return z


def cosine_attention(student: Callable) -> Callable:
    """Exercise 2.1: softmax over the support set of cosine similarities."""
    return run_check("2.1", "cosine attention kernel", student, _ref_attention, _probe_attention)


# ----------------------------------------------------------------------------- 2.2

def _ref_prototypes(z_support: Tensor, n_way: int, k_shot: int) -> Tensor:
    return protonet.prototypes(z_support, n_way, k_shot)


def _probe_prototypes(fn: Callable) -> None:
    n, k, d = 3, 4, 2
    z = torch.randn(n * k, d, generator=_g(23), dtype=torch.float64) + \
        torch.tensor([[0., 0.], [5., 0.], [0., 5.]], dtype=torch.float64).repeat_interleave(k, dim=0)
    z.requires_grad_(True)
    c = fn(z, n, k)
    expect_type(c, Tensor, "the prototypes c")
    ref = _ref_prototypes(z, n, k)
    zz = z.detach()
    mistakes = {
        "the support set was read as shot-major (reshape(k_shot, n_way, D)). It is class-major: "
        "rows c*K .. c*K+K-1 are class c, so reshape to (n_way, k_shot, D) and average over dim 1.":
            zz.reshape(k, n, d).mean(0),
        "it averages over the classes (dim 0 of (n_way, k_shot, D)), giving one vector per shot; "
        "average over the shots (dim 1).": zz.reshape(n, k, d).mean(0),
        "it averages over the embedding dimension (the last one), giving one number per example; "
        "average over the shots (dim 1) instead.": zz.reshape(n, k, d).mean(2),
        "it is the sum of each class's support embeddings; the prototype is their mean.":
            zz.reshape(n, k, d).sum(1),
        "it is the mean of the whole support set, one vector for all classes; average within each class.":
            zz.mean(0),
        "it is the mean of the whole support set (keepdim), one vector for all classes; average "
        "within each class.": zz.mean(0, keepdim=True),
        "it takes the first example of each class (the 1-shot case); average all K shots.":
            zz.reshape(n, k, d)[:, 0],
    }
    _named(c, "the prototypes c", mistakes, verb="are")
    expect_shape(c, (n, d), f"the prototype matrix c of a {n}-way {k}-shot support set with D={d}",
                 hint="one row per class: (n_way, D).")
    expect_finite(c, "the prototype matrix c")
    expect_close(c, ref, "the prototype matrix c", atol=1e-6)
    expect_grad(c, "the prototype matrix c", hint="gradients must reach the encoder through the prototypes.")
    # 1-shot: the prototype is the example itself; a different N, K, D
    z1 = torch.randn(5, 3, generator=_g(24))
    expect_close(fn(z1, 5, 1), z1, "the 1-shot prototype matrix (it must equal the support embeddings)", atol=1e-6)
    z2 = torch.randn(4, 7, generator=_g(25))
    expect_close(fn(z2, 2, 2), _ref_prototypes(z2, 2, 2), "the prototype matrix of a 2-way 2-shot set (D=7)",
                 atol=1e-6)


def prototypes(student: Callable) -> Callable:
    """Exercise 2.2: class means of the class-major support embeddings."""
    return run_check("2.2", "prototypes", student, _ref_prototypes, _probe_prototypes)


# ----------------------------------------------------------------------------- 2.3

def _ref_loss(z_support: Tensor, z_query: Tensor, query_y: Tensor, n_way: int, k_shot: int
              ) -> tuple[Tensor, Tensor]:
    c = protonet.prototypes(z_support, n_way, k_shot)
    logits = protonet.protonet_logits(z_query, c)
    return F.cross_entropy(logits, query_y), logits


def _probe_loss(fn: Callable) -> None:
    n, k, q, d = 3, 2, 2, 4      # K == Q, so a loss on the support set has the query set's shape
    zs = (torch.randn(n * k, d, generator=_g(26), dtype=torch.float64) * 0.6).requires_grad_(True)
    zq = (torch.randn(n * q, d, generator=_g(27), dtype=torch.float64) * 0.6).requires_grad_(True)
    y = torch.arange(n).repeat_interleave(q)
    out = fn(zs, zq, y, n, k)
    expect(isinstance(out, tuple) and len(out) == 2,
           f"return a pair (loss, logits); got {type(out).__name__}"
           + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "") + ".")
    first, second = out
    if (isinstance(first, Tensor) and isinstance(second, Tensor) and first.dim() == 2 and second.dim() == 0):
        raise Mistake("you returned (logits, loss); return (loss, logits): the loss first, then the "
                      "logits (the trainer's episode_loss_fn contract).")
    loss, logits = out
    expect_type(loss, Tensor, "the loss")
    expect_type(logits, Tensor, "the logits")
    ref_loss, ref_logits = _ref_loss(zs, zq, y, n, k)
    zsd, zqd = zs.detach(), zq.detach()
    c = zsd.reshape(n, k, d).mean(1)
    d2 = protonet.squared_distances(zqd, c)
    d2_support = protonet.squared_distances(zsd, c)
    logit_mistakes = {
        "these are computed from the *support* embeddings; the logits (and the loss) belong to the "
        "query set: the support set only builds the prototypes.": -d2_support,
        "the logits are +squared distances; the nearest prototype must get the largest logit, so use "
        "minus the squared distance.": d2,
        "the logits use the Euclidean distance -||z - c||; Prototypical Networks use the *squared* "
        "distance -||z - c||^2 (that is what makes the classifier linear: section 5 of this chapter, Snell et al. §2.4).": -d2.sqrt(),
        "the logits are +Euclidean distances: use minus the *squared* distance.": d2.sqrt(),
        "the logits are dot products z·c; use minus the squared Euclidean distance.": zqd @ c.T,
        "the logits are probabilities (a softmax was applied); return the raw -squared distances "
        "(cross_entropy applies the softmax itself).": torch.softmax(-d2, dim=1),
        "the logits are log-probabilities; return the raw -squared distances.":
            torch.log_softmax(-d2, dim=1),
    }
    _named(logits, "the logits", logit_mistakes, verb="are")
    expect_shape(logits, (n * q, n), f"the logit matrix for {n * q} queries and {n} classes",
                 hint="one row per query, one column per class (prototype).")
    expect_close(logits, ref_logits, "the logit matrix", atol=1e-6)
    ce = F.cross_entropy
    loss_mistakes = {
        "the loss is computed on the support set; it must be measured on the query set "
        "(the support set only builds the prototypes).": ce(-d2_support, y),
        "nll_loss was applied to raw logits (it expects log-probabilities): use F.cross_entropy.":
            F.nll_loss(-d2, y),
        "a softmax was applied before cross_entropy (which applies log-softmax itself): pass the logits.":
            ce(torch.softmax(-d2, 1), y),
        "the loss is summed over the queries; take the mean (F.cross_entropy's default).":
            ce(-d2, y, reduction="sum"),
        "the loss has the wrong sign: minimise the cross-entropy, not its negative.": -ce(-d2, y),
        "the loss uses +distances as logits: it rewards far prototypes. Use -squared distances.":
            ce(d2, y),
        "the loss uses the Euclidean, not the squared Euclidean, distance.": ce(-d2.sqrt(), y),
    }
    expect_shape(loss, (), "the loss", hint="average the cross-entropy over the queries: one number.")
    expect_finite(loss, "the loss")
    _named(loss, "the loss", loss_mistakes)
    expect_close(loss, ref_loss, "the loss", atol=1e-6)
    expect_grad(loss, "the loss")
    loss.backward()
    expect(zs.grad is not None and zs.grad.abs().sum() > 0,
           "no gradient reaches the support embeddings: the prototypes are detached (the encoder must "
           "learn from them too).")
    expect(zq.grad is not None and zq.grad.abs().sum() > 0, "no gradient reaches the query embeddings.")
    # a second shape: 5-way 1-shot, 3 queries each (K != Q), float32
    zs2, zq2 = torch.randn(5, 6, generator=_g(28)), torch.randn(15, 6, generator=_g(29))
    y2 = torch.arange(5).repeat_interleave(3)
    l2, g2 = fn(zs2, zq2, y2, 5, 1)
    r2, rg2 = _ref_loss(zs2, zq2, y2, 5, 1)
    expect_close(g2, rg2, "the logit matrix of a 5-way 1-shot episode with 3 queries per class", atol=1e-5)
    expect_close(l2, r2, "the loss of a 5-way 1-shot episode with 3 queries per class", atol=1e-5)


def prototypical_loss(student: Callable) -> Callable:
    """Exercise 2.3: logits = -squared distances to the prototypes; cross-entropy on the query set."""
    return run_check("2.3", "prototypical episodic loss", student, _ref_loss, _probe_loss)


# ----------------------------------------------------------------------------- 2.4

def _ref_linear(c: Tensor) -> tuple[Tensor, Tensor]:
    return protonet.linear_classifier(c)


def _probe_linear(fn: Callable) -> None:
    c = torch.randn(4, 3, generator=_g(30), dtype=torch.float64) * 2
    out = fn(c)
    expect(isinstance(out, tuple) and len(out) == 2, "return a pair (W, b).")
    W, b = out
    expect_type(W, Tensor, "W")
    expect_type(b, Tensor, "b")
    W_ref, b_ref = _ref_linear(c)
    sq = c.pow(2).sum(1)
    _named(W, "W", {"W = c: the weight of class k is 2 c_k (from -||z - c_k||^2 = 2 c_k·z - ||c_k||^2 - ||z||^2).": c,
                    "W = -2 c: the sign is wrong; expanding -||z - c_k||^2 gives +2 c_k·z.": -2 * c,
                    "W is transposed: use one row per class, shape (N, D).": W_ref.T})
    expect_shape(W, (4, 3), "W for 4 prototypes in 3-D", hint="one row per class: (N, D).")
    expect_close(W, W_ref, "W", atol=1e-6)
    _named(b, "b", {"b = +||c_k||^2: the sign is wrong; b_k = -||c_k||^2.": sq,
                    "b = -||c_k|| (not squared): b_k = -||c_k||^2 = -(c_k·c_k).": -sq.sqrt(),
                    "b = -2||c_k||^2: only the cross term gets the factor 2; b_k = -||c_k||^2.": -2 * sq,
                    "b = -||c_k||^2 / 2: that is the bias for W = c; with W = 2c it is -||c_k||^2.": -sq / 2})
    expect_shape(b, (4,), "b for 4 prototypes", hint="one bias per class: (N,).")
    expect_close(b, b_ref, "b", atol=1e-6)
    z = torch.randn(5, 3, generator=_g(31), dtype=torch.float64)
    expect_close(torch.softmax(z @ W.T + b, 1), torch.softmax(protonet.protonet_logits(z, c), 1),
                 "softmax(z W^T + b)", atol=1e-9)


def linear_classifier(student: Callable) -> Callable:
    """Exercise 2.4: prototypes as a linear layer, W = 2c, b = -||c||^2."""
    return run_check("2.4", "prototypes as a linear classifier", student, _ref_linear, _probe_linear)
