import pytest
import torch

from course_utils.episodes import Episode, sample_episode
from course_utils.matching import (AttentionLSTM, FullContextSupport, MatchingNet, attention_predict,
                                   cosine_attention, cosine_similarities, matching_loss)
from course_utils.nets import conv4

from conftest import toy_classes




def test_cosine_similarities_by_hand():
    f = torch.tensor([[1., 0.], [3., 4.]])
    g = torch.tensor([[2., 0.], [0., 5.], [-1., 0.]])
    c = cosine_similarities(f, g)
    assert torch.allclose(c, torch.tensor([[1., 0., -1.], [0.6, 0.8, -0.6]]))
    # scale-free: the norms do not matter
    assert torch.allclose(cosine_similarities(7 * f, 0.1 * g), c)


def test_attention_rows_sum_to_one_over_the_support_set():
    g = torch.Generator().manual_seed(0)
    a = cosine_attention(torch.randn(7, 5, generator=g), torch.randn(4, 5, generator=g))
    assert a.shape == (7, 4)
    assert torch.allclose(a.sum(dim=1), torch.ones(7))
    assert (a > 0).all()


def test_attention_predict_is_attention_weighted_one_hot_labels():
    a = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])
    y = torch.tensor([0, 1, 0])
    assert torch.allclose(attention_predict(a, y, 2), torch.tensor([[0.8, 0.2], [0.9, 0.1]]))


def test_identical_query_and_support_pick_the_right_class():
    # 1-shot: a query identical to support example i is most similar to it (cosine 1)
    torch.manual_seed(0)
    x = torch.rand(5, 1, 28, 28)
    ep = Episode(x, torch.arange(5), x.clone(), torch.arange(5), 5, 1, 1)
    model = MatchingNet(conv4(hidden=8)).eval()
    with torch.no_grad():
        assert torch.equal(model(ep).argmax(1), ep.query_y)
        a = model.attention(ep)
    assert torch.allclose(a.sum(1), torch.ones(5))
    assert torch.equal(a.argmax(1), torch.arange(5))
    f = torch.randn(5, 6)
    assert torch.equal(cosine_attention(f, f).argmax(1), torch.arange(5))


def test_forward_is_log_of_attention_prediction():
    torch.manual_seed(0)
    ep = sample_episode(toy_classes(side=28), 3, 2, 2, torch.Generator().manual_seed(0))
    model = MatchingNet(conv4(hidden=8), scale=5.0).eval()
    with torch.no_grad():
        f, g = model.embed(ep)
        y_hat = attention_predict(cosine_attention(f, g, 5.0), ep.support_y, 3)
        assert torch.allclose(model(ep).exp(), y_hat, atol=1e-6)
        assert torch.allclose(model(ep).exp().sum(1), torch.ones(6), atol=1e-6)


@pytest.mark.parametrize("fce", [False, True])
def test_training_step_has_finite_gradients(fce):
    torch.manual_seed(0)
    ep = sample_episode(toy_classes(side=28), 4, 2, 2, torch.Generator().manual_seed(1))
    model = MatchingNet(conv4(hidden=8), fce=fce, steps=3)
    loss, logp = matching_loss(model, ep)
    assert logp.shape == (8, 4) and torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if fce:
        assert model.f_lstm.cell.weight_ih.grad.abs().sum() > 0
        assert model.g_lstm.lstm.weight_ih_l0.grad.abs().sum() > 0


def test_full_context_shapes_and_dependence_on_the_support_set():
    torch.manual_seed(0)
    g_mod, f_mod = FullContextSupport(6), AttentionLSTM(6, steps=4)
    gp, fp = torch.randn(10, 6), torch.randn(3, 6)
    g = g_mod(gp)
    assert g.shape == (10, 6)
    # full context: changing one support example changes the embedding of the others
    gp2 = gp.clone()
    gp2[-1] += 1
    assert not torch.allclose(g_mod(gp2)[0], g[0])
    f = f_mod(fp, g)
    assert f.shape == (3, 6)
    # queries are processed independently of each other
    assert torch.allclose(f_mod(fp[:1], g), f[:1], atol=1e-6)


def test_attention_lstm_supports_double_backward():
    # LSTMCell (not cuDNN's fused LSTM) so second-order gradients work
    torch.manual_seed(0)
    f_mod = AttentionLSTM(4, steps=2).double()
    fp = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 4, dtype=torch.float64)
    (gr,) = torch.autograd.grad(f_mod(fp, g).pow(2).sum(), fp, create_graph=True)
    gr.sum().backward()
    assert fp.grad is not None and torch.isfinite(fp.grad).all()


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="same space"):
        cosine_similarities(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        cosine_attention(torch.zeros(2, 3, 1), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="processing steps"):
        AttentionLSTM(4, steps=0)
    with pytest.raises(ValueError, match="support labels"):
        attention_predict(torch.zeros(2, 3), torch.zeros(4, dtype=torch.long), 2)


def test_zero_embedding_gives_finite_attention():
    a = cosine_attention(torch.zeros(1, 3), torch.randn(4, 3))
    assert torch.isfinite(a).all() and torch.allclose(a, torch.full((1, 4), 0.25))


def test_attention_figure_has_one_row_per_class_and_labels_the_query():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from course_utils import plots
    ep = sample_episode(toy_classes(side=28), 3, 2, 2, torch.Generator().manual_seed(0))
    a = cosine_attention(ep.query_x.flatten(1), ep.support_x.flatten(1), 10.0)
    y_hat = attention_predict(a[1:2], ep.support_y, 3)[0]
    fig = plots.matching_attention_figure(ep, a[1], y_hat, 1)
    assert len(fig.axes) == 3 * 3
    assert "query 1" in fig.axes[3].get_title() and "true class 0" in fig.axes[3].get_title()
    assert any("ŷ =" in ax.get_ylabel() for ax in fig.axes)
    plt.close(fig)


def test_training_curves_are_readable_for_a_one_point_validation():
    # the smoke budget: 3 steps, one validation point, both methods at the same accuracy
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from course_utils import plots
    from course_utils.training import History
    hists = {}
    for name, losses in {"Matching": (1.2, 1.1, 1.0), "Prototypical": (2.4, 2.6, 3.5)}.items():
        h = History()
        for i, v in enumerate(losses):
            h.log(i, loss=v, acc=0.6 + 0.05 * i)
        h.log(2, val_acc=0.66)
        hists[name] = h
    fig = plots.matching_training_curves(hists, title="smoke")
    loss_ax, _, val_ax = fig.axes
    val_ax.figure.canvas.draw()
    assert [line.get_marker() for line in val_ax.get_lines()] == ["o", "s"]     # single points are visible
    assert val_ax.get_lines()[1].get_markerfacecolor() == "none"                 # hollow: both visible
    lo, hi = val_ax.get_ylim()
    assert 0.0 <= lo < 0.66 - 0.01 and 0.66 + 0.01 < hi <= 1.0                  # a readable range, no 1e-8
    assert val_ax.yaxis.get_major_formatter().get_offset() == ""
    assert all(float(t).is_integer() for t in val_ax.get_xticks())              # steps are integers
    assert len(val_ax.get_legend().get_lines()) == 2
    # a long run keeps plain lines
    h = History()
    for i in range(100):
        h.log(i, loss=1 / (i + 1))
    fig2 = plots.matching_training_curves({"a": h}, keys=("loss",))
    assert fig2.axes[0].get_lines()[0].get_marker() in ("None", None, "")
    plt.close("all")
