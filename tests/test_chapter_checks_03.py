"""Chapter 03's checks: right answers in several coding styles pass; each classic MAML mistake, an ignored
argument, a change to an input in place, a wrong return type and a NotImplementedError that is not the
stub's are named; stubs are 'not attempted'."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, grad_and_value, vmap

from course_utils import checks
from course_utils.chapter_checks import ch03
from conftest import message, status, stub  # shared check-test helpers


def run(check, fn):
    """Run a check; return the function it hands back."""
    return check(fn)


def assert_wrong(number, *phrases):
    msg = message(number)
    assert status(number) == "wrong", msg
    for p in phrases:
        assert p in msg, msg


# --- 3.1 one inner step -------------------------------------------------------------------------

def inner_autograd(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return {k: p - alpha * gk for (k, p), gk in zip(params.items(), g)}


def inner_torch_func(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    """Also right: torch.func.grad (its gradient stays differentiable by the outer autograd)."""
    g = grad(lambda p: loss_fn(functional_call(model, p, (x_s,)), y_s))(params)
    if not create_graph:
        g = {k: v.detach() for k, v in g.items()}
    return {k: params[k] - alpha * g[k] for k in params}


def inner_explicit_loop(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    """Also right: an explicit loop, names and tensors listed first."""
    names = list(params)
    tensors = [params[n] for n in names]
    loss = loss_fn(functional_call(model, dict(zip(names, tensors)), (x_s,)), y_s)
    grads = torch.autograd.grad(loss, tensors, create_graph=create_graph)
    new = {}
    for n, p, g in zip(names, tensors, grads):
        new[n] = torch.sub(p, g, alpha=alpha)
    return new


def inner_no_create_graph(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()))  # create_graph forgotten
    return {k: p - alpha * gk for (k, p), gk in zip(params.items(), g)}


def inner_detached(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return {k: p.detach() - alpha * gk.detach() for (k, p), gk in zip(params.items(), g)}


def inner_detached_regrad(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    out = inner_autograd(model, params, x_s, y_s, alpha, loss_fn, create_graph)
    return {k: v.detach().requires_grad_() for k, v in out.items()}


def inner_detached_theta_only(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    """theta detached, gradient kept differentiable: the Jacobian is -alpha H instead of I - alpha H."""
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return {k: p.detach() - alpha * gk for (k, p), gk in zip(params.items(), g)}


def inner_detached_before_loss(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    p = {k: v.detach() for k, v in params.items()}
    loss = loss_fn(functional_call(model, p, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(p.values()), create_graph=create_graph)
    return {k: v - alpha * gk for (k, v), gk in zip(p.items(), g)}


def inner_ascent(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return {k: p + alpha * gk for (k, p), gk in zip(params.items(), g)}


def inner_always_second_order(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    return inner_autograd(model, params, x_s, y_s, alpha, loss_fn, True)


def inner_list(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    return list(inner_autograd(model, params, x_s, y_s, alpha, loss_fn, create_graph).values())


def inner_tuple_with_grads(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    out = inner_autograd(model, params, x_s, y_s, alpha, loss_fn, create_graph)
    return out, {k: (params[k] - out[k]) / alpha for k in out}


def inner_returns_none(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    inner_autograd(model, params, x_s, y_s, alpha, loss_fn, create_graph)


def inner_returns_gradient(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return dict(zip(params, g))


def inner_fixed_alpha(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    return inner_autograd(model, params, x_s, y_s, 0.1, loss_fn, create_graph)


def inner_mse_always(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    return inner_autograd(model, params, x_s, y_s, alpha, F.mse_loss, create_graph)


def inner_sum_of_squares(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    return inner_autograd(model, params, x_s, y_s, alpha, lambda p, y: ((p - y) ** 2).sum(), create_graph)


def inner_model_call(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(model(x_s), y_s)  # the model's own weights, not params
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return {k: p - alpha * gk for (k, p), gk in zip(params.items(), g)}


def inner_model_parameters(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(model(x_s), y_s)
    g = torch.autograd.grad(loss, list(model.parameters()), create_graph=create_graph)
    return {k: p - alpha * gk for (k, p), gk in zip(params.items(), g)}


def inner_data_in_place(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    for p, gk in zip(params.values(), g):
        p.data -= alpha * gk.data
    return params


def inner_add_in_place(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    with torch.no_grad():
        for p, gk in zip(params.values(), g):
            p.add_(gk, alpha=-alpha)
    return dict(params)


def inner_minus_equals(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    for k, gk in zip(list(params), g):
        params[k] -= alpha * gk
    return params


def inner_assign_into_params(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    for k, gk in zip(list(params), g):
        params[k] = params[k] - alpha * gk
    return params


def inner_partial(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    if not create_graph:
        raise NotImplementedError("first order: I will do this later")
    return inner_autograd(model, params, x_s, y_s, alpha, loss_fn, create_graph)


def inner_cdist_loss(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    """A loss through torch.cdist, whose gradient torch cannot differentiate again."""
    pred = functional_call(model, params, (x_s,))
    loss = torch.cdist(pred.T, y_s.T).pow(2).sum() / len(y_s)  # the mean squared error, via cdist
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return {k: p - alpha * gk for (k, p), gk in zip(params.items(), g)}


@pytest.mark.parametrize("fn", [ch03.reference_inner_step, inner_autograd, inner_torch_func,
                                inner_explicit_loop])
def test_inner_step_right_answers_pass(fn):
    assert run(ch03.inner_step, fn) is fn
    assert status("3.1") == "right", message("3.1")


@pytest.mark.parametrize("fn, phrases", [
    (inner_no_create_graph, ["create_graph is not passed on"]),
    (inner_detached, ["does not carry gradients"]),
    (inner_detached_regrad, ["does not depend on theta"]),
    (inner_detached_theta_only, ["p.detach() - alpha * g"]),
    (inner_detached_before_loss, ["no graph back to `params`"]),
    (inner_ascent, ["moves up the gradient"]),
    (inner_always_second_order, ["create_graph=False", "hard-code"]),
    (inner_list, ["should be a dict", "a list of"]),
    (inner_tuple_with_grads, ["should be a dict", "a tuple of 2"]),
    (inner_returns_none, ["should be a dict", "returned None"]),
    (inner_returns_gradient, ["returns the gradient instead of theta'"]),
    (inner_fixed_alpha, ["alpha is ignored"]),
    (inner_mse_always, ["loss_fn is ignored"]),
    (inner_sum_of_squares, ["summed over the support points"]),
    (inner_model_call, ["does not depend on the tensors in `params`", "functional_call"]),
    (inner_model_parameters, ["model's own weights"]),
    (inner_data_in_place, ["changed its input `params` in place"]),
    (inner_add_in_place, ["changed its input `params` in place"]),
    (inner_minus_equals, ["changed its input `params` in place"]),
    (inner_assign_into_params, ["changed its input `params` in place"]),
    (inner_partial, ["NotImplementedError", "not the exercise's stub", "I will do this later"]),
    (inner_cdist_loss, ["cannot be differentiated", "_cdist_backward"]),
])
def test_inner_step_mistakes_are_named(fn, phrases):
    assert run(ch03.inner_step, fn) is ch03.reference_inner_step
    assert_wrong("3.1", *phrases)


def test_detached_theta_is_not_blamed_on_create_graph():
    run(ch03.inner_step, inner_detached_theta_only)
    msg = message("3.1")
    assert "-alpha H instead of I - alpha H" in msg
    assert "create_graph" not in msg  # it was passed: no hint about it


def test_in_place_change_is_named_before_any_other_diagnosis():
    run(ch03.inner_step, inner_data_in_place)
    msg = message("3.1")
    assert "create_graph" not in msg and "Jacobian" not in msg


def test_a_classifier_only_mistake_is_caught_by_the_cross_entropy_probe():
    def reshapes_targets(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
        return inner_autograd(model, params, x_s, y_s.reshape(-1, 1), alpha, loss_fn, create_graph)
    run(ch03.inner_step, reshapes_targets)
    assert_wrong("3.1", "F.cross_entropy", "reshaping")


# --- 3.2 the meta-gradient by hand -------------------------------------------------------------

def phi(x):
    return torch.stack([x, torch.ones_like(x)], 1)


def linreg_first_order(theta, x_s, y_s, x_q, y_q, alpha):
    ps, pq = phi(x_s), phi(x_q)
    t1 = theta - alpha * 2 / len(x_s) * ps.T @ (ps @ theta - y_s)
    return 2 / len(x_q) * pq.T @ (pq @ t1 - y_q)


def linreg_swapped(theta, x_s, y_s, x_q, y_q, alpha):
    return ch03.reference_linreg_meta_gradient(theta, x_q, y_q, x_s, y_s, alpha)


def linreg_plus(theta, x_s, y_s, x_q, y_q, alpha):
    h = 2 / len(x_s) * phi(x_s).T @ phi(x_s)
    return (torch.eye(2, dtype=theta.dtype) + alpha * h) @ linreg_first_order(theta, x_s, y_s, x_q, y_q, alpha)


def linreg_hessian_of_query(theta, x_s, y_s, x_q, y_q, alpha):
    h_q = 2 / len(x_q) * phi(x_q).T @ phi(x_q)
    return (torch.eye(2, dtype=theta.dtype) - alpha * h_q) @ linreg_first_order(theta, x_s, y_s, x_q, y_q, alpha)


def linreg_query_inner(theta, x_s, y_s, x_q, y_q, alpha):
    return ch03.reference_linreg_meta_gradient(theta, x_q, y_q, x_q, y_q, alpha)


def linreg_support_both(theta, x_s, y_s, x_q, y_q, alpha):
    return ch03.reference_linreg_meta_gradient(theta, x_s, y_s, x_s, y_s, alpha)


def linreg_sums(theta, x_s, y_s, x_q, y_q, alpha):
    ps, pq = phi(x_s), phi(x_q)
    t1 = theta - alpha * 2 * ps.T @ (ps @ theta - y_s)
    return (torch.eye(2, dtype=theta.dtype) - alpha * 2 * ps.T @ ps) @ (2 * pq.T @ (pq @ t1 - y_q))


def linreg_k_for_query(theta, x_s, y_s, x_q, y_q, alpha):
    ps, pq, k = phi(x_s), phi(x_q), len(x_s)
    t1 = theta - alpha * 2 / k * ps.T @ (ps @ theta - y_s)
    return (torch.eye(2, dtype=theta.dtype) - alpha * 2 / k * ps.T @ ps) @ (2 / k * pq.T @ (pq @ t1 - y_q))


def linreg_fixed_alpha(theta, x_s, y_s, x_q, y_q, alpha):
    return ch03.reference_linreg_meta_gradient(theta, x_s, y_s, x_q, y_q, 0.3)


def linreg_tuple(theta, x_s, y_s, x_q, y_q, alpha):
    g = ch03.reference_linreg_meta_gradient(theta, x_s, y_s, x_q, y_q, alpha)
    return g[0], g[1]


def linreg_in_place(theta, x_s, y_s, x_q, y_q, alpha):
    ps, pq = phi(x_s), phi(x_q)
    theta -= alpha * 2 / len(x_s) * ps.T @ (ps @ theta - y_s)  # theta' written into theta itself
    h = 2 / len(x_s) * ps.T @ ps
    return (torch.eye(2, dtype=theta.dtype) - alpha * h) @ (2 / len(x_q) * pq.T @ (pq @ theta - y_q))


def linreg_bare_eye(theta, x_s, y_s, x_q, y_q, alpha):
    ps, pq = phi(x_s), phi(x_q)
    t1 = theta - alpha * 2 / len(x_s) * ps.T @ (ps @ theta - y_s)
    h = 2 / len(x_s) * ps.T @ ps
    return (torch.eye(2, dtype=theta.dtype) - alpha * h) @ (2 / len(x_q) * pq.T @ (pq @ t1 - y_q))


def linreg_float32(theta, x_s, y_s, x_q, y_q, alpha):
    return ch03.reference_linreg_meta_gradient(*(t.float() for t in (theta, x_s, y_s, x_q, y_q)), alpha)


def linreg_autograd(theta, x_s, y_s, x_q, y_q, alpha):
    t = theta.clone().requires_grad_()
    loss_s = ((t[0] * x_s + t[1] - y_s) ** 2).mean()
    g, = torch.autograd.grad(loss_s, t, create_graph=True)
    t1 = t - alpha * g
    loss_q = ((t1[0] * x_q + t1[1] - y_q) ** 2).mean()
    return torch.autograd.grad(loss_q, t)[0]


def linreg_scalars(theta, x_s, y_s, x_q, y_q, alpha):
    """Also right: every entry written out with sums over the points."""
    w, b = theta[0], theta[1]
    k, q = len(x_s), len(x_q)
    r_s = w * x_s + b - y_s
    gw, gb = 2 / k * (r_s * x_s).sum(), 2 / k * r_s.sum()
    hww, hwb, hbb = 2 / k * (x_s * x_s).sum(), 2 / k * x_s.sum(), 2.0
    w1, b1 = w - alpha * gw, b - alpha * gb
    r_q = w1 * x_q + b1 - y_q
    qw, qb = 2 / q * (r_q * x_q).sum(), 2 / q * r_q.sum()
    return torch.stack([(1 - alpha * hww) * qw - alpha * hwb * qb, -alpha * hwb * qw + (1 - alpha * hbb) * qb])


def linreg_reversed(theta, x_s, y_s, x_q, y_q, alpha):
    """(dL/db, dL/dw): the right numbers in the wrong order."""
    g = ch03.reference_linreg_meta_gradient(theta, x_s, y_s, x_q, y_q, alpha)
    return torch.stack([g[1], g[0]])


def linreg_phi_one_x(theta, x_s, y_s, x_q, y_q, alpha):
    """phi(x) = (1, x): theta[0] is used as the bias."""
    ps = torch.stack([torch.ones_like(x_s), x_s], 1)
    pq = torch.stack([torch.ones_like(x_q), x_q], 1)
    t1 = theta - alpha * 2 / len(x_s) * ps.T @ (ps @ theta - y_s)
    h = 2 / len(x_s) * ps.T @ ps
    eye = torch.eye(2, dtype=theta.dtype, device=theta.device)
    return (eye - alpha * h) @ (2 / len(x_q) * pq.T @ (pq @ t1 - y_q))


def linreg_bias_first_consistently(theta, x_s, y_s, x_q, y_q, alpha):
    """Also right: phi(x) = (1, x) with theta reordered to (b, w) on the way in and back on the way out."""
    return linreg_phi_one_x(theta.flip(0), x_s, y_s, x_q, y_q, alpha).flip(0)


@pytest.mark.parametrize("fn", [ch03.reference_linreg_meta_gradient, linreg_autograd, linreg_scalars,
                                linreg_bias_first_consistently])
def test_linreg_right_answers_pass(fn):
    assert run(ch03.linreg_meta_gradient, fn) is fn
    assert status("3.2") == "right", message("3.2")


@pytest.mark.parametrize("fn, phrases", [
    (linreg_first_order, ["Hessian term (I - alpha H_S) is missing"]),
    (linreg_swapped, ["swapped"]),
    (linreg_plus, ["wrong sign"]),
    (linreg_hessian_of_query, ["Hessian of the wrong set", "H_Q"]),
    (linreg_query_inner, ["query set is used in the inner loop"]),
    (linreg_support_both, ["one set is used for both", "seed article"]),
    (linreg_sums, ["sums over the points, not means"]),
    (linreg_k_for_query, ["divided by the support size K"]),
    (linreg_fixed_alpha, ["alpha is ignored"]),
    (linreg_tuple, ["one tensor of shape (2,)", "a tuple of 2"]),
    (linreg_in_place, ["changed its input `theta` in place"]),
    (linreg_bare_eye, ["makes a tensor on the CPU", "device="]),
    (linreg_float32, ["compute in float64"]),
    (lambda *a: ch03.reference_linreg_meta_gradient(*a)[None], ["shape (1, 2)"]),
    (linreg_reversed, ["wrong order", "(dL/dw, dL/db)"]),
    (linreg_phi_one_x, ["phi(x) = (1, x)", "theta[0] the bias"]),
])
def test_linreg_mistakes_are_named(fn, phrases):
    run(ch03.linreg_meta_gradient, fn)
    assert_wrong("3.2", *phrases)


# --- 3.3 the outer step ---------------------------------------------------------------------------

def make_step(inner_kwargs=None, swap=False, zero_grad=True, step_adapted=False, mean=True, detach=False,
              adapt_on="s", score_on="q", fixed_alpha=None, fixed_steps=None, fixed_loss=None,
              per_task_step=False, returns="item"):
    """A maml_step with one deliberate mistake (or none)."""
    def maml_step(model, meta_opt, tasks, alpha, steps, loss_fn):
        alpha = alpha if fixed_alpha is None else fixed_alpha
        steps = steps if fixed_steps is None else fixed_steps
        loss_fn = loss_fn if fixed_loss is None else fixed_loss
        x_s, y_s, x_q, y_q = tasks
        if swap:
            x_s, y_s, x_q, y_q = x_q, y_q, x_s, y_s
        sets = {"s": (x_s, y_s), "q": (x_q, y_q)}
        (xa, ya), (xb, yb) = sets[adapt_on], sets[score_on]
        if zero_grad:
            meta_opt.zero_grad()
        theta = dict(model.named_parameters())
        total = 0.0
        for i in range(x_s.shape[0]):
            adapted = theta if not detach else {k: v.detach() for k, v in theta.items()}
            if detach:
                adapted = {k: v.requires_grad_() for k, v in adapted.items()}
            for _ in range(steps):
                adapted = ch03.reference_inner_step(model, adapted, xa[i], ya[i], alpha, loss_fn,
                                                    **(inner_kwargs or {"create_graph": True}))
            li = loss_fn(functional_call(model, adapted, (xb[i],)), yb[i])
            if per_task_step:
                meta_opt.zero_grad()
                li.backward()
                meta_opt.step()
            total = total + li
        loss = total / x_s.shape[0] if mean else total
        if not per_task_step:
            loss.backward()
        if step_adapted:
            with torch.no_grad():
                for p, a in zip(model.parameters(), adapted.values()):
                    p.copy_(a)
        if not per_task_step:
            meta_opt.step()
        value = total / x_s.shape[0]
        return {"item": lambda: value.item(), "tensor": lambda: value, "none": lambda: None,
                "sum": lambda: total.item()}[returns]()
    return maml_step


def step_per_task_backward(model, meta_opt, tasks, alpha, steps, loss_fn):
    """Also right: one backward per task, accumulating .grad (one task's graph in memory at a time)."""
    x_s, y_s, x_q, y_q = tasks
    b = x_s.shape[0]
    meta_opt.zero_grad()
    theta = dict(model.named_parameters())
    total = 0.0
    for i in range(b):
        adapted = theta
        for _ in range(steps):
            adapted = ch03.reference_inner_step(model, adapted, x_s[i], y_s[i], alpha, loss_fn)
        li = loss_fn(functional_call(model, adapted, (x_q[i],)), y_q[i]) / b
        li.backward()
        total += li.item()
    meta_opt.step()
    return total


def step_vmap(model, meta_opt, tasks, alpha, steps, loss_fn):
    """Also right: torch.func, a meta-gradient per task with vmap(grad(...)), then the mean in .grad."""
    theta = {k: v.detach() for k, v in model.named_parameters()}

    def task_loss(p, xs, ys, xq, yq):
        for _ in range(steps):
            g = grad(lambda q: loss_fn(functional_call(model, q, (xs,)), ys))(p)
            p = {k: p[k] - alpha * g[k] for k in p}
        return loss_fn(functional_call(model, p, (xq,)), yq)

    grads, losses = vmap(grad_and_value(task_loss), in_dims=(None, 0, 0, 0, 0))(theta, *tasks)
    for k, p in model.named_parameters():
        p.grad = grads[k].mean(0)  # replaces any stale gradient
    meta_opt.step()
    return losses.mean().item()


def step_detach_no_regrad(model, meta_opt, tasks, alpha, steps, loss_fn):
    x_s, y_s, x_q, y_q = tasks
    meta_opt.zero_grad()
    theta = {k: v.detach() for k, v in model.named_parameters()}
    loss = 0.0
    for i in range(x_s.shape[0]):
        with torch.enable_grad():
            t = {k: v.clone().requires_grad_() for k, v in theta.items()}
            a = ch03.reference_inner_step(model, t, x_s[i], y_s[i], alpha, loss_fn)
        a = {k: v.detach() for k, v in a.items()}
        loss = loss + loss_fn(functional_call(model, a, (x_q[i],)), y_q[i])
    (loss / x_s.shape[0]).backward()
    meta_opt.step()
    return loss.item()


def step_mutates_tasks(model, meta_opt, tasks, alpha, steps, loss_fn):
    x_s, y_s, x_q, y_q = tasks
    x_s -= 0.0 * x_s.mean()   # "normalising" in place: the values do not even change...
    x_q.mul_(1.0001)          # ...but this does
    return make_step()(model, meta_opt, (x_s, y_s, x_q, y_q), alpha, steps, loss_fn)


def step_cdist(model, meta_opt, tasks, alpha, steps, loss_fn):
    """Its own squared error through torch.cdist: torch has no second derivative for it."""
    def cdist_loss(pred, y):
        return torch.cdist(pred.T, y.T).pow(2).sum() / len(y)
    return make_step(fixed_loss=cdist_loss)(model, meta_opt, tasks, alpha, steps, loss_fn)


def step_restarts_from_theta(model, meta_opt, tasks, alpha, steps, loss_fn):
    """Every inner step starts again from theta: `steps` steps give the update of one."""
    x_s, y_s, x_q, y_q = tasks
    meta_opt.zero_grad()
    theta = dict(model.named_parameters())
    meta_loss = 0.0
    for i in range(x_s.shape[0]):
        for _ in range(steps):
            adapted = ch03.reference_inner_step(model, theta, x_s[i], y_s[i], alpha, loss_fn)
        meta_loss = meta_loss + loss_fn(functional_call(model, adapted, (x_q[i],)), y_q[i])
    meta_loss = meta_loss / x_s.shape[0]
    meta_loss.backward()
    meta_opt.step()
    return meta_loss.item()


def make_copy_into_model(how="load_state_dict", restore=False, per_task_backward=False):
    """theta' copied into the model (the Pitfalls' item), then the query loss with model(x)."""
    def maml_step(model, meta_opt, tasks, alpha, steps, loss_fn):
        x_s, y_s, x_q, y_q = tasks
        meta_opt.zero_grad()
        init = {k: v.detach().clone() for k, v in model.state_dict().items()}
        meta_loss, value = 0.0, 0.0
        for i in range(x_s.shape[0]):
            if restore:
                model.load_state_dict(init)
            adapted = dict(model.named_parameters())
            for _ in range(steps):
                adapted = ch03.reference_inner_step(model, adapted, x_s[i], y_s[i], alpha, loss_fn)
            if how == "load_state_dict":
                model.load_state_dict(adapted)
            else:                               # through .data: no version counter moves
                for p, a in zip(model.parameters(), adapted.values()):
                    p.data.copy_(a.detach())
            li = loss_fn(model(x_q[i]), y_q[i]) / x_s.shape[0]
            if per_task_backward:
                li.backward()
            else:
                meta_loss = meta_loss + li
            value += li.item()
        if restore:
            model.load_state_dict(init)
        if not per_task_backward:
            meta_loss.backward()
        meta_opt.step()
        return value
    return maml_step


def step_partial(model, meta_opt, tasks, alpha, steps, loss_fn):
    meta_opt.zero_grad()
    raise NotImplementedError("the inner loop is still missing")


@pytest.mark.parametrize("fn", [ch03.reference_maml_step, make_step(), step_per_task_backward, step_vmap])
def test_maml_step_right_answers_pass(fn):
    assert run(ch03.maml_step, fn) is fn
    assert status("3.3") == "right", message("3.3")


@pytest.mark.parametrize("fn, phrases", [
    (make_step(inner_kwargs={"create_graph": False}), ["first-order update", "create_graph=True"]),
    (make_step(swap=True), ["support and query are swapped"]),
    (make_step(adapt_on="q"), ["query set is used in the inner loop"]),
    (make_step(score_on="s"), ["support set is used for both", "seed article"]),
    (make_step(step_adapted=True), ["adapted to task 1 (then stepped)"]),
    (make_step(zero_grad=False), ["zero_grad"]),
    (make_step(mean=False), ["summed", "divide by B"]),
    (make_step(per_task_step=True), ["once per task"]),
    (make_step(detach=True), ["did not change"]),
    (step_detach_no_regrad, ["inner step detaches"]),
    (make_step(fixed_steps=1), ["single inner step", "previous `adapted`"]),
    (step_restarts_from_theta, ["single inner step", "each step must start from the previous `adapted`"]),
    (make_copy_into_model(), ["backward() failed", "theta' was copied into the model"]),
    (make_copy_into_model(restore=True, per_task_backward=True), ["theta' was copied into the model"]),
    (make_copy_into_model(how="data", per_task_backward=True), ["theta' was copied into the model", ".data"]),
    (make_step(fixed_steps=2), ["`steps` is ignored"]),
    (make_step(fixed_alpha=0.1), ["alpha is ignored"]),
    (make_step(fixed_loss=F.mse_loss), ["loss_fn is ignored"]),
    (make_step(returns="none"), ["Python float", "None"]),
    (make_step(returns="sum"), ["sum of the task losses"]),
    (step_mutates_tasks, ["changed its input `tasks` in place"]),
    (step_cdist, ["NotImplementedError", "_cdist_backward", "not the exercise's stub"]),
    (step_partial, ["NotImplementedError", "still missing", "not the exercise's stub"]),
])
def test_maml_step_mistakes_are_named(fn, phrases):
    run(ch03.maml_step, fn)
    assert_wrong("3.3", *phrases)


def test_maml_step_returning_a_tensor_is_named_without_torch_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(ch03.maml_step, make_step(returns="tensor"))
    assert_wrong("3.3", "meta_loss.item() (a Python float)")
    assert not [w for w in caught if "ch03" in w.filename or "checks" in w.filename], \
        [str(w.message) for w in caught]


# --- 3.4 first order ------------------------------------------------------------------------------

def fo_adapt(model, params, x_s, y_s, alpha, steps, loss_fn, create_graph=False):
    a = params
    for _ in range(steps):
        a = ch03.reference_inner_step(model, a, x_s, y_s, alpha, loss_fn, create_graph=create_graph)
    return a


def fo_query_grad(model, adapted, x_q, y_q, loss_fn, names):
    a = {k: v.detach().requires_grad_() for k, v in adapted.items()}
    loss = loss_fn(functional_call(model, a, (x_q,)), y_q)
    return dict(zip(names, torch.autograd.grad(loss, list(a.values()))))


def fo_second_order(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    a = fo_adapt(model, params, x_s, y_s, alpha, steps, loss_fn, create_graph=True)
    loss = loss_fn(functional_call(model, a, (x_q,)), y_q)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def fo_at_theta(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return fo_query_grad(model, params, x_q, y_q, loss_fn, params)


def fo_swapped(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch03.reference_fomaml_gradient(model, params, x_q, y_q, x_s, y_s, alpha, steps, loss_fn)


def fo_query_inner(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch03.reference_fomaml_gradient(model, params, x_q, y_q, x_q, y_q, alpha, steps, loss_fn)


def fo_support_both(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch03.reference_fomaml_gradient(model, params, x_s, y_s, x_s, y_s, alpha, steps, loss_fn)


def fo_reptile(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    a = fo_adapt(model, params, x_s, y_s, alpha, steps, loss_fn)
    return {k: (params[k] - a[k]).detach() for k in params}


def fo_reptile_scaled(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    a = fo_adapt(model, params, x_s, y_s, alpha, steps, loss_fn)
    return {k: (params[k] - a[k]).detach() / alpha for k in params}


def fo_adapted(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return {k: v.detach() for k, v in fo_adapt(model, params, x_s, y_s, alpha, steps, loss_fn).items()}


def fo_negated(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    g = ch03.reference_fomaml_gradient(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn)
    return {k: -v for k, v in g.items()}


def fo_own_weights(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    theta = dict(model.named_parameters())
    return ch03.reference_fomaml_gradient(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn)


def fo_list(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return list(ch03.reference_fomaml_gradient(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn).values())


def fo_flat(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    g = ch03.reference_fomaml_gradient(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn)
    return torch.cat([v.flatten() for v in g.values()])


def fo_fixed(alpha=None, steps=None, loss_fn=None):
    def fomaml_gradient(model, params, x_s, y_s, x_q, y_q, a, s, lf):
        return ch03.reference_fomaml_gradient(model, params, x_s, y_s, x_q, y_q, alpha or a, steps or s,
                                              loss_fn or lf)
    return fomaml_gradient


def fo_mutates_params(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    adapted = params                    # the same dict, the same tensors
    for _ in range(steps):
        loss = loss_fn(functional_call(model, adapted, (x_s,)), y_s)
        g = torch.autograd.grad(loss, list(adapted.values()))
        for p, gk in zip(adapted.values(), g):
            p.data.sub_(alpha * gk)     # adapts params itself
    return fo_query_grad(model, adapted, x_q, y_q, loss_fn, params)


def fo_partial(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    fo_adapt(model, params, x_s, y_s, alpha, steps, loss_fn)
    raise NotImplementedError("TODO: the query gradient")


def fo_via_graph(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    """Also right: keep theta' attached (create_graph=False) and differentiate w.r.t. theta."""
    a = fo_adapt(model, params, x_s, y_s, alpha, steps, loss_fn, create_graph=False)
    loss = loss_fn(functional_call(model, a, (x_q,)), y_q)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def fo_torch_func(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    """Also right: torch.func.grad for every gradient, detached inner gradients."""
    def support_loss(p):
        return loss_fn(functional_call(model, p, (x_s,)), y_s)
    a = {k: v.detach() for k, v in params.items()}
    for _ in range(steps):
        g = grad(support_loss)(a)
        a = {k: a[k] - alpha * g[k] for k in a}
    return grad(lambda p: loss_fn(functional_call(model, p, (x_q,)), y_q))(a)


def fo_backward(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    """Also right: fresh leaves for theta', loss.backward(), read their .grad."""
    a = fo_adapt(model, params, x_s, y_s, alpha, steps, loss_fn)
    leaves = {k: v.detach().requires_grad_() for k, v in a.items()}
    loss_fn(functional_call(model, leaves, (x_q,)), y_q).backward()
    return {k: v.grad for k, v in leaves.items()}


def fo_backward_reads_params_grad(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    """backward() and .grad of params: None on non-leaves, and it would accumulate on leaves."""
    a = fo_adapt(model, params, x_s, y_s, alpha, steps, loss_fn)
    loss_fn(functional_call(model, a, (x_q,)), y_q).backward()
    return {k: v.grad for k, v in params.items()}


def fo_backward_reads_adapted_grad(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    a = fo_adapt(model, params, x_s, y_s, alpha, steps, loss_fn)
    loss_fn(functional_call(model, a, (x_q,)), y_q).backward()
    return {k: v.grad for k, v in a.items()}


@pytest.mark.parametrize("fn", [ch03.reference_fomaml_gradient, fo_via_graph, fo_torch_func, fo_backward])
def test_fomaml_right_answers_pass(fn):
    assert run(ch03.fomaml_gradient, fn) is fn
    assert status("3.4") == "right", message("3.4")


@pytest.mark.parametrize("fn, phrases", [
    (fo_second_order, ["second-order"]),
    (fo_at_theta, ["without adapting first"]),
    (fo_swapped, ["swapped"]),
    (fo_query_inner, ["query set is used in the inner loop"]),
    (fo_support_both, ["support set is used for both", "seed article"]),
    (fo_reptile, ["Reptile's direction theta - theta'"]),
    (fo_reptile_scaled, ["Reptile's direction (theta - theta') / alpha"]),
    (fo_adapted, ["adapted parameters theta' themselves"]),
    (fo_negated, ["wrong sign"]),
    (fo_own_weights, ["model's own weights"]),
    (fo_list, ["should be a dict", "a list of"]),
    (fo_flat, ["should be a dict", "One tensor"]),
    (fo_fixed(alpha=0.1), ["alpha is ignored"]),
    (fo_fixed(steps=2), ["`steps` is ignored"]),
    (fo_fixed(steps=1), ["single inner step", "previous `adapted`"]),
    (fo_backward_reads_params_grad, ["it is None", "only on *leaf* tensors", "accumulates",
                                     "torch.autograd.grad(loss, list(adapted.values()))"]),
    (fo_backward_reads_adapted_grad, ["it is None", "only on *leaf* tensors"]),
    (fo_fixed(loss_fn=F.mse_loss), ["loss_fn is ignored"]),
    (fo_mutates_params, ["changed its input `params` in place"]),
    (fo_partial, ["NotImplementedError", "TODO: the query gradient", "not the exercise's stub"]),
])
def test_fomaml_mistakes_are_named(fn, phrases):
    run(ch03.fomaml_gradient, fn)
    assert_wrong("3.4", *phrases)


# --- protocol ------------------------------------------------------------------------------------

@pytest.mark.parametrize("check", [ch03.inner_step, ch03.linreg_meta_gradient, ch03.maml_step,
                                   ch03.fomaml_gradient])
def test_stub_is_not_attempted_and_the_reference_is_returned(check):
    out = check(stub)
    assert out is not stub
    assert list(checks.results().values())[0].status == "not attempted"


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError):
        ch03.inner_step(inner_no_create_graph)
    with pytest.raises(checks.ExerciseError):
        ch03.maml_step(stub)
    with pytest.raises(checks.ExerciseError):
        ch03.fomaml_gradient(fo_second_order)


def test_the_references_are_device_agnostic():
    theta, x_s, y_s, x_q, y_q = ch03._linreg_data()
    checks.expect_device_agnostic(ch03.reference_linreg_meta_gradient, theta, x_s, y_s, x_q, y_q, 0.3)
