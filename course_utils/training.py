"""Training helpers: a loop with a progress bar and a history, and a load-or-train cache.

The cache stores what a slow computation *produced* (weights, curves), keyed by
the full configuration, so a notebook re-run skips the training but every
number it shows is still computed from that model, never typed in.
``COURSE_RETRAIN=1`` ignores the cache.
"""
from __future__ import annotations

import functools
import hashlib
import os
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from .cache import cache_dir, config_key
from .progress import progress

T = TypeVar("T")

__all__ = ["History", "train_loop", "load_or_train", "cache_key", "code_fingerprint", "library_fingerprint"]


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
                bar.set_postfix(loss=f"{ema:.3f}", refresh=False)  # drawn with the next redraw
        out_of_time = max_seconds is not None and time.perf_counter() - t0 >= max_seconds
        if validate is not None and ((every and (i + 1) % every == 0) or i + 1 == n_steps or out_of_time):
            hist.log(i, **validate())
        if out_of_time:
            break
    if hasattr(bar, "close"):
        bar.close()
    hist.seconds = time.perf_counter() - t0
    return hist


# Modules whose code cannot change a trained result (messages, plots, notebook tooling).
_NOT_RESULTS = {"checks.py", "nbcheck.py", "run_notebooks.py", "exercises.py", "plots.py", "widgets.py",
                "progress.py",
                # automatic labelling works on a trained embedding; none of it changes how one is trained
                "autolabel_tool.py", "labelling_widget.py", "labelling.py", "label_audit.py",
                "labelling_study.py", "confidence.py", "selective.py", "soft_kmeans.py", "self_training.py",
                # chapter 07's checks: its cached results (the embedding, the baseline) are trained
                # before any exercise and never call a reference implementation
                "ch07.py"}


@functools.lru_cache(maxsize=1)
def library_fingerprint() -> str:
    """A hash of every course_utils module that can change a result (all but messages and plots)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if path.name not in _NOT_RESULTS:
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _code_hash(code: types.CodeType) -> str:
    h = hashlib.sha256(code.co_code)
    for const in code.co_consts:
        h.update((_code_hash(const) if isinstance(const, types.CodeType) else repr(const)).encode())
    h.update(repr(code.co_names).encode())
    return h.hexdigest()[:16]


def _notebook_code(fn: Any) -> bool:
    """Code the user wrote (a notebook cell or a script), not a library's."""
    module = getattr(fn, "__module__", "") or ""
    return module == "__main__" or module.startswith("__ipython") or not module


def code_fingerprint(obj: Any, _seen: set[int] | None = None, _depth: int = 0) -> Any:
    """A JSON-able summary of ``obj`` that changes when the code or the settings behind it change.

    Functions written in the notebook contribute their byte code, defaults, closure and the
    globals they name (a configuration dict such as ``LEO_CFG``, other notebook functions,
    the student's exercise functions), recursively. Library functions contribute their name:
    their code is in :func:`library_fingerprint`. Tensors contribute shape, dtype and, when
    small, their values (else two sums); other objects their type (and a short repr).
    """
    seen = set() if _seen is None else _seen
    if _depth > 8:
        return f"<{type(obj).__name__}>"
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [code_fingerprint(v, seen, _depth + 1) for v in obj[:200]] + ([len(obj)] if len(obj) > 200 else [])
    if isinstance(obj, dict):
        if len(obj) > 200:
            return f"<dict of {len(obj)}>"
        return {str(k): code_fingerprint(v, seen, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.numel() <= 64:
            return {"tensor": t.cpu().tolist(), "dtype": str(t.dtype)}
        f = (t.abs() if t.is_complex() else t).double()
        return {"shape": list(t.shape), "dtype": str(t.dtype), "sum": f.sum().item(), "abs": f.abs().sum().item()}
    if isinstance(obj, (torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, functools.partial):
        return {"partial": code_fingerprint(obj.func, seen, _depth + 1),
                "args": code_fingerprint(list(obj.args), seen, _depth + 1),
                "kwargs": code_fingerprint(dict(obj.keywords), seen, _depth + 1)}
    if isinstance(obj, types.MethodType):
        return {"method": code_fingerprint(obj.__func__, seen, _depth + 1),
                "of": code_fingerprint(obj.__self__, seen, _depth + 1)}
    if isinstance(obj, types.FunctionType):
        name = f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
        if not _notebook_code(obj):
            return name
        if id(obj) in seen:
            return name
        seen.add(id(obj))
        g = obj.__globals__
        return {"function": name, "code": _code_hash(obj.__code__),
                "defaults": code_fingerprint(list(obj.__defaults__ or ()), seen, _depth + 1),
                "kwdefaults": code_fingerprint(dict(obj.__kwdefaults__ or {}), seen, _depth + 1),
                "closure": [code_fingerprint(c.cell_contents, seen, _depth + 1) if _filled(c) else None
                            for c in obj.__closure__ or ()],
                "globals": {n: code_fingerprint(g[n], seen, _depth + 1)
                            for n in sorted(_code_names(obj.__code__)) if n in g}}
    if isinstance(obj, types.ModuleType):
        return f"<module {obj.__name__}>"
    if isinstance(obj, type):
        if _notebook_code(obj) and id(obj) not in seen:
            seen.add(id(obj))
            return {"class": obj.__qualname__, "body": code_fingerprint(
                {k: v for k, v in vars(obj).items() if isinstance(v, (types.FunctionType, int, float, str))},
                seen, _depth + 1)}
        return f"<class {obj.__module__}.{obj.__qualname__}>"
    if isinstance(obj, torch.nn.Module):
        return {"module": type(obj).__name__, "repr": repr(obj)[:2000]}
    text = repr(obj)
    if len(text) < 200 and " at 0x" not in text:
        return f"<{type(obj).__name__} {text}>"
    return f"<{type(obj).__name__}>"


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def cache_key(name: str, config: dict[str, Any], train: Callable[[], Any]) -> dict[str, Any]:
    """Everything a cached result depends on: the settings, the code, and which exercises are solved."""
    from .checks import results  # which exercises are the student's own code right now

    return {"name": name, **config,
            "exercises": {n: r.status == "right" for n, r in sorted(results().items())},
            "code": code_fingerprint(train), "library": library_fingerprint()}


def load_or_train(name: str, config: dict[str, Any], train: Callable[[], T]) -> T:
    """Return ``train()``'s result, cached on disk under the key of ``(name, config, code)``.

    ``config`` should hold everything the result depends on (sizes, steps, seed, data...). The key
    also covers the code: ``train`` itself, the notebook functions and settings it names (read
    through :func:`code_fingerprint`), the course library's source, and which exercises are solved
    right now, so that neither a changed setting nor a student's own function is ever answered by a
    model trained without it. (So ``train`` should not name lists or dicts that collect results: a
    change there, harmless to the result, would also retrain.) A file that fails to load is
    retrained, not trusted.
    """
    full = cache_key(name, config, train)
    path = cache_dir("runs") / f"{name}-{config_key(full)}.pt"
    if path.exists() and os.environ.get("COURSE_RETRAIN", "") not in {"1", "true"}:
        try:
            stored = torch.load(path, map_location="cpu", weights_only=False)
            if stored.get("config") == full:
                print(f"Loaded '{name}' from the cache: trained earlier with these settings, the same code "
                      "and the same exercises solved. COURSE_RETRAIN=1 trains again.")
                return stored["result"]
        except Exception:  # a corrupt or foreign file: train again
            pass
    result = train()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"config": full, "result": result}, tmp)
    os.replace(tmp, path)
    return result
