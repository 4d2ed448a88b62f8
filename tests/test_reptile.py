import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils import maml, nets, reptile, sinusoid
from course_utils.episodes import Episode
from conftest import cuda

D = torch.float64


def mlp_tasks(b=4, n=6, seed=0, hidden=8):
    torch.manual_seed(seed)
    model = nets.sine_mlp(hidden=hidden).to(D)
    batch = sinusoid.sample_sine_tasks(b, n, 1, torch.Generator().manual_seed(seed), dtype=D)
    return model, batch.x_s, batch.y_s


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def task_loss(model, params, x, y):
    return F.mse_loss(maml.forward(model, params, x), y)


# ----------------------------------------------------------------------------- Reptile = joint training at T = 1

@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_one_sgd_step_reptile_is_joint_training_on_the_sum_of_losses(strategy):
    model, x, y = mlp_tasks(b=4)
    theta = snapshot(model)
    alpha, eps, n = 0.05, 0.5, x.shape[0]
    reptile.Reptile(model, alpha, inner_steps=1, epsilon=eps, strategy=strategy).meta_step(x, y)
    leaves = {k: v.clone().requires_grad_() for k, v in theta.items()}
    total = sum(task_loss(model, leaves, x[i], y[i]) for i in range(n))  # sum_i L_i(theta)
    grads = dict(zip(leaves, torch.autograd.grad(total, list(leaves.values()))))
    joint = {k: theta[k] - eps * alpha / n * grads[k] for k in theta}       # step eps * alpha / n
    assert max_diff(snapshot(model), joint) < 1e-12
    assert max_diff(snapshot(model), theta) > 1e-4  # it did move


def test_k_greater_than_one_is_not_joint_training():
    model, x, y = mlp_tasks(b=3)
    theta = snapshot(model)
    alpha, eps, k = 0.1, 1.0, 4
    reptile.Reptile(model, alpha, inner_steps=k, epsilon=eps).meta_step(x, y)
    leaves = {kk: v.clone().requires_grad_() for kk, v in theta.items()}
    total = sum(task_loss(model, leaves, x[i], y[i]) for i in range(3))
    grads = dict(zip(leaves, torch.autograd.grad(total, list(leaves.values()))))
    joint = {kk: theta[kk] - eps * alpha * k / 3 * grads[kk] for kk in theta}
    assert max_diff(snapshot(model), joint) > 1e-4  # the higher-order terms of section 5


# ----------------------------------------------------------------------------- serial vs batched

@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_serial_and_batched_agree_for_batch_size_one(optimizer):
    model, x, y = mlp_tasks(b=1, n=8)
    theta = snapshot(model)
    lr, k, eps = (0.05 if optimizer == "sgd" else 0.01), 3, 0.3
    w = reptile.inner_loop(model, theta, x[0], y[0], lr, k, optimizer=optimizer, batch_size=4,
                           generator=torch.Generator().manual_seed(7))
    serial = reptile.reptile_update(theta, w, eps)                      # theta + eps (theta' - theta)
    assert max_diff(serial, {kk: theta[kk] + eps * (w[kk] - theta[kk]) for kk in theta}) < 1e-14
    learner = reptile.Reptile(model, lr, k, eps, optimizer=optimizer, inner_batch_size=4, seed=7)
    learner.meta_step(x, y)                                          # batched, B = 1
    assert max_diff(snapshot(model), serial) < 1e-12


