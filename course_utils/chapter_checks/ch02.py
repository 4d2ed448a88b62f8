"""Checks for chapter 02 (Matching and Prototypical networks).

Exercises:
    2.1 ``cosine_attention(f_query, g_support, scale=1.0) -> a (NQ, NK)``
    2.2 ``prototypes(z_support, n_way, k_shot) -> c (N, D)``
    2.3 ``prototypical_loss(z_support, z_query, query_y, n_way, k_shot) -> (loss, logits)``
    2.4 ``linear_classifier(c) -> (W, b)``

Each probe calls the student's function on several small inputs, so that ignoring an argument
fails: N != K != Q, queries in a shuffled order (labels that are not class-major), float64 and
float32 (the result must keep the inputs' dtype), several scales, all tensors on the ``meta``
device (a tensor made without ``device=`` crashes on a GPU). It names the chapter's classic
mistakes: the softmax over the wrong axis, the dot product instead of the cosine, only one side
normalised (or normalised along the wrong axis, or by the squared norm), no epsilon guard (NaN for
an all-zero embedding), the scale ignored, divided or applied after the softmax, query and support
swapped; prototypes read shot-major, averaged over the wrong dimension, summed or divided by the
wrong count, the mean of the whole support set, ``view(n_way, -1)`` averaging the features too;
the plain instead of the squared Euclidean distance, +distances as logits, the distance averaged
over the features, cosine or dot-product logits, the loss on the support set, support and query
swapped, the query labels ignored, a summed or per-query loss, (logits, loss) in the wrong order;
the linear classifier's missing factor 2, its signs, a bias that is not squared or summed over the
wrong axis. Each probe first calls the function on inputs without gradients, so that a NumPy return
is named as such (PyTorch refuses ``.numpy()`` on a tensor that requires grad).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import matching, protonet
from ..checks import (Mistake, _close, describe, expect, expect_close, expect_device_agnostic, expect_finite,
                      expect_grad, expect_shape, run_check)

__all__ = ["cosine_attention", "prototypes", "prototypical_loss", "linear_classifier", "EXERCISES"]

EXERCISES = ["2.1", "2.2", "2.3", "2.4"]


def _named(actual: Tensor, what: str, mistakes: Mapping[str, Tensor | tuple[Tensor, ...]], atol: float = 1e-5,
           hint: str = "", verb: str = "is", right: Tensor | None = None) -> None:
    """Raise Mistake naming the first classic mistake whose output ``actual`` matches (any shape).

    A mistake's value may be a tuple of tensors: variants (e.g. shapes) that get the same diagnosis.
    With ``right`` given, a mistake that happens to give the right answer on these inputs is skipped.
    """
    a = actual.detach()
    head = what[0].upper() + what[1:] if what.startswith("the ") else what   # "b" stays "b"
    r = right.detach() if right is not None else None
    for explanation, variants in mistakes.items():
        for wrong in (variants if isinstance(variants, tuple) else (variants,)):
            w = torch.as_tensor(wrong).detach()
            if r is not None and w.shape == r.shape and _close(w, r, atol, 1e-4):
                continue
            if a.shape == w.shape and _close(a, w, atol, 1e-4):
                raise Mistake(f"{head} {verb} wrong: {explanation}", hint)


def _tensor(obj: Any, what: str, expected: str) -> None:
    """``obj`` must be a tensor; otherwise say what it is and what the exercise returns."""
    if isinstance(obj, Tensor):
        return
    hint = ""
    if isinstance(obj, (tuple, list)):
        hint = "return the tensor itself, not a tuple or list that contains it."
    elif isinstance(obj, (int, float)):
        hint = ".item() (or float(...)) turns a tensor into a Python number and cuts the gradient; return the tensor."
    got = describe(obj)
    if type(obj).__module__.startswith("numpy"):
        shape = getattr(obj, "shape", None)
        got = "a NumPy array" + (f" of shape {tuple(shape)}" if shape is not None else "")
        hint = (".numpy() leaves torch (and autograd): the gradient cannot flow back through a NumPy "
                "array. Return the torch tensor itself, without .numpy() (or .detach()).")
    raise Mistake(f"{what} should be a torch.Tensor {expected}; your function returned {got}.", hint)


def _same_dtype(t: Tensor, dtype: torch.dtype, what: str) -> None:
    if t.dtype != dtype:
        raise Mistake(f"{what} is {t.dtype} for {dtype} inputs: keep the inputs' dtype.",
                      "no .float() or .double(); give new tensors the inputs' dtype (dtype=x.dtype, "
                      "torch.zeros_like, .to(x.dtype)).")


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _device_agnostic(fn: Callable, *args: Any, what: str) -> None:
    expect_device_agnostic(fn, *args, what=what)


# ----------------------------------------------------------------------------- 2.1

def _ref_attention(f_query: Tensor, g_support: Tensor, scale: float = 1.0) -> Tensor:
    return matching.cosine_attention(f_query, g_support, scale)


ROWS = "Each row (one query) must sum to 1 over the support set: torch.softmax(..., dim=1)."


def _attention_mistakes(f: Tensor, g: Tensor, s: float) -> dict[str, Tensor]:
    """The classic wrong attentions for queries ``f``, support ``g`` and scale ``s``, by explanation."""
    f, g = f.detach(), g.detach()
    cos = matching.cosine_similarities(f, g)
    fn_, gn_ = F.normalize(f, dim=1), F.normalize(g, dim=1)
    sq = lambda x: x / x.pow(2).sum(1, keepdim=True)         # noqa: E731  divided by ||x||^2
    return {
        "the softmax runs over the queries (dim=0), so each column sums to 1. " + ROWS:
            torch.softmax(s * cos, dim=0),
        "it uses the dot product f·g, not the cosine similarity: divide by the norms (or "
        "F.normalize both f and g along dim=1) before the product.": torch.softmax(s * f @ g.T, dim=1),
        "it is the dot product with the softmax over the wrong axis (dim=0). Normalise f and g, "
        "and take the softmax over dim=1.": torch.softmax(s * f @ g.T, dim=0),
        "these are the cosine similarities themselves: apply the softmax over the support set.": s * cos,
        "it is a log-softmax; attention weights are probabilities, use torch.softmax.":
            torch.log_softmax(s * cos, dim=1),
        "only the queries are normalised (the cosine needs both sides): normalise the support "
        "embeddings too.": torch.softmax(s * fn_ @ g.T, dim=1),
        "only the support embeddings are normalised (the cosine needs both sides): normalise the "
        "queries too.": torch.softmax(s * f @ gn_.T, dim=1),
        "the vectors are normalised along dim=0 (across examples) instead of dim=1 (across features).":
            torch.softmax(s * F.normalize(f, dim=0) @ F.normalize(g, dim=0).T, dim=1),
        "the vectors are divided by their squared norm ||x||^2; a unit vector is x / ||x|| (no square).":
            torch.softmax(s * sq(f) @ sq(g).T, dim=1),
        "it attends most to the *least* similar support examples (softmax of minus the cosine).":
            torch.softmax(-s * cos, dim=1),
    }


def _attention_inputs(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    # 4 queries, 6 support examples, D = 3; norms differ a lot so the dot product != the cosine
    f = torch.randn(4, 3, generator=_g(21), dtype=dtype) * torch.tensor([[0.5], [2.], [1.], [3.]], dtype=dtype)
    g = torch.randn(6, 3, generator=_g(22), dtype=dtype) * torch.tensor(
        [[1.], [4.], [0.3], [2.], [1.5], [0.7]], dtype=dtype)
    return f, g


def _probe_attention(fn: Callable) -> None:
    f, g = _attention_inputs()
    # first with inputs that carry no gradient, so that a .numpy() return gets its own diagnosis
    # (on inputs that require grad, PyTorch itself refuses .numpy() with a message about .detach())
    _tensor(fn(f, g), "the attention a", "of shape (NQ, NK)")
    f.requires_grad_(True)
    g.requires_grad_(True)
    a = fn(f, g)
    _tensor(a, "the attention a", "of shape (NQ, NK)")
    ref = _ref_attention(f, g)
    cos = matching.cosine_similarities(f.detach(), g.detach())
    if a.shape == (6, 4):
        _named(a, "the attention a", {
            "it is transposed: shape (NK, NQ). Return (queries, support examples), one row per query.": ref.T,
            "query and support are swapped: these are the support examples' attention over the queries "
            "(each row is a support example). Row q must be query q's attention over the support set.":
                torch.softmax(cos.T, dim=1)})
    if a.shape == (4, 4):
        _named(a, "the attention a", {
            "it compares the queries with themselves (g_support is not used): the columns are the "
            "support examples.": _ref_attention(f, f)})
    expect_shape(a, (4, 6), "the attention a for 4 queries and 6 support examples",
                 hint="one row per query, one column per support example: (NQ, NK).")
    _same_dtype(a, f.dtype, "the attention a")
    expect_finite(a, "the attention a")
    _named(a, "the attention a", _attention_mistakes(f, g, 1.0))
    expect(_close(a.sum(dim=1), torch.ones(4, dtype=a.dtype), 1e-5, 1e-5),
           f"the rows of a do not sum to 1 (they sum to {[round(v, 4) for v in a.sum(1).tolist()]}). {ROWS}")
    expect_close(a, ref, "the attention a", atol=1e-6)
    expect_grad(a, "the attention a", hint="keep everything as torch operations on f and g.")
    (a * torch.randn(4, 6, generator=_g(20), dtype=a.dtype)).sum().backward()
    expect(g.grad is not None and f.grad is not None and g.grad.abs().sum() > 0 and f.grad.abs().sum() > 0,
           "no gradient reaches f_query or g_support through your attention.")
    # scale: multiplies the similarities before the softmax (an inverse temperature)
    fd, gd = f.detach(), g.detach()
    for s in (5.0, 0.5):
        what = f"the attention with scale={s:g}"
        a_s = fn(fd, gd, s)
        _tensor(a_s, what, "of shape (NQ, NK)")
        ref_s = _ref_attention(fd, gd, s)
        _named(a_s, what, {
            "scale was applied after the softmax (or not at all): multiply the cosine similarities by "
            "scale, then take the softmax.": s * ref.detach()})
        _named(a_s, what, {
            "scale was ignored: multiply the cosine similarities by scale before the softmax.": ref.detach(),
            "the cosine similarities are divided by scale; multiply them by scale (s is an inverse "
            "temperature: a larger s makes the attention sharper).": torch.softmax(cos / s, dim=1),
            **_attention_mistakes(fd, gd, s)})
        expect_close(a_s, ref_s, what, atol=1e-6, hint="a = softmax(scale * cos, dim=1): scale multiplies the "
                     "cosine similarities once, before the softmax.")
    # scale passed by keyword, as the chapter's code does
    expect_close(fn(fd, gd, scale=5.0), _ref_attention(fd, gd, 5.0), "the attention with scale=5 (by keyword)",
                 atol=1e-6)
    # float32, other sizes (7 queries, 2 support examples, D = 5): nothing hard-coded, dtype kept
    f32, g32 = torch.randn(7, 5, generator=_g(40)) * 2, torch.randn(2, 5, generator=_g(41))
    a32 = fn(f32, g32, 3.0)
    _tensor(a32, "the attention a (float32 inputs)", "of shape (NQ, NK)")
    expect_shape(a32, (7, 2), "the attention a for 7 queries and 2 support examples (float32)",
                 hint="one row per query, one column per support example: (NQ, NK).")
    _same_dtype(a32, torch.float32, "the attention a")
    expect_close(a32, _ref_attention(f32, g32, 3.0), "the attention a for 7 queries, 2 support examples "
                 "(float32, scale=3)", atol=1e-5)
    # the epsilon guard: an all-zero query or support embedding has no direction; its cosine is 0
    zero_hint = ("||x|| = 0 makes x / ||x|| a 0/0 = NaN: clamp the norm away from zero, "
                 "x.norm(dim=1, keepdim=True).clamp_min(1e-8), or use F.normalize(x, dim=1), which does.")
    for where, (fz, gz) in {"query row 1": (_zero_row(f, 1), gd),
                            "support row 3": (fd, _zero_row(g, 3))}.items():
        az = fn(fz, gz)
        _tensor(az, "the attention a", "of shape (NQ, NK)")
        expect(bool(torch.isfinite(az).all()),
               f"an all-zero embedding ({where}) gives NaN or inf in the attention: there is no epsilon "
               "guard in the normalisation.", zero_hint)
        expect(_close(az.sum(dim=1), torch.ones(az.shape[0], dtype=az.dtype), 1e-5, 1e-5),
               f"with an all-zero embedding ({where}) the rows of a do not sum to 1.", zero_hint)
        expect_close(az, _ref_attention(fz, gz), f"the attention with an all-zero embedding ({where})",
                     atol=1e-6, hint="an all-zero vector has cosine 0 with everything (after the epsilon guard).")
    # a query equal to one support example attends to it most (a soft nearest neighbour)
    a_same = fn(gd[2:3] * 3.0, gd)
    expect(int(a_same.argmax()) == 2, "a query equal to support example 2 (up to length) does not "
           "attend most to it; with cosine similarity it must.")
    _device_agnostic(fn, fd, gd, 2.0, what="your cosine_attention")


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


VIEW_N_WAY = ("view(n_way, -1) (or reshape(n_way, -1)) puts each class's K shots *and* its D features in "
              "one row, so the mean over that row averages the features too: one number per class. Keep "
              "the feature axis: reshape(n_way, k_shot, -1).mean(1).")


def _prototype_mistakes(z: Tensor, n: int, k: int) -> dict[str, Tensor]:
    zz = z.detach()
    d = zz.shape[1]
    by_class = zz.reshape(n, k, d)
    flat = zz.reshape(n, -1).mean(1, keepdim=True)      # view(n_way, -1): shots and features in one row
    return {
        "the support set was read as shot-major (reshape(k_shot, n_way, D), or every n_way-th row). "
        "It is class-major: rows n*K .. n*K+K-1 are class n, so reshape to (n_way, k_shot, D) and "
        "average over dim 1.": zz.reshape(k, n, d).mean(0),
        "it averages over the classes (dim 0 of (n_way, k_shot, D)), giving one vector per shot; "
        "average over the shots (dim 1).": by_class.mean(0),
        "it reshapes to (k_shot, n_way, D) (n_way and k_shot swapped) and averages over dim 1: "
        "reshape to (n_way, k_shot, D) instead.": zz.reshape(k, n, d).mean(1),
        "it averages over the embedding dimension (the last one), giving one number per example; "
        "average over the shots (dim 1) instead.": by_class.mean(2),
        "it is the sum of each class's support embeddings; the prototype is their mean.": by_class.sum(1),
        "each class's sum is divided by n_way; the mean divides by the number of shots, k_shot.":
            by_class.sum(1) / n,
        "each class's sum is divided by the whole support set's size N*K; the mean of a class divides "
        "by its own K shots.": by_class.sum(1) / (n * k),
        "it is the mean of the whole support set, one vector for all classes; average within each class.":
            zz.mean(0),
        "it is the mean of the whole support set (keepdim), one vector for all classes; average "
        "within each class.": zz.mean(0, keepdim=True),
        "it takes the first example of each class (the 1-shot case); average all K shots.": by_class[:, 0],
        "every row is the mean of the whole support set (one vector repeated for all classes); the "
        "prototype of class n averages only that class's K shots: reshape(n_way, k_shot, D).mean(1).":
            zz.mean(0, keepdim=True).expand(n, d),
        VIEW_N_WAY: (flat.expand(n, d), flat, flat[:, 0]),      # broadcast to (N, D), or (N, 1), or (N,)
    }


def _probe_prototypes(fn: Callable) -> None:
    n, k, d = 3, 4, 2                      # N != K != D, so every reshape mistake has its own answer
    z = torch.randn(n * k, d, generator=_g(23), dtype=torch.float64) + \
        torch.tensor([[0., 0.], [5., 0.], [0., 5.]], dtype=torch.float64).repeat_interleave(k, dim=0)
    _tensor(fn(z, n, k), "the prototypes c", "of shape (n_way, D)")     # no gradient yet: see 2.1
    z.requires_grad_(True)
    c = fn(z, n, k)
    _tensor(c, "the prototypes c", "of shape (n_way, D)")
    ref = _ref_prototypes(z, n, k)
    _named(c, "the prototypes c", _prototype_mistakes(z, n, k), verb="are")
    expect_shape(c, (n, d), f"the prototype matrix c of a {n}-way {k}-shot support set with D={d}",
                 hint="one row per class: (n_way, D).")
    _same_dtype(c, z.dtype, "the prototype matrix c")
    expect_finite(c, "the prototype matrix c")
    expect_close(c, ref, "the prototype matrix c", atol=1e-6)
    expect_grad(c, "the prototype matrix c", hint="gradients must reach the encoder through the prototypes.")
    c.sum().backward()
    expect(z.grad is not None and _close(z.grad, torch.full_like(z, 1.0 / k), 1e-9, 1e-9),
           "d(sum of c) / d z_support should be 1/K for every support entry (each example counts once, "
           "with weight 1/K, in its own class's mean).")
    # other N, K, D and float32: 1-shot (the prototype is the example itself), K > N, N == K
    z1 = torch.randn(5, 3, generator=_g(24))
    c1 = fn(z1, 5, 1)
    _tensor(c1, "the 1-shot prototypes", "of shape (n_way, D)")
    _same_dtype(c1, torch.float32, "the prototype matrix c")
    expect_close(c1, z1, "the 1-shot prototype matrix (it must equal the support embeddings)", atol=1e-6)
    for (n2, k2, d2, seed) in ((2, 5, 3, 25), (2, 2, 7, 26)):
        z2 = torch.randn(n2 * k2, d2, generator=_g(seed))
        what = f"the prototype matrix of a {n2}-way {k2}-shot set (D={d2}, float32)"
        c2 = fn(z2, n2, k2)
        _tensor(c2, what, "of shape (n_way, D)")
        ref2 = _ref_prototypes(z2, n2, k2)
        _named(c2, what, _prototype_mistakes(z2, n2, k2), verb="is", right=ref2)
        expect_close(c2, ref2, what, atol=1e-5)
    _device_agnostic(fn, z.detach(), n, k, what="your prototypes")


def prototypes(student: Callable) -> Callable:
    """Exercise 2.2: class means of the class-major support embeddings."""
    return run_check("2.2", "prototypes", student, _ref_prototypes, _probe_prototypes)


# ----------------------------------------------------------------------------- 2.3

def _ref_loss(z_support: Tensor, z_query: Tensor, query_y: Tensor, n_way: int, k_shot: int
              ) -> tuple[Tensor, Tensor]:
    c = protonet.prototypes(z_support, n_way, k_shot)
    logits = protonet.protonet_logits(z_query, c)
    return F.cross_entropy(logits, query_y), logits


SUPPORT_QUERY_SWAPPED = ("support and query are swapped: the prototypes are built from the query set and "
                         "the logits are those of the support set. The support set builds the prototypes; "
                         "the logits and the loss belong to the query set.")


def _logit_mistakes(zs: Tensor, zq: Tensor, n: int, k: int) -> dict[str, Tensor]:
    zs, zq = zs.detach(), zq.detach()
    d = zs.shape[1]
    c = zs.reshape(n, k, d).mean(1)
    d2 = protonet.squared_distances(zq, c)
    out = {
        "these are computed from the *support* embeddings; the logits (and the loss) belong to the "
        "query set: the support set only builds the prototypes.": -protonet.squared_distances(zs, c),
        "the logits are +squared distances; the nearest prototype must get the largest logit, so use "
        "minus the squared distance.": d2,
        "the logits use the Euclidean distance -||z - c||; Prototypical Networks use the *squared* "
        "distance -||z - c||^2 (that is what makes the classifier linear: section 5 of this chapter, "
        "Snell et al. §2.4).": -d2.sqrt(),
        "the logits are +Euclidean distances: use minus the *squared* distance.": d2.sqrt(),
        "the squared distance is averaged over the D embedding dimensions (.mean(-1), or F.mse_loss); "
        "||z - c||^2 sums them: .sum(-1).": -d2 / d,
        "the logits are dot products z·c; use minus the squared Euclidean distance.": zq @ c.T,
        "the logits are cosine similarities (Matching Networks' kernel); Prototypical Networks use minus "
        "the squared Euclidean distance.": matching.cosine_similarities(zq, c),
        "the prototypes are sums of the support embeddings, not means (check your 2.2).":
            -protonet.squared_distances(zq, zs.reshape(n, k, d).sum(1)),
        "the prototypes read the support set as shot-major; it is class-major (reshape(n_way, "
        "k_shot, D)).": -protonet.squared_distances(zq, zs.reshape(k, n, d).mean(0)),
        "the logits are probabilities (a softmax was applied); return the raw -squared distances "
        "(cross_entropy applies the softmax itself).": torch.softmax(-d2, dim=1),
        "the logits are log-probabilities; return the raw -squared distances.": torch.log_softmax(-d2, dim=1),
    }
    if zq.shape[0] % n == 0:             # prototypes from the query set (read class-major)
        cq = zq.reshape(n, zq.shape[0] // n, d).mean(1)
        out[SUPPORT_QUERY_SWAPPED] = -protonet.squared_distances(zs, cq)
        out["the prototypes are built from the *query* set; build them from the support set (the "
            "queries are what you classify)."] = -protonet.squared_distances(zq, cq)
    return out


def _loss_mistakes(zs: Tensor, zq: Tensor, y: Tensor, n: int, k: int) -> dict[str, Tensor]:
    zs, zq = zs.detach(), zq.detach()
    c = zs.reshape(n, k, -1).mean(1)
    d2 = protonet.squared_distances(zq, c)
    ce = F.cross_entropy
    out = {
        "the loss is computed on the support set; it must be measured on the query set "
        "(the support set only builds the prototypes).": ce(-protonet.squared_distances(zs, c), y)
        if zs.shape[0] == zq.shape[0] else None,
        "nll_loss was applied to raw logits (it expects log-probabilities): use F.cross_entropy.":
            F.nll_loss(-d2, y),
        "a softmax was applied before cross_entropy (which applies log-softmax itself): pass the logits.":
            ce(torch.softmax(-d2, 1), y),
        "the loss is summed over the queries; take the mean (F.cross_entropy's default).":
            ce(-d2, y, reduction="sum"),
        "the loss has the wrong sign: minimise the cross-entropy, not its negative.": -ce(-d2, y),
        "the loss uses +distances as logits: it rewards far prototypes. Use -squared distances.": ce(d2, y),
        "the loss uses the Euclidean, not the squared Euclidean, distance.": ce(-d2.sqrt(), y),
        "the loss ignores query_y: it assumes the queries are class-major (labels 0,..,0,1,..,1,...), "
        "but they may come in any order. Use the labels you are given: F.cross_entropy(logits, query_y).":
            ce(-d2, torch.arange(n).repeat_interleave(zq.shape[0] // n)) if zq.shape[0] % n == 0 else None,
    }
    if zq.shape[0] % n == 0 and zs.shape[0] == zq.shape[0]:
        cq = zq.reshape(n, zq.shape[0] // n, -1).mean(1)
        out[SUPPORT_QUERY_SWAPPED] = ce(-protonet.squared_distances(zs, cq), y)
    return {m: v for m, v in out.items() if v is not None}


def _loss_pair(out: Any, n_rows: int, n_way: int) -> tuple[Tensor, Tensor]:
    """The student's (loss, logits), or a Mistake that says what came back instead."""
    if isinstance(out, list) and len(out) == 2:
        raise Mistake("you returned a list; return a tuple (loss, logits): the trainer (train_episodic) "
                      "tells (loss, scores) from a bare loss by isinstance(out, tuple).")
    if not (isinstance(out, tuple) and len(out) == 2):
        extra = ""
        if isinstance(out, Tensor) and out.dim() == 0:
            extra = " That looks like the loss alone: return the logits too, `return loss, logits`."
        raise Mistake(f"return a pair (loss, logits); your function returned {describe(out)}.{extra}")
    first, second = out
    if isinstance(first, Tensor) and isinstance(second, Tensor) and first.dim() == 2 and second.dim() == 0:
        raise Mistake("you returned (logits, loss); return (loss, logits): the loss first, then the "
                      "logits (the trainer's episode_loss_fn contract).")
    loss, logits = out
    _tensor(loss, "the loss", "(a scalar, 0-dimensional)")
    _tensor(logits, "the logits", f"of shape (N*Q, N) = ({n_rows}, {n_way})")
    return loss, logits


