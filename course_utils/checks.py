"""Friendly exercise checks: right / not attempted / wrong with a reason.

Every exercise in a chapter is followed by a check cell::

    sample_episode = check_sample_episode(sample_episode)

A check runs the student's function on small fixed inputs and returns the
function the chapter should use from then on:

- **right**: the student's own function;
- **not attempted** (the stub still raises ``NotImplementedError``): says so and
  returns the reference implementation, so a student may skip an exercise;
- **wrong**: a specific diagnosis (shape, dtype, device, gradient flow, the first
  wrong value, the likely classic mistake) and the reference implementation.

With ``COURSE_STRICT=1`` (what ``make check`` sets) *not attempted* and *wrong*
raise :class:`ExerciseError` instead, so nbval fails on them. Chapter modules
write probes with the ``expect_*`` helpers below, which raise :class:`Mistake`.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

__all__ = ["Mistake", "ExerciseError", "strict", "run_check", "report", "results", "reset",
           "expect", "expect_type", "expect_shape", "expect_dtype", "expect_finite", "expect_close",
           "expect_grad", "diagnose"]


class Mistake(Exception):
    """Raised by a probe: the student's answer is wrong, with the reason (and an optional hint)."""

    def __init__(self, reason: str, hint: str = ""):
        super().__init__(reason)
        self.reason, self.hint = reason, hint


class ExerciseError(AssertionError):
    """Strict mode: an exercise is wrong or not attempted."""


@dataclass
class Result:
    number: str
    title: str
    status: str  # "right" | "wrong" | "not attempted"
    message: str = ""


_RESULTS: dict[str, Result] = {}
_HANDED_OUT: dict[str, Callable] = {}  # exercise -> the reference a failed check returned
_MARK = {"right": "✅", "wrong": "❌", "not attempted": "⭕"}


def strict() -> bool:
    """True when ``$COURSE_STRICT`` asks that wrong or missing exercises raise."""
    return os.environ.get("COURSE_STRICT", "").strip().lower() in {"1", "true", "yes"}