def test_batched_update_is_the_mean_of_the_serial_displacements():
    model, x, y = mlp_tasks(b=3)
    theta = snapshot(model)
    ws = [reptile.inner_loop(model, theta, x[i], y[i], 0.05, 2) for i in range(3)]
    new = reptile.reptile_update(theta, ws, 0.4)
    want = {k: theta[k] + 0.4 * sum(w[k] - theta[k] for w in ws) / 3 for k in theta}
    assert max_diff(new, want) < 1e-14
    stacked = {k: torch.stack([w[k] for w in ws]) for k in theta}
    assert max_diff(reptile.reptile_update(theta, stacked, 0.4), want) < 1e-14
    reptile.Reptile(model, 0.05, 2, 0.4).meta_step(x, y)
    assert max_diff(snapshot(model), want) < 1e-12


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_vmap_and_loop_strategies_agree(optimizer):
    model, x, y = mlp_tasks(b=3, n=10)
    theta = snapshot(model)
    outs = {}
    for strategy in ("vmap", "loop"):
        model.load_state_dict(theta, strict=False)
        r = reptile.Reptile(model, 0.02, 4, 0.5, optimizer=optimizer, inner_batch_size=3, strategy=strategy)
        r.meta_step(x, y)
        outs[strategy] = snapshot(model)
    assert max_diff(outs["vmap"], outs["loop"]) < 1e-12


# ----------------------------------------------------------------------------- the inner loop

def test_inner_loop_matches_plain_sgd_steps_on_its_minibatches_and_leaves_phi_alone():
    model, x, y = mlp_tasks(b=1, n=10)
    x, y = x[0], y[0]
    theta = dict(model.named_parameters())  # the model's own weights
    before = snapshot(model)
    idx = reptile.minibatch_schedule(10, 5, 4, torch.Generator().manual_seed(3))
    w = reptile.inner_loop(model, theta, x, y, 0.1, 5, batch_size=4, generator=torch.Generator().manual_seed(3))
    assert max_diff(snapshot(model), before) == 0.0
    ref = nets.sine_mlp(hidden=8).to(D)
    ref.load_state_dict(before, strict=False)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for t in range(5):
        opt.zero_grad()
        F.mse_loss(ref(x[idx[t]]), y[idx[t]]).backward()
        opt.step()
    assert max_diff(w, snapshot(ref)) < 1e-12
    assert all(not v.requires_grad for v in w.values())


def test_inner_adam_matches_torch_adam_with_beta1_zero():
    model, x, y = mlp_tasks(b=1, n=8)
    x, y = x[0], y[0]
    before = snapshot(model)
    w = reptile.inner_loop(model, before, x, y, 0.01, 6, optimizer="adam")
    ref = nets.sine_mlp(hidden=8).to(D)
    ref.load_state_dict(before, strict=False)
    opt = torch.optim.Adam(ref.parameters(), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    for _ in range(6):
        opt.zero_grad()
        F.mse_loss(ref(x), y).backward()
        opt.step()
    assert max_diff(w, snapshot(ref)) < 1e-10


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.02), ("adam", 0.01)])
def test_inner_loop_lowers_the_task_loss(optimizer, lr):
    model, x, y = mlp_tasks(b=1, n=20, hidden=16)
    x, y = x[0], y[0]
    theta = snapshot(model)
    w, losses = reptile.inner_loop(model, theta, x, y, lr, 30, optimizer=optimizer, return_losses=True)
    assert losses.shape == (30,)
    with torch.no_grad():
        assert task_loss(model, w, x, y) < 0.7 * task_loss(model, theta, x, y)
    assert reptile.inner_loop(model, theta, x, y, lr, 0)["0.weight"].equal(theta["0.weight"])


def test_minibatch_schedule_walks_through_permutations():
    idx = reptile.minibatch_schedule(10, 5, 4, torch.Generator().manual_seed(0))
    assert idx.shape == (5, 4)
    flat = idx.flatten()
    assert sorted(flat[:10].tolist()) == list(range(10))  # the first epoch sees every point once
    assert sorted(flat[10:20].tolist()) == list(range(10))
    assert reptile.minibatch_schedule(6, 3).tolist() == [list(range(6))] * 3  # full batch


# ----------------------------------------------------------------------------- directions

