import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils import maml, nets, sinusoid
from course_utils.episodes import Episode
from conftest import cuda

D = torch.float64




# ----------------------------------------------------------------------------- fixtures

def mlp_batch(b=3, k=5, q=7, seed=0, dtype=D):
    torch.manual_seed(seed)
    model = nets.sine_mlp(hidden=8).to(dtype)
    batch = sinusoid.sample_sine_tasks(b, k, q, torch.Generator().manual_seed(seed), dtype=dtype)
    return model, batch.tensors()


def bn_conv_batch(b=3, n_way=3, k=2, q=3, seed=0, dtype=D):
    """A small Conv-4 with affine BatchNorm (batch statistics only) and random BN scale/shift."""
    torch.manual_seed(seed)
    model = nets.conv4_classifier(n_way, hidden=4, image_size=16, batch_stats_only=True).to(dtype)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(b, n_way * k, 1, 16, 16, generator=g, dtype=dtype)
    xq = torch.rand(b, n_way * q, 1, 16, 16, generator=g, dtype=dtype)
    ys = torch.arange(n_way).repeat_interleave(k).repeat(b, 1)
    yq = torch.arange(n_way).repeat_interleave(q).repeat(b, 1)
    return model, (xs, ys, xq, yq)


def mean_task_loss(model, params, batch, alpha, steps, loss):
    xs, ys, xq, yq = batch
    with torch.no_grad():
        return sum(maml.task_loss(model, params, xs[i], ys[i], xq[i], yq[i], alpha, steps, loss)
                   for i in range(xs.shape[0])).item() / xs.shape[0]


def fd_directional(model, batch, alpha, steps, loss, direction, eps=1e-6):
    """(L(theta + eps v) - L(theta - eps v)) / (2 eps): the meta-objective's slope along v."""
    theta = {k: v.detach() for k, v in model.named_parameters()}
    plus = {k: theta[k] + eps * direction[k] for k in theta}
    minus = {k: theta[k] - eps * direction[k] for k in theta}
    return (mean_task_loss(model, plus, batch, alpha, steps, loss)
            - mean_task_loss(model, minus, batch, alpha, steps, loss)) / (2 * eps)


def fd_coordinate(model, batch, alpha, steps, loss, name, idx, eps=1e-6):
    theta = {k: v.detach() for k, v in model.named_parameters()}
    e = {k: torch.zeros_like(v) for k, v in theta.items()}
    e[name][idx] = 1.0
    return fd_directional(model, batch, alpha, steps, loss, e, eps)


def dot(g, v):
    return sum((g[k] * v[k]).sum() for k in g).item()


# ----------------------------------------------------------------------------- gradient checks

@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_second_order_meta_gradient_matches_finite_differences_mlp(strategy):
    model, batch = mlp_batch()
    alpha, steps = 0.05, 2
    _, g = maml.meta_gradient(model, *batch, alpha=alpha, steps=steps, strategy=strategy)
    for name, p in model.named_parameters():  # every coordinate
        fd = torch.zeros_like(p)
        for idx in torch.cartesian_prod(*[torch.arange(s) for s in p.shape]).reshape(p.numel(), -1):
            idx = tuple(idx.tolist())
            fd[idx] = fd_coordinate(model, batch, alpha, steps, "mse", name, idx)
        assert torch.allclose(g[name], fd, atol=1e-7, rtol=1e-6), name


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_second_order_meta_gradient_matches_finite_differences_batchnorm_conv(strategy):
    """The case where grad(vmap(grad(...))) is silently wrong in torch 2.13: must hold here."""
    model, batch = bn_conv_batch()
    alpha, steps = 0.4, 2
    _, g = maml.meta_gradient(model, *batch, alpha=alpha, steps=steps, loss="cross_entropy",
                              strategy=strategy)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):  # random directions cover every parameter at once
        v = {k: torch.randn(p.shape, generator=gen, dtype=D) for k, p in model.named_parameters()}
        fd = fd_directional(model, batch, alpha, steps, "cross_entropy", v)
        assert dot(g, v) == pytest.approx(fd, rel=1e-6, abs=1e-8)
    for name, p in model.named_parameters():  # and one coordinate of every tensor (BN scale/shift too)
        idx = (0,) * p.dim()
        fd = fd_coordinate(model, batch, alpha, steps, "cross_entropy", name, idx)
        assert g[name][idx].item() == pytest.approx(fd, rel=1e-6, abs=1e-8), name


