"""How sure is the model? Confidence scores, temperature scaling and calibration for ProtoNet labels.

ProtoNet's logits (Snell, Swersky & Zemel, 2017, "Prototypical Networks for Few-shot Learning") for
an item with embedding z and prototypes c_n are minus the squared distances d_n = ||z - c_n||^2.
Temperature scaling (Guo, Pleiss, Sun & Weinberger, 2017, "On Calibration of Modern Neural
Networks", ICML) divides them by one scalar kappa > 0 before the softmax over the N classes
(the chapter's temperature; the course keeps T for the number of inner steps):

    p_n = exp(-d_n / kappa) / sum_n' exp(-d_n' / kappa)                       (P, N), softmax over dim 1

kappa > 1 softens p, kappa < 1 sharpens it; it never changes the argmax, only how much p believes it.
Three confidence scores, higher = more confident:

    max_prob = max_n p_n,    margin = p_(1) - p_(2) (top-1 minus top-2),    distance = -min_n d_n.

kappa is fitted by minimising the mean negative log-likelihood -1/P sum_i log p_{i, y_i}(kappa) on held-out
items with known labels: **meta-val episodes, never the K-shot support**. A support item sits on (or,
for K > 1, close to) its own prototype: at K = 1 its distance to its class is exactly 0, so it is
always "right" and the NLL keeps falling as kappa -> 0; the fitted kappa would make every later prediction
over-confident.

Expected calibration error (Guo et al. 2017, Sec. 2): the max-probs are put into n_bins equal-width bins
B_m = ((m-1)/n_bins, m/n_bins]; with acc(B_m) the share of correct predictions and conf(B_m) the mean max-prob,

    ECE = sum_m |B_m| / P * |acc(B_m) - conf(B_m)|.

A distractor (true label ``NONE = -1``, a class in no support set) has no right class: it counts as
wrong whatever the model says (accuracy 0), so distractors in a pool make over-confidence visible.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["KINDS", "probabilities", "max_prob", "margin", "nearest_distance", "confidence",
           "fit_temperature", "expected_calibration_error", "reliability", "plot_reliability"]

KINDS = ("max_prob", "margin", "distance")
_LOG_T_RANGE = (-12.0, 12.0)  # fit_temperature searches T in [e^-12, e^12]


def _check_2d(x: Tensor, what: str, shape: str = "(P, N)") -> None:
    if not isinstance(x, Tensor) or x.dim() != 2:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what} must be a 2-D tensor {shape}, one row per item and one column per class; "
                         f"got {got}. For a single item use x[None].")


def _check_temperature(temperature: float | Tensor) -> None:
    if isinstance(temperature, Tensor) and temperature.numel() != 1:
        raise ValueError(f"temperature must be one scalar T > 0, got a tensor of shape {tuple(temperature.shape)}.")
    t = float(temperature.detach()) if isinstance(temperature, Tensor) else float(temperature)
    if not t > 0:
        raise ValueError(f"temperature must be > 0 (T divides the logits), got {t}. "
                         "T > 1 softens the probabilities, T < 1 sharpens them.")


def _check_labels(y: Tensor, n_items: int, n_way: int, what: str, allow_none: bool = True) -> None:
    if not isinstance(y, Tensor) or y.dim() != 1:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a 1-D tensor (P,) of class indices, got {got}.")
    if y.shape[0] != n_items:
        raise ValueError(f"{what} has {n_items} rows but y has {y.shape[0]} labels; give one label per row.")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}.")
    low = -1 if allow_none else 0
    if y.numel() and (int(y.min()) < low or int(y.max()) >= n_way):
        allowed = f"-1 (distractor) or 0..{n_way - 1}" if allow_none else f"0..{n_way - 1}"
        hint = (" Drop distractor rows (y = -1) first: no class is right for them."
                if not allow_none and int(y.min()) == -1 else "")
        raise ValueError(f"y must hold {allowed} for {n_way} classes; got values in "
                         f"[{int(y.min())}, {int(y.max())}].{hint}")


def _check_probabilities(p: Tensor, what: str = "p") -> None:
    _check_2d(p, what)
    if p.shape[0] and (p.min() < 0 or p.max() > 1 or not torch.allclose(p.sum(1), torch.ones_like(p[:, 0]), atol=1e-3)):
        raise ValueError(f"{what} must hold probabilities (each row in [0, 1], summing to 1). "
                         "Did you pass logits? Use probabilities(logits, temperature) first.")


def probabilities(logits: Tensor, temperature: float | Tensor = 1.0) -> Tensor:
    """p = softmax(logits / T) over the class axis (dim 1): ``(P, N) -> (P, N)``, differentiable.

    ``temperature`` may be a 0-d tensor (gradients then flow to T as well).
    """
    _check_2d(logits, "logits")
    _check_temperature(temperature)
    return torch.softmax(logits / temperature, dim=1)


def max_prob(p: Tensor) -> Tensor:
    """max_n p_n of each row: ``(P, N) -> (P,)``."""
    _check_2d(p, "p")
    return p.max(dim=1).values


def margin(p: Tensor) -> Tensor:
    """Top-1 minus top-2 probability of each row: ``(P, N) -> (P,)``, in [0, 1]. Needs N >= 2."""
    _check_2d(p, "p")
    if p.shape[1] < 2:
        raise ValueError(f"margin needs at least 2 classes (top-1 minus top-2), got N = {p.shape[1]}.")
    top = p.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def nearest_distance(d: Tensor) -> Tensor:
    """min_n d_n of each row of squared distances ``(P, N) -> (P,)`` (lower = closer)."""
    _check_2d(d, "d", "(P, N) of squared distances")
    return d.min(dim=1).values


def confidence(logits: Tensor, kind: str = "max_prob", temperature: float | Tensor = 1.0) -> Tensor:
    """A confidence score per item, higher = more confident: ``(P, N) -> (P,)``.

    ``kind``: ``"max_prob"`` (max_n p_n), ``"margin"`` (p_(1) - p_(2)), both with p = softmax(logits / T),
    or ``"distance"``: minus the nearest squared distance, -min_n d_n = max_n logits_n (ProtoNet's
    logits already are -d). ``"distance"`` ignores T: dividing by T > 0 rescales it and never reorders
    the items, so it cannot move a precision-coverage curve.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    _check_2d(logits, "logits")
    _check_temperature(temperature)
    if kind == "distance":
        return -nearest_distance(-logits)
    p = probabilities(logits, temperature)
    return max_prob(p) if kind == "max_prob" else margin(p)


