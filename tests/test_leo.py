"""LEO (Rusu et al. 2019): shapes, the closed-form KL, the orthogonality penalty, the latent inner
loop, gradient flow to every meta-parameter, and clear errors on bad input."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from conftest import cuda
from course_utils import training
from course_utils import leo
from course_utils.episodes import ClassSet, Episode, sample_episode

D_FEAT = 12


def feature_episode(n=5, k=2, q=3, d=D_FEAT, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n, d, generator=g)
    xs = centres.repeat_interleave(k, 0) + 0.3 * torch.randn(n * k, d, generator=g)
    xq = centres.repeat_interleave(q, 0) + 0.3 * torch.randn(n * q, d, generator=g)
    lab = torch.arange(n)
    return Episode(xs, lab.repeat_interleave(k), xq, lab.repeat_interleave(q), n, k, q)


def model(**kw):
    torch.manual_seed(0)
    return leo.LEO(D_FEAT, **{"n_z": 4, "inner_steps": 3, "finetune_steps": 2, **kw})


def test_encoder_and_decoder_shapes():
    m, ep = model(), feature_episode()
    x_s = m.features(ep.support_x)
    mu, lv = m.encode(x_s, 5, 2)
    assert mu.shape == lv.shape == (5, 4)
    mu_e, _ = m.encode(x_s, 5, 2, per_example=True)
    assert mu_e.shape == (10, 4)
    assert torch.allclose(mu_e.reshape(5, 2, 4).mean(1), mu, atol=1e-6)
    mu_w, lv_w = m.decode(mu)
    assert mu_w.shape == lv_w.shape == (5, D_FEAT)     # one weight vector per class, feature-sized
    out = leo.leo_forward(m, ep)
    assert out.logits.shape == (15, 5) and out.w.shape == (5, D_FEAT)
    assert out.z_init.shape == out.z_adapted.shape == (5, 4) and out.loss.dim() == 0


def test_relation_net_sees_all_pairs():
    """Changing another class's support example changes this class's code (pairs across classes)."""
    m, ep = model(), feature_episode()
    x_s = m.features(ep.support_x)
    mu, _ = m.encode(x_s, 5, 2)
    x2 = x_s.clone()
    x2[9] = -x2[9]                                   # class 4's second example
    mu2, _ = m.encode(x2, 5, 2)
    assert not torch.allclose(mu[0], mu2[0])


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu, lv = torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)
    want = kl_divergence(Normal(mu, torch.exp(0.5 * lv)), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    assert torch.allclose(leo.gaussian_kl(mu, lv), want, atol=1e-12)
    _, kl = leo.sample_gaussian(mu, lv, torch.zeros_like(mu))
    assert torch.allclose(kl, want, atol=1e-12)
    assert torch.allclose(leo.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))


def test_sample_is_reparameterised():
    mu = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(2, 3, dtype=torch.float64)
    s, _ = leo.sample_gaussian(mu, lv, eps)
    assert torch.allclose(s, mu + torch.exp(lv / 2) * eps)
    g_mu, g_lv = torch.autograd.grad(s.sum(), [mu, lv])
    assert torch.allclose(g_mu, torch.ones_like(mu)) and torch.allclose(g_lv, 0.5 * torch.exp(lv / 2) * eps)
    # the sample's distribution: mean mu, std exp(lv / 2)
    big = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m0, l0 = torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    s, _ = leo.sample_gaussian(m0.expand(20000, 3), l0.expand(20000, 3), big)
    assert torch.allclose(s.mean(0), m0, atol=0.05) and torch.allclose(s.std(0), torch.exp(l0 / 2), rtol=0.03)


def test_orthogonality_penalty():
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    rows = q[:4] * torch.tensor([[1.0], [3.0], [0.2], [7.0]], dtype=torch.float64)  # orthogonal, any lengths
    assert leo.orthogonality_penalty(rows).item() == pytest.approx(0.0, abs=1e-20)
    W = torch.randn(4, 8, dtype=torch.float64)
    assert leo.orthogonality_penalty(W).item() > 1e-4
    same = torch.ones(3, 5)
    assert leo.orthogonality_penalty(same).item() == pytest.approx(6 / 9, rel=1e-5)  # off-diagonal all 1


def test_latent_inner_loop_lowers_support_loss():
    m, ep = model(alpha=0.5), feature_episode()
    m.eval()                                          # means, no noise: a deterministic loss of z
    x_s = m.features(ep.support_x)

    def loss_of(z):
        mu_w, _ = m.decode(z)
        return F.cross_entropy(m.logits(x_s, mu_w), ep.support_y)
    z, _ = m.encode(x_s, 5, 2)
    losses = [loss_of(z).item()]
    for _ in range(5):
        z = leo.latent_step(z, loss_of, m.alpha)
        losses.append(loss_of(z).item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    out = leo.leo_forward(m, ep)
    assert out.support_losses[-1] < out.support_losses[0]


def test_latent_step_keeps_the_graph():
    z0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    W = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    z1 = leo.latent_step(z0, lambda z: ((z @ W) ** 2).sum(), 0.1)
    # z1 = z0 - 0.2 z0 W W^T: its gradient w.r.t. W exists only through the inner gradient
    gW, = torch.autograd.grad(z1.sum(), W)
    eps = 1e-6
    num = torch.zeros_like(W)
    for i in range(2):
        for j in range(2):
            Wp, Wm = W.detach().clone(), W.detach().clone()
            Wp[i, j] += eps
            Wm[i, j] -= eps
            f = lambda w: (z0.detach() - 0.2 * z0.detach() @ w @ w.T).sum()
            num[i, j] = (f(Wp) - f(Wm)) / (2 * eps)
    assert torch.allclose(gW, num, atol=1e-7)


def test_gradients_reach_every_meta_parameter():
    m, ep = model(), feature_episode()
    m.train()
    out = leo.leo_forward(m, ep)
    out.loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_eval_works_under_no_grad_and_is_deterministic():
    m, ep = model(), feature_episode()
    m.eval()
    with torch.no_grad():
        a = leo.episode_loss(m, ep)[1]
        b = leo.episode_loss(m, ep)[1]
    assert torch.equal(a, b)


def test_objective_terms():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 3, generator=g), torch.tensor([0, 0, 1, 1, 2, 2])
    kl = torch.rand(3, generator=g)
    z0 = torch.randn(3, 4, generator=g, requires_grad=True)
    z1 = (z0.detach() + 1).requires_grad_()
    W = torch.randn(4, 6, generator=g)
    weights = [torch.ones(2, 3), 2 * torch.ones(4)]                 # sum of squares: 6 + 16
    out = leo.leo_objective(logits, y, kl, z0, z1, W, weights, 0.5, 0.25, 0.01, 0.1)
    want = (F.cross_entropy(logits, y) + 0.5 * kl.mean() + 0.25 * 1.0 + 0.01 * 22.0
            + 0.1 * leo.orthogonality_penalty(W))
    assert torch.allclose(out, want)
    g0, g1 = torch.autograd.grad(out, [z0, z1], allow_unused=True)
    assert g1 is None                                   # the stop-gradient on z'
    assert torch.allclose(g0, torch.full_like(g0, 2 * 0.25 * -1 / 12))


def test_weight_decay_covers_the_networks_not_the_step_sizes():
    m = model()
    names = [n for n, p in m.named_parameters() if any(p is w for w in m.decayed_weights())]
    assert set(names) == {"decoder_weight", "encoder.weight", "relation.0.weight", "relation.2.weight",
                          "relation.4.weight"}
    assert torch.allclose(m.l2_penalty(), sum(p.pow(2).sum() for n, p in m.named_parameters()
                                              if n not in {"alpha", "eta"}))
    assert "lambda_1=0.0001" in repr(m) and "lambda_2=0.001" in repr(m)


def test_latent_step_first_order():
    z0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    W = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    loss = lambda z: ((z @ W) ** 2).sum()  # noqa: E731
    z1 = leo.latent_step(z0, loss, 0.1, create_graph=False)
    assert torch.allclose(z1, leo.latent_step(z0, loss, 0.1))           # the same value
    gW, gz = torch.autograd.grad(z1.sum(), [W, z0], allow_unused=True)
    assert gW is None                                                   # the gradient is a constant
    assert torch.allclose(gz, torch.ones_like(z0))                      # z' is still a function of z


def test_evaluation_is_first_order_and_training_second_order():
    m, ep = model(), feature_episode()
    seen = []

    def recording_step(z, support_loss, alpha, create_graph=True):
        seen.append(create_graph)
        return leo.latent_step(z, support_loss, alpha, create_graph=create_graph)
    m.train()
    leo.leo_forward(m, ep, step=recording_step)
    assert seen == [True] * (m.inner_steps + m.finetune_steps)
    seen.clear()
    m.eval()
    with torch.no_grad():
        a = leo.leo_forward(m, ep, step=recording_step)
    assert seen == [False] * (m.inner_steps + m.finetune_steps)
    assert a.z_init.grad_fn is None                                     # adapted from a detached copy
    second = leo.leo_forward(m, ep, create_graph=True)
    assert torch.allclose(a.logits, second.logits, atol=1e-6)          # first order: the same predictions


def test_trains_on_a_feature_class_set():
    from course_utils.episodic import train_episodic
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 1, D_FEAT, generator=g)
    cs = ClassSet(centres + 0.5 * torch.randn(30, 10, D_FEAT, generator=g), [f"c{i}" for i in range(30)],
                  ["a"] * 30, "toy features")
    m = model(inner_steps=2, finetune_steps=1)
    hist = train_episodic(m, leo.episode_loss, cs, 5, 1, 5, steps=20, lr=3e-3)
    assert len(hist.values["loss"]) == 20 and all(torch.isfinite(torch.tensor(hist.values["loss"])))
    ep = sample_episode(cs, 5, 1, 5, torch.Generator().manual_seed(1))
    assert leo.leo_forward(m, ep).logits.shape == (25, 5)


@pytest.mark.parametrize("kw, phrase", [
    ({"feature_dim": 0}, "feature_dim"), ({"n_z": 0}, "n_z"), ({"inner_steps": -1}, "inner_steps"),
    ({"alpha": 0.0}, "alpha"), ({"beta": -1.0}, "beta"), ({"lambda_1": -1.0}, "lambda_1"),
    ({"lambda_2": -1.0}, "lambda_2"), ({"dropout": 1.0}, "dropout"),
])
def test_bad_hyperparameters(kw, phrase):
    with pytest.raises(ValueError, match=phrase):
        leo.LEO(**{"feature_dim": D_FEAT, **kw})


def test_bad_episodes():
    m = model()
    ep = feature_episode()
    shuffled = Episode(ep.support_x.flip(0), ep.support_y.flip(0), ep.query_x, ep.query_y, 5, 2, 3)
    with pytest.raises(ValueError, match="class-major"):
        leo.leo_forward(m, shuffled)
    wrong_dim = feature_episode(d=D_FEAT + 1)
    with pytest.raises(ValueError, match="feature_dim"):
        leo.leo_forward(m, wrong_dim)
    images = Episode(torch.rand(10, 1, 4, 4), ep.support_y, torch.rand(15, 1, 4, 4), ep.query_y, 5, 2, 3)
    with pytest.raises(ValueError, match="embed"):
        leo.leo_forward(m, images)
    batch = Episode(ep.support_x[None], ep.support_y[None], ep.query_x[None], ep.query_y[None], 5, 2, 3)
    with pytest.raises(ValueError, match="meta-batch"):
        leo.leo_forward(m, batch)
    with pytest.raises(ValueError, match="LEO"):
        leo.leo_forward(torch.nn.Linear(2, 2), ep)
    with pytest.raises(ValueError, match="n_way \\* k_shot"):
        m.encode(m.features(ep.support_x), 5, 3)


def test_bad_pieces():
    with pytest.raises(ValueError, match="same shape"):
        leo.sample_gaussian(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="requires grad"):
        leo.latent_step(torch.zeros(2, 3), lambda z: z.sum(), 0.1)
    with pytest.raises(ValueError, match="scalar"):
        leo.latent_step(torch.zeros(2, 3, requires_grad=True), lambda z: z * 2, 0.1)
    with pytest.raises(ValueError, match="2-D"):
        leo.orthogonality_penalty(torch.zeros(3))


@cuda
@pytest.mark.cuda
def test_runs_on_cuda():
    m, ep = model().cuda(), feature_episode().to("cuda")
    out = leo.leo_forward(m, ep)
    out.loss.backward()
    assert out.logits.device.type == "cuda" and m.decoder_weight.grad.device.type == "cuda"


@cuda
@pytest.mark.cuda
def test_cuda_matches_cpu():
    m, ep = model(), feature_episode()
    m.eval()
    with torch.no_grad():
        cpu = leo.leo_forward(m, ep).logits
        gpu = leo.leo_forward(m.cuda(), ep.to("cuda")).logits
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-4)


# --- chapter 06's caches: every setting and every piece of code the training reads is in the key -------

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions" / "06_leo.ipynb"


def _notebook_code() -> str:
    import nbformat
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code" and not c.source.startswith("%"))


def _defs(source: str, names: set) -> dict:
    """The notebook's function definitions and settings dicts, as nodes by name (no cell is run)."""
    import ast
    out = {}
    for node in ast.parse(source.replace("%matplotlib inline", "")).body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            out[node.name] = node
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", None) in names:
            out[node.targets[0].id] = node
    return out