def linear_regression_family(seed=0, k=6, q=8, b=4):
    """1-D linear regression tasks y = a x + c + noise; the model f(x) = w x + b is nn.Linear(1, 1)."""
    g = torch.Generator().manual_seed(seed)
    a, c = torch.randn(b, 1, 1, generator=g, dtype=D), torch.randn(b, 1, 1, generator=g, dtype=D)
    xs, xq = torch.randn(b, k, 1, generator=g, dtype=D), torch.randn(b, q, 1, generator=g, dtype=D)
    ys = a * xs + c + 0.1 * torch.randn(b, k, 1, generator=g, dtype=D)
    yq = a * xq + c + 0.1 * torch.randn(b, q, 1, generator=g, dtype=D)
    torch.manual_seed(seed)
    return nn.Linear(1, 1).to(D), (xs, ys, xq, yq)


def closed_form(theta, batch, alpha, steps):
    """Second- and first-order meta-gradients of MSE linear regression, by hand.

    Phi = [x, 1]; grad L(theta) = 2/n Phi^T (Phi theta - y); Hessian H = 2/n Phi^T Phi (constant),
    so after ``steps`` steps the Jacobian d theta' / d theta is (I - alpha H_S)^steps.
    """
    xs, ys, xq, yq = batch
    so, fo = [], []
    for i in range(xs.shape[0]):
        ps = torch.cat([xs[i], torch.ones_like(xs[i])], 1)
        pq = torch.cat([xq[i], torch.ones_like(xq[i])], 1)
        h_s = 2 / len(ps) * ps.T @ ps
        t = theta.clone()
        for _ in range(steps):
            t = t - alpha * 2 / len(ps) * ps.T @ (ps @ t - ys[i][:, 0])
        g_q = 2 / len(pq) * pq.T @ (pq @ t - yq[i][:, 0])
        jac = torch.linalg.matrix_power(torch.eye(2, dtype=D) - alpha * h_s, steps)
        so.append(jac @ g_q)  # the Jacobian is symmetric
        fo.append(g_q)
    return torch.stack(so).mean(0), torch.stack(fo).mean(0)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_first_order_is_second_order_without_the_hessian_term(steps, strategy):
    model, batch = linear_regression_family()
    alpha = 0.1
    theta = torch.cat([model.weight.detach().flatten(), model.bias.detach()])
    want_so, want_fo = closed_form(theta, batch, alpha, steps)
    _, g2 = maml.meta_gradient(model, *batch, alpha=alpha, steps=steps, strategy=strategy)
    _, g1 = maml.meta_gradient(model, *batch, alpha=alpha, steps=steps, first_order=True,
                               strategy=strategy)
    as_vec = lambda g: torch.cat([g["weight"].flatten(), g["bias"]])
    assert torch.allclose(as_vec(g2), want_so, atol=1e-12)
    assert torch.allclose(as_vec(g1), want_fo, atol=1e-12)
    assert not torch.allclose(want_so, want_fo, atol=1e-3)  # the Hessian term matters here


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_first_order_is_the_query_gradient_at_the_adapted_parameters(strategy):
    model, batch = mlp_batch()
    alpha, steps = 0.05, 3
    _, g = maml.meta_gradient(model, *batch, alpha=alpha, steps=steps, first_order=True,
                              strategy=strategy)
    xs, ys, xq, yq = batch
    theta = {k: v.detach() for k, v in model.named_parameters()}
    want = {k: torch.zeros_like(v) for k, v in theta.items()}
    for i in range(xs.shape[0]):
        adapted = maml.adapt(model, theta, xs[i], ys[i], alpha, steps, "mse")
        adapted = {k: v.detach().requires_grad_() for k, v in adapted.items()}
        gi = torch.autograd.grad(F.mse_loss(maml.forward(model, adapted, xq[i]), yq[i]),
                                 list(adapted.values()))
        for k, gk in zip(want, gi):
            want[k] += gk / xs.shape[0]
    for k in want:
        assert torch.allclose(g[k], want[k], atol=1e-12), k


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("make", [mlp_batch, bn_conv_batch])
def test_vmap_and_loop_agree(make, first_order):
    model, batch = make(dtype=torch.float32)
    loss = "mse" if make is mlp_batch else "cross_entropy"
    lv, gv = maml.meta_gradient(model, *batch, alpha=0.1, steps=2, loss=loss, first_order=first_order,
                                strategy="vmap")
    ll, gl = maml.meta_gradient(model, *batch, alpha=0.1, steps=2, loss=loss, first_order=first_order,
                                strategy="loop")
    assert lv.item() == pytest.approx(ll.item(), rel=1e-5)
    for k in gv:
        assert torch.allclose(gv[k], gl[k], atol=1e-5, rtol=1e-3), k
        assert not gv[k].requires_grad and not gl[k].requires_grad


