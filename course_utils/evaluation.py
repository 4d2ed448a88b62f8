"""Few-shot accuracy as the papers report it: mean over many episodes with a 95% interval.

For episode accuracies a_1..a_n, the report is mean(a) +- 1.96 * std(a) / sqrt(n)
(normal approximation; std with Bessel's correction). 600 test episodes is the
common default (Finn et al. 2017; Snell et al. 2017).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .episodes import ClassSet, Episode, sample_episode
from .progress import progress

__all__ = ["Accuracy", "mean_ci95", "student_t_quantile", "episode_accuracy", "episode_accuracies", "evaluate"]

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


@dataclass(frozen=True)
class Accuracy:
    """Mean accuracy (a fraction) and the half-width of its 95% interval over ``n`` episodes."""

    mean: float
    ci95: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f}% ± {100 * self.ci95:.1f}% ({self.n} episodes)"

    def as_percent(self) -> tuple[float, float]:
        return 100 * self.mean, 100 * self.ci95


def mean_ci95(values: Sequence[float] | Tensor) -> Accuracy:
    """Mean and 95% interval half-width ``1.96 * s / sqrt(n)`` (``s``: sample std, n - 1)."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = v.numel()
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value; evaluate on at least one episode.")
    if not torch.isfinite(v).all():
        raise ValueError("mean_ci95 got NaN or infinite values; check the per-episode accuracies.")
    half = Z95 * v.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return Accuracy(v.mean().item(), half, n)


def _t_pdf(x: float, df: float) -> float:
    c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf(x: float, df: float, panels: int = 2000) -> float:
    """P(T <= x) for x >= 0: one half plus Simpson's rule on the density over [0, x]."""
    h = x / panels
    inner = math.fsum((4 if i % 2 else 2) * _t_pdf(i * h, df) for i in range(1, panels))
    return 0.5 + h / 3 * (_t_pdf(0.0, df) + inner + _t_pdf(x, df))


def student_t_quantile(p: float, df: float) -> float:
    """The ``p``-quantile (0.5 < p < 1) of Student's t distribution with ``df`` degrees of freedom.

    With n values, ``student_t_quantile(0.975, n - 1)`` is the factor of the small-sample 95%
    interval of their mean, exact for normally distributed values (per-episode accuracies are only
    roughly so); it tends to 1.96 as n grows (2.093 for n = 20, 1.964 for n = 600).
    Newton's method on the CDF, started at the normal quantile; accurate to about 1e-9.
    """
    if not 0.5 < p < 1:
        raise ValueError(f"student_t_quantile needs 0.5 < p < 1, got {p}.")
    if not df > 0:
        raise ValueError(f"student_t_quantile needs df > 0 degrees of freedom, got {df}.")
    x = Z95 if p == 0.975 else 1.0
    for _ in range(100):
        step = (_t_cdf(x, df) - p) / _t_pdf(x, df)
        x = max(x - step, x / 2)
        if abs(step) < 1e-11 * max(1.0, x):
            break
    return x


def episode_accuracy(output: Tensor, query_y: Tensor) -> float:
    """Fraction of queries labelled right; ``output`` is labels ``(NQ,)`` or scores ``(NQ, N)``."""
    if output.dim() == 2:
        output = output.argmax(dim=1)
    if output.shape != query_y.shape:
        raise ValueError(f"The classifier returned shape {tuple(output.shape)}, but there are "
                         f"{query_y.numel()} queries: return one label per query (NQ,) or scores (NQ, N).")
    return (output.to(query_y.device) == query_y).float().mean().item()


EpisodeFn = Callable[[Any, int, int, int, torch.Generator], Episode]


def episode_accuracies(classify: Callable[[Episode], Tensor], classes: ClassSet | Any, n_way: int, k_shot: int,
                       q_query: int = 15, n_episodes: int = 600, seed: int = 0,
                       device: torch.device | str | None = None, desc: str | None = None,
                       sampler: EpisodeFn = sample_episode) -> Tensor:
    """Query accuracy of ``classify`` on each of ``n_episodes`` seeded episodes (float64, one per episode).

    The same ``seed`` draws the same episodes from pools with the same classes and example counts, so
    two methods' values can be compared episode by episode (a paired difference). ``sampler(classes,
    n_way, k_shot, q_query, generator) -> Episode`` draws each episode: ``sample_episode`` (the
    default, on a ClassSet) or a task family's own (speech's speaker episodes, whose support and query
    words differ, take a speakers x words tensor as ``classes``).
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}.")
    if not callable(sampler):
        raise ValueError(f"sampler must be a function (classes, n_way, k_shot, q_query, generator) -> Episode, "
                         f"got {type(sampler).__name__}.")
    generator = torch.Generator().manual_seed(seed)
    accs = []
    for _ in progress(range(n_episodes), desc=desc or f"{n_way}-way {k_shot}-shot eval"):
        ep = sampler(classes, n_way, k_shot, q_query, generator)
        if device is not None:
            ep = ep.to(device)
        accs.append(episode_accuracy(classify(ep).detach(), ep.query_y))
    return torch.tensor(accs, dtype=torch.float64)


def evaluate(classify: Callable[[Episode], Tensor], classes: ClassSet | Any, n_way: int, k_shot: int,
             q_query: int = 15, n_episodes: int = 600, seed: int = 0,
             device: torch.device | str | None = None, desc: str | None = None,
             sampler: EpisodeFn = sample_episode) -> Accuracy:
    """Accuracy of ``classify(episode) -> labels or scores`` over ``n_episodes`` seeded episodes.

    ``classify`` decides about gradients itself (MAML needs them at test time; others use no_grad).
    ``sampler`` as in :func:`episode_accuracies`.
    """
    return mean_ci95(episode_accuracies(classify, classes, n_way, k_shot, q_query, n_episodes, seed, device, desc,
                                        sampler))
