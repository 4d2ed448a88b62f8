"""Chapter 04's checks: references and other valid styles pass; each classic Meta-learner-LSTM mistake is
named; inputs changed in place, wrong return types and partial answers get their own messages; stubs
are 'not attempted'."""
import math
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F

from course_utils import checks
from course_utils.chapter_checks import ch04
from course_utils.meta_lstm import State, cell_update, meta_learner_step, preprocess
from conftest import message, status, stub  # shared check-test helpers


def wrong(check, fn, number):
    assert check(fn) is not fn
    assert status(number) == "wrong", message(number)
    return message(number)


# --- 4.1 the cell-state update ----------------------------------------------------------------

def cu_plus(c, f, i, g):
    return f * c + i * g


def cu_forget_on_grad(c, f, i, g):
    return c - f * i * g


def cu_swapped(c, f, i, g):
    return i * c - f * g


def cu_swapped_plus(c, f, i, g):
    return i * c + f * g


def cu_no_forget(c, f, i, g):
    return c - i * g


def cu_no_previous(c, f, i, g):
    return -i * g


def cu_one_minus_f(c, f, i, g):
    return (1 - f) * c - i * g


def cu_sigmoid_again(c, f, i, g):
    return torch.sigmoid(f) * c - torch.sigmoid(i) * g


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


def cu_tuple(c, f, i, g):
    return f * c, -i * g


def cu_list(c, f, i, g):
    return [f * c - i * g]


def cu_in_place(c, f, i, g):
    c.mul_(f).sub_(i * g)
    return c


def cu_partial(c, f, i, g):
    decay = f * c
    raise NotImplementedError("the gradient term is still to do")


def cu_float32(c, f, i, g):
    return (f * c - i * g).float()


def cu_hard_coded_p(c, f, i, g):
    return f * c - i * g[:9] if len(c) == 9 else f * c - 0.1 * g   # fits the first probe only


def cu_cpu_tensor(c, f, i, g):
    out = torch.zeros(c.shape[0], dtype=c.dtype)
    return out + f * c - i * g


def test_cell_update_reference_and_good_answers_pass():
    assert ch04.cell_update(ch04.reference_cell_update) is ch04.reference_cell_update
    assert status("4.1") == "right"
    for good in (lambda c, f, i, g: f * c + i * (-g),
                 lambda c, f, i, g: torch.addcmul(f * c, i, g, value=-1.0),
                 lambda c, f, i, g: c.mul(f).sub(i.mul(g)),
                 lambda c, f, i, g: torch.stack([f[k] * c[k] - i[k] * g[k] for k in range(len(c))])):
        assert ch04.cell_update(good) is good, message("4.1")


@pytest.mark.parametrize("fn, phrase", [
    (cu_plus, "gradient is added"),
    (cu_forget_on_grad, "forget gate multiplies the gradient term"),
    (cu_swapped, "forget and input gates are swapped"),
    (cu_swapped_plus, "swapped and the gradient is added"),
    (cu_no_forget, "forget gate is missing"),
    (cu_no_previous, "previous parameters c_{t-1} are missing"),
    (cu_one_minus_f, "1 - f"),
    (cu_sigmoid_again, "squashed by a sigmoid again"),
    (cu_detached, "does not carry gradients"),
    (cu_forget_detached, "no gradient reaches the forget gate f"),
    (cu_input_detached, "no gradient reaches the input gate i"),
    (cu_decay_term_detached, "no gradient reaches the forget gate f and the previous parameters"),
    (cu_shape, "shape"),
    (cu_tuple, "returned a tuple of 2"),
    (cu_list, "not a list of tensors"),
    (cu_in_place, "changed its input `c` in place"),
    (cu_partial, "not the exercise's stub"),
    (cu_float32, "compute in float64"),
    (cu_hard_coded_p, "second set of inputs"),
    (cu_cpu_tensor, "makes a tensor on the CPU"),
])
def test_cell_update_mistakes_are_named(fn, phrase):
    assert phrase in wrong(ch04.cell_update, fn, "4.1")


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