def test_meta_gradient_leaves_the_model_alone_and_returns_mean_query_loss():
    model, batch = mlp_batch()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    loss, _ = maml.meta_gradient(model, *batch, alpha=0.05, steps=2)
    assert loss.item() == pytest.approx(mean_task_loss(model, before, batch, 0.05, 2, "mse"), rel=1e-12)
    for k, v in model.named_parameters():
        assert torch.equal(v, before[k]) and v.grad is None


# ----------------------------------------------------------------------------- behaviour

def test_inner_step_lowers_the_support_loss():
    model, (xs, ys, _, _) = mlp_batch(b=1, k=10)
    theta = dict(model.named_parameters())
    before = F.mse_loss(maml.forward(model, theta, xs[0]), ys[0]).item()
    after = F.mse_loss(maml.forward(model, maml.inner_step(model, theta, xs[0], ys[0], 0.01),
                                    xs[0]), ys[0]).item()
    assert after < before
    cmodel, (cxs, cys, _, _) = bn_conv_batch(b=1)
    ctheta = dict(cmodel.named_parameters())
    b = F.cross_entropy(maml.forward(cmodel, ctheta, cxs[0]), cys[0]).item()
    a = F.cross_entropy(maml.forward(cmodel, maml.adapt(cmodel, ctheta, cxs[0], cys[0], 0.1, 3,
                                                        "cross_entropy"), cxs[0]), cys[0]).item()
    assert a < b


def test_inner_step_is_differentiable_unless_create_graph_is_false():
    model, (xs, ys, _, _) = mlp_batch(b=1)
    theta = {k: v.detach().requires_grad_() for k, v in model.named_parameters()}
    for use_autograd in (False, True):
        so = maml.inner_step(model, theta, xs[0], ys[0], 0.1, use_autograd=use_autograd)
        fo = maml.inner_step(model, theta, xs[0], ys[0], 0.1, create_graph=False,
                             use_autograd=use_autograd)
        w = "2.weight"
        # d theta'/d theta: identity minus alpha times a Hessian block (second order) or exactly identity
        j_so = torch.autograd.grad(so[w].sum(), theta[w], retain_graph=True)[0]
        j_fo = torch.autograd.grad(fo[w].sum(), theta[w])[0]
        assert torch.allclose(j_fo, torch.ones_like(j_fo)) and not torch.allclose(j_so, j_fo)


