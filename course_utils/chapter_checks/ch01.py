"""Checks for chapter 01 (contrastive loss, Siamese networks).

1.1 the contrastive loss · 1.2 a Euclidean distance that is safe at zero · 1.3 the balanced pair
sampler · 1.4 one-shot classification by verification.

Each probe calls the student's function on small fixed inputs, checks one property at a time, probes
every argument of the exercise's signature (so that ignoring one fails) and names the chapter's
classic mistakes: inverted labels (the seed article's), a missing square, the margin on the wrong
term, a hinge on squared distances, a mean or sum instead of per-pair losses, NaN gradients at zero
distance, the wrong axis, an eps so large that D(x, x) is not about 0, unbalanced, non-random or
repeated pairs, a second example not drawn independently of the first, an odd ``n_pairs`` answered with
too many or unbalanced pairs, integer labels or float64 images, a support set assumed sorted by class
(class- or shot-major), misaligned (query, support) pairs, scores of the wrong set, an ignored
``score_pairs``; no gradient reaching one embedding, eps after the root. When an answer is wrong in no
known way, the message shows the inputs of the first wrong value.

The notation is the course's: D distance, m margin, Y pair label with Y = 0 for a similar pair
(Hadsell et al. 2006). Hadsell et al.'s factor 1/2 in front of the loss is accepted (both forms are
right); the check says which one it saw.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .. import contrastive, siamese
from ..checks import (Mistake, describe, diagnose, expect, expect_close, expect_device_agnostic, expect_grad,
                      expect_shape, run_check)
from ..episodes import ClassSet

__all__ = ["contrastive_loss", "euclidean_distance", "sample_pairs", "classify_by_verification", "EXERCISES",
           "ZERO_DISTANCE_BOUND", "loss_mistakes"]

EXERCISES = ["1.1", "1.2", "1.3", "1.4"]

INVERTED = ("you used Y = 1 for similar pairs: that pulls different classes together and pushes "
            "same-class pairs apart — the seed article's mistake (the anonymous blog tutorial the course "
            "grew from). In this course, as in Hadsell et al. 2006, Y = 0 means same class: "
            "L = (1 - Y) D² + Y max(0, m - D)². (Putting the margin term on the same-class pairs is the same "
            "mistake.)")


def _expect_tensor(obj, what: str, hint: str = "") -> None:
    """Like expect_type(obj, Tensor), but the message says what was returned instead."""
    if not isinstance(obj, Tensor):
        raise Mistake(f"{what} should be a torch.Tensor, but your function returned {describe(obj)}.", hint)


def _close(a: Tensor, b: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    return (isinstance(a, Tensor) and a.shape == b.shape
            and torch.allclose(a.detach().double().cpu(), b.detach().double().cpu(), atol=atol, rtol=rtol))


# ----------------------------------------------------------------------------- 1.1

def _reference_contrastive_loss(D: Tensor, Y: Tensor, margin: float = 1.0) -> Tensor:
    return contrastive.contrastive_loss(D, Y, margin)


def _loss_probe_inputs() -> tuple[Tensor, Tensor, float]:
    """Distances D, pair labels Y (float, 0 = same class) and a margin m = 2."""
    D = torch.tensor([0.0, 0.4, 1.1, 2.3, 0.0, 0.6, 1.3, 2.6, 1.9])
    Y = torch.tensor([0., 0., 0., 0., 1., 1., 1., 1., 1.])
    return D, Y, 2.0


def _right_loss(D: Tensor, Y: Tensor, m: float) -> Tensor:
    D, Y = D.detach().double(), Y.double()
    return (1 - Y) * D ** 2 + Y * torch.clamp(m - D, min=0) ** 2


def loss_mistakes(D: Tensor, Y: Tensor, m: float) -> dict[str, Tensor]:
    """The classic wrong versions of the loss on (D, Y, m), each with its explanation."""
    D, Y = D.detach().double(), Y.double()
    hinge = torch.clamp(m - D, min=0)
    return {
        INVERTED: Y * D ** 2 + (1 - Y) * hinge ** 2,
        "the square is missing on the similar-pair term: it is (1 - Y) D², not (1 - Y) D.":
            (1 - Y) * D + Y * hinge ** 2,
        "the square is missing on the margin term (a plain hinge instead of the squared hinge): it is "
        "Y max(0, m - D)², not Y max(0, m - D).": (1 - Y) * D ** 2 + Y * hinge,
        "both squares are missing: L = (1 - Y) D² + Y max(0, m - D)².": (1 - Y) * D + Y * hinge,
        "the margin is on the wrong term: similar pairs pay D² at every distance (no free zone); only "
        "dissimilar pairs get max(0, m - D)². You gave similar pairs max(0, D - m)².":
            (1 - Y) * torch.clamp(D - m, min=0) ** 2 + Y * hinge ** 2,
        "the hinge is backwards: max(0, m - D) makes a dissimilar pair pay while it is CLOSER than m; "
        "max(0, D - m) pulls far-apart dissimilar pairs back in.":
            (1 - Y) * D ** 2 + Y * torch.clamp(D - m, min=0) ** 2,
        "the margin is compared with D², not with D: the term is max(0, m - D)², not max(0, m - D²)².":
            (1 - Y) * D ** 2 + Y * torch.clamp(m - D ** 2, min=0) ** 2,
        "the hinge compares m with D, not m² with D²: the term is max(0, m - D)², not max(0, m² - D²). "
        "(They agree at D = 0 and beyond the margin, not in between: at D = m/2 yours is 3m²/4 instead of m²/4.)":
            (1 - Y) * D ** 2 + Y * torch.clamp(m ** 2 - D ** 2, min=0),
        "the hinge compares m with D, not m² with D² (and squares the result): the term is max(0, m - D)², "
        "not max(0, m² - D²)².": (1 - Y) * D ** 2 + Y * torch.clamp(m ** 2 - D ** 2, min=0) ** 2,
        "the max(0, ·) is missing: without it, dissimilar pairs farther apart than m are pulled back "
        "towards distance m.": (1 - Y) * D ** 2 + Y * (m - D) ** 2,
        "the factor 1/2 is on one term only. Hadsell et al. put it in front of both terms, "
        "½ [(1 - Y) D² + Y max(0, m - D)²]; with it on one term the pull and the push are out of balance.":
            0.5 * (1 - Y) * D ** 2 + Y * hinge ** 2,
        "the factor 1/2 is on one term only (the margin term). Hadsell et al. put it in front of both terms, "
        "½ [(1 - Y) D² + Y max(0, m - D)²].": (1 - Y) * D ** 2 + 0.5 * Y * hinge ** 2,
    }


IGNORED_MARGIN = ("the margin argument is ignored: your loss gives the same values for margin={a:g} and "
                  "margin={b:g}. Use the margin argument in the hinge, max(0, margin - D)²; do not fix m "
                  "inside the function (or rely on its default value).")
HALF_NOTE = ("   Note (Exercise 1.1): you kept Hadsell et al.'s factor 1/2. That is right too: it halves the "
             "loss and its gradient, and Adam's steps do not depend on that scale. The numbers printed "
             "below are then half of the chapter's.")


def _loss_wrong_at(out: Tensor, right: Tensor, D: Tensor, Y: Tensor, m: float, what: str, hint: str = "") -> None:
    """Raise a Mistake naming the first wrong pair and ITS inputs (D, Y, margin); no-op when all are right."""
    a, e = torch.as_tensor(out).detach().double().cpu(), right.detach().double().cpu()
    D = D.detach()
    if a.shape != e.shape:
        raise Mistake(f"{what} has shape {tuple(a.shape)}, expected {tuple(e.shape)}.", hint)
    bad = ~torch.isclose(a, e, atol=1e-5, rtol=1e-4)
    if not bool(bad.any()):
        return
    k = int(bad.nonzero()[0])
    kind = "same class" if float(Y[k]) == 0 else "different classes"
    raise Mistake(f"{what} differs at index {k}: for D = {float(D[k]):.6g}, Y = {int(Y[k])} ({kind}) and "
                  f"margin = {m:g} you returned {a[k].item():.6g}, expected {e[k].item():.6g} "
                  f"({int(bad.sum())} of {a.numel()} pairs differ).",
                  hint or "Work out (1 - Y) D² + Y max(0, m - D)² by hand for these inputs.")


def _loss_scale(out: Tensor, right: Tensor) -> float | None:
    """1 for the course's loss, 1/2 for Hadsell et al.'s; None if neither matches."""
    for scale in (1.0, 0.5):
        if _close(out, scale * right):
            return scale
    return None


def _probe_contrastive_loss(fn: Callable) -> None:
    D0, Y, m = _loss_probe_inputs()
    D = D0.clone().requires_grad_(True)
    out = fn(D, Y, m)
    _expect_tensor(out, "the loss", "Return the (P,) tensor of per-pair losses.")
    right = _right_loss(D0, Y, m)
    if out.dim() == 0:
        for scale, name in ((1.0, ""), (0.5, " (with the factor 1/2)")):
            if _close(out, scale * right.mean()):
                raise Mistake(f"you returned the mean over pairs{name}, a scalar; return one loss per pair, "
                              "shape (P,). Training takes .mean() itself.")
            if _close(out, scale * right.sum()):
                raise Mistake(f"you returned the sum over pairs{name}, a scalar; return one loss per pair, "
                              "shape (P,), with no reduction (training takes the mean of them).")
        raise Mistake("you returned a scalar; return one loss per pair, shape (P,).")
    expect_shape(out, (len(D0),), "the per-pair loss", "One loss per pair, no reduction.")
    expect(out.is_floating_point(), f"the loss should be a float tensor, got {out.dtype}.")
    expect_grad(out, "the loss", "Compute it from D with tensor operations (torch.clamp, **), not Python floats.")
    scale = _loss_scale(out, right)
    if scale is None:
        other = fn(D0.clone(), Y, 1.0)
        if _close(other, out.detach(), atol=1e-6, rtol=0):
            raise Mistake(IGNORED_MARGIN.format(a=m, b=1.0))
        for explanation, wrong in loss_mistakes(D0, Y, m).items():
            for s, note in ((1.0, ""), (0.5, " (You also kept the factor 1/2, which is fine.)")):
                if _close(out, s * wrong):
                    raise Mistake(f"the per-pair loss: wrong. It looks like {explanation}{note}")
        _loss_wrong_at(out, right, D0, Y, m, "the per-pair loss")
    (grad,) = torch.autograd.grad(out.sum(), D)
    expect(bool(torch.isfinite(grad).all()), "the gradient with respect to D contains NaN or inf.")
    want = scale * (2 * D0.double() * (1 - Y) - 2 * Y * torch.clamp(m - D0.double(), min=0))
    expect_close(grad.double(), want, "dL/dD", atol=1e-5,
                 hint="Use torch.clamp(m - D, min=0) (or torch.relu) so the gradient flows through D.")
    # the margin argument
    m2 = 1.0
    out2 = fn(D0.clone(), Y, m2)
    _expect_tensor(out2, f"with margin={m2:g}, the loss")
    if _close(out2, out.detach(), atol=1e-6, rtol=0):
        raise Mistake(IGNORED_MARGIN.format(a=m, b=m2))
    _loss_wrong_at(out2, scale * _right_loss(D0, Y, m2), D0, Y, m2,
                   f"with margin={m2:g} (right for margin={m:g}), the per-pair loss",
                   "Use the margin argument everywhere m appears; do not fix m inside the function.")
    # the labels: integer labels, and labels in another order
    out3 = fn(D0.clone(), Y.long(), m)
    _expect_tensor(out3, "with integer labels, the loss")
    _loss_wrong_at(out3, scale * right, D0, Y, m, "with integer labels (Y as a LongTensor of 0/1), the per-pair loss",
                   "Your loss changes with integer labels: convert Y with Y.to(D.dtype).")
    perm = torch.tensor([4, 0, 7, 1, 5, 2, 8, 3, 6])
    out4 = fn(D0[perm].clone(), Y[perm].clone(), m)
    _expect_tensor(out4, "with the pairs in another order, the loss")
    if not _close(out4, scale * right[perm]):
        if _close(out4, scale * _right_loss(D0[perm], Y, m)):
            raise Mistake("your loss does not read the labels Y: it gives the right values only when the "
                          "similar pairs come first. Use Y itself, (1 - Y) D² + Y max(0, m - D)², whatever "
                          "the order of the pairs.")
        _loss_wrong_at(out4, scale * right[perm], D0[perm], Y[perm], m,
                       "with the pairs in another order, the per-pair loss",
                       "Each pair's loss must depend only on its own D and Y.")
    # float64 inputs keep their precision
    out5 = fn(D0.double(), Y.double(), m)
    _expect_tensor(out5, "with float64 inputs, the loss")
    expect(out5.dtype == torch.float64,
           f"with float64 distances and labels your loss is {out5.dtype}: compute in float64 (the inputs are "
           "float64).", "Convert the labels to the distances' dtype, Y.to(D.dtype), instead of calling .float().")
    expect_device_agnostic(fn, D0, Y, m, what="your loss")
    if scale == 0.5:
        print(HALF_NOTE)


def contrastive_loss(student: Callable) -> Callable:
    """Exercise 1.1."""
    return run_check("1.1", "contrastive loss", student, _reference_contrastive_loss, _probe_contrastive_loss)


# ----------------------------------------------------------------------------- 1.2

#: The largest D(x, x) accepted for identical embeddings: about 1e-3, i.e. eps up to 1e-6 under the root
#: (float32 rounds sqrt(1e-6) to 1.00000005e-3, hence the 1% slack).
ZERO_DISTANCE_BOUND = 1.01e-3

NAN_AT_ZERO = ("the gradient is NaN where the two embeddings are identical (distance 0): with u the squared "
               "distance, the derivative of sqrt(u) is 1 / (2 sqrt(u)), infinite at u = 0, and autograd "
               "multiplies it by du/dz = 2 (z1 - z2) = 0, giving 0 · inf = NaN. One such pair turns every "
               "weight into NaN at the next optimiser step.")
NAN_HINT = ("Keep sqrt away from 0: torch.sqrt(u + 1e-12) (or u.clamp_min(1e-12).sqrt()). The eps goes under "
            "the root, not after it; torch.where(u > 0, u.sqrt(), 0) does NOT help: the NaN comes from the "
            "branch not taken.")
EPS_AFTER_ROOT = ("the gradient is NaN where the two embeddings are identical, although your D(x, x) = {d0:.3g} is "
                  "not 0 there: you added eps (or clamped) AFTER the square root, sqrt(u) + eps. That moves the value "
                  "of D, not its gradient: the derivative of sqrt(u), 1 / (2 sqrt(u)), is still infinite at u = 0, "
                  "and autograd multiplies it by du/dz = 0, giving NaN. The eps goes under the root, not after it: "
                  "sqrt(u + eps).")
NO_GRADIENT = ("no gradient reaches {name}: your distance does not depend on {name} in the autograd graph (a "
               ".detach(), .data, .item() or NumPy copy of {name}). In a Siamese network both embeddings come "
               "from the same network, and its shared weights must get gradient through both branches, so D "
               "must be differentiable in z1 AND z2.")
NO_GRADIENT_HINT = "Compute D from z1 and z2 themselves, with tensor operations, and do not detach either of them."
WRONG_AXIS = ("you reduced over the wrong axis: dim=0 runs over the pairs, so you mixed different pairs "
              "together. Sum the squared differences over the coordinates of each row, dim=-1 (or dim=1).")


def _reference_euclidean_distance(z1: Tensor, z2: Tensor) -> Tensor:
    return contrastive.euclidean_distance(z1, z2)


def _distance_probe_inputs(p: int, dim: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(p, dim, generator=g), torch.randn(p, dim, generator=g)
    b[0], b[3] = a[0], a[3]  # two identical pairs: distance exactly 0
    return a, b


def _probe_euclidean_distance(fn: Callable) -> None:
    a, b = _distance_probe_inputs(5, 3, 3)
    z1, z2 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    out = fn(z1, z2)
    _expect_tensor(out, "the distance", "Return the (P,) tensor of distances, one per row.")
    if out.dim() == 0:
        raise Mistake("you returned a scalar: you reduced over every axis. Return one distance per pair (row), "
                      "shape (P,): sum over the last dimension only, dim=-1.")
    if tuple(out.shape) == (3,):
        raise Mistake(WRONG_AXIS + " (Your result has one value per coordinate, shape (3,), for 5 pairs.)")
    if tuple(out.shape) == (5, 1):
        raise Mistake("the distance has shape (5, 1); return shape (P,) = (5,): drop keepdim=True.")
    expect_shape(out, (5,), "the distance", "One distance per pair (row): reduce over the last dimension only.")
    expect_grad(out, "the distance")
    diff = (a - b).double()
    true = diff.pow(2).sum(1).sqrt()
    zero, rows = out.detach().double()[[0, 3]], [1, 2, 4]
    if float(zero.max()) > ZERO_DISTANCE_BOUND:
        if _close(out.detach()[rows], true[rows], rtol=0.05, atol=0.05):
            raise Mistake(f"for identical embeddings your distance is {float(zero.max()):.3g}, not ≈ 0: your eps "
                          f"is too large. The check accepts D(x, x) up to about 1e-3 (eps up to 1e-6 under the "
                          "root; 1e-12 moves D by at most 1e-6).")
    diagnose(out[rows], true[rows], "the distance (of pairs at a positive distance)", {
        "you returned the SQUARED distance D²; take the square root (the margin compares with D).":
            diff.pow(2).sum(1)[rows],
        "you returned the L1 (Manhattan) distance sum |z1 - z2|; the contrastive loss uses the Euclidean "
        "distance sqrt(sum (z1 - z2)²).": diff.abs().sum(1)[rows],
        "you averaged the squared differences over the coordinates (mean) instead of summing them.":
            diff.pow(2).mean(1).sqrt()[rows],
    }, atol=1e-4, rtol=1e-4)
    expect(float(zero.max()) <= ZERO_DISTANCE_BOUND,
           f"for identical embeddings your distance is {float(zero.max()):.3g}, not ≈ 0 (the check accepts up to "
           "about 1e-3).")
    gz1, gz2 = torch.autograd.grad(out.sum(), (z1, z2), allow_unused=True)
    for grad, name in ((gz1, "z1"), (gz2, "z2")):
        if grad is None:
            raise Mistake(NO_GRADIENT.format(name=name), NO_GRADIENT_HINT)
    if not (torch.isfinite(gz1).all() and torch.isfinite(gz2).all()):
        at_zero = out.detach().double()[[0, 3]]
        if float(at_zero.min()) > 0:  # D(x, x) moved off 0, yet the gradient there is NaN: eps after the root
            raise Mistake(EPS_AFTER_ROOT.format(d0=float(at_zero.min())), NAN_HINT)
        raise Mistake(NAN_AT_ZERO, NAN_HINT)
    z1b, z2b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    (gsq,) = torch.autograd.grad((fn(z1b, z2b) ** 2).sum(), z1b)
    if not torch.isfinite(gsq).all():
        raise Mistake("the gradient of D² is NaN at distance 0 (the contrastive loss squares D): "
                      + NAN_AT_ZERO, NAN_HINT)
    want = diff / true.clamp_min(1e-12).unsqueeze(1)
    expect_close(gz1.double()[rows], want[rows], "dD/dz1 for pairs at a positive distance", atol=1e-4, rtol=1e-3)
    expect_close(gz2.double()[rows], -want[rows], "dD/dz2 for pairs at a positive distance", atol=1e-4, rtol=1e-3)
    # as many pairs as coordinates: reducing over the wrong axis gives the right shape
    sa, sb = _distance_probe_inputs(4, 4, 5)
    out_sq = fn(sa.clone(), sb.clone())
    _expect_tensor(out_sq, "with 4 pairs of 4-dimensional embeddings, the distance")
    sdiff = (sa - sb).double()
    diagnose(out_sq, sdiff.pow(2).sum(1).sqrt(), "with 4 pairs of 4-dimensional embeddings, the distance", {
        WRONG_AXIS: sdiff.pow(2).sum(0).sqrt(),
    }, atol=2e-3, rtol=1e-4)
    # float64 inputs keep their precision
    out64 = fn(a.double(), b.double())
    _expect_tensor(out64, "with float64 embeddings, the distance")
    expect(out64.dtype == torch.float64,
           f"with float64 embeddings your distance is {out64.dtype}: compute in float64 (the inputs are float64).",
           "Do not call .float(); torch.sqrt(u + 1e-12) keeps the inputs' dtype.")
    expect_device_agnostic(fn, a, b, what="your distance")


def euclidean_distance(student: Callable) -> Callable:
    """Exercise 1.2."""
    return run_check("1.2", "distance safe at zero", student, _reference_euclidean_distance,
                     _probe_euclidean_distance)


# ----------------------------------------------------------------------------- 1.3

N_PROBE_CLASSES, N_PROBE_EXAMPLES, PROBE_PAIRS, PROBE_SEEDS = 7, 6, 200, (0, 1, 2, 3, 4)


def _reference_sample_pairs(classes: ClassSet, n_pairs: int, generator: torch.Generator | None = None):
    return siamese.sample_pairs(classes, n_pairs, generator)


def _pair_probe_classes() -> ClassSet:
    """7 classes x 6 examples of (1, 4, 4) uint8; pixel (0,0) = class id, pixel (0,1) = example id.

    Stored as a list of tensors (as the real data is), so ``classes.examples(c)`` is the way in.
    """
    xs = []
    g = torch.Generator().manual_seed(0)
    for c in range(N_PROBE_CLASSES):
        x = torch.randint(0, 256, (N_PROBE_EXAMPLES, 1, 4, 4), generator=g, dtype=torch.uint8)
        x[:, 0, 0, 0] = c
        x[:, 0, 0, 1] = torch.arange(N_PROBE_EXAMPLES, dtype=torch.uint8)
        xs.append(x)
    names = [f"a{c % 2}/c{c}" for c in range(N_PROBE_CLASSES)]
    return ClassSet(xs, names, [n.split("/")[0] for n in names], "probe classes")


def _ids(x: Tensor) -> tuple[Tensor, Tensor]:
    v = (x[:, 0, 0, :2].double() * 255).round().long()
    return v[:, 0], v[:, 1]


def _check_pair_batch(out, cs: ClassSet, p: int, what: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Structure, types and content of one batch; returns (class1, example1, class2, example2, y, same)."""
    if not (isinstance(out, (tuple, list)) and len(out) == 3):
        raise Mistake(f"{what}: return a tuple (x1, x2, Y); your function returned {describe(out)}.")
    x1, x2, y = out
    for t, name in ((x1, "x1"), (x2, "x2"), (y, "Y")):
        _expect_tensor(t, f"{what}: {name}")
    item = tuple(cs.examples(0).shape[1:])
    expect_shape(x1, (p, *item), f"{what}: x1", "n_pairs images, each (1, H, W).")
    expect_shape(x2, (p, *item), f"{what}: x2", "n_pairs images, each (1, H, W).")
    expect_shape(y, (p,), f"{what}: Y", "One label per pair.")
    for t, name in ((x1, "x1"), (x2, "x2")):
        expect(t.is_floating_point(), f"{what}: the images {name} should be float in [0, 1]; got {t.dtype}.",
               "Convert uint8 images with .float() / 255, as sample_episode does.")
        expect(t.dtype == torch.float32,
               f"{what}: the images {name} are {t.dtype}; the network's weights are float32, so it would fail "
               "on them.", "Use .float() / 255 (float32), not .double().")
        expect(float(t.max()) <= 1.0 and float(t.min()) >= 0.0,
               f"{what}: the images {name} should be in [0, 1]; yours run from {float(t.min()):g} to "
               f"{float(t.max()):g}.", "Divide the uint8 pixels by 255 (and do not normalise them further).")
    expect(y.is_floating_point(),
           f"{what}: Y should be a float tensor of 0.0 / 1.0 (the loss multiplies by it); you returned integer or "
           f"bool labels ({y.dtype}).", "torch.zeros(...) / torch.ones(...) are float by default.")
    values = sorted(set(y.unique().tolist()))
    expect(set(values) <= {0.0, 1.0}, f"{what}: Y must hold 0 (same class) and 1 (different); got {values[:5]}.")
    c1, e1 = _ids(x1)
    c2, e2 = _ids(x2)
    for x, c, e, name in ((x1, c1, e1, "x1"), (x2, c2, e2, "x2")):
        valid = (c >= 0) & (c < len(cs)) & (e >= 0) & (e < N_PROBE_EXAMPLES)
        ok = bool(valid.all()) and all(torch.equal(x[k], cs.examples(int(c[k]))[int(e[k])].float() / 255)
                                       for k in range(p))
        expect(ok, f"{what}: some images in {name} are not images of the class set (scaled to [0, 1]); did you "
               "transpose, crop, flip or mix them?", "Take whole images, classes.examples(c)[i], unchanged.")
    return c1, e1, c2, e2, y, c1 == c2