def _where(exc: BaseException) -> str:
    """The deepest frame of the student's own code in a traceback, as 'line N: code'."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "course_utils" not in f.filename and "site-packages" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at line {f.lineno}: `{(f.line or '').strip()}`)"


def _is_stub(exc: BaseException) -> bool:
    return isinstance(exc, NotImplementedError)


def run_check(number: str, title: str, student: Callable, reference: Callable,
              probe: Callable[[Callable], None]) -> Callable:
    """Run ``probe(student)``; report right / not attempted / wrong; return the function to use."""
    if _HANDED_OUT.get(number) is student:  # the check cell ran again after handing out the reference
        return _rerun(number, title, reference)
    try:
        probe(student)
    except Mistake as m:
        msg = m.reason + (f"\n   Hint: {m.hint}" if m.hint else "")
        return _finish(Result(number, title, "wrong", msg), student, reference)
    except NotImplementedError as e:
        return _finish(Result(number, title, "not attempted", str(e)), student, reference)
    except ExerciseError:
        raise
    except Exception as e:  # the student's code crashed on the check's input
        msg = f"your code raised {type(e).__name__}: {e}{_where(e)}"
        return _finish(Result(number, title, "wrong", msg), student, reference)
    return _finish(Result(number, title, "right"), student, reference)


def _finish(r: Result, student: Callable, reference: Callable) -> Callable:
    _RESULTS[r.number] = r
    head = f"{_MARK[r.status]} Exercise {r.number} ({r.title}): {r.status}"
    if r.status == "right":
        _HANDED_OUT.pop(r.number, None)
        print(f"{head}. Your implementation is used from here on.")
        return student
    text = f"{head} yet." if r.status == "not attempted" else f"{head}.\n   {r.message}"
    if strict():
        raise ExerciseError(text + "\n   (Strict mode, COURSE_STRICT=1: every exercise must be right. Your "
                            "function stays in place, so later exercises that call it may fail too: "
                            "fix the first failure first.)")
    carry_on = ("The chapter continues with the reference implementation; come back to it whenever "
                "you like." if r.status == "not attempted" else
                "The chapter continues with the reference implementation.")
    print(f"{text}\n   {carry_on}" if r.status == "wrong" else f"{text} {carry_on}")
    _HANDED_OUT[r.number] = reference
    return reference


def _rerun(number: str, title: str, reference: Callable) -> Callable:
    """The name already holds the reference implementation: keep the earlier verdict."""
    earlier = _RESULTS.get(number, Result(number, title, "not attempted"))
    _RESULTS[number] = earlier
    text = (f"{_MARK[earlier.status]} Exercise {number} ({title}): this name now holds the reference "
            "implementation, which the check handed out earlier. Run your exercise cell again (it "
            "redefines your function), then this check cell.")
    if strict():
        raise ExerciseError(text)
    print(text)
    return reference


def results() -> Mapping[str, Result]:
    """The latest result of each exercise checked in this kernel."""
    return dict(_RESULTS)


def reset() -> None:
    """Forget all results (a fresh chapter)."""
    _RESULTS.clear()
    _HANDED_OUT.clear()


def report(expected: list[str] | None = None) -> str:
    """Print a progress table for the chapter; exercises never checked count as not attempted."""
    numbers = list(dict.fromkeys((expected or []) + list(_RESULTS)))
    lines = []
    for n in numbers:
        r = _RESULTS.get(n, Result(n, "", "not attempted"))
        lines.append(f"{_MARK[r.status]} Exercise {n}{' (' + r.title + ')' if r.title else ''}: {r.status}")
    done = sum(_RESULTS.get(n, Result(n, "", "")).status == "right" for n in numbers)
    lines.append(f"{done} of {len(numbers)} exercises right.")
    text = "\n".join(lines)
    print(text)
    return text


# ----------------------------------------------------------------------------- probe helpers

def expect(condition: bool, reason: str, hint: str = "") -> None:
    """Raise :class:`Mistake` unless ``condition``."""
    if not condition:
        raise Mistake(reason, hint)


def expect_type(obj: Any, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(obj, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise Mistake(f"{what} should be a {names}, but it is a {type(obj).__name__}.")


def expect_shape(t: Tensor, shape: tuple[int, ...], what: str, hint: str = "") -> None:
    expect_type(t, Tensor, what)
    if tuple(t.shape) != tuple(shape):
        raise Mistake(f"{what} has shape {tuple(t.shape)}, expected {tuple(shape)}.", hint)


def expect_dtype(t: Tensor, dtype: torch.dtype | tuple[torch.dtype, ...], what: str) -> None:
    ok = t.dtype in dtype if isinstance(dtype, tuple) else t.dtype == dtype
    if not ok:
        raise Mistake(f"{what} has dtype {t.dtype}, expected {dtype}.")


def expect_finite(t: Tensor, what: str, hint: str = "") -> None:
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise Mistake(f"{what} contains NaN or inf (first at index {bad}: {t[tuple(bad)].item()}).", hint)


def _close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and torch.allclose(a.double().cpu(), b.double().cpu(), atol=atol, rtol=rtol)


def expect_close(actual: Tensor | float, expected: Tensor | float, what: str, atol: float = 1e-5,
                 rtol: float = 1e-4, hint: str = "") -> None:
    """Values equal within tolerance; otherwise name the first wrong entry."""
    a, e = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
    if a.shape != e.shape:
        raise Mistake(f"{what} has shape {tuple(a.shape)}, expected {tuple(e.shape)}.", hint)
    if _close(a, e, atol, rtol):
        return
    if a.dim() == 0:
        raise Mistake(f"{what} is {a.item():.6g}, expected {e.item():.6g}.", hint)
    diff = ~torch.isclose(a.double().cpu(), e.double().cpu(), atol=atol, rtol=rtol)
    idx = tuple(diff.nonzero()[0].tolist())
    raise Mistake(f"{what} differs at index {list(idx)}: got {a[idx].item():.6g}, expected "
                  f"{e[idx].item():.6g} ({int(diff.sum())} of {a.numel()} entries differ).", hint)


def expect_grad(t: Tensor, what: str, hint: str = "") -> None:
    """``t`` must carry a gradient path (``requires_grad``)."""
    expect_type(t, Tensor, what)
    if not t.requires_grad:
        raise Mistake(f"{what} does not carry gradients (requires_grad is False): something in your "
                      "code detaches it (.detach(), .item(), .numpy(), torch.no_grad or a new tensor).",
                      hint)


def diagnose(actual: Tensor | float, expected: Tensor | float, what: str,
             mistakes: Mapping[str, Tensor | float] | None = None, atol: float = 1e-5,
             rtol: float = 1e-4, hint: str = "") -> None:
    """Like :func:`expect_close`, but first names a known classic mistake whose output matches."""
    a, e = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
    if a.shape == e.shape and _close(a, e, atol, rtol):
        return
    for explanation, wrong in (mistakes or {}).items():
        w = torch.as_tensor(wrong).detach()
        if a.shape == w.shape and _close(a, w, atol, rtol):
            raise Mistake(f"{what}: wrong. It looks like {explanation}", hint)
    expect_close(a, e, what, atol, rtol, hint)
