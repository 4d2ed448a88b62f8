"""Checks for chapter 04 (the Meta-learner LSTM): the cell-state update, the preprocessing, one inner
step, and the meta-objective of a meta-batch.

Each probe calls the student's function on small float64 inputs in which every argument matters
(so that ignoring one changes the answer), compares the result with the reference, and, when it
differs, first tries the classic mistakes of the chapter's Pitfalls (each computed, then matched
against the student's output) so that the message can name the mistake:

- 4.1: the gradient added instead of subtracted, the forget and input gates swapped, a gate missing
  or on the wrong term, ``1 - f`` for ``f``, the gates squashed by a sigmoid a second time, and
  gradient paths cut (``.detach()``) to the gates or to ``c_{t-1}``;
- 4.2: the branches swapped, the wrong threshold (``e^p``, ``10^-p``, ``p``), ``p`` ignored or used in
  one place only, the sign and log channels swapped, the sign channel missing or holding ``x``,
  log base 10, the tiny branch unscaled, sign(x) or 0 on the tiny branch, ``log`` of a negative
  number, a NaN at 0, NaN *gradients* at 0 (``torch.where`` without a clamp before the log, checked
  with a backward pass in float64 and float32), the wrong dtype;
- 4.3: the learner's gradient or loss not detached (a second-order path; the paper's Section 3.2
  treats them as inputs), the half-fix, theta itself detached, the gates given the detached copy,
  the gradient added, the gates swapped or not squashed by a sigmoid, the support loss summed
  instead of averaged, ``meta.p`` ignored (in both calls, or for the loss or the gradient only), the
  given state or theta ignored, the incoming state or the previous gates returned unchanged, the loss
  and gradient columns swapped, h and c swapped, the previous gates swapped, a plain tuple instead of
  a State;
- 4.4: support and query swapped or mixed up, the learner's theta or the LSTM's state not reset
  between tasks, the task losses summed instead of averaged, the query loss summed, the wrong
  number of inner steps, only one task counted, the query loss averaged over all steps, the support
  loss that the step returns used as the objective, the B tasks merged into one support set, no
  meta-gradient into c_0 or the LSTM.

Inputs changed in place are reported plainly (the guard of :func:`checks.run_check`; the LSTM's
``State`` and the meta-learner's own parameters are compared here too).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import (Mistake, describe, diagnose, expect, expect_close, expect_device_agnostic,
                      expect_finite, expect_grad, run_check)
from ..meta_lstm import MetaLSTM, State, cell_update as reference_cell_update
from ..meta_lstm import meta_learner_step as reference_meta_learner_step
from ..meta_lstm import meta_objective as reference_meta_objective
from ..meta_lstm import preprocess as reference_preprocess

__all__ = ["EXERCISES", "cell_update", "preprocess", "meta_learner_step", "meta_objective",
           "reference_cell_update", "reference_preprocess", "reference_meta_learner_step",
           "reference_meta_objective"]

EXERCISES = ["4.1", "4.2", "4.3", "4.4"]
D = torch.float64


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _need_tensor(obj, what: str, expected: str, hint: str = "") -> None:
    """A clear message when the student returned something other than one tensor."""
    if isinstance(obj, Tensor):
        return
    extra = ""
    if isinstance(obj, (tuple, list)) and obj and all(isinstance(o, Tensor) for o in obj):
        extra = f" Return one tensor, not a {type(obj).__name__} of tensors."
    elif isinstance(obj, float):
        extra = " A Python float has no graph (.item()?): return the tensor itself."
    raise Mistake(f"{what} should be a torch.Tensor {expected}, but your function returned "
                  f"{describe(obj)}.{extra}", hint)


# ----------------------------------------------------------------------------- 4.1

def _cell_mistakes(c: Tensor, f: Tensor, i: Tensor, g: Tensor) -> dict[str, Tensor]:
    return {
        "the gradient is added: the candidate is c~_t = -grad, so c_t = f * c_{t-1} - i * grad "
        "(a step *down* the loss).": f * c + i * g,
        "the forget and input gates are swapped: the forget gate f scales c_{t-1}, the input gate i "
        "scales the candidate -grad.": i * c - f * g,
        "the forget and input gates are swapped and the gradient is added: c_t = f * c_{t-1} - i * grad.":
            i * c + f * g,
        "the forget gate multiplies the gradient term instead of the previous parameters: "
        "c_t = f * c_{t-1} - i * grad.": c - f * i * g,
        "the forget gate is missing: c_t = f * c_{t-1} - i * grad (with f = 1 this is SGD).": c - i * g,
        "the forget gate multiplies the whole update: c_t = f * c_{t-1} - i * grad, not "
        "f * (c_{t-1} - i * grad).": f * (c - i * g),
        "the input gate is missing: it is the learning rate, c_t = f * c_{t-1} - i * grad.": f * c - g,
        "the previous parameters c_{t-1} are missing: c_t = f * c_{t-1} - i * grad.": -i * g,
        "the forget gate is used as 1 - f (a decay rate); in the LSTM f multiplies c_{t-1} directly "
        "(f = 1 keeps the parameters).": (1 - f) * c - i * g,
        "the gates are squashed by a sigmoid again: f and i are already gate values (sigmoid outputs, "
        "in (0, 1)); multiply by them directly.": torch.sigmoid(f) * c - torch.sigmoid(i) * g,
    }


def _probe_cell_update(fn: Callable) -> None:
    g = torch.Generator().manual_seed(0)
    p = 9
    c_prev = torch.randn(p, generator=g, dtype=D).requires_grad_()
    f = (0.5 + 0.5 * torch.rand(p, generator=g, dtype=D)).requires_grad_()
    i = (0.5 * torch.rand(p, generator=g, dtype=D)).requires_grad_()
    grad = torch.randn(p, generator=g, dtype=D)
    out = fn(c_prev, f, i, grad)
    _need_tensor(out, "cell_update's result c_t", "of shape (P,), the new parameters")
    if tuple(out.shape) != (p,):
        raise Mistake(f"c_t has shape {tuple(out.shape)}, expected ({p},) (the shape of c_prev).",
                      "Every operation is element-wise: c_t has the shape of c_{t-1}.")
    c, fd, id_ = c_prev.detach(), f.detach(), i.detach()
    diagnose(out, reference_cell_update(c, fd, id_, grad), "c_t (the new parameters)",
             _cell_mistakes(c, fd, id_, grad), atol=1e-12, rtol=1e-10)
    expect_grad(out, "c_t", "Keep c_t a function of c_{t-1}, f and i: no .detach(), .data or no_grad.")
    gc, gf, gi = torch.autograd.grad(out.sum(), (c_prev, f, i), allow_unused=True)
    cut = [name for name, g_ in (("the forget gate f", gf), ("the input gate i", gi),
                                 ("the previous parameters c_{t-1}", gc)) if g_ is None or not g_.abs().sum() > 0]
    if cut:
        gate = ("f_t: the meta-learner could not learn its forget gate (W_F, b_F)" if "the forget gate f" in cut
                else "i_t: the meta-learner could not learn its input gate, the learning rate (W_I, b_I)"
                if "the input gate i" in cut else "c_{t-1}: the meta-gradient could not reach c_0, "
                "the learned initialisation")
        raise Mistake(f"no gradient reaches {_listing(cut)} (the values are right, but something is detached): "
                      f"the meta-gradient stops at {gate}.",
                      "Write c_t = f * c_prev - i * grad with no .detach(), .data or .item() on f, i or c_prev.")
    expect(torch.allclose(gc, fd), "d c_t / d c_{t-1} should be f_t: the meta-gradient "
           "to c_0 (the initialisation) flows through f_t * c_{t-1}.")
    # a second, unrelated set of values (f below i here): no constant may stand in for an argument
    c2, f2, i2, g2 = (torch.randn(5, generator=g, dtype=D), 0.3 * torch.rand(5, generator=g, dtype=D),
                      0.6 + 0.3 * torch.rand(5, generator=g, dtype=D), torch.randn(5, generator=g, dtype=D))
    out2 = fn(c2, f2, i2, g2)
    _need_tensor(out2, "cell_update's result c_t", "of shape (P,)")
    diagnose(out2, reference_cell_update(c2, f2, i2, g2), "c_t on a second set of inputs (P = 5)",
             _cell_mistakes(c2, f2, i2, g2), atol=1e-12, rtol=1e-10)
    expect_device_agnostic(fn, c2, f2, i2, g2, what="cell_update")


def cell_update(student: Callable) -> Callable:
    """Exercise 4.1: c_t = f_t * c_{t-1} + i_t * (-grad_t)."""
    return run_check("4.1", "the cell-state update", student, reference_cell_update, _probe_cell_update)


# ----------------------------------------------------------------------------- 4.2

def _pre(x: Tensor, p: float, *, thr: float | None = None, log_scale: float | None = None,
         tiny_scale: float | None = None, log_base: float = math.e, sign=None, tiny_first: float = -1.0,
         swap_branches: bool = False, tiny_second=None) -> Tensor:
    """The preprocessing with one piece changed (the defaults give the reference)."""
    thr = math.exp(-p) if thr is None else thr
    log_scale = p if log_scale is None else log_scale
    tiny_scale = math.exp(p) if tiny_scale is None else tiny_scale
    big = x.abs() >= thr
    if swap_branches:
        big = ~big
    logs = torch.log(x.abs().clamp_min(1e-300)) / math.log(log_base) / log_scale
    second_big = torch.sign(x) if sign is None else sign(x)
    second_tiny = tiny_scale * x if tiny_second is None else tiny_second(x)
    return torch.stack([torch.where(big, logs, torch.full_like(x, tiny_first)),
                        torch.where(big, second_big, second_tiny)], -1)


def _pre_mistakes(x: Tensor, p: float) -> dict[str, Tensor]:
    e = math.exp
    return {
        "the two branches are swapped: use (log|x| / p, sign x) when |x| >= e^-p (large values) and "
        "(-1, e^p x) when |x| < e^-p (tiny values).": _pre(x, p, swap_branches=True),
        "the sign and log parts are swapped (the channels are in the wrong order): out[..., 0] is the "
        "log part log|x| / p and out[..., 1] the sign part sign(x).": reference_preprocess(x, p).flip(-1),
        "the threshold is e^p instead of e^-p: a value is 'tiny' when |x| < e^-p (math.exp(-p)).":
            _pre(x, p, thr=e(p)),
        "the threshold is 10^-p; the formula uses e^-p (math.exp(-p)).": _pre(x, p, thr=10.0 ** -p),
        "the threshold is p itself; a value is 'tiny' when |x| < e^-p (math.exp(-p)).": _pre(x, p, thr=p),
        "the threshold is e^(-1/p); a value is 'tiny' when |x| < e^-p (math.exp(-p)).": _pre(x, p, thr=e(-1 / p)),
        "the log part takes x, not |x|: for a negative x it is log|x| / p (x.abs()).":
            torch.stack([torch.where(x.abs() >= e(-p), torch.log(x.clamp_min(e(-p))) / p, torch.full_like(x, -1.0)),
                         _pre(x, p)[..., 1]], -1),
        "the sign channel is missing: for |x| >= e^-p the second entry is sign(x), so that +g and -g "
        "(same log|x|) stay distinguishable.": _pre(x, p, sign=torch.ones_like),
        "the second channel holds x itself on the large branch; it should be sign(x) (x spans many "
        "orders of magnitude, which is what the preprocessing avoids).": _pre(x, p, sign=lambda t: t),
        "it uses log base 10; the formula uses the natural log (torch.log).": _pre(x, p, log_base=10.0),
        "log|x| is not divided by p.": _pre(x, p, log_scale=1.0),
        "on the tiny branch the second entry is e^p * x, not x.": _pre(x, p, tiny_scale=1.0),
        "on the tiny branch the second entry is e^p * x (math.exp(p) * x), not x / e^p.":
            _pre(x, p, tiny_scale=e(-p)),
        "on the tiny branch the second entry is sign(x); it is e^p * x (math.exp(p) * x), a linear value "
        "in (-1, 1) that keeps the magnitude (the first entry is -1 for all tiny values, so sign(x) alone "
        "would make 1e-6 and 4e-5 look the same).": _pre(x, p, tiny_second=torch.sign),
        "on the tiny branch the second entry is 0; it is e^p * x (math.exp(p) * x), which keeps the sign "
        "and the magnitude of a tiny value (with 0, every tiny value would look like an exact zero).":
            _pre(x, p, tiny_second=torch.zeros_like),
        "on the tiny branch the first entry is -1 (the log part at the threshold), not 0.":
            _pre(x, p, tiny_first=0.0),
        "on the tiny branch the second entry is e^p * x, keeping x's sign, not e^p * |x|.":
            torch.stack([_pre(x, p)[..., 0], torch.where(x.abs() >= e(-p), torch.sign(x), e(p) * x.abs())], -1),
    }


def _p_mistakes(x: Tensor, p: float) -> dict[str, Tensor]:
    return {
        "p is not used (is 10 hard-coded?): the threshold is e^-p and the scales 1/p and e^p.":
            reference_preprocess(x, 10.0),
        "p is used in the threshold only: the scales are 1/p (log part) and e^p (tiny branch) too, "
        "with the same p.": _pre(x, p, log_scale=10.0, tiny_scale=math.exp(10.0)),
        "p is used in the scales but not in the threshold (is e^-10 hard-coded?): tiny means |x| < e^-p.":
            _pre(x, p, thr=math.exp(-10.0)),
    }


def _expect_finite_backward(fn: Callable, x: Tensor, p: float) -> None:
    """A backward pass through the student's preprocessing at x (0 included) must give finite gradients."""
    leaf = x.detach().clone().requires_grad_()
    out = fn(leaf, p)
    if not (isinstance(out, Tensor) and out.requires_grad):
        return  # no graph at all: nothing can turn into NaN (the chapter detaches anyway)
    w = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    (g,) = torch.autograd.grad((out * w).sum(), leaf, allow_unused=True)
    if g is None or bool(torch.isfinite(g).all()):
        return
    bad = x[~torch.isfinite(g)]
    where = "x = 0" if bool((bad == 0).all()) else f"x = {_listing([f'{v:.3g}' for v in bad.tolist()])}"
    f32 = x.dtype == torch.float32
    raise Mistake(
        f"the values are right, but a backward pass through preprocess gives NaN gradients at {where}"
        + (" for a float32 x (float64 is fine): the clamp value is below what float32 can hold (1e-300, "
           "say, is 0 in float32), so there it is no clamp. " if f32 else
           ": torch.where picks the right branch, but its backward still runs through the unused one, where "
           "the gradient of log|x| at 0 is 1/0 = inf, and 0 * inf = NaN. ")
        + "In this chapter the step detaches grad and loss, so nothing flows back through preprocess; but "
        "any use that does (a variant that keeps second derivatives, or preprocessing a differentiable "
        "input) would turn the whole meta-gradient into NaN because of one exact zero (a dead ReLU).",
        "Clamp before the log: torch.log(x.abs().clamp_min(math.exp(-p))) / p.")


