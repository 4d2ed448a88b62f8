import pytest
import torch

from course_utils.episodes import sample_episode
from course_utils.nets import conv4
from course_utils.episodes import ClassSet
from course_utils.protonet import (ProtoNet, check_class_major, classify_embedded, linear_classifier, protonet_logits,
                                   protonet_loss, prototypes, squared_distances)

from conftest import toy_classes




def test_prototypes_are_class_means_of_class_major_support():
    z = torch.tensor([[0., 0.], [2., 4.], [10., 10.], [12., 10.], [-1., -1.], [-3., -5.]])
    c = prototypes(z, n_way=3, k_shot=2)
    assert torch.equal(c, torch.tensor([[1., 2.], [11., 10.], [-2., -3.]]))
    assert torch.equal(prototypes(z, 6, 1), z)  # one shot: the prototype is the example itself


def test_squared_distances_by_hand_and_zero_on_prototype():
    zq = torch.tensor([[0., 0.], [3., 4.]])
    c = torch.tensor([[0., 0.], [1., 1.], [3., 4.]])
    d = squared_distances(zq, c)
    assert torch.equal(d, torch.tensor([[0., 2., 25.], [25., 13., 0.]]))
    assert torch.equal(protonet_logits(zq, c), -d)


def test_linear_classifier_identity():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(5, 16, generator=g, dtype=torch.float64)
    z = torch.randn(30, 16, generator=g, dtype=torch.float64)
    W, b = linear_classifier(c)
    assert W.shape == (5, 16) and b.shape == (5,)
    lin = z @ W.T + b
    logits = protonet_logits(z, c)
    # the two differ by ||z||^2, the same for every class ...
    assert torch.allclose(lin - logits, (z ** 2).sum(1, keepdim=True).expand(-1, 5))
    # ... so argmax and softmax agree
    assert torch.equal(lin.argmax(1), logits.argmax(1))
    assert torch.allclose(lin.softmax(1), logits.softmax(1))


def test_protonet_forward_loss_and_gradients():
    torch.manual_seed(0)
    ep = sample_episode(toy_classes(side=28), 4, 3, 2, torch.Generator().manual_seed(1))
    model = ProtoNet(conv4(hidden=8))
    loss, logits = protonet_loss(model, ep)
    assert logits.shape == (8, 4) and loss.dim() == 0 and torch.isfinite(loss)
    assert (logits <= 0).all()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_query_on_prototype_is_classified_right():
    c = torch.randn(5, 8)
    assert torch.equal(protonet_logits(c, c).argmax(1), torch.arange(5))


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="n_way \\* k_shot"):
        prototypes(torch.zeros(5, 3), 2, 2)
    with pytest.raises(ValueError, match="2-D"):
        prototypes(torch.zeros(4, 3, 1), 2, 2)
    with pytest.raises(ValueError, match="same network"):
        squared_distances(torch.zeros(2, 3), torch.zeros(2, 4))
    ep = sample_episode(toy_classes(side=28), 3, 2, 1, torch.Generator().manual_seed(0))
    ep.support_y = ep.support_y.flip(0)
    with pytest.raises(ValueError, match="class-major"):
        check_class_major(ep)


def test_meta_batch_is_refused():
    from course_utils.episodes import sample_meta_batch
    mb = sample_meta_batch(toy_classes(side=28), 2, 3, 1, 1)
    with pytest.raises(ValueError, match="task\\(b\\)"):
        ProtoNet(conv4(hidden=4))(mb)


def test_classify_embedded_picks_the_nearest_class_mean():
    g = torch.Generator().manual_seed(0)
    centres = 5 * torch.randn(6, 1, 3, generator=g)
    feats = ClassSet(centres + 0.1 * torch.randn(6, 10, 3, generator=g), [f"f/{i}" for i in range(6)], ["f"] * 6, "f")
    ep = sample_episode(feats, 4, 2, 3, g)
    logits = classify_embedded(ep)
    assert logits.shape == (12, 4)
    assert torch.equal(logits, protonet_logits(ep.query_x, prototypes(ep.support_x, 4, 2)))
    assert (logits.argmax(1) == ep.query_y).all()


def test_chapter_02_figures_draw_prototypes_and_bars():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from course_utils import plots
    from course_utils.evaluation import Accuracy
    g = torch.Generator().manual_seed(0)
    zs, zq = torch.randn(6, 5, generator=g), torch.randn(9, 5, generator=g)
    c = prototypes(zs, 3, 2)
    fig = plots.proto_embedding_figure(zs, zq, c, torch.arange(3).repeat_interleave(2),
                                       torch.arange(3).repeat_interleave(3), "an episode")
    ax = fig.axes[0]
    assert ax.get_title() == "an episode" and ax.get_xlabel() and ax.get_ylabel()
    assert len(ax.collections) == 3 * 3          # support, queries, prototype for each class
    plt.close(fig)
    settings = [(5, 1), (20, 1)]
    results = {m: {s: Accuracy(0.5 + 0.1 * i, 0.02, 10) for s in settings} for i, m in enumerate("AB")}
    fig = plots.matching_proto_accuracy_bars(results, settings, "bars")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5-way 1-shot", "20-way 1-shot"]
    assert len(ax.patches) == 4 and ax.get_ylabel() == "meta-test accuracy (%)"
    plt.close(fig)