@pytest.fixture
def notebook_namespace():
    """The notebook's training functions and settings, defined in a fresh namespace named __main__
    (as in a kernel), with stand-ins for the data; nothing is trained."""
    import ast
    from course_utils import baselines, budget, maml, nets
    from course_utils.episodes import EpisodeSampler
    from course_utils.episodic import train_episodic
    from course_utils.training import train_loop
    names = {"LEO_CFG", "TRAIN", "MAML_CFG", "train_leo", "leo_episode", "train_maml", "maml_head", "pretrain", "embed"}
    nodes = _defs(_notebook_code(), names)
    assert set(nodes) == names, f"the notebook no longer defines {names - set(nodes)}"
    ns = {"__name__": "__main__", "torch": torch, "F": F, "nn": torch.nn, "leo": leo, "maml": maml,
          "baselines": baselines, "nets": nets, "budget": budget, "EpisodeSampler": EpisodeSampler,
          "train_episodic": train_episodic, "train_loop": train_loop, "D": 32, "device": torch.device("cpu"),
          "features": {"meta": "meta features", "test": "test features"},
          "pre_classes": "pre", "meta_classes": "meta", "test_classes": "test",
          "latent_step": leo.latent_step, "sample_gaussian": leo.sample_gaussian, "leo_objective": leo.leo_objective,
          "PRE": dict(data="omniglot", classes="abc", n_pre=400, seed=0, lr=1e-3, steps=300, batch_size=64, hidden=32),
          "stored": {"state": {"w": torch.arange(100.0)}}, "k": 1}
    exec(compile(ast.Module(body=list(nodes.values()), type_ignores=[]), "<06_leo.ipynb>", "exec"), ns)
    exec("train_leo_k = lambda: train_leo(k)\ntrain_maml_k = lambda: train_maml(k)", ns)
    return ns


