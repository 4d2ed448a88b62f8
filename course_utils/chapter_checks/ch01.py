"""Checks for chapter 01 (contrastive loss, Siamese networks).

1.1 the contrastive loss · 1.2 a Euclidean distance that is safe at zero · 1.3 the balanced pair
sampler · 1.4 one-shot classification by verification. Each probe runs the student's function
on small fixed inputs and names the chapter's classic mistakes: inverted labels (the seed
article's), a missing square, the margin on the wrong term, a hinge on squared distances, an ignored
margin argument, NaN gradients at zero distance, unbalanced or mislabelled pairs, a support set
assumed sorted by class. When the loss is wrong in no known way, the message shows the inputs
(d, y, margin) of the first wrong pair.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .. import contrastive, siamese
from ..checks import Mistake, diagnose, expect, expect_close, expect_grad, expect_shape, expect_type, run_check
from ..episodes import ClassSet

__all__ = ["contrastive_loss", "euclidean_distance", "sample_pairs", "classify_by_verification", "EXERCISES"]

EXERCISES = ["1.1", "1.2", "1.3", "1.4"]

INVERTED = ("you used y=1 for similar pairs: that pulls different classes together and pushes "
            "same-class pairs apart — the seed article's mistake. In this course (and in Hadsell et al. "
            "2006) y = 0 means same class: L = (1 - y) D² + y max(0, m - D)². (Putting the margin "
            "term on the same-class pairs is the same mistake.)")


# ----------------------------------------------------------------------------- 1.1

def _reference_contrastive_loss(d: Tensor, y: Tensor, margin: float = 1.0) -> Tensor:
    return contrastive.contrastive_loss(d, y, margin)


def _loss_probe_inputs() -> tuple[Tensor, Tensor, float]:
    d = torch.tensor([0.0, 0.4, 1.1, 2.3, 0.0, 0.6, 1.3, 2.6, 1.9])
    y = torch.tensor([0., 0., 0., 0., 1., 1., 1., 1., 1.])
    return d, y, 2.0


def loss_mistakes(d: Tensor, y: Tensor, m: float) -> dict[str, Tensor]:
    """The classic wrong versions of the loss on (d, y, m), each with its explanation."""
    hinge = torch.clamp(m - d, min=0)
    right = (1 - y) * d ** 2 + y * hinge ** 2
    return {
        INVERTED: y * d ** 2 + (1 - y) * hinge ** 2,
        "the square is missing on the similar-pair term: it is (1 - y) D², not (1 - y) D.":
            (1 - y) * d + y * hinge ** 2,
        "the square is missing on the margin term: it is y max(0, m - D)², not y max(0, m - D).":
            (1 - y) * d ** 2 + y * hinge,
        "both squares are missing: L = (1 - y) D² + y max(0, m - D)².": (1 - y) * d + y * hinge,
        "the margin is on the wrong term: similar pairs pay D² at every distance (no free zone); only "
        "dissimilar pairs get max(0, m - D)². You gave similar pairs max(0, D - m)².":
            (1 - y) * torch.clamp(d - m, min=0) ** 2 + y * hinge ** 2,
        "the hinge is backwards: max(0, m - D) makes a dissimilar pair pay while it is CLOSER than m; "
        "max(0, D - m) pulls far-apart dissimilar pairs back in.":
            (1 - y) * d ** 2 + y * torch.clamp(d - m, min=0) ** 2,
        "the margin is compared with D², not with D: the term is max(0, m - D)², not max(0, m - D²)².":
            (1 - y) * d ** 2 + y * torch.clamp(m - d ** 2, min=0) ** 2,
        "the hinge compares m with D, not m² with D²: the term is max(0, m - D)², not max(0, m² - D²). "
        "(They agree at D = 0 and beyond the margin, not in between: at D = m/2 yours is 3m²/4 instead of m²/4.)":
            (1 - y) * d ** 2 + y * torch.clamp(m ** 2 - d ** 2, min=0),
        "the hinge compares m with D, not m² with D² (and squares the result): the term is max(0, m - D)², "
        "not max(0, m² - D²)².": (1 - y) * d ** 2 + y * torch.clamp(m ** 2 - d ** 2, min=0) ** 2,
        "the max(0, ·) is missing: without it, dissimilar pairs farther apart than m are pulled back "
        "towards distance m.": (1 - y) * d ** 2 + y * (m - d) ** 2,
        "you kept Hadsell et al.'s factor 1/2; this course uses L = (1 - y) D² + y max(0, m - D)² "
        "without it (the seed article's form). Drop the 1/2.": 0.5 * right,
    }


IGNORED_MARGIN = ("the margin argument is ignored: your loss gives the same values for margin={a:g} and "
                  "margin={b:g}. Use the margin argument in the hinge, max(0, margin - D)²; do not fix m "
                  "inside the function (or rely on its default value).")


def _loss_wrong_at(out: Tensor, right: Tensor, d: Tensor, y: Tensor, m: float, what: str, hint: str = "") -> None:
    """Raise a Mistake naming the first wrong pair and ITS inputs (d, y, margin); no-op when all are right."""
    a, e = torch.as_tensor(out).detach().double().cpu(), right.detach().double().cpu()
    d = d.detach()
    if a.shape != e.shape:
        raise Mistake(f"{what} has shape {tuple(a.shape)}, expected {tuple(e.shape)}.", hint)
    bad = ~torch.isclose(a, e, atol=1e-5, rtol=1e-4)
    if not bool(bad.any()):
        return
    k = int(bad.nonzero()[0])
    kind = "same class" if float(y[k]) == 0 else "different classes"
    raise Mistake(f"{what} differs at index {k}: for d = {float(d[k]):.6g}, y = {int(y[k])} ({kind}) and "
                  f"margin = {m:g} you returned {a[k].item():.6g}, expected {e[k].item():.6g} "
                  f"({int(bad.sum())} of {a.numel()} pairs differ).",
                  hint or "Work out (1 - y) D² + y max(0, m - D)² by hand for these inputs.")


def _probe_contrastive_loss(fn: Callable) -> None:
    d, y, m = _loss_probe_inputs()
    d = d.clone().requires_grad_(True)
    out = fn(d, y, m)
    expect_type(out, Tensor, "the loss")
    right = (1 - y) * d.detach() ** 2 + y * torch.clamp(m - d.detach(), min=0) ** 2
    if out.dim() == 0:
        if torch.isclose(out.detach().double(), right.mean().double(), atol=1e-5):
            raise Mistake("you returned the mean over pairs (a scalar); return one loss per pair, shape (P,). "
                          "Training takes .mean() itself.")
        raise Mistake("you returned a scalar; return one loss per pair, shape (P,).")
    expect_shape(out, (len(d),), "the per-pair loss", "One loss per pair, no reduction.")
    expect(out.is_floating_point(), f"the loss should be a float tensor, got {out.dtype}.")
    expect_grad(out, "the loss", "Compute it from d with tensor operations (torch.clamp, **), not Python floats.")
    other = fn(d.detach(), y, 1.0)
    if (isinstance(other, Tensor) and other.shape == out.shape
            and torch.allclose(other.detach().double(), out.detach().double(), atol=1e-6)):
        raise Mistake(IGNORED_MARGIN.format(a=m, b=1.0))
    if not torch.allclose(out.detach().double(), right.double(), atol=1e-5, rtol=1e-4):
        for explanation, wrong in loss_mistakes(d.detach(), y, m).items():
            if torch.allclose(out.detach().double(), wrong.double(), atol=1e-5, rtol=1e-4):
                raise Mistake(f"the per-pair loss: wrong. It looks like {explanation}")
        _loss_wrong_at(out, right, d, y, m, "the per-pair loss")
    (grad,) = torch.autograd.grad(out.sum(), d)
    expect(bool(torch.isfinite(grad).all()), "the gradient with respect to d contains NaN or inf.")
    want = 2 * d.detach() * (1 - y) - 2 * y * torch.clamp(m - d.detach(), min=0)
    expect_close(grad, want, "dL/dD", atol=1e-5,
                 hint="Use torch.clamp(m - d, min=0) (or torch.relu) so the gradient flows through d.")
    m2 = 1.0
    out2 = fn(d.detach(), y, m2)
    right2 = (1 - y) * d.detach() ** 2 + y * torch.clamp(m2 - d.detach(), min=0) ** 2
    _loss_wrong_at(out2, right2, d, y, m2, f"with margin={m2:g} (right for margin={m:g}), the per-pair loss",
                   "Use the margin argument everywhere m appears; do not fix m inside the function.")
    out3 = fn(d.detach(), y.long(), m)
    _loss_wrong_at(out3, right, d, y, m, "with integer labels (y as a LongTensor of 0/1), the per-pair loss",
                   "Your loss changes with integer labels: convert y with y.to(d.dtype).")


def contrastive_loss(student: Callable) -> Callable:
    """Exercise 1.1."""
    return run_check("1.1", "contrastive loss", student, _reference_contrastive_loss, _probe_contrastive_loss)


# ----------------------------------------------------------------------------- 1.2

NAN_AT_ZERO = ("the gradient is NaN where the two embeddings are identical (distance 0): the derivative "
               "of sqrt(s) is 1 / (2 sqrt(s)), infinite at s = 0, and autograd multiplies it by "
               "ds/dz = 2 (z1 - z2) = 0, giving 0 · inf = NaN. One such pair turns every weight into "
               "NaN at the next optimiser step.")
NAN_HINT = ("Keep sqrt away from 0: torch.sqrt(s + 1e-12) (or s.clamp_min(1e-12).sqrt()). "
            "torch.where(s > 0, s.sqrt(), 0) does NOT help: the NaN comes from the branch not taken.")


def _reference_euclidean_distance(z1: Tensor, z2: Tensor) -> Tensor:
    return contrastive.euclidean_distance(z1, z2)


def _probe_euclidean_distance(fn: Callable) -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(5, 3, generator=g)
    b = torch.randn(5, 3, generator=g)
    b[0], b[3] = a[0], a[3]  # two identical pairs: distance exactly 0
    z1, z2 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    out = fn(z1, z2)
    expect_type(out, Tensor, "the distance")
    expect_shape(out, (5,), "the distance", "One distance per pair (row): reduce over the last dimension only.")
    expect_grad(out, "the distance")
    diff = (a - b)
    true = diff.pow(2).sum(1).sqrt()
    zero, rows = float(out.detach()[0]), [1, 2, 4]
    if zero > 1e-3 and torch.allclose(out.detach()[rows].double(), true[rows].double(), rtol=0.05, atol=0.05):
        raise Mistake(f"for identical embeddings your distance is {zero:.3g}, not ≈ 0: your eps is too large "
                      "(it should move D by far less than the distances that matter; 1e-12 under the root "
                      "moves it by at most 1e-6).")
    diagnose(out, true, "the distance", {
        "you returned the SQUARED distance D²; take the square root (the margin compares with D).":
            diff.pow(2).sum(1),
        "you returned the L1 (Manhattan) distance sum |z1 - z2|; the contrastive loss uses the Euclidean "
        "distance sqrt(sum (z1 - z2)²).": diff.abs().sum(1),
        "you averaged the squared differences over the coordinates (mean) instead of summing them.":
            diff.pow(2).mean(1).sqrt(),
    }, atol=1e-3, rtol=1e-3)
    gz1, gz2 = torch.autograd.grad(out.sum(), (z1, z2))
    if not (torch.isfinite(gz1).all() and torch.isfinite(gz2).all()):
        raise Mistake(NAN_AT_ZERO, NAN_HINT)
    z1b, z2b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    (gsq,) = torch.autograd.grad((fn(z1b, z2b) ** 2).sum(), z1b)
    if not torch.isfinite(gsq).all():
        raise Mistake("the gradient of D² is NaN at distance 0 (the contrastive loss squares D): "
                      + NAN_AT_ZERO, NAN_HINT)
    want = diff / true.clamp_min(1e-12).unsqueeze(1)
    want[0] = 0
    want[3] = 0
    expect_close(gz1[rows], want[rows], "dD/dz1 for pairs at a positive distance", atol=1e-4, rtol=1e-3)


def euclidean_distance(student: Callable) -> Callable:
    """Exercise 1.2."""
    return run_check("1.2", "distance safe at zero", student, _reference_euclidean_distance,
                     _probe_euclidean_distance)


# ----------------------------------------------------------------------------- 1.3

def _reference_sample_pairs(classes: ClassSet, n_pairs: int, generator: torch.Generator | None = None):
    return siamese.sample_pairs(classes, n_pairs, generator)


def _pair_probe_classes() -> ClassSet:
    """7 classes x 6 examples of (1, 4, 4) uint8; pixel (0,0) = class id, pixel (0,1) = example id.

    Stored as a list of tensors (as the real data is), so ``classes.examples(c)`` is the way in.
    """
    xs = []
    g = torch.Generator().manual_seed(0)
    for c in range(7):
        x = torch.randint(0, 256, (6, 1, 4, 4), generator=g, dtype=torch.uint8)
        x[:, 0, 0, 0] = c
        x[:, 0, 0, 1] = torch.arange(6, dtype=torch.uint8)
        xs.append(x)
    names = [f"a{c % 2}/c{c}" for c in range(7)]
    return ClassSet(xs, names, [n.split("/")[0] for n in names], "probe classes")


def _ids(x: Tensor) -> tuple[Tensor, Tensor]:
    v = (x[:, 0, 0, :2].double() * 255).round().long()
    return v[:, 0], v[:, 1]


def _probe_sample_pairs(fn: Callable) -> None:
    cs = _pair_probe_classes()
    p = 200
    out = fn(cs, p, torch.Generator().manual_seed(0))
    expect(isinstance(out, (tuple, list)) and len(out) == 3,
           f"return a tuple (x1, x2, y); got {type(out).__name__}"
           + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "") + ".")
    x1, x2, y = out
    for t, name in ((x1, "x1"), (x2, "x2"), (y, "y")):
        expect_type(t, Tensor, name)
    expect_shape(x1, (p, 1, 4, 4), "x1", "n_pairs images, each (1, H, W).")
    expect_shape(x2, (p, 1, 4, 4), "x2", "n_pairs images, each (1, H, W).")
    expect_shape(y, (p,), "y", "One label per pair.")
    expect(x1.is_floating_point() and x2.is_floating_point() and float(x1.max()) <= 1.0 and float(x2.max()) <= 1.0,
           f"images should be float in [0, 1]; got {x1.dtype} with max {float(x1.max()):g}.",
           "Convert uint8 images with .float() / 255, as sample_episode does.")
    expect(y.is_floating_point(), f"y should be a float tensor (the loss multiplies by it), got {y.dtype}.",
           "torch.zeros(...) / torch.ones(...) are float by default.")
    expect(set(y.unique().tolist()) <= {0.0, 1.0}, f"y must hold 0 (same class) and 1 (different); got "
           f"{sorted(set(y.unique().tolist()))[:5]}.")
    c1, e1 = _ids(x1)
    c2, e2 = _ids(x2)
    same_class = c1 == c2
    if bool((same_class == (y == 1)).all()):
        raise Mistake("you labelled same-class pairs y = 1 and different-class pairs y = 0: that is the "
                      "seed article's convention. Here y = 0 means same class (similar), y = 1 different.")
    expect(int((y == 0).sum()) == p // 2,
           f"the pairs are not balanced: {int((y == 0).sum())} of {p} have y = 0; exactly half must be "
           "same-class pairs.", "Make n_pairs // 2 similar pairs and n_pairs // 2 dissimilar pairs.")
    expect(bool(same_class[y == 0].all()),
           f"{int((~same_class[y == 0]).sum())} pair(s) labelled y = 0 (same class) hold two different classes.")
    expect(bool((~same_class[y == 1]).all()),
           f"{int(same_class[y == 1].sum())} pair(s) labelled y = 1 (different classes) hold the same class "
           "twice.", "Draw the second class among the OTHER classes, e.g. (c1 + 1 + randint(C - 1)) % C.")
    identical = (e1 == e2) & same_class
    expect(not bool(identical.any()),
           f"{int(identical.sum())} similar pair(s) are one image paired with itself: a positive pair must be "
           "two different drawings of the class (an image with itself only teaches D(x, x) = 0).",
           "Draw two DISTINCT example indices, e.g. with torch.randperm(M)[:2].")
    expect(len(set(c1.tolist()) | set(c2.tolist())) == len(cs),
           "over 200 pairs your sampler never used some classes: draw classes uniformly at random.")
    expect(len(set(e1.tolist()) | set(e2.tolist())) == 6,
           "over 200 pairs your sampler never used some examples: draw examples at random.")
    again = fn(cs, p, torch.Generator().manual_seed(0))
    expect(torch.equal(again[0], x1) and torch.equal(again[1], x2) and torch.equal(again[2], y),
           "two calls with generators seeded alike gave different pairs.",
           "Pass generator=generator to every torch.randint / torch.randperm call.")
    other = fn(cs, p, torch.Generator().manual_seed(1))
    expect(not torch.equal(other[0], x1), "different seeds gave the same pairs: the pairs must be random.")


def sample_pairs(student: Callable) -> Callable:
    """Exercise 1.3."""
    return run_check("1.3", "balanced pair sampler", student, _reference_sample_pairs, _probe_sample_pairs)


# ----------------------------------------------------------------------------- 1.4

def _reference_classify(score_pairs: Callable, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                        n_way: int) -> Tensor:
    return siamese.classify_by_verification(score_pairs, support_x, support_y, query_x, n_way, "max")


def _toy_score(a: Tensor, b: Tensor) -> Tensor:
    """Similarity of paired rows: minus the Euclidean distance (higher = more alike)."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape:
        raise ValueError("score_pairs(a, b) takes two batches of the SAME shape: pair i is (a[i], b[i]). "
                         f"You passed shapes {tuple(getattr(a, 'shape', ()))} and {tuple(getattr(b, 'shape', ()))}.")
    return -(a - b).pow(2).sum(-1).sqrt()


