"""Checks for chapter 03 (MAML): the inner step, the meta-gradient by hand, the outer step, first order.

Classic mistakes recognised (each computed, then matched against the student's output):
a missing ``create_graph`` (the meta-gradient loses its Hessian term), support and query
swapped, an inner step that detaches theta (entirely, or ``p.detach() - alpha * g`` with a gradient
that keeps its graph: the Jacobian becomes -alpha H instead of I - alpha H), the meta-optimiser
stepping on the adapted instead of the initial parameters, a missing ``zero_grad``, the sign of the
Hessian term, and a meta-loss returned as a tensor instead of a Python float.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..checks import (Mistake, diagnose, expect, expect_close, expect_grad, expect_shape, expect_type,
                      run_check)

__all__ = ["EXERCISES", "inner_step", "linreg_meta_gradient", "maml_step", "fomaml_gradient",
           "reference_inner_step", "reference_linreg_meta_gradient", "reference_maml_step",
           "reference_fomaml_gradient"]

EXERCISES = ["3.1", "3.2", "3.3", "3.4"]
D = torch.float64
LossFn = Callable[[Tensor, Tensor], Tensor]


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
    return (torch.eye(2, dtype=theta.dtype) - alpha * hess_s) @ grad_q


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


# ----------------------------------------------------------------------------- probe data

def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1)).to(D)


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


def _expect_params_dict(out, like: dict[str, Tensor], what: str) -> None:
    expect_type(out, dict, what)
    expect(list(out) == list(like), f"{what} should have the same names as params, in order: "
           f"{list(like)}; got {list(out)}.", "Build it with a dict comprehension over params.items().")
    for k in like:
        expect_type(out[k], Tensor, f"{what}[{k!r}]")
        expect_shape(out[k], tuple(like[k].shape), f"{what}[{k!r}]")


def _vec(d: dict[str, Tensor]) -> Tensor:
    return torch.cat([v.detach().reshape(-1).to(D) for v in d.values()])


def _jvp(adapted: dict[str, Tensor], theta: dict[str, Tensor], v: dict[str, Tensor]) -> Tensor | None:
    """d/d theta of sum_k <adapted[k], v[k]>: (I - alpha H) v for one inner step (None if no graph)."""
    s = sum((adapted[k] * v[k]).sum() for k in adapted)
    if not s.requires_grad:
        return None
    g = torch.autograd.grad(s, list(theta.values()), allow_unused=True, retain_graph=True)
    return torch.cat([(torch.zeros_like(t) if gi is None else gi).reshape(-1)
                      for t, gi in zip(theta.values(), g)])


# ----------------------------------------------------------------------------- 3.1

def _probe_inner_step(fn: Callable) -> None:
    model, (x_s, y_s, x_q, y_q) = _net(), _tasks(b=1)
    x_s, y_s = x_s[0], y_s[0]
    alpha = 0.1
    theta = _leaves(model)
    want = reference_inner_step(model, theta, x_s, y_s, alpha, F.mse_loss)
    out = fn(model, theta, x_s, y_s, alpha, F.mse_loss, create_graph=True)
    _expect_params_dict(out, theta, "inner_step's result")
    grad_s = {k: (theta[k] - want[k]).detach() / alpha for k in theta}
    theta_q = {k: v.detach() for k, v in theta.items()}
    q = _leaves(model)
    grad_q = dict(zip(q, torch.autograd.grad(F.mse_loss(functional_call(model, q, (x_q[0],)), y_q[0]),
                                             list(q.values()))))
    diagnose(_vec(out), _vec(want), "theta' (the adapted parameters)", {
        "it moves up the gradient (theta + alpha * grad); gradient *descent* subtracts.":
            _vec({k: theta_q[k] + alpha * grad_s[k] for k in theta}),
        "alpha is missing: theta' = theta - alpha * grad.":
            _vec({k: theta_q[k] - grad_s[k] for k in theta}),
        "it uses the gradient of the query loss; the inner step adapts on the support set (x_s, y_s).":
            _vec({k: theta_q[k] - alpha * grad_q[k] for k in theta}),
    }, atol=1e-10, rtol=1e-8)
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
    out_fo = fn(model, theta, x_s, y_s, alpha, F.mse_loss, create_graph=False)
    _expect_params_dict(out_fo, theta, "inner_step's result with create_graph=False")
    jac_fo = _jvp(out_fo, theta, v)
    expect(jac_fo is None or torch.allclose(jac_fo, _vec(v), atol=1e-10),
           "with create_graph=False the inner gradient should be a constant (Jacobian = identity), but "
           "yours still carries second-order terms: pass create_graph on to torch.autograd.grad.")


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


def _linreg_pieces(theta, x_s, y_s, x_q, y_q, alpha, factor=2.0):
    ps = torch.stack([x_s, torch.ones_like(x_s)], 1)
    pq = torch.stack([x_q, torch.ones_like(x_q)], 1)
    gs = factor / len(x_s) * ps.T @ (ps @ theta - y_s)
    h = factor / len(x_s) * ps.T @ ps
    t1 = theta - alpha * gs
    gq = factor / len(x_q) * pq.T @ (pq @ t1 - y_q)
    gq0 = factor / len(x_q) * pq.T @ (pq @ theta - y_q)
    return gs, h, gq, gq0


def _probe_linreg(fn: Callable) -> None:
    theta, x_s, y_s, x_q, y_q = _linreg_data()
    alpha = 0.3
    out = fn(theta.clone(), x_s, y_s, x_q, y_q, alpha)
    expect_shape(out, (2,), "the meta-gradient", "Return (dL/dw, dL/db) as one tensor of shape (2,).")
    expect(torch.isfinite(out).all(), "the meta-gradient contains NaN or inf.")
    want = reference_linreg_meta_gradient(theta, x_s, y_s, x_q, y_q, alpha)
    eye = torch.eye(2, dtype=D)
    _, h, gq, gq0 = _linreg_pieces(theta, x_s, y_s, x_q, y_q, alpha)
    _, _, gq_swap, _ = _linreg_pieces(theta, x_q, y_q, x_s, y_s, alpha)
    _, h_swap, _, _ = _linreg_pieces(theta, x_q, y_q, x_s, y_s, alpha)
    _, h1, gq1, _ = _linreg_pieces(theta, x_s, y_s, x_q, y_q, alpha, factor=1.0)
    diagnose(out, want, "the meta-gradient", {
        "it is grad L_Q(theta') alone: the Hessian term (I - alpha H_S) is missing. That is the "
        "first-order approximation, not the exact meta-gradient.": gq,
        "the Hessian term has the wrong sign: d theta'/d theta = I - alpha H_S.": (eye + alpha * h) @ gq,
        "support and query are swapped: adapt on the support set, measure the loss on the query set.":
            (eye - alpha * h_swap) @ gq_swap,
        "the query gradient is taken at theta, not at the adapted theta' = theta - alpha grad L_S(theta).":
            (eye - alpha * h) @ gq0,
        "the factor 2 of the squared error is missing: d/dtheta mean((phi theta - y)^2) = "
        "2/K Phi^T (Phi theta - y), and H = 2/K Phi^T Phi.": (eye - alpha * h1) @ gq1,
    }, atol=1e-10, rtol=1e-8)


def linreg_meta_gradient(student: Callable) -> Callable:
    """Exercise 3.2: the exact meta-gradient of 1-D linear regression, by hand."""
    return run_check("3.2", "the meta-gradient by hand", student, reference_linreg_meta_gradient,
                     _probe_linreg)


# ----------------------------------------------------------------------------- 3.3

def _after_step(model_seed: int, tasks, alpha, steps, lr, variant: str) -> tuple[Tensor, float]:
    """theta after one meta-step of a (possibly wrong) variant, and the loss it returns."""
    model = _net(model_seed)
    theta0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    x_s, y_s, x_q, y_q = tasks
    if variant == "swapped":
        tasks = (x_q, y_q, x_s, y_s)
    if variant == "one_step":
        steps = 1
    fo = variant == "first_order"

    def inner(m, p, xs, ys, a, lf, create_graph=True):
        return reference_inner_step(m, p, xs, ys, a, lf, create_graph=create_graph and not fo)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = reference_maml_step(model, opt, tasks, alpha, steps, F.mse_loss, inner)
    theta1 = {k: v.detach().clone() for k, v in model.named_parameters()}
    g = {k: (theta0[k] - theta1[k]) / lr for k in theta0}
    if variant == "sum":
        return _vec({k: theta0[k] - lr * g[k] * x_s.shape[0] for k in g}), loss
    if variant == "no_zero_grad":
        return _vec({k: theta0[k] - lr * (g[k] + 1.0) for k in g}), loss
    return _vec(theta1), loss


def _adapted_then_stepped(model_seed, tasks, alpha, steps, lr) -> dict[str, tuple[Tensor, Tensor]]:
    """Mistake: the model ends at theta'_b (adapted on task b), stepped by the meta-update or not."""
    model = _net(model_seed)
    theta = _leaves(model)
    step = _vec(theta) - _after_step(model_seed, tasks, alpha, steps, lr, "right")[0]  # lr * meta-grad
    x_s, y_s, _, _ = tasks
    out = {}
    for b in range(x_s.shape[0]):
        a = theta
        for _ in range(steps):
            a = reference_inner_step(model, a, x_s[b], y_s[b], alpha, F.mse_loss)
        out[f"task {b}"] = (_vec(a) - step, _vec(a))
    return out