def _probe_preprocess(fn: Callable) -> None:
    p = 10.0
    x = torch.tensor([[0.0, 1e-7, -2e-6, 3e-5, math.exp(-p)],
                      [-4e-4, 0.02, -0.7, 3.0, -1e5]], dtype=D)
    out = fn(x, p)
    if isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, Tensor) for o in out):
        raise Mistake(f"preprocess returned the two channels as a {type(out).__name__} ({describe(out)}); "
                      "return one tensor with the channels on a new last dimension.",
                      "torch.stack([first, second], dim=-1).")
    _need_tensor(out, "preprocess's result", f"of shape x.shape + (2,) = {tuple(x.shape) + (2,)}")
    if out.shape == x.shape:
        raise Mistake("the result has the shape of x: each value becomes *two* numbers, so the result "
                      "has shape x.shape + (2,) (the sign channel is missing?).",
                      "torch.stack([first, second], dim=-1).")
    if tuple(out.shape) == (2,) + tuple(x.shape):
        raise Mistake(f"the result has shape {tuple(out.shape)}: the two channels are stacked on the first "
                      f"dimension; they go on a new *last* dimension, shape {tuple(x.shape) + (2,)}.",
                      "torch.stack([first, second], dim=-1).")
    if tuple(out.shape) != tuple(x.shape) + (2,):
        raise Mistake(f"preprocess(x) has shape {tuple(out.shape)}, expected {tuple(x.shape) + (2,)}.",
                      "Stack the two channels on a new last dimension: torch.stack([first, second], dim=-1).")
    expect(out.dtype == x.dtype, f"preprocess(x) has dtype {out.dtype}; keep the input's ({x.dtype}): "
           "build new tensors with torch.full_like(x, ...) or dtype=x.dtype.")
    bad = ~torch.isfinite(out).all(-1)
    if bad.any() and bool((x[bad] < 0).all()) and not bool((x[bad] == 0).any()):
        raise Mistake("preprocess(x) is NaN for negative x: it takes the log of x itself; the log part is "
                      "log|x| / p.", "torch.log(x.abs().clamp_min(math.exp(-p))) / p.")
    expect_finite(out, "preprocess(x) at x = 0 or a tiny value",
                  "log(0) is -inf, and 0 * (-inf) is NaN: do not multiply by a mask, choose the branch with "
                  "torch.where, and take the log of x.abs().clamp_min(math.exp(-p)) so it is never log 0.")
    diagnose(out, reference_preprocess(x, p), "preprocess(x)", _pre_mistakes(x, p), atol=1e-9, rtol=1e-9)
    _expect_finite_backward(fn, x, p)
    # p: every use of it
    x2 = torch.tensor([0.0, 0.05, -0.002, 1e-4, -3e-5, 2.5], dtype=D)
    out2 = fn(x2, 2.0)
    _need_tensor(out2, "preprocess(x, p=2)", "of shape x.shape + (2,)")
    expect_finite(out2, "preprocess(x, p=2)")
    diagnose(out2, reference_preprocess(x2, 2.0), "preprocess(x, p=2)", _p_mistakes(x2, 2.0),
             atol=1e-9, rtol=1e-9)
    # the default p, as the chapter calls it
    try:
        out3 = fn(x2)
    except TypeError as e:
        if "required positional argument" not in str(e):
            raise
        raise Mistake(f"preprocess(x) without p fails ({e}): give p its default, def preprocess(x, p=10.0).") from None
    _need_tensor(out3, "preprocess(x) (default p)", "of shape x.shape + (2,)")
    diagnose(out3, reference_preprocess(x2, 10.0), "preprocess(x) with the default p",
             {"the default p is not 10 (def preprocess(x, p=10.0), the paper's value).":
              reference_preprocess(x2, 2.0)}, atol=1e-9, rtol=1e-9)
    # float32 in, float32 out (the chapter's learner is float32)
    x4 = x.float()
    out4 = fn(x4, p)
    _need_tensor(out4, "preprocess(x) for a float32 x", "of shape x.shape + (2,)")
    expect(out4.dtype == torch.float32, f"preprocess(x) for a float32 x has dtype {out4.dtype}; keep the "
           "input's dtype (torch.full_like(x, ...), or dtype=x.dtype for new tensors).")
    expect_finite(out4, "preprocess(x) for a float32 x")
    expect_close(out4, reference_preprocess(x4, p), "preprocess(x) for a float32 x", atol=1e-5, rtol=1e-5)
    _expect_finite_backward(fn, x4, p)
    expect_device_agnostic(fn, x2, 2.0, what="preprocess")


