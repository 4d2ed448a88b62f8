"""Siamese networks: shared weights, Koch's verification head, the pair sampler, classification
by verification, thresholds and the pair-training loop."""
import copy

import pytest
import torch
from torch import nn

from conftest import cuda, toy_classes
from course_utils import evaluation, siamese
from course_utils.contrastive import contrastive_loss
from course_utils.episodes import ClassSet, sample_episode
from course_utils.nets import conv4


def small_embed():
    return conv4(hidden=8)


def images(n, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the networks

def test_twins_are_one_network():
    net = siamese.SiameseNet(small_embed())
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in net.embed.parameters())
    untied = nn.ModuleList([copy.deepcopy(net.embed), copy.deepcopy(net.embed)])
    assert sum(p.numel() for p in untied.parameters()) == 2 * sum(p.numel() for p in net.parameters())


def test_gradients_from_both_branches_add_up_in_the_shared_weights():
    torch.manual_seed(0)
    net = siamese.SiameseNet(small_embed()).double()  # float64: exact up to rounding, any thread count
    x1, x2 = images(4, 1).double(), images(4, 2).double()
    w = net.embed[0][0].weight

    def grad_of(detach1, detach2):
        z1, z2 = net.embed_pair(x1, x2)
        z1 = z1.detach() if detach1 else z1
        z2 = z2.detach() if detach2 else z2
        return torch.autograd.grad(net.distance(z1, z2).sum(), w)[0]

    full, only1, only2 = grad_of(False, False), grad_of(False, True), grad_of(True, False)
    assert only1.abs().sum() > 0 and only2.abs().sum() > 0
    assert torch.allclose(full, only1 + only2, atol=1e-9, rtol=1e-7)


def test_distance_is_symmetric_and_zero_on_identical_inputs():
    torch.manual_seed(0)
    net = siamese.SiameseNet(small_embed())
    x1, x2 = images(5, 1), images(5, 2)
    for mode in (True, False):
        net.train(mode)
        d12, d21 = net(x1, x2), net(x2, x1)
        assert d12.shape == (5,)
        assert torch.allclose(d12, d21, atol=1e-5)
        assert net(x1, x1).max().item() < 1e-5


def test_backprop_through_identical_inputs_is_finite():
    torch.manual_seed(0)
    net = siamese.SiameseNet(small_embed())
    x = images(4)
    loss = contrastive_loss(net(x, x.clone()), torch.zeros(4), 1.0).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_verification_head_is_a_weighted_l1_distance():
    torch.manual_seed(0)
    net = siamese.VerificationNet(small_embed())
    x1, x2 = images(3, 1), images(3, 2)
    net.eval()
    with torch.no_grad():
        net.head.weight.copy_(torch.linspace(-1, 1, net.head.weight.numel()).reshape_as(net.head.weight))
        net.head.bias.fill_(0.3)
        h1, h2 = net.embed(x1), net.embed(x2)
        want = ((h1 - h2).abs() * net.head.weight[0]).sum(1) + 0.3
        assert torch.allclose(net(x1, x2), want, atol=1e-5)
        assert torch.allclose(net(x1, x2), net(x2, x1), atol=1e-5)
        p = net.probability(x1, x2)
        assert ((p > 0) & (p < 1)).all()


def test_verification_loss_targets_same_as_one():
    logits = torch.tensor([2.0, -1.0, 0.5])
    y = torch.tensor([0.0, 1.0, 1.0])  # same, different, different
    want = -(torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(1 - torch.sigmoid(torch.tensor(-1.0)))
             + torch.log(1 - torch.sigmoid(torch.tensor(0.5)))) / 3
    assert siamese.verification_loss(logits, y).item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(ValueError, match="both be"):
        siamese.verification_loss(logits, y[:2])


# ----------------------------------------------------------------------------- the pair sampler

def _ids(x):
    v = (x[:, 0, 0, :2] * 255).round().long()
    return v[:, 0], v[:, 1]