def _probe_sample_pairs(fn: Callable) -> None:
    cs = _pair_probe_classes()
    before = [t.clone() for t in cs.x]
    p, half = PROBE_PAIRS, PROBE_PAIRS // 2
    outs = {s: fn(cs, p, torch.Generator().manual_seed(s)) for s in PROBE_SEEDS[:1]}
    _expect_class_set_unchanged(cs, before)
    c1, e1, c2, e2, y, same = _check_pair_batch(outs[0], cs, p, "the pairs")
    if bool((same == (y == 1)).all()):
        raise Mistake("you labelled same-class pairs Y = 1 and different-class pairs Y = 0: that is the seed "
                      "article's convention. Here Y = 0 means same class (similar), Y = 1 different.")
    n_similar = int((y == 0).sum())
    expect(n_similar == half,
           f"the pairs are not balanced: {n_similar} of {p} have Y = 0; exactly half must be same-class pairs.",
           "Make n_pairs // 2 similar pairs and n_pairs // 2 dissimilar pairs.")
    expect(bool(same[y == 0].all()),
           f"{int((~same[y == 0]).sum())} pair(s) labelled Y = 0 (same class) hold two different classes.")
    expect(bool((~same[y == 1]).all()),
           f"{int(same[y == 1].sum())} pair(s) labelled Y = 1 (different classes) hold the same class twice.",
           "Draw the second class among the OTHER classes, e.g. (c1 + 1 + randint(C - 1)) % C.")
    identical = (e1 == e2) & same
    expect(not bool(identical.any()),
           f"{int(identical.sum())} similar pair(s) are one image paired with itself: a positive pair must be two "
           "different drawings of the class (an image with itself only teaches D(x, x) = 0).",
           "Draw two DISTINCT example indices, e.g. with torch.randperm(M)[:2].")
    # the generator: same seed, same pairs; the generator advances; None works
    again = fn(cs, p, torch.Generator().manual_seed(0))
    _check_pair_batch(again, cs, p, "a second call with the same seed")
    expect(all(torch.equal(a, b) for a, b in zip(again, outs[0])),
           "two calls with generators seeded alike gave different pairs: your sampler does not (only) use the "
           "generator it is given.", "Pass generator=generator to every torch.randint / torch.randperm call "
           "(and do not use Python's random module).")
    g = torch.Generator().manual_seed(0)
    first, second = fn(cs, p, g), fn(cs, p, g)
    expect(not torch.equal(first[0], second[0]),
           "two calls with the SAME generator gave the same pairs: every training step would see the same batch. "
           "Draw from the generator you are given, do not re-seed it or copy its state.")
    _check_pair_batch(fn(cs, 2, None), cs, 2, "with n_pairs=2 and generator=None")
    _check_odd_n_pairs(fn, cs)
    for s in PROBE_SEEDS[1:]:
        outs[s] = fn(cs, p, torch.Generator().manual_seed(s))
    batches = {s: _check_pair_batch(o, cs, p, f"with seed {s}, the pairs") for s, o in outs.items()}
    _check_randomness(batches, half)
    _expect_class_set_unchanged(cs, before)