def test_reptile_direction_is_the_sum_of_the_inner_gradients():
    model, x, y = mlp_tasks(b=1, n=8)
    x, y = x[0], y[0]
    theta, alpha = snapshot(model), 0.05
    w = reptile.inner_loop(model, theta, x, y, alpha, 3)
    d = reptile.reptile_direction(theta, w, alpha)
    p, total = dict(theta), {k: torch.zeros_like(v) for k, v in theta.items()}
    for _ in range(3):
        g = maml._support_grads(model, p, x, y, F.mse_loss, first_order=True, use_autograd=False)
        total = {k: total[k] + g[k] for k in p}
        p = {k: p[k] - alpha * g[k] for k in p}
    assert max_diff(d, total) < 1e-10


def test_fomaml_direction_matches_maml_first_order():
    model, x, y = mlp_tasks(b=1, n=12)
    xs, ys, xq, yq = x[0, :5], y[0, :5], x[0, 5:], y[0, 5:]
    theta = snapshot(model)
    d = reptile.fomaml_direction(model, theta, xs, ys, xq, yq, alpha=0.05, steps=3)
    _, g = maml.meta_gradient(model, xs[None], ys[None], xq[None], yq[None], alpha=0.05, steps=3,
                              first_order=True)
    assert max_diff(d, g) < 1e-12


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_task_directions_average_the_per_task_directions_of_one_inner_trajectory(strategy):
    model, x, y = mlp_tasks(b=3, n=12)
    xs, ys, xq, yq = x[:, :8], y[:, :8], x[:, 8:], y[:, 8:]
    theta = snapshot(model)
    rep, fo = reptile.task_directions(model, theta, xs, ys, xq, yq, alpha=0.05, steps=3, strategy=strategy)
    want_fo = [reptile.fomaml_direction(model, theta, xs[i], ys[i], xq[i], yq[i], 0.05, 3) for i in range(3)]
    want_rep = [reptile.reptile_direction(theta, reptile.inner_loop(model, theta, xs[i], ys[i], 0.05, 3), 0.05)
                for i in range(3)]
    assert max_diff(fo, {k: sum(w[k] for w in want_fo) / 3 for k in theta}) < 1e-12
    assert max_diff(rep, {k: sum(w[k] for w in want_rep) / 3 for k in theta}) < 1e-10


def test_linear_epsilon():
    assert reptile.linear_epsilon(0, 100, 1.0) == 1.0
    assert reptile.linear_epsilon(50, 100, 1.0) == pytest.approx(0.5)
    assert reptile.linear_epsilon(100, 100, 1.0, 0.2) == pytest.approx(0.2)
    assert reptile.linear_epsilon(500, 100, 1.0) == 0.0


# ----------------------------------------------------------------------------- it learns

def test_reptile_on_sinusoids_lowers_post_adaptation_mse():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    test = sinusoid.sample_sine_tasks(100, 10, 50, torch.Generator().manual_seed(99), phase=(0, 2 * math.pi))

    def post_mse(m):
        r = reptile.Reptile(m, 0.02, 1, test_steps=32)
        with torch.no_grad():
            return sum(F.mse_loss(r.predict(test.x_q[i], r.adapt(test.x_s[i], test.y_s[i])), test.y_q[i]).item()
                       for i in range(len(test))) / len(test)

    before = post_mse(model)
    learner = reptile.Reptile(model, inner_lr=0.02, inner_steps=5, epsilon=1.0, inner_batch_size=10)
    tasks = sinusoid.SineTaskSampler(10, 50, 1, seed=0, phase=(0, 2 * math.pi))
    for i in range(200):
        b = next(tasks)
        learner.meta_step(b.x_s, b.y_s, reptile.linear_epsilon(i, 200, 1.0))
    after = post_mse(model)
    assert after < 0.8 * before, (before, after)


