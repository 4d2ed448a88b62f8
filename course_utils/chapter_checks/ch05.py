"""Checks for chapter 05 (Reptile): the outer update, the inner loop, first-order MAML's direction.

Notation as in the chapter: theta is the initialisation (the paper writes phi), theta'_i the weights
adapted to task i (``adapted``), T the number of inner steps (``steps``), B the tasks of a meta-batch,
epsilon the outer step size, alpha the inner step size.

Each probe calls the student's function several times with different values of every argument
(epsilon, the number of tasks, alpha, steps, loss_fn, theta different from the model's own weights),
so that ignoring an argument fails, and matches a wrong answer against the chapter's classic mistakes:
the update's sign, summing instead of averaging, epsilon left out or applied twice, torch.lerp's
weight swapped, theta forgotten, theta updated task by task inside the batch, one task only; one inner
step, one step too few or too many, every gradient taken at the initial point theta, .grad never zeroed
between steps, the model's own weights used instead of theta, adaptation not reset between tasks, an
adapted theta' that keeps the autograd graph; in first-order MAML's direction: support and query mixed
up or used together, no adaptation, Reptile's direction (theta - theta')/alpha or theta' - theta
instead, the last inner step's gradient, MAML's second-order gradient, a flipped sign, a direction that
keeps the autograd graph (create_graph=True). Where no listed mistake matches, the probe calls the
student's function again with another loss function: an unchanged result means loss_fn is ignored,
whatever loss the code computes instead.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..checks import Mistake, describe, diagnose, expect, expect_device_agnostic, run_check

__all__ = ["EXERCISES", "reptile_update", "inner_loop", "fomaml_direction", "reference_reptile_update",
           "reference_inner_loop", "reference_fomaml_direction"]

EXERCISES = ["5.1", "5.2", "5.3"]
D = torch.float64
Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------- references

def reference_reptile_update(theta: Params, adapted: Sequence[Params], epsilon: float) -> Params:
    """theta + epsilon * 1/B sum_i (theta'_i - theta), a new dict; ``adapted`` is a list of B dicts."""
    b = len(adapted)
    return {k: theta[k] + epsilon * sum(w[k] - theta[k] for w in adapted) / b for k in theta}


def reference_inner_loop(model: nn.Module, theta: Params, x: Tensor, y: Tensor, alpha: float, steps: int,
                         loss_fn: LossFn) -> Params:
    """theta': ``steps`` steps of plain SGD from theta on (x, y); theta is left unchanged."""
    w = {k: v.detach() for k, v in theta.items()}
    for _ in range(steps):
        w = {k: v.requires_grad_() for k, v in w.items()}
        loss = loss_fn(functional_call(model, w, (x,)), y)
        grads = torch.autograd.grad(loss, list(w.values()))
        w = {k: (v - alpha * g).detach() for (k, v), g in zip(w.items(), grads)}
    return w


def reference_fomaml_direction(model: nn.Module, theta: Params, x_s: Tensor, y_s: Tensor, x_q: Tensor,
                               y_q: Tensor, alpha: float, steps: int, loss_fn: LossFn,
                               inner: Callable | None = None) -> Params:
    """grad L_Q at theta', with theta' from ``steps`` SGD steps on the support set (first-order MAML)."""
    w = (inner or reference_inner_loop)(model, theta, x_s, y_s, alpha, steps, loss_fn)
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


def _huber(pred: Tensor, y: Tensor) -> Tensor:
    """A loss other than MSE, so that code ignoring ``loss_fn`` gives other numbers."""
    return F.huber_loss(pred, y, delta=0.5)


def _copy(p: Params) -> Params:
    return {k: v.detach().clone() for k, v in p.items()}


def _shifted(model: nn.Module, seed: int) -> Params:
    """theta different from the model's own weights (plain tensors, no gradients)."""
    g = torch.Generator().manual_seed(seed)
    return {k: v.detach() + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype)
            for k, v in model.named_parameters()}


def _vec(d: Params) -> Tensor:
    return torch.cat([v.detach().reshape(-1).to(D) for v in d.values()])