def preprocess(student: Callable) -> Callable:
    """Exercise 4.2: (log|x|/p, sign x) if |x| >= e^-p else (-1, e^p x)."""
    return run_check("4.2", "gradient preprocessing", student, reference_preprocess, _probe_preprocess)


# ----------------------------------------------------------------------------- 4.3

def _small_meta(p: float = 10.0, seed: int = 0) -> MetaLSTM:
    torch.manual_seed(seed)
    learner = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(D)
    meta = MetaLSTM(learner, hidden=3, p=p, input_bias=(-2.0, -1.0), forget_bias=(1.0, 2.0))
    with torch.no_grad():  # gates that read their inputs noticeably, so each input matters
        meta.W_F.weight.uniform_(-0.5, 0.5)
        meta.W_I.weight.uniform_(-0.5, 0.5)
    return meta


def _meta() -> MetaLSTM:
    # p = 5, not the default 10, so that a step that ignores meta.p gives other inputs to the LSTM
    return _small_meta(p=5.0)


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
    """A (possibly wrong) meta-learner step, built from the reference pieces: (theta_t, State, loss)."""
    if variant == "theta_is_c0":
        theta = meta.c_0
    if variant == "state_ignored":
        state = meta.initial_state()
    attached = variant in ("second_order", "loss_attached", "half_fix")
    leaf = theta if attached else theta.detach().requires_grad_()
    with torch.enable_grad():
        out = meta.learner_forward(leaf, x_s)
        loss = F.cross_entropy(out, y_s, reduction="sum" if variant == "sum" else "mean")
        (grad,) = torch.autograd.grad(loss, leaf, create_graph=variant in ("second_order", "half_fix"),
                                      retain_graph=attached)
    grad_in = grad if variant == "second_order" else grad.detach()              # into the LSTM
    grad_up = grad if variant in ("second_order", "half_fix") else grad.detach()  # into the update
    loss_in = loss if variant in ("second_order", "loss_attached") else loss.detach()
    p_g = 10.0 if variant in ("p_default", "p_default_grad") else meta.p
    p_l = 10.0 if variant in ("p_default", "p_default_loss") else meta.p
    g_cols = reference_preprocess(grad_in, p_g)
    l_cols = reference_preprocess(loss_in.reshape(1), p_l).expand(grad.numel(), 2)
    x = torch.cat([l_cols, g_cols] if variant == "cols_swapped" else [g_cols, l_cols], 1)
    h, c = meta.lstm(x, (state.h, state.c))
    h_gates = state.h if variant == "raw_state" else c if variant == "hc_swapped" else h
    if variant == "hc_swapped":  # c, h = meta.lstm(...)
        h, c = c, h
    theta_gates = leaf if variant == "gates_leaf" else theta
    prev = (state.i, state.f) if variant == "prev_gates_swapped" else (state.f, state.i)
    if variant == "no_sigmoid":
        f = meta.W_F(torch.cat([h_gates, theta_gates[:, None], prev[0][:, None]], 1)).squeeze(1)
        i = meta.W_I(torch.cat([h_gates, theta_gates[:, None], prev[1][:, None]], 1)).squeeze(1)
    else:
        f, i = meta.gates(h_gates, theta_gates, *prev)
    if variant == "fi_swapped":  # i, f = meta.gates(...)
        f, i = i, f
    base = theta.detach() if variant == "theta_detached" else theta
    if variant == "plus":
        new = f * base + i * grad_up
    elif variant == "fi_swapped_update":
        new = reference_cell_update(base, i, f, grad_up)
    else:
        new = reference_cell_update(base, f, i, grad_up)
    st = State(c, h, f, i) if variant == "hc_swapped_return" else State(h, c, f, i)
    if variant == "state_unchanged":
        st = state
    elif variant == "old_gates_returned":
        st = State(h, c, state.f, state.i)
    return new, st, loss.detach()


