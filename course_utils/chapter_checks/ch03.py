"""Checks for chapter 03 (MAML): the inner step, the meta-gradient by hand, the outer step, first order.

Exercises:
    3.1 ``inner_step(model, params, x_s, y_s, alpha, loss_fn, create_graph=True) -> dict``
    3.2 ``linreg_meta_gradient(theta, x_s, y_s, x_q, y_q, alpha) -> Tensor (2,)``
    3.3 ``maml_step(model, meta_opt, tasks, alpha, steps, loss_fn) -> float``
    3.4 ``fomaml_gradient(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn) -> dict``

Each probe calls the student's function again with each argument changed on its own (two step sizes
alpha, two losses, a classifier with ``F.cross_entropy`` for 3.1, ``create_graph`` True and False, two
numbers of inner steps), so an ignored argument fails, and it runs 3.1 and 3.4 from parameters that
differ from the model's own weights (so ``model(x)`` in place of ``functional_call`` shows). Inputs are
copied per call (``checks.run_check``): a change in place (``.data``, ``add_``, ``-=``, assigning into
``params``) is named first.

Classic mistakes recognised (each computed, then matched against the student's output): a missing
``create_graph`` (the meta-gradient loses its Hessian term) or one always on; an inner step that
detaches theta (entirely, or ``p.detach() - alpha * g`` with a gradient that keeps its graph: the
Jacobian becomes -alpha H instead of I - alpha H); gradient ascent; alpha, ``loss_fn`` or ``steps``
ignored; the model's own weights used instead of ``params``; a summed instead of a mean loss (over
examples, or over the tasks of a meta-batch); support and query swapped, the query set used in the
inner loop, or one set for both (the seed article's formula read literally); the Hessian of the wrong
set, its sign, a missing alpha or factor 2, the query gradient taken at theta, the entries in the
order (b, w) or features (1, x); the meta-optimiser stepping the adapted instead of the initial
parameters, theta' copied into the model (any write to its parameters outside ``meta_opt.step()``), a
missing ``zero_grad``, one optimiser step per task, every inner step restarted from theta; a meta-loss
returned as a tensor; and for first order the second-order gradient, the gradient at theta, the adapted
parameters themselves, Reptile's direction theta - theta', or ``.grad`` read from tensors that are not
leaves (None).
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..checks import (Mistake, _close, _where, describe, expect, expect_close,
                      expect_device_agnostic, expect_grad, expect_shape, run_check)

__all__ = ["EXERCISES", "inner_step", "linreg_meta_gradient", "maml_step", "fomaml_gradient",
           "reference_inner_step", "reference_linreg_meta_gradient", "reference_maml_step",
           "reference_fomaml_gradient", "log_cosh_loss"]

EXERCISES = ["3.1", "3.2", "3.3", "3.4"]
D = torch.float64
LossFn = Callable[[Tensor, Tensor], Tensor]
TOL = dict(atol=1e-10, rtol=1e-8)


# ----------------------------------------------------------------------------- references

def reference_inner_step(model: nn.Module, params: dict[str, Tensor], x_s: Tensor, y_s: Tensor,
                         alpha: float, loss_fn: LossFn, create_graph: bool = True) -> dict[str, Tensor]:
    """theta' = theta - alpha * grad_theta L_S(f_theta), differentiable in theta if ``create_graph``."""
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return {name: p - alpha * g for (name, p), g in zip(params.items(), grads)}


def reference_linreg_meta_gradient(theta: Tensor, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor,
                                   alpha: float) -> Tensor:
    """(I - alpha H_S) grad L_Q(theta') for f(x) = w x + b, L = mean squared error, one inner step."""
    phi_s = torch.stack([x_s, torch.ones_like(x_s)], dim=1)
    phi_q = torch.stack([x_q, torch.ones_like(x_q)], dim=1)
    grad_s = 2 / len(x_s) * phi_s.T @ (phi_s @ theta - y_s)
    hess_s = 2 / len(x_s) * phi_s.T @ phi_s
    theta_adapted = theta - alpha * grad_s
    grad_q = 2 / len(x_q) * phi_q.T @ (phi_q @ theta_adapted - y_q)
    return (torch.eye(2, dtype=theta.dtype, device=theta.device) - alpha * hess_s) @ grad_q


def reference_maml_step(model: nn.Module, meta_opt: torch.optim.Optimizer,
                        tasks: tuple[Tensor, Tensor, Tensor, Tensor], alpha: float, steps: int,
                        loss_fn: LossFn, inner: Callable | None = None) -> float:
    """One outer step on a meta-batch: mean query loss at the adapted parameters, backward, step theta."""
    inner = inner or reference_inner_step
    x_s, y_s, x_q, y_q = tasks
    meta_opt.zero_grad()
    theta = dict(model.named_parameters())
    meta_loss = 0.0
    for i in range(x_s.shape[0]):
        adapted = theta
        for _ in range(steps):
            adapted = inner(model, adapted, x_s[i], y_s[i], alpha, loss_fn, create_graph=True)
        meta_loss = meta_loss + loss_fn(functional_call(model, adapted, (x_q[i],)), y_q[i])
    meta_loss = meta_loss / x_s.shape[0]
    meta_loss.backward()
    meta_opt.step()
    return meta_loss.item()