def _expect_params(out, like: Params, what: str, hint: str = "", grads: bool = False) -> None:
    """``out`` must be a dict with ``like``'s names, in order, and its tensors' shapes."""
    if out is None:
        raise Mistake(f"your function returned None; {what} should be a dict name -> tensor, like theta.",
                      hint or "End the function with a `return` of the dict you built.")
    if not isinstance(out, dict):
        raise Mistake(f"{what} should be a dict name -> tensor with theta's names, but your function "
                      f"returned {describe(out)}.",
                      "Build a dict over theta's names: {k: ... for k in theta}" + (
                          "; torch.autograd.grad returns a tuple, which dict(zip(theta, grads)) turns back "
                          "into a dict." if grads else "."))
    expect(list(out) == list(like), f"{what} should have theta's names, in order: {list(like)}; got "
           f"{list(out)}.", "Build it with a dict comprehension over theta (or theta.items()).")
    for k in like:
        v = out[k]
        if not isinstance(v, Tensor):
            raise Mistake(f"{what}[{k!r}] should be a tensor, but it is {describe(v)}.")
        expect(tuple(v.shape) == tuple(like[k].shape), f"{what}[{k!r}] has shape {tuple(v.shape)}, "
               f"expected theta's {tuple(like[k].shape)}.")


def _expect_model_unchanged(model: nn.Module, saved: Params, what: str) -> None:
    changed = [k for k, p in model.named_parameters() if not torch.equal(p.detach(), saved[k])]
    expect(not changed, f"{what} changed the model's own weights ({', '.join(repr(k) for k in changed)}). "
           "Here theta is the model's own parameters, as in meta-training: they are the starting point of "
           "every task's inner loop, and Reptile needs them again for theta' - theta. Stepping an optimiser "
           "over model.parameters() (or writing into them) spoils theta for every later task.",
           "Keep theta and the adapted weights apart: start from w = {k: v.detach() ...} and run the net "
           "with functional_call(model, w, (x,)); build a new dict at every step.")


def _call(fn: Callable, *args):
    """Call the student's function; explain the error autograd raises on in-place updates of theta."""
    try:
        return fn(*args)
    except RuntimeError as e:
        if "in-place" in str(e) or "inplace" in str(e):
            raise Mistake("your code updates theta in place (autograd refused: " + str(e).split("\n")[0] + "). "
                          "Never write into theta: build new tensors, w = {k: v - alpha * g ...}.") from None
        if "does not require grad" in str(e):
            raise Mistake("your code asks for gradients with respect to tensors that do not require them "
                          "(autograd: " + str(e).split("\n")[0] + "). theta's tensors need not require "
                          "gradients (in this call they do not, as in the chapter's own calls).",
                          "Make your own leaves to differentiate: w = {k: v.detach().requires_grad_() for "
                          "k, v in theta.items()}, or use torch.func.grad.") from None
        raise


def _matches(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol)


def _diagnose(actual: Tensor, expected: Tensor, what: str, mistakes: dict[str, Tensor], atol: float,
              rtol: float, behaviour: Sequence[Callable[[Tensor], str]] = ()) -> None:
    """:func:`diagnose`, with behavioural tests tried before its last-resort "differs at" message.

    Each test gets the student's (wrong) result and returns an explanation, or "" if it does not apply.
    """
    if not _matches(actual, expected, atol, rtol) and not any(
            _matches(actual, w, atol, rtol) for w in mistakes.values()):
        for test in behaviour:
            found = test(actual)
            if found:
                raise Mistake(f"{what}: wrong. It looks like {found}")
    diagnose(actual, expected, what, mistakes, atol=atol, rtol=rtol)


def _other_loss(loss_fn: LossFn) -> tuple[LossFn, str]:
    return (_huber, "a Huber loss") if loss_fn is F.mse_loss else (F.mse_loss, "F.mse_loss")


def _loss_ignored(fn: Callable, args: tuple, loss_fn: LossFn, atol: float, rtol: float) -> Callable:
    """A behavioural test: the same call with another loss function gives the same result."""
    other, name = _other_loss(loss_fn)
    this = "F.mse_loss" if loss_fn is F.mse_loss else "a Huber loss"

    def test(actual: Tensor) -> str:
        try:
            again = _vec(fn(*args, other))
        except Exception:  # noqa: BLE001 - a crash here says nothing about loss_fn
            return ""
        if _matches(actual, again, atol, rtol):
            return (f"loss_fn is ignored: your function returns the same result for loss_fn = {this} and "
                    f"for loss_fn = {name}, so it does not use loss_fn (is a loss written out in your "
                    "code?). Compute the loss with loss_fn(prediction, y), the loss the caller passes.")
        return ""
    return test


