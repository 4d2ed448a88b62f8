import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_utils import plots, widgets  # noqa: E402
from course_utils.episodes import sample_episode, sample_meta_batch  # noqa: E402
from course_utils.evaluation import Accuracy  # noqa: E402
from course_utils.training import History  # noqa: E402
from conftest import toy_classes  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_show_episode_grid_and_labels():
    ep = sample_episode(toy_classes(), 4, 2, 5)
    fig = plots.show_episode(ep, max_query=3)
    assert len(fig.axes) == 4 * (2 + 3)
    assert fig.axes[0].get_title(loc="left") == "support"
    alphabet, char = ep.classes[0].split("/")
    assert fig.axes[0].get_ylabel() == f"y = 0\n{alphabet}\n{char}"          # readable: one part a line
    assert fig.axes[0].yaxis.label.get_fontsize() >= 9
    assert plots._class_label("Mkhedruli_(Georgian)/character04/rot180") == \
        "Mkhedruli (Georgian)\ncharacter04, rot 180°"
    assert len(plots.show_episode(sample_meta_batch(toy_classes(), 2, 3, 1, 1)).axes) == 3 * 2


def test_show_classes_and_curves():
    fig = plots.show_classes(toy_classes(), n_classes=3, n_examples=4)
    assert len(fig.axes) == 12 and fig.axes[0].yaxis.label.get_fontsize() >= 9
    h = History()
    for i in range(50):
        h.log(i, loss=1 / (i + 1))
    fig = plots.plot_curves({"a": h, "b": h}, keys=("loss",))
    assert fig.axes[0].get_xlabel() == "step" and len(fig.axes[0].lines) == 2


def test_accuracy_vs_shots_bands():
    res = {"1-NN": {1: Accuracy(0.6, 0.01, 600), 5: Accuracy(0.8, 0.01, 600)}}
    fig = plots.plot_accuracy_vs_shots(res, n_way=5)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "query accuracy (%)" and len(ax.collections) == 1
    assert list(ax.lines[0].get_ydata()) == [60.0, 80.0]


def test_method_comparison_has_one_panel_per_column():
    acc = lambda m: Accuracy(m, 0.01, 600)
    fig = plots.plot_method_comparison({"glyphs": {"a": acc(0.5), "b": acc(0.9)}, "omniglot": {"b": acc(0.8)}},
                                       n_way=5, title="t")
    left, right = fig.axes
    assert [t.get_text() for t in left.get_yticklabels()] == ["a", "b"]
    assert left.get_title() == "glyphs" and right.get_title() == "omniglot"
    assert left.lines[-1].get_xdata()[0] == 20.0               # the chance line at 1/5
    with pytest.raises(ValueError, match="at least one"):
        plots.plot_method_comparison({"glyphs": {}}, n_way=5)


def test_episode_browser_runs_headless(capsys):
    sets = {"toy": toy_classes()}
    box = widgets.episode_browser(sets)
    assert box is not None
    assert widgets.draw_episode(sets, "toy", "a1", n_way=3, k_shot=1) is not None
    assert widgets.draw_episode(sets, "toy", "a1", n_way=9, k_shot=1) is None
    assert "only 4" in capsys.readouterr().out


def test_baseline_pretraining_curves_mark_chance():
    h = History()
    for i in range(60):
        h.log(i, loss=6 / (i + 1), acc=i / 60)
    fig = plots.baseline_pretraining_curves(h, 400, title="t")
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["loss", "chance: ln 400"]
    assert loss_ax.lines[-1].get_ydata()[0] == pytest.approx(5.9915, abs=1e-4)
    assert acc_ax.lines[-1].get_ydata()[0] == 1 / 400 and "accuracy" in acc_ax.get_ylabel()