def _pre(x, p, thr=None, log=None, small=None):
    thr = math.exp(-p) if thr is None else thr
    big = x.abs() >= thr
    logs = torch.log(x.abs().clamp_min(1e-300)) / p if log is None else log
    first = torch.where(big, logs, torch.full_like(x, -1.0))
    second = torch.where(big, torch.sign(x), math.exp(p) * x if small is None else small)
    return torch.stack([first, second], dim=-1)


def pre_threshold_e_p(x, p=10.0):
    return _pre(x, p, thr=math.exp(p))


def pre_threshold_10(x, p=10.0):
    return _pre(x, p, thr=10.0 ** -p)


def pre_log_of_x(x, p=10.0):
    return _pre(x, p, log=torch.log(x) / p)


def pre_log_of_clamped_x(x, p=10.0):
    return _pre(x, p, log=torch.log(x.clamp_min(math.exp(-p))) / p)


def pre_small_divided(x, p=10.0):
    return _pre(x, p, small=x / math.exp(p))


def pre_small_first_zero(x, p=10.0):
    out = _pre(x, p)
    return torch.stack([torch.where(x.abs() >= math.exp(-p), out[..., 0], torch.zeros_like(x)), out[..., 1]], -1)


def pre_log10(x, p=10.0):
    return _pre(x, p, log=torch.log10(x.abs().clamp_min(1e-300)) / p)


def pre_hardcoded_p(x, p=10.0):
    return preprocess(x, 10.0)


def pre_p_threshold_only(x, p=10.0):
    big = x.abs() >= math.exp(-p)
    first = torch.where(big, torch.log(x.abs().clamp_min(1e-300)) / 10.0, torch.full_like(x, -1.0))
    second = torch.where(big, torch.sign(x), math.exp(10.0) * x)
    return torch.stack([first, second], -1)


def pre_p_scales_only(x, p=10.0):
    return _pre(x, p, thr=math.exp(-10.0))


def pre_wrong_default(x, p=2.0):
    return preprocess(x, p)


def pre_no_default(x, p):
    return preprocess(x, p)


def pre_order(x, p=10.0):
    return preprocess(x, p).flip(-1)


def pre_dim0(x, p=10.0):
    return preprocess(x, p).movedim(-1, 0)


def pre_tuple(x, p=10.0):
    out = preprocess(x, p)
    return out[..., 0], out[..., 1]


def pre_float32(x, p=10.0):
    return preprocess(x.float(), p)


def pre_float64_constant(x, p=10.0):
    big = x.abs() >= math.exp(-p)
    minus_one = torch.full(x.shape, -1.0, dtype=torch.float64)
    first = torch.where(big, torch.log(x.abs().clamp_min(math.exp(-p))) / p, minus_one)
    second = torch.where(big, torch.sign(x), math.exp(p) * x).to(first.dtype)
    return torch.stack([first, second], -1)


def pre_in_place(x, p=10.0):
    sign = torch.sign(x)
    a = x.abs_()                     # changes the caller's x
    big = a >= math.exp(-p)
    return torch.stack([torch.where(big, torch.log(a.clamp_min(math.exp(-p))) / p, torch.full_like(a, -1.0)),
                        torch.where(big, sign, math.exp(p) * sign * a)], -1)


def pre_partial(x, p=10.0):
    big = x.abs() >= math.exp(-p)
    raise NotImplementedError("small branch: later")


def pre_where_no_clamp(x, p=10.0):
    big = x.abs() >= math.exp(-p)
    first = torch.where(big, torch.log(x.abs()) / p, torch.full_like(x, -1.0))   # -inf hidden at 0
    second = torch.where(big, torch.sign(x), math.exp(p) * x)
    return torch.stack([first, second], -1)


def pre_clamp_underflows_in_float32(x, p=10.0):
    return _pre(x, p)          # clamp_min(1e-300): 0 in float32


def pre_tiny_sign(x, p=10.0):
    return _pre(x, p, small=torch.sign(x))


def pre_tiny_zero(x, p=10.0):
    return _pre(x, p, small=torch.zeros_like(x))