def reference_fomaml_gradient(model: nn.Module, params: dict[str, Tensor], x_s: Tensor, y_s: Tensor,
                              x_q: Tensor, y_q: Tensor, alpha: float, steps: int,
                              loss_fn: LossFn, inner: Callable | None = None) -> dict[str, Tensor]:
    """First-order MAML for one task: grad_theta' L_Q(f_theta'), theta' from ``steps`` inner steps."""
    inner = inner or reference_inner_step
    adapted = params
    for _ in range(steps):
        adapted = inner(model, adapted, x_s, y_s, alpha, loss_fn, create_graph=False)
    adapted = {k: v.detach().requires_grad_() for k, v in adapted.items()}
    loss = loss_fn(functional_call(model, adapted, (x_q,)), y_q)
    return dict(zip(adapted, torch.autograd.grad(loss, list(adapted.values()))))


def log_cosh_loss(pred: Tensor, y: Tensor) -> Tensor:
    """A second regression loss for the probes (smooth, not the squared error): mean log cosh(pred - y)."""
    return torch.log(torch.cosh(pred - y)).mean()


# ----------------------------------------------------------------------------- probe data

def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1)).to(D)


def _classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3)).to(D)


def _tasks(b: int = 2, k: int = 5, q: int = 7, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """B sine tasks; support and query differ in size so a swap changes every number."""
    g = torch.Generator().manual_seed(seed)
    amp = 0.5 + 2 * torch.rand(b, 1, 1, generator=g, dtype=D)
    ph = 3 * torch.rand(b, 1, 1, generator=g, dtype=D)
    x_s = 10 * torch.rand(b, k, 1, generator=g, dtype=D) - 5
    x_q = 10 * torch.rand(b, q, 1, generator=g, dtype=D) - 5
    return x_s, amp * torch.sin(x_s - ph), x_q, amp * torch.sin(x_q - ph)


def _leaves(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}


def _theta(model: nn.Module, seed: int = 5) -> dict[str, Tensor]:
    """Parameters that differ from the model's own weights (so model(x) instead of functional_call shows)."""
    g = torch.Generator().manual_seed(seed)
    return {k: (v.detach() + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype)).requires_grad_()
            for k, v in model.named_parameters()}


def _vec(d: dict[str, Tensor]) -> Tensor:
    return torch.cat([v.detach().reshape(-1).to(D) for v in d.values()])


def _grads(model: nn.Module, params: dict[str, Tensor], x: Tensor, y: Tensor, loss_fn: LossFn) -> dict[str, Tensor]:
    """grad of loss_fn(f_params(x), y) with respect to params, detached."""
    p = {k: v.detach().requires_grad_() for k, v in params.items()}
    g = torch.autograd.grad(loss_fn(functional_call(model, p, (x,)), y), list(p.values()))
    return dict(zip(p, g))


def _jvp(adapted: dict[str, Tensor], theta: dict[str, Tensor], v: dict[str, Tensor]) -> Tensor | None:
    """d/d theta of sum_k <adapted[k], v[k]>: (I - alpha H) v for one inner step (None if no graph)."""
    s = sum((adapted[k] * v[k]).sum() for k in adapted)
    if not isinstance(s, Tensor) or not s.requires_grad:
        return None
    try:
        g = torch.autograd.grad(s, list(theta.values()), allow_unused=True, retain_graph=True)
    except NotImplementedError as e:  # torch: an operation in the student's step has no second derivative
        raise Mistake(f"theta' cannot be differentiated with respect to theta: torch says "
                      f"\"{str(e).splitlines()[0]}\". Some operation in your inner step has no derivative "
                      "of its gradient, so MAML's second-order meta-gradient cannot be taken through it.",
                      "Compute the support loss with loss_fn(functional_call(model, params, (x_s,)), y_s) "
                      "and nothing else.") from None
    return torch.cat([(torch.zeros_like(t) if gi is None else gi).reshape(-1)
                      for t, gi in zip(theta.values(), g)])


def _expect_params_dict(out, like: dict[str, Tensor], what: str, entry: str = "tensor") -> None:
    """``out`` must be a dict with ``like``'s names, in order, each a tensor of the same shape."""
    if not isinstance(out, dict):
        extra = ""
        if isinstance(out, (list, tuple)):
            extra = " A list or tuple loses the names: build a dict, e.g. {name: ... for name, p in params.items()}."
        elif isinstance(out, Tensor):
            extra = (" One tensor (everything flattened together?) is not enough: return one entry per "
                     "parameter, with the names of params.")
        raise Mistake(f"{what} should be a dict name -> {entry} with the names of params, but your function "
                      f"returned {describe(out)}.{extra}")
    expect(list(out) == list(like), f"{what} should have the same names as params, in order: "
           f"{list(like)}; got {list(out)}.", "Build it with a dict comprehension over params.items().")
    for k in like:
        if out[k] is None:
            raise Mistake(
                f"{what}[{k!r}] should be a tensor, but it is None. If you called backward() and read "
                "`.grad`: `.grad` is filled only on *leaf* tensors (created with requires_grad=True, not "
                "computed from others), and it accumulates. theta' = theta - alpha * g is not a leaf, nor are "
                "the copies of params this check passes; with real leaves, such as the ones section 6's cell "
                "passes for every task, the same code would run and quietly add each task's gradient to the "
                "previous ones.", "Take the gradient explicitly: torch.autograd.grad(loss, "
                "list(adapted.values())), then dict(zip(adapted, grads)).")
        if not isinstance(out[k], Tensor):
            raise Mistake(f"{what}[{k!r}] should be a tensor, but it is {describe(out[k])}.")
        expect_shape(out[k], tuple(like[k].shape), f"{what}[{k!r}]")


