"""Chapter 05's checks: the references pass; each classic Reptile mistake is named; stubs are 'not attempted'."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from course_utils import checks
from course_utils.chapter_checks import ch05
from conftest import message, status, stub  # shared check-test helpers




# --- 5.1 the outer update ---------------------------------------------------------------------

def update_loop(phi, adapted, epsilon):  # a correct answer written differently
    out = {}
    for k in phi:
        diff = torch.stack([w[k] - phi[k] for w in adapted]).mean(0)
        out[k] = phi[k] + epsilon * diff
    return out


def update_wrong_sign(phi, adapted, epsilon):
    return {k: phi[k] - epsilon * sum(w[k] - phi[k] for w in adapted) / len(adapted) for k in phi}


def update_sum(phi, adapted, epsilon):
    return {k: phi[k] + epsilon * sum(w[k] - phi[k] for w in adapted) for k in phi}


def update_no_eps(phi, adapted, epsilon):
    return {k: sum(w[k] for w in adapted) / len(adapted) for k in phi}


def update_last_task(phi, adapted, epsilon):
    return {k: phi[k] + epsilon * (adapted[-1][k] - phi[k]) for k in phi}


def update_in_place(phi, adapted, epsilon):
    for k in phi:
        phi[k] += epsilon * sum(w[k] - phi[k] for w in adapted) / len(adapted)
    return phi


def update_list(phi, adapted, epsilon):
    return list(ch05.reference_reptile_update(phi, adapted, epsilon).values())


def test_update_reference_and_a_good_answer_pass():
    assert ch05.reptile_update(ch05.reference_reptile_update) is ch05.reference_reptile_update
    assert status("5.1") == "right"
    assert ch05.reptile_update(update_loop) is update_loop
    assert status("5.1") == "right"


@pytest.mark.parametrize("fn, phrase", [
    (update_wrong_sign, "away"),
    (update_sum, "summed"),
    (update_no_eps, "eps is missing"),
    (update_last_task, "last task"),
    (update_in_place, "in place"),
    (update_list, "should be a dict"),
])
def test_update_mistakes_are_named(fn, phrase):
    assert ch05.reptile_update(fn) is ch05.reference_reptile_update
    assert status("5.1") == "wrong"
    assert phrase in message("5.1"), message("5.1")


# --- 5.2 the inner loop -------------------------------------------------------------------------

def inner_func_grad(model, phi, x, y, alpha, steps, loss_fn):  # correct, with torch.func.grad
    w = {k: v.detach() for k, v in phi.items()}
    for _ in range(steps):
        g = torch.func.grad(lambda p: loss_fn(functional_call(model, p, (x,)), y))(w)
        w = {k: w[k] - alpha * g[k] for k in w}
    return w


def inner_one_step(model, phi, x, y, alpha, steps, loss_fn):
    return ch05.reference_inner_loop(model, phi, x, y, alpha, 1, loss_fn)


def inner_optimizer_on_model(model, phi, x, y, alpha, steps, loss_fn):  # steps phi itself
    opt = torch.optim.SGD(model.parameters(), lr=alpha)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def inner_data_in_place(model, phi, x, y, alpha, steps, loss_fn):
    for _ in range(steps):
        loss = loss_fn(functional_call(model, phi, (x,)), y)
        g = torch.autograd.grad(loss, list(phi.values()))
        for p, gk in zip(phi.values(), g):
            p.data -= alpha * gk
    return {k: v.detach().clone() for k, v in phi.items()}


def inner_autograd_in_place(model, phi, x, y, alpha, steps, loss_fn):
    loss = loss_fn(functional_call(model, phi, (x,)), y)
    g = torch.autograd.grad(loss, list(phi.values()))
    for p, gk in zip(phi.values(), g):
        p -= alpha * gk  # autograd refuses: a leaf that requires grad
    return phi


def inner_grad_at_phi(model, phi, x, y, alpha, steps, loss_fn):
    leaves = {k: v.detach().requires_grad_() for k, v in phi.items()}
    g = torch.autograd.grad(loss_fn(functional_call(model, leaves, (x,)), y), list(leaves.values()))
    w = {k: v.detach() for k, v in phi.items()}
    for _ in range(steps):
        w = {k: w[k] - alpha * gk for k, gk in zip(w, g)}
    return w


def inner_ascent(model, phi, x, y, alpha, steps, loss_fn):
    return ch05.reference_inner_loop(model, phi, x, y, -alpha, steps, loss_fn)


def inner_one_short(model, phi, x, y, alpha, steps, loss_fn):  # range(steps - 1) / range(1, steps)
    return ch05.reference_inner_loop(model, phi, x, y, alpha, steps - 1, loss_fn)


def inner_keeps_graph(model, phi, x, y, alpha, steps, loss_fn):  # right values, but never detached
    w = {k: v.detach().requires_grad_() for k, v in phi.items()}
    for _ in range(steps):
        loss = loss_fn(functional_call(model, w, (x,)), y)
        g = torch.autograd.grad(loss, list(w.values()))
        w = {k: v - alpha * gk for (k, v), gk in zip(w.items(), g)}
    return w


def test_inner_loop_reference_and_a_good_answer_pass():
    assert ch05.inner_loop(ch05.reference_inner_loop) is ch05.reference_inner_loop
    assert status("5.2") == "right"
    assert ch05.inner_loop(inner_func_grad) is inner_func_grad
    assert status("5.2") == "right"


@pytest.mark.parametrize("fn, phrase", [
    (inner_one_step, "one step only"),
    (inner_optimizer_on_model, "changed phi in place"),
    (inner_data_in_place, "changed its input `phi` in place"),
    (inner_autograd_in_place, "changed its input `phi` in place"),
    (inner_grad_at_phi, "gradient at phi"),
    (inner_ascent, "*up* the gradient"),
    (inner_one_short, "one step too few"),
    (inner_keeps_graph, "keeps the autograd graph"),
])
def test_inner_loop_mistakes_are_named(fn, phrase):
    assert ch05.inner_loop(fn) is ch05.reference_inner_loop
    assert status("5.2") == "wrong"
    assert phrase in message("5.2"), message("5.2")


# --- 5.3 first-order MAML's direction -----------------------------------------------------------

def fo_good(model, phi, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    w = inner_func_grad(model, phi, x_s, y_s, alpha, steps, loss_fn)
    return torch.func.grad(lambda p: loss_fn(functional_call(model, p, (x_q,)), y_q))(w)


def fo_swapped(model, phi, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, phi, x_q, y_q, x_s, y_s, alpha, steps, loss_fn)


def fo_support_grad(model, phi, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, phi, x_s, y_s, x_s, y_s, alpha, steps, loss_fn)


def fo_at_phi(model, phi, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, phi, x_s, y_s, x_q, y_q, alpha, 0, loss_fn)


def fo_one_step(model, phi, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch05.reference_fomaml_direction(model, phi, x_s, y_s, x_q, y_q, alpha, 1, loss_fn)


def fo_reptile(model, phi, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    w = ch05.reference_inner_loop(model, phi, x_s, y_s, alpha, steps, loss_fn)
    return {k: (phi[k].detach() - w[k]) / alpha for k in phi}


def test_fomaml_reference_and_a_good_answer_pass():
    assert ch05.fomaml_direction(ch05.reference_fomaml_direction) is ch05.reference_fomaml_direction
    assert status("5.3") == "right"
    assert ch05.fomaml_direction(fo_good) is fo_good
    assert status("5.3") == "right"


@pytest.mark.parametrize("fn, phrase", [
    (fo_swapped, "swapped"),
    (fo_support_grad, "*support* loss"),
    (fo_at_phi, "at phi"),
    (fo_one_step, "one inner step"),
    (fo_reptile, "Reptile's direction"),
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