def test_preprocess_reference_and_good_answers_pass():
    assert ch04.preprocess(ch04.reference_preprocess) is ch04.reference_preprocess
    assert status("4.2") == "right"

    def good(x, p=10.0):
        small = x.abs() < math.exp(-p)
        safe = torch.where(small, torch.ones_like(x), x.abs())
        return torch.stack([torch.where(small, -torch.ones_like(x), safe.log() / p),
                            torch.where(small, x * math.exp(p), x.sign())], dim=-1)

    def good_indexing(x, p=10.0):
        out = x.new_empty(x.shape + (2,))
        big = x.abs() >= math.exp(-p)
        out[..., 0] = -1.0
        out[..., 1] = math.exp(p) * x
        out[..., 0][big] = torch.log(x.abs()[big]) / p
        out[..., 1][big] = torch.sign(x[big])
        return out
    def good_no_graph(x, p=10.0):   # no graph at all is harmless: nothing can turn into NaN
        return preprocess(x.detach(), p)

    def good_mask_with_clamp(x, p=10.0):
        big = (x.abs() >= math.exp(-p)).to(x.dtype)
        first = big * torch.log(x.abs().clamp_min(math.exp(-p))) / p - (1 - big)
        return torch.stack([first, big * torch.sign(x) + (1 - big) * math.exp(p) * x], -1)
    for fn in (good, good_indexing, good_no_graph, good_mask_with_clamp):
        assert ch04.preprocess(fn) is fn, message("4.2")


def test_preprocess_nan_gradient_is_explained():
    msg = wrong(ch04.preprocess, pre_where_no_clamp, "4.2")
    assert "the values are right" in msg and "0 * inf = NaN" in msg and "detaches grad and loss" in msg
    assert "clamp_min(math.exp(-p))" in msg


@pytest.mark.parametrize("fn, phrase", [
    (pre_swapped, "branches are swapped"),
    (pre_no_sign_channel, "shape of x"),
    (pre_sign_ones, "sign channel is missing"),
    (pre_nan_at_zero, "NaN"),
    (pre_threshold_e_p, "threshold is e^p instead of e^-p"),
    (pre_threshold_10, "threshold is 10^-p"),
    (pre_log_of_x, "NaN for negative x"),
    (pre_log_of_clamped_x, "log part takes x, not |x|"),
    (pre_small_divided, "not x / e^p"),
    (pre_small_first_zero, "first entry is -1"),
    (pre_log10, "log base 10"),
    (pre_hardcoded_p, "p is not used"),
    (pre_p_threshold_only, "p is used in the threshold only"),
    (pre_p_scales_only, "not in the threshold"),
    (pre_wrong_default, "default p is not 10"),
    (pre_no_default, "give p its default"),
    (pre_order, "sign and log parts are swapped"),
    (pre_dim0, "stacked on the first dimension"),
    (pre_tuple, "returned the two channels as a tuple"),
    (pre_float32, "dtype"),
    (pre_float64_constant, "for a float32 x has dtype torch.float64"),
    (pre_in_place, "changed its input `x` in place"),
    (pre_partial, "not the exercise's stub"),
    (pre_where_no_clamp, "backward pass through preprocess gives NaN gradients at x = 0"),
    (pre_clamp_underflows_in_float32, "for a float32 x (float64 is fine)"),
    (pre_tiny_sign, "on the tiny branch the second entry is sign(x)"),
    (pre_tiny_zero, "on the tiny branch the second entry is 0"),
])
def test_preprocess_mistakes_are_named(fn, phrase):
    assert phrase in wrong(ch04.preprocess, fn, "4.2")


# --- 4.3 one meta-learner step ----------------------------------------------------------------

def _inputs(meta, grad, loss, p=None):
    p = meta.p if p is None else p
    return torch.cat([preprocess(grad, p), preprocess(loss.reshape(1), p).expand(grad.numel(), 2)], 1)