ODD_PAIRS = 9


def _check_odd_n_pairs(fn: Callable, cs: ClassSet) -> None:
    """An odd n_pairs: n_pairs // 2 of each kind (n_pairs - 1 pairs), or a ValueError; never more, never unbalanced."""
    n, half = ODD_PAIRS, ODD_PAIRS // 2
    try:
        out = fn(cs, n, torch.Generator().manual_seed(n))
    except ValueError:
        return  # refusing an odd n_pairs is allowed (the reference does)
    what = f"with an odd n_pairs={n}"
    if isinstance(out, (tuple, list)) and len(out) == 3 and isinstance(out[2], Tensor) and out[2].dim() == 1:
        y = out[2]
        if len(y) != 2 * half or int((y == 0).sum()) != half:
            n0 = int((y == 0).sum())
            raise Mistake(f"{what} your sampler returned {len(y)} pairs ({n0} with Y = 0, {len(y) - n0} with Y = 1); "
                          f"it should return n_pairs // 2 = {half} of each kind, {2 * half} pairs in all (or raise a "
                          "ValueError): never more pairs than asked for, and never an unbalanced batch.",
                          "Compute half = n_pairs // 2 once and draw half pairs of each kind.")
    c1, e1, c2, e2, y, same = _check_pair_batch(out, cs, 2 * half, what + ", the pairs")
    expect(bool(same[y == 0].all()) and bool((~same[y == 1]).all()),
           f"{what}, some pairs labelled Y = 0 hold two classes or pairs labelled Y = 1 hold one class twice.")