_NAMES = ("theta_t", "h", "c", "f", "i")
_ORDER = ("h", "c", "f", "i", "theta_t")  # the order the step computes them
_WHAT = {"theta_t": "theta_t (the new parameters)", "h": "h (the first LSTM layer's new hidden state)",
         "c": "c (the first LSTM layer's new cell state)", "f": "f (the new forget gate)",
         "i": "i (the new input gate)"}
_HINT = {"h": "h, c = meta.lstm(inputs, (state.h, state.c)) with inputs of shape (P, 4) = "
              "[preprocess(grad, meta.p) | preprocess(loss, meta.p)]: the gradient's two columns first.",
         "f": "f, i = meta.gates(h, theta, state.f, state.i), with the *new* h.",
         "theta_t": "theta_t = cell_update(theta, f, i, grad) = f * theta - i * grad."}
_HINT["c"], _HINT["i"] = _HINT["h"], _HINT["f"]
_TOL = dict(atol=1e-10, rtol=1e-8)


def _outputs(new: Tensor, state: State) -> dict[str, Tensor]:
    return {n: t.detach() for n, t in zip(_NAMES, (new, *state))}


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), **_TOL)


_STEP_MISTAKES = {
    "it adds the gradient: theta_t = f * theta_{t-1} - i * grad.": "plus",
    "the forget and input gates are swapped (meta.gates returns (f, i), in that order): f scales "
    "theta_{t-1}, i scales the gradient.": "fi_swapped",
    "the forget and input gates are swapped in the update: cell_update(theta, f, i, grad), f first.":
        "fi_swapped_update",
    "the gates are not squashed by a sigmoid: f_t = sigmoid(W_F [h, theta, f_prev] + b_F), and i_t "
    "likewise (meta.gates does this).": "no_sigmoid",
    "the support loss is summed over the N*K examples instead of averaged (mean vs sum): use "
    "meta.loss_fn, the cross-entropy's mean, for the loss and its gradient.": "sum",
    "the preprocessing ignores meta.p (this meta-learner's p is not 10): preprocess(grad, meta.p) and "
    "preprocess(loss, meta.p).": "p_default",
    "only the loss's preprocessing ignores meta.p (this meta-learner's p is not 10): write "
    "preprocess(loss.reshape(1), meta.p), with the same meta.p as preprocess(grad, meta.p).": "p_default_loss",
    "only the gradient's preprocessing ignores meta.p (this meta-learner's p is not 10): write "
    "preprocess(grad, meta.p), with the same meta.p as for the loss.": "p_default_grad",
    "it returns the incoming `state` unchanged: return the new State(h, c, f, i), with the h, c that "
    "meta.lstm just returned and the new gates f, i, so that the next step continues from them.":
        "state_unchanged",
    "the returned State holds the previous gates state.f, state.i: it holds the *new* f and i (the next "
    "step reads them as f_{t-1}, i_{t-1}): State(h, c, f, i).": "old_gates_returned",
    "the step ignores the `state` it is given (it starts the LSTM from zeros, meta.initial_state()): "
    "continue from state.h, state.c and the previous gates state.f, state.i.": "state_ignored",
    "the step starts from meta.c_0 instead of the `theta` it is given: theta_{t-1} is the argument "
    "theta (c_0 is only the first step's theta).": "theta_is_c0",
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
    want = _outputs(*_variant(meta, theta, state, x_s, y_s, "right")[:2])
    wrong = [n for n in _ORDER if not _same(got[n], want[n])]
    if not wrong:
        return
    right = [n for n in _ORDER if n not in wrong]
    which = f"{_listing(wrong)} {'is' if len(wrong) == 1 else 'are'} wrong" + (
        f" ({_listing(right)} right)" if right else "")
    for msg, v in _STEP_MISTAKES.items():
        alt = _outputs(*_variant(meta, theta, state, x_s, y_s, v)[:2])
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


def _snapshot_module(m: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _module_changed(m: nn.Module, before: dict[str, Tensor], what: str) -> None:
    for k, v in m.state_dict().items():
        if not torch.equal(v.detach(), before[k]):
            raise Mistake(f"your function changed the meta-learner's own parameter `{what}.{k}` in place. It "
                          "must only read the meta-learner: compute new tensors (theta_t = f * theta - i * grad) "
                          "instead of writing into meta.c_0 or other weights (.data, add_, copy_, -=).")


def _state_copy(state: State) -> State:
    return State(*(t.clone() for t in state))


def _state_changed(given: State, original: State) -> None:
    for name, a, b in zip(State._fields, given, original):
        if not isinstance(a, Tensor) or a.shape != b.shape or not torch.equal(a.detach(), b.detach()):
            raise Mistake(f"your function changed its input `state` in place (`state.{name}` changed). Inputs "
                          "must stay as they were: return a new State(h, c, f, i) instead of writing into "
                          "the one you were given (no state.h.copy_(...), state.f[:] = ..., add_).")


def _probe_step(fn: Callable) -> None:
    meta = _meta()
    theta, state, x_s, y_s = _inputs(meta)
    given = _state_copy(state)
    before = _snapshot_module(meta)
    res = fn(meta, theta, given, x_s, y_s)
    _module_changed(meta, before, "meta")
    _state_changed(given, state)
    if not (isinstance(res, (tuple, list)) and len(res) == 3):
        raise Mistake("meta_learner_step should return three things, (theta_t, State(h, c, f, i), loss); "
                      f"your function returned {describe(res)}.")
    new, st, loss = res
    p = meta.n_params
    _need_tensor(new, "the first result, theta_t,", f"of shape ({p},)")
    expect(tuple(new.shape) == (p,), f"theta_t has shape {tuple(new.shape)}, expected ({p},) (the shape of theta).")
    if not all(hasattr(st, n) for n in State._fields):
        kind = (f"a plain {type(st).__name__} of {len(st)}" if isinstance(st, (tuple, list))
                else describe(st))
        raise Mistake(f"the second result should be State(h, c, f, i), but it is {kind}. Return State(h, c, f, i) "
                      "(from course_utils.meta_lstm): the next step reads state.h, state.c, state.f and state.i "
                      "by name, and the previous gates f and i are part of the state.")
    st = State(st.h, st.c, st.f, st.i)
    for name, t, shape in zip(State._fields, st, ((p, meta.hidden),) * 2 + ((p,),) * 2):
        _need_tensor(t, f"the new state's {name}", f"of shape {shape}")
        expect(tuple(t.shape) == shape, f"the new state's {name} has shape {tuple(t.shape)}, expected {shape}.")
    _check_forward(meta, theta, state, x_s, y_s, _outputs(new, st))
    ref_new, _, want_loss = _variant(meta, theta, state, x_s, y_s, "right")
    _need_tensor(loss, "the third result, the support loss L_t,", "with one element (a scalar)")
    expect(loss.numel() == 1, f"the third result should be the learner's support loss L_t, a scalar tensor; "
           f"it is {describe(loss)}.")
    with torch.no_grad():
        at_new = F.cross_entropy(meta.learner_forward(ref_new.detach(), x_s), y_s)
    diagnose(loss.reshape(()), want_loss, "the returned support loss L_t (at theta_{t-1})", {
        "the loss is measured at theta_t, after the update; return L_t, the loss at theta_{t-1} that the "
        "step fed to the LSTM.": at_new}, atol=1e-10, rtol=1e-8)
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
    expect(not loss.requires_grad, "the returned support loss still carries a graph: return it detached "
           "(loss.detach()), as the paper treats it as an input.")


def meta_learner_step(student: Callable) -> Callable:
    """Exercise 4.3: one inner step of the Meta-learner LSTM."""
    return run_check("4.3", "one meta-learner step", student, reference_meta_learner_step, _probe_step)


# ----------------------------------------------------------------------------- 4.4

def _batch(b: int = 3, n_s: int = 6, n_q: int = 9, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n_s, 4, generator=g, dtype=D), torch.randint(0, 3, (b, n_s), generator=g),
            torch.randn(b, n_q, 4, generator=g, dtype=D), torch.randint(0, 3, (b, n_q), generator=g))


def _objective(meta: MetaLSTM, x_s, y_s, x_q, y_q, steps: int, variant: str = "right") -> Tensor:
    """A (possibly wrong) meta-objective, built from the reference step."""
    step = reference_meta_learner_step
    adapt_x, adapt_y, eval_x, eval_y = x_s, y_s, x_q, y_q
    if variant == "swapped":
        adapt_x, adapt_y, eval_x, eval_y = x_q, y_q, x_s, y_s
    elif variant == "support_only":
        eval_x, eval_y = x_s, y_s
    elif variant == "query_only":
        adapt_x, adapt_y = x_q, y_q
    theta, state = meta.c_0, meta.initial_state()
    if variant == "merged":  # one adaptation on all B support sets at once, scored on all queries
        for _ in range(steps):
            theta, state, _ = step(meta, theta, state, x_s.flatten(0, 1), y_s.flatten(0, 1))
        return F.cross_entropy(meta.learner_forward(theta, x_q.flatten(0, 1)), y_q.flatten(0, 1))
    losses = []
    for k in range(x_s.shape[0]):
        if variant not in ("theta_carried", "both_carried"):
            theta = meta.c_0
        if variant not in ("state_carried", "both_carried"):
            state = meta.initial_state()
        per_step, step_losses = [], []
        for _ in range(steps):
            theta, state, step_loss = step(meta, theta, state, adapt_x[k], adapt_y[k])
            step_losses.append(step_loss)
            if variant == "all_steps":
                per_step.append(F.cross_entropy(meta.learner_forward(theta, eval_x[k]), eval_y[k]))
        red = "sum" if variant == "query_sum" else "mean"
        loss = F.cross_entropy(meta.learner_forward(theta, eval_x[k]), eval_y[k], reduction=red)
        if variant == "all_steps":
            loss = torch.stack(per_step).mean()
        elif variant == "step_loss":
            loss = step_losses[-1]
        elif variant == "step_losses_mean":
            loss = torch.stack(step_losses).mean()
        losses.append(loss)
    stacked = torch.stack(losses)
    if variant == "sum":
        return stacked.sum()
    if variant == "first_task":
        return stacked[0]
    if variant == "last_task":
        return stacked[-1]
    return stacked.mean()


_OBJ_MISTAKES = {
    "swapped": "support and query are swapped: the T inner steps adapt on the support set (x_s, y_s), and "
               "the meta-objective is the loss of theta_T on the query set (x_q, y_q).",
    "support_only": "the loss is measured on the support set, which the inner steps just fitted: the "
                    "meta-objective is the loss of theta_T on the *query* set (x_q, y_q).",
    "query_only": "the inner steps adapt on the query set: adapt on the support set (x_s, y_s) and keep the "
                  "query set for the meta-objective only.",
    "state_carried": "the LSTM's state is not reset between tasks: every task starts from a fresh "
                     "meta.initial_state() (h, c and the previous gates at zero), as well as from meta.c_0.",
    "theta_carried": "theta is not reset between tasks: every task starts from theta_0 = meta.c_0, the "
                     "learned initialisation, not from the previous task's theta_T.",
    "both_carried": "neither theta nor the LSTM's state is reset between tasks: every task starts from "
                    "theta_0 = meta.c_0 and a fresh meta.initial_state().",
    "sum": "the task losses are summed (mean vs sum): the meta-objective is their mean over the B tasks.",
    "query_sum": "the query loss is summed over the query examples (mean vs sum): use meta.loss_fn, the "
                 "cross-entropy's mean.",
    "first_task": "only the first task counts: average the query losses of all B tasks (x_s.shape[0]).",
    "last_task": "only the last task's query loss is returned (the loop overwrites it?): average the query "
                 "losses of all B tasks.",
    "all_steps": "it averages the query loss over all T inner steps; the meta-objective is the query loss "
                 "at theta_T only, after the last step.",
    "step_loss": "it returns the support loss that the last step gives back (the third result of "
                 "meta.step_fn: L_T at theta_{T-1}, on the support set, detached). The meta-objective is the "
                 "*query* loss of theta_T: meta.loss_fn(meta.learner_forward(theta, x_q[b]), y_q[b]).",
    "step_losses_mean": "it averages the support losses that the steps give back (the third result of "
                        "meta.step_fn: detached, on the support set, before each update). The meta-objective is "
                        "the *query* loss of theta_T: meta.loss_fn(meta.learner_forward(theta, x_q[b]), y_q[b]).",
    "merged": "the B tasks are merged into one big support set (x_s.reshape(-1, ...) or flatten): one "
              "adaptation on all of them, although label 0 of one task is another class than label 0 of the "
              "next. Adapt each task on its own, from c_0 and a fresh state (x_s[b], y_s[b]), and average the "
              "B query losses.",
}


def _steps_mistakes(meta, batch, steps: int) -> dict[str, Tensor]:
    out = {}
    for k in range(0, 7):
        if k == steps:
            continue
        what = ("no inner steps at all (the query loss at c_0)" if k == 0 else f"{k} inner step{'s' * (k > 1)}")
        with torch.no_grad():
            out[f"it runs {what}, not `steps` = {steps}: loop range(steps) times, using the argument "
                f"(not a number or ML['T'] written in)."] = _objective(meta, *batch, k)
    return out


_META_PARAMS = ("c_0", "lstm.weight_ih", "lstm.weight_hh", "W_F.weight", "W_I.weight", "W_I.bias")


def _probe_objective(fn: Callable) -> None:
    meta = _small_meta(p=10.0, seed=1)
    batch = _batch()
    steps = 3
    before = _snapshot_module(meta)
    out = fn(meta, *batch, steps)
    _module_changed(meta, before, "meta")
    if isinstance(out, (tuple, list)):
        raise Mistake(f"meta_objective should return one scalar tensor, the mean query loss over the B tasks; "
                      f"your function returned {describe(out)}.",
                      "losses = [...one query loss per task...]; return torch.stack(losses).mean().")
    _need_tensor(out, "the meta-objective", "with one element (the mean query loss over the B tasks)",
                 "Return the loss tensor itself, so that loss.backward() reaches the meta-learner.")
    b = batch[0].shape[0]
    if out.numel() == b and out.numel() > 1:
        raise Mistake(f"the meta-objective has shape {tuple(out.shape)}: one loss per task. Return their mean "
                      "over the B tasks, a scalar.", "torch.stack(losses).mean().")
    expect(out.numel() == 1, f"the meta-objective should be a scalar tensor; it is {describe(out)}.")
    value = out.reshape(())
    expect_finite(value, "the meta-objective")
    with torch.no_grad():
        want = _objective(meta, *batch, steps)
        wrong = {msg: _objective(meta, *batch, steps, v) for v, msg in _OBJ_MISTAKES.items()}
    diagnose(value, want, "the meta-objective (mean query loss over the B = 3 tasks, T = 3 steps)",
             {**wrong, **_steps_mistakes(meta, batch, steps)}, atol=1e-10, rtol=1e-8)
    expect_grad(value, "the meta-objective", "Keep the graph: no torch.no_grad, .detach() or .item(); "
                "start each task from meta.c_0 itself.")
    params = dict(meta.named_parameters())
    got = torch.autograd.grad(value, [params[n] for n in _META_PARAMS], allow_unused=True)
    ref = torch.autograd.grad(_objective(meta, *batch, steps), [params[n] for n in _META_PARAMS])
    missing = [n for n, g in zip(_META_PARAMS, got) if g is None or not g.abs().sum() > 0]
    if "c_0" in missing:
        raise Mistake("no meta-gradient reaches c_0, the learned initialisation: start every task from "
                      "theta = meta.c_0 itself (not meta.c_0.detach() or a copy made with torch.no_grad), and "
                      "do not detach theta between the steps.")
    if missing:
        raise Mistake(f"no meta-gradient reaches the meta-learner's {_listing(missing)}: the inner steps must "
                      "run with gradients on (no torch.no_grad, no .detach() of theta between the steps).")
    for n, g, r in zip(_META_PARAMS, got, ref):
        expect_close(g, r, f"the meta-gradient with respect to meta.{n}", atol=1e-9, rtol=1e-7,
                     hint="The value is right but the graph differs: run the T steps with meta.step_fn and "
                          "do not detach theta or the state between them.")
    # another number of steps and another meta-batch size: neither may be hard-coded
    batch2 = _batch(b=2, n_s=4, n_q=5, seed=4)
    out2 = fn(meta, *batch2, 1)
    _need_tensor(out2, "the meta-objective", "with one element")
    expect(out2.numel() == 1, f"the meta-objective should be a scalar tensor; for B = 2 it is {describe(out2)}.")
    with torch.no_grad():
        want2 = _objective(meta, *batch2, 1)
        wrong2 = {msg: _objective(meta, *batch2, 1, v) for v, msg in _OBJ_MISTAKES.items()}
    diagnose(out2.reshape(()), want2, "the meta-objective for B = 2 tasks and steps = 1",
             {**wrong2, **_steps_mistakes(meta, batch2, 1)}, atol=1e-10, rtol=1e-8)


def meta_objective(student: Callable) -> Callable:
    """Exercise 4.4: the mean query loss over a meta-batch after T meta-learner steps per task."""
    return run_check("4.4", "the meta-objective of a meta-batch", student, reference_meta_objective,
                     _probe_objective)