def _graph_kept(out: Params, what: str, why: str, hint: str) -> None:
    kept = [k for k, v in out.items() if v.grad_fn is not None]
    expect(not kept, f"{what} keeps the autograd graph ({', '.join(repr(k) for k in kept)} have a grad_fn); "
           f"the exercise asks for detached tensors. {why}", hint)


def _device_agnostic(fn: Callable, *args, what: str) -> None:
    """A tensor made without ``device=`` (caught on the ``meta`` device, on any machine)."""
    expect_device_agnostic(getattr(fn, "__wrapped__", fn), *args, what=what)


# ----------------------------------------------------------------------------- 5.1

def _update_mistakes(theta: Params, adapted: Sequence[Params], eps: float) -> dict[str, Tensor]:
    b = len(adapted)
    mean_w = {k: sum(w[k] for w in adapted) / b for k in theta}
    step = {k: mean_w[k] - theta[k] for k in theta}
    out = {
        "it moves theta *away* from the adapted weights: the update is theta + epsilon * (theta' - theta), "
        "a step towards theta'.": {k: theta[k] - eps * step[k] for k in theta},
        "epsilon is missing: theta jumps all the way to the mean of the adapted weights.": mean_w,
        "epsilon is applied twice (epsilon^2 * (theta' - theta)): scale the step once, e.g. "
        "torch.lerp(theta[k], mean, epsilon) alone, or theta[k] + epsilon * (mean - theta[k]).":
            {k: theta[k] + eps ** 2 * step[k] for k in theta},
        "epsilon and 1 - epsilon are swapped: torch.lerp(start, end, weight) moves from start towards "
        "end by the fraction weight, so it is torch.lerp(theta[k], mean, epsilon).":
            {k: theta[k] + (1 - eps) * step[k] for k in theta},
        "theta is missing from the difference: the update is theta + epsilon * (theta' - theta), not "
        "theta + epsilon * theta'.": {k: theta[k] + eps * mean_w[k] for k in theta},
        "it returns the step epsilon * mean(theta'_i - theta) alone: add it to theta.":
            {k: eps * step[k] for k in theta},
        "theta is forgotten: this is epsilon * mean(theta'_i). The update is theta + epsilon * "
        "(mean(theta'_i) - theta): theta appears twice, once as the starting point and once inside the "
        "difference.": {k: eps * mean_w[k] for k in theta},
    }
    if b > 1:
        out.update({
            "the differences theta'_i - theta are summed over the tasks; the batched update averages them "
            "(1/B sum_i), so epsilon means the same for any batch size.":
                {k: theta[k] + eps * b * step[k] for k in theta},
            "the mean over the tasks is divided by the number of tasks B once more.":
                {k: theta[k] + eps * step[k] / b for k in theta},
            "only the last task's theta' is used; average over all the tasks of the batch.":
                {k: theta[k] + eps * (adapted[-1][k] - theta[k]) for k in theta},
            "only the first task's theta' is used; average over all the tasks of the batch.":
                {k: theta[k] + eps * (adapted[0][k] - theta[k]) for k in theta},
        })
        # theta updated task by task inside the batch: each difference taken from the already-moved theta
        for scale, how in ((eps, "epsilon"), (eps / b, "epsilon / B")):
            th = dict(theta)
            for w in adapted:
                th = {k: th[k] + scale * (w[k] - th[k]) for k in theta}
            out[f"theta is updated task by task inside the batch (a step of {how} towards each theta'_i "
                "in turn, each difference taken from the theta the previous task already moved): the "
                "batched update takes every theta'_i - theta from the same theta, averages them, and "
                "steps once. Compute the mean first, then update theta."] = th
    return {m: _vec(v) for m, v in out.items()}