def _expect_class_set_unchanged(cs: ClassSet, before: list[Tensor]) -> None:
    expect(len(cs.x) == len(before) and all(isinstance(a, Tensor) and a.dtype == b.dtype and torch.equal(a, b)
                                            for a, b in zip(cs.x, before)),
           "your sampler changed the class set's images in place: build new tensors (.float() / 255 makes a copy).")


def _pair_key(c: Tensor, e: Tensor, c_: Tensor, e_: Tensor) -> list[tuple]:
    """Pairs as unordered sets of (class, example), so that either order counts as the same pair."""
    return [tuple(sorted([(int(a), int(b)), (int(a_), int(b_))])) for a, b, a_, b_ in zip(c, e, c_, e_)]


def _check_randomness(batches: dict, half: int) -> None:
    """Each random choice on its own: classes, examples, their combinations, repeats, over several seeds."""
    C, M = N_PROBE_CLASSES, N_PROBE_EXAMPLES
    pos, neg = {}, {}
    for s, (c1, e1, c2, e2, y, _) in batches.items():
        i, j = (y == 0).nonzero().squeeze(1), (y == 1).nonzero().squeeze(1)
        pos[s] = (c1[i], e1[i], c2[i], e2[i])
        neg[s] = (c1[j], e1[j], c2[j], e2[j])
    seeds = list(batches)
    n = len(seeds)
    # the classes
    for name, part in (("same-class", pos), ("different-class", neg)):
        same_classes = all(torch.equal(part[s][0], part[seeds[0]][0]) and torch.equal(part[s][2], part[seeds[0]][2])
                           for s in seeds)
        expect(not same_classes, f"the classes of your {name} pairs are the same for every seed: they are not "
               "drawn at random.", "Draw each pair's class(es) with torch.randint(..., generator=generator).")
        in_batch = min(len(set(part[s][0].tolist()) | set(part[s][2].tolist())) for s in seeds)
        expect(in_batch >= C - 2, f"one batch of {half} {name} pairs uses only {in_batch} of the {C} classes: draw "
               "the class(es) of every pair at random, not once per batch.")
        # a same-class pair has one class (count it once); a different-class pair has two
        pooled = torch.cat([part[s][0] if part is pos else torch.cat([part[s][0], part[s][2]]) for s in seeds])
        counts = torch.bincount(pooled, minlength=C).double()
        expect(bool((counts > 0).all()), f"over {n} seeds your {name} pairs never used some classes: draw classes "
               "uniformly at random among all len(classes).")
        chi2 = float(((counts - counts.mean()) ** 2 / counts.mean()).sum())
        expect(chi2 < 40.0, f"your {name} pairs do not draw the classes uniformly: over {n} seeds the {C} classes "
               f"appear {counts.long().tolist()} times (a uniform draw gives about {counts.mean():.0f} each).",
               "Every class must be equally likely: torch.randint(len(classes), ...).")
    # the examples
    same_examples = all(torch.equal(pos[s][1], pos[seeds[0]][1]) and torch.equal(neg[s][1], neg[seeds[0]][1])
                        for s in seeds)
    expect(not same_examples, "the examples of your pairs are the same for every seed (only the classes change): "
           "draw the examples at random too.")
    pooled = torch.cat([torch.cat([pos[s][1], pos[s][3], neg[s][1], neg[s][3]]) for s in seeds])
    counts = torch.bincount(pooled, minlength=M)
    expect(bool((counts > 0).all()), f"over {n} seeds your sampler never used some examples of a class: draw "
           "the examples at random among all of the class's examples.")
    # combinations: the second choice must not be a fixed function of the first
    combos = {tuple(sorted((int(a), int(b)))) for s in seeds for a, b in zip(pos[s][1], pos[s][3])}
    possible = M * (M - 1) // 2
    expect(len(combos) >= possible - 3,
           f"your same-class pairs use only {len(combos)} of the {possible} possible pairs of examples (over {n} "
           "seeds): the second example is not drawn independently of the first (e.g. always the next one, "
           "i + 1).", "Draw two distinct indices at random, e.g. torch.randperm(M, generator=generator)[:2].")
    combos = {tuple(sorted((int(a), int(b)))) for s in seeds for a, b in zip(neg[s][0], neg[s][2])}
    possible = C * (C - 1) // 2
    expect(len(combos) >= possible - 3,
           f"your different-class pairs use only {len(combos)} of the {possible} possible pairs of classes (over "
           f"{n} seeds): the second class is not drawn independently of the first (e.g. always the next class).",
           "Draw the second class at random among the other classes, e.g. (c1 + 1 + randint(C - 1)) % C.")
    # different-class pairs: the second image's example index must not follow from the first's
    e_pairs = [(int(a), int(b)) for s in seeds for a, b in zip(neg[s][1], neg[s][3])]
    shared = sum(a == b for a, b in e_pairs)
    expect(shared <= 0.4 * len(e_pairs),
           f"in {shared} of your {len(e_pairs)} different-class pairs (over {n} seeds) the two images share one "
           f"example index (the same i in both classes): the second example is not drawn independently of the "
           f"first (independent draws share an index about 1 time in {M}: some {len(e_pairs) / M:.0f} of these "
           f"{len(e_pairs)}).",
           "Draw each image's example index on its own: one torch.randint for the first class's example, another "
           "for the second class's.")
    combos = set(e_pairs)
    expect(len(combos) >= M * M - 3,
           f"your different-class pairs use only {len(combos)} of the {M * M} possible (first, second) example "
           f"indices (over {n} seeds): the second example is not drawn independently of the first (e.g. always "
           "the next index, i + 1).", "Draw each image's example index on its own, with its own torch.randint.")
    # repeated pairs within one batch
    k_pos = C * M * (M - 1) // 2
    expected = k_pos * (1 - (1 - 1 / k_pos) ** half)
    for s in seeds:
        distinct = len(set(_pair_key(*pos[s])))
        expect(distinct >= 0.6 * expected,
               f"your batch repeats pairs: only {distinct} of its {half} same-class pairs are distinct (independent "
               f"random draws give about {expected:.0f} here, with {k_pos} possible pairs).",
               "Draw every pair afresh; do not repeat or tile a few pairs to fill the batch.")
        distinct = len(set(_pair_key(*neg[s])))
        expect(distinct >= 0.8 * half,
               f"your batch repeats pairs: only {distinct} of its {half} different-class pairs are distinct "
               "(independent random draws almost never repeat one here).",
               "Draw every pair afresh; do not repeat or tile a few pairs to fill the batch.")


