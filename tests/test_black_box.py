"""Black-box meta-learning (MANN, SNAIL, CS330 HW1): sequence layouts, MANN's one-step label offset
and the leak without it, causality, the masked loss, label permutation, episodic training of a
BlackBoxLearner, Santoro's per-instance accuracy, and clear errors on bad input."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import cuda, toy_classes
from course_utils import black_box as bb
from course_utils.episodes import ClassSet, Episode, sample_episode
from course_utils.episodic import make_classifier, train_episodic, _scores_of
from course_utils.evaluation import evaluate, mean_ci95
from course_utils.protonet import check_class_major

D = 16


def clusters(n_classes: int, n_examples: int, seed: int, d: int = D, noise: float = 0.3) -> ClassSet:
    """Gaussian-cluster "images": every class a random centre in R^d, examples centre + noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_classes, 1, d, generator=g) + noise * torch.randn(n_classes, n_examples, d, generator=g)
    names = [f"s{seed}/c{i:03d}" for i in range(n_classes)]
    return ClassSet(x, names, [f"s{seed}"] * n_classes, f"clusters {seed}")


class NearestLabel(nn.Module):
    """A hand-written black-box learner: at each step, the label of the nearest earlier step that
    shows one (1-NN over the sequence read so far). Perfect on well-separated clusters."""

    def __init__(self, in_dim: int, n_way: int):
        super().__init__()
        self.in_dim, self.n_way = in_dim, n_way
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, inputs):
        z, e = inputs[..., :self.in_dim], inputs[..., self.in_dim:]
        T = inputs.shape[-2]
        dist = torch.cdist(z, z)
        bad = bb.causal_mask(T, inputs.device) | (e.sum(-1) == 0).unsqueeze(-2)
        nearest = dist.masked_fill(bad, float("inf")).argmin(-1)
        return 10 * torch.gather(e, -2, nearest.unsqueeze(-1).expand_as(e)) + self.bias


def episode(n=3, k=2, q=3, seed=0, pool=None):
    return sample_episode(pool or clusters(12, 10, 99), n, k, q, torch.Generator().manual_seed(seed))


def transformer_learner(n=3, seed=0, queries="each", **kw):
    torch.manual_seed(seed)
    return bb.BlackBoxLearner(nn.Flatten(), bb.BlackBoxTransformer(D, n, **{"d_model": 32, "heads": 2,
                              "layers": 1, "max_len": 64, **kw}), n, seed=seed, queries=queries)


# ----------------------------------------------------------------------------- sequences

def test_build_sequence_shifts_labels_one_step():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 4, generator=g), torch.tensor([2, 0, 1, 1, 0, 2])
    inputs, targets = bb.build_sequence(x, y, 3)
    assert inputs.shape == (6, 7) and targets is y
    assert torch.equal(inputs[:, :4], x)
    assert torch.equal(inputs[0, 4:], torch.zeros(3))               # nothing shown before t = 0
    for t in range(1, 6):
        assert torch.equal(inputs[t, 4:], F.one_hot(y[t - 1], 3).float())
    leak, _ = bb.build_sequence(x, y, 3, shift=False)                # the bug: the answer in the input
    assert torch.equal(leak[:, 4:], F.one_hot(y, 3).float())


def test_build_sequence_batched_and_dtype():
    x, y = torch.randn(2, 5, 3, dtype=torch.float64), torch.randint(0, 4, (2, 5))
    inputs, _ = bb.build_sequence(x, y, 4)
    assert inputs.shape == (2, 5, 7) and inputs.dtype == torch.float64
    for b in range(2):
        assert torch.equal(inputs[b], bb.build_sequence(x[b], y[b], 4)[0])