def _probe_reptile_update(fn: Callable) -> None:
    g = torch.Generator().manual_seed(5)
    theta = {"w": torch.randn(3, 2, generator=g, dtype=D), "b": torch.randn(3, generator=g, dtype=D)}
    adapted = [{k: v + 0.5 * torch.randn(v.shape, generator=g, dtype=D) for k, v in theta.items()}
               for _ in range(4)]
    saved = _copy(theta)
    hint = ("Return the updated theta: a new dict {k: ... for k in theta}, or theta itself after updating "
            "its tensors in place under torch.no_grad().")
    results = {}
    # (tasks, epsilon): a batch of 3, the same batch with another epsilon, a batch of 4, a serial update
    for n_tasks, eps in ((3, 0.3), (3, 0.6), (4, 0.3), (1, 0.8)):
        batch = adapted[:n_tasks]
        out = _call(fn, theta, batch, eps)
        what = f"the updated theta (B = {n_tasks} task{'s' if n_tasks > 1 else ''}, epsilon = {eps})"
        _expect_params(out, saved, what, hint)
        mistakes = {}
        if (n_tasks, 0.3) in results and eps != 0.3:
            mistakes[f"epsilon is ignored: the result for epsilon = {eps} is the one for epsilon = 0.3 (is "
                     "the step size fixed in your code?)."] = _vec(reference_reptile_update(saved, batch, 0.3))
        mistakes.update(_update_mistakes(saved, batch, eps))
        if n_tasks == 4:
            mistakes["only the first 3 tasks are used (is the number of tasks fixed in your code? use "
                     "len(adapted))."] = _vec(reference_reptile_update(saved, adapted[:3], eps))
        diagnose(_vec(out), _vec(reference_reptile_update(saved, batch, eps)), what, mistakes,
                 atol=1e-12, rtol=1e-10)
        results[(n_tasks, eps)] = out
    _device_agnostic(fn, saved, adapted[:3], 0.3, what="reptile_update")


def reptile_update(student: Callable) -> Callable:
    """Exercise 5.1: theta <- theta + epsilon * 1/B sum_i (theta'_i - theta).

    theta may be updated in place (as an optimiser's step does) or left alone and a new dict returned.
    """
    return run_check("5.1", "the Reptile outer update", student, reference_reptile_update,
                     _probe_reptile_update, mutates=("theta", "phi", "params", "weights"))


# ----------------------------------------------------------------------------- 5.2

def _accumulated(model: nn.Module, theta: Params, x: Tensor, y: Tensor, alpha: float, steps: int,
                 loss_fn: LossFn) -> Tensor:
    """theta' when .grad is never zeroed: step j subtracts alpha * (g_0 + ... + g_j)."""
    w = {k: v.detach().clone() for k, v in theta.items()}
    acc = {k: torch.zeros_like(v) for k, v in w.items()}
    for _ in range(steps):
        leaves = {k: v.requires_grad_() for k, v in w.items()}
        g = torch.autograd.grad(loss_fn(functional_call(model, leaves, (x,)), y), list(leaves.values()))
        acc = {k: acc[k] + gk for k, gk in zip(acc, g)}
        w = {k: (v - alpha * acc[k]).detach() for k, v in leaves.items()}
    return _vec(w)


def _inner_variants(model: nn.Module, theta: Params, x: Tensor, y: Tensor, alpha: float, steps: int,
                    loss_fn: LossFn, model_theta: Params | None) -> dict[str, Tensor]:
    """The classic wrong inner loops, computed for this call."""
    def ref(th=theta, a=alpha, t=steps, lf=loss_fn):
        return _vec(reference_inner_loop(model, _copy(th), x, y, a, t, lf))

    leaves = {k: v.clone().requires_grad_() for k, v in theta.items()}
    g0 = torch.autograd.grad(loss_fn(functional_call(model, leaves, (x,)), y), list(leaves.values()))
    out = {
        f"it is theta' after one step only: the loop must take `steps` steps (T = {steps} here).": ref(t=1),
        f"it took one step too many (T + 1 = {steps + 1} steps).": ref(t=steps + 1),
        f"one step too few (T - 1 = {steps - 1} steps here): `for _ in range(steps)` already gives T "
        "steps.": ref(t=steps - 1),
        "it moves *up* the gradient: SGD subtracts, w - alpha * grad.": ref(a=-alpha),
        "alpha is missing: each step is w - alpha * grad.": ref(a=1.0),
        "every step uses the gradient at the initial point theta: recompute the gradient at the current "
        "w at each step.": _vec({k: theta[k] - steps * alpha * gk for k, gk in zip(theta, g0)}),
        "theta' equals theta: no step was taken (return the adapted weights).": _vec(theta),
        "the gradients accumulate from step to step: .grad is never zeroed, so each step subtracts the "
        "sum of all the gradients so far (backward() adds to .grad). Zero it before every backward() "
        "(optimizer.zero_grad(), or v.grad = None), or use torch.autograd.grad, which returns fresh "
        "gradients.": _accumulated(model, theta, x, y, alpha, steps, loss_fn),
    }
    if loss_fn is not F.mse_loss:
        out["loss_fn is ignored (this is theta' for F.mse_loss): compute the loss with "
            "loss_fn(prediction, y), the loss the caller passes."] = ref(lf=F.mse_loss)
    if model_theta is not None:
        out["it starts from the model's own weights, not from theta: start from the theta you are given "
            "(w = {k: v.detach() for k, v in theta.items()}) and run the net with "
            "functional_call(model, w, (x,))."] = ref(th=model_theta)
    return out


