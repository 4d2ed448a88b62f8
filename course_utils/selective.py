"""Accept or ask a human: selective classification for automatic labelling.

Geifman & El-Yaniv, 2017, "Selective Classification for Deep Neural Networks" (NeurIPS). A selective
classifier labels an item only when its confidence score conf (``course_utils.confidence``) reaches the
acceptance threshold tau (their theta), and abstains (asks a human) otherwise:

    g_tau(x) = [conf(x) >= tau]
    coverage(tau)  = 1/P sum_i g_tau(x_i)                                  share of the pool auto-labelled
    risk(tau)      = sum_i [wrong_i] g_tau(x_i) / sum_i g_tau(x_i)         selective risk (0/1 loss)
    precision(tau) = 1 - risk(tau)                                          correct among the accepted

Lowering tau accepts more (coverage never falls) but usually less precisely. For a target precision
(say 99 %) the course picks the smallest tau whose accepted set reaches it (the largest coverage),
**chosen on meta-val episodes and then applied to the new pool**; the new pool's precision can fall
short of the target (the "threshold transfer gap" the chapter measures). Geifman & El-Yaniv's SGR
algorithm adds a binomial confidence bound (risk <= r* with probability 1 - delta) to this search;
the course uses the plain empirical threshold and measures the gap instead.

The area under the risk-coverage curve (AURC; Geifman, Uziel & El-Yaniv, 2019, "Bias-Reduced
Uncertainty Estimation for Deep Neural Classifiers", ICLR) summarises a score over all tau: with the
items sorted by decreasing conf, AURC = 1/P sum_{i=1..P} risk(top i items), lower is better (ties in
conf are taken as one step, see :func:`aurc`).

``correct`` is a boolean per item; a distractor (true label ``NONE = -1``) is never correct, since no
class of the support set is right for it (:func:`is_correct` does this for you).
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor

__all__ = ["is_correct", "accept", "precision_coverage", "threshold_for_precision", "coverage_at", "aurc",
           "plot_precision_coverage"]


def _check_conf(conf: Tensor) -> None:
    if not isinstance(conf, Tensor) or conf.dim() != 1:
        got = tuple(conf.shape) if isinstance(conf, Tensor) else type(conf).__name__
        raise ValueError(f"conf must be a 1-D tensor (P,) with one confidence score per item, got {got}. "
                         "Reduce (P, N) probabilities first, e.g. confidence.max_prob(p).")
    if conf.is_floating_point() and torch.isnan(conf).any():
        raise ValueError("conf contains NaN; every item needs a confidence score.")


def _check_pair(conf: Tensor, correct: Tensor) -> Tensor:
    """Validate (conf, correct) and return ``correct`` as a bool tensor on conf's device."""
    _check_conf(conf)
    if not isinstance(correct, Tensor) or correct.dim() != 1:
        got = tuple(correct.shape) if isinstance(correct, Tensor) else type(correct).__name__
        raise ValueError(f"correct must be a 1-D tensor (P,) of booleans (argmax == y), got {got}.")
    if correct.shape[0] != conf.shape[0]:
        raise ValueError(f"conf has {conf.shape[0]} items but correct has {correct.shape[0]}; give one "
                         "correct flag per confidence score.")
    if correct.dtype != torch.bool:
        if correct.is_floating_point() or not ((correct == 0) | (correct == 1)).all():
            raise ValueError("correct must be booleans (or 0/1 integers): True where the proposed label is "
                             "right. Compute it with is_correct(p, y).")
        correct = correct.bool()
    return correct.to(conf.device)


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if math.isnan(tau):
        raise ValueError("tau must be a number (+inf accepts nothing), got nan.")
    return tau