def _call(fn: Callable, *args, **kwargs):
    """Call the (guarded) student function; turn autograd's errors that name a classic mistake into it."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as e:
        text = str(e)
        if not getattr(e, "_course_student", False):
            raise
        if "appears to not have been used in the graph" in text:
            raise Mistake(
                "the loss your function differentiates does not depend on the tensors in `params`"
                f"{_where(e)}: `model(x)` runs the model's own weights, and `model.parameters()` are not "
                "the tensors in params.",
                "Run the net with the given tensors, functional_call(model, params, (x,)), and "
                "differentiate with respect to list(params.values()).") from None
        if "does not require grad" in text and "grad_fn" in text:
            raise Mistake(
                f"the loss your function differentiates has no graph back to `params`{_where(e)}: "
                "something detaches the parameters before the forward pass (.detach(), .data, "
                "torch.no_grad()).", "Use the tensors in params as they are.") from None
        raise


def _first_match(actual: Tensor, what: str, mistakes: Mapping[str, Tensor], right: Tensor,
                 hint: str = "") -> None:
    """Raise a Mistake naming the first listed mistake that ``actual`` matches (skipping any that equal
    the right answer on these inputs); otherwise say plainly that ``actual`` is wrong."""
    a = actual.detach()
    if a.shape == right.shape and _close(a, right, **TOL):
        return
    explanation = _named_match(a, mistakes, right)
    if explanation is not None:
        raise Mistake(f"{what}: wrong. It looks like {explanation}", hint)
    expect_close(a, right, what, hint=hint, **TOL)


def _named_match(actual: Tensor, mistakes: Mapping[str, Tensor], right: Tensor) -> str | None:
    """The first listed mistake that ``actual`` matches (skipping any that equal ``right``), or None."""
    a = actual.detach()
    for explanation, wrong in mistakes.items():
        w = torch.as_tensor(wrong).detach()
        if w.shape == right.shape and _close(w, right, **TOL):
            continue
        if a.shape == w.shape and _close(a, w, **TOL):
            return explanation
    return None


# ----------------------------------------------------------------------------- 3.1

def _ref_values(model, theta, x, y, alpha, loss_fn) -> Tensor:
    return _vec(reference_inner_step(model, theta, x, y, alpha, loss_fn, create_graph=False))


def _probe_inner_step(fn: Callable) -> None:
    model, (x_s, y_s, _, _) = _net(), _tasks(b=1)
    x_s, y_s = x_s[0], y_s[0]
    alpha = 0.1
    theta = _theta(model)
    out = _call(fn, model, theta, x_s, y_s, alpha, F.mse_loss, create_graph=True)
    _expect_params_dict(out, theta, "inner_step's result")
    want = reference_inner_step(model, theta, x_s, y_s, alpha, F.mse_loss)
    t0 = {k: v.detach() for k, v in theta.items()}
    g = _grads(model, theta, x_s, y_s, F.mse_loss)
    own = {k: v.detach() for k, v in model.named_parameters()}
    g_own = _grads(model, own, x_s, y_s, F.mse_loss)
    g_sum = _grads(model, theta, x_s, y_s, lambda p, y: ((p - y) ** 2).sum())
    _first_match(_vec(out), "theta' (the adapted parameters)", {
        "it moves up the gradient (theta + alpha * grad); gradient *descent* subtracts.":
            _vec({k: t0[k] + alpha * g[k] for k in t0}),
        "alpha is missing: theta' = theta - alpha * grad.": _vec({k: t0[k] - g[k] for k in t0}),
        "it returns the gradient instead of theta' = theta - alpha * grad.": _vec(g),
        "it returns alpha * gradient instead of theta' = theta - alpha * grad.":
            _vec({k: alpha * g[k] for k in t0}),
        "it returns params unchanged: subtract alpha * grad from each tensor.": _vec(t0),
        "the gradient is taken at the model's own weights (model(x_s) or model.parameters()), not at the "
        "tensors in params: run the net with functional_call(model, params, (x_s,)).":
            _vec({k: t0[k] - alpha * g_own[k] for k in t0}),
        "it steps the model's own weights (model.named_parameters()) instead of the tensors in params.":
            _vec({k: own[k] - alpha * g_own[k] for k in t0}),
        "the squared errors are summed over the support points instead of calling loss_fn (a mean): "
        "use loss_fn(prediction, y_s) as given.": _vec({k: t0[k] - alpha * g_sum[k] for k in t0}),
    }, _vec(want))
    for k, v in out.items():
        expect_grad(v, f"theta'[{k!r}]",
                    "theta' must stay a function of theta: write theta - alpha * grad, without .detach(), "
                    ".data or torch.no_grad().")
    gen = torch.Generator().manual_seed(1)
    v = {k: torch.randn(t.shape, generator=gen, dtype=D) for k, t in theta.items()}
    jac_ref = _jvp(want, theta, v)
    jac = _jvp(out, theta, v)
    expect(jac is not None and bool(jac.abs().sum() > 0),
           "theta' does not depend on theta: the inner step detaches it, so no meta-gradient can flow.",
           "Subtract from the params you were given (not params.detach()), and keep the gradient's graph.")
    what = "d theta'/d theta (the inner step's Jacobian, times a vector)"
    if not torch.allclose(jac, jac_ref, atol=1e-9, rtol=1e-7):
        if torch.allclose(jac, _vec(v), atol=1e-9, rtol=1e-7):
            raise Mistake(f"{what}: wrong. It looks like create_graph is not passed on to torch.autograd.grad, "
                          "so the gradient is a constant and the Jacobian is the identity: the meta-gradient "
                          "loses its Hessian term (that is first-order MAML).",
                          "torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)")
        if torch.allclose(jac, jac_ref - _vec(v), atol=1e-9, rtol=1e-7):
            raise Mistake(f"{what}: wrong. It looks like theta is detached in the update (p.detach() - alpha * g) "
                          "while the gradient keeps its graph: the Jacobian becomes -alpha H instead of "
                          "I - alpha H, so the meta-gradient loses its main term, grad L_Q(theta').",
                          "Subtract from the tensors you were given: p - alpha * g, not p.detach() - alpha * g "
                          "(nor p.data, nor a copy).")
        expect_close(jac, jac_ref, what, atol=1e-9, rtol=1e-7,
                     hint="theta' = p - alpha * g for each (name, p) in params.items(), with g from "
                          "torch.autograd.grad on the support loss computed with those same tensors.")

    # create_graph=False: the same values, the gradient a constant
    out_fo = _call(fn, model, theta, x_s, y_s, alpha, F.mse_loss, create_graph=False)
    _expect_params_dict(out_fo, theta, "inner_step's result with create_graph=False")
    expect_close(_vec(out_fo), _vec(want), "theta' with create_graph=False (the values do not change, only "
                 "the graph)", **TOL)
    jac_fo = _jvp(out_fo, theta, v)
    expect(jac_fo is None or torch.allclose(jac_fo, _vec(v), atol=1e-10),
           "with create_graph=False the inner gradient should be a constant (Jacobian = identity), but "
           "yours still carries second-order terms: pass create_graph on to torch.autograd.grad, do not "
           "hard-code create_graph=True.")

    # alpha: another step size
    alpha2 = 0.37
    out_a = _call(fn, model, theta, x_s, y_s, alpha2, F.mse_loss, create_graph=True)
    _expect_params_dict(out_a, theta, f"inner_step's result with alpha={alpha2}")
    _first_match(_vec(out_a), f"theta' with alpha={alpha2}", {
        f"alpha is ignored (a fixed step size): with alpha={alpha2} your step is the one for alpha={alpha}.":
            _vec(want),
        "alpha is ignored: with another alpha your step has another size, theta - alpha * grad uses "
        "the alpha it is given.": _ref_values(model, theta, x_s, y_s, 0.01, F.mse_loss),
    }, _ref_values(model, theta, x_s, y_s, alpha2, F.mse_loss))

    # loss_fn: another regression loss, then a classifier with cross-entropy
    out_l = _call(fn, model, theta, x_s, y_s, alpha, log_cosh_loss, create_graph=True)
    _expect_params_dict(out_l, theta, "inner_step's result with loss_fn=log_cosh_loss")
    _first_match(_vec(out_l), "theta' with loss_fn=log_cosh_loss", {
        "loss_fn is ignored: with loss_fn=log_cosh_loss your step is the one for the mean squared error. "
        "Compute the support loss as loss_fn(prediction, y_s).": _vec(want),
    }, _ref_values(model, theta, x_s, y_s, alpha, log_cosh_loss))
    clf = _classifier()
    theta_c = _theta(clf, seed=6)
    gc = torch.Generator().manual_seed(8)
    x_c, y_c = torch.randn(6, 2, generator=gc, dtype=D), torch.arange(6) % 3
    try:
        out_c = fn(clf, theta_c, x_c, y_c, 0.5, F.cross_entropy, create_graph=True)
    except Mistake:
        raise
    except Exception as e:
        if not getattr(e, "_course_student", False):
            raise
        raise Mistake(f"with a 3-way classifier and loss_fn=F.cross_entropy (labels of shape (6,)) your "
                      f"function raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                      f"{_where(e)}. inner_step must work for any model and loss: call "
                      "loss_fn(functional_call(model, params, (x_s,)), y_s) and nothing specific to "
                      "regression (no reshaping of y_s, no MSE).") from None
    _expect_params_dict(out_c, theta_c, "inner_step's result for a classifier with F.cross_entropy")
    expect_close(_vec(out_c), _ref_values(clf, theta_c, x_c, y_c, 0.5, F.cross_entropy),
                 "theta' for a classifier with loss_fn=F.cross_entropy", **TOL)

    # a second step starts from adapted parameters (not leaves): it must work the same
    two = _call(fn, model, want, x_s, y_s, alpha, F.mse_loss, create_graph=True)
    _expect_params_dict(two, theta, "inner_step's result from adapted parameters")
    expect_close(_vec(two), _ref_values(model, want, x_s, y_s, alpha, F.mse_loss),
                 "a second inner step, started from the first one's theta'", **TOL)
    for k, t in two.items():
        expect_grad(t, f"theta' after two steps [{k!r}]",
                    "From adapted parameters (tensors with a graph, not leaves) the step must keep the graph "
                    "too: no .detach(), no fresh leaves.")


def inner_step(student: Callable) -> Callable:
    """Exercise 3.1: one inner step theta' = theta - alpha * grad L_S."""
    return run_check("3.1", "one inner step", student, reference_inner_step, _probe_inner_step)


