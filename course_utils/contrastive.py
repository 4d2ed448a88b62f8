"""The contrastive loss (Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an
Invariant Mapping", CVPR 2006), with the label convention stated once and for all.

For a pair of inputs (x_1, x_2) with embeddings z_1 = f(x_1), z_2 = f(x_2), distance
D = ||z_1 - z_2||_2, pair label Y and margin m > 0:

    L(D, Y) = (1 - Y) * D^2 + Y * max(0, m - D)^2

**Y = 0 means similar (same class), Y = 1 means dissimilar (different classes)**, as in
Hadsell et al. (their Y = 0 for similar pairs). Similar pairs pay D^2 (pulled together);
dissimilar pairs pay only while closer than the margin (pushed out to m, then left alone).
Hadsell et al. write a factor 1/2 in front of both terms; this module leaves it out, as the
course's seed article does. Both forms are right: the factor halves the loss and its gradient,
and Adam's steps do not depend on the gradient's scale (chapter 01's check accepts either).

The seed article (an anonymous Chinese-language blog tutorial, 元学习：AI自我进化的曙光, "Meta-learning:
the dawn of AI self-evolution") pairs this very formula with "Y = 1 for the same class": that
*pulls different classes together and pushes same-class pairs apart* (chapter 01 shows it).

The distance must be safe at zero. Write u = sum_j (z_1j - z_2j)^2 = D^2 for the squared
distance: d sqrt(u)/du = 1 / (2 sqrt(u)) is infinite at u = 0, and autograd multiplies it by
du/dz = 2 (z_1 - z_2) = 0, giving 0 * inf = NaN for identical embeddings (and a positive pair of
two identical images is common). :func:`euclidean_distance` adds a tiny eps under the root:
D = sqrt(u + eps), whose gradient (z_1 - z_2) / D is exactly 0 there and never larger than 1 in
size.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SIMILAR", "DISSIMILAR", "euclidean_distance", "contrastive_loss", "inverted_contrastive_loss"]

SIMILAR, DISSIMILAR = 0, 1  # the values of the pair label Y (Hadsell et al. 2006)


def euclidean_distance(z1: Tensor, z2: Tensor, eps: float = 1e-12) -> Tensor:
    """Row-wise distance D_i = sqrt(sum_j (z1_ij - z2_ij)^2 + eps), shape ``(P,)``, finite gradients.

    ``z1``, ``z2``: ``(P, dim)`` embeddings (any leading dims ``(..., dim)`` work). ``eps`` keeps the
    gradient finite when ``z1_i == z2_i`` (there it is exactly 0); it moves D by at most sqrt(eps).
    """
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape (one row per pair), got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}.")
    if z1.dim() < 1:
        raise ValueError("z1 and z2 must be embeddings of shape (P, d); got scalars.")
    if eps <= 0:
        raise ValueError(f"eps must be > 0 (it keeps sqrt away from 0), got {eps}.")
    return ((z1 - z2) ** 2).sum(dim=-1).add(eps).sqrt()


def _check(D: Tensor, Y: Tensor, margin: float) -> Tensor:
    if not isinstance(D, Tensor) or not isinstance(Y, Tensor):
        raise ValueError("D and Y must be tensors: D the (P,) distances, Y the (P,) pair labels.")
    if D.shape != Y.shape:
        raise ValueError(f"D and Y must have the same shape (one distance and one label per pair), got "
                         f"{tuple(D.shape)} and {tuple(Y.shape)}.")
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}.")
    Y = Y.to(D.dtype)
    if not ((Y == 0) | (Y == 1)).all():
        raise ValueError("Y must hold 0 (similar, same class) or 1 (dissimilar); got other values.")
    return Y


def contrastive_loss(D: Tensor, Y: Tensor, margin: float = 1.0, reduction: str = "none") -> Tensor:
    """Per-pair L = (1 - Y) D^2 + Y max(0, m - D)^2, with **Y = 0 for similar, 1 for dissimilar**.

    Args:
        D: ``(P,)`` distances D >= 0 (from :func:`euclidean_distance` or ``SiameseNet``).
        Y: ``(P,)`` pair labels, 0 = same class, 1 = different classes (float, int or bool).
        margin: m > 0; dissimilar pairs farther apart than m cost nothing.
        reduction: ``"none"`` (``(P,)``, the default), ``"mean"`` or ``"sum"``.
    """
    Y = _check(D, Y, margin)
    loss = (1 - Y) * D ** 2 + Y * torch.clamp(margin - D, min=0) ** 2
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}.")


def inverted_contrastive_loss(D: Tensor, Y: Tensor, margin: float = 1.0) -> Tensor:
    """The seed article's mistake, kept for the demonstration: the same formula with Y = 1 meaning *same*.

    With our labels (0 = same) that is ``contrastive_loss(D, 1 - Y)``: same-class pairs are pushed
    to the margin and different-class pairs pulled together. Do not train with it.
    """
    Y = _check(D, Y, margin)
    return contrastive_loss(D, 1 - Y, margin)
