"""Soft k-means prototypes (Ren et al., "Meta-Learning for Semi-Supervised Few-Shot Classification",
ICLR 2018, arXiv:1803.00676).

The K-shot support gives each class n a prototype c_n (the mean of its supports, Snell et al. 2017).
Unlabelled items z~_j of the same classes hold more information about where each class lies. Ren et
al. refine the prototypes with one step of soft k-means, seeded at the support means:

    w_jn = exp(-||z~_j - c_n||^2) / sum_n' exp(-||z~_j - c_n'||^2)        (soft assignments)

    c~_n = (sum_i z_i [y_i = n] + sum_j z~_j w_jn m_jn) / (sum_i [y_i = n] + sum_j w_jn m_jn)

Each labelled support counts fully for its own class; each unlabelled item counts for class n with
weight w_jn m_jn. Plain soft k-means has m_jn = 1. Because the w_jn of an item sum to 1, a distractor
(an item of no class in the support set) still gives its full weight to *some* class and pulls that
prototype toward itself. Ren et al.'s *masked* soft k-means multiplies by a soft mask m_jn in [0, 1]
so that far-away items count for nothing. Their mask is m_jn = sigmoid(-gamma_n (d~_jn - beta_n)), and
a small MLP, trained with the embedding, reads gamma_n and beta_n off statistics of the normalised
distances (min, max, variance, skewness, kurtosis). This module uses a non-learned stand-in with the
same shape,

    m_jn = sigmoid((r - d_jn) / s),     d_jn = ||z~_j - c_n||^2,

where r is a radius on the squared-distance scale and s is a sharpness. r is chosen on meta-val
pools (:func:`fit_radius`: a quantile of how far true class members lie from their support-mean
prototype), never on the new classes' own support set.

Ren et al. train the embedding *through* the refinement. The course applies the refinement at test
time only, to the embedding of a supervised meta-trained ProtoNet. Their tables call this baseline
"Semi-Supervised Inference", and it already gives most of the 1-shot gain.

Symbols: N classes, K supports per class, M unlabelled items, D embedding size, c prototypes (N, D),
w soft assignments (M, N), m mask (M, N), r radius, s sharpness.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor

from .protonet import squared_distances

__all__ = ["soft_assignments", "support_means", "check_support", "soft_kmeans_step", "distance_mask", "default_sharpness",
           "fit_radius", "refine_prototypes"]


def _check_2d(z: Tensor, what: str) -> None:
    if not isinstance(z, Tensor) or z.dim() != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"{what} must be a 2-D tensor (rows, D) of embeddings, got {shape}. "
                         "Flatten the encoder's output to (rows, D) first.")
    if not z.dtype.is_floating_point:
        raise ValueError(f"{what} must be a float tensor of embeddings, got dtype {z.dtype}; use .float().")


def _check_same_d(a: Tensor, b: Tensor, what_a: str, what_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{what_a} have {a.shape[1]}-d embeddings but {what_b} {b.shape[1]}-d; "
                         "embed both with the same network.")
    if a.device != b.device:
        raise ValueError(f"{what_a} are on {a.device} but {what_b} on {b.device}; move both to one device.")


def check_support(support_z: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """Validate a labelled support set; return ``support_y`` as int64 on ``support_z``'s device.

    Every class 0..n_way-1 must have at least one support (its prototype needs one).
    """
    _check_2d(support_z, "support_z")
    if not isinstance(support_y, Tensor) or support_y.dim() != 1:
        shape = tuple(support_y.shape) if isinstance(support_y, Tensor) else type(support_y).__name__
        raise ValueError(f"support_y must be a 1-D tensor of class indices, got {shape}.")
    if support_y.dtype.is_floating_point or support_y.dtype == torch.bool or support_y.is_complex():
        raise ValueError(f"support_y must hold integer class indices, got dtype {support_y.dtype}.")
    if support_y.shape[0] != support_z.shape[0]:
        raise ValueError(f"support_z has {support_z.shape[0]} rows but support_y {support_y.shape[0]} labels; "
                         "give one label per support embedding.")
    if support_y.numel() and (int(support_y.min()) < 0 or int(support_y.max()) >= n_way):
        raise ValueError(f"support_y must lie in 0..{n_way - 1} (n_way = {n_way}), got values from "
                         f"{int(support_y.min())} to {int(support_y.max())}.")
    y = support_y.to(device=support_z.device, dtype=torch.long)
    missing = [n for n, k in enumerate(torch.bincount(y, minlength=n_way).tolist()) if k == 0]
    if missing:
        raise ValueError(f"Classes {missing} have no support example, so they have no prototype. "
                         "Label at least one example of every class (or lower n_way).")
    return y


def _check_n_way(n_way: int) -> None:
    if isinstance(n_way, bool) or not isinstance(n_way, int) or n_way < 2:
        raise ValueError(f"n_way must be an integer >= 2 (classification needs two classes), got {n_way!r}.")


def soft_assignments(z_unlabelled: Tensor, c: Tensor) -> Tensor:
    """w_jn = softmax over classes n of -||z~_j - c_n||^2: ``(M, D), (N, D) -> (M, N)``, rows sum to 1."""
    _check_2d(z_unlabelled, "z_unlabelled")
    _check_2d(c, "the prototypes c")
    _check_same_d(z_unlabelled, c, "Unlabelled items", "the prototypes c")
    return torch.softmax(-squared_distances(z_unlabelled, c), dim=1)


def support_means(support_z: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """The plain prototypes c_n = mean of the supports labelled n, ``(N, D)`` (any order of rows)."""
    y = check_support(support_z, support_y, n_way)
    onehot = torch.nn.functional.one_hot(y, n_way).to(support_z.dtype)
    return (onehot.T @ support_z) / onehot.sum(dim=0).unsqueeze(1)


def soft_kmeans_step(c: Tensor, support_z: Tensor, support_y: Tensor, z_unlabelled: Tensor,
                     mask: Tensor | None = None) -> Tensor:
    """One refinement c~_n = (sum_i z_i [y_i = n] + sum_j z~_j w_jn m_jn) / (sum_i [y_i = n] + sum_j w_jn m_jn).

    ``c`` ``(N, D)`` are the current prototypes (they give w). ``support_z`` ``(N*K, D)`` and
    ``support_y`` ``(N*K,)`` in 0..N-1 are the labelled supports, ``z_unlabelled`` ``(M, D)`` the
    unlabelled items, ``mask`` ``(M, N)`` in [0, 1] or None (all ones: plain soft k-means). Every
    class has at least one support, so the denominator is at least 1. A class that no unlabelled item
    weighs on (all w_jn m_jn = 0, or M = 0) keeps its support mean.
    """
    _check_2d(c, "the prototypes c")
    n_way = c.shape[0]
    y = check_support(support_z, support_y, n_way)
    _check_2d(z_unlabelled, "z_unlabelled")
    _check_same_d(support_z, c, "Supports", "the prototypes c")
    _check_same_d(z_unlabelled, c, "Unlabelled items", "the prototypes c")
    w = soft_assignments(z_unlabelled, c)
    if mask is not None:
        if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(w.shape):
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a (M, N) = {tuple(w.shape)} tensor (one weight per unlabelled "
                             f"item and class), got {shape}.")
        if mask.numel() and not (mask.min() >= 0 and mask.max() <= 1):
            raise ValueError("mask values must lie in [0, 1] (1 = counts fully, 0 = ignored).")
        w = w * mask.to(device=w.device, dtype=w.dtype)
    onehot = torch.nn.functional.one_hot(y, n_way).to(support_z.dtype)
    numerator = onehot.T @ support_z + w.T @ z_unlabelled
    denominator = onehot.sum(dim=0) + w.sum(dim=0)
    return numerator / denominator.unsqueeze(1)


def _check_radius(radius: float, sharpness: float | None) -> float:
    if isinstance(radius, Tensor):
        radius = float(radius)
    if not isinstance(radius, (int, float)) or not math.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius r must be a finite number > 0 (a squared distance), got {radius!r}. "
                         "Choose it with fit_radius on meta-val pools.")
    s = default_sharpness(radius) if sharpness is None else sharpness
    if isinstance(s, Tensor):
        s = float(s)
    if not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
        raise ValueError(f"sharpness s must be a finite number > 0, got {sharpness!r}.")
    return float(s)


def default_sharpness(radius: float) -> float:
    """s = r / 10: m is 0.99 at d = r/2 and 0.00005 at d = 2r (a soft step at the radius)."""
    return radius / 10.0


def distance_mask(z_unlabelled: Tensor, c: Tensor, radius: float, sharpness: float | None = None) -> Tensor:
    """m_jn = sigmoid((r - ||z~_j - c_n||^2) / s), ``(M, N)``: near 1 inside radius r of c_n, near 0 far out.

    A non-learned stand-in for Ren et al.'s masked soft k-means (their m comes from an MLP over distance
    statistics, trained end to end). ``sharpness`` None means ``default_sharpness(radius)``.
    """
    s = _check_radius(radius, sharpness)
    _check_2d(z_unlabelled, "z_unlabelled")
    _check_2d(c, "the prototypes c")
    _check_same_d(z_unlabelled, c, "Unlabelled items", "the prototypes c")
    return torch.sigmoid((radius - squared_distances(z_unlabelled, c)) / s)


def fit_radius(val_pools: Iterable, quantile: float = 0.95) -> float:
    """r = the ``quantile`` of the squared distances from true class members to their support-mean prototype.

    ``val_pools``: meta-val problems (:class:`course_utils.labelling_data.Pool`, or anything with
    ``support_z``, ``support_y``, ``pool_z``, ``pool_y``, ``n_way``). Distractors (label -1) are left
    out. With quantile 0.95, about 95 % of true members lie within r of their K-shot prototype, so
    the mask keeps them and drops items farther out. Choose r on meta-val, never on the new classes.
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must lie in (0, 1], got {quantile}.")
    distances = []
    for pool in val_pools:
        c = support_means(pool.support_z, pool.support_y, pool.n_way)
        _check_2d(pool.pool_z, "pool_z")
        _check_same_d(pool.pool_z, c, "Pool items", "supports")
        y = pool.pool_y.to(pool.pool_z.device)
        if y.shape != pool.pool_z.shape[:1]:
            raise ValueError(f"pool_y must have one label per pool item ({pool.pool_z.shape[0]}), got "
                             f"{tuple(y.shape)}.")
        known = y >= 0
        if known.any():
            d = squared_distances(pool.pool_z[known], c)
            distances.append(d.gather(1, y[known].long().unsqueeze(1)).squeeze(1).double().cpu())
    if not distances:
        raise ValueError("fit_radius needs at least one meta-val pool with non-distractor items.")
    return float(torch.quantile(torch.cat(distances), quantile))


