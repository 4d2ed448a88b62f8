"""Checks for chapter 00 (few-shot tasks): the episode sampler, pixel 1-NN, the 95% interval."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .. import baselines, episodes
from ..checks import diagnose, expect, expect_shape, expect_type, run_check
from ..episodes import ClassSet

__all__ = ["sample_episode", "nearest_neighbour", "mean_ci95"]


# ----------------------------------------------------------------------------- 0.1

def _reference_sample_episode(classes: ClassSet, n_way: int, k_shot: int, q_query: int,
                              generator: torch.Generator | None = None):
    ep = episodes.sample_episode(classes, n_way, k_shot, q_query, generator)
    return ep.support_x, ep.support_y, ep.query_x, ep.query_y


def _probe_classes() -> ClassSet:
    """12 classes x 10 examples; pixel (0,0) holds the class id, pixel (0,1) the example id."""
    x = torch.zeros(12, 10, 1, 4, 4, dtype=torch.uint8)
    for c in range(12):
        x[c, :, 0, 0, 0] = c
        x[c, :, 0, 0, 1] = torch.arange(10)
    return ClassSet(x, [f"s/c{c}" for c in range(12)], ["s"] * 12, "probe classes")


def _ids(x: Tensor) -> tuple[Tensor, Tensor]:
    v = x[:, 0, 0, :2].float()
    if v.max() <= 1.0:
        v = v * 255
    v = v.round().long()
    return v[:, 0], v[:, 1]


def _probe_sample_episode(fn: Callable) -> None:
    cs = _probe_classes()
    n, k, q = 5, 2, 3
    out = fn(cs, n, k, q, torch.Generator().manual_seed(0))
    expect(isinstance(out, tuple) and len(out) == 4,
           f"return a tuple (support_x, support_y, query_x, query_y); got {type(out).__name__}"
           + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "") + ".")
    sx, sy, qx, qy = out
    for t, name in ((sx, "support_x"), (sy, "support_y"), (qx, "query_x"), (qy, "query_y")):
        expect_type(t, Tensor, name)
    expect_shape(sx, (n * k, 1, 4, 4), "support_x", "N*K images, each (1, H, W).")
    expect_shape(qx, (n * q, 1, 4, 4), "query_x", "N*Q images, each (1, H, W).")
    expect_shape(sy, (n * k,), "support_y")
    expect_shape(qy, (n * q,), "query_y")
    expect(sx.is_floating_point() and float(sx.max()) <= 1.0,
           f"support_x should be float in [0, 1]; got dtype {sx.dtype} with values up to {float(sx.max()):g}.",
           "Use episodes' convention: images.float() / 255.")
    s_cls, s_ex = _ids(sx)
    q_cls, q_ex = _ids(qx)
    expect(set(sy.tolist()) <= set(range(n)) and set(qy.tolist()) <= set(range(n)),
           f"labels must be 0..{n - 1} (the episode's own labels), got support labels "
           f"{sorted(set(sy.tolist()))}.",
           "A learner must not see the global class ids: relabel the N chosen classes 0..N-1.")
    expect(sy.tolist() == [c for c in range(n) for _ in range(k)],
           f"support_y should be class-major [0]*K + [1]*K + ...; got {sy.tolist()}.")
    expect(qy.tolist() == [c for c in range(n) for _ in range(q)],
           f"query_y should be class-major [0]*Q + [1]*Q + ...; got {qy.tolist()}.")
    classes_of = [set(s_cls[sy == y].tolist()) for y in range(n)]
    expect(all(len(s) == 1 for s in classes_of),
           "the support images with one label come from different classes.")
    chosen = [next(iter(s)) for s in classes_of]
    expect(len(set(chosen)) == n, f"the same class was picked twice ({chosen}): sample the N classes "
           "without replacement (torch.randperm(...)[:N]).")
    for y in range(n):
        expect(set(q_cls[qy == y].tolist()) == {chosen[y]},
               f"query images with label {y} are not from the class of the support images with label {y}.")
        overlap = set(s_ex[sy == y].tolist()) & set(q_ex[qy == y].tolist())
        expect(not overlap, f"with K={k}, Q={q}, {len(overlap)} example(s) of the class labelled {y} are in "
               "both the support and the query set: a query the learner has already seen makes the "
               "task trivial.",
               "Draw K+Q distinct examples per class with one randperm, then split them without "
               "overlap: idx[:K] for the support set, idx[K:K+Q] for the query set.")
        expect(len(set(s_ex[sy == y].tolist())) == k, "a support example is repeated within a class.")
    again = fn(cs, n, k, q, torch.Generator().manual_seed(0))
    expect(torch.equal(again[0], sx) and torch.equal(again[2], qx),
           "two calls with generators seeded alike gave different episodes.",
           "Pass generator=generator to every torch.randperm / torch.randint call.")
    others = [fn(cs, n, k, q, torch.Generator().manual_seed(s))[0] for s in range(1, 6)]
    expect(any(not torch.equal(o, sx) for o in others),
           "different seeds always give the same episode: the classes and examples must be random.")


def sample_episode(student: Callable) -> Callable:
    """Exercise 0.1."""
    return run_check("0.1", "sample an episode", student, _reference_sample_episode, _probe_sample_episode)


# ----------------------------------------------------------------------------- 0.2

def _probe_nearest_neighbour(fn: Callable) -> None:
    g = torch.Generator().manual_seed(1)
    sx = torch.rand(6, 1, 5, 5, generator=g)
    sy = torch.tensor([2, 0, 1, 2, 0, 1])  # not class-major: an index is not a label
    pick = torch.tensor([3, 1, 4, 0, 5, 2, 1, 3])  # 8 queries, 6 support images
    qx = (sx[pick] + 0.05 * torch.rand(8, 1, 5, 5, generator=g)).clamp(0, 1)
    out = fn(sx, sy, qx)
    expect_type(out, Tensor, "the predicted labels")
    expect_shape(out, (8,), "the predicted labels",
                 "One label per query image: 8 queries here, 6 support images. A (6,) result means the "
                 "argmin ran over the queries (dim=0) instead of over the support images (dim=1).")
    d = torch.cdist(qx.flatten(1), sx.flatten(1))
    expect(not out.is_floating_point(), f"labels should be integers, got dtype {out.dtype}.")
    diagnose(out, baselines.pixel_nn(sx, sy, qx), "the predicted labels", {
        "you returned the index of the nearest support image, not its label: use support_y[index].":
            d.argmin(1),
        "you picked the FARTHEST support image (argmax of a distance): use argmin.": sy[d.argmax(1)],
    })


def nearest_neighbour(student: Callable) -> Callable:
    """Exercise 0.2."""
    return run_check("0.2", "pixel nearest neighbour", student, baselines.pixel_nn, _probe_nearest_neighbour)


# ----------------------------------------------------------------------------- 0.3

def _reference_mean_ci95(accuracies: Tensor) -> tuple[float, float]:
    a = accuracies.double()
    return a.mean().item(), 1.96 * a.std().item() / math.sqrt(a.numel())


def _probe_mean_ci95(fn: Callable) -> None:
    acc = torch.tensor([0.6, 0.8, 0.7, 1.0, 0.95])
    out = fn(acc)
    expect(isinstance(out, (tuple, list)) and len(out) == 2,
           f"return a pair (mean, half_width); got {type(out).__name__}.")
    mean, half = (float(torch.as_tensor(v)) for v in out)
    a, n = acc.double(), acc.numel()
    s, s_pop = a.std().item(), a.std(unbiased=False).item()
    diagnose(mean, a.mean().item(), "the mean")
    diagnose(half, 1.96 * s / math.sqrt(n), "the half-width", {
        "you forgot to divide by sqrt(n): 1.96 * std is the spread of single episodes, "
        "not the uncertainty of their mean.": 1.96 * s,
        "you divided by n instead of sqrt(n).": 1.96 * s / n,
        "you used the population std (unbiased=False); the sample std divides by n - 1.":
            1.96 * s_pop / math.sqrt(n),
        "you used 1.645, the 90% quantile; a 95% interval uses 1.96.": 1.645 * s / math.sqrt(n),
        "you used the variance instead of the standard deviation.": 1.96 * s ** 2 / math.sqrt(n),
        "you returned the standard error without the factor 1.96.": s / math.sqrt(n),
    }, atol=2e-3, rtol=0)  # 1.959964 and 1.96 are both right


def mean_ci95(student: Callable) -> Callable:
    """Exercise 0.3."""
    return run_check("0.3", "mean and 95% interval", student, _reference_mean_ci95, _probe_mean_ci95)


EXERCISES = ["0.1", "0.2", "0.3"]