def _probe_inner_loop(fn: Callable) -> None:
    model = _net(1)
    own = _copy(dict(model.named_parameters()))
    tasks = [_task(k=6, seed=s) for s in (2, 3, 4)]
    # (theta, task, alpha, steps, loss_fn): the model's own parameters (as in meta-training), then a
    # theta apart from the model's weights, with other alpha, steps and loss, then a next task
    calls = [("own", 0, 0.1, 3, F.mse_loss), ("shifted", 1, 0.05, 2, _huber), ("shifted", 2, 0.05, 2, _huber)]
    prev, prev_alpha = None, None
    for i, (which, t, alpha, steps, loss_fn) in enumerate(calls):
        x, y, _, _ = tasks[t]
        theta = dict(model.named_parameters()) if which == "own" else _shifted(model, 10 + i)
        saved = _copy(theta)
        out = _call(fn, model, theta, x, y, alpha, steps, loss_fn)
        _expect_model_unchanged(model, own, "inner_loop")
        what = (f"theta' after {steps} inner steps (alpha = {alpha}, loss_fn = "
                f"{'F.mse_loss' if loss_fn is F.mse_loss else 'a Huber loss'}"
                f"{', theta apart from the model' if which == 'shifted' else ''})")
        _expect_params(out, saved, what, grads=True)
        mistakes = {}  # what this call's settings tell apart first, then the classic mistakes
        if prev is not None:
            mistakes["adaptation is not reset between tasks: this task's inner loop started from the "
                      "previous task's theta', not from theta. Every task must start from theta (keep no "
                      "state between calls)."] = _vec(reference_inner_loop(model, prev, x, y, alpha, steps,
                                                                           loss_fn))
        if i == 1:
            mistakes["the number of steps is ignored (this is theta' after 3 steps, the previous call's "
                     "number; use `steps`)."] = _vec(reference_inner_loop(model, saved, x, y, alpha, 3, loss_fn))
            mistakes[f"alpha is ignored (this is theta' with alpha = {prev_alpha}, the previous call's; use "
                     "`alpha`)."] = _vec(reference_inner_loop(model, saved, x, y, prev_alpha, steps, loss_fn))
        mistakes.update(_inner_variants(model, saved, x, y, alpha, steps, loss_fn,
                                        own if which == "shifted" else None))
        _diagnose(_vec(out), _vec(reference_inner_loop(model, saved, x, y, alpha, steps, loss_fn)), what,
                  mistakes, 1e-10, 1e-8,
                  behaviour=[_loss_ignored(fn, (model, theta, x, y, alpha, steps), loss_fn, 1e-10, 1e-8)])
        _graph_kept(out, "theta'", "Reptile never differentiates through theta': a graph kept on it holds "
                    "every inner step's activations in memory (memory grows with T) and, when theta requires "
                    "gradients, ties theta' to theta, so every theta' you keep (a batch of tasks, a log) keeps "
                    "its whole inner loop alive.",
                    "Start from a detached copy, w = {k: v.detach() for k, v in theta.items()} (with "
                    "torch.func.grad too: started from dict(theta), its gradients carry theta's graph), and "
                    "build each step's new weights with (v - alpha * g).detach().")
        prev, prev_alpha = {k: v.detach().clone() for k, v in out.items()}, alpha
    x, y, _, _ = tasks[0]
    _device_agnostic(fn, model, own, x, y, 0.1, 2, F.mse_loss, what="inner_loop")


def inner_loop(student: Callable) -> Callable:
    """Exercise 5.2: T SGD steps from theta on one task's data, theta unchanged."""
    return run_check("5.2", "the inner loop with several steps", student, reference_inner_loop,
                     _probe_inner_loop)


# ----------------------------------------------------------------------------- 5.3