def sample_pairs(student: Callable) -> Callable:
    """Exercise 1.3."""
    return run_check("1.3", "balanced pair sampler", student, _reference_sample_pairs, _probe_sample_pairs)


# ----------------------------------------------------------------------------- 1.4

def _reference_classify(score_pairs: Callable, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                        n_way: int) -> Tensor:
    return siamese.classify_by_verification(score_pairs, support_x, support_y, query_x, n_way, "max")


def _same_shapes(a, b) -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape:
        raise ValueError("score_pairs(a, b) takes two batches of the SAME shape: pair i is (a[i], b[i]). "
                         f"You passed shapes {tuple(getattr(a, 'shape', ()))} and {tuple(getattr(b, 'shape', ()))}.")


def _toy_score(a: Tensor, b: Tensor) -> Tensor:
    """Similarity of paired rows: minus the Euclidean distance (higher = more alike)."""
    _same_shapes(a, b)
    return -(a - b).pow(2).sum(-1).sqrt()


def _dot_score(a: Tensor, b: Tensor) -> Tensor:
    """Another similarity of paired rows: the dot product (higher = more alike)."""
    _same_shapes(a, b)
    return (a * b).sum(-1)


def _table(score: Callable, rows: Tensor, cols: Tensor) -> Tensor:
    """s[q, i] = score(rows[q], cols[i])."""
    nq, ns = len(rows), len(cols)
    return score(rows.repeat_interleave(ns, 0), cols.repeat(nq, 1)).reshape(nq, ns)