# ----------------------------------------------------------------------------- 3.2

def _linreg_data() -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    x_s, x_q = torch.randn(4, generator=g, dtype=D), torch.randn(6, generator=g, dtype=D) + 0.5
    y_s = 1.5 * x_s - 0.3 + 0.2 * torch.randn(4, generator=g, dtype=D)
    y_q = 1.5 * x_q - 0.3 + 0.2 * torch.randn(6, generator=g, dtype=D)
    return torch.tensor([0.4, 0.8], dtype=D), x_s, y_s, x_q, y_q


def _linreg_variant(theta, x_s, y_s, x_q, y_q, alpha, adapt="s", score="q", hess="s", at="adapted",
                    factor=2.0, norm="mean", sign=-1.0, hessian=True, alpha_h=True, features="x1") -> Tensor:
    """The 1-D linear-regression meta-gradient, right or with one deliberate mistake (``features="1x"``:
    phi(x) = (1, x), so theta[0] acts as the bias)."""
    sets = {"s": (x_s, y_s), "q": (x_q, y_q)}

    def scale(x):
        return {"mean": 1 / len(x), "sum": 1.0, "support_size": 1 / len(x_s)}[norm]

    def phi(x):
        cols = [x, torch.ones_like(x)]
        return torch.stack(cols if features == "x1" else cols[::-1], 1)

    def grad(name, t):
        x, y = sets[name]
        return factor * scale(x) * phi(x).T @ (phi(x) @ t - y)

    def hessian_of(name):
        x, _ = sets[name]
        return factor * scale(x) * phi(x).T @ phi(x)

    adapted = theta - alpha * grad(adapt, theta)
    g_q = grad(score, adapted if at == "adapted" else theta)
    if not hessian:
        return g_q
    return (torch.eye(2, dtype=D) + sign * (alpha if alpha_h else 1.0) * hessian_of(hess)) @ g_q