def test_maml_meta_step_steps_theta_with_the_meta_gradient():
    model, batch = mlp_batch()
    learner = maml.MAML(model, alpha=0.05, steps=2)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    _, g = learner.meta_gradient(*batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = learner.meta_step(opt, *batch)
    assert loss == pytest.approx(mean_task_loss(model, before, batch, 0.05, 2, "mse"), rel=1e-10)
    for k, v in model.named_parameters():
        assert torch.allclose(v.detach(), before[k] - 0.5 * g[k], atol=1e-14), k


STEPS_SINE = 400


def test_meta_training_on_sinusoids_beats_the_unadapted_start():
    torch.manual_seed(0)
    model = nets.sine_mlp()
    learner = maml.MAML(model, alpha=0.01, steps=1, test_steps=5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sampler = sinusoid.SineTaskSampler(10, 10, 10, seed=0)
    test = sinusoid.sample_sine_tasks(100, 10, 10, torch.Generator().manual_seed(123))

    def post_update_mse():
        return sum(F.mse_loss(learner.adapt_predict(test.x_s[i], test.y_s[i], test.x_q[i]),
                              test.y_q[i]).item() for i in range(len(test))) / len(test)
    start = post_update_mse()
    for _ in range(STEPS_SINE):
        learner.meta_step(opt, *next(sampler).tensors())
    assert post_update_mse() < 0.5 * start


def test_separate_test_steps_and_adapt_without_graph():
    model, (xs, ys, xq, _) = mlp_batch(b=1)
    learner = maml.MAML(model, alpha=0.05, steps=1, test_steps=4)
    adapted = learner.adapt(xs[0], ys[0])
    want = maml.adapt(model, dict(model.named_parameters()), xs[0], ys[0], 0.05, 4)
    for k in want:
        assert torch.allclose(adapted[k], want[k].detach()) and not adapted[k].requires_grad
    assert torch.allclose(learner.adapt_predict(xs[0], ys[0], xq[0]),
                          maml.forward(model, want, xq[0]).detach())
    assert torch.equal(learner.adapt(xs[0], ys[0], steps=0)["0.weight"], model[0].weight.detach())


def test_classify_an_episode():
    model, (xs, ys, xq, yq) = bn_conv_batch(b=1, dtype=torch.float32)
    ep = Episode(xs[0], ys[0], xq[0], yq[0], n_way=3, k_shot=2, q_query=3)
    learner = maml.MAML(model, alpha=0.4, steps=1, test_steps=2, loss="cross_entropy")
    logits = learner.classify(ep)
    assert logits.shape == (9, 3) and not logits.requires_grad


def test_choose_strategy():
    assert maml.choose_strategy(nets.sine_mlp()) == "vmap"
    assert maml.choose_strategy(nets.conv4_classifier(5)) == "loop"
    assert maml.choose_strategy(nets.conv4_classifier(5), "cuda") == "vmap"


# ----------------------------------------------------------------------------- bad inputs

def test_running_statistics_are_rejected():
    with pytest.raises(ValueError, match="batch_stats_only=True"):
        maml.MAML(nets.conv4_classifier(5, batch_stats_only=False), alpha=0.4)
    _, batch = bn_conv_batch(dtype=torch.float32)
    with pytest.raises(ValueError, match="running statistics"):
        maml.meta_gradient(nets.conv4_classifier(3, hidden=4, image_size=16, batch_stats_only=False),
                           *batch, alpha=0.4, loss="cross_entropy")


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(alpha=0.0), "positive"),
    (dict(alpha=-0.1), "positive"),
    (dict(alpha=torch.tensor(0.1)), "Meta-SGD"),
    (dict(steps=0), "multi-task"),
    (dict(steps=1.5), "integer"),
    (dict(strategy="parallel"), "strategy"),
    (dict(loss="l1"), "loss must be one of"),
])
def test_bad_settings(kwargs, phrase):
    model, batch = mlp_batch(dtype=torch.float32)
    args = dict(alpha=0.01, steps=1) | kwargs
    with pytest.raises(ValueError, match=phrase):
        maml.meta_gradient(model, *batch, **args)
    with pytest.raises(ValueError, match=phrase):
        maml.MAML(model, **args).meta_gradient(*batch)


def test_bad_batches():
    model, (xs, ys, xq, yq) = mlp_batch(dtype=torch.float32)
    with pytest.raises(ValueError, match="leading task dimension"):
        maml.meta_gradient(model, xs[0, :, 0], ys[0, :, 0], xq[0, :, 0], yq[0, :, 0], alpha=0.01)
    with pytest.raises(ValueError, match="same number of tasks"):
        maml.meta_gradient(model, xs, ys, xq[:2], yq[:2], alpha=0.01)
    with pytest.raises(ValueError, match="pair up"):
        maml.meta_gradient(model, xs, ys[:, :3], xq, yq, alpha=0.01)
    with pytest.raises(ValueError, match="float64"):
        maml.meta_gradient(model, xs.double(), ys.double(), xq.double(), yq.double(), alpha=0.01)
    for strategy in ("vmap", "loop"):
        with pytest.raises(ValueError, match="broadcast"):
            maml.meta_gradient(model, xs, ys[..., 0], xq, yq, alpha=0.01, strategy=strategy)
    with pytest.raises(ValueError, match="no parameters"):
        maml.MAML(nn.ReLU(), alpha=0.1)
    with pytest.raises(ValueError, match="nn.Module"):
        maml.check_model(lambda x: x)


def test_cross_entropy_shape_error():
    model, (xs, ys, xq, yq) = bn_conv_batch(dtype=torch.float32)
    with pytest.raises(ValueError, match="labels"):
        maml.meta_gradient(model, xs, ys[..., None], xq, yq[..., None], alpha=0.1, loss="cross_entropy")


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_cuda_matches_cpu(strategy):
    model, batch = bn_conv_batch(dtype=D)
    _, g_cpu = maml.meta_gradient(model, *batch, alpha=0.4, steps=2, loss="cross_entropy",
                                  strategy=strategy)
    model_gpu = model.to("cuda")
    _, g_gpu = maml.meta_gradient(model_gpu, *(t.cuda() for t in batch), alpha=0.4, steps=2,
                                  loss="cross_entropy", strategy=strategy)
    for k in g_cpu:
        assert g_gpu[k].is_cuda and torch.allclose(g_gpu[k].cpu(), g_cpu[k], atol=1e-10), k