def test_classify_adapts_on_the_support_and_labels_the_queries():
    torch.manual_seed(0)
    model = nets.conv4_classifier(3, hidden=4, image_size=16, batch_stats_only=True)
    g = torch.Generator().manual_seed(0)
    ep = Episode(torch.rand(6, 1, 16, 16, generator=g), torch.arange(3).repeat_interleave(2),
                 torch.rand(9, 1, 16, 16, generator=g), torch.arange(3).repeat_interleave(3), 3, 2, 3)
    r = reptile.Reptile(model, 0.1, 2, loss="cross_entropy", test_steps=3)
    theta = snapshot(model)
    assert r.classify(ep).shape == (9, 3)
    assert max_diff(snapshot(model), theta) == 0.0
    x = torch.cat([ep.support_x, ep.query_x])[None]
    y = torch.cat([ep.support_y, ep.query_y])[None]
    r.meta_step(x, y)
    assert max_diff(snapshot(model), theta) > 0


# ----------------------------------------------------------------------------- bad inputs

def test_bad_inputs_raise_clear_value_errors():
    model, x, y = mlp_tasks(b=2)
    theta = snapshot(model)
    with pytest.raises(ValueError, match="steps"):
        reptile.inner_loop(model, theta, x[0], y[0], 0.1, -1)
    with pytest.raises(ValueError, match="learning rate"):
        reptile.inner_loop(model, theta, x[0], y[0], 0.0, 2)
    with pytest.raises(ValueError, match="optimizer"):
        reptile.inner_loop(model, theta, x[0], y[0], 0.1, 2, optimizer="rmsprop")
    with pytest.raises(ValueError, match="same, non-zero"):
        reptile.inner_loop(model, theta, x[0], y[0, :3], 0.1, 2)
    with pytest.raises(ValueError, match="float64"):
        reptile.inner_loop(model, theta, x[0].float(), y[0], 0.1, 2)
    with pytest.raises(ValueError, match="batch_size"):
        reptile.inner_loop(model, theta, x[0], y[0], 0.1, 2, batch_size=0)
    with pytest.raises(ValueError, match="epsilon"):
        reptile.reptile_update(theta, theta, 1.5)
    with pytest.raises(ValueError, match="shape"):
        reptile.reptile_update(theta, {k: v[..., :1] if v.dim() else v for k, v in theta.items()}, 0.1)
    with pytest.raises(ValueError, match="non-empty list"):
        reptile.reptile_update(theta, [], 0.1)
    with pytest.raises(ValueError, match="lack"):
        reptile.reptile_update(theta, {"0.weight": theta["0.weight"]}, 0.1)
    with pytest.raises(ValueError, match="meta-batch"):
        reptile.Reptile(model, 0.1, 2).meta_step(x[0, :, 0], y[0, :, 0])
    with pytest.raises(ValueError, match="inner_steps"):
        reptile.Reptile(model, 0.1, 0)
    with pytest.raises(ValueError, match="strategy"):
        reptile.Reptile(model, 0.1, 1, strategy="fast")
    with pytest.raises(ValueError, match="running statistics"):
        reptile.Reptile(nets.conv4_classifier(5, batch_stats_only=False), 0.1, 1)
    with pytest.raises(ValueError, match="MSE will silently broadcast"):
        reptile.inner_loop(model, theta, x[0], y[0, :, 0], 0.1, 1)


@cuda
def test_runs_on_cuda_and_matches_cpu():
    model, x, y = mlp_tasks(b=3)
    theta = snapshot(model)
    reptile.Reptile(model, 0.05, 3, 0.5, inner_batch_size=3, seed=1).meta_step(x, y)
    cpu = snapshot(model)
    model.load_state_dict(theta, strict=False)
    model = model.cuda()
    reptile.Reptile(model, 0.05, 3, 0.5, inner_batch_size=3, seed=1).meta_step(x.cuda(), y.cuda())
    assert max_diff({k: v.cpu() for k, v in snapshot(model).items()}, cpu) < 1e-9


# ----------------------------------------------------------------------------- the exercises' signatures

