"""Chapter 05's checks: right answers in several styles pass; each classic Reptile mistake is named;
ignored arguments, mutated inputs, wrong return types and partial answers are reported as such."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from course_utils import checks
from course_utils.chapter_checks import ch05
from conftest import message, status, stub  # shared check-test helpers


def verdict(check, fn, number):
    """Run ``check(fn)``; return (status, message)."""
    check(fn)
    return status(number), message(number)


# --- 5.1 the outer update ---------------------------------------------------------------------

def update_loop(theta, adapted, epsilon):  # right: explicit loops, stacked mean
    out = {}
    for k in theta:
        diff = torch.stack([w[k] - theta[k] for w in adapted]).mean(0)
        out[k] = theta[k] + epsilon * diff
    return out


def update_lerp(theta, adapted, epsilon):  # right: torch.lerp towards the mean of the adapted weights
    return {k: torch.lerp(theta[k], torch.stack([w[k] for w in adapted]).mean(0), epsilon) for k in theta}


def update_in_place_no_grad(theta, adapted, epsilon):  # right: an optimiser-style in-place step
    with torch.no_grad():
        for k, p in theta.items():
            p.add_(epsilon * (sum(w[k] for w in adapted) / len(adapted) - p))
    return theta


def update_wrong_sign(theta, adapted, epsilon):
    return {k: theta[k] - epsilon * sum(w[k] - theta[k] for w in adapted) / len(adapted) for k in theta}


def update_sum(theta, adapted, epsilon):
    return {k: theta[k] + epsilon * sum(w[k] - theta[k] for w in adapted) for k in theta}


def update_no_eps(theta, adapted, epsilon):
    return {k: sum(w[k] for w in adapted) / len(adapted) for k in theta}


def update_eps_twice(theta, adapted, epsilon):  # lerp by epsilon of a step already scaled by epsilon
    return {k: torch.lerp(theta[k], theta[k] + epsilon * (sum(w[k] for w in adapted) / len(adapted) - theta[k]),
                          epsilon) for k in theta}


def update_lerp_swapped(theta, adapted, epsilon):
    return {k: torch.lerp(sum(w[k] for w in adapted) / len(adapted), theta[k], epsilon) for k in theta}


def update_fixed_eps(theta, adapted, epsilon):
    return {k: theta[k] + 0.3 * sum(w[k] - theta[k] for w in adapted) / len(adapted) for k in theta}


def update_fixed_batch(theta, adapted, epsilon):
    return {k: theta[k] + epsilon * sum(w[k] - theta[k] for w in adapted[:3]) / 3 for k in theta}


def update_step_only(theta, adapted, epsilon):
    return {k: epsilon * sum(w[k] - theta[k] for w in adapted) / len(adapted) for k in theta}


def update_last_task(theta, adapted, epsilon):
    return {k: theta[k] + epsilon * (adapted[-1][k] - theta[k]) for k in theta}


def update_eps_times_mean(theta, adapted, epsilon):  # theta forgotten twice
    return {k: epsilon * sum(w[k] for w in adapted) / len(adapted) for k in theta}


def update_task_by_task(theta, adapted, epsilon):  # a serial step per task inside the batch
    for w in adapted:
        theta = {k: theta[k] + epsilon * (w[k] - theta[k]) for k in theta}
    return theta


def update_task_by_task_in_place(theta, adapted, epsilon):  # epsilon / B per task, in place
    with torch.no_grad():
        for w in adapted:
            for k, p in theta.items():
                p += epsilon / len(adapted) * (w[k] - p)
    return theta


def update_changes_adapted(theta, adapted, epsilon):
    for w in adapted:
        for k in w:
            w[k] -= theta[k]  # turns adapted into differences, in place
    return {k: theta[k] + epsilon * sum(w[k] for w in adapted) / len(adapted) for k in theta}


def update_list(theta, adapted, epsilon):
    return list(ch05.reference_reptile_update(theta, adapted, epsilon).values())


def update_tuple(theta, adapted, epsilon):
    return ch05.reference_reptile_update(theta, adapted, epsilon), epsilon


def update_none(theta, adapted, epsilon):  # updates in place but forgets to return
    with torch.no_grad():
        for k, p in theta.items():
            p.add_(epsilon * (sum(w[k] for w in adapted) / len(adapted) - p))


def update_partial(theta, adapted, epsilon):
    mean = {k: sum(w[k] for w in adapted) / len(adapted) for k in theta}
    raise NotImplementedError("TODO: the step towards mean")


def update_cpu_zeros(theta, adapted, epsilon):  # a device-less accumulator
    out = {}
    for k in theta:
        acc = torch.zeros(theta[k].shape, dtype=theta[k].dtype)
        for w in adapted:
            acc = acc + (w[k] - theta[k])
        out[k] = theta[k] + epsilon * acc / len(adapted)
    return out


@pytest.mark.parametrize("fn", [ch05.reference_reptile_update, update_loop, update_lerp, update_in_place_no_grad])
def test_update_right_answers_pass(fn):
    assert ch05.reptile_update(fn) is fn
    assert status("5.1") == "right", message("5.1")


@pytest.mark.parametrize("fn, phrase", [
    (update_wrong_sign, "away"),
    (update_sum, "summed"),
    (update_no_eps, "epsilon is missing"),
    (update_eps_twice, "epsilon is applied twice"),
    (update_lerp_swapped, "swapped"),
    (update_fixed_eps, "epsilon is ignored"),
    (update_fixed_batch, "number of tasks fixed"),
    (update_step_only, "add it to theta"),
    (update_last_task, "last task"),
    (update_eps_times_mean, "theta is forgotten"),
    (update_task_by_task, "updated task by task inside the batch (a step of epsilon towards"),
    (update_task_by_task_in_place, "updated task by task inside the batch (a step of epsilon / B"),
    (update_changes_adapted, "changed its input `adapted` in place"),
    (update_list, "returned a list of 2"),
    (update_tuple, "returned a tuple of 2"),
    (update_none, "returned None"),
    (update_partial, "not the exercise's stub"),
    (update_cpu_zeros, "makes a tensor on the CPU"),
])
def test_update_mistakes_are_named(fn, phrase):
    assert ch05.reptile_update(fn) is ch05.reference_reptile_update
    assert status("5.1") == "wrong"
    assert phrase in message("5.1"), message("5.1")


# --- 5.2 the inner loop -------------------------------------------------------------------------

def inner_func_grad(model, theta, x, y, alpha, steps, loss_fn):  # right, with torch.func.grad
    w = {k: v.detach() for k, v in theta.items()}
    for _ in range(steps):
        g = torch.func.grad(lambda p: loss_fn(functional_call(model, p, (x,)), y))(w)
        w = {k: w[k] - alpha * g[k] for k in w}
    return w


def inner_sgd_on_copies(model, theta, x, y, alpha, steps, loss_fn):  # right: an optimiser on copies
    w = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
    opt = torch.optim.SGD(list(w.values()), lr=alpha)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(functional_call(model, w, (x,)), y).backward()
        opt.step()
    return {k: v.detach() for k, v in w.items()}


def inner_deepcopy(model, theta, x, y, alpha, steps, loss_fn):  # right: a copy of the model
    m = copy.deepcopy(model)
    with torch.no_grad():
        for k, p in m.named_parameters():
            p.copy_(theta[k])
    opt = torch.optim.SGD(m.parameters(), lr=alpha)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(m(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def inner_no_grad_steps_on_own_leaves(model, theta, x, y, alpha, steps, loss_fn):  # right: in place on copies
    w = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
    for _ in range(steps):
        grads = torch.autograd.grad(loss_fn(functional_call(model, w, (x,)), y), list(w.values()))
        with torch.no_grad():
            for p, g in zip(w.values(), grads):
                p -= alpha * g
    return w


def inner_backward_zeroed(model, theta, x, y, alpha, steps, loss_fn):  # right: .backward(), .grad reset
    w = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
    for _ in range(steps):
        loss_fn(functional_call(model, w, (x,)), y).backward()
        with torch.no_grad():
            for v in w.values():
                v -= alpha * v.grad
                v.grad = None
    return {k: v.detach() for k, v in w.items()}


def inner_backward_never_zeroed(model, theta, x, y, alpha, steps, loss_fn):  # .grad accumulates
    w = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
    for _ in range(steps):
        loss_fn(functional_call(model, w, (x,)), y).backward()
        with torch.no_grad():
            for v in w.values():
                v -= alpha * v.grad
    return {k: v.detach() for k, v in w.items()}


def inner_sgd_no_zero_grad(model, theta, x, y, alpha, steps, loss_fn):  # an optimiser, zero_grad forgotten
    w = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
    opt = torch.optim.SGD(list(w.values()), lr=alpha)
    for _ in range(steps):
        loss_fn(functional_call(model, w, (x,)), y).backward()
        opt.step()
    return {k: v.detach() for k, v in w.items()}


def inner_sum_of_squares(model, theta, x, y, alpha, steps, loss_fn):  # ignores loss_fn, its own loss
    w = {k: v.detach() for k, v in theta.items()}
    for _ in range(steps):
        w = {k: v.requires_grad_() for k, v in w.items()}
        loss = ((functional_call(model, w, (x,)) - y) ** 2).sum()
        g = torch.autograd.grad(loss, list(w.values()))
        w = {k: (v - alpha * gk).detach() for (k, v), gk in zip(w.items(), g)}
    return w


def inner_func_grad_from_theta(model, theta, x, y, alpha, steps, loss_fn):  # right numbers, theta's graph kept
    w = dict(theta)
    for _ in range(steps):
        g = torch.func.grad(lambda p: loss_fn(functional_call(model, p, (x,)), y))(w)
        w = {k: w[k] - alpha * g[k] for k in w}
    return w


def inner_one_step(model, theta, x, y, alpha, steps, loss_fn):
    return ch05.reference_inner_loop(model, theta, x, y, alpha, 1, loss_fn)


def inner_extra_step(model, theta, x, y, alpha, steps, loss_fn):  # range(steps + 1)
    return ch05.reference_inner_loop(model, theta, x, y, alpha, steps + 1, loss_fn)


def inner_one_short(model, theta, x, y, alpha, steps, loss_fn):  # range(steps - 1) / range(1, steps)
    return ch05.reference_inner_loop(model, theta, x, y, alpha, steps - 1, loss_fn)


def inner_optimizer_on_model(model, theta, x, y, alpha, steps, loss_fn):  # steps theta itself
    opt = torch.optim.SGD(model.parameters(), lr=alpha)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def inner_uses_model_weights(model, theta, x, y, alpha, steps, loss_fn):  # ignores theta
    return ch05.reference_inner_loop(model, dict(model.named_parameters()), x, y, alpha, steps, loss_fn)


def inner_data_in_place(model, theta, x, y, alpha, steps, loss_fn):
    theta = {k: v if v.requires_grad else v.requires_grad_() for k, v in theta.items()}
    for _ in range(steps):
        loss = loss_fn(functional_call(model, theta, (x,)), y)
        g = torch.autograd.grad(loss, list(theta.values()))
        for p, gk in zip(theta.values(), g):
            p.data -= alpha * gk
    return {k: v.detach().clone() for k, v in theta.items()}


def inner_grad_at_theta(model, theta, x, y, alpha, steps, loss_fn):
    leaves = {k: v.detach().requires_grad_() for k, v in theta.items()}
    g = torch.autograd.grad(loss_fn(functional_call(model, leaves, (x,)), y), list(leaves.values()))
    w = {k: v.detach() for k, v in theta.items()}
    for _ in range(steps):
        w = {k: w[k] - alpha * gk for k, gk in zip(w, g)}
    return w


def inner_ascent(model, theta, x, y, alpha, steps, loss_fn):
    return ch05.reference_inner_loop(model, theta, x, y, -alpha, steps, loss_fn)


def inner_no_alpha(model, theta, x, y, alpha, steps, loss_fn):
    return ch05.reference_inner_loop(model, theta, x, y, 1.0, steps, loss_fn)


def inner_mse(model, theta, x, y, alpha, steps, loss_fn):  # ignores loss_fn
    return ch05.reference_inner_loop(model, theta, x, y, alpha, steps, F.mse_loss)


def inner_fixed_steps(model, theta, x, y, alpha, steps, loss_fn):
    return ch05.reference_inner_loop(model, theta, x, y, alpha, 3, loss_fn)


def inner_fixed_alpha(model, theta, x, y, alpha, steps, loss_fn):
    return ch05.reference_inner_loop(model, theta, x, y, 0.1, steps, loss_fn)


def make_inner_not_reset():
    state = {}

    def inner_not_reset(model, theta, x, y, alpha, steps, loss_fn):  # keeps the last task's weights
        w = state.get("w") or {k: v.detach() for k, v in theta.items()}
        w = ch05.reference_inner_loop(model, w, x, y, alpha, steps, loss_fn)
        state["w"] = w
        return w
    return inner_not_reset


def inner_keeps_graph(model, theta, x, y, alpha, steps, loss_fn):  # right values, but never detached
    w = {k: v.detach().requires_grad_() for k, v in theta.items()}
    for _ in range(steps):
        loss = loss_fn(functional_call(model, w, (x,)), y)
        g = torch.autograd.grad(loss, list(w.values()))
        w = {k: v - alpha * gk for (k, v), gk in zip(w.items(), g)}
    return w


def inner_needs_grad(model, theta, x, y, alpha, steps, loss_fn):  # fails when theta needs no grad
    w = dict(theta)
    for _ in range(steps):
        g = torch.autograd.grad(loss_fn(functional_call(model, w, (x,)), y), list(w.values()))
        w = {k: (v - alpha * gk).detach().requires_grad_() for (k, v), gk in zip(w.items(), g)}
    return w


def inner_returns_tuple(model, theta, x, y, alpha, steps, loss_fn):
    return ch05.reference_inner_loop(model, theta, x, y, alpha, steps, loss_fn), steps


def inner_returns_grads(model, theta, x, y, alpha, steps, loss_fn):  # a tuple of tensors, no names
    w = ch05.reference_inner_loop(model, theta, x, y, alpha, steps, loss_fn)
    return tuple(w.values())


def inner_partial(model, theta, x, y, alpha, steps, loss_fn):
    w = {k: v.detach() for k, v in theta.items()}
    raise NotImplementedError("the loop is next")


@pytest.mark.parametrize("fn", [ch05.reference_inner_loop, inner_func_grad, inner_sgd_on_copies, inner_deepcopy,
                                inner_no_grad_steps_on_own_leaves, inner_backward_zeroed])
def test_inner_loop_right_answers_pass(fn):
    assert ch05.inner_loop(fn) is fn
    assert status("5.2") == "right", message("5.2")


@pytest.mark.parametrize("fn, phrase", [
    (inner_one_step, "one step only"),
    (inner_extra_step, "one step too many"),
    (inner_one_short, "one step too few"),
    (inner_optimizer_on_model, "changed the model's own weights"),
    (inner_uses_model_weights, "model's own weights, not from theta"),
    (inner_data_in_place, "changed its input `theta` in place"),
    (inner_grad_at_theta, "gradient at the initial point"),
    (inner_ascent, "*up* the gradient"),
    (inner_no_alpha, "alpha is missing"),
    (inner_mse, "loss_fn is ignored"),
    (inner_fixed_steps, "number of steps is ignored"),
    (inner_fixed_alpha, "alpha is ignored"),
    (make_inner_not_reset(), "not reset between tasks"),
    (inner_keeps_graph, "keeps the autograd graph"),
    (inner_func_grad_from_theta, "the exercise asks for detached tensors"),
    (inner_backward_never_zeroed, ".grad is never zeroed"),
    (inner_sgd_no_zero_grad, ".grad is never zeroed"),
    (inner_sum_of_squares, "returns the same result for loss_fn = F.mse_loss and for loss_fn = a Huber"),
    (inner_needs_grad, "need not require gradients"),
    (inner_returns_tuple, "returned a tuple of 2"),
    (inner_returns_grads, "dict(zip(theta, grads))"),
    (inner_partial, "not the exercise's stub"),
])
def test_inner_loop_mistakes_are_named(fn, phrase):
    assert ch05.inner_loop(fn) is ch05.reference_inner_loop
    assert status("5.2") == "wrong"
    assert phrase in message("5.2"), message("5.2")


# --- 5.3 first-order MAML's direction -----------------------------------------------------------

def fo_good(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):  # right, torch.func
    w = inner_func_grad(model, theta, x_s, y_s, alpha, steps, loss_fn)
    return torch.func.grad(lambda p: loss_fn(functional_call(model, p, (x_q,)), y_q))(w)


def fo_backward(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):  # right, .backward() on leaves
    w = {k: v.detach().clone().requires_grad_()
         for k, v in ch05.reference_inner_loop(model, theta, x_s, y_s, alpha, steps, loss_fn).items()}
    loss_fn(functional_call(model, w, (x_q,)), y_q).backward()
    return {k: v.grad for k, v in w.items()}


def fo_detached_result(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):  # right: graph, then detached
    w = {k: v.detach().requires_grad_()
         for k, v in ch05.reference_inner_loop(model, theta, x_s, y_s, alpha, steps, loss_fn).items()}
    g = torch.autograd.grad(loss_fn(functional_call(model, w, (x_q,)), y_q), list(w.values()), create_graph=True)
    return {k: gk.detach() for k, gk in zip(w, g)}


def fo_create_graph(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):  # right numbers, a graph kept
    w = {k: v.detach().requires_grad_()
         for k, v in ch05.reference_inner_loop(model, theta, x_s, y_s, alpha, steps, loss_fn).items()}
    g = torch.autograd.grad(loss_fn(functional_call(model, w, (x_q,)), y_q), list(w.values()), create_graph=True)
    return dict(zip(w, g))


def fo_query_with_support(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):  # grad on S and Q together
    return ch05.reference_fomaml_direction(model, theta, x_s, y_s, torch.cat([x_s, x_q]), torch.cat([y_s, y_q]),
                                           alpha, steps, loss_fn)


def fo_support_plus_query_loss(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    w = {k: v.detach().requires_grad_()
         for k, v in ch05.reference_inner_loop(model, theta, x_s, y_s, alpha, steps, loss_fn).items()}
    loss = loss_fn(functional_call(model, w, (x_s,)), y_s) + loss_fn(functional_call(model, w, (x_q,)), y_q)
    return dict(zip(w, torch.autograd.grad(loss, list(w.values()))))


def fo_inner_on_both(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, theta, torch.cat([x_s, x_q]), torch.cat([y_s, y_q]), x_q, y_q,
                                           alpha, steps, loss_fn)


def fo_l1(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):  # ignores loss_fn, its own loss
    return ch05.reference_fomaml_direction(model, theta, x_s, y_s, x_q, y_q, alpha, steps, F.l1_loss)


def fo_swapped(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, theta, x_q, y_q, x_s, y_s, alpha, steps, loss_fn)


def fo_support_grad(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, theta, x_s, y_s, x_s, y_s, alpha, steps, loss_fn)


def fo_inner_on_query(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, theta, x_q, y_q, x_q, y_q, alpha, steps, loss_fn)


def fo_at_theta(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, theta, x_s, y_s, x_q, y_q, alpha, 0, loss_fn)


def fo_one_step(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, theta, x_s, y_s, x_q, y_q, alpha, 1, loss_fn)


def fo_extra_step(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, theta, x_s, y_s, x_q, y_q, alpha, steps + 1, loss_fn)


def fo_reptile(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    w = ch05.reference_inner_loop(model, theta, x_s, y_s, alpha, steps, loss_fn)
    return {k: (theta[k].detach() - w[k]) / alpha for k in theta}


def fo_reptile_displacement(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):  # theta' - theta
    w = ch05.reference_inner_loop(model, theta, x_s, y_s, alpha, steps, loss_fn)
    return {k: w[k] - theta[k].detach() for k in theta}


def fo_last_inner_grad(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    w = ch05.reference_inner_loop(model, theta, x_s, y_s, alpha, steps - 1, loss_fn)
    w = {k: v.requires_grad_() for k, v in w.items()}
    return dict(zip(w, torch.autograd.grad(loss_fn(functional_call(model, w, (x_s,)), y_s), list(w.values()))))


def fo_second_order(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):  # full MAML
    th = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
    w = dict(th)
    for _ in range(steps):
        g = torch.autograd.grad(loss_fn(functional_call(model, w, (x_s,)), y_s), list(w.values()), create_graph=True)
        w = {k: v - alpha * gk for (k, v), gk in zip(w.items(), g)}
    return dict(zip(th, torch.autograd.grad(loss_fn(functional_call(model, w, (x_q,)), y_q), list(th.values()))))


def fo_negated(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return {k: -v for k, v in ch05.reference_fomaml_direction(model, theta, x_s, y_s, x_q, y_q, alpha, steps,
                                                              loss_fn).items()}


def fo_mse(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, theta, x_s, y_s, x_q, y_q, alpha, steps, F.mse_loss)


def fo_fixed_alpha(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, theta, x_s, y_s, x_q, y_q, 0.1, steps, loss_fn)


def fo_model_weights(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, dict(model.named_parameters()), x_s, y_s, x_q, y_q, alpha,
                                           steps, loss_fn)


def fo_optimizer_on_model(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    w = inner_optimizer_on_model(model, theta, x_s, y_s, alpha, steps, loss_fn)
    return ch05.reference_fomaml_direction(model, w, x_s, y_s, x_q, y_q, alpha, 0, loss_fn)


def make_fo_not_reset():
    inner = make_inner_not_reset()

    def fo_not_reset(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
        return ch05.reference_fomaml_direction(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn, inner=inner)
    return fo_not_reset


def fo_grad_tuple(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):  # forgets to zip the names back
    return tuple(ch05.reference_fomaml_direction(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn).values())


def fo_partial(model, theta, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    w = inner_func_grad(model, theta, x_s, y_s, alpha, steps, loss_fn)
    raise NotImplementedError


@pytest.mark.parametrize("fn", [ch05.reference_fomaml_direction, fo_good, fo_backward, fo_detached_result])
def test_fomaml_right_answers_pass(fn):
    assert ch05.fomaml_direction(fn) is fn
    assert status("5.3") == "right", message("5.3")


@pytest.mark.parametrize("fn, phrase", [
    (fo_swapped, "swapped"),
    (fo_support_grad, "*support* loss"),
    (fo_inner_on_query, "inner loop ran on the query set"),
    (fo_at_theta, "at the initial point theta"),
    (fo_one_step, "one inner step"),
    (fo_extra_step, "one step too many"),
    (fo_reptile, "Reptile's direction (theta - theta') / alpha"),
    (fo_reptile_displacement, "Reptile's displacement theta' - theta"),
    (fo_last_inner_grad, "gradient of the last inner step"),
    (fo_second_order, "MAML's second-order gradient"),
    (fo_negated, "sign is flipped"),
    (fo_mse, "loss_fn is ignored"),
    (fo_l1, "returns the same result for loss_fn = F.mse_loss and for loss_fn = a Huber"),
    (fo_create_graph, "the exercise asks for detached tensors"),
    (fo_query_with_support, "support and query together (torch.cat"),
    (fo_support_plus_query_loss, "support loss plus the query loss"),
    (fo_inner_on_both, "inner loop ran on support and query together"),
    (fo_fixed_alpha, "alpha is ignored"),
    (fo_model_weights, "model's own weights, not from theta"),
    (fo_optimizer_on_model, "changed the model's own weights"),
    (make_fo_not_reset(), "not reset between tasks"),
    (fo_grad_tuple, "returned a tuple of"),
    (fo_partial, "not the exercise's stub"),
])
def test_fomaml_mistakes_are_named(fn, phrase):
    assert ch05.fomaml_direction(fn) is ch05.reference_fomaml_direction
    assert status("5.3") == "wrong"
    assert phrase in message("5.3"), message("5.3")


# --- protocol -----------------------------------------------------------------------------------

@pytest.mark.parametrize("check, number, ref", [
    (ch05.reptile_update, "5.1", ch05.reference_reptile_update),
    (ch05.inner_loop, "5.2", ch05.reference_inner_loop),
    (ch05.fomaml_direction, "5.3", ch05.reference_fomaml_direction),
])
def test_stubs_are_not_attempted_and_strict_mode_raises(check, number, ref, monkeypatch):
    assert check(stub) is ref
    assert status(number) == "not attempted"
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError):
        check(stub)
    with pytest.raises(checks.ExerciseError):
        check({"5.1": update_sum, "5.2": inner_one_step, "5.3": fo_swapped}[number])


def test_report_lists_every_exercise(capsys):
    ch05.reptile_update(ch05.reference_reptile_update)
    text = checks.report(ch05.EXERCISES)
    assert "Exercise 5.1" in text and "Exercise 5.3" in text and "1 of 3" in text