# ----------------------------------------------------------------------------- measuring helpers

def test_adaptation_curve_matches_adapt_and_both_strategies():
    model, batch = mlp_batch()
    xs, ys, xq, yq = batch
    curve = maml.adaptation_curve(model, *batch, alpha=0.05, steps=3)
    assert curve.shape == (3, 4) and not curve.requires_grad
    theta = {k: v.detach() for k, v in model.named_parameters()}
    for i in range(3):
        for s in range(4):
            p = maml.adapt(model, theta, xs[i], ys[i], 0.05, s)
            assert curve[i, s].item() == pytest.approx(F.mse_loss(maml.forward(model, p, xq[i]),
                                                                  yq[i]).item(), rel=1e-10)
    loop = maml.adaptation_curve(model, *batch, alpha=0.05, steps=3, strategy="loop")
    assert torch.allclose(curve, loop, atol=1e-12)
    assert (curve[:, 1] < curve[:, 0]).float().mean() >= 0.5  # adapting mostly helps


def test_saved_tensor_bytes_second_order_grows_with_steps_first_order_does_not():
    model, (xs, ys, xq, yq) = mlp_batch(b=1)
    theta = {k: v.detach().requires_grad_() for k, v in model.named_parameters()}

    def size(steps, fo):
        loss, n = maml.saved_tensor_bytes(lambda: maml.task_loss(
            model, theta, xs[0], ys[0], xq[0], yq[0], 0.05, steps, create_graph=not fo, use_autograd=True))
        assert loss.requires_grad
        return n
    assert size(1, True) == size(4, True) > 0
    assert size(4, False) > size(1, False) > size(1, True)


def test_keep_freed_cpu_memory_is_idempotent_and_can_be_switched_off(monkeypatch):
    from course_utils import devices
    first = devices.keep_freed_cpu_memory()
    assert isinstance(first, bool) and devices.keep_freed_cpu_memory() == first
    assert maml.keep_freed_cpu_memory is devices.keep_freed_cpu_memory   # the old name still works
    monkeypatch.setattr(devices, "_MALLOC_TUNED", False)
    monkeypatch.setenv("COURSE_MALLOC_TUNING", "0")
    assert devices.keep_freed_cpu_memory() is False


