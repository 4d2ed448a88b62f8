"""Checks for chapter 04 (the Meta-learner LSTM): the cell-state update, the preprocessing, one step.

Classic mistakes recognised (each computed, then matched against the student's output):
adding the gradient instead of subtracting it, the forget gate on the gradient term instead of
on the previous parameters (or the two gates swapped, or no forget gate), preprocessing
branches swapped, the sign channel missing, the channels in the wrong order, log base 10, a
NaN at 0 (log 0 times a zero mask), and, in the meta-learner step: the learner's gradient or
loss not detached (a second-order path through them), the half-fix (gradient detached for the
LSTM's input but not in the update), theta itself detached, the gates given the detached copy
of theta, the loss and gradient columns swapped in the LSTM's input, h and c swapped, and the
gates' previous-gate inputs swapped. A wrong step is reported by output (theta_t, h, c, f, i).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import (Mistake, diagnose, expect, expect_close, expect_finite, expect_grad, expect_shape,
                      expect_type, run_check)
from ..meta_lstm import MetaLSTM, State, cell_update as reference_cell_update
from ..meta_lstm import meta_learner_step as reference_meta_learner_step
from ..meta_lstm import preprocess as reference_preprocess

__all__ = ["EXERCISES", "cell_update", "preprocess", "meta_learner_step", "reference_cell_update",
           "reference_preprocess", "reference_meta_learner_step"]

EXERCISES = ["4.1", "4.2", "4.3"]
D = torch.float64


# ----------------------------------------------------------------------------- 4.1

def _probe_cell_update(fn: Callable) -> None:
    g = torch.Generator().manual_seed(0)
    p = 9
    c_prev = torch.randn(p, generator=g, dtype=D).requires_grad_()
    f = (0.5 + 0.5 * torch.rand(p, generator=g, dtype=D)).requires_grad_()
    i = (0.5 * torch.rand(p, generator=g, dtype=D)).requires_grad_()
    grad = torch.randn(p, generator=g, dtype=D)
    out = fn(c_prev, f, i, grad)
    expect_shape(out, (p,), "c_t", "Every operation is element-wise: c_t has the shape of c_{t-1}.")
    c, fd, id_ = c_prev.detach(), f.detach(), i.detach()
    diagnose(out, reference_cell_update(c, fd, id_, grad), "c_t (the new parameters)", {
        "the gradient is added: the candidate is c~_t = -grad, so c_t = f * c_{t-1} - i * grad "
        "(a step *down* the loss).": fd * c + id_ * grad,
        "the forget gate multiplies the gradient term instead of the previous parameters: "
        "c_t = f * c_{t-1} - i * grad.": c - fd * id_ * grad,
        "the gates are swapped: the forget gate f scales c_{t-1}, the input gate i scales the "
        "candidate -grad.": id_ * c - fd * grad,
        "the forget gate is missing: c_t = f * c_{t-1} - i * grad (with f = 1 this is SGD).": c - id_ * grad,
        "the forget gate multiplies the whole update: c_t = f * c_{t-1} - i * grad, not "
        "f * (c_{t-1} - i * grad).": fd * (c - id_ * grad),
        "the input gate is missing: it is the learning rate, c_t = f * c_{t-1} - i * grad.": fd * c - grad,
    }, atol=1e-12, rtol=1e-10)
    expect_grad(out, "c_t", "Keep c_t a function of c_{t-1}, f and i: no .detach(), .data or no_grad.")
    gc, gf, gi = torch.autograd.grad(out.sum(), (c_prev, f, i), allow_unused=True)
    cut = [name for name, g_ in (("the forget gate f", gf), ("the input gate i", gi),
                                 ("the previous parameters c_{t-1}", gc)) if g_ is None or not g_.abs().sum() > 0]
    if cut:
        listed = cut[0] if len(cut) == 1 else ", ".join(cut[:-1]) + " and " + cut[-1]
        gate = ("f_t: the meta-learner could not learn its forget gate (W_F, b_F)" if "the forget gate f" in cut
                else "i_t: the meta-learner could not learn its input gate, the learning rate (W_I, b_I)"
                if "the input gate i" in cut else "c_{t-1}: the meta-gradient could not reach c_0, "
                "the learned initialisation")
        raise Mistake(f"no gradient reaches {listed} (the values are right, but something is detached): "
                      f"the meta-gradient stops at {gate}.",
                      "Write c_t = f * c_prev - i * grad with no .detach(), .data or .item() on f, i or c_prev.")
    expect(torch.allclose(gc, fd), "d c_t / d c_{t-1} should be f_t: the meta-gradient "
           "to c_0 (the initialisation) flows through f_t * c_{t-1}.")


def cell_update(student: Callable) -> Callable:
    """Exercise 4.1: c_t = f_t * c_{t-1} + i_t * (-grad_t)."""
    return run_check("4.1", "the cell-state update", student, reference_cell_update, _probe_cell_update)


# ----------------------------------------------------------------------------- 4.2

def _pre_variant(x: Tensor, p: float, variant: str) -> Tensor:
    big = x.abs() >= math.exp(-p)
    logx = torch.log(x.abs().clamp_min(math.exp(-p)))
    small_pair = (torch.full_like(x, -1.0), math.exp(p) * x)
    if variant == "swapped":  # the big branch's formula where x is small and the reverse
        logs = torch.log(x.abs().clamp_min(1e-300)) / p
        first = torch.where(big, small_pair[0], logs)
        second = torch.where(big, small_pair[1], torch.sign(x))
        return torch.stack([first, second], -1)
    if variant == "no_sign":
        return torch.stack([torch.where(big, logx / p, small_pair[0]),
                            torch.where(big, torch.ones_like(x), small_pair[1])], -1)
    if variant == "x_not_sign":
        return torch.stack([torch.where(big, logx / p, small_pair[0]),
                            torch.where(big, x, small_pair[1])], -1)
    if variant == "order":
        return reference_preprocess(x, p).flip(-1)
    if variant == "log10":
        return torch.stack([torch.where(big, logx / math.log(10) / p, small_pair[0]),
                            torch.where(big, torch.sign(x), small_pair[1])], -1)
    if variant == "no_p":
        return torch.stack([torch.where(big, logx, small_pair[0]),
                            torch.where(big, torch.sign(x), small_pair[1])], -1)
    if variant == "small_no_scale":
        return torch.stack([torch.where(big, logx / p, small_pair[0]),
                            torch.where(big, torch.sign(x), x)], -1)
    raise ValueError(variant)


_PRE_MISTAKES = {
    "swapped": "the two branches are swapped: use (log|x| / p, sign x) when |x| >= e^-p (large values) and "
               "(-1, e^p x) when |x| < e^-p (tiny values).",
    "no_sign": "the sign channel is missing: for |x| >= e^-p the second entry is sign(x), so that +g and "
               "-g (same log|x|) stay distinguishable.",
    "x_not_sign": "the second channel holds x itself on the large branch; it should be sign(x) (x spans "
                  "many orders of magnitude, which is what the preprocessing avoids).",
    "order": "the two channels are in the wrong order: (log|x| / p, sign x), i.e. out[..., 0] is the "
             "log part and out[..., 1] the sign part.",
    "log10": "it uses log base 10; the formula uses the natural log (torch.log).",
    "no_p": "log|x| is not divided by p.",
    "small_no_scale": "on the tiny branch the second entry is e^p * x, not x.",
}


def _probe_preprocess(fn: Callable) -> None:
    p = 10.0
    x = torch.tensor([[0.0, 1e-7, -2e-6, 3e-5, math.exp(-p)],
                      [-4e-4, 0.02, -0.7, 3.0, -1e5]], dtype=D)
    out = fn(x, p)
    expect_type(out, Tensor, "preprocess's result")
    if out.shape == x.shape:
        raise Mistake("the result has the shape of x: each value becomes *two* numbers, so the result "
                      "has shape x.shape + (2,) (the sign channel is missing?).",
                      "torch.stack([first, second], dim=-1).")
    expect_shape(out, tuple(x.shape) + (2,), "preprocess(x)", "Stack the two channels on a new last "
                 "dimension: torch.stack([first, second], dim=-1).")
    expect(out.dtype == x.dtype, f"preprocess(x) has dtype {out.dtype}; keep the input's ({x.dtype}).")
    expect_finite(out, "preprocess(x) at x = 0 or a tiny value",
                  "log(0) is -inf, and 0 * (-inf) is NaN: do not multiply by a mask, choose the branch with "
                  "torch.where, and take the log of x.abs().clamp_min(math.exp(-p)) so it is never log 0.")
    want = reference_preprocess(x, p)
    diagnose(out, want, "preprocess(x)", {_PRE_MISTAKES[v]: _pre_variant(x, p, v) for v in _PRE_MISTAKES},
             atol=1e-9, rtol=1e-9)
    x2 = torch.tensor([0.0, 0.05, -0.002, 1e-4], dtype=D)
    out2 = fn(x2, 2.0)
    expect_finite(out2, "preprocess(x, p=2)")
    diagnose(out2, reference_preprocess(x2, 2.0), "preprocess(x, p=2)", {
        "p is not used (is 10 hard-coded?): the threshold is e^-p and the scales 1/p and e^p.":
            reference_preprocess(x2, 10.0)}, atol=1e-9, rtol=1e-9)


def preprocess(student: Callable) -> Callable:
    """Exercise 4.2: (log|x|/p, sign x) if |x| >= e^-p else (-1, e^p x)."""
    return run_check("4.2", "gradient preprocessing", student, reference_preprocess, _probe_preprocess)


# ----------------------------------------------------------------------------- 4.3

def _meta() -> MetaLSTM:
    torch.manual_seed(0)
    learner = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(D)
    meta = MetaLSTM(learner, hidden=3, input_bias=(-2.0, -1.0), forget_bias=(1.0, 2.0))
    with torch.no_grad():  # gates that read their inputs noticeably, so each input matters
        meta.W_F.weight.uniform_(-0.5, 0.5)
        meta.W_I.weight.uniform_(-0.5, 0.5)
    return meta


def _inputs(meta: MetaLSTM):
    g = torch.Generator().manual_seed(1)
    x_s = torch.randn(6, 4, generator=g, dtype=D)
    y_s = torch.tensor([0, 1, 2, 0, 1, 2])
    p = meta.n_params
    state = State(0.3 * torch.randn(p, meta.hidden, generator=g, dtype=D),
                  0.3 * torch.randn(p, meta.hidden, generator=g, dtype=D),
                  torch.rand(p, generator=g, dtype=D), 0.2 * torch.rand(p, generator=g, dtype=D))
    theta = (meta.c_0.detach() + 0.1 * torch.randn(p, generator=g, dtype=D)).requires_grad_()
    return theta, state, x_s, y_s


def _variant(meta: MetaLSTM, theta: Tensor, state: State, x_s: Tensor, y_s: Tensor, variant: str):
    """A (possibly wrong) meta-learner step, built from the reference pieces."""
    attached = variant in ("second_order", "loss_attached", "half_fix")
    leaf = theta if attached else theta.detach().requires_grad_()
    loss = F.cross_entropy(meta.learner_forward(leaf, x_s), y_s)
    (grad,) = torch.autograd.grad(loss, leaf, create_graph=variant in ("second_order", "half_fix"),
                                  retain_graph=attached)
    grad_in = grad if variant == "second_order" else grad.detach()              # into the LSTM
    grad_up = grad if variant in ("second_order", "half_fix") else grad.detach()  # into the update
    loss_in = loss if variant in ("second_order", "loss_attached") else loss.detach()
    g_cols = reference_preprocess(grad_in, meta.p)
    l_cols = reference_preprocess(loss_in.reshape(1), meta.p).expand(grad.numel(), 2)
    x = torch.cat([l_cols, g_cols] if variant == "cols_swapped" else [g_cols, l_cols], 1)
    h, c = meta.lstm(x, (state.h, state.c))
    h_gates = state.h if variant == "raw_state" else c if variant == "hc_swapped" else h
    if variant == "hc_swapped":  # c, h = meta.lstm(...)
        h, c = c, h
    theta_gates = leaf if variant == "gates_leaf" else theta
    prev = (state.i, state.f) if variant == "prev_gates_swapped" else (state.f, state.i)
    f, i = meta.gates(h_gates, theta_gates, *prev)
    base = theta.detach() if variant == "theta_detached" else theta
    new = f * base + i * grad_up if variant == "plus" else reference_cell_update(base, f, i, grad_up)
    return new, (State(c, h, f, i) if variant == "hc_swapped_return" else State(h, c, f, i))


_NAMES = ("theta_t", "h", "c", "f", "i")
_ORDER = ("h", "c", "f", "i", "theta_t")  # the order the step computes them
_WHAT = {"theta_t": "theta_t (the new parameters)", "h": "h (the first LSTM layer's new hidden state)",
         "c": "c (the first LSTM layer's new cell state)", "f": "f (the new forget gate)",
         "i": "i (the new input gate)"}
_HINT = {"h": "h, c = meta.lstm(inputs, (state.h, state.c)) with inputs of shape (P, 4) = "
              "[preprocess(grad) | preprocess(loss)]: the gradient's two columns first.",
         "f": "f, i = meta.gates(h, theta, state.f, state.i), with the *new* h.",
         "theta_t": "theta_t = cell_update(theta, f, i, grad) = f * theta - i * grad."}
_HINT["c"], _HINT["i"] = _HINT["h"], _HINT["f"]
_TOL = dict(atol=1e-10, rtol=1e-8)


def _outputs(new: Tensor, state: State) -> dict[str, Tensor]:
    return {n: t.detach() for n, t in zip(_NAMES, (new, *state))}


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), **_TOL)


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


_STEP_MISTAKES = {
    "it adds the gradient: theta_t = f * theta_{t-1} - i * grad.": "plus",
    "the gates read the wrong previous gate: f_t takes f_{t-1} and i_t takes i_{t-1} "
    "(meta.gates(h, theta, state.f, state.i)).": "prev_gates_swapped",
    "the gates read the *old* first-layer output: run meta.lstm first and give its new h to "
    "meta.gates.": "raw_state",
    "the loss and gradient columns are swapped in torch.cat: the LSTM's input is (P, 4) = "
    "[preprocess(grad) | preprocess(loss)], the gradient's two columns first.": "cols_swapped",
    "h and c are swapped: nn.LSTMCell returns (h, c) in that order (h, c = meta.lstm(...)), and the "
    "gates read h, the hidden state, not the cell state c.": "hc_swapped",
    "h and c are swapped in the returned State: it is State(h, c, f, i), h first.": "hc_swapped_return",
}


def _check_forward(meta: MetaLSTM, theta: Tensor, state: State, x_s: Tensor, y_s: Tensor,
                   got: dict[str, Tensor]) -> None:
    want = _outputs(*_variant(meta, theta, state, x_s, y_s, "right"))
    wrong = [n for n in _ORDER if not _same(got[n], want[n])]
    if not wrong:
        return
    right = [n for n in _ORDER if n not in wrong]
    which = f"{_listing(wrong)} {'is' if len(wrong) == 1 else 'are'} wrong" + (
        f" ({_listing(right)} right)" if right else "")
    for msg, v in _STEP_MISTAKES.items():
        alt = _outputs(*_variant(meta, theta, state, x_s, y_s, v))
        if all(_same(got[n], alt[n]) for n in _NAMES):
            raise Mistake(f"{which}. It looks like {msg}")
    first = wrong[0]
    start = f"; start with {first}, the first of them the step computes" if len(wrong) > 1 else ""
    expect_close(got[first], want[first], f"{which}{start}: {_WHAT[first]}",
                 hint=_HINT[first], **_TOL)


def _jvp(out: Tensor, wrt: Tensor, v: Tensor) -> Tensor | None:
    if not out.requires_grad:
        return None
    (g,) = torch.autograd.grad((out * v).sum(), wrt, retain_graph=True, allow_unused=True)
    return None if g is None else g


_JAC = ("how theta_t changes when theta_{t-1} changes (d theta_t / d theta_{t-1}, the step's Jacobian, "
        "measured along one random direction)")

_JAC_MISTAKES = {
    "the learner's gradient is not detached: a second-order path (through the Hessian) runs from "
    "theta_t back into theta_{t-1}. The paper treats grad_t and L_t as inputs (no second derivatives): "
    "compute them on theta.detach().requires_grad_() and .detach() them.": "second_order",
    "the gradient is detached where it enters the LSTM but not in the update (the half-fix): "
    "cell_update(theta, f, i, grad) still uses the grad computed with create_graph=True, so a "
    "second-order path (through the Hessian) changes how theta_t depends on theta_{t-1}. Compute grad on "
    "theta.detach().requires_grad_(), without create_graph, and use the detached grad everywhere.": "half_fix",
    "the learner's loss L_t enters the LSTM without .detach(): a path runs from the LSTM's input back "
    "into theta_{t-1}. Detach the loss (and the gradient) before preprocessing them.": "loss_attached",
    "the gates read the detached copy (leaf) instead of theta: the values are right, but f and i no longer "
    "change when theta_{t-1} changes, so that part of the meta-gradient is lost. Give meta.gates the "
    "original theta; the detached copy is only for computing the learner's loss and gradient.": "gates_leaf",
}


def _probe_step(fn: Callable) -> None:
    meta = _meta()
    theta, state, x_s, y_s = _inputs(meta)
    res = fn(meta, theta, state, x_s, y_s)
    expect(isinstance(res, tuple) and len(res) == 3,
           "meta_learner_step should return a tuple (theta_t, State(h, c, f, i), loss).")
    new, st, loss = res
    p = meta.n_params
    expect_shape(new, (p,), "theta_t")
    expect(isinstance(st, tuple) and len(st) == 4, "the second result should be State(h, c, f, i).")
    st = State(*st)
    for name, t, shape in zip(("h", "c", "f", "i"), st, ((p, meta.hidden),) * 2 + ((p,),) * 2):
        expect_shape(t, shape, f"the new state's {name}")
    _check_forward(meta, theta, state, x_s, y_s, _outputs(new, st))
    ref_new, _ = _variant(meta, theta, state, x_s, y_s, "right")
    want_loss = F.cross_entropy(meta.learner_forward(theta.detach(), x_s), y_s)
    expect(isinstance(loss, Tensor) and loss.numel() == 1,
           "the third result should be the learner's support loss L_t, a scalar tensor.")
    diagnose(loss.reshape(()), want_loss, "the returned support loss L_t (at theta_{t-1})",
             atol=1e-10, rtol=1e-8)
    # the graph: how theta_t changes with theta_{t-1} (along a vector), and flow into the meta-parameters
    v = torch.randn(p, generator=torch.Generator().manual_seed(2), dtype=D)
    try:
        jac = _jvp(new, theta, v)
    except RuntimeError as e:
        if "second time" not in str(e):
            raise
        raise Mistake("theta_t's graph runs back through the learner's loss or gradient, whose graph was "
                      "already freed: detach the loss and the gradient before they enter the LSTM.",
                      "leaf = theta.detach().requires_grad_(); compute loss and grad on leaf; then "
                      "loss.detach(), grad.detach().") from None
    expect(jac is not None and bool(jac.abs().sum() > 0),
           "theta_t does not depend on theta_{t-1} (changing theta_{t-1} does not change theta_t): only the "
           "learner's *gradient and loss* are detached, not theta itself (theta_t = f * theta_{t-1} - i * grad "
           "must keep theta_{t-1}'s graph, it carries the meta-gradient back to c_0).",
           "Compute the gradient on a detached copy (leaf = theta.detach().requires_grad_()), but use theta "
           "in meta.gates and in the update.")
    ref_jac = _jvp(ref_new, theta, v)
    diagnose(jac, ref_jac, _JAC,
             {msg: _jvp(_variant(meta, theta, state, x_s, y_s, v_)[0], theta, v) for msg, v_ in _JAC_MISTAKES.items()},
             atol=1e-9, rtol=1e-7,
             hint="The values are right but the graph is not: detach only the learner's loss and gradient, "
                  "and use theta (not a detached copy) in meta.gates and cell_update.")
    g_meta = torch.autograd.grad(new.sum(), [meta.W_I.weight, meta.lstm.weight_ih], allow_unused=True)
    expect(all(g is not None and g.abs().sum() > 0 for g in g_meta),
           "no gradient reaches the meta-learner's weights (W_I, the LSTM): theta_t must be computed from "
           "the gates f, i that meta.gates returns, without .detach().")


def meta_learner_step(student: Callable) -> Callable:
    """Exercise 4.3: one inner step of the Meta-learner LSTM."""
    return run_check("4.3", "one meta-learner step", student, reference_meta_learner_step, _probe_step)
