"""Few-shot accuracy as the papers report it: mean over many episodes with a 95% interval.

For episode accuracies a_1..a_n, the report is mean(a) +- 1.96 * std(a) / sqrt(n)
(normal approximation; std with Bessel's correction). 600 test episodes is the
common default (Finn et al. 2017; Snell et al. 2017).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .episodes import ClassSet, Episode, EpisodeSampler
from .progress import progress

__all__ = ["Accuracy", "mean_ci95", "episode_accuracy", "evaluate"]

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


def episode_accuracy(output: Tensor, query_y: Tensor) -> float:
    """Fraction of queries labelled right; ``output`` is labels ``(NQ,)`` or scores ``(NQ, N)``."""
    if output.dim() == 2:
        output = output.argmax(dim=1)
    if output.shape != query_y.shape:
        raise ValueError(f"The classifier returned shape {tuple(output.shape)}, but there are "
                         f"{query_y.numel()} queries: return one label per query (NQ,) or scores (NQ, N).")
    return (output.to(query_y.device) == query_y).float().mean().item()


def evaluate(classify: Callable[[Episode], Tensor], classes: ClassSet, n_way: int, k_shot: int,
             q_query: int = 15, n_episodes: int = 600, seed: int = 0,
             device: torch.device | str | None = None, desc: str | None = None) -> Accuracy:
    """Accuracy of ``classify(episode) -> labels or scores`` over ``n_episodes`` seeded episodes.

    ``classify`` decides about gradients itself (MAML needs them at test time; others use no_grad).
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}.")
    sampler = EpisodeSampler(classes, n_way, k_shot, q_query, seed=seed)
    accs = []
    for _ in progress(range(n_episodes), desc=desc or f"{n_way}-way {k_shot}-shot eval"):
        ep = next(sampler)
        if device is not None:
            ep = ep.to(device)
        accs.append(episode_accuracy(classify(ep).detach(), ep.query_y))
    return mean_ci95(accs)