def _check_loss_value(loss: Tensor, logits: Tensor, zs: Tensor, zq: Tensor, y: Tensor, n: int, k: int,
                      episode: str, atol: float) -> None:
    ref_loss, ref_logits = _ref_loss(zs.detach(), zq.detach(), y, n, k)
    nq = zq.shape[0]
    _named(logits, f"the logits {episode}", _logit_mistakes(zs, zq, n, k), verb="are", right=ref_logits)
    expect_shape(logits, (nq, n), f"the logit matrix {episode} ({nq} queries, {n} classes)",
                 hint="one row per query, one column per class (prototype).")
    _same_dtype(logits, zq.dtype, "the logit matrix")
    expect_close(logits, ref_logits, f"the logit matrix {episode}", atol=atol)
    if loss.shape == (nq,):
        _named(loss, f"the loss {episode}", {
            "these are the per-query losses (reduction='none'); return their mean, one number "
            "(F.cross_entropy's default).": F.cross_entropy(ref_logits, y, reduction="none")}, verb="is")
    expect_shape(loss, (), f"the loss {episode}", hint="average the cross-entropy over the queries: one number.")
    expect_finite(loss, f"the loss {episode}")
    _named(loss, f"the loss {episode}", _loss_mistakes(zs, zq, y, n, k), right=ref_loss)
    expect_close(loss, ref_loss, f"the loss {episode}", atol=atol)