def _nll(logits: Tensor, y: Tensor, log_t: float) -> float:
    return float(torch.nn.functional.cross_entropy(logits / math.exp(log_t), y))


def fit_temperature(logits: Tensor, y: Tensor, max_iter: int = 100) -> float:
    """The T > 0 minimising the mean NLL of softmax(logits / T) on labelled items (Guo et al. 2017).

    Fit on **meta-val episodes' query logits**, never on the support set: a support item is (at K = 1,
    exactly) on its own prototype, so it is always right and its NLL drives T -> 0.

    The search is over u = log T in [-12, 12]: a grid (step 0.25), then ``max_iter`` golden-section
    steps around the best grid point, in float64; deterministic. The NLL is convex in 1/T, hence
    unimodal in log T, so this finds the minimum. If it lies at the edge of the range (every item
    right with a growing margin, e.g. support logits; or worse than chance), a warning says so.
    ``y`` must hold true classes 0..N-1: drop distractor rows (no class is right for them) first.
    """
    _check_2d(logits, "logits")
    _check_labels(y, logits.shape[0], logits.shape[1], "logits", allow_none=False)
    if logits.shape[0] == 0:
        raise ValueError("fit_temperature needs at least one labelled item; got 0 rows.")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}.")
    logits, y = logits.detach().double(), y.to(logits.device).long()
    lo, hi = _LOG_T_RANGE
    grid = torch.arange(lo, hi + 1e-9, 0.25).tolist()
    values = [_nll(logits, y, u) for u in grid]
    i = min(range(len(grid)), key=values.__getitem__)
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    g = (math.sqrt(5) - 1) / 2
    u1, u2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = _nll(logits, y, u1), _nll(logits, y, u2)
    for _ in range(max_iter):
        if f1 <= f2:
            b, u2, f2 = u2, u1, f1
            u1 = b - g * (b - a)
            f1 = _nll(logits, y, u1)
        else:
            a, u1, f1 = u1, u2, f2
            u2 = a + g * (b - a)
            f2 = _nll(logits, y, u2)
    u = (a + b) / 2
    if u - lo < 0.5 or hi - u < 0.5:
        warnings.warn(f"fit_temperature: the NLL is smallest at the edge of the search range (kappa = {math.exp(u):.3g}). "
                      "Every item is right with a growing margin (were these support logits?) or the "
                      "predictions are no better than chance; fit kappa on meta-val pool logits.", stacklevel=2)
    return math.exp(u)


