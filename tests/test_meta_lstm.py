"""The Meta-learner LSTM: SGD as a special case, the preprocessing formula, gradient flow, errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from course_utils import meta_lstm, nets
from course_utils.meta_lstm import (GateTrace, MetaLSTM, State, cell_update, input_gate_table, meta_learner_step,
                                    meta_objective, preprocess)

from conftest import cuda

D = torch.float64


def small_learner(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(D)


def task(seed=0, n=6, q=9):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 4, generator=g, dtype=D), torch.randint(0, 3, (n,), generator=g),
            torch.randn(q, 4, generator=g, dtype=D), torch.randint(0, 3, (q,), generator=g))


def fix_gates(meta, alpha):
    """f = 1 (to float64 precision) and i = alpha, whatever the inputs."""
    with torch.no_grad():
        meta.W_F.weight.zero_()
        meta.W_F.bias.fill_(60.0)                        # sigmoid(60) == 1.0 in float64
        meta.W_I.weight.zero_()
        meta.W_I.bias.fill_(math.log(alpha / (1 - alpha)))  # sigmoid(logit(alpha)) == alpha


# ----------------------------------------------------------------------------- SGD as a special case

@pytest.mark.parametrize("alpha", [0.05, 0.3])
def test_fixed_gates_reduce_to_plain_sgd(alpha):
    learner = small_learner()
    meta = MetaLSTM(learner, hidden=5)
    fix_gates(meta, alpha)
    x_s, y_s, _, _ = task()
    steps = 3
    theta = meta.adapt(x_s, y_s, steps)
    # by hand: SGD on the learner's own parameters, with the same loss
    params = {k: v.detach().clone().requires_grad_() for k, v in learner.named_parameters()}
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(learner, params, (x_s,)), y_s)
        grads = torch.autograd.grad(loss, list(params.values()))
        params = {k: (v - alpha * g).detach().requires_grad_() for (k, v), g in zip(params.items(), grads)}
    manual = torch.cat([v.detach().reshape(-1) for v in params.values()])
    torch.testing.assert_close(theta.detach(), manual, rtol=1e-12, atol=1e-12)
    # and the step really moved theta (the test can fail)
    assert (manual - meta.c_0.detach()).abs().max() > 1e-3


def test_the_initial_cell_state_is_the_learners_initialisation():
    learner = small_learner(3)
    meta = MetaLSTM(learner)
    flat = torch.cat([p.detach().reshape(-1) for p in learner.parameters()])
    torch.testing.assert_close(meta.c_0.detach(), flat)
    x = torch.randn(5, 4, dtype=D)
    torch.testing.assert_close(meta.learner_forward(meta.c_0, x), learner(x))


def test_default_init_keeps_theta_and_takes_small_steps():
    meta = MetaLSTM(small_learner())
    x_s, y_s, _, _ = task()
    _, trace = meta.adapt(x_s, y_s, 2, trace=True)
    assert trace.f.shape == trace.i.shape == (2, meta.n_params) and trace.loss.shape == (2,)
    assert trace.f.min() > 0.97 and trace.i.max() < 0.05


def test_trace_splits_the_input_gate_logit_into_its_parts():
    meta = MetaLSTM(small_learner(), input_bias=(-2.0, -1.0))
    with torch.no_grad():
        meta.W_I.weight.uniform_(-0.5, 0.5)
    x_s, y_s, _, _ = task()
    with torch.no_grad():
        _, trace = meta.adapt(x_s, y_s, 3, trace=True)
    assert trace.i_parts.shape == (3, 4)
    torch.testing.assert_close(trace.i_parts.sum(-1), torch.logit(trace.i).mean(-1))
    assert trace.i_parts[0, 2] == 0                       # i_0 = 0: no previous-gate part at step 1
    torch.testing.assert_close(trace.i_parts[:, 3], meta.W_I.bias.detach().expand(3))
    assert GateTrace(trace.f, trace.i, trace.loss).i_parts is None   # the old three fields still work


def test_input_gate_table_names_the_part_that_moves_most():
    i_gates = torch.full((2, 3, 5), 0.2, dtype=D)
    parts = torch.tensor([[-2.0, 0.1, 0.0, -1.0], [-0.5, 0.1, -0.2, -1.0], [-0.4, 0.1, -0.3, -1.0]], dtype=D)
    text = input_gate_table(i_gates, parts.expand(2, 3, 4))
    assert "changes by +1.30" in text and "the one from h_t (+1.50)" in text and "i_{t-1} changes by -0.20" in text
    assert len(text.splitlines()) == 2 + 3 + 1
    parts2 = parts.clone()
    parts2[1, 0], parts2[1, 2] = -2.0, 0.5
    assert "the one from i_{t-1} (+0.50)" in input_gate_table(i_gates, parts2[None])


def test_cell_update_formula():
    g = torch.Generator().manual_seed(0)
    c, f, i, gr = (torch.rand(7, generator=g, dtype=D) for _ in range(4))
    torch.testing.assert_close(cell_update(c, f, i, gr), f * c - i * gr)


# ----------------------------------------------------------------------------- preprocessing

def test_preprocess_matches_the_formula_on_both_branches():
    p = 10.0
    x = torch.tensor([0.0, 1e-30, -1e-30, 1e-6, -3e-5, math.exp(-p), 2e-3, -0.7, 1.0, -5.0, 1e8], dtype=D)
    out = preprocess(x, p)
    assert out.shape == (11, 2) and out.dtype == D and torch.isfinite(out).all()
    for v, (a, b) in zip(x.tolist(), out.tolist()):
        if abs(v) >= math.exp(-p):
            want = (math.log(abs(v)) / p, math.copysign(1.0, v))
        else:
            want = (-1.0, math.exp(p) * v)
        assert a == pytest.approx(want[0], rel=1e-12, abs=1e-12)
        assert b == pytest.approx(want[1], rel=1e-12, abs=1e-12)
    # zero lands on the small branch: (-1, 0)
    assert out[0].tolist() == [-1.0, 0.0]


def test_preprocess_keeps_shape_and_is_continuous_at_the_threshold():
    x = torch.randn(3, 4, 5)
    assert preprocess(x).shape == (3, 4, 5, 2)
    t = math.exp(-10.0)
    below, above = preprocess(torch.tensor([t * (1 - 1e-9), t], dtype=D))
    torch.testing.assert_close(below, above, atol=1e-8, rtol=0)  # both sides give (-1, ~1)
    out = preprocess(torch.tensor([0.5]), p=2.0)
    assert out[0, 0].item() == pytest.approx(math.log(0.5) / 2)


# ----------------------------------------------------------------------------- gradient flow

def test_meta_gradient_reaches_the_lstm_and_c0_through_unrolled_steps():
    meta = MetaLSTM(small_learner(), hidden=4, input_bias=(-2.0, -1.0))
    x_s, y_s, x_q, y_q = task()
    loss = meta.task_loss(x_s, y_s, x_q, y_q, steps=3)
    loss.backward()
    for name, p in meta.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no meta-gradient for {name}"


def test_meta_gradient_matches_finite_differences_of_the_first_order_objective():
    """The analytic meta-gradient equals finite differences of the objective in which the
    learner's gradients and losses are frozen inputs (the paper's approximation)."""
    meta = MetaLSTM(small_learner(), hidden=3, input_bias=(-2.0, -1.0))
    x_s, y_s, x_q, y_q = task()
    steps = 2
    # record the detached gradient/loss inputs at the current meta-parameters
    theta, state, frozen = meta.c_0, meta.initial_state(), []
    for _ in range(steps):
        loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
        frozen.append((loss, grad))
        theta, state, _ = meta_learner_step(meta, theta, state, x_s, y_s)

    def objective():
        th, st = meta.c_0, meta.initial_state()
        for loss, grad in frozen:
            h, c = meta.lstm(meta.inputs(grad, loss), (st.h, st.c))
            f, i = meta.gates(h, th, st.f, st.i)
            th, st = cell_update(th, f, i, grad), State(h, c, f, i)
        return F.cross_entropy(meta.learner_forward(th, x_q), y_q)

    meta.zero_grad()
    meta.task_loss(x_s, y_s, x_q, y_q, steps).backward()
    for p in (meta.W_I.bias, meta.W_F.weight):
        analytic = p.grad.reshape(-1)[0].item()
        eps = 1e-6
        with torch.no_grad():
            p.view(-1)[0] += eps
        up = objective().item()
        with torch.no_grad():
            p.view(-1)[0] -= 2 * eps
        down = objective().item()
        with torch.no_grad():
            p.view(-1)[0] += eps
        assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


def test_no_second_order_path_through_the_learners_gradient():
    meta = MetaLSTM(small_learner(), hidden=3)
    x_s, y_s, _, _ = task()
    theta = meta.c_0.detach().clone().requires_grad_()
    new, _, loss = meta_learner_step(meta, theta, meta.initial_state(), x_s, y_s)
    assert not loss.requires_grad
    # with f = 1 and i = alpha fixed, d theta_t / d theta_{t-1} is exactly the identity (no -alpha H)
    fix_gates(meta, 0.2)
    new, _, _ = meta_learner_step(meta, theta, meta.initial_state(), x_s, y_s)
    v = torch.randn(meta.n_params, dtype=D)
    (jv,) = torch.autograd.grad((new * v).sum(), theta)
    torch.testing.assert_close(jv, v)


def test_meta_step_updates_and_lowers_the_loss_on_a_fixed_task():
    meta = MetaLSTM(small_learner(), hidden=5, input_bias=(-3.0, -2.0))
    x_s, y_s, x_q, y_q = task()
    opt = torch.optim.Adam(meta.parameters(), lr=1e-2)
    before = meta.c_0.detach().clone()
    losses = [meta.meta_step(opt, x_s[None], y_s[None], x_q[None], y_q[None], steps=2) for _ in range(30)]
    assert not torch.equal(before, meta.c_0.detach())
    assert losses[-1] < losses[0]


def _meta_batch(b=3):
    tasks = [task(seed=s) for s in range(b)]
    return tuple(torch.stack([t[j] for t in tasks]) for j in range(4))


def test_meta_objective_is_the_mean_task_loss_with_state_and_theta_reset_per_task():
    meta = MetaLSTM(small_learner(), hidden=4, input_bias=(-3.0, -2.0))
    x_s, y_s, x_q, y_q = _meta_batch()
    got = meta_objective(meta, x_s, y_s, x_q, y_q, steps=2)
    want = torch.stack([meta.task_loss(x_s[k], y_s[k], x_q[k], y_q[k], 2) for k in range(3)]).mean()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # the same task twice: the same loss each time (nothing carried from one task to the next)
    twice = tuple(torch.stack([t[0], t[0]]) for t in (x_s, y_s, x_q, y_q))
    torch.testing.assert_close(meta_objective(meta, *twice, steps=2), meta.task_loss(x_s[0], y_s[0], x_q[0], y_q[0], 2))
    # and it can fail: the tasks differ
    assert not torch.allclose(want, meta.task_loss(x_s[0], y_s[0], x_q[0], y_q[0], 2))


def test_meta_objective_gradient_matches_meta_step_per_task_backward():
    meta = MetaLSTM(small_learner(), hidden=4, input_bias=(-3.0, -2.0))
    batch = _meta_batch()
    grads = torch.autograd.grad(meta_objective(meta, *batch, steps=2), list(meta.parameters()))
    opt = torch.optim.SGD(meta.parameters(), lr=0.0)   # lr 0: meta_step leaves the weights, keeps .grad
    meta.meta_step(opt, *batch, steps=2, clip=None)
    for g, p in zip(grads, meta.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-12)
    assert grads[list(dict(meta.named_parameters())).index("c_0")].abs().sum() > 0


def test_meta_objective_uses_the_step_function_the_notebook_sets():
    meta = MetaLSTM(small_learner(), hidden=4)
    batch = _meta_batch(2)
    calls = []

    def counting_step(*args):
        calls.append(1)
        return meta_learner_step(*args)
    meta.step_fn = counting_step
    meta_objective(meta, *batch, steps=3)
    assert len(calls) == 2 * 3


def test_meta_objective_rejects_a_single_task_and_mismatched_batches():
    meta = MetaLSTM(small_learner(), hidden=3)
    x_s, y_s, x_q, y_q = task()
    with pytest.raises(ValueError, match="leading task dimension"):
        meta_objective(meta, x_s, y_s, x_q, y_q, 1)
    b = _meta_batch(3)
    with pytest.raises(ValueError, match="same number of tasks"):
        meta_objective(meta, b[0], b[1], b[2][:2], b[3][:2], 1)
    with pytest.raises(ValueError, match="steps"):
        meta_objective(meta, *b, 0)


def test_works_with_the_course_conv_net_and_classifies_episodes():
    learner = nets.conv4_classifier(5, hidden=4, batch_stats_only=True)
    meta = MetaLSTM(learner)
    assert meta.n_params == sum(p.numel() for p in learner.parameters())
    assert not any(p is q for p in meta.parameters() for q in learner.parameters())

    class Ep:
        support_x, support_y = torch.rand(5, 1, 28, 28), torch.arange(5)
        query_x = torch.rand(10, 1, 28, 28)
    logits = meta.classify(Ep, steps=2)
    assert logits.shape == (10, 5) and not logits.requires_grad


def test_by_layer_splits_the_coordinates_by_layer_in_order():
    meta = MetaLSTM(nets.conv4_classifier(5, hidden=4, batch_stats_only=True))
    values = torch.arange(meta.n_params, dtype=D).expand(2, -1)
    parts = meta.by_layer(values)
    assert list(parts) == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "conv4", "bn4", "linear"]
    torch.testing.assert_close(torch.cat(list(parts.values()), dim=-1), values)
    assert parts["bn1"].shape == (2, 8)                      # weight and bias of 4 channels
    two = MetaLSTM(small_learner()).by_layer(torch.zeros(4 * 6 + 6 + 6 * 3 + 3))
    assert list(two) == ["linear1", "linear2"]
    with pytest.raises(ValueError, match="last dimension"):
        meta.by_layer(torch.zeros(3))


def test_the_chapter_figures_draw():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from course_utils import plots
    g = torch.logspace(-9, 0, 50, dtype=D) * torch.tensor([1.0, -1.0]).repeat(25)
    figs = [plots.meta_lstm_gradient_histogram(torch.cat([g, torch.zeros(3, dtype=D)]), p=10.0),
            plots.meta_lstm_preprocessing_figure(preprocess, p=10.0),
            plots.meta_lstm_gates_figure(torch.rand(4, 3, 20), torch.rand(4, 3, 20), torch.rand(4, 3))]
    assert [len(f.axes) for f in figs] == [1, 2, 3]
    assert figs[2].axes[0].get_xlabel() == "inner step t" and figs[1].axes[0].get_xscale() == "log"
    for f in figs:
        plt.close(f)


@cuda
def test_runs_on_cuda():
    meta = MetaLSTM(small_learner().cuda(), hidden=4)
    x_s, y_s, x_q, y_q = (t.cuda() for t in task())
    loss = meta.task_loss(x_s, y_s, x_q, y_q, steps=2)
    loss.backward()
    assert meta.c_0.grad.is_cuda and meta.W_I.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- bad inputs

def test_bad_learners_are_rejected():
    with pytest.raises(ValueError, match="nn.Module"):
        MetaLSTM("not a net")
    with pytest.raises(ValueError, match="running statistics"):
        MetaLSTM(nets.conv4_classifier(5, hidden=4, batch_stats_only=False))
    with pytest.raises(ValueError, match="no parameters"):
        MetaLSTM(nn.ReLU())
    with pytest.raises(ValueError, match="hidden"):
        MetaLSTM(small_learner(), hidden=0)
    with pytest.raises(ValueError, match="p must be"):
        MetaLSTM(small_learner(), p=0)
    with pytest.raises(ValueError, match="forget_bias"):
        MetaLSTM(small_learner(), forget_bias=(6.0, 4.0))


def test_bad_calls_are_rejected():
    meta = MetaLSTM(small_learner(), hidden=3)
    x_s, y_s, x_q, y_q = task()
    with pytest.raises(ValueError, match="steps"):
        meta.adapt(x_s, y_s, 0)
    with pytest.raises(ValueError, match="same N"):
        meta.adapt(x_s, y_s[:-1], 1)
    with pytest.raises(ValueError, match="float64"):
        meta.adapt(x_s.float(), y_s, 1)
    with pytest.raises(ValueError, match="theta must be"):
        meta.unflatten(torch.zeros(3, dtype=D))
    with pytest.raises(ValueError, match="leading task dimension"):
        meta.meta_step(torch.optim.SGD(meta.parameters(), lr=0.1), x_s[0], y_s, x_q, y_q, 1)
    with pytest.raises(ValueError, match="floating-point"):
        preprocess(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="p must be"):
        preprocess(torch.zeros(2), p=-1.0)


def test_module_exports():
    for name in meta_lstm.__all__:
        assert hasattr(meta_lstm, name)