def _layout(score: Callable, rows: Tensor, cols: Tensor, rows_by: str, cols_by: str) -> Tensor:
    """The (NQ, NS) table a student gets by tiling rows and columns each with ``repeat`` or ``repeat_interleave``
    (the right layout is rows by repeat_interleave, columns by repeat) and reshaping to (NQ, NS)."""
    nq, ns = len(rows), len(cols)
    a = rows.repeat_interleave(ns, 0) if rows_by == "interleave" else rows.repeat(ns, 1)
    b = cols.repeat_interleave(nq, 0) if cols_by == "interleave" else cols.repeat(nq, 1)
    return score(a, b).reshape(nq, ns)


BOTH_REPEAT = ("your pairs are misaligned: with .repeat on both sides, pair i is (query i mod NQ, support i mod NS), "
               "so most (query, support) combinations are never scored and others are scored many times. Repeat each "
               "query NS times in a row (repeat_interleave) and the whole support set NQ times (repeat), then reshape "
               "to (NQ, NS).")
BOTH_INTERLEAVE = ("your pairs are misaligned: with repeat_interleave on both sides, pair i is (query i // NS, support "
                   "i // NQ), so most (query, support) combinations are never scored. Repeat each query NS times in a "
                   "row (repeat_interleave) and the whole support set NQ times (repeat), then reshape to (NQ, NS).")
