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

import inspect
import os
import re
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor

__all__ = ["Mistake", "ExerciseError", "strict", "run_check", "report", "results", "reset",
           "expect", "expect_type", "expect_shape", "expect_dtype", "expect_finite", "expect_close",
           "expect_grad", "diagnose", "describe", "expect_device_agnostic"]


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


_STUB = re.compile(r"^Exercise [\w.]+(: |$)")


def _is_stub(exc: BaseException) -> bool:
    """The untouched stub: a ``NotImplementedError`` carrying the stub's own message.

    Any other ``NotImplementedError`` (a partly written answer's own, or torch's "derivative not
    implemented") is an attempt that went wrong, and is reported as wrong with its line.
    """
    return isinstance(exc, NotImplementedError) and bool(_STUB.match(str(exc)))


# ----------------------------------------------------------------------------- guarded calls

def describe(obj: Any, depth: int = 0) -> str:
    """A short description of a value's type and structure, for messages ("a tuple of 2: ...")."""
    if isinstance(obj, Tensor):
        return f"a {obj.dtype} tensor of shape {tuple(obj.shape)}" + (
            f" on {obj.device}" if obj.device.type != "cpu" else "")
    if isinstance(obj, bool) or obj is None:
        return repr(obj)
    if isinstance(obj, (int, float)):
        return f"a Python {type(obj).__name__} ({obj:.6g})"
    if isinstance(obj, (tuple, list)):
        inner = ", ".join(describe(o, depth + 1) for o in obj[:4]) if depth < 2 else "..."
        more = ", ..." if len(obj) > 4 else ""
        return f"a {type(obj).__name__} of {len(obj)}" + (f": ({inner}{more})" if obj else "")
    if type(obj).__module__ == "numpy" and hasattr(obj, "shape"):
        return f"a NumPy array of shape {tuple(obj.shape)} (return a torch.Tensor)"
    if isinstance(obj, dict):
        keys = list(obj)[:5]
        return f"a dict with keys {keys}{' ...' if len(obj) > 5 else ''}"
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _copy(obj: Any) -> Any:
    """A copy the student may change freely; tensors keep their autograd link to the original."""
    if isinstance(obj, Tensor):
        return obj.clone()
    if type(obj) is dict:
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    if isinstance(obj, tuple) and type(obj) is tuple:
        return tuple(_copy(v) for v in obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple (e.g. a learner's state)
        return type(obj)(*(_copy(v) for v in obj))
    return obj


class _Named(dict):
    """A NamedTuple's snapshot: its fields by name (so a change names ``state.f``)."""


def _snapshot(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return _Named((k, _snapshot(v)) for k, v in zip(obj._fields, obj))
    if isinstance(obj, dict) and type(obj) is dict:
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return [_snapshot(v) for v in obj]
    return None


def _changed(now: Any, before: Any, where: str) -> str:
    """'' if ``now`` holds what ``before`` recorded, else a description of the first change."""
    if isinstance(before, Tensor):
        if before.device.type == "meta":  # no values to compare (expect_device_agnostic's calls)
            return ""
        if not isinstance(now, Tensor) or now.shape != before.shape:
            return f"`{where}` was replaced or resized"
        if not torch.equal(torch.nan_to_num(now.detach()), torch.nan_to_num(before)):
            return f"the values of `{where}` changed"
        return ""
    if isinstance(before, _Named):
        if not (isinstance(now, tuple) and getattr(now, "_fields", None) == tuple(before)):
            return f"`{where}` was replaced by something else"
        for k, v in zip(now._fields, now):
            msg = _changed(v, before[k], f"{where}.{k}")
            if msg:
                return msg
        return ""
    if isinstance(before, dict):
        if not isinstance(now, dict) or list(now) != list(before):
            return f"the keys of `{where}` changed (now {list(now) if isinstance(now, dict) else now})"
        for k in before:
            msg = _changed(now[k], before[k], f"{where}[{k!r}]")
            if msg:
                return msg
        return ""
    if isinstance(before, list):
        if not isinstance(now, (list, tuple)) or len(now) != len(before):
            return f"the length of `{where}` changed"
        for i, (a, b) in enumerate(zip(now, before)):
            msg = _changed(a, b, f"{where}[{i}]")
            if msg:
                return msg
    return ""


def _advice(name: str, snap: Any) -> str:
    """How to avoid changing an input, in terms of the input's own kind."""
    if isinstance(snap, Tensor):
        return (f"Inputs must stay as they were: compute a new tensor (`{name} = {name} / s` or "
                f"`out = {name} - a * g`) instead of `{name} /= s`, `{name}.add_(...)`, `{name}.data = ...` "
                f"or `{name}[...] = ...`.")
    if isinstance(snap, dict):
        return (f"Inputs must stay as they were: build a new dict (`{{k: v - a * g[k] for k, v in "
                f"{name}.items()}}`) instead of assigning into `{name}` or changing its tensors in place "
                "(`-=`, `.add_()`, `.data`).")
    return (f"Inputs must stay as they were: build new tensors and containers instead of changing "
            f"`{name}` or what it holds in place (`-=`, `.add_()`, `.data`, `.append`, item assignment).")


class _Guarded:
    """The student's function as the probe calls it.

    Every call gets copies of its inputs (tensors cloned, containers rebuilt), so a function that
    changes an input in place cannot spoil the probe's reference; afterwards the copies are
    compared with the originals and a change is reported first and plainly. Exceptions raised
    inside the student's code are tagged, so that :func:`run_check` can tell them from a check that
    failed on what the student returned.
    """

    def __init__(self, fn: Callable, mutates: Iterable[str] = ()):
        self.fn, self.mutates = fn, set(mutates)
        self.returned: list[Any] = []
        self.mutation = ""
        try:
            self.signature = inspect.signature(fn)
        except (TypeError, ValueError):
            self.signature = None
        self.__name__ = getattr(fn, "__name__", "your function")
        self.__wrapped__ = fn

    def _names(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        if self.signature is not None:
            try:
                bound = self.signature.bind(*args, **kwargs)
                return dict(bound.arguments)
            except TypeError:
                pass
        return {**{f"argument {i + 1}": a for i, a in enumerate(args)}, **kwargs}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        copies_a = tuple(_copy(a) for a in args)
        copies_k = {k: _copy(v) for k, v in kwargs.items()}
        named = self._names(copies_a, copies_k)
        before = {k: _snapshot(v) for k, v in self._names(args, kwargs).items()}
        try:
            out = self.fn(*copies_a, **copies_k)
        except Mistake:
            raise
        except BaseException as e:
            try:
                e._course_student = True  # raised inside the student's code
            except AttributeError:
                pass
            raise
        for name, snap in before.items():
            if snap is None or name in self.mutates:
                continue
            change = _changed(named.get(name), snap, name)
            if change:
                self.mutation = f"your function changed its input `{name}` in place ({change}). " + _advice(name, snap)
                raise Mistake(self.mutation)
        self.returned.append(out)
        return out


def run_check(number: str, title: str, student: Callable, reference: Callable,
              probe: Callable[[Callable], None], mutates: Iterable[str] = ()) -> Callable:
    """Run ``probe(student)``; report right / not attempted / wrong; return the function to use.

    The probe calls a guarded version of ``student``: inputs are copied per call and a change to
    them is reported as the mistake (``mutates`` names arguments the exercise is meant to change).
    An exception inside the student's code is reported with its line; ``NotImplementedError`` counts
    as "not attempted" only with the stub's own message. If the check itself fails on what the
    student returned, the message says what was returned instead of blaming the student's code.
    """
    if number in _HANDED_OUT and _HANDED_OUT[number] is student:  # the check cell ran again after handing out the reference
        return _rerun(number, title, reference)
    if not callable(student):
        msg = (f"the check needs a function, but the name holds {describe(student)}. Define the "
               "function in the exercise cell (def ...) and run that cell, then this one.")
        return _finish(Result(number, title, "wrong", msg), student, reference)
    guard = _Guarded(student, mutates)
    try:
        probe(guard)
    except ExerciseError:
        raise
    except Mistake as m:
        msg = guard.mutation or (m.reason + (f"\n   Hint: {m.hint}" if m.hint else ""))
        return _finish(Result(number, title, "wrong", msg), student, reference)
    except Exception as e:
        if guard.mutation:
            return _finish(Result(number, title, "wrong", guard.mutation), student, reference)
        if getattr(e, "_course_student", False):
            if _is_stub(e):
                return _finish(Result(number, title, "not attempted", str(e)), student, reference)
            extra = (" This NotImplementedError is not the exercise's stub, so it counts as an attempt: "
                     "finish the code or remove that line." if isinstance(e, NotImplementedError) else "")
            if "numpy()" in str(e) or "numpy" in _where(e):
                extra += " Return a torch.Tensor: the check (and the chapter) computes with tensors, not NumPy arrays."
            msg = f"your code raised {type(e).__name__}: {e}{_where(e)}.{extra}"
            return _finish(Result(number, title, "wrong", msg), student, reference)
        got = describe(guard.returned[-1]) if guard.returned else "nothing yet"
        msg = (f"the check could not use what your function returned: it returned {got}, and using it "
               f"failed with {type(e).__name__}: {e}. Compare what you return with what the exercise "
               "asks for (its type, shape and structure).")
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
                            "fix the first failure first.)") from None  # no traceback of the check's probes
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


def _float64_hint(a: Tensor, e: Tensor) -> str:
    """Say "compute in float64" when a float32 answer is right up to float32 rounding."""
    if a.shape != e.shape or e.dtype != torch.float64:
        return ""
    if a.dtype in (torch.float32, torch.float16, torch.bfloat16):
        if torch.allclose(a.double().cpu(), e.cpu(), atol=1e-4, rtol=1e-3):
            return (f" Your result is {a.dtype} but the check's inputs are float64: compute in float64 "
                    "(no .float(), and give new tensors the inputs' dtype, e.g. "
                    "torch.zeros(..., dtype=x.dtype)).")
    elif a.dtype == torch.float64:
        rel = ((a.double() - e.double()).abs().max() / e.double().abs().max().clamp_min(1e-300)).item()
        if 1e-9 < rel < 1e-5:  # float64, yet right only to float32's ~7 digits
            return (" Your value agrees to about 7 significant digits only, as if one step of your "
                    "computation ran in float32 (a .float(), or a new tensor made without dtype=): "
                    "compute in float64 throughout (the inputs are float64).")
    return ""


def _fmt(v: float, other: float) -> str:
    """Enough digits to show that two numbers differ."""
    for digits in (6, 9, 12, 17):
        if f"{v:.{digits}g}" != f"{other:.{digits}g}":
            return f"{v:.{digits}g}"
    return f"{v:.17g}"


def expect_close(actual: Tensor | float, expected: Tensor | float, what: str, atol: float = 1e-5,
                 rtol: float = 1e-4, hint: str = "") -> None:
    """Values equal within tolerance; otherwise name the first wrong entry."""
    a, e = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
    if a.shape != e.shape:
        raise Mistake(f"{what} has shape {tuple(a.shape)}, expected {tuple(e.shape)}.", hint)
    if _close(a, e, atol, rtol):
        return
    f64 = _float64_hint(a, e)
    if a.dim() == 0:
        raise Mistake(f"{what} is {_fmt(a.item(), e.item())}, expected {_fmt(e.item(), a.item())}.{f64}",
                      hint)
    diff = ~torch.isclose(a.double().cpu(), e.double().cpu(), atol=atol, rtol=rtol)
    idx = tuple(diff.nonzero()[0].tolist())
    ga, ge = a[idx].item(), e[idx].item()
    raise Mistake(f"{what} differs at index {list(idx)}: got {_fmt(ga, ge)}, expected "
                  f"{_fmt(ge, ga)} ({int(diff.sum())} of {a.numel()} entries differ).{f64}", hint)


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


def expect_device_agnostic(fn: Callable, *args: Any, what: str = "your function", **kwargs: Any) -> None:
    """Call ``fn`` once with every tensor moved to the ``meta`` device.

    A tensor made without ``device=`` (``torch.eye(n)``, ``torch.zeros(k)``) lands on the CPU and then
    meets the inputs' device: on a GPU that crashes. The ``meta`` device shows the same mistake on a
    CPU-only machine. Operations the meta device does not support are not held against the student.
    """
    def to_meta(o: Any) -> Any:
        if isinstance(o, Tensor):
            return o.detach().to("meta").requires_grad_(o.requires_grad)
        if isinstance(o, dict):
            return {k: to_meta(v) for k, v in o.items()}
        if isinstance(o, tuple) and hasattr(o, "_fields"):  # a NamedTuple
            return type(o)(*(to_meta(v) for v in o))
        if isinstance(o, (list, tuple)):
            return type(o)(to_meta(v) for v in o)
        return o
    try:
        fn(*to_meta(args), **to_meta(kwargs))
    except Mistake:
        raise
    except Exception as e:
        text = str(e)
        if "meta" in text and "cpu" in text.lower() and "device" in text.lower():
            raise Mistake(f"{what} makes a tensor on the CPU while its inputs are on another device "
                          f"({type(e).__name__}: {text.splitlines()[0]}{_where(e)}). On a GPU this "
                          "crashes.", "Create new tensors on the inputs' device: torch.eye(n, "
                          "device=x.device, dtype=x.dtype), or torch.zeros_like(x).")