def refine_prototypes(support_z: Tensor, support_y: Tensor, z_unlabelled: Tensor, n_way: int, steps: int = 1,
                      radius: float | None = None, sharpness: float | None = None) -> Tensor:
    """Prototypes after ``steps`` soft k-means steps seeded at the support means: ``(N, D)``.

    ``steps = 0`` gives the plain prototypes (support means). ``radius`` None is plain soft k-means.
    With a radius, every step uses the mask ``distance_mask(z_unlabelled, c0, radius, sharpness)``
    measured once from the support means c0, as in Ren et al. (their mask reads distances to the
    support prototypes), and as :func:`fit_radius` calibrated r. A mask that followed the refined c
    could walk outward with it, step after step. Ren et al. use one step at test time.
    """
    _check_n_way(n_way)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}.")
    if sharpness is not None and radius is None:
        raise ValueError("sharpness only shapes the distance mask; give a radius too (or leave both None).")
    if radius is not None:
        _check_radius(radius, sharpness)
    c = support_means(support_z, support_y, n_way)
    _check_2d(z_unlabelled, "z_unlabelled")
    _check_same_d(z_unlabelled, c, "Unlabelled items", "supports")
    mask = None if radius is None else distance_mask(z_unlabelled, c, radius, sharpness)
    for _ in range(steps):
        c = soft_kmeans_step(c, support_z, support_y, z_unlabelled, mask)
    return c