def _maml_gradient(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn) -> Params:
    """MAML's (second-order) gradient of the query loss with respect to theta, through the inner loop."""
    th = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
    w = dict(th)
    for _ in range(steps):
        g = torch.autograd.grad(loss_fn(functional_call(model, w, (x_s,)), y_s), list(w.values()),
                                create_graph=True)
        w = {k: v - alpha * gk for (k, v), gk in zip(w.items(), g)}
    loss = loss_fn(functional_call(model, w, (x_q,)), y_q)
    return dict(zip(th, torch.autograd.grad(loss, list(th.values()))))


def _fo_variants(model, theta, task, alpha, steps, loss_fn, model_theta) -> dict[str, Tensor]:
    x_s, y_s, x_q, y_q = task

    def fo(th=theta, xs=x_s, ys=y_s, xq=x_q, yq=y_q, a=alpha, t=steps, lf=loss_fn):
        return reference_fomaml_direction(model, _copy(th), xs, ys, xq, yq, a, t, lf)

    w = reference_inner_loop(model, _copy(theta), x_s, y_s, alpha, steps, loss_fn)
    w_before = reference_inner_loop(model, _copy(theta), x_s, y_s, alpha, steps - 1, loss_fn)
    leaves = {k: v.clone().requires_grad_() for k, v in w_before.items()}
    last = dict(zip(leaves, torch.autograd.grad(loss_fn(functional_call(model, leaves, (x_s,)), y_s),
                                                list(leaves.values()))))
    rep = {k: (theta[k] - w[k]) / alpha for k in theta}
    right = _vec(fo())
    x_sq, y_sq = torch.cat([x_s, x_q]), torch.cat([y_s, y_q])
    leaves = {k: v.clone().requires_grad_() for k, v in w.items()}
    both = dict(zip(leaves, torch.autograd.grad(
        loss_fn(functional_call(model, leaves, (x_s,)), y_s) + loss_fn(functional_call(model, leaves, (x_q,)), y_q),
        list(leaves.values()))))
    out = {
        "support and query are swapped: adapt on (x_s, y_s), then take the gradient of the loss on "
        "(x_q, y_q) at theta'.": fo(xs=x_q, ys=y_q, xq=x_s, yq=y_s),
        "it is the gradient of the *support* loss at theta': the direction uses the query set "
        "(x_q, y_q), data the inner loop has not seen.": fo(xq=x_s, yq=y_s),
        "it is the gradient of the last inner step (the support loss at the weights before the last "
        "step), what FOMAML would use without a separate query set: take the query loss's gradient at "
        "theta'.": last,
        "the inner loop ran on the query set: adapt on the support set (x_s, y_s).": fo(xs=x_q, ys=y_q),
        "the gradient at theta' is of the loss on support and query together (torch.cat of the two "
        "sets): first-order MAML's direction uses the query set (x_q, y_q) alone, data the inner loop "
        "has not seen.": fo(xq=x_sq, yq=y_sq),
        "the gradient at theta' is of the support loss plus the query loss: first-order MAML's direction "
        "uses the query loss alone, on data the inner loop has not seen.": both,
        "the inner loop ran on support and query together: adapt on the support set (x_s, y_s) alone, "
        "and keep the query set for the direction.": fo(xs=x_sq, ys=y_sq),
        "the gradient is taken at the initial point theta, without adapting first (that is joint "
        "training, not MAML): take it at theta' = inner_loop(...).": fo(t=0),
        f"theta' came from one inner step; use `steps` (here {steps}).": fo(t=1),
        f"theta' came from one step too many (T + 1 = {steps + 1}).": fo(t=steps + 1),
        f"theta' came from one step too few (T - 1 = {steps - 1}).": fo(t=steps - 1),
        "it is Reptile's direction (theta - theta') / alpha, the sum of the inner gradients; first-order "
        "MAML takes the query loss's gradient at theta'.": rep,
        "it is Reptile's displacement theta' - theta (and with the sign of an update, not of a "
        "gradient); first-order MAML's direction is the query loss's gradient at theta'.":
            {k: w[k] - theta[k] for k in theta},
        "it is Reptile's theta - theta' (not divided by alpha); first-order MAML's direction is the "
        "query loss's gradient at theta'.": {k: theta[k] - w[k] for k in theta},
        "it is (theta' - theta) / alpha, Reptile's direction with the sign flipped; first-order MAML's "
        "direction is the query loss's gradient at theta'.": {k: -v for k, v in rep.items()},
        "it is MAML's second-order gradient (differentiated through the inner loop, with respect to "
        "theta): first-order MAML treats theta' as a constant and differentiates the query loss with "
        "respect to theta' itself (detach theta', make it a leaf).":
            _maml_gradient(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn),
    }
    out = {m: _vec(v) for m, v in out.items()}
    out["the sign is flipped: return the gradient itself (the meta-update subtracts it)."] = -right
    if loss_fn is not F.mse_loss:
        out["loss_fn is ignored (this is the direction for F.mse_loss): use loss_fn for the inner loop "
            "and for the query loss."] = _vec(fo(lf=F.mse_loss))
    if model_theta is not None:
        out["it starts from the model's own weights, not from theta: adapt the theta you are given."] = \
            _vec(fo(th=model_theta))
    return out


