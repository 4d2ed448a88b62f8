"""Auditing labels with confident learning (Northcutt, Jiang & Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 2021; the ``cleanlab`` package).

Confident learning compares each item's given label y_i with out-of-sample predicted probabilities
p_i and flags the items it can confidently count into another class. *Out-of-sample* matters: an
item inside its own prototype votes for its own label. ProtoNet gives out-of-sample probabilities
for free with leave-one-out prototypes. For item i of class n = y_i with K_n items in its class,

    c_n^(-i) = (sum_{j: y_j = n} z_j - z_i) / (K_n - 1),

and since z_i - c_n^(-i) = K_n / (K_n - 1) * (z_i - c_n), its own-class squared distance is just the
in-sample one scaled up,

    d_in^(-i) = (K_n / (K_n - 1))^2 * ||z_i - c_n||^2,

while the other classes' prototypes c_m (m != n) do not contain z_i and stay as they are. Then
p_i = softmax(-d_i / T) over the classes (dim 1), as everywhere in the chapter.

A class with a single item (K_n = 1) has no prototype without it: that item is scored against the
other classes only (p_in = 0 exactly, the rest sum to 1); the other classes still use the singleton
as their prototype of class n, since they are not in it. Such an item cannot be checked, and cleanlab
skips it anyway: by default (``min_examples_per_class=1``) it never prunes a class that has no more
than one example, and warns "May not flag all label issues in class: n, it has too few examples"
(cleanlab#641; the maintainers' answer: rare classes have too little data to judge, the warning can
be ignored, ``min_examples_per_class=0`` silences it). In a K-shot audit this is the normal case for
a class whose only label is its support: label more, or audit the human supports by eye.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .labelling import class_means, probabilities
from .protonet import squared_distances

__all__ = ["in_sample_probabilities", "loo_probabilities", "find_label_issues"]


def _check(z: Tensor, y: Tensor, n_way: int, temperature: float) -> Tensor:
    if not isinstance(z, Tensor) or z.dim() != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"z must be a 2-D tensor (P, D) of embeddings, got {shape}.")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != z.shape[0]:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a 1-D tensor with one label per row of z ({z.shape[0]}), got {shape}.")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}.")
    if isinstance(n_way, bool) or not isinstance(n_way, int) or n_way < 2:
        raise ValueError(f"n_way must be an int >= 2 (an audit needs two classes to confuse), got {n_way!r}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    y = y.to(z.device, torch.long)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_way):
        raise ValueError(f"y holds labels {int(y.min())}..{int(y.max())}, outside 0..{n_way - 1}. Drop the "
                         "none-of-these (-1) and unlabelled (-2) items first: audit only items with a class.")
    counts = torch.bincount(y, minlength=n_way)
    if (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"Class(es) {missing} have no items, so no prototype and nothing to audit "
                         "(cleanlab needs every class present, cleanlab#288); drop those classes and "
                         "renumber.")
    return y


def in_sample_probabilities(z: Tensor, y: Tensor, n_way: int, temperature: float = 1.0) -> Tensor:
    """``(P, N)`` probabilities against prototypes that *contain* each item (for comparison only)."""
    y = _check(z, y, n_way, temperature)
    return probabilities(-squared_distances(z, class_means(z, y, n_way)), temperature)


def loo_probabilities(z: Tensor, y: Tensor, n_way: int, temperature: float = 1.0) -> Tensor:
    """``(P, N)`` out-of-sample probabilities: item i's own class prototype leaves z_i out (see the
    module docstring; a single-item class gets probability 0 for its own class)."""
    y = _check(z, y, n_way, temperature)
    d = squared_distances(z, class_means(z, y, n_way))
    k = torch.bincount(y, minlength=n_way)[y].to(z.dtype)  # K_{y_i} per item
    rows = torch.arange(z.shape[0], device=z.device)
    own = d[rows, y] * (k / (k - 1).clamp_min(1)).pow(2)
    own = torch.where(k > 1, own, torch.full_like(own, float("inf")))
    d = d.clone()
    d[rows, y] = own
    return probabilities(-d, temperature)


def find_label_issues(z: Tensor, y: Tensor, n_way: int, temperature: float = 1.0,
                      **cleanlab_kwargs) -> Tensor:
    """Indices of suspected label errors, most suspicious first (lowest self-confidence p_{i, y_i}).

    ``cleanlab.filter.find_label_issues(y, loo_probabilities(...), return_indices_ranked_by=
    "self_confidence")``; further keyword arguments (``filter_by``, ``frac_noise``,
    ``min_examples_per_class``, ...) go to cleanlab. ``n_jobs`` defaults to 1 (no process pool).
    """
    import cleanlab.filter

    p = loo_probabilities(z, y, n_way, temperature)
    labels = y.detach().cpu().long().numpy()
    cleanlab_kwargs.setdefault("n_jobs", 1)
    idx = cleanlab.filter.find_label_issues(labels, p.detach().cpu().double().numpy(),
                                            return_indices_ranked_by="self_confidence", **cleanlab_kwargs)
    return torch.as_tensor(idx, dtype=torch.long).to(z.device)