def test_episode_sequence_layout():
    zs, ys = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    zq, yq = torch.randn(3, 4), torch.tensor([2, 0, 1])
    inputs, targets, mask = bb.episode_sequence(zs, ys, zq, 3, y_query=yq,
                                                generator=torch.Generator().manual_seed(1))
    assert inputs.shape == (9, 7) and targets.shape == (9,) and mask.dtype == torch.bool
    assert torch.equal(mask, torch.tensor([False] * 6 + [True] * 3))   # exactly the query positions
    assert torch.equal(inputs[6:, :4], zq) and torch.equal(inputs[6:, 4:], torch.zeros(3, 3))
    assert torch.equal(targets[6:], yq)
    # each support row shows its OWN label, and the (z, y) pairs are the given ones, shuffled
    assert torch.equal(inputs[:6, 4:], F.one_hot(targets[:6], 3).float())
    pairs = {tuple(r.tolist()) for r in torch.cat([zs, F.one_hot(ys, 3).float()], 1)}
    assert {tuple(r.tolist()) for r in inputs[:6]} == pairs
    orders = {tuple(bb.episode_sequence(zs, ys, zq, 3, generator=torch.Generator().manual_seed(s))[1][:6]
                    .tolist()) for s in range(10)}
    assert len(orders) >= 5                                          # not kept class-major
    _, t_unknown, _ = bb.episode_sequence(zs, ys, zq, 3)
    assert torch.equal(t_unknown[6:], torch.full((3,), -100))


# ----------------------------------------------------------------------------- the label leak

def _train_lstm(shift: bool, steps: int = 40, n: int = 5, T: int = 10, seed: int = 0):
    torch.manual_seed(seed)
    net = bb.BlackBoxLSTM(8, n, hidden=32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(32, T, 8, generator=g), torch.randint(0, n, (32, T), generator=g)
        inputs, targets = bb.build_sequence(x, y, n, shift=shift)
        loss = F.cross_entropy(net(inputs).reshape(-1, n), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = torch.randn(1000, T, 8, generator=g), torch.randint(0, n, (1000, T), generator=g)
    with torch.no_grad():
        right = net(bb.build_sequence(x, y, n, shift=shift)[0]).argmax(-1) == y
    return right.float().mean(0)                                    # accuracy per position


def test_leaked_labels_are_copied_shifted_ones_are_not():
    """Random features, random labels: nothing to learn. With the leak the net copies the label from
    its input (near 100% in 40 steps); with MANN's offset it stays at chance, at t = 0 above all."""
    leaked = _train_lstm(shift=False)
    assert leaked.min() > 0.95
    shifted = _train_lstm(shift=True)
    assert abs(shifted[0].item() - 0.2) < 0.05 and shifted.mean() < 0.26


# ----------------------------------------------------------------------------- learners and causality

def test_causal_mask():
    m = bb.causal_mask(4)
    assert m.dtype == torch.bool and m.shape == (4, 4)
    assert torch.equal(m, torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]]).bool())


@pytest.mark.parametrize("make", [lambda: bb.BlackBoxTransformer(5, 3, d_model=16, heads=2, layers=2, max_len=12),
                                  lambda: bb.BlackBoxLSTM(5, 3, hidden=16, layers=2)])
def test_learners_shapes_and_causality(make):
    torch.manual_seed(0)
    net = make().eval()
    x = torch.randn(2, 10, 8)
    out = net(x)
    assert out.shape == (2, 10, 3) and net(x[0]).shape == (10, 3)
    assert torch.allclose(net(x[0]), out[0], atol=1e-5)
    x2 = x.clone()
    x2[:, 6] = torch.randn(2, 8)                                     # change the future at t = 6
    out2 = net(x2)
    assert torch.allclose(out2[:, :6], out[:, :6], atol=1e-6)       # the past does not see it
    assert not torch.allclose(out2[:, 6:], out[:, 6:], atol=1e-4)   # t = 6 and later do
    assert (out2[:, 7:] - out[:, 7:]).abs().amax() > 1e-4