def test_library_signatures_follow_the_exercises_and_agree_with_their_references():
    import inspect
    from course_utils.chapter_checks import ch05
    for lib, ref in ((reptile.reptile_update, ch05.reference_reptile_update),
                     (reptile.inner_loop, ch05.reference_inner_loop),
                     (reptile.fomaml_direction, ch05.reference_fomaml_direction)):
        names = list(inspect.signature(ref).parameters)
        names = names[:-1] if names[-1] == "inner" else names
        assert list(inspect.signature(lib).parameters)[:len(names)] == names, lib.__name__
    model, x, y = mlp_tasks(b=3, n=12)
    theta = snapshot(model)
    xs, ys, xq, yq = x[0, :8], y[0, :8], x[0, 8:], y[0, 8:]
    assert max_diff(reptile.inner_loop(model, theta, xs, ys, 0.05, 3, F.mse_loss),
                    ch05.reference_inner_loop(model, theta, xs, ys, 0.05, 3, F.mse_loss)) < 1e-12
    assert max_diff(reptile.fomaml_direction(model, theta, xs, ys, xq, yq, 0.05, 3, F.mse_loss),
                    ch05.reference_fomaml_direction(model, theta, xs, ys, xq, yq, 0.05, 3, F.mse_loss)) < 1e-12
    ws = [reptile.inner_loop(model, theta, x[i], y[i], 0.05, 2) for i in range(3)]
    assert max_diff(reptile.reptile_update(theta, ws, 0.4), ch05.reference_reptile_update(theta, ws, 0.4)) < 1e-14


# ----------------------------------------------------------------------------- the carried Adam state

def _permuted_label_tasks(gen: torch.Generator, b: int = 2, n_way: int = 5, shots: int = 4, d: int = 16):
    """Each task: n_way random Gaussian clusters whose labels are assigned in a random order."""
    centres = torch.randn(b, n_way, d, generator=gen, dtype=torch.float64)
    y = torch.arange(n_way).repeat_interleave(shots).repeat(b, 1)
    x = centres[torch.arange(b)[:, None], y] + 0.5 * torch.randn(b, n_way * shots, d, generator=gen,
                                                                 dtype=torch.float64)
    return x, y


def _head_norms(carry_state: bool, iters: int = 150) -> list[float]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)).double()
    r = reptile.Reptile(model, 0.01, 5, 1.0, optimizer="adam", inner_batch_size=5, loss="cross_entropy",
                        carry_state=carry_state)
    gen, norms = torch.Generator().manual_seed(1), []
    for i in range(iters):
        r.meta_step(*_permuted_label_tasks(gen))
        if i % 50 == 49:
            norms.append(model[2].weight.norm().item())
    return norms


def test_carried_adam_keeps_the_head_bounded_under_permuted_labels():
    """The paper's code carries the inner Adam's state across tasks. Started afresh for every task, Adam's
    first step is alpha * sign(g): the mean of the head's rows, which gradient steps never move, drifts and the
    head's norm grows steadily (measured: about 8 -> 22 over these 150 meta-iterations); carried, it levels off."""
    fresh, carried = _head_norms(False), _head_norms(True)
    assert fresh[-1] > 1.5 * fresh[0], f"the fresh-Adam head no longer drifts ({fresh}): the test lost its power"
    growth_fresh, growth_carried = fresh[-1] - fresh[0], carried[-1] - carried[0]
    assert growth_carried < 0.25 * growth_fresh, \
        f"the head keeps growing with the carried Adam state: {carried} (fresh: {fresh})"
    assert carried[-1] < 0.5 * fresh[-1]


