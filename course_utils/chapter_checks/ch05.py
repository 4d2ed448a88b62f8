"""Checks for chapter 05 (Reptile): the outer update, the inner loop, first-order MAML's direction.

Classic mistakes recognised (each computed, then matched against the student's output): the
update's sign (moving phi away from W~), summing instead of averaging over the task batch,
leaving out eps, using one task only, modifying phi in place during the inner loop (phi must
be unchanged), one inner step when k were asked for, one step too few or too many, every step's
gradient taken at phi, an adapted W~ that still carries the autograd graph, and support and query
mixed up in first-order MAML's direction.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..checks import Mistake, diagnose, expect, expect_shape, expect_type, run_check

__all__ = ["EXERCISES", "reptile_update", "inner_loop", "fomaml_direction", "reference_reptile_update",
           "reference_inner_loop", "reference_fomaml_direction"]

EXERCISES = ["5.1", "5.2", "5.3"]
D = torch.float64
Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------- references

def reference_reptile_update(phi: Params, adapted: Sequence[Params], epsilon: float) -> Params:
    """phi + eps * 1/n sum_i (W~_i - phi), a new dict; ``adapted`` is a list of n dicts."""
    n = len(adapted)
    return {k: phi[k] + epsilon * sum(w[k] - phi[k] for w in adapted) / n for k in phi}


def reference_inner_loop(model: nn.Module, phi: Params, x: Tensor, y: Tensor, alpha: float, steps: int,
                         loss_fn: LossFn) -> Params:
    """W~: ``steps`` steps of plain SGD from phi on (x, y); phi is left unchanged."""
    w = {k: v.detach() for k, v in phi.items()}
    for _ in range(steps):
        w = {k: v.requires_grad_() for k, v in w.items()}
        loss = loss_fn(functional_call(model, w, (x,)), y)
        grads = torch.autograd.grad(loss, list(w.values()))
        w = {k: (v - alpha * g).detach() for (k, v), g in zip(w.items(), grads)}
    return w


def reference_fomaml_direction(model: nn.Module, phi: Params, x_s: Tensor, y_s: Tensor, x_q: Tensor,
                               y_q: Tensor, alpha: float, steps: int, loss_fn: LossFn,
                               inner: Callable | None = None) -> Params:
    """grad L_Q at W~, with W~ from ``steps`` SGD steps on the support set (first-order MAML)."""
    w = (inner or reference_inner_loop)(model, phi, x_s, y_s, alpha, steps, loss_fn)
    w = {k: v.detach().requires_grad_() for k, v in w.items()}
    loss = loss_fn(functional_call(model, w, (x_q,)), y_q)
    return dict(zip(w, torch.autograd.grad(loss, list(w.values()))))


# ----------------------------------------------------------------------------- probe helpers

def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1)).to(D)


def _task(k: int = 5, q: int = 7, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One sine task; support and query differ in size so a swap changes every number."""
    g = torch.Generator().manual_seed(seed)
    amp, ph = 0.5 + 2 * torch.rand((), generator=g, dtype=D), 3 * torch.rand((), generator=g, dtype=D)
    x_s = 10 * torch.rand(k, 1, generator=g, dtype=D) - 5
    x_q = 10 * torch.rand(q, 1, generator=g, dtype=D) - 5
    return x_s, amp * torch.sin(x_s - ph), x_q, amp * torch.sin(x_q - ph)


def _copy(p: Params) -> Params:
    return {k: v.detach().clone() for k, v in p.items()}


def _vec(d: Params) -> Tensor:
    return torch.cat([v.detach().reshape(-1).to(D) for v in d.values()])


def _expect_params(out, like: Params, what: str) -> None:
    expect_type(out, dict, what)
    expect(list(out) == list(like), f"{what} should have phi's names, in order: {list(like)}; got {list(out)}.",
           "Build it with a dict comprehension over phi (or phi.items()).")
    for k in like:
        expect_type(out[k], Tensor, f"{what}[{k!r}]")
        expect_shape(out[k], tuple(like[k].shape), f"{what}[{k!r}]")


def _expect_unchanged(phi: Params, saved: Params, what: str, hint: str) -> None:
    changed = [k for k in saved if not torch.equal(phi[k].detach(), saved[k])]
    expect(not changed, f"{what} changed phi in place ({', '.join(repr(k) for k in changed)} differ after "
           "the call). phi must stay as it was: it is the starting point of every task's inner loop and "
           "Reptile needs it again for W~ - phi.", hint)