def test_causality_check_catches_a_missing_mask(monkeypatch):
    """The check above can fail: with a mask that forbids nothing, earlier logits change."""
    torch.manual_seed(0)
    net = bb.BlackBoxTransformer(5, 3, d_model=16, heads=2, layers=1, max_len=12).eval()
    monkeypatch.setattr(bb, "causal_mask", lambda T, device=None: torch.zeros(T, T, dtype=torch.bool))
    x = torch.randn(1, 10, 8)
    x2 = x.clone()
    x2[:, 6] += 1
    assert not torch.allclose(net(x2)[:, :6], net(x)[:, :6], atol=1e-6)


def test_sequence_loss_is_cross_entropy_on_the_mask_only():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(2, 5, 3, generator=g), torch.randint(0, 3, (2, 5), generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 0, 0, 1]]).bool()
    loss = bb.sequence_loss(logits, targets, mask)
    by_hand = -torch.stack([F.log_softmax(logits[b, t], -1)[targets[b, t]]
                            for b in range(2) for t in range(5) if mask[b, t]]).mean()
    assert torch.allclose(loss, by_hand, atol=1e-6)
    other_logits, other_targets = logits.clone(), targets.clone()
    other_logits[~mask] = 100 * torch.randn(int((~mask).sum()), 3)
    other_targets[~mask] = -100                                      # unknown labels off the mask are fine
    assert torch.allclose(bb.sequence_loss(other_logits, other_targets, mask), loss, atol=1e-6)
    assert torch.allclose(bb.sequence_loss(logits[0], targets[0], mask[0]),
                          F.cross_entropy(logits[0, 2:4], targets[0, 2:4]), atol=1e-6)


# ----------------------------------------------------------------------------- label permutation

def test_permute_labels_is_a_consistent_bijection():
    ep = sample_episode(toy_classes(), 5, 2, 3, torch.Generator().manual_seed(0))
    old = (ep.support_x.clone(), ep.support_y.clone(), list(ep.classes))
    new = bb.permute_labels(ep, torch.Generator().manual_seed(3))
    check_class_major(new)                                           # supports stay grouped, sorted
    assert torch.equal(new.query_y, ep.query_y)                      # same label counts, class-major
    mapping = {}

    def old_label(x_row, xs, ys):
        hit = [i for i in range(len(xs)) if torch.equal(xs[i], x_row)]
        assert len(hit) == 1
        return int(ys[hit[0]])
    for xs_new, ys_new, xs_old, ys_old in ((new.support_x, new.support_y, ep.support_x, ep.support_y),
                                           (new.query_x, new.query_y, ep.query_x, ep.query_y)):
        for i in range(len(xs_new)):
            o = old_label(xs_new[i], xs_old, ys_old)
            assert mapping.setdefault(o, int(ys_new[i])) == int(ys_new[i])   # one map for S and Q
    assert sorted(mapping) == sorted(mapping.values()) == list(range(5))     # a bijection
    assert mapping != {c: c for c in range(5)}
    for o, n in mapping.items():
        assert new.classes[n] == ep.classes[o]
    assert torch.equal(ep.support_x, old[0]) and torch.equal(ep.support_y, old[1]) and ep.classes == old[2]


def test_permute_labels_differs_across_calls_and_repeats_with_a_seed():
    ep = episode(n=5, k=1, q=1)
    g = torch.Generator().manual_seed(0)
    seen = {tuple(bb.permute_labels(ep, g).classes) for _ in range(20)}
    assert len(seen) >= 10
    a = bb.permute_labels(ep, torch.Generator().manual_seed(7))
    b = bb.permute_labels(ep, torch.Generator().manual_seed(7))
    assert a.classes == b.classes and torch.equal(a.support_x, b.support_x)


# ----------------------------------------------------------------------------- BlackBoxLearner