def test_adam_state_carries_across_meta_steps_and_test_time_leaves_it_alone():
    model, x, y = mlp_tasks(b=2, n=8)
    r = reptile.Reptile(model, 0.01, 3, 0.5, optimizer="adam", inner_batch_size=4)
    assert r.adam_state is None
    r.meta_step(x, y)
    s1 = r.adam_state
    assert s1.t == 3 and all(v.abs().sum() > 0 for v in s1.v.values())
    theta = snapshot(model)
    # one task from the carried state: the state is the start, so a fresh-state inner loop differs
    idx_gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    w_carried = reptile.inner_loop(model, theta, x[0], y[0], 0.01, 3, optimizer="adam", batch_size=4,
                                   generator=idx_gen(), state=s1)
    w_fresh = reptile.inner_loop(model, theta, x[0], y[0], 0.01, 3, optimizer="adam", batch_size=4,
                                 generator=idx_gen())
    assert max_diff(w_carried, w_fresh) > 1e-6
    r.adapt(x[0], y[0])
    assert r.adam_state is s1                       # test-time adaptation does not change the state
    r.meta_step(x, y)
    assert r.adam_state.t == 6


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_kept_state_is_the_mean_of_the_tasks_final_states(strategy):
    model, x, y = mlp_tasks(b=3, n=8)
    theta = snapshot(model)
    r = reptile.Reptile(model, 0.01, 2, 0.5, optimizer="adam", strategy=strategy)
    r.meta_step(x, y)
    finals = []
    for i in range(3):  # full batches: the schedule does not depend on the generator
        w = dict(theta)
        v = {k: torch.zeros_like(t) for k, t in theta.items()}
        for t in range(2):
            g = torch.func.grad(lambda p: F.mse_loss(torch.func.functional_call(model, p, (x[i],)), y[i]))(w)
            v = {k: 0.999 * v[k] + 0.001 * g[k] ** 2 for k in w}
            w = {k: w[k] - 0.01 * g[k] / ((v[k] / (1 - 0.999 ** (t + 1))).sqrt() + 1e-8) for k in w}
        finals.append(v)
    want = {k: sum(f[k] for f in finals) / 3 for k in theta}
    assert max_diff(r.adam_state.v, want) < 1e-12


def test_test_time_adaptation_does_not_change_the_training_stream():
    """Evaluating in the middle of training must not change what training does next (own generator)."""
    outs = []
    for evaluate_between in (False, True):
        model, x, y = mlp_tasks(b=2, n=8)
        r = reptile.Reptile(model, 0.02, 3, 0.5, inner_batch_size=3, test_batch_size=3, seed=4)
        r.meta_step(x, y)
        if evaluate_between:
            r.adapt(x[0], y[0])
        r.meta_step(x, y)
        outs.append(snapshot(model))
    assert max_diff(*outs) == 0.0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_symmetric_head_makes_test_time_adaptation_label_equivariant(optimizer):
    """With every head row equal at the start, renaming the support labels renames the output columns
    (labels are arbitrary in every task); from a trained, label-specific head it does not."""
    torch.manual_seed(0)
    model = nets.conv4_classifier(5, hidden=4, batch_stats_only=True).double()
    with torch.no_grad():
        model[-1].weight.normal_()           # a head that favours some labels
    x = torch.rand(10, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(5).repeat(2)
    perm = torch.tensor([3, 0, 4, 1, 2])
    lr = 0.05 if optimizer == "sgd" else 0.01
    for symmetric in (True, False):
        r = reptile.Reptile(model, lr, 1, optimizer=optimizer, test_steps=4, loss="cross_entropy",
                            symmetric_head=symmetric)
        start = r.start()
        assert (start["5.weight"].std(0).abs().max() < 1e-15) == symmetric
        out = r.predict(x, r.adapt(x, y))
        out_perm = r.predict(x, r.adapt(x, perm[y]))
        same = torch.allclose(out_perm[:, perm], out, atol=1e-10)
        assert same == symmetric, f"symmetric_head={symmetric}: equivariance {same}"
    assert torch.equal(r.theta["5.weight"], model[-1].weight.detach())   # theta itself untouched