def _call(fn: Callable, *args):
    """Call the student's function; explain the error autograd raises on in-place updates of phi."""
    try:
        return fn(*args)
    except RuntimeError as e:
        if "in-place" in str(e) or "inplace" in str(e):
            raise Mistake("your code updates phi in place (autograd refused: " + str(e).split("\n")[0] + "). "
                          "Never write into phi: build new tensors, w = {k: v - alpha * g ...}.") from None
        raise


# ----------------------------------------------------------------------------- 5.1

def _probe_reptile_update(fn: Callable) -> None:
    g = torch.Generator().manual_seed(5)
    phi = {"w": torch.randn(3, 2, generator=g, dtype=D), "b": torch.randn(3, generator=g, dtype=D)}
    adapted = [{k: v + 0.5 * torch.randn(v.shape, generator=g, dtype=D) for k, v in phi.items()}
               for _ in range(3)]
    eps, saved = 0.3, _copy(phi)
    out = _call(fn, phi, adapted, eps)
    _expect_params(out, phi, "the updated phi")
    _expect_unchanged(phi, saved, "reptile_update", "Return a new dict: {k: phi[k] + ... for k in phi}.")
    mean_w = {k: sum(w[k] for w in adapted) / 3 for k in phi}
    want = reference_reptile_update(saved, adapted, eps)
    diagnose(_vec(out), _vec(want), "the updated phi", {
        "it moves phi *away* from the adapted weights: the update is phi + eps * (W~ - phi), "
        "a step towards W~.": _vec({k: saved[k] - eps * (mean_w[k] - saved[k]) for k in phi}),
        "the differences W~_i - phi are summed over the tasks; the batched update averages them "
        "(1/n sum_i), so eps means the same for any batch size.":
            _vec({k: saved[k] + eps * 3 * (mean_w[k] - saved[k]) for k in phi}),
        "eps is missing: phi jumps all the way to the mean of the adapted weights.": _vec(mean_w),
        "phi is missing from the difference: the update is phi + eps * (W~ - phi), not phi + eps * W~.":
            _vec({k: saved[k] + eps * mean_w[k] for k in phi}),
        "only the last task's W~ is used; average over all the tasks of the batch.":
            _vec({k: saved[k] + eps * (adapted[-1][k] - saved[k]) for k in phi}),
        "only the first task's W~ is used; average over all the tasks of the batch.":
            _vec({k: saved[k] + eps * (adapted[0][k] - saved[k]) for k in phi}),
    }, atol=1e-12, rtol=1e-10)
    one = _call(fn, saved, adapted[:1], 0.7)  # the serial version: a batch of one task
    _expect_params(one, phi, "the updated phi for one task")
    diagnose(_vec(one), _vec(reference_reptile_update(saved, adapted[:1], 0.7)),
             "the serial update (a list of one task, eps = 0.7)", atol=1e-12, rtol=1e-10)


def reptile_update(student: Callable) -> Callable:
    """Exercise 5.1: phi <- phi + eps * 1/n sum_i (W~_i - phi)."""
    return run_check("5.1", "the Reptile outer update", student, reference_reptile_update,
                     _probe_reptile_update)


# ----------------------------------------------------------------------------- 5.2

def _inner_variant(model, phi, x, y, alpha, steps, variant: str) -> Tensor:
    p = _copy(phi)
    if variant == "one_step":
        steps = 1
    if variant == "extra_step":
        steps += 1
    if variant == "one_short":
        steps -= 1
    if variant == "ascent":
        alpha = -alpha
    if variant == "no_alpha":
        alpha = 1.0
    if variant == "grad_at_phi":
        leaves = {k: v.clone().requires_grad_() for k, v in p.items()}
        g = torch.autograd.grad(F.mse_loss(functional_call(model, leaves, (x,)), y), list(leaves.values()))
        return _vec({k: p[k] - steps * alpha * gk for k, gk in zip(p, g)})
    return _vec(reference_inner_loop(model, p, x, y, alpha, steps, F.mse_loss))


