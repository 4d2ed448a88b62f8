"""Chapter 03's checks: the references pass; each classic MAML mistake is named; stubs are 'not attempted'."""
import warnings

import pytest
import torch
from torch.func import functional_call

from course_utils import checks
from course_utils.chapter_checks import ch03
from conftest import message, status, stub  # shared check-test helpers




def run(check, fn):
    """Run a check; return the function it hands back."""
    return check(fn)


# --- 3.1 one inner step -------------------------------------------------------------------------

def inner_autograd(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return {k: p - alpha * gk for (k, p), gk in zip(params.items(), g)}


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


def inner_ascent(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    loss = loss_fn(functional_call(model, params, (x_s,)), y_s)
    g = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    return {k: p + alpha * gk for (k, p), gk in zip(params.items(), g)}


def inner_always_second_order(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    return inner_autograd(model, params, x_s, y_s, alpha, loss_fn, True)


def inner_list(model, params, x_s, y_s, alpha, loss_fn, create_graph=True):
    return list(inner_autograd(model, params, x_s, y_s, alpha, loss_fn, create_graph).values())


def test_inner_step_reference_and_a_good_answer_pass():
    assert run(ch03.inner_step, ch03.reference_inner_step) is ch03.reference_inner_step
    assert status("3.1") == "right"
    assert run(ch03.inner_step, inner_autograd) is inner_autograd


@pytest.mark.parametrize("fn, phrase", [
    (inner_no_create_graph, "create_graph"),
    (inner_detached, "does not carry gradients"),
    (inner_detached_regrad, "does not depend on theta"),
    (inner_detached_theta_only, "p.detach() - alpha * g"),
    (inner_ascent, "moves up the gradient"),
    (inner_always_second_order, "create_graph=False"),
    (inner_list, "should be a dict"),
])
def test_inner_step_mistakes_are_named(fn, phrase):
    assert run(ch03.inner_step, fn) is ch03.reference_inner_step
    assert status("3.1") == "wrong"
    assert phrase in message("3.1")


def test_detached_theta_is_not_blamed_on_create_graph():
    run(ch03.inner_step, inner_detached_theta_only)
    msg = message("3.1")
    assert "-alpha H instead of I - alpha H" in msg
    assert "create_graph" not in msg  # it was passed: no hint about it


# --- 3.2 the meta-gradient by hand -------------------------------------------------------------

def linreg_first_order(theta, x_s, y_s, x_q, y_q, alpha):
    ps = torch.stack([x_s, torch.ones_like(x_s)], 1)
    pq = torch.stack([x_q, torch.ones_like(x_q)], 1)
    t1 = theta - alpha * 2 / len(x_s) * ps.T @ (ps @ theta - y_s)
    return 2 / len(x_q) * pq.T @ (pq @ t1 - y_q)


def linreg_swapped(theta, x_s, y_s, x_q, y_q, alpha):
    return ch03.reference_linreg_meta_gradient(theta, x_q, y_q, x_s, y_s, alpha)


def linreg_plus(theta, x_s, y_s, x_q, y_q, alpha):
    ps = torch.stack([x_s, torch.ones_like(x_s)], 1)
    h = 2 / len(x_s) * ps.T @ ps
    return (torch.eye(2, dtype=theta.dtype) + alpha * h) @ linreg_first_order(theta, x_s, y_s, x_q, y_q, alpha)


def linreg_autograd(theta, x_s, y_s, x_q, y_q, alpha):
    t = theta.clone().requires_grad_()
    loss_s = ((t[0] * x_s + t[1] - y_s) ** 2).mean()
    g, = torch.autograd.grad(loss_s, t, create_graph=True)
    t1 = t - alpha * g
    loss_q = ((t1[0] * x_q + t1[1] - y_q) ** 2).mean()
    return torch.autograd.grad(loss_q, t)[0]


def test_linreg_reference_and_autograd_pass():
    run(ch03.linreg_meta_gradient, ch03.reference_linreg_meta_gradient)
    assert status("3.2") == "right"
    run(ch03.linreg_meta_gradient, linreg_autograd)
    assert status("3.2") == "right"


@pytest.mark.parametrize("fn, phrase", [
    (linreg_first_order, "Hessian term (I - alpha H_S) is missing"),
    (linreg_swapped, "swapped"),
    (linreg_plus, "wrong sign"),
    (lambda *a: ch03.reference_linreg_meta_gradient(*a)[None], "shape (1, 2)"),
])
def test_linreg_mistakes_are_named(fn, phrase):
    run(ch03.linreg_meta_gradient, fn)
    assert status("3.2") == "wrong" and phrase in message("3.2")


# --- 3.3 the outer step ---------------------------------------------------------------------------

def make_step(inner_kwargs=None, swap=False, zero_grad=True, step_adapted=False, mean=True, detach=False):
    """A maml_step with one deliberate mistake."""
    def maml_step(model, meta_opt, tasks, alpha, steps, loss_fn):
        x_s, y_s, x_q, y_q = tasks
        if swap:
            x_s, y_s, x_q, y_q = x_q, y_q, x_s, y_s
        if zero_grad:
            meta_opt.zero_grad()
        theta = dict(model.named_parameters())
        total = 0.0
        for i in range(x_s.shape[0]):
            adapted = theta if not detach else {k: v.detach() for k, v in theta.items()}
            if detach:
                adapted = {k: v.requires_grad_() for k, v in adapted.items()}
            for _ in range(steps):
                adapted = ch03.reference_inner_step(model, adapted, x_s[i], y_s[i], alpha, loss_fn,
                                                    **(inner_kwargs or {"create_graph": True}))
            total = total + loss_fn(functional_call(model, adapted, (x_q[i],)), y_q[i])
        loss = total / x_s.shape[0] if mean else total
        loss.backward()
        if step_adapted:
            with torch.no_grad():
                for p, a in zip(model.parameters(), adapted.values()):
                    p.copy_(a)
        meta_opt.step()
        return (total / x_s.shape[0]).item()
    return maml_step


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


def test_maml_step_reference_passes():
    run(ch03.maml_step, ch03.reference_maml_step)
    assert status("3.3") == "right"
    run(ch03.maml_step, make_step())
    assert status("3.3") == "right"


@pytest.mark.parametrize("fn, phrase", [
    (make_step(inner_kwargs={"create_graph": False}), "create_graph=True"),
    (make_step(swap=True), "support and query are swapped"),
    (make_step(step_adapted=True), "adapted to task 1 (then stepped)"),
    (make_step(zero_grad=False), "zero_grad"),
    (make_step(mean=False), "summed"),
    (make_step(detach=True), "did not change"),
    (step_detach_no_regrad, "inner step detaches"),
])
def test_maml_step_mistakes_are_named(fn, phrase):
    run(ch03.maml_step, fn)
    assert status("3.3") == "wrong" and phrase in message("3.3"), message("3.3")


def step_returns_tensor(model, meta_opt, tasks, alpha, steps, loss_fn):
    x_s, y_s, x_q, y_q = tasks
    meta_opt.zero_grad()
    theta = dict(model.named_parameters())
    total = 0.0
    for i in range(x_s.shape[0]):
        adapted = theta
        for _ in range(steps):
            adapted = ch03.reference_inner_step(model, adapted, x_s[i], y_s[i], alpha, loss_fn)
        total = total + loss_fn(functional_call(model, adapted, (x_q[i],)), y_q[i])
    meta_loss = total / x_s.shape[0]
    meta_loss.backward()
    meta_opt.step()
    return meta_loss  # a tensor with a graph, not meta_loss.item()


def test_maml_step_returning_a_tensor_is_named_without_torch_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(ch03.maml_step, step_returns_tensor)
    assert status("3.3") == "wrong" and "meta_loss.item() (a Python float)" in message("3.3"), message("3.3")
    assert not [w for w in caught if "ch03" in w.filename or "checks" in w.filename], \
        [str(w.message) for w in caught]


# --- 3.4 first order ------------------------------------------------------------------------------

def fo_second_order(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    a = params
    for _ in range(steps):
        a = ch03.reference_inner_step(model, a, x_s, y_s, alpha, loss_fn, create_graph=True)
    loss = loss_fn(functional_call(model, a, (x_q,)), y_q)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def fo_at_theta(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    loss = loss_fn(functional_call(model, params, (x_q,)), y_q)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def fo_swapped(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    return ch03.reference_fomaml_gradient(model, params, x_q, y_q, x_s, y_s, alpha, steps, loss_fn)


def fo_via_graph(model, params, x_s, y_s, x_q, y_q, alpha, steps, loss_fn):
    """Also right: keep theta' attached (create_graph=False) and differentiate w.r.t. theta."""
    a = params
    for _ in range(steps):
        a = ch03.reference_inner_step(model, a, x_s, y_s, alpha, loss_fn, create_graph=False)
    loss = loss_fn(functional_call(model, a, (x_q,)), y_q)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def test_fomaml_reference_and_alternative_pass():
    run(ch03.fomaml_gradient, ch03.reference_fomaml_gradient)
    assert status("3.4") == "right"
    run(ch03.fomaml_gradient, fo_via_graph)
    assert status("3.4") == "right"


@pytest.mark.parametrize("fn, phrase", [
    (fo_second_order, "second-order"),
    (fo_at_theta, "without adapting first"),
    (fo_swapped, "swapped"),
])
def test_fomaml_mistakes_are_named(fn, phrase):
    run(ch03.fomaml_gradient, fn)
    assert status("3.4") == "wrong" and phrase in message("3.4")


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