@pytest.mark.parametrize("queries", ["each", "together"])
def test_learner_returns_query_logits_in_query_order(queries):
    """A 1-NN learner through BlackBoxLearner is perfect, so any mix-up of query rows, of the support
    shuffle or of black_box_loss's map back to the episode's labels would show."""
    pool = clusters(12, 10, 5, noise=0.05)
    m = bb.BlackBoxLearner(nn.Flatten(), NearestLabel(D, 4), 4, seed=0, queries=queries)
    for s in range(3):
        ep = episode(4, 2, 5, seed=s, pool=pool)
        perm = torch.randperm(20, generator=torch.Generator().manual_seed(s))
        ep.query_x, ep.query_y = ep.query_x[perm], ep.query_y[perm]   # any query order
        logits = m(ep)
        assert logits.shape == (20, 4)
        assert torch.equal(logits.argmax(1), ep.query_y)
        loss, scores = bb.black_box_loss(m, ep)
        assert loss.dim() == 0 and scores.shape == (20, 4)
        assert torch.equal(scores.argmax(1), ep.query_y)


def test_each_query_is_read_on_its_own():
    ep = episode()
    x2 = ep.query_x.clone()
    x2[4] += 1.0
    ep2 = Episode(ep.support_x, ep.support_y, x2, ep.query_y, 3, 2, 3)
    for queries, independent in (("each", True), ("together", False)):
        m = transformer_learner(queries=queries).eval()
        a = m(ep, torch.Generator().manual_seed(0))
        b = m(ep2, torch.Generator().manual_seed(0))
        assert not torch.allclose(a[4], b[4], atol=1e-5)
        others = torch.arange(9) != 4
        assert torch.allclose(a[others], b[others], atol=1e-6) == independent


def test_learner_loss_matches_sequence_loss():
    ep = episode()
    m = transformer_learner().eval()
    loss, logits = m.loss(ep, torch.Generator().manual_seed(0))
    assert torch.allclose(loss, F.cross_entropy(logits, ep.query_y))
    m_t = transformer_learner(queries="together").eval()
    g = torch.Generator().manual_seed(0)
    z = m_t.embed(torch.cat([ep.support_x, ep.query_x]))
    q_order = torch.randperm(9, generator=g)
    inputs, targets, mask = bb.episode_sequence(z[:6], ep.support_y, z[6:][q_order], 3,
                                                y_query=ep.query_y[q_order], generator=g)
    expected = bb.sequence_loss(m_t.learner(inputs), targets, mask)
    assert torch.allclose(m_t.loss(ep, torch.Generator().manual_seed(0))[0], expected, atol=1e-6)


def test_black_box_learner_trains_and_beats_chance_on_held_out_classes():
    """Gaussian clusters through a flatten "encoder": 3-way 2-shot, new classes at test time."""
    m = transformer_learner()
    hist = train_episodic(m, bb.black_box_loss, clusters(200, 10, 0), 3, 2, 3, steps=400, lr=3e-3, seed=0)
    assert hist.last("acc") >= 0  # logged: black_box_loss's scores are scored against query_y
    acc = evaluate(make_classifier(m, _scores_of(bb.black_box_loss)), clusters(50, 10, 1), 3, 2, 3,
                   n_episodes=100, seed=1)
    assert acc.mean > 0.6, acc                                        # chance is 1/3


def test_untrained_learner_is_at_chance():
    """The same evaluation without training, so the check above measures learning."""
    acc = evaluate(make_classifier(transformer_learner(), _scores_of(bb.black_box_loss)), clusters(50, 10, 1),
                   3, 2, 3, n_episodes=100, seed=1)
    assert acc.mean < 0.45, acc


# ----------------------------------------------------------------------------- MANN's protocol