def _probe_fomaml(fn: Callable) -> None:
    model = _net(2)
    own = _copy(dict(model.named_parameters()))
    tasks = [_task(k=5, q=7, seed=s) for s in (4, 5, 6)]
    # theta apart from the model (requires grad, as a meta-learner's parameters do), then the model's
    # own parameters with other alpha, steps and loss, then a next task
    calls = [("shifted", 0, 0.1, 3, F.mse_loss), ("own", 1, 0.05, 2, _huber), ("own", 2, 0.05, 2, _huber)]
    prev_w, prev_alpha = None, None
    for i, (which, t, alpha, steps, loss_fn) in enumerate(calls):
        task = tasks[t]
        if which == "own":
            theta = dict(model.named_parameters())
        else:
            theta = {k: v.requires_grad_() for k, v in _shifted(model, 20).items()}
        saved = _copy(theta)
        out = _call(fn, model, theta, *task, alpha, steps, loss_fn)
        _expect_model_unchanged(model, own, "fomaml_direction")
        what = (f"the first-order MAML direction ({steps} inner steps, alpha = {alpha}, loss_fn = "
                f"{'F.mse_loss' if loss_fn is F.mse_loss else 'a Huber loss'})")
        _expect_params(out, saved, what, grads=True)
        mistakes = {}  # what this call's settings tell apart first, then the classic mistakes
        if prev_w is not None:
            mistakes["adaptation is not reset between tasks: this task's inner loop started from the "
                     "previous task's theta', not from theta (keep no state between calls)."] = \
                _vec(reference_fomaml_direction(model, prev_w, *task, alpha, steps, loss_fn))
        if i == 1:
            mistakes["the number of steps is ignored (this is the direction after 3 inner steps, the "
                     "previous call's number; use `steps`)."] = \
                _vec(reference_fomaml_direction(model, saved, *task, alpha, 3, loss_fn))
            mistakes[f"alpha is ignored (this is the direction with alpha = {prev_alpha}, the previous "
                     "call's; use `alpha`)."] = \
                _vec(reference_fomaml_direction(model, saved, *task, prev_alpha, steps, loss_fn))
        mistakes.update(_fo_variants(model, saved, task, alpha, steps, loss_fn,
                                     own if which == "shifted" else None))
        _diagnose(_vec(out), _vec(reference_fomaml_direction(model, saved, *task, alpha, steps, loss_fn)),
                  what, mistakes, 1e-10, 1e-8,
                  behaviour=[_loss_ignored(fn, (model, theta, *task, alpha, steps), loss_fn, 1e-10, 1e-8)])
        _graph_kept(out, "the direction", "It is a constant handed to the optimiser as .grad, and first-order "
                    "MAML differentiates nothing through it; a graph kept on it (a gradient taken with "
                    "create_graph=True, or through a theta' that still has its graph) holds the inner loop in "
                    "memory and builds second-order terms that nobody uses.",
                    "Take the gradient without create_graph, with respect to detached leaves "
                    "{k: v.detach().requires_grad_() ...} of theta' (or .detach() what you return).")
        prev_w, prev_alpha = reference_inner_loop(model, saved, task[0], task[1], alpha, steps, loss_fn), alpha
    _device_agnostic(fn, model, own, *tasks[0], 0.1, 2, F.mse_loss, what="fomaml_direction")


def fomaml_direction(student: Callable) -> Callable:
    """Exercise 5.3: first-order MAML's direction, grad L_Q(theta'), theta' adapted on the support set."""
    return run_check("5.3", "first-order MAML's direction", student, reference_fomaml_direction,
                     _probe_fomaml)