def _probe_loss(fn: Callable) -> None:
    # A: K == Q, so a loss on the support set (or with support and query swapped) has the right shape
    n, k, q, d = 3, 2, 2, 4
    zs = (torch.randn(n * k, d, generator=_g(26), dtype=torch.float64) * 0.6).requires_grad_(True)
    zq = (torch.randn(n * q, d, generator=_g(27), dtype=torch.float64) * 0.6).requires_grad_(True)
    y = torch.arange(n).repeat_interleave(q)
    _loss_pair(fn(zs.detach(), zq.detach(), y, n, k), n * q, n)      # no gradient yet: see 2.1
    loss, logits = _loss_pair(fn(zs, zq, y, n, k), n * q, n)
    _check_loss_value(loss, logits, zs, zq, y, n, k, "of a 3-way 2-shot episode", 1e-6)
    expect_grad(loss, "the loss")
    loss.backward()
    expect(zs.grad is not None and zs.grad.abs().sum() > 0,
           "no gradient reaches the support embeddings: the prototypes are detached (the encoder must "
           "learn from them too).")
    expect(zq.grad is not None and zq.grad.abs().sum() > 0, "no gradient reaches the query embeddings.")
    # B: queries in a shuffled order (labels not class-major), N != K != Q
    n, k, q, d = 4, 3, 2, 5
    zs = torch.randn(n * k, d, generator=_g(30), dtype=torch.float64)
    zq = torch.randn(n * q, d, generator=_g(31), dtype=torch.float64)
    order = torch.randperm(n * q, generator=_g(32))
    y = torch.arange(n).repeat_interleave(q)[order]
    zq = (zs.reshape(n, k, d).mean(1).repeat_interleave(q, dim=0) + 0.8 * zq)[order]  # near their own class
    loss, logits = _loss_pair(fn(zs, zq, y, n, k), n * q, n)
    _check_loss_value(loss, logits, zs, zq, y, n, k, "of a 4-way 3-shot episode with its queries in a "
                      f"shuffled order (query_y = {y.tolist()})", 1e-6)
    # C: 5-way 1-shot, 3 queries each, float32
    zs2, zq2 = torch.randn(5, 6, generator=_g(28)), torch.randn(15, 6, generator=_g(29))
    y2 = torch.arange(5).repeat_interleave(3)
    l2, g2 = _loss_pair(fn(zs2, zq2, y2, 5, 1), 15, 5)
    _check_loss_value(l2, g2, zs2, zq2, y2, 5, 1, "of a 5-way 1-shot episode with 3 queries per class "
                      "(float32)", 1e-5)
    _device_agnostic(fn, zs, zq, y, n, k, what="your prototypical_loss")