@pytest.mark.parametrize("as_list", [False, True])
def test_pairs_are_balanced_labelled_and_distinct(as_list):
    cs = toy_classes(10, 6)
    if as_list:
        cs = ClassSet(list(cs.x), cs.names, cs.alphabets, "toy list")
    x1, x2, y = siamese.sample_pairs(cs, 100, torch.Generator().manual_seed(0))
    assert x1.shape == x2.shape == (100, 1, 8, 8) and y.shape == (100,)
    assert x1.dtype == torch.float32 and float(x1.max()) <= 1.0 and y.dtype == torch.float32
    c1, e1 = _ids(x1)
    c2, e2 = _ids(x2)
    assert int((y == 0).sum()) == 50
    assert (c1[y == 0] == c2[y == 0]).all() and (e1[y == 0] != e2[y == 0]).all()
    assert (c1[y == 1] != c2[y == 1]).all()
    assert len(set(c1.tolist())) == 10


def test_pairs_are_reproducible_with_a_seeded_generator():
    cs = toy_classes()
    a = siamese.sample_pairs(cs, 20, torch.Generator().manual_seed(3))
    b = siamese.sample_pairs(cs, 20, torch.Generator().manual_seed(3))
    c = siamese.sample_pairs(cs, 20, torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_within_alphabet_negatives():
    cs = toy_classes(12, 5, n_alphabets=3)
    alphabet = torch.tensor([int(a[1:]) for a in cs.alphabets])
    x1, x2, y = siamese.sample_pairs(cs, 200, torch.Generator().manual_seed(0), within_alphabet=1.0)
    c1, _ = _ids(x1)
    c2, _ = _ids(x2)
    neg = y == 1
    assert (alphabet[c1[neg]] == alphabet[c2[neg]]).all() and (c1[neg] != c2[neg]).all()
    x1, x2, y = siamese.sample_pairs(cs, 200, torch.Generator().manual_seed(0), within_alphabet=0.0)
    c1, _ = _ids(x1)
    c2, _ = _ids(x2)
    assert (alphabet[c1[y == 1]] != alphabet[c2[y == 1]]).any()


@pytest.mark.parametrize("args,kwargs,phrase", [
    ((toy_classes(), 7), {}, "even integer"),
    ((toy_classes(), 0), {}, "even integer"),
    ((toy_classes(), True), {}, "even integer"),
    (("not a class set", 4), {}, "needs a ClassSet"),
    ((toy_classes(1, 5), 4), {}, "at least 2"),
    ((toy_classes(4, 1), 4), {}, "fewer than 2 examples"),
    ((toy_classes(), 4), {"within_alphabet": 1.5}, "probability"),
    ((toy_classes(3, 4, n_alphabets=3), 4), {"within_alphabet": 0.5}, "no alphabet"),
])
def test_pair_sampler_bad_inputs(args, kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        siamese.sample_pairs(*args, **kwargs)


# ----------------------------------------------------------------------------- verification

def neg_dist(a, b):
    return -(a - b).pow(2).sum(-1).sqrt()


def test_identical_query_and_support_pick_the_right_class():
    sx = torch.randn(5, 4)
    sy = torch.tensor([3, 1, 4, 0, 2])  # any order
    scores = siamese.classify_by_verification(neg_dist, sx, sy, sx[[3, 1, 4, 0, 2]], 5)
    assert scores.shape == (5, 5)
    assert scores.argmax(1).tolist() == [0, 1, 2, 3, 4]


def test_k_shot_max_and_mean():
    sx = torch.tensor([[0.0], [10.0], [1.0], [2.0]])
    sy = torch.tensor([0, 0, 1, 1])
    q = torch.tensor([[0.2]])
    mx = siamese.classify_by_verification(neg_dist, sx, sy, q, 2, "max")
    mean = siamese.classify_by_verification(neg_dist, sx, sy, q, 2, "mean")
    assert torch.allclose(mx, torch.tensor([[-0.2, -0.8]]))
    assert torch.allclose(mean, torch.tensor([[-(0.2 + 9.8) / 2, -(0.8 + 1.8) / 2]]))
    assert mx.argmax().item() == 0 and mean.argmax().item() == 1  # one far outlier flips the mean


@pytest.mark.parametrize("sy,n_way,reduce,phrase", [
    (torch.tensor([0, 1, 1]), 3, "max", "every label"),
    (torch.tensor([0, 1]), 2, "max", "one label per support row"),
    (torch.tensor([0, 1, 2]), 3, "median", "reduce must be"),
])
def test_classify_bad_inputs(sy, n_way, reduce, phrase):
    with pytest.raises(ValueError, match=phrase):
        siamese.classify_by_verification(neg_dist, torch.randn(3, 2), sy, torch.randn(2, 2), n_way, reduce)


def test_threshold_and_verification_accuracy():
    scores = torch.tensor([-3.0, -2.5, -2.0, -0.5, -0.4, -0.1])
    y = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # similar pairs have the high scores
    t = siamese.fit_threshold(scores, y)
    assert -2.0 < t < -0.5
    acc = siamese.verification_accuracy(scores, y, t)
    assert acc.mean == 1.0 and acc.n == 6
    assert siamese.verification_accuracy(scores, y, 0.0).mean == pytest.approx(0.5)
    with pytest.raises(ValueError):
        siamese.fit_threshold(scores, y[:3])


def test_verification_classifier_same_on_images_and_on_embedded_episodes():
    torch.manual_seed(0)
    cs = ClassSet(torch.rand(6, 5, 1, 28, 28), [f"a/c{i}" for i in range(6)], ["a"] * 6, "random")
    net = siamese.SiameseNet(small_embed()).eval()
    ep = sample_episode(cs, 3, 2, 2, torch.Generator().manual_seed(0))
    on_images = siamese.verification_classifier(net)(ep)
    with torch.no_grad():
        emb = ep.__class__(net.embed(ep.support_x), ep.support_y, net.embed(ep.query_x), ep.query_y, 3, 2, 2)
    on_embedded = siamese.verification_classifier(net, embedded=True)(emb)
    assert on_images.shape == (6, 3)
    assert torch.allclose(on_images, on_embedded, atol=1e-5)


# ----------------------------------------------------------------------------- training

def vector_classes(n_classes=8, m=10, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, 1, dim, generator=g) * 2
    x = centres + 0.3 * torch.randn(n_classes, m, dim, generator=g)
    return ClassSet(x, [f"a/c{i}" for i in range(n_classes)], ["a"] * n_classes, "vectors")


class TinyEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return self.f(x)


def test_train_pairs_learns_a_metric_that_classifies_new_classes():
    torch.manual_seed(0)
    train, test = vector_classes(seed=0), vector_classes(seed=1)
    net = siamese.SiameseNet(TinyEmbed())
    val_pairs = siamese.sample_pairs(train, 40, torch.Generator().manual_seed(9))
    seen_modes = []

    def validate():
        seen_modes.append(net.training)
        s = siamese.pair_scores(net, *val_pairs[:2])
        return {"val_acc": siamese.verification_accuracy(s, val_pairs[2], siamese.fit_threshold(s, val_pairs[2])).mean}

    hist = siamese.train_pairs(net, train, siamese.contrastive_objective(2.0), 150, 32, lr=0.01,
                               validate=validate, every=50)
    assert hist.values["loss"][-1] < hist.values["loss"][0]
    assert hist.steps["val_acc"] == [49, 99, 149] and seen_modes == [False] * 3
    assert not net.training
    acc = evaluation.evaluate(siamese.verification_classifier(net), test, 4, 1, q_query=5, n_episodes=20)
    assert acc.mean > 0.6


def test_train_pairs_with_koch_head_and_a_custom_sampler():
    torch.manual_seed(0)
    calls = []

    def sampler(classes, n_pairs, generator):
        calls.append(n_pairs)
        return siamese.sample_pairs(classes, n_pairs, generator)

    net = siamese.VerificationNet(TinyEmbed(), image_shape=(6,))
    hist = siamese.train_pairs(net, vector_classes(), siamese.verification_objective, 60, 16, lr=0.01,
                               sampler=sampler)
    assert calls == [16] * 60
    assert sum(hist.values["loss"][-10:]) < sum(hist.values["loss"][:10])


@cuda
@pytest.mark.cuda
def test_siamese_on_cuda():
    net = siamese.SiameseNet(small_embed()).cuda()
    x = images(4).cuda()
    d = net(x, x.flip(0))
    assert d.device.type == "cuda"
    contrastive_loss(d, torch.tensor([0.0, 1.0, 1.0, 0.0], device="cuda")).mean().backward()