def _probe_linreg(fn: Callable) -> None:
    theta, x_s, y_s, x_q, y_q = _linreg_data()
    alpha = 0.3
    out = fn(theta.clone(), x_s, y_s, x_q, y_q, alpha)
    if not isinstance(out, Tensor):
        raise Mistake(f"the meta-gradient should be one tensor of shape (2,), (dL/dw, dL/db); your function "
                      f"returned {describe(out)}.", "Return a tensor, e.g. torch.stack([dw, db]) or the "
                      "matrix-vector product (I - alpha H_S) @ grad_q.")
    expect_shape(out, (2,), "the meta-gradient", "Return (dL/dw, dL/db) as one tensor of shape (2,).")
    expect(bool(torch.isfinite(out).all()), "the meta-gradient contains NaN or inf.")
    data = (theta, x_s, y_s, x_q, y_q, alpha)
    want = _linreg_variant(*data)
    _first_match(out, "the meta-gradient", {
        "it is grad L_Q(theta') alone: the Hessian term (I - alpha H_S) is missing. That is the "
        "first-order approximation, not the exact meta-gradient.": _linreg_variant(*data, hessian=False),
        "the Hessian term has the wrong sign: d theta'/d theta = I - alpha H_S.": _linreg_variant(*data, sign=1.0),
        "the Hessian of the wrong set: the factor is I - alpha H_S, with H_S from the *support* set, "
        "the set the inner step adapts on; yours uses the query set's Hessian H_Q.":
            _linreg_variant(*data, hess="q"),
        "support and query are swapped: adapt on the support set, measure the loss on the query set.":
            _linreg_variant(*data, adapt="q", score="s", hess="q"),
        "the query set is used in the inner loop: theta' must be adapted on the support set "
        "(x_s, y_s); only the outer loss uses the query set.": _linreg_variant(*data, adapt="q", hess="q"),
        "the query set is used in the inner loop (the Hessian comes from the support set, but the inner "
        "step adapts on the query set).": _linreg_variant(*data, adapt="q"),
        "one set is used for both the inner step and the loss (the seed article's formula read "
        "literally): adapt on the support set, score on the query set.":
            _linreg_variant(*data, score="s"),
        "the query gradient is taken at theta, not at the adapted theta' = theta - alpha grad L_S(theta).":
            _linreg_variant(*data, at="theta"),
        "the factor 2 of the squared error is missing: d/dtheta mean((phi theta - y)^2) = "
        "2/K Phi^T (Phi theta - y), and H = 2/K Phi^T Phi.": _linreg_variant(*data, factor=1.0),
        "the losses are sums over the points, not means: divide by the number of points of each set "
        "(K for the support set, Q for the query set).": _linreg_variant(*data, norm="sum"),
        "the query loss is divided by the support size K: the query set has its own size Q = len(x_q).":
            _linreg_variant(*data, norm="support_size"),
        "alpha is missing from the Hessian term: d theta'/d theta = I - alpha H_S.":
            _linreg_variant(*data, alpha_h=False),
        "the two entries are in the wrong order, (dL/db, dL/dw): theta = (w, b), so return (dL/dw, dL/db), "
        "the derivative with respect to w first.": want.flip(0),
        "the features are phi(x) = (1, x), which makes theta[0] the bias: theta = (w, b) pairs with "
        "phi(x) = (x, 1), so that phi(x) @ theta = w x + b.": _linreg_variant(*data, features="1x"),
    }, want)
    alpha2 = 0.05
    out2 = fn(theta.clone(), x_s, y_s, x_q, y_q, alpha2)
    expect_shape(out2, (2,), f"the meta-gradient with alpha={alpha2}")
    _first_match(out2, f"the meta-gradient with alpha={alpha2}", {
        f"alpha is ignored: with alpha={alpha2} your function returns the meta-gradient for alpha={alpha}.": want,
    }, _linreg_variant(theta, x_s, y_s, x_q, y_q, alpha2))
    expect_device_agnostic(getattr(fn, "__wrapped__", fn), theta, x_s, y_s, x_q, y_q, alpha,
                           what="linreg_meta_gradient")


def linreg_meta_gradient(student: Callable) -> Callable:
    """Exercise 3.2: the exact meta-gradient of 1-D linear regression, by hand."""
    return run_check("3.2", "the meta-gradient by hand", student, reference_linreg_meta_gradient,
                     _probe_linreg)


# ----------------------------------------------------------------------------- 3.3

ONE_STEP = ("the result is that of a single inner step, not `steps` of them: each step must start from the "
            "previous `adapted` (adapted = inner_step(model, adapted, ...)), not from theta again, and the "
            "loop runs `steps` times.")
STALE = 1.0   # the stale .grad the probe leaves on theta, which zero_grad must clear


