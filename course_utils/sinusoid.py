"""The sinusoid regression tasks of MAML's first experiment.

Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML, arXiv:1703.03400, section 5.1: each task is a sine wave

    y = A sin(x - phi),   A ~ U[0.1, 5.0],   phi ~ U[0, pi],   x ~ U[-5, 5],

and the learner sees K labelled points of it (the support set) and is scored on
other points of the same wave (the query set), with the mean squared error.
(The paper's code writes ``amp * sin(x - phase)``; the sign of the phase does not
matter for a symmetric range.) Reptile (Nichol et al., 2018) uses phi ~ U[0, 2 pi]:
pass ``phase=(0, 2 * math.pi)``.

Tensors are shaped like a regression net's input and target: a meta-batch holds
``x_s, y_s`` of shape ``(B, K, 1)`` and ``x_q, y_q`` of shape ``(B, Q, 1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SineBatch", "sine", "sample_sine_tasks", "SineTaskSampler", "AMPLITUDE", "PHASE",
           "X_RANGE"]

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


@dataclass
class SineBatch:
    """B sinusoid tasks: support ``(B, K, 1)``, query ``(B, Q, 1)``, and each wave's A and phi ``(B,)``."""

    x_s: Tensor
    y_s: Tensor
    x_q: Tensor
    y_q: Tensor
    amplitude: Tensor
    phase: Tensor

    def __len__(self) -> int:
        return int(self.x_s.shape[0])

    def to(self, device: torch.device | str) -> "SineBatch":
        """The same tasks with every tensor on ``device``."""
        return SineBatch(*(t.to(device) for t in (self.x_s, self.y_s, self.x_q, self.y_q,
                                                  self.amplitude, self.phase)))

    def task(self, b: int) -> "SineBatch":
        """Task ``b`` alone, as a batch of one."""
        if not -len(self) <= b < len(self):
            raise ValueError(f"task index {b} is out of range for a batch of {len(self)} tasks.")
        sl = slice(b, b + 1) if b != -1 else slice(b, None)
        return SineBatch(self.x_s[sl], self.y_s[sl], self.x_q[sl], self.y_q[sl],
                         self.amplitude[sl], self.phase[sl])

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x_s, y_s, x_q, y_q)``, the order :mod:`course_utils.maml` takes them in."""
        return self.x_s, self.y_s, self.x_q, self.y_q


def sine(x: Tensor, amplitude: Tensor | float, phase: Tensor | float) -> Tensor:
    """``amplitude * sin(x - phase)``; tensors broadcast (give A, phi of shape ``(B, 1, 1)`` for x ``(B, K, 1)``)."""
    return amplitude * torch.sin(x - phase)


def _check_range(name: str, r: tuple[float, float], positive: bool = False) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in r)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {r!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be a finite range with low <= high, got {r!r}.")
    if positive and lo < 0:
        raise ValueError(f"{name} must not be negative, got {r!r}.")
    return lo, hi


def _check_count(name: str, v: int, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")


def _uniform(shape: tuple[int, ...], r: tuple[float, float], generator: torch.Generator | None,
             dtype: torch.dtype) -> Tensor:
    return r[0] + (r[1] - r[0]) * torch.rand(shape, generator=generator, dtype=dtype)


def sample_sine_tasks(batch_size: int, k_support: int, k_query: int = 10,
                      generator: torch.Generator | None = None,
                      amplitude: tuple[float, float] = AMPLITUDE, phase: tuple[float, float] = PHASE,
                      x_range: tuple[float, float] = X_RANGE, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> SineBatch:
    """A meta-batch of ``batch_size`` sine tasks with ``k_support`` support and ``k_query`` query points.

    Sampling happens on the CPU with ``generator`` (seeded = repeatable on any device), then the
    tensors move to ``device``.
    """
    _check_count("batch_size", batch_size, 1)
    _check_count("k_support", k_support, 1)
    _check_count("k_query", k_query, 1)
    amp_r = _check_range("amplitude", amplitude, positive=True)
    ph_r = _check_range("phase", phase)
    x_r = _check_range("x_range", x_range)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}.")
    a = _uniform((batch_size,), amp_r, generator, dtype)
    p = _uniform((batch_size,), ph_r, generator, dtype)
    x = _uniform((batch_size, k_support + k_query, 1), x_r, generator, dtype)
    y = sine(x, a[:, None, None], p[:, None, None])
    out = SineBatch(x[:, :k_support], y[:, :k_support], x[:, k_support:], y[:, k_support:], a, p)
    return out.to(device) if device is not None else out


class SineTaskSampler:
    """An endless, seeded stream of sine meta-batches: ``next(sampler)`` is a :class:`SineBatch`."""

    def __init__(self, batch_size: int, k_support: int, k_query: int = 10, seed: int = 0,
                 amplitude: tuple[float, float] = AMPLITUDE, phase: tuple[float, float] = PHASE,
                 x_range: tuple[float, float] = X_RANGE, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32):
        self.kwargs = dict(batch_size=batch_size, k_support=k_support, k_query=k_query,
                           amplitude=amplitude, phase=phase, x_range=x_range, device=device,
                           dtype=dtype)
        self.generator = torch.Generator().manual_seed(seed)
        sample_sine_tasks(generator=torch.Generator(), **self.kwargs)  # validate now, not later

    def __iter__(self) -> "SineTaskSampler":
        return self

    def __next__(self) -> SineBatch:
        return sample_sine_tasks(generator=self.generator, **self.kwargs)