def prototypical_loss(student: Callable) -> Callable:
    """Exercise 2.3: logits = -squared distances to the prototypes; cross-entropy on the query set."""
    return run_check("2.3", "prototypical episodic loss", student, _ref_loss, _probe_loss)


# ----------------------------------------------------------------------------- 2.4

def _ref_linear(c: Tensor) -> tuple[Tensor, Tensor]:
    return protonet.linear_classifier(c)


def _linear_pair(out: Any) -> tuple[Tensor, Tensor]:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise Mistake(f"return a pair (W, b); your function returned {describe(out)}.")
    W, b = out
    _tensor(W, "W", "of shape (N, D)")
    _tensor(b, "b", "of shape (N,)")
    return W, b


def _check_linear(W: Tensor, b: Tensor, c: Tensor, atol: float) -> None:
    n, d = c.shape
    W_ref, b_ref = _ref_linear(c)
    sq = c.pow(2).sum(1)
    _named(W, "W", {"W = c: the factor 2 is missing; the weight of class n is 2 c_n (from "
                    "-||z - c_n||^2 = 2 c_n·z - ||c_n||^2 - ||z||^2).": c,
                    "W = -2 c: the sign is wrong; expanding -||z - c_n||^2 gives +2 c_n·z.": -2 * c,
                    "W = -c: the sign is wrong and the factor 2 is missing; W = 2 c.": -c,
                    "W is transposed: use one row per class, shape (N, D).": W_ref.T,
                    "W = c / 2: the factor 2 multiplies, W = 2 c.": c / 2})
    expect_shape(W, (n, d), f"W for {n} prototypes in {d}-D", hint="one row per class: (N, D).")
    _same_dtype(W, c.dtype, "W")
    expect_close(W, W_ref, "W", atol=atol)
    _named(b, "b", {"b = +||c_n||^2: the sign is wrong; b_n = -||c_n||^2.": sq,
                    "b = -||c_n|| (not squared): b_n = -||c_n||^2 = -(c_n·c_n).": -sq.sqrt(),
                    "b = +||c_n|| : the sign is wrong and the square is missing; b_n = -||c_n||^2.": sq.sqrt(),
                    "b = -2||c_n||^2: only the cross term gets the factor 2; b_n = -||c_n||^2.": -2 * sq,
                    "b = -||c_n||^2 / 2: that is the bias for W = c; with W = 2c it is -||c_n||^2.": -sq / 2,
                    "b has shape (N, 1) (keepdim=True): z @ W.T + b then broadcasts wrongly; one bias per "
                    "class, shape (N,).": -sq[:, None],
                    "b is summed over the classes (dim 0), one number per feature; sum over the features "
                    "(dim 1): b_n = -sum_d c_nd^2.": -c.pow(2).sum(0),
                    "b is one number, the sum over all prototypes; one bias per class: -(c ** 2).sum(dim=1).":
                        -sq.sum()})
    expect_shape(b, (n,), f"b for {n} prototypes", hint="one bias per class: (N,).")
    _same_dtype(b, c.dtype, "b")
    expect_close(b, b_ref, "b", atol=atol)
    z = torch.randn(5, d, generator=_g(31), dtype=c.dtype)
    expect_close(torch.softmax(z @ W.T.detach() + b.detach(), 1), torch.softmax(protonet.protonet_logits(z, c), 1),
                 "softmax(z W^T + b)", atol=1e-5 if c.dtype == torch.float32 else 1e-9)


def _probe_linear(fn: Callable) -> None:
    c = torch.randn(4, 3, generator=_g(30), dtype=torch.float64) * 2      # N = 4 != D = 3
    W, b = _linear_pair(fn(c))
    _check_linear(W, b, c, 1e-6)
    # float32, N = 2 < D = 5
    c32 = torch.randn(2, 5, generator=_g(33)) * 1.5
    W, b = _linear_pair(fn(c32))
    _check_linear(W, b, c32, 1e-5)
    # gradients reach the prototypes (so the encoder could be trained through this layer)
    cg = c.clone().requires_grad_(True)
    W, b = _linear_pair(fn(cg))
    expect_grad(W, "W", hint="keep W a torch expression of c (no .detach(), .numpy() or a new tensor).")
    expect_grad(b, "b", hint="keep b a torch expression of c.")
    _device_agnostic(fn, c, what="your linear_classifier")


def linear_classifier(student: Callable) -> Callable:
    """Exercise 2.4: prototypes as a linear layer, W = 2c, b = -||c||^2."""
    return run_check("2.4", "prototypes as a linear classifier", student, _ref_linear, _probe_linear)