def _probe_case(fn: Callable, sx: Tensor, sy: Tensor, qx: Tensor, n: int, what: str) -> Tensor:
    out = fn(_toy_score, sx, sy, qx, n)
    expect_type(out, Tensor, f"the class scores ({what})")
    if out.shape == (len(qx),) and not out.is_floating_point():
        raise Mistake(f"you returned labels (NQ,) ({what}); return the class scores, shape (NQ, N): "
                      "evaluate() takes their argmax.")
    expect_shape(out, (len(qx), n), f"the class scores ({what})", "One row per query, one column per class.")
    return out


def _probe_classify(fn: Callable) -> None:
    g = torch.Generator().manual_seed(5)
    # K = 1, class-major: 3 classes, 4 queries
    sx = torch.randn(3, 2, generator=g) * 3
    sy = torch.tensor([0, 1, 2])
    qx = sx[[2, 0, 1, 2]] + 0.3 * torch.randn(4, 2, generator=g)
    out = _probe_case(fn, sx, sy, qx, 3, "1-shot")
    s = _toy_score(qx.repeat_interleave(3, 0), sx.repeat(4, 1)).reshape(4, 3)
    diagnose(out, s, "the 1-shot class scores", {
        "you treated the score as a distance: a HIGHER score means MORE alike, so keep it as it is "
        "(don't negate it).": -s,
        "your pairs are misaligned: score query q against every support example (repeat_interleave the "
        "queries, repeat the support set), then reshape to (NQ, NS).": s.t().reshape(4, 3),
    })
    # K = 2, support shuffled: 3 classes, 6 queries
    sx2 = torch.randn(6, 2, generator=g) * 3
    sy2 = torch.tensor([1, 0, 2, 0, 2, 1])
    qx2 = sx2[[0, 1, 2, 3, 4, 5]] + 0.3 * torch.randn(6, 2, generator=g)
    out2 = _probe_case(fn, sx2, sy2, qx2, 3, "2-shot")
    s2 = _toy_score(qx2.repeat_interleave(6, 0), sx2.repeat(6, 1)).reshape(6, 6)
    per_class = [s2[:, sy2 == c] for c in range(3)]
    want = torch.stack([p.max(1).values for p in per_class], 1)
    diagnose(out2, want, "the 2-shot class scores (support not sorted by class)", {
        "you averaged the scores of each class's support examples; this exercise takes the best match "
        "(max), Koch et al.'s rule. (The mean is a fine variant: reduce='mean' in course_utils.siamese.)":
            torch.stack([p.mean(1) for p in per_class], 1),
        "you took the WORST match of each class (min); take the best match (max).":
            torch.stack([p.min(1).values for p in per_class], 1),
        "you assumed the support set is sorted by class (class-major reshape); use support_y to find "
        "each class's columns, e.g. s[:, support_y == c].": s2.reshape(6, 3, 2).max(-1).values,
    }, hint="Score every (query, support) pair, then for class c take the max over s[:, support_y == c].")


def classify_by_verification(student: Callable) -> Callable:
    """Exercise 1.4."""
    return run_check("1.4", "classification by verification", student, _reference_classify, _probe_classify)