SORTED = ("you assumed the support set is sorted by class ({how}); it comes in any order: use support_y to find "
          "each class's columns, e.g. s[:, support_y == c].")


def _best(s: Tensor, labels: Tensor, n: int, how: str = "max") -> Tensor:
    cols = [s[:, labels == c] for c in range(n)]
    if how == "max":
        return torch.stack([t.max(1).values for t in cols], 1)
    if how == "min":
        return torch.stack([t.min(1).values for t in cols], 1)
    return torch.stack([t.mean(1) for t in cols], 1)


def _probe_case(fn: Callable, score: Callable, sx: Tensor, sy: Tensor, qx: Tensor, n: int, what: str) -> Tensor:
    out = fn(score, sx, sy, qx, n)
    _expect_tensor(out, f"the class scores ({what})", "Return the (NQ, N) tensor of class scores.")
    nq, ns, k = len(qx), len(sx), len(sx) // n
    if out.shape == (nq,) and not out.is_floating_point():
        raise Mistake(f"you returned labels (NQ,) ({what}); return the class scores, shape (NQ, N): "
                      "evaluate() takes their argmax.")
    if out.shape == (nq,):
        raise Mistake(f"you returned one score per query, shape (NQ,) ({what}): score each query against EVERY "
                      "support example (NQ · NS pairs) and return the class scores, shape (NQ, N).")
    if out.shape != (nq, n):
        if nq != ns and out.shape == (ns, n):
            raise Mistake(f"the class scores ({what}) have one row per SUPPORT example, shape {tuple(out.shape)}; "
                          f"there must be one row per query, (NQ, N) = {(nq, n)}. You scored the wrong set: score "
                          "each query against the support set.")
        if ns != n and out.shape == (nq, ns):
            raise Mistake(f"you returned the (NQ, NS) table of pair scores ({what}); reduce each class's columns "
                          "to one score, giving (NQ, N): s[:, support_y == c].max(dim=1).")
        if k > 1 and k != nq and out.shape == (k, n):
            raise Mistake(f"the class scores ({what}) have shape {tuple(out.shape)}: you took the max over the "
                          "queries (dim=0); take it over each class's support columns, dim=1.")
    expect_shape(out, (nq, n), f"the class scores ({what})", "One row per query, one column per class.")
    return out