def _simulate(tasks, alpha: float, steps: int, loss_fn: LossFn, *, seed: int = 0, lr: float = 0.5,
              adapt_on: str = "s", score_on: str = "q", create_graph: bool = True, reduce: str = "mean",
              zero_grad: bool = True, per_task_step: bool = False) -> tuple[Tensor, float]:
    """theta after one meta-step (right, or with one deliberate mistake) and the loss it returns."""
    model = _net(seed)
    for p in model.parameters():
        p.grad = torch.full_like(p, STALE)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x_s, y_s, x_q, y_q = tasks
    sets = {"s": (x_s, y_s), "q": (x_q, y_q)}
    b = x_s.shape[0]
    if zero_grad and not per_task_step:
        opt.zero_grad()
    theta = dict(model.named_parameters())
    total, values = 0.0, []
    for i in range(b):
        if per_task_step:
            opt.zero_grad()
        (xa, ya), (xb, yb) = sets[adapt_on], sets[score_on]
        a = theta
        for _ in range(steps):
            a = reference_inner_step(model, a, xa[i], ya[i], alpha, loss_fn, create_graph=create_graph)
        li = loss_fn(functional_call(model, a, (xb[i],)), yb[i])
        values.append(li.item())
        if per_task_step:
            li.backward()
            opt.step()
        else:
            total = total + li
    if not per_task_step:
        (total / b if reduce == "mean" else total).backward()
        opt.step()
    return _vec(dict(model.named_parameters())), sum(values) / b


def _adapted_then_stepped(tasks, alpha, steps, loss_fn, seed: int = 0, lr: float = 0.5
                          ) -> dict[str, tuple[Tensor, Tensor]]:
    """Mistake: the model ends at theta'_b (adapted on task b), stepped by the meta-update or not."""
    model = _net(seed)
    theta = _leaves(model)
    step = _vec(theta) - _simulate(tasks, alpha, steps, loss_fn, seed=seed, lr=lr)[0]  # lr * meta-grad
    x_s, y_s, _, _ = tasks
    out = {}
    for b in range(x_s.shape[0]):
        a = theta
        for _ in range(steps):
            a = reference_inner_step(model, a, x_s[b], y_s[b], alpha, loss_fn)
        out[f"task {b}"] = (_vec(a) - step, _vec(a))
    return out


WRITTEN = ("your function wrote into the model's parameters outside meta_opt.step() (load_state_dict, "
           "copy_, .data, or new nn.Parameters): it looks like theta' was copied into the model. Then the "
           "model no longer holds theta (a later task may adapt from the wrong point, and the optimiser may "
           "step the wrong parameters), and a query loss computed with model(x) has no path back through the "
           "inner steps (at best it gives the first-order gradient).")
WRITTEN_HINT = ("Leave the model's weights alone until meta_opt.step(): keep theta' in the dict `adapted` and "
                "compute the query loss with functional_call(model, adapted, (x_q[i],)).")