def test_malloc_setting_is_applied_by_pick_device_not_by_gradient_functions(monkeypatch):
    """A process-wide setting belongs where the notebook picks its device, not inside meta_gradient."""
    from course_utils import devices
    calls = []
    monkeypatch.setattr(devices, "keep_freed_cpu_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(maml, "keep_freed_cpu_memory", lambda: calls.append(1) or True)
    model = nets.sine_mlp(hidden=8).double()
    xs, ys, xq, yq = (torch.randn(2, 5, 1, dtype=torch.float64) for _ in range(4))
    learner = maml.MAML(model, 0.1, 1)
    learner.meta_gradient(xs, ys, xq, yq)
    learner.adapt(xs[0], ys[0])
    assert calls == []
    assert devices.pick_device("cpu").type == "cpu" and calls == [1]


def test_inner_step_takes_the_exercise_s_arguments_in_the_exercise_s_order():
    """maml.inner_step(model, params, x_s, y_s, alpha, loss_fn, create_graph) as exercise 3.1."""
    import inspect
    names = list(inspect.signature(maml.inner_step).parameters)
    assert names[:7] == ["model", "params", "x_s", "y_s", "alpha", "loss_fn", "create_graph"]
    assert inspect.signature(maml.inner_step).parameters["create_graph"].default is True
    for fn in (maml.adapt, maml.task_loss):
        params = inspect.signature(fn).parameters
        assert "loss_fn" in params and params["create_graph"].default is True
    model, (xs, ys, xq, yq) = mlp_batch(b=1)
    theta = {k: v.detach().requires_grad_() for k, v in model.named_parameters()}
    # positional, as the exercise calls it: F.mse_loss, create_graph=False
    a = maml.inner_step(model, theta, xs[0], ys[0], 0.1, F.mse_loss, False)
    assert all(not torch.equal(a[k], theta[k]) for k in theta)
    j = torch.autograd.grad(a["2.weight"].sum(), theta["2.weight"])[0]
    assert torch.allclose(j, torch.ones_like(j))


def test_adapt_keeps_first_order_as_an_alias_of_create_graph_false():
    model, (xs, ys, _, _) = mlp_batch(b=1)
    theta = {k: v.detach().requires_grad_() for k, v in model.named_parameters()}
    old = maml.adapt(model, theta, xs[0], ys[0], 0.05, 2, first_order=True)
    new = maml.adapt(model, theta, xs[0], ys[0], 0.05, 2, create_graph=False)
    so = maml.adapt(model, theta, xs[0], ys[0], 0.05, 2)
    w = "2.weight"
    jo, jn, js = (torch.autograd.grad(d[w].sum(), theta[w], retain_graph=True)[0] for d in (old, new, so))
    assert torch.equal(old[w], new[w]) and torch.equal(jo, jn) and not torch.allclose(jn, js)


def test_first_order_task_loss_gradient_is_the_fomaml_gradient():
    model, (xs, ys, xq, yq) = mlp_batch(b=1)
    theta = {k: v.detach().requires_grad_() for k, v in model.named_parameters()}
    li = maml.task_loss(model, theta, xs[0], ys[0], xq[0], yq[0], 0.05, 3, create_graph=False,
                        use_autograd=True)
    g = dict(zip(theta, torch.autograd.grad(li, list(theta.values()))))
    _, want = maml.meta_gradient(model, xs, ys, xq, yq, alpha=0.05, steps=3, first_order=True)
    for k in theta:
        assert torch.allclose(g[k], want[k], atol=1e-12), k


def test_zero_head_first_step_writes_prototypes_and_stays_zero_after_meta_steps():
    torch.manual_seed(0)
    model = nets.conv4_classifier(5, hidden=4, batch_stats_only=True).double()
    learner = maml.MAML(model, 0.4, 1, loss="cross_entropy", zero_head=True)
    head = maml.classifier_head(model)
    assert head.weight.abs().sum() == 0 and head.bias.abs().sum() == 0
    x = torch.rand(2, 10, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(5).repeat(2).repeat(2, 1)
    theta = {k: v.detach().clone() for k, v in model.named_parameters()}
    w = maml.inner_step(model, theta, x[0], y[0], 0.4, "cross_entropy", create_graph=False)
    with torch.no_grad():
        feats = model[:-1](x[0])                       # the body, with theta's own values
    mu = torch.stack([feats[y[0] == n].mean(0) for n in range(5)])
    assert torch.allclose(w[f"{len(model) - 1}.weight"], 0.4 / 5 * (mu - feats.mean(0)), atol=1e-12)
    for k in theta:
        if not k.startswith(str(len(model) - 1)):
            assert torch.equal(w[k], theta[k]), f"{k} moved in the first step from a zero head"
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    learner.meta_step(opt, x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])
    assert head.weight.abs().sum() == 0 and head.bias.abs().sum() == 0
    assert any((p - theta[k]).abs().sum() > 0 for k, p in model.named_parameters())   # the body learnt
    with pytest.raises(ValueError, match="nn.Linear"):
        maml.MAML(nn.Sequential(nn.Conv2d(1, 2, 3)), 0.1, zero_head=True)


@pytest.mark.parametrize("steps, first_order", [(1, False), (2, False), (1, True)])
def test_channels_last_loop_computes_the_same_meta_gradient(monkeypatch, steps, first_order):
    """The CPU loop feeds images channels-last for speed; in float64 it must give the NCHW numbers."""
    torch.manual_seed(0)
    model = nets.conv4_classifier(5, hidden=4, batch_stats_only=True).double()
    x = torch.rand(2, 10, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(5).repeat(2).repeat(2, 1)
    args = (model, x[:, :5], y[:, :5], x[:, 5:], y[:, 5:], 0.4, steps, "cross_entropy", first_order, "loop")
    loss_cl, g_cl = maml.meta_gradient(*args)
    monkeypatch.setattr(maml, "_CPU_CHANNELS_LAST", False)
    loss, g = maml.meta_gradient(*args)
    assert torch.allclose(loss_cl, loss, atol=1e-12)
    assert max((g_cl[k] - g[k]).abs().max().item() for k in g) < 1e-10