def _probe_classify(fn: Callable) -> None:
    g = torch.Generator().manual_seed(5)
    # K = 2, support shuffled, as many queries as support examples (so that scoring the wrong set still gives
    # the right shape, and the diagnosis can name it): 3 classes, 6 queries
    sx = torch.randn(6, 2, generator=g) * 3
    sy = torch.tensor([1, 0, 2, 0, 2, 1])
    qx = sx[[0, 1, 2, 3, 4, 5]] + 0.3 * torch.randn(6, 2, generator=g)
    out = _probe_case(fn, _toy_score, sx, sy, qx, 3, "2-shot")
    s = _table(_toy_score, qx, sx)
    diagnose(out, _best(s, sy, 3), "the 2-shot class scores (support not sorted by class)", {
        "you averaged the scores of each class's support examples; this exercise takes the best match "
        "(max), Koch et al.'s rule. (The mean is a fine variant: reduce='mean' in course_utils.siamese.)":
            _best(s, sy, 3, "mean"),
        "you took the WORST match of each class (min); take the best match (max).": _best(s, sy, 3, "min"),
        "you treated the score as a distance: a HIGHER score means MORE alike, so keep it as it is "
        "(don't negate it).": -_best(s, sy, 3, "min"),
        SORTED.format(how="class-major, a reshape to (NQ, N, K)"): s.reshape(6, 3, 2).max(-1).values,
        SORTED.format(how="shot-major, a reshape to (NQ, K, N), as if it held one example of every class, then "
                      "the next"): s.reshape(6, 2, 3).max(1).values,
        BOTH_REPEAT: _best(_layout(_toy_score, qx, sx, "repeat", "repeat"), sy, 3),
        BOTH_INTERLEAVE: _best(_layout(_toy_score, qx, sx, "interleave", "interleave"), sy, 3),
        "you scored the queries against the QUERIES (the wrong set): compare each query with the support "
        "examples, score_pairs(query, support).": _best(_table(_toy_score, qx, qx), sy, 3),
        "you scored the support set against ITSELF (the wrong set): the rows must be the queries, "
        "score_pairs(query, support).": _best(_table(_toy_score, sx, sx), sy, 3),
        "your score table is transposed, or your pairs are misaligned: s[q, i] must be the score of query q "
        "against support example i (repeat_interleave the queries, repeat the support set, then reshape to "
        "(NQ, NS)).": _best(s.t(), sy, 3),
        "you applied a softmax over the classes; return the scores themselves (evaluate() takes the argmax).":
            _best(s, sy, 3).softmax(1),
    }, hint="Score every (query, support) pair, then for class c take the max over s[:, support_y == c].")
    # K = 1, class-major support: 3 classes, 4 queries
    sx1 = torch.randn(3, 2, generator=g) * 3
    sy1 = torch.tensor([0, 1, 2])
    qx1 = sx1[[2, 0, 1, 2]] + 0.3 * torch.randn(4, 2, generator=g)
    out1 = _probe_case(fn, _toy_score, sx1, sy1, qx1, 3, "1-shot, 4 queries")
    s1 = _table(_toy_score, qx1, sx1)
    diagnose(out1, s1, "the 1-shot class scores", {
        "you treated the score as a distance: a HIGHER score means MORE alike, so keep it as it is "
        "(don't negate it).": -s1,
        "your pairs are misaligned: score query q against every support example (repeat_interleave the "
        "queries, repeat the support set), then reshape to (NQ, NS).": s1.t().reshape(4, 3),
        BOTH_REPEAT: _layout(_toy_score, qx1, sx1, "repeat", "repeat"),
        BOTH_INTERLEAVE: _layout(_toy_score, qx1, sx1, "interleave", "interleave"),
    })
    # K = 2, 5 queries, another similarity: score_pairs must be used (and NQ != NS tells the sets apart)
    qx3 = sx[[3, 0, 5, 2, 4]] + 0.3 * torch.randn(5, 2, generator=g)
    out3 = _probe_case(fn, _dot_score, sx, sy, qx3, 3, "2-shot, 5 queries, score_pairs = dot product")
    diagnose(out3, _best(_table(_dot_score, qx3, sx), sy, 3),
             "the class scores with another score_pairs (the dot product)", {
                 "you did not use score_pairs: your scores are minus the Euclidean distance whatever score_pairs "
                 "computes. Call score_pairs on the (query, support) pairs; it is the network's similarity.":
                     _best(-torch.cdist(qx3, sx), sy, 3),
             }, hint="Score every (query, support) pair with score_pairs, then take each class's max.")
    expect_device_agnostic(fn, _toy_score, sx, sy, qx3, 3, what="your classifier")


def classify_by_verification(student: Callable) -> Callable:
    """Exercise 1.4."""
    return run_check("1.4", "classification by verification", student, _reference_classify, _probe_classify)