def _probe_maml_step(fn: Callable) -> None:
    seed, alpha, steps, lr = 0, 0.1, 2, 0.5
    tasks = _tasks(b=2)
    model = _net(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for p in model.parameters():  # stale gradients that zero_grad must clear
        p.grad = torch.ones_like(p)
    try:
        loss = fn(model, opt, tasks, alpha, steps, F.mse_loss)
    except RuntimeError as e:
        if "does not require grad" in str(e) or "does not have a grad_fn" in str(e):
            raise Mistake("the meta-loss does not depend on theta, so backward() has nothing to "
                          "differentiate: the inner step detaches the parameters.",
                          "Adapt from dict(model.named_parameters()) with inner_step(..., "
                          "create_graph=True); no .detach(), .data or torch.no_grad().") from None
        raise
    got = _vec(dict(model.named_parameters()))
    theta0 = _vec(dict(_net(seed).named_parameters()))
    want, want_loss = _after_step(seed, tasks, alpha, steps, lr, "right")
    expect(not torch.allclose(got, theta0 - lr * 1.0, atol=1e-12),
           "theta moved by exactly -lr * (stale gradient): the meta-loss never reached theta.",
           "Call meta_opt.zero_grad() first, and keep theta' a function of theta (no .detach()).")
    expect(not torch.allclose(got, theta0, atol=1e-14),
           "the model's parameters did not change: no meta-gradient reached theta (an inner step that "
           "detaches?) or meta_opt.step() was not called.")
    mistakes = {
        "it is the first-order update: the inner step ran without create_graph=True, so the "
        "meta-gradient lost its Hessian term.": _after_step(seed, tasks, alpha, steps, lr, "first_order")[0],
        "support and query are swapped: the inner steps must use (x_s, y_s), the meta-loss (x_q, y_q).":
            _after_step(seed, tasks, alpha, steps, lr, "swapped")[0],
        "meta_opt.zero_grad() is missing, so stale gradients were added to the meta-gradient.":
            _after_step(seed, tasks, alpha, steps, lr, "no_zero_grad")[0],
        "the task losses are summed; this course averages them over the meta-batch (divide by B).":
            _after_step(seed, tasks, alpha, steps, lr, "sum")[0],
        "only one inner step was taken; use `steps` inner steps.":
            _after_step(seed, tasks, alpha, steps, lr, "one_step")[0],
    }
    for b, (stepped, adapted_only) in _adapted_then_stepped(seed, tasks, alpha, steps, lr).items():
        msg = (f"the model ends at the parameters adapted to {b} (then stepped): the meta-optimiser must "
               "step the initial parameters theta, and theta' must never be written into the model.")
        mistakes[msg] = stepped
        mistakes[msg.replace("(then stepped)", "(not stepped)")] = adapted_only
    diagnose(got, want, "theta after the meta-step", mistakes, atol=1e-10, rtol=1e-8)
    if isinstance(loss, Tensor):
        expect(loss.numel() == 1, f"maml_step should return the meta-loss as a Python float, got a tensor "
               f"of shape {tuple(loss.shape)}.", "Return meta_loss.item() (a Python float).")
        value = loss.detach().item()
    else:
        expect(isinstance(loss, (float, int)) and not isinstance(loss, bool),
               f"maml_step should return the meta-loss as a Python float, got {type(loss).__name__}.",
               "Return meta_loss.item() (a Python float).")
        value = float(loss)
    diagnose(value, want_loss, "the returned meta-loss (mean query loss before the step)",
             atol=1e-10, rtol=1e-8)
    expect(not isinstance(loss, Tensor),
           "the meta-step and the meta-loss are right, but maml_step returns a tensor: return "
           "meta_loss.item() (a Python float), so that callers do not keep the graph alive.")


def maml_step(student: Callable) -> Callable:
    """Exercise 3.3: the outer step, differentiating through the inner steps."""
    return run_check("3.3", "the outer step with create_graph", student, reference_maml_step,
                     _probe_maml_step)


# ----------------------------------------------------------------------------- 3.4

def _fo_variant(model, theta, task, alpha, steps, variant: str) -> Tensor:
    x_s, y_s, x_q, y_q = task
    if variant == "swapped":
        x_s, y_s, x_q, y_q = x_q, y_q, x_s, y_s
    if variant == "at_theta":
        steps = 0
    if variant == "one_step":
        steps = 1
    if variant == "second_order":
        p = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
        a = p
        for _ in range(steps):
            a = reference_inner_step(model, a, x_s, y_s, alpha, F.mse_loss, create_graph=True)
        loss = F.mse_loss(functional_call(model, a, (x_q,)), y_q)
        return _vec(dict(zip(p, torch.autograd.grad(loss, list(p.values())))))
    p = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
    return _vec(reference_fomaml_gradient(model, p, x_s, y_s, x_q, y_q, alpha, steps, F.mse_loss))


def _probe_fomaml(fn: Callable) -> None:
    model = _net(2)
    x_s, y_s, x_q, y_q = _tasks(b=1, seed=4)
    task = (x_s[0], y_s[0], x_q[0], y_q[0])
    alpha, steps = 0.1, 2
    theta = _leaves(model)
    out = fn(model, theta, *task, alpha, steps, F.mse_loss)
    _expect_params_dict(out, theta, "the first-order meta-gradient")
    want = _fo_variant(model, theta, task, alpha, steps, "right")
    diagnose(_vec(out), want, "the first-order meta-gradient", {
        "it is the second-order (exact) meta-gradient: first order treats the inner gradients as "
        "constants (create_graph=False) and returns grad_theta' L_Q(f_theta').":
            _fo_variant(model, theta, task, alpha, steps, "second_order"),
        "it is the query-loss gradient at theta, without adapting first (that is joint training on "
        "all tasks, not MAML).": _fo_variant(model, theta, task, alpha, steps, "at_theta"),
        "support and query are swapped: adapt on (x_s, y_s), differentiate the loss on (x_q, y_q).":
            _fo_variant(model, theta, task, alpha, steps, "swapped"),
        "only one inner step was taken; use `steps` inner steps.":
            _fo_variant(model, theta, task, alpha, steps, "one_step"),
    }, atol=1e-10, rtol=1e-8)


def fomaml_gradient(student: Callable) -> Callable:
    """Exercise 3.4: first-order MAML's meta-gradient for one task."""
    return run_check("3.4", "the first-order variant", student, reference_fomaml_gradient, _probe_fomaml)