def _probe_inner_loop(fn: Callable) -> None:
    model = _net(1)
    x, y, _, _ = _task(k=6, seed=2)
    alpha, steps = 0.1, 3
    phi = dict(model.named_parameters())  # the model's own weights, as in meta-training
    saved = _copy(phi)
    out = _call(fn, model, phi, x, y, alpha, steps, F.mse_loss)
    _expect_params(out, saved, "W~ (the adapted weights)")
    _expect_unchanged(phi, saved, "inner_loop",
                      "Do not step an optimiser over model.parameters() and do not write into phi "
                      "(p -= ..., p.data, .copy_()): start from w = {k: v.detach() ...} and build a new "
                      "dict at every step.")
    want = _vec(reference_inner_loop(model, saved, x, y, alpha, steps, F.mse_loss))
    v = lambda name: _inner_variant(model, saved, x, y, alpha, steps, name)  # noqa: E731
    diagnose(_vec(out), want, "W~ after 3 inner steps", {
        "it is W~ after one step only: the loop must take `steps` steps (k = 3 here).": v("one_step"),
        "it took one step too many (k + 1).": v("extra_step"),
        "one step too few (k - 1 = 2 steps here): `for _ in range(steps)` already gives k steps.":
            v("one_short"),
        "it moves *up* the gradient: SGD subtracts, w - alpha * grad.": v("ascent"),
        "alpha is missing: each step is w - alpha * grad.": v("no_alpha"),
        "every step uses the gradient at phi: recompute the gradient at the current w at each step.":
            v("grad_at_phi"),
        "W~ equals phi: no step was taken (return the adapted weights).": _vec(saved),
    }, atol=1e-10, rtol=1e-8)
    kept = [k for k, t in out.items() if t.grad_fn is not None]
    expect(not kept, f"W~ keeps the autograd graph ({', '.join(repr(k) for k in kept)} have a grad_fn): "
           "detach it. Reptile needs no graph through the inner loop, and keeping one makes memory grow "
           "with k.", "Build each step's new weights with (v - alpha * g).detach().")


def inner_loop(student: Callable) -> Callable:
    """Exercise 5.2: k SGD steps from phi on one task's data, phi unchanged."""
    return run_check("5.2", "the inner loop with several steps", student, reference_inner_loop,
                     _probe_inner_loop)


# ----------------------------------------------------------------------------- 5.3

def _fo_variant(model, phi, task, alpha, steps, variant: str) -> Tensor:
    x_s, y_s, x_q, y_q = task
    p = _copy(phi)
    if variant == "swapped":
        return _vec(reference_fomaml_direction(model, p, x_q, y_q, x_s, y_s, alpha, steps, F.mse_loss))
    if variant == "support_only":
        return _vec(reference_fomaml_direction(model, p, x_s, y_s, x_s, y_s, alpha, steps, F.mse_loss))
    if variant == "query_only":
        return _vec(reference_fomaml_direction(model, p, x_q, y_q, x_q, y_q, alpha, steps, F.mse_loss))
    if variant == "at_phi":
        return _vec(reference_fomaml_direction(model, p, x_s, y_s, x_q, y_q, alpha, 0, F.mse_loss))
    if variant == "one_step":
        return _vec(reference_fomaml_direction(model, p, x_s, y_s, x_q, y_q, alpha, 1, F.mse_loss))
    if variant == "reptile":
        w = reference_inner_loop(model, p, x_s, y_s, alpha, steps, F.mse_loss)
        return _vec({k: (p[k] - w[k]) / alpha for k in p})
    out = _vec(reference_fomaml_direction(model, p, x_s, y_s, x_q, y_q, alpha, steps, F.mse_loss))
    return -out if variant == "negated" else out


def _probe_fomaml(fn: Callable) -> None:
    model = _net(2)
    task = _task(k=5, q=7, seed=4)
    alpha, steps = 0.1, 2
    phi = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    saved = _copy(phi)
    out = _call(fn, model, phi, *task, alpha, steps, F.mse_loss)
    _expect_params(out, saved, "the first-order MAML direction")
    _expect_unchanged(phi, saved, "fomaml_direction", "Adapt a copy (inner_loop returns a new dict).")
    v = lambda name: _fo_variant(model, saved, task, alpha, steps, name)  # noqa: E731
    diagnose(_vec(out), v("right"), "the first-order MAML direction", {
        "support and query are swapped: adapt on (x_s, y_s), then take the gradient of the loss on "
        "(x_q, y_q) at W~.": v("swapped"),
        "it is the gradient of the *support* loss at W~: the direction uses the query set "
        "(x_q, y_q), data the inner loop has not seen.": v("support_only"),
        "the inner loop ran on the query set: adapt on the support set (x_s, y_s).": v("query_only"),
        "the gradient is taken at phi, without adapting first (that is joint training, not MAML): "
        "take it at W~ = inner_loop(...).": v("at_phi"),
        "W~ came from one inner step; use `steps` (here 2).": v("one_step"),
        "it is Reptile's direction (phi - W~) / alpha, the sum of the inner gradients; first-order "
        "MAML takes the query loss's gradient at W~.": v("reptile"),
        "the sign is flipped: return the gradient itself (the meta-update subtracts it).": v("negated"),
    }, atol=1e-10, rtol=1e-8)


def fomaml_direction(student: Callable) -> Callable:
    """Exercise 5.3: first-order MAML's direction, grad L_Q(W~), on the same inner trajectory."""
    return run_check("5.3", "first-order MAML's direction", student, reference_fomaml_direction,
                     _probe_fomaml)