def step_good(meta, theta, state, x_s, y_s):
    leaf = theta.detach().requires_grad_()
    loss = F.cross_entropy(meta.learner_forward(leaf, x_s), y_s)
    (grad,) = torch.autograd.grad(loss, leaf)
    grad, loss = grad.detach(), loss.detach()
    h, c = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_good_helpers_and_list(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    h, c = meta.lstm(meta.inputs(grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return [f * theta - i * grad, state._replace(h=h, c=c, f=f, i=i), loss]


MyState = namedtuple("MyState", "h c f i")


def step_good_own_namedtuple(meta, theta, state, x_s, y_s):
    new, st, loss = step_good(meta, theta, state, x_s, y_s)
    return new, MyState(*st), loss


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


def step_gates_swapped(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    h, c = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    i, f = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_gates_swapped_in_update(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    h, c = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, i, f, grad), State(h, c, f, i), loss


def step_no_sigmoid(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    h, c = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    f = meta.W_F(torch.cat([h, theta[:, None], state.f[:, None]], 1)).squeeze(1)
    i = meta.W_I(torch.cat([h, theta[:, None], state.i[:, None]], 1)).squeeze(1)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_sum_loss(meta, theta, state, x_s, y_s):
    leaf = theta.detach().requires_grad_()
    loss = F.cross_entropy(meta.learner_forward(leaf, x_s), y_s, reduction="sum")
    (grad,) = torch.autograd.grad(loss, leaf)
    grad, loss = grad.detach(), loss.detach()
    h, c = meta.lstm(_inputs(meta, grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_default_p(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    h, c = meta.lstm(_inputs(meta, grad, loss, p=10.0), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_default_p_loss_only(meta, theta, state, x_s, y_s):   # the hint taken literally, before the fix
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    x = torch.cat([preprocess(grad, meta.p), preprocess(loss.reshape(1)).expand(grad.numel(), 2)], dim=1)
    h, c = meta.lstm(x, (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_default_p_grad_only(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    x = torch.cat([preprocess(grad), preprocess(loss.reshape(1), meta.p).expand(grad.numel(), 2)], dim=1)
    h, c = meta.lstm(x, (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def step_state_returned_unchanged(meta, theta, state, x_s, y_s):
    new, _, loss = step_good(meta, theta, state, x_s, y_s)
    return new, state, loss


def step_old_gates_returned(meta, theta, state, x_s, y_s):
    new, st, loss = step_good(meta, theta, state, x_s, y_s)
    return new, State(st.h, st.c, state.f, state.i), loss


def step_state_ignored(meta, theta, state, x_s, y_s):
    return step_good(meta, theta, meta.initial_state(), x_s, y_s)


def step_from_c0(meta, theta, state, x_s, y_s):
    return step_good(meta, meta.c_0, state, x_s, y_s)


def step_prev_gates_swapped(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
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


def step_plain_tuple_state(meta, theta, state, x_s, y_s):
    new, st, loss = step_good(meta, theta, state, x_s, y_s)
    return new, tuple(st), loss


def step_list_state(meta, theta, state, x_s, y_s):
    new, st, loss = step_good(meta, theta, state, x_s, y_s)
    return new, list(st), loss


def step_two_results(meta, theta, state, x_s, y_s):
    new, st, loss = step_good(meta, theta, state, x_s, y_s)
    return new, st


def step_theta_only(meta, theta, state, x_s, y_s):
    return step_good(meta, theta, state, x_s, y_s)[0]


def step_loss_after_update(meta, theta, state, x_s, y_s):
    new, st, _ = step_good(meta, theta, state, x_s, y_s)
    with torch.no_grad():
        loss = F.cross_entropy(meta.learner_forward(new, x_s), y_s)
    return new, st, loss


def step_loss_float(meta, theta, state, x_s, y_s):
    new, st, loss = step_good(meta, theta, state, x_s, y_s)
    return new, st, loss.item()


def step_state_in_place(meta, theta, state, x_s, y_s):
    new, st, loss = step_good(meta, theta, state, x_s, y_s)
    state.f.copy_(st.f.detach())
    return new, st, loss


def step_writes_c0(meta, theta, state, x_s, y_s):
    new, st, loss = step_good(meta, theta, state, x_s, y_s)
    meta.c_0.data.copy_(new.detach())
    return new, st, loss


def step_theta_in_place(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    h, c = meta.lstm(meta.inputs(grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    theta.data.mul_(f.detach()).sub_(i.detach() * grad)
    return theta, State(h, c, f, i), loss


def step_partial(meta, theta, state, x_s, y_s):
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    raise NotImplementedError("the LSTM part comes next")


def test_step_names_the_wrong_outputs_and_explains_the_jacobian():
    ch04.meta_learner_step(step_gate_bias_off)
    assert "f is wrong (h, c, i and theta_t right)" in message("4.3")
    checks.reset()
    ch04.meta_learner_step(step_gates_on_leaf)
    assert "how theta_t changes when theta_{t-1} changes" in message("4.3")
    checks.reset()
    ch04.meta_learner_step(step_plus)
    assert "theta_t is wrong (h, c, f and i right)" in message("4.3")


def test_step_reference_and_good_answers_pass():
    assert ch04.meta_learner_step(ch04.reference_meta_learner_step) is ch04.reference_meta_learner_step
    assert status("4.3") == "right"
    for fn in (step_good, step_good_helpers_and_list, step_good_own_namedtuple):
        assert ch04.meta_learner_step(fn) is fn, message("4.3")


@pytest.mark.parametrize("fn, phrase", [
    (step_second_order, "second-order path"),
    (step_loss_not_detached, "without .detach()"),
    (step_loss_graph_freed, "detach the loss and the gradient"),
    (step_theta_detached, "does not depend on theta_{t-1}"),
    (step_plus, "adds the gradient"),
    (step_gates_swapped, "forget and input gates are swapped (meta.gates returns (f, i)"),
    (step_gates_swapped_in_update, "swapped in the update"),
    (step_no_sigmoid, "not squashed by a sigmoid"),
    (step_sum_loss, "summed over the N*K examples instead of averaged"),
    (step_default_p, "the preprocessing ignores meta.p"),
    (step_default_p_loss_only, "only the loss's preprocessing ignores meta.p"),
    (step_default_p_grad_only, "only the gradient's preprocessing ignores meta.p"),
    (step_state_returned_unchanged, "returns the incoming `state` unchanged"),
    (step_old_gates_returned, "holds the previous gates state.f, state.i"),
    (step_state_ignored, "ignores the `state` it is given"),
    (step_from_c0, "starts from meta.c_0 instead of the `theta`"),
    (step_prev_gates_swapped, "wrong previous gate"),
    (step_raw_inputs, "raised RuntimeError"),
    (step_half_fix, "half-fix"),
    (step_columns_swapped, "columns are swapped"),
    (step_gates_on_leaf, "gates read the detached copy"),
    (step_h_c_swapped, "h and c are swapped: nn.LSTMCell returns"),
    (step_h_c_swapped_in_state, "swapped in the returned State"),
    (step_gate_bias_off, "f is wrong (h, c, i and theta_t right)"),
    (step_plain_tuple_state, "it is a plain tuple of 4"),
    (step_list_state, "it is a plain list of 4"),
    (step_two_results, "returned a tuple of 2"),
    (step_theta_only, "returned a torch.float64 tensor of shape"),
    (step_loss_after_update, "measured at theta_t, after the update"),
    (step_loss_float, "returned a Python float"),
    (step_state_in_place, "changed its input `state` in place (the values of `state.f` changed)"),
    (step_writes_c0, "changed the meta-learner's own parameter `meta.c_0` in place"),
    (step_theta_in_place, "changed its input `theta` in place"),
    (step_partial, "not the exercise's stub"),
])
def test_step_mistakes_are_named(fn, phrase):
    assert phrase in wrong(ch04.meta_learner_step, fn, "4.3")


# --- 4.4 the meta-objective of a meta-batch ---------------------------------------------------

def obj_loop(meta, x_s, y_s, x_q, y_q, steps):
    losses = []
    for b in range(x_s.shape[0]):
        theta, state = meta.c_0, meta.initial_state()
        for _ in range(steps):
            theta, state, _ = meta.step_fn(meta, theta, state, x_s[b], y_s[b])
        losses.append(meta.loss_fn(meta.learner_forward(theta, x_q[b]), y_q[b]))
    return torch.stack(losses).mean()


def obj_adapt(meta, x_s, y_s, x_q, y_q, steps):
    total = 0.0
    for b in range(len(x_s)):
        theta = meta.adapt(x_s[b], y_s[b], steps)
        total = total + F.cross_entropy(meta.learner_forward(theta, x_q[b]), y_q[b])
    return total / len(x_s)


def obj_task_loss(meta, x_s, y_s, x_q, y_q, steps):
    losses = [meta.task_loss(s, ys, q, yq, steps) for s, ys, q, yq in zip(x_s, y_s, x_q, y_q)]
    return sum(losses) / len(losses)


def obj_with_step(meta, x_s, y_s, x_q, y_q, steps):
    losses = []
    for b in range(x_s.shape[0]):
        theta, state = meta.c_0, meta.initial_state()
        for _ in range(steps):
            theta, state, _ = meta_learner_step(meta, theta, state, x_s[b], y_s[b])
        losses.append(F.cross_entropy(meta.learner_forward(theta, x_q[b]), y_q[b]))
    return torch.mean(torch.stack(losses))


def _obj(meta, x_s, y_s, x_q, y_q, steps, adapt_on="s", eval_on="q", reset_theta=True, reset_state=True,
         reduce="mean", q_reduction="mean", every_step=False):
    sets = {"s": (x_s, y_s), "q": (x_q, y_q)}
    theta, state = meta.c_0, meta.initial_state()
    losses = []
    for b in range(x_s.shape[0]):
        if reset_theta:
            theta = meta.c_0
        if reset_state:
            state = meta.initial_state()
        xa, ya = (t[b] for t in sets[adapt_on])
        xe, ye = (t[b] for t in sets[eval_on])
        per = []
        for _ in range(steps):
            theta, state, _ = meta.step_fn(meta, theta, state, xa, ya)
            per.append(F.cross_entropy(meta.learner_forward(theta, xe), ye))
        losses.append(torch.stack(per).mean() if every_step else
                      F.cross_entropy(meta.learner_forward(theta, xe), ye, reduction=q_reduction))
    stacked = torch.stack(losses)
    return {"mean": stacked.mean(), "sum": stacked.sum(), "first": stacked[0], "last": stacked[-1]}[reduce]


def obj_swapped(meta, x_s, y_s, x_q, y_q, steps):
    return _obj(meta, x_s, y_s, x_q, y_q, steps, adapt_on="q", eval_on="s")


def obj_support_only(meta, x_s, y_s, x_q, y_q, steps):
    return _obj(meta, x_s, y_s, x_q, y_q, steps, eval_on="s")


def obj_query_only(meta, x_s, y_s, x_q, y_q, steps):
    return _obj(meta, x_s, y_s, x_q, y_q, steps, adapt_on="q")


def obj_state_not_reset(meta, x_s, y_s, x_q, y_q, steps):
    return _obj(meta, x_s, y_s, x_q, y_q, steps, reset_state=False)


def obj_theta_not_reset(meta, x_s, y_s, x_q, y_q, steps):
    return _obj(meta, x_s, y_s, x_q, y_q, steps, reset_theta=False)


def obj_nothing_reset(meta, x_s, y_s, x_q, y_q, steps):
    return _obj(meta, x_s, y_s, x_q, y_q, steps, reset_theta=False, reset_state=False)


def obj_sum(meta, x_s, y_s, x_q, y_q, steps):
    return _obj(meta, x_s, y_s, x_q, y_q, steps, reduce="sum")


def obj_query_sum(meta, x_s, y_s, x_q, y_q, steps):
    return _obj(meta, x_s, y_s, x_q, y_q, steps, q_reduction="sum")


def obj_first_task(meta, x_s, y_s, x_q, y_q, steps):
    return _obj(meta, x_s, y_s, x_q, y_q, steps, reduce="first")


def obj_last_task(meta, x_s, y_s, x_q, y_q, steps):
    return _obj(meta, x_s, y_s, x_q, y_q, steps, reduce="last")


def obj_every_step(meta, x_s, y_s, x_q, y_q, steps):
    return _obj(meta, x_s, y_s, x_q, y_q, steps, every_step=True)


def obj_five_steps(meta, x_s, y_s, x_q, y_q, steps):
    return obj_loop(meta, x_s, y_s, x_q, y_q, 5)


def obj_one_step_short(meta, x_s, y_s, x_q, y_q, steps):
    return obj_loop(meta, x_s, y_s, x_q, y_q, steps - 1)


def obj_no_steps(meta, x_s, y_s, x_q, y_q, steps):
    return obj_loop(meta, x_s, y_s, x_q, y_q, 0)


def obj_three_steps_written_in(meta, x_s, y_s, x_q, y_q, steps):
    return obj_loop(meta, x_s, y_s, x_q, y_q, 3)   # right for the first probe only


def obj_per_task(meta, x_s, y_s, x_q, y_q, steps):
    return torch.stack([meta.task_loss(x_s[b], y_s[b], x_q[b], y_q[b], steps) for b in range(len(x_s))])


def obj_list(meta, x_s, y_s, x_q, y_q, steps):
    return [meta.task_loss(x_s[b], y_s[b], x_q[b], y_q[b], steps) for b in range(len(x_s))]


def obj_float(meta, x_s, y_s, x_q, y_q, steps):
    return obj_loop(meta, x_s, y_s, x_q, y_q, steps).item()


def obj_no_grad(meta, x_s, y_s, x_q, y_q, steps):
    with torch.no_grad():
        return obj_loop(meta, x_s, y_s, x_q, y_q, steps)


def obj_c0_detached(meta, x_s, y_s, x_q, y_q, steps):
    losses = []
    for b in range(x_s.shape[0]):
        theta, state = meta.c_0.detach(), meta.initial_state()
        for _ in range(steps):
            theta, state, _ = meta.step_fn(meta, theta, state, x_s[b], y_s[b])
        losses.append(meta.loss_fn(meta.learner_forward(theta, x_q[b]), y_q[b]))
    return torch.stack(losses).mean()


def obj_detached_between_steps(meta, x_s, y_s, x_q, y_q, steps):
    losses = []
    for b in range(x_s.shape[0]):
        theta, state = meta.c_0, meta.initial_state()
        for t in range(steps):
            if t:
                theta, state = theta.detach(), State(*(s.detach() for s in state))
            theta, state, _ = meta.step_fn(meta, theta, state, x_s[b], y_s[b])
        losses.append(meta.loss_fn(meta.learner_forward(theta, x_q[b]), y_q[b]))
    return torch.stack(losses).mean()


def obj_state_detached_between_steps(meta, x_s, y_s, x_q, y_q, steps):
    losses = []
    for b in range(x_s.shape[0]):
        theta, state = meta.c_0, meta.initial_state()
        for _ in range(steps):
            theta, state, _ = meta.step_fn(meta, theta, State(*(s.detach() for s in state)), x_s[b], y_s[b])
        losses.append(meta.loss_fn(meta.learner_forward(theta, x_q[b]), y_q[b]))
    return torch.stack(losses).mean()


def obj_step_loss(meta, x_s, y_s, x_q, y_q, steps):
    losses = []
    for b in range(x_s.shape[0]):
        theta, state = meta.c_0, meta.initial_state()
        for _ in range(steps):
            theta, state, loss = meta.step_fn(meta, theta, state, x_s[b], y_s[b])
        losses.append(loss)
    return torch.stack(losses).mean()


def obj_step_losses_mean(meta, x_s, y_s, x_q, y_q, steps):
    losses = []
    for b in range(x_s.shape[0]):
        theta, state = meta.c_0, meta.initial_state()
        for _ in range(steps):
            theta, state, loss = meta.step_fn(meta, theta, state, x_s[b], y_s[b])
            losses.append(loss)
    return torch.stack(losses).mean()


def obj_merged_adapt(meta, x_s, y_s, x_q, y_q, steps):
    theta = meta.adapt(x_s.reshape(-1, *x_s.shape[2:]), y_s.reshape(-1), steps)
    return meta.loss_fn(meta.learner_forward(theta, x_q.reshape(-1, *x_q.shape[2:])), y_q.reshape(-1))


def obj_merged_support_per_task_query(meta, x_s, y_s, x_q, y_q, steps):
    theta, state = meta.c_0, meta.initial_state()
    for _ in range(steps):
        theta, state, _ = meta.step_fn(meta, theta, state, x_s.flatten(0, 1), y_s.flatten(0, 1))
    return torch.stack([meta.loss_fn(meta.learner_forward(theta, x_q[b]), y_q[b]) for b in range(len(x_q))]).mean()


def obj_writes_c0(meta, x_s, y_s, x_q, y_q, steps):
    out = obj_loop(meta, x_s, y_s, x_q, y_q, steps)
    meta.c_0.data.mul_(0.5)
    return out


def obj_in_place_input(meta, x_s, y_s, x_q, y_q, steps):
    x_s -= x_s.mean()
    return obj_loop(meta, x_s, y_s, x_q, y_q, steps)


def obj_partial(meta, x_s, y_s, x_q, y_q, steps):
    theta = meta.c_0
    raise NotImplementedError("average over tasks: to do")


def test_objective_reference_and_good_answers_pass():
    assert ch04.meta_objective(ch04.reference_meta_objective) is ch04.reference_meta_objective
    assert status("4.4") == "right"
    for fn in (obj_loop, obj_adapt, obj_task_loss, obj_with_step):
        assert ch04.meta_objective(fn) is fn, message("4.4")


@pytest.mark.parametrize("fn, phrase", [
    (obj_swapped, "support and query are swapped"),
    (obj_support_only, "measured on the support set"),
    (obj_query_only, "the inner steps adapt on the query set"),
    (obj_state_not_reset, "the LSTM's state is not reset between tasks"),
    (obj_theta_not_reset, "theta is not reset between tasks"),
    (obj_nothing_reset, "neither theta nor the LSTM's state is reset"),
    (obj_sum, "task losses are summed (mean vs sum)"),
    (obj_query_sum, "query loss is summed over the query examples"),
    (obj_first_task, "only the first task counts"),
    (obj_last_task, "only the last task's query loss"),
    (obj_every_step, "averages the query loss over all T inner steps"),
    (obj_step_loss, "returns the support loss that the last step gives back"),
    (obj_step_losses_mean, "averages the support losses that the steps give back"),
    (obj_merged_adapt, "merged into one big support set"),
    (obj_merged_support_per_task_query, "merged into one big support set"),
    (obj_five_steps, "it runs 5 inner steps, not `steps` = 3"),
    (obj_one_step_short, "it runs 2 inner steps, not `steps` = 3"),
    (obj_no_steps, "no inner steps at all"),
    (obj_three_steps_written_in, "it runs 3 inner steps, not `steps` = 1"),
    (obj_per_task, "one loss per task"),
    (obj_list, "returned a list of 3"),
    (obj_float, "returned a Python float"),
    (obj_no_grad, "does not carry gradients"),
    (obj_c0_detached, "no meta-gradient reaches c_0"),
    (obj_detached_between_steps, "do not detach theta between the steps"),
    (obj_state_detached_between_steps, "the meta-gradient with respect to meta."),
    (obj_writes_c0, "changed the meta-learner's own parameter `meta.c_0` in place"),
    (obj_in_place_input, "changed its input `x_s` in place"),
    (obj_partial, "not the exercise's stub"),
])
def test_objective_mistakes_are_named(fn, phrase):
    assert phrase in wrong(ch04.meta_objective, fn, "4.4")


# --- protocol -----------------------------------------------------------------------------------

@pytest.mark.parametrize("check, number", [(ch04.cell_update, "4.1"), (ch04.preprocess, "4.2"),
                                           (ch04.meta_learner_step, "4.3"), (ch04.meta_objective, "4.4")])
def test_stubs_are_not_attempted(check, number):
    check(stub)
    assert status(number) == "not attempted"


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError):
        ch04.cell_update(cu_plus)
    with pytest.raises(checks.ExerciseError):
        ch04.preprocess(stub)
    with pytest.raises(checks.ExerciseError, match="Exercise 4.4"):
        ch04.meta_objective(obj_state_not_reset)
    assert ch04.meta_learner_step(step_good) is step_good
    assert ch04.meta_objective(obj_loop) is obj_loop


def test_exercise_list():
    assert ch04.EXERCISES == ["4.1", "4.2", "4.3", "4.4"]