def _changed(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v * 2 + 0.1
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, dict):
        return {**v, next(iter(v)): _changed(next(iter(v.values())))}
    raise TypeError(type(v))


@pytest.mark.parametrize("train, settings, config", [
    ("train_leo_k", "LEO_CFG", {"k": 1}), ("train_leo_k", "TRAIN", {"k": 1}),
    ("train_maml_k", "MAML_CFG", {"k": 1}), ("pretrain", "PRE", {}),
])
def test_every_setting_of_a_cached_training_is_in_its_key(notebook_namespace, train, settings, config):
    ns = notebook_namespace
    key = lambda: training.cache_key("ch06", config, ns[train])  # noqa: E731
    before = key()
    original = dict(ns[settings])
    assert original, settings
    for field, value in original.items():
        ns[settings] = {**original, field: _changed(value)}
        assert key() != before, f"changing {settings}[{field!r}] leaves the cache key of {train} unchanged"
    ns[settings] = original
    assert key() == before


def test_leo_cache_key_covers_alpha_eta_and_the_episode_code(notebook_namespace):
    ns = notebook_namespace
    key = lambda: training.cache_key("ch06-leo-1shot", {"k": 1}, ns["train_leo_k"])  # noqa: E731
    before = key()
    for field in ("alpha", "eta"):                      # not in repr(LEO): the case
        ns["LEO_CFG"] = {**ns["LEO_CFG"], field: ns["LEO_CFG"][field] + 0.5}
        assert key() != before
        before = key()
    import ast
    source = ast.unparse(_defs(_notebook_code(), {"leo_episode"})["leo_episode"]).replace("model.gamma", "2 * model.gamma")
    exec(compile(source, "<edited leo_episode>", "exec"), ns)
    assert key() != before, "a change in leo_episode's body must retrain"
    before = key()

    def sample_gaussian(mu, log_var, eps):            # the student's own function (defined in __main__)
        return leo.sample_gaussian(mu, log_var, eps)
    sample_gaussian.__module__ = "__main__"
    ns["sample_gaussian"] = sample_gaussian
    assert key() != before
    ns["k"] = 5
    assert key() != before


def test_embedding_weights_are_in_the_features_key(notebook_namespace):
    ns = notebook_namespace
    before = training.cache_key("ch06-features", {}, ns["embed"])
    ns["stored"] = {"state": {"w": torch.arange(100.0) + 1}}
    assert training.cache_key("ch06-features", {}, ns["embed"]) != before


def test_notebook_caches_through_the_train_functions():
    code = _notebook_code()
    assert 'load_or_train(f"ch06-leo-{k}shot", {**PRE, "n_meta": N_META, "k": k}, lambda: train_leo(k))' in code
    assert "lambda: train_maml(k)" in code and 'load_or_train("ch06-pretrain", PRE, pretrain)' in code
    assert "train_or_load(" not in code        # its key reads repr(LEO), which lacks alpha and eta