class _WriteWatch:
    """Records in-place writes to a model's parameters that do not come from the optimiser's step: version
    counters (load_state_dict, copy_ under no_grad), the values the optimiser steps from (writes through
    .data), and the parameter objects themselves (replaced by new ones)."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer):
        self.model, self.params = model, list(model.parameters())
        self.start = [p._version for p in self.params]
        self.theta0 = [p.detach().clone() for p in self.params]
        self.by_step, self.at_step, self._pre = 0, None, None
        self._hooks = [opt.register_step_pre_hook(self._before), opt.register_step_post_hook(self._after)]

    def _before(self, *_):
        self._pre = [p._version for p in self.params]
        if self.at_step is None:
            self.at_step = [p.detach().clone() for p in self.params]

    def _after(self, *_):
        self.by_step += sum(p._version - v for p, v in zip(self.params, self._pre))

    def written(self) -> bool:
        for h in self._hooks:
            h.remove()
        if [id(p) for p in self.model.parameters()] != [id(p) for p in self.params]:
            return True
        if sum(p._version - v for p, v in zip(self.params, self.start)) > self.by_step:
            return True
        return self.at_step is not None and any(not torch.equal(a, t) for a, t in zip(self.at_step, self.theta0))


def _run_step(fn: Callable, tasks, alpha, steps, loss_fn, seed: int = 0, lr: float = 0.5):
    """theta after the student's meta-step, the loss it returned, and whether it wrote into the model."""
    model = _net(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for p in model.parameters():  # stale gradients that zero_grad must clear
        p.grad = torch.full_like(p, STALE)
    watch = _WriteWatch(model, opt)
    try:
        loss = fn(model, opt, tasks, alpha, steps, loss_fn)
    except RuntimeError as e:
        text = str(e)
        if "modified by an inplace operation" in text and watch.written():
            raise Mistake(f"backward() failed{_where(e)} because a tensor its graph needs was overwritten in "
                          f"place, and {WRITTEN}", WRITTEN_HINT) from None
        if "does not require grad" in text or "does not have a grad_fn" in text:
            raise Mistake("the meta-loss does not depend on theta, so backward() has nothing to "
                          f"differentiate{_where(e)}: the inner step detaches the parameters.",
                          "Adapt from dict(model.named_parameters()) with inner_step(..., "
                          "create_graph=True); no .detach(), .data or torch.no_grad().") from None
        raise
    return _vec(dict(model.named_parameters())), loss, watch.written()


def _probe_maml_step(fn: Callable) -> None:
    seed, alpha, steps, lr = 0, 0.1, 2, 0.5
    tasks = _tasks(b=2)
    got, loss, written = _run_step(fn, tasks, alpha, steps, F.mse_loss, seed, lr)
    theta0 = _vec(dict(_net(seed).named_parameters()))
    want, want_loss = _simulate(tasks, alpha, steps, F.mse_loss, seed=seed, lr=lr)
    expect(not torch.allclose(got, theta0 - lr * STALE, atol=1e-12),
           "theta moved by exactly -lr * (stale gradient): the meta-loss never reached theta.",
           "Call meta_opt.zero_grad() first, and keep theta' a function of theta (no .detach()).")
    expect(not torch.allclose(got, theta0, atol=1e-14),
           "the model's parameters did not change: no meta-gradient reached theta (an inner step that "
           "detaches?) or meta_opt.step() was not called.")

    def sim(**kw):
        return _simulate(tasks, alpha, kw.pop("steps", steps), F.mse_loss, seed=seed, lr=lr, **kw)[0]
    mistakes = {
        "it is the first-order update: the inner step ran without create_graph=True, so the "
        "meta-gradient lost its Hessian term.": sim(create_graph=False),
        "support and query are swapped: the inner steps must use (x_s, y_s), the meta-loss (x_q, y_q).":
            sim(adapt_on="q", score_on="s"),
        "the query set is used in the inner loop: adapt on the support set (x_s, y_s), and use the "
        "query set (x_q, y_q) only for the meta-loss.": sim(adapt_on="q"),
        "the support set is used for both the inner steps and the meta-loss (the seed article's "
        "formula read literally): score the adapted parameters on the query set.": sim(score_on="s"),
        "meta_opt.zero_grad() is missing, so stale gradients were added to the meta-gradient.":
            sim(zero_grad=False),
        "the task losses are summed; this course averages them over the meta-batch (divide by B).":
            sim(reduce="sum"),
        "meta_opt.step() runs once per task (B updates, each on one task's loss): MAML makes one update "
        "per meta-batch, on the mean of the task losses.": sim(per_task_step=True),
        ONE_STEP: sim(steps=1),
    }
    ends_adapted = {}
    for b, (stepped, adapted_only) in _adapted_then_stepped(tasks, alpha, steps, F.mse_loss, seed, lr).items():
        msg = (f"the model ends at the parameters adapted to {b} (then stepped): the meta-optimiser must "
               "step the initial parameters theta, and theta' must never be written into the model.")
        ends_adapted[msg] = stepped
        ends_adapted[msg.replace("(then stepped)", "(not stepped)")] = adapted_only
    if written and not _close(got, want, **TOL):   # theta' copied into the model: name that, whatever the numbers
        named = _named_match(got, ends_adapted, want)
        if named is not None:
            raise Mistake(f"theta after the meta-step: wrong. It looks like {named}", WRITTEN_HINT)
        raise Mistake(f"theta after the meta-step: wrong, and {WRITTEN}", WRITTEN_HINT)
    _first_match(got, "theta after the meta-step", {**mistakes, **ends_adapted}, want)

    # the returned meta-loss
    if isinstance(loss, Tensor):
        expect(loss.numel() == 1, f"maml_step should return the meta-loss as a Python float; your function "
               f"returned {describe(loss)}.", "Return meta_loss.item() (a Python float).")
        value = loss.detach().item()
    else:
        expect(isinstance(loss, (float, int)) and not isinstance(loss, bool),
               f"maml_step should return the meta-loss as a Python float; your function returned "
               f"{describe(loss)}.", "Return meta_loss.item() (a Python float).")
        value = float(loss)
    _first_match(torch.tensor(value, dtype=D), "the returned meta-loss (mean query loss before the step)", {
        "it is the sum of the task losses; return their mean (the meta-loss you differentiate).":
            torch.tensor(want_loss * tasks[0].shape[0], dtype=D),
    }, torch.tensor(want_loss, dtype=D))
    expect(not isinstance(loss, Tensor),
           "the meta-step and the meta-loss are right, but maml_step returns a tensor: return "
           "meta_loss.item() (a Python float), so that callers do not keep the graph alive.")

    # every other argument changed on its own: alpha, steps, loss_fn
    tasks2 = _tasks(b=3, k=4, q=6, seed=1)
    alpha2, steps2 = 0.05, 3
    got2, _, written2 = _run_step(fn, tasks2, alpha2, steps2, log_cosh_loss, seed, lr)
    want2 = _simulate(tasks2, alpha2, steps2, log_cosh_loss, seed=seed, lr=lr)[0]
    ignored = {
        "loss_fn is ignored (with loss_fn=log_cosh_loss your update is the one for the squared error): "
        "use loss_fn for the inner steps and for the meta-loss.":
            _simulate(tasks2, alpha2, steps2, F.mse_loss, seed=seed, lr=lr)[0],
    }
    for s in (steps, 1):
        ignored[f"`steps` is ignored: with steps={steps2} your function takes {s} inner step(s)"
                + (" (or restarts each step from theta: each step must start from the previous `adapted`)."
                   if s == 1 else ".")] = \
            _simulate(tasks2, alpha2, s, log_cosh_loss, seed=seed, lr=lr)[0]
    for a in (alpha, 0.01, 0.4):
        ignored[f"alpha is ignored: with alpha={alpha2} your inner steps have the size for alpha={a}."] = \
            _simulate(tasks2, a, steps2, log_cosh_loss, seed=seed, lr=lr)[0]
    if written2 and not _close(got2, want2, **TOL):
        raise Mistake(f"theta after a meta-step with 3 tasks and other settings: wrong, and {WRITTEN}", WRITTEN_HINT)
    _first_match(got2, f"theta after a meta-step with alpha={alpha2}, steps={steps2}, "
                 "loss_fn=log_cosh_loss and 3 tasks", ignored, want2)


def maml_step(student: Callable) -> Callable:
    """Exercise 3.3: the outer step, differentiating through the inner steps."""
    return run_check("3.3", "the outer step with create_graph", student, reference_maml_step,
                     _probe_maml_step)


# ----------------------------------------------------------------------------- 3.4

def _fo_variant(model, theta, task, alpha, steps, loss_fn, variant: str = "right") -> Tensor:
    """The first-order meta-gradient of one task, right or with one deliberate mistake (a vector)."""
    x_s, y_s, x_q, y_q = task
    if variant == "swapped":
        x_s, y_s, x_q, y_q = x_q, y_q, x_s, y_s
    if variant == "query_inner":
        x_s, y_s = x_q, y_q
    if variant == "support_both":
        x_q, y_q = x_s, y_s
    if variant == "at_theta":
        steps = 0
    if variant == "one_step":
        steps = 1
    if variant == "own_weights":
        theta = {k: v.detach() for k, v in model.named_parameters()}
    p = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
    if variant == "second_order":
        a = p
        for _ in range(steps):
            a = reference_inner_step(model, a, x_s, y_s, alpha, loss_fn, create_graph=True)
        loss = loss_fn(functional_call(model, a, (x_q,)), y_q)
        return _vec(dict(zip(p, torch.autograd.grad(loss, list(p.values())))))
    if variant in ("reptile", "reptile_scaled", "reptile_reversed", "adapted"):
        a = p
        for _ in range(steps):
            a = reference_inner_step(model, a, x_s, y_s, alpha, loss_fn, create_graph=False)
        t, ad = _vec(p), _vec(a)
        return {"reptile": t - ad, "reptile_scaled": (t - ad) / alpha, "reptile_reversed": ad - t,
                "adapted": ad}[variant]
    g = _vec(reference_fomaml_gradient(model, p, x_s, y_s, x_q, y_q, alpha, steps, loss_fn))
    return -g if variant == "negated" else g


def _probe_fomaml(fn: Callable) -> None:
    model = _net(2)
    x_s, y_s, x_q, y_q = _tasks(b=1, seed=4)
    task = (x_s[0], y_s[0], x_q[0], y_q[0])
    alpha, steps = 0.1, 2
    theta = _theta(model, seed=7)
    out = _call(fn, model, theta, *task, alpha, steps, F.mse_loss)
    _expect_params_dict(out, theta, "the first-order meta-gradient", "gradient")

    def var(name):
        return _fo_variant(model, theta, task, alpha, steps, F.mse_loss, name)
    want = var("right")
    _first_match(_vec(out), "the first-order meta-gradient", {
        "it is the second-order (exact) meta-gradient: first order treats the inner gradients as "
        "constants (create_graph=False) and returns grad_theta' L_Q(f_theta').": var("second_order"),
        "it is Reptile's direction theta - theta' (chapter 05), not first-order MAML's gradient: "
        "FOMAML differentiates the *query* loss at theta'.": var("reptile"),
        "it is Reptile's direction (theta - theta') / alpha, the sum of the inner gradients on the "
        "support set (chapter 05), not first-order MAML's gradient: FOMAML differentiates the *query* "
        "loss at theta'.": var("reptile_scaled"),
        "it is theta' - theta (Reptile's direction, reversed), not a gradient: FOMAML differentiates "
        "the query loss at theta'.": var("reptile_reversed"),
        "it returns the adapted parameters theta' themselves; return the gradient of the query loss "
        "at theta'.": var("adapted"),
        "it is the query-loss gradient at theta, without adapting first (that is joint training on "
        "all tasks, not MAML).": var("at_theta"),
        "support and query are swapped: adapt on (x_s, y_s), differentiate the loss on (x_q, y_q).":
            var("swapped"),
        "the query set is used in the inner loop: adapt on the support set (x_s, y_s), then "
        "differentiate the loss on the query set.": var("query_inner"),
        "the support set is used for both the adaptation and the loss (the seed article's formula "
        "read literally): differentiate the *query* loss at theta'.": var("support_both"),
        ONE_STEP: var("one_step"),
        "it has the wrong sign: return the gradient itself (the caller subtracts it).": var("negated"),
        "it starts from the model's own weights (model.named_parameters()) instead of the tensors in "
        "params.": var("own_weights"),
    }, want)

    # every other argument changed on its own: alpha, steps, loss_fn
    alpha2, steps2 = 0.05, 3
    out2 = _call(fn, model, theta, *task, alpha2, steps2, log_cosh_loss)
    _expect_params_dict(out2, theta, "the first-order meta-gradient", "gradient")
    ignored = {
        "loss_fn is ignored (with loss_fn=log_cosh_loss your gradient is the one for the squared error): "
        "use loss_fn for the inner steps and for the query loss.":
            _fo_variant(model, theta, task, alpha2, steps2, F.mse_loss),
    }
    for s in (steps, 1):
        ignored[f"`steps` is ignored: with steps={steps2} your function takes {s} inner step(s)"
                + (" (or restarts each step from theta: each step must start from the previous `adapted`)."
                   if s == 1 else ".")] = \
            _fo_variant(model, theta, task, alpha2, s, log_cosh_loss)
    for a in (alpha, 0.01, 0.4):
        ignored[f"alpha is ignored: with alpha={alpha2} your inner steps have the size for alpha={a}."] = \
            _fo_variant(model, theta, task, a, steps2, log_cosh_loss)
    _first_match(_vec(out2), f"the first-order meta-gradient with alpha={alpha2}, steps={steps2} and "
                 "loss_fn=log_cosh_loss", ignored, _fo_variant(model, theta, task, alpha2, steps2, log_cosh_loss))


def fomaml_gradient(student: Callable) -> Callable:
    """Exercise 3.4: first-order MAML's meta-gradient for one task."""
    return run_check("3.4", "the first-order variant", student, reference_fomaml_gradient, _probe_fomaml)