def test_santoro_episode():
    pool = toy_classes(n_classes=12, n_examples=20)
    x, y, idx = bb.santoro_episode(pool, 4, 5, torch.Generator().manual_seed(0))
    assert x.shape == (20, 1, 8, 8) and x.dtype == torch.float32 and y.shape == idx.shape == (20,)
    assert torch.equal(torch.bincount(y, minlength=4), torch.full((4,), 5))
    for t in range(20):
        assert idx[t] == (y[:t] == y[t]).sum()
    cls = (x[:, 0, 0, 0] * 255).round().long()                       # toy images encode class, index
    for lab in range(4):
        assert len(set(cls[y == lab].tolist())) == 1                 # one class per label
        assert len(set((x[y == lab, 0, 0, 1] * 255).round().long().tolist())) == 5   # distinct examples
    assert len(set(cls.tolist())) == 4
    assert not torch.equal(y, y.sort().values)                       # random order
    x2, y2, _ = bb.santoro_episode(pool, 4, 5, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    xb, yb, ib = bb.santoro_batch(pool, 4, 5, 3, torch.Generator().manual_seed(0))
    assert xb.shape == (3, 20, 1, 8, 8) and yb.shape == ib.shape == (3, 20)


def test_santoro_loss_scores_every_position():
    m = transformer_learner(n=3).eval()
    x, y, _ = bb.santoro_batch(clusters(10, 6, 2), 3, 4, 2, torch.Generator().manual_seed(0))
    loss, logits = bb.santoro_loss(m, x, y)
    assert logits.shape == (2, 12, 3)
    inputs, _ = bb.build_sequence(x.reshape(2, 12, -1), y, 3, shift=True)
    assert torch.allclose(logits, m.learner(inputs), atol=1e-6)
    assert torch.allclose(loss, F.cross_entropy(logits.reshape(-1, 3), y.reshape(-1)), atol=1e-6)


def test_first_instance_ceiling():
    assert bb.first_instance_ceiling(1) == 1.0
    assert bb.first_instance_ceiling(2) == pytest.approx(0.75)
    assert bb.first_instance_ceiling(5) == pytest.approx((1 / 5 + 1 / 4 + 1 / 3 + 1 / 2 + 1) / 5)


@pytest.fixture(scope="module")
def mann_lstm():
    """A tiny LSTM trained on MANN episodes (3-way, 4 instances) of Gaussian clusters (~1 s)."""
    torch.manual_seed(0)
    m = bb.BlackBoxLearner(nn.Flatten(), bb.BlackBoxLSTM(D, 3, hidden=64), 3, seed=0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g, pool = torch.Generator().manual_seed(0), clusters(200, 10, 0)
    for _ in range(600):
        x, y, _ = bb.santoro_batch(pool, 3, 4, 16, g)
        loss, _ = bb.santoro_loss(m, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m


def test_per_instance_accuracy_rises_after_the_first_instance(mann_lstm):
    test = clusters(50, 10, 1)
    acc, per = bb.per_instance_accuracy(mann_lstm, test, 3, 4, n_episodes=200,
                                        generator=torch.Generator().manual_seed(1))
    assert acc.shape == (4,) and per.shape == (200, 4)
    assert torch.allclose(per.mean(0), acc)
    ceiling = bb.first_instance_ceiling(3)                           # 0.61: guess among unseen labels
    assert acc[0] < ceiling + 0.07                                   # no model beats it: label unseen
    assert acc[1:].min() > ceiling + 0.1 and acc[1:].min() > acc[0] + 0.15   # memory of shown labels
    ci = mean_ci95(per[:, 1])
    assert ci.n == 200 and 0 < ci.ci95 < 0.1
    # the very first item of an episode is at chance (1/3)
    x, y, _ = bb.santoro_batch(test, 3, 4, 300, torch.Generator().manual_seed(2))
    with torch.no_grad():
        first = (bb.santoro_loss(mann_lstm.eval(), x, y)[1][:, 0].argmax(-1) == y[:, 0]).float().mean()
    assert abs(first.item() - 1 / 3) < 0.1


def test_per_instance_accuracy_of_an_untrained_model_is_flat():
    torch.manual_seed(0)
    m = bb.BlackBoxLearner(nn.Flatten(), bb.BlackBoxLSTM(D, 3, hidden=16), 3)
    acc, _ = bb.per_instance_accuracy(m, clusters(20, 6, 1), 3, 4, n_episodes=100,
                                      generator=torch.Generator().manual_seed(1))
    assert acc.max() < 0.6


# ----------------------------------------------------------------------------- bad input

def test_sequence_errors():
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match=r"\(T, D\) or \(B, T, D\)"):
        bb.build_sequence(torch.randn(5), y, 3)
    with pytest.raises(ValueError, match=r"\(T, D\) or \(B, T, D\)"):
        bb.build_sequence(torch.randn(1, 1, 5, 4), y, 3)
    with pytest.raises(ValueError, match="one label per item"):
        bb.build_sequence(x, y[:4], 3)
    with pytest.raises(ValueError, match="labels 0..2"):
        bb.build_sequence(x, torch.tensor([0, 1, 3, 0, 1]), 3)
    with pytest.raises(ValueError, match="labels 0..2"):
        bb.build_sequence(x, torch.tensor([0, -1, 2, 0, 1]), 3)
    with pytest.raises(ValueError, match="integer tensor"):
        bb.build_sequence(x, y.float(), 3)
    with pytest.raises(ValueError, match="n_way must be an integer"):
        bb.build_sequence(x, y, 0)
    with pytest.raises(ValueError, match="empty"):
        bb.build_sequence(torch.randn(0, 4), torch.zeros(0, dtype=torch.long), 3)
    zs, ys, zq = torch.randn(6, 4), torch.arange(3).repeat_interleave(2), torch.randn(3, 4)
    with pytest.raises(ValueError, match="same network"):
        bb.episode_sequence(zs, ys, torch.randn(3, 5), 3)
    with pytest.raises(ValueError, match="at least one support and one query"):
        bb.episode_sequence(zs, ys, torch.randn(0, 4), 3)
    with pytest.raises(ValueError, match="one label per support row"):
        bb.episode_sequence(zs, ys[:5], zq, 3)
    with pytest.raises(ValueError, match="labels 0..1"):
        bb.episode_sequence(zs, ys, zq, 2)                           # n_way mismatch
    with pytest.raises(ValueError, match="one label per query row"):
        bb.episode_sequence(zs, ys, zq, 3, y_query=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(T, D\)"):
        bb.episode_sequence(zs.unsqueeze(0), ys, zq, 3)


def test_learner_and_loss_errors():
    with pytest.raises(ValueError, match="in_dim \\+ n_way"):
        bb.BlackBoxLSTM(4, 3)(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="in_dim \\+ n_way"):
        bb.BlackBoxTransformer(4, 3, d_model=8, heads=2)(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"\(B, T, D \+ N\)"):
        bb.BlackBoxLSTM(4, 3)(torch.randn(7))
    with pytest.raises(ValueError, match="max_len"):
        bb.BlackBoxTransformer(4, 3, d_model=8, heads=2, max_len=4)(torch.randn(1, 5, 7))
    with pytest.raises(ValueError, match="divisible"):
        bb.BlackBoxTransformer(4, 3, d_model=10, heads=4)
    with pytest.raises(ValueError, match="hidden must be"):
        bb.BlackBoxLSTM(4, 3, hidden=0)
    with pytest.raises(ValueError, match="T must be"):
        bb.causal_mask(0)
    logits, targets = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match="selects no position"):
        bb.sequence_loss(logits, targets, torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        bb.sequence_loss(logits, targets, torch.ones(5))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        bb.sequence_loss(logits, targets[:4], torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="pass y_query"):
        bb.sequence_loss(logits, torch.full((5,), -100), torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels 0..2"):
        bb.sequence_loss(logits, torch.tensor([0, 1, 5, 0, 1]), torch.ones(5, dtype=torch.bool))


def test_episode_errors():
    with pytest.raises(ValueError, match="n_way = 5"):
        bb.BlackBoxLearner(nn.Flatten(), bb.BlackBoxLSTM(D, 3), 5)
    with pytest.raises(ValueError, match="queries must be"):
        bb.BlackBoxLearner(nn.Flatten(), bb.BlackBoxLSTM(D, 3), 3, queries="all")
    with pytest.raises(ValueError, match="nn.Module"):
        bb.BlackBoxLearner(lambda x: x, bb.BlackBoxLSTM(D, 3), 3)
    m = transformer_learner(n=3)
    with pytest.raises(ValueError, match="n_way=3"):
        m(episode(n=4))
    with pytest.raises(ValueError, match="n_way=3"):
        bb.black_box_loss(m, episode(n=4))
    from course_utils.episodes import sample_meta_batch
    batch = sample_meta_batch(clusters(12, 10, 99), 2, 3, 2, 3)
    with pytest.raises(ValueError, match="task\\(b\\)"):
        m(batch)
    with pytest.raises(ValueError, match="task\\(b\\)"):
        bb.permute_labels(batch)
    with pytest.raises(ValueError, match="Episode"):
        bb.permute_labels("not an episode")
    with pytest.raises(ValueError, match="BlackBoxLearner"):
        bb.black_box_loss(nn.Linear(2, 2), episode())
    with pytest.raises(ValueError, match="in_dim \\+ n_way"):     # encoder/learner size mismatch
        bb.BlackBoxLearner(nn.Flatten(), bb.BlackBoxLSTM(D + 1, 3), 3)(episode())
    bad = episode()
    bad.query_y = bad.query_y + 1
    with pytest.raises(ValueError, match="labels 0..2"):
        bb.black_box_loss(m, bad)


def test_santoro_errors():
    pool, m = clusters(5, 4, 0), transformer_learner(n=3)
    with pytest.raises(ValueError, match="only 5"):
        bb.santoro_episode(pool, 6, 2)
    with pytest.raises(ValueError, match="Lower instances"):
        bb.santoro_episode(pool, 3, 5)
    with pytest.raises(ValueError, match="ClassSet"):
        bb.santoro_episode(torch.randn(5, 4, D), 3, 2)
    with pytest.raises(ValueError, match="instances must be"):
        bb.santoro_episode(pool, 3, 0)
    with pytest.raises(ValueError, match="n_way=3"):
        bb.per_instance_accuracy(m, pool, 4, 2)
    with pytest.raises(ValueError, match="n_episodes must be"):
        bb.per_instance_accuracy(m, pool, 3, 2, n_episodes=0)
    with pytest.raises(ValueError, match="BlackBoxLearner"):
        bb.santoro_loss(nn.Linear(2, 2), torch.randn(4, D), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(T, \*item\)"):
        bb.santoro_loss(m, torch.randn(4, D), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="n_way must be"):
        bb.first_instance_ceiling(0)


# ----------------------------------------------------------------------------- GPU

@cuda
@pytest.mark.cuda
def test_runs_on_cuda_and_matches_cpu():
    ep = episode()
    m = transformer_learner().eval()
    cpu_logits = m(ep, torch.Generator().manual_seed(0))
    m.cuda()
    gpu_ep = ep.to("cuda")
    gpu_logits = m(gpu_ep, torch.Generator().manual_seed(0))
    assert gpu_logits.device.type == "cuda"
    assert torch.allclose(gpu_logits.cpu(), cpu_logits, atol=1e-4)
    new = bb.permute_labels(gpu_ep, torch.Generator().manual_seed(0))
    assert new.support_y.device.type == "cuda" and new.support_x.device.type == "cuda"
    m.train()
    loss, scores = bb.black_box_loss(m, gpu_ep)
    loss.backward()
    assert scores.device.type == "cuda" and m.learner.embed.weight.grad.device.type == "cuda"
    x, y = torch.randn(2, 5, 4, device="cuda"), torch.randint(0, 3, (2, 5), device="cuda")
    inputs, _ = bb.build_sequence(x, y, 3)
    assert inputs.device.type == "cuda"
    inputs, targets, mask = bb.episode_sequence(x[0], y[0], x[1], 3)
    assert inputs.device.type == targets.device.type == mask.device.type == "cuda"
    assert bb.causal_mask(5, "cuda").device.type == "cuda"
    acc, _ = bb.per_instance_accuracy(m, clusters(10, 6, 2), 3, 4, n_episodes=4)
    assert acc.shape == (4,)