def reliability(p: Tensor, y: Tensor, n_bins: int = 15) -> dict[str, list]:
    """Reliability diagram data: ``n_bins`` equal-width bins ((m-1)/M, m/M] of the max-prob.

    Returns lists (one entry per bin) ``lower``, ``upper``, ``confidence`` (mean max-prob),
    ``accuracy`` (share with argmax == y; y = -1 always wrong) and ``count``. Empty bins have
    count 0 and nan confidence and accuracy.
    """
    _check_probabilities(p)
    _check_labels(y, p.shape[0], p.shape[1], "p")
    if not (isinstance(n_bins, int) and n_bins >= 1):
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}.")
    conf, pred = p.detach().double().max(dim=1)
    right = (pred == y.to(pred.device)).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=conf.device)
    bins = torch.bucketize(conf, edges[1:-1], right=False)  # edges[m-1] < conf <= edges[m]
    count = torch.bincount(bins, minlength=n_bins).double()
    conf_sum = torch.zeros(n_bins, dtype=torch.float64, device=conf.device).index_add_(0, bins, conf)
    acc_sum = torch.zeros(n_bins, dtype=torch.float64, device=conf.device).index_add_(0, bins, right)
    return {"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(),
            "confidence": (conf_sum / count).tolist(), "accuracy": (acc_sum / count).tolist(),
            "count": [int(c) for c in count.tolist()]}


def expected_calibration_error(p: Tensor, y: Tensor, n_bins: int = 15) -> float:
    """ECE = sum_m |B_m| / P * |acc(B_m) - conf(B_m)| over ``n_bins`` equal-width max-prob bins.

    ``p``: ``(P, N)`` probabilities; ``y``: ``(P,)`` true classes, -1 for a distractor (always wrong).
    """
    r = reliability(p, y, n_bins)
    total = sum(r["count"])
    if total == 0:
        raise ValueError("expected_calibration_error needs at least one item; got 0 rows.")
    return sum(n / total * abs(a - c) for n, a, c in zip(r["count"], r["accuracy"], r["confidence"]) if n)


def plot_reliability(p_before: Tensor, p_after: Tensor | None, y: Tensor, n_bins: int = 15, ax=None,
                     labels: Sequence[str] = ("before (κ = 1)", "after temperature scaling")):
    """Reliability diagram: accuracy per max-prob bin, before and after (bars), the diagonal, ECE in the legend.

    ``p_after`` may be None (one set of bars). Draws on ``ax`` if given; returns the Figure.
    """
    import matplotlib.pyplot as plt

    from .plots import COLORS

    if not (isinstance(n_bins, int) and n_bins >= 1):
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}.")
    sets = [(p_before, labels[0])] + ([] if p_after is None else [(p_after, labels[1])])
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4.5))
    else:
        fig = ax.figure
    width = 1.0 / n_bins / len(sets)
    for j, (p, label) in enumerate(sets):
        r = reliability(p, y, n_bins)
        ece = expected_calibration_error(p, y, n_bins)
        x = [lo + j * width for lo in r["lower"]]
        acc = [0.0 if n == 0 else a for a, n in zip(r["accuracy"], r["count"])]
        ax.bar(x, acc, width=width, align="edge", color=COLORS[j], alpha=0.85, edgecolor="white",
               label=f"{label}: ECE = {100 * ece:.1f}%")
    ax.plot([0, 1], [0, 1], ls="--", color=COLORS[7], lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability), binned")
    ax.set_ylabel("accuracy in the bin (distractors count as wrong)")
    ax.set_title(f"Reliability diagram ({n_bins} bins)")
    ax.legend(frameon=False, loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
