"""Training helpers: a loop with a progress bar and a history, and a load-or-train cache.

The cache stores what a slow computation *produced* (weights, curves), keyed by
the full configuration, so a notebook re-run skips the training but every
number it shows is still computed from that model, never typed in.
``COURSE_RETRAIN=1`` ignores the cache.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import torch

from .cache import cache_dir, config_key
from .progress import progress

T = TypeVar("T")

__all__ = ["History", "train_loop", "load_or_train"]


@dataclass
class History:
    """Metrics logged during training: ``values[name]`` at ``steps[name]``."""

    steps: dict[str, list[int]] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def log(self, step: int, **metrics: float) -> None:
        for k, v in metrics.items():
            self.steps.setdefault(k, []).append(step)
            self.values.setdefault(k, []).append(float(v))

    def last(self, name: str) -> float:
        return self.values[name][-1]

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "values": self.values, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "History":
        return cls(d["steps"], d["values"], d.get("seconds", 0.0))


def train_loop(step: Callable[[int], dict[str, float]], n_steps: int, desc: str = "training",
               validate: Callable[[], dict[str, float]] | None = None, every: int = 0,
               smooth: float = 0.9, max_seconds: float | None = None) -> History:
    """Call ``step(i)`` for i in 0..n_steps-1 (one optimiser step each, returning metrics).

    ``validate()`` runs every ``every`` steps and at the end. The bar shows a smoothed loss.
    ``max_seconds`` stops training early once that much wall-clock time has passed (a time
    budget, as in ``benchmarks/compare_all.py``); ``len(hist.steps)`` then says how far it got.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}.")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 (or None for no limit), got {max_seconds!r}.")
    hist, ema, t0 = History(), None, time.perf_counter()
    bar = progress(range(n_steps), desc=desc)
    for i in bar:
        metrics = step(i)
        hist.log(i, **metrics)
        if "loss" in metrics:
            ema = metrics["loss"] if ema is None else smooth * ema + (1 - smooth) * metrics["loss"]
            if hasattr(bar, "set_postfix") and i % 10 == 0:
                bar.set_postfix(loss=f"{ema:.3f}")
        out_of_time = max_seconds is not None and time.perf_counter() - t0 >= max_seconds
        if validate is not None and ((every and (i + 1) % every == 0) or i + 1 == n_steps or out_of_time):
            hist.log(i, **validate())
        if out_of_time:
            break
    if hasattr(bar, "close"):
        bar.close()
    hist.seconds = time.perf_counter() - t0
    return hist


def load_or_train(name: str, config: dict[str, Any], train: Callable[[], T]) -> T:
    """Return ``train()``'s result, cached on disk under the key of ``(name, config)``.

    ``config`` must hold everything the result depends on (sizes, steps, seed, data...). The key
    also records which exercises are solved right now, so a model trained with the reference
    implementation is not reused once the student's own code would train it. A file that fails to
    load is retrained, not trusted.
    """
    from .checks import results  # which exercises are the student's own code right now

    full = {"name": name, **config,
            "exercises": {n: r.status == "right" for n, r in sorted(results().items())}}
    path = cache_dir("runs") / f"{name}-{config_key(full)}.pt"
    if path.exists() and os.environ.get("COURSE_RETRAIN", "") not in {"1", "true"}:
        try:
            stored = torch.load(path, map_location="cpu", weights_only=False)
            if stored.get("config") == full:
                print(f"Loaded '{name}' from the cache: trained earlier with these settings and the same "
                      "exercises solved. COURSE_RETRAIN=1 trains again.")
                return stored["result"]
        except Exception:  # a corrupt or foreign file: train again
            pass
    result = train()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"config": full, "result": result}, tmp)
    os.replace(tmp, path)
    return result