def is_correct(scores: Tensor, y: Tensor) -> Tensor:
    """``argmax_n scores[i, n] == y[i]`` as a bool ``(P,)``; y = -1 (distractor) is never correct.

    ``scores`` may be logits or probabilities ``(P, N)``.
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a 2-D tensor (P, N) of logits or probabilities, got {got}.")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != scores.shape[0]:
        got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be a 1-D tensor of {scores.shape[0]} labels (one per row of scores), got {got}.")
    return scores.argmax(dim=1) == y.to(scores.device)


def accept(conf: Tensor, tau: float) -> Tensor:
    """g_tau = conf >= tau, a bool ``(P,)``: the items the model labels itself. tau = +inf accepts none."""
    _check_conf(conf)
    return conf >= _check_tau(tau)


def precision_coverage(conf: Tensor, correct: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The precision-coverage curve: ``(taus, precision, coverage)``, one point per distinct conf value.

    Sorted by decreasing tau (so coverage increases); the point for tau accepts every item with
    conf >= tau. ``precision`` and ``coverage`` are float64 on conf's device.
    """
    correct = _check_pair(conf, correct)
    if conf.shape[0] == 0:
        raise ValueError("precision_coverage needs at least one item; got 0.")
    conf = conf.detach()
    order = torch.argsort(conf, descending=True, stable=True)
    c_sorted, right = conf[order], correct[order].double()
    hits = right.cumsum(0)
    n = torch.arange(1, len(c_sorted) + 1, dtype=torch.float64, device=conf.device)
    last = torch.ones_like(c_sorted, dtype=torch.bool)   # the last item of each run of equal conf
    last[:-1] = c_sorted[1:] != c_sorted[:-1]
    return c_sorted[last], (hits / n)[last], (n / len(c_sorted))[last]


def threshold_for_precision(conf: Tensor, correct: Tensor, target: float = 0.99) -> float:
    """The smallest tau whose accepted set {conf >= tau} has precision >= ``target`` (largest coverage).

    Precision need not fall monotonically as tau falls, so this is the lowest point of the whole curve
    that reaches the target, not the first one to drop below it. **If no tau reaches the target it
    returns +inf**: accept nothing (``accept(conf, inf)`` is all False), everything goes to a human.
    Choose tau on meta-val; apply it to the new pool.
    """
    if not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise ValueError(f"target must be a precision in (0, 1], e.g. 0.99, got {target!r}.")
    taus, precision, _ = precision_coverage(conf, correct)
    ok = precision >= target
    return float(taus[ok][-1]) if ok.any() else math.inf


def coverage_at(conf: Tensor, correct: Tensor, tau: float) -> tuple[float, float]:
    """``(coverage, precision)`` of the items accepted at tau; precision is nan if none is accepted."""
    correct = _check_pair(conf, correct)
    if conf.shape[0] == 0:
        raise ValueError("coverage_at needs at least one item; got 0.")
    g = accept(conf, tau)
    n = int(g.sum())
    return n / conf.shape[0], (int(correct[g].sum()) / n if n else math.nan)


def aurc(conf: Tensor, correct: Tensor) -> float:
    """Area under the risk-coverage curve, sum over curve points (coverage step) * risk; lower is better.

    Without ties this is 1/P sum_{i=1..P} risk(top i items) (Geifman et al. 2019); items with equal conf
    are accepted together, so they share the risk of their whole group (the order among ties does not
    matter).
    """
    _, precision, coverage = precision_coverage(conf, correct)
    steps = torch.diff(coverage, prepend=coverage.new_zeros(1))
    return float((steps * (1 - precision)).sum())


def plot_precision_coverage(curves: Mapping[str, tuple[Tensor, Tensor]], target: float | None = None, ax=None):
    """Precision against coverage, one line per ``name: (conf, correct)``, AURC in the legend.

    With ``target``: the target as a dashed line and, per curve, the point at
    :func:`threshold_for_precision` (fitted on the same items). Draws on ``ax`` if given; returns the Figure.
    """
    import matplotlib.pyplot as plt

    from .plots import COLORS

    if not curves:
        raise ValueError("plot_precision_coverage needs at least one curve: {name: (conf, correct)}.")
    if target is not None and not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise ValueError(f"target must be a precision in (0, 1], e.g. 0.99, got {target!r}.")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    for i, (name, (conf, correct)) in enumerate(curves.items()):
        colour = COLORS[i % len(COLORS)]
        _, precision, coverage = precision_coverage(conf, correct)
        ax.step(coverage.cpu().numpy(), 100 * precision.cpu().numpy(), where="post", color=colour,
                label=f"{name} (AURC = {aurc(conf, correct):.3f})")
        if target is not None:
            tau = threshold_for_precision(conf, correct, target)
            if math.isfinite(tau):
                cov, prec = coverage_at(conf, correct, tau)
                ax.plot([cov], [100 * prec], "o", color=colour, ms=6)  # the best cut reaching the target here
    if target is not None:
        ax.axhline(100 * target, color=COLORS[7], ls="--", lw=1, label=f"target precision {100 * target:g}%")
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("coverage (share of the pool labelled automatically)")
    ax.set_ylabel("precision of the accepted labels (%)")
    ax.set_title("Precision-coverage: accept if confidence >= tau")
    ax.legend(frameon=False, fontsize=9, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
