"""Chapter 04's checks: references pass; each classic Meta-learner-LSTM mistake is named; stubs are 'not attempted'."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_utils import checks
from course_utils.chapter_checks import ch04
from course_utils.meta_lstm import State, cell_update, preprocess
from conftest import message, status, stub  # shared check-test helpers




# --- 4.1 the cell-state update ----------------------------------------------------------------

def cu_plus(c, f, i, g):
    return f * c + i * g


def cu_forget_on_grad(c, f, i, g):
    return c - f * i * g


def cu_swapped(c, f, i, g):
    return i * c - f * g


def cu_no_forget(c, f, i, g):
    return c - i * g


def cu_detached(c, f, i, g):
    return (f * c - i * g).detach()


def cu_forget_detached(c, f, i, g):
    return f.detach() * c - i * g


def cu_input_detached(c, f, i, g):
    return f * c - i.detach() * g


def cu_decay_term_detached(c, f, i, g):
    return (f * c).detach() - i * g


def cu_shape(c, f, i, g):
    return (f * c - i * g)[:, None]


def test_cell_update_reference_and_a_good_answer_pass():
    assert ch04.cell_update(ch04.reference_cell_update) is ch04.reference_cell_update
    assert status("4.1") == "right"
    good = lambda c, f, i, g: f * c + i * (-g)
    assert ch04.cell_update(good) is good


@pytest.mark.parametrize("fn, phrase", [
    (cu_plus, "gradient is added"),
    (cu_forget_on_grad, "forget gate multiplies the gradient term"),
    (cu_swapped, "gates are swapped"),
    (cu_no_forget, "forget gate is missing"),
    (cu_detached, "does not carry gradients"),
    (cu_forget_detached, "no gradient reaches the forget gate f"),
    (cu_input_detached, "no gradient reaches the input gate i"),
    (cu_decay_term_detached, "no gradient reaches the forget gate f and the previous parameters"),
    (cu_shape, "shape"),
])
def test_cell_update_mistakes_are_named(fn, phrase):
    assert ch04.cell_update(fn) is ch04.reference_cell_update
    assert status("4.1") == "wrong"
    assert phrase in message("4.1")


# --- 4.2 preprocessing ------------------------------------------------------------------------

def pre_swapped(x, p=10.0):
    big = x.abs() >= math.exp(-p)
    first = torch.where(big, torch.full_like(x, -1.0), torch.log(x.abs().clamp_min(1e-300)) / p)
    second = torch.where(big, math.exp(p) * x, torch.sign(x))
    return torch.stack([first, second], -1)


def pre_no_sign_channel(x, p=10.0):
    big = x.abs() >= math.exp(-p)
    return torch.where(big, torch.log(x.abs().clamp_min(math.exp(-p))) / p, -torch.ones_like(x))


def pre_sign_ones(x, p=10.0):
    big = x.abs() >= math.exp(-p)
    first = torch.where(big, torch.log(x.abs().clamp_min(math.exp(-p))) / p, torch.full_like(x, -1.0))
    second = torch.where(big, torch.ones_like(x), math.exp(p) * x)
    return torch.stack([first, second], -1)


def pre_nan_at_zero(x, p=10.0):
    big = (x.abs() >= math.exp(-p)).to(x.dtype)
    first = big * torch.log(x.abs()) / p + (1 - big) * -1.0      # 0 * -inf = nan at x = 0
    second = big * torch.sign(x) + (1 - big) * math.exp(p) * x
    return torch.stack([first, second], -1)


def pre_hardcoded_p(x, p=10.0):
    return preprocess(x, 10.0)


def pre_order(x, p=10.0):
    return preprocess(x, p).flip(-1)


def pre_float32(x, p=10.0):
    return preprocess(x.float(), p)


def test_preprocess_reference_and_a_good_answer_pass():
    assert ch04.preprocess(ch04.reference_preprocess) is ch04.reference_preprocess
    assert status("4.2") == "right"

    def good(x, p=10.0):
        small = x.abs() < math.exp(-p)
        safe = torch.where(small, torch.ones_like(x), x.abs())
        return torch.stack([torch.where(small, -torch.ones_like(x), safe.log() / p),
                            torch.where(small, x * math.exp(p), x.sign())], dim=-1)
    assert ch04.preprocess(good) is good


@pytest.mark.parametrize("fn, phrase", [
    (pre_swapped, "branches are swapped"),
    (pre_no_sign_channel, "shape of x"),
    (pre_sign_ones, "sign channel is missing"),
    (pre_nan_at_zero, "NaN"),
    (pre_hardcoded_p, "p is not used"),
    (pre_order, "wrong order"),
    (pre_float32, "dtype"),
])
def test_preprocess_mistakes_are_named(fn, phrase):
    assert ch04.preprocess(fn) is ch04.reference_preprocess
    assert status("4.2") == "wrong"
    assert phrase in message("4.2")


# --- 4.3 one meta-learner step ----------------------------------------------------------------

def _inputs(meta, grad, loss):
    return torch.cat([preprocess(grad, meta.p), preprocess(loss.reshape(1), meta.p).expand(grad.numel(), 2)], 1)


def step_good(meta, theta, state, x_s, y_s):
    leaf = theta.detach().requires_grad_()
    loss = F.cross_entropy(meta.learner_forward(leaf, x_s), y_s)
    (grad,) = torch.autograd.grad(loss, leaf)
    grad, loss = grad.detach(), loss.detach()
    h, c = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_second_order(meta, theta, state, x_s, y_s):
    loss = F.cross_entropy(meta.learner_forward(theta, x_s), y_s)
    (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
    h, c = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_loss_not_detached(meta, theta, state, x_s, y_s):
    loss = F.cross_entropy(meta.learner_forward(theta, x_s), y_s)
    (grad,) = torch.autograd.grad(loss, theta, retain_graph=True)
    h, c = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_loss_graph_freed(meta, theta, state, x_s, y_s):
    loss = F.cross_entropy(meta.learner_forward(theta, x_s), y_s)
    (grad,) = torch.autograd.grad(loss, theta)  # frees the graph the LSTM input still points into
    h, c = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_theta_detached(meta, theta, state, x_s, y_s):
    return step_good(meta, theta.detach(), state, x_s, y_s)


def step_plus(meta, theta, state, x_s, y_s):
    new, st, loss = step_good(meta, theta, state, x_s, y_s)
    _, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    return new + 2 * st.i * grad, st, loss


def step_prev_gates_swapped(meta, theta, state, x_s, y_s):
    leaf = theta.detach().requires_grad_()
    loss = F.cross_entropy(meta.learner_forward(leaf, x_s), y_s)
    (grad,) = torch.autograd.grad(loss, leaf)
    grad, loss = grad.detach(), loss.detach()
    h, c = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.i, state.f)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_half_fix(meta, theta, state, x_s, y_s):
    loss = F.cross_entropy(meta.learner_forward(theta, x_s), y_s)
    (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
    h, c = meta.lstm(_inputs(meta, grad.detach(), loss.detach()), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss.detach()


def step_columns_swapped(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    x = torch.cat([preprocess(loss.reshape(1), meta.p).expand(grad.numel(), 2), preprocess(grad, meta.p)], 1)
    h, c = meta.lstm(x, (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_gates_on_leaf(meta, theta, state, x_s, y_s):
    leaf = theta.detach().requires_grad_()
    loss = F.cross_entropy(meta.learner_forward(leaf, x_s), y_s)
    (grad,) = torch.autograd.grad(loss, leaf)
    grad, loss = grad.detach(), loss.detach()
    h, c = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    f, i = meta.gates(h, leaf, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_h_c_swapped(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    c, h = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_h_c_swapped_in_state(meta, theta, state, x_s, y_s):
    new, st, loss = step_good(meta, theta, state, x_s, y_s)
    return new, State(st.c, st.h, st.f, st.i), loss


def step_gate_bias_off(meta, theta, state, x_s, y_s):
    new, st, loss = step_good(meta, theta, state, x_s, y_s)
    return new, State(st.h, st.c, st.f * 0.5, st.i), loss


def step_raw_inputs(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    x = torch.stack([grad, loss.expand_as(grad)], 1)  # not preprocessed: 2 features, the LSTM wants 4
    h, c = meta.lstm(x, (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def test_step_names_the_wrong_outputs_and_explains_the_jacobian():
    ch04.meta_learner_step(step_prev_gates_swapped)
    assert "f, i and theta_t are wrong (h and c right)" in message("4.3")
    checks.reset()
    ch04.meta_learner_step(step_gates_on_leaf)
    assert "how theta_t changes when theta_{t-1} changes" in message("4.3")
    checks.reset()
    ch04.meta_learner_step(step_plus)
    assert "theta_t is wrong (h, c, f and i right)" in message("4.3")


def test_step_reference_and_a_good_answer_pass():
    assert ch04.meta_learner_step(ch04.reference_meta_learner_step) is ch04.reference_meta_learner_step
    assert status("4.3") == "right"
    assert ch04.meta_learner_step(step_good) is step_good


@pytest.mark.parametrize("fn, phrase", [
    (step_second_order, "second-order path"),
    (step_loss_not_detached, "without .detach()"),
    (step_loss_graph_freed, "detach the loss and the gradient"),
    (step_theta_detached, "does not depend on theta_{t-1}"),
    (step_plus, "adds the gradient"),
    (step_prev_gates_swapped, "wrong previous gate"),
    (step_raw_inputs, "raised RuntimeError"),
    (step_half_fix, "half-fix"),
    (step_columns_swapped, "columns are swapped"),
    (step_gates_on_leaf, "gates read the detached copy"),
    (step_h_c_swapped, "h and c are swapped: nn.LSTMCell returns"),
    (step_h_c_swapped_in_state, "swapped in the returned State"),
    (step_gate_bias_off, "f is wrong (h, c, i and theta_t right)"),
])
def test_step_mistakes_are_named(fn, phrase):
    assert ch04.meta_learner_step(fn) is ch04.reference_meta_learner_step
    assert status("4.3") == "wrong"
    assert phrase in message("4.3")


# --- protocol -----------------------------------------------------------------------------------

@pytest.mark.parametrize("check, number", [(ch04.cell_update, "4.1"), (ch04.preprocess, "4.2"),
                                           (ch04.meta_learner_step, "4.3")])
def test_stubs_are_not_attempted(check, number):
    check(stub)
    assert status(number) == "not attempted"


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError):
        ch04.cell_update(cu_plus)
    with pytest.raises(checks.ExerciseError):
        ch04.preprocess(stub)
    assert ch04.meta_learner_step(step_good) is step_good


def test_exercise_list():
    assert ch04.EXERCISES == ["4.1", "4.2", "4.3"]
