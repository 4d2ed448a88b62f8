"""Checks for chapter 04 (the Meta-learner LSTM): the cell-state update, the preprocessing, one step.

Classic mistakes recognised (each computed, then matched against the student's output):
adding the gradient instead of subtracting it, the forget gate on the gradient term instead of
on the previous parameters (or the two gates swapped, or no forget gate), preprocessing
branches swapped, the sign channel missing, the channels in the wrong order, log base 10, a
NaN at 0 (log 0 times a zero mask), and a meta-learner step that does not detach the learner's
gradient or loss (a second-order path through them) or that detaches theta itself.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import Mistake, diagnose, expect, expect_finite, expect_grad, expect_shape, expect_type, run_check
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
    expect(gc is not None and torch.allclose(gc, fd), "d c_t / d c_{t-1} should be f_t: the meta-gradient "
           "to c_0 (the initialisation) flows through f_t * c_{t-1}.")
    expect(gf is not None and gi is not None, "c_t does not depend on both gates f and i.")


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
    leaf = theta if variant in ("second_order", "loss_attached") else theta.detach().requires_grad_()
    loss = F.cross_entropy(meta.learner_forward(leaf, x_s), y_s)
    (grad,) = torch.autograd.grad(loss, leaf, create_graph=variant == "second_order",
                                  retain_graph=variant in ("loss_attached", "second_order"))
    if variant != "second_order":
        grad = grad.detach()
    if variant not in ("second_order", "loss_attached"):
        loss = loss.detach()
    x = torch.cat([reference_preprocess(grad, meta.p), reference_preprocess(loss.reshape(1), meta.p)
                   .expand(grad.numel(), 2)], 1)
    if variant == "raw_state":
        h, c = state.h, state.c
        h_new, c_new = meta.lstm(x, (h, c))
        f, i = meta.gates(h, theta, state.f, state.i)
        return reference_cell_update(theta, f, i, grad), State(h_new, c_new, f, i)
    h, c = meta.lstm(x, (state.h, state.c))
    if variant == "prev_gates_swapped":
        f, i = meta.gates(h, theta, state.i, state.f)
    else:
        f, i = meta.gates(h, theta, state.f, state.i)
    if variant == "plus":
        return f * theta + i * grad, State(h, c, f, i)
    if variant == "theta_detached":
        return reference_cell_update(theta.detach(), f, i, grad), State(h, c, f, i)
    return reference_cell_update(theta, f, i, grad), State(h, c, f, i)


def _flat(theta_new: Tensor, state: State) -> Tensor:
    return torch.cat([theta_new.detach().reshape(-1)] + [s.detach().reshape(-1) for s in state])


def _jvp(out: Tensor, wrt: Tensor, v: Tensor) -> Tensor | None:
    if not out.requires_grad:
        return None
    (g,) = torch.autograd.grad((out * v).sum(), wrt, retain_graph=True, allow_unused=True)
    return None if g is None else g


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
    ref_new, ref_state = _variant(meta, theta, state, x_s, y_s, "right")
    mistakes = {
        "it adds the gradient: theta_t = f * theta_{t-1} - i * grad.": "plus",
        "the gates read the wrong previous gate: f_t takes f_{t-1} and i_t takes i_{t-1} "
        "(meta.gates(h, theta, state.f, state.i)).": "prev_gates_swapped",
        "the gates read the *old* first-layer output: run meta.lstm first and give its new h to "
        "meta.gates.": "raw_state",
    }
    diagnose(_flat(new, st), _flat(ref_new, ref_state), "(theta_t, h, c, f, i)",
             {msg: _flat(*_variant(meta, theta, state, x_s, y_s, v)) for msg, v in mistakes.items()},
             atol=1e-10, rtol=1e-8)
    want_loss = F.cross_entropy(meta.learner_forward(theta.detach(), x_s), y_s)
    expect(isinstance(loss, Tensor) and loss.numel() == 1,
           "the third result should be the learner's support loss L_t, a scalar tensor.")
    diagnose(loss.reshape(()), want_loss, "the returned support loss L_t (at theta_{t-1})",
             atol=1e-10, rtol=1e-8)
    # the graph: d theta_t / d theta_{t-1} (times a vector), and flow into the meta-parameters
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
           "theta_t does not depend on theta_{t-1}: only the learner's *gradient and loss* are detached, "
           "not theta itself (theta_t = f * theta_{t-1} - i * grad must keep theta_{t-1}'s graph, it "
           "carries the meta-gradient back to c_0).",
           "Compute the gradient on a detached copy (leaf = theta.detach().requires_grad_()), but use theta "
           "in meta.gates and in the update.")
    ref_jac = _jvp(ref_new, theta, v)
    diagnose(jac, ref_jac, "d theta_t / d theta_{t-1} (the step's Jacobian, times a vector)", {
        "the learner's gradient is not detached: a second-order path (through the Hessian) runs from "
        "theta_t back into theta_{t-1}. The paper treats grad_t and L_t as inputs (no second derivatives): "
        "compute them on theta.detach().requires_grad_() and .detach() them.":
            _jvp(_variant(meta, theta, state, x_s, y_s, "second_order")[0], theta, v),
        "the learner's loss L_t enters the LSTM without .detach(): a path runs from the LSTM's input back "
        "into theta_{t-1}. Detach the loss (and the gradient) before preprocessing them.":
            _jvp(_variant(meta, theta, state, x_s, y_s, "loss_attached")[0], theta, v),
    }, atol=1e-9, rtol=1e-7)
    g_meta = torch.autograd.grad(new.sum(), [meta.W_I.weight, meta.lstm.weight_ih], allow_unused=True)
    expect(all(g is not None and g.abs().sum() > 0 for g in g_meta),
           "no gradient reaches the meta-learner's weights (W_I, the LSTM): theta_t must be computed from "
           "the gates f, i that meta.gates returns, without .detach().")


def meta_learner_step(student: Callable) -> Callable:
    """Exercise 4.3: one inner step of the Meta-learner LSTM."""
    return run_check("4.3", "one meta-learner step", student, reference_meta_learner_step, _probe_step)
