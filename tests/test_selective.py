"""Selective classification: accept above tau, precision-coverage, threshold, AURC (course_utils.selective)."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_utils.labelling_data import NONE  # noqa: E402
from course_utils.selective import (accept, aurc, coverage_at, is_correct, plot_precision_coverage,  # noqa: E402
                                    precision_coverage, threshold_for_precision)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# Precision is not monotone here: tau 0.9 -> 1, 0.8 -> 1, 0.7 -> 2/3, 0.6 -> 3/4.
CONF = torch.tensor([0.7, 0.9, 0.6, 0.8])
RIGHT = torch.tensor([False, True, True, True])


def _random(seed, n=200):
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=g)
    right = torch.rand(n, generator=g) < 0.3 + 0.7 * conf  # more often right when more confident
    return conf, right


def test_accept_is_conf_at_least_tau():
    assert accept(CONF, 0.7).tolist() == [True, True, False, True]
    assert not accept(CONF, math.inf).any()
    assert accept(CONF, -math.inf).all()


def test_precision_coverage_by_hand():
    taus, precision, coverage = precision_coverage(CONF, RIGHT)
    assert taus.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert precision.tolist() == pytest.approx([1.0, 1.0, 2 / 3, 3 / 4])
    assert coverage.tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_precision_coverage_has_one_point_per_distinct_value():
    conf = torch.tensor([0.5, 0.9, 0.5, 0.9, 0.1])
    right = torch.tensor([1, 1, 0, 0, 1])  # 0/1 integers are accepted too
    taus, precision, coverage = precision_coverage(conf, right)
    assert taus.tolist() == pytest.approx([0.9, 0.5, 0.1])
    assert precision.tolist() == pytest.approx([0.5, 0.5, 0.6])
    assert coverage.tolist() == pytest.approx([0.4, 0.8, 1.0])


def test_threshold_for_precision_by_hand():
    assert threshold_for_precision(CONF, RIGHT, 0.75) == pytest.approx(0.6)  # past the dip at 0.7
    assert threshold_for_precision(CONF, RIGHT, 0.8) == pytest.approx(0.8)
    assert threshold_for_precision(CONF, RIGHT, 1.0) == pytest.approx(0.8)
    assert threshold_for_precision(CONF, RIGHT, 0.5) == pytest.approx(0.6)


def test_threshold_is_inf_when_no_tau_reaches_the_target():
    tau = threshold_for_precision(CONF, torch.zeros(4, dtype=torch.bool), 0.5)
    assert tau == math.inf
    assert coverage_at(CONF, RIGHT, tau)[0] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.7, 0.9])
def test_threshold_reaches_target_and_is_the_smallest_such_tau(seed, target):
    conf, right = _random(seed)
    tau = threshold_for_precision(conf, right, target)
    assert math.isfinite(tau)
    cov, prec = coverage_at(conf, right, tau)
    assert prec >= target
    for t in conf[conf < tau].unique().tolist():  # every lower threshold misses the target
        assert coverage_at(conf, right, t)[1] < target
        assert coverage_at(conf, right, t)[0] > cov


def test_coverage_falls_monotonically_as_tau_rises():
    conf, right = _random(3)
    covs = [coverage_at(conf, right, t)[0] for t in torch.linspace(-0.1, 1.1, 60).tolist()]
    assert all(a >= b for a, b in zip(covs, covs[1:]))
    assert covs[0] == 1.0 and covs[-1] == 0.0
    _, _, coverage = precision_coverage(conf, right)
    assert (coverage.diff() > 0).all()


def test_coverage_at_by_hand_and_nan_when_nothing_accepted():
    assert coverage_at(CONF, RIGHT, 0.7) == pytest.approx((0.75, 2 / 3))
    cov, prec = coverage_at(CONF, RIGHT, 0.95)
    assert cov == 0.0 and math.isnan(prec)


def test_aurc_by_hand():
    # risks at coverage 1/4 .. 4/4: 0, 0, 1/3, 1/4
    assert aurc(CONF, RIGHT) == pytest.approx((0 + 0 + 1 / 3 + 1 / 4) / 4)
    # a score that ranks the wrong item first is worse: risks 1, 1/2, 1/3, 1/4
    assert aurc(-CONF + 2 * (~RIGHT).float(), RIGHT) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    # ties are one step: two items at one value share the group's risk
    assert aurc(torch.tensor([0.5, 0.5]), torch.tensor([True, False])) == pytest.approx(0.5)


def test_aurc_of_a_perfect_ranking_beats_a_random_one():
    conf, right = _random(4)
    perfect = right.float() + 0.01 * conf
    assert aurc(perfect, right) < aurc(conf, right) < aurc(-conf, right)


def test_distractors_are_never_correct():
    p = torch.tensor([[0.8, 0.2], [0.1, 0.9], [0.6, 0.4]])
    y = torch.tensor([0, 0, NONE])
    assert is_correct(p, y).tolist() == [True, False, False]
    assert coverage_at(p.max(1).values, is_correct(p, y), 0.0) == pytest.approx((1.0, 1 / 3))


def test_plot_precision_coverage_returns_a_labelled_figure():
    curves = {"max-prob": _random(5), "margin": _random(6)}
    fig = plot_precision_coverage(curves, target=0.9)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum("AURC" in t for t in texts) == 2 and any("target" in t for t in texts)
    fig2, ax2 = plt.subplots()
    assert plot_precision_coverage({"x": (CONF, RIGHT)}, ax=ax2) is fig2


@pytest.mark.parametrize("call,phrase", [
    (lambda: accept(torch.ones(2, 3), 0.5), "1-D tensor"),
    (lambda: accept(CONF, float("nan")), "tau must be a number"),
    (lambda: accept(torch.tensor([0.5, float("nan")]), 0.5), "NaN"),
    (lambda: precision_coverage(CONF, RIGHT[:3]), "4 items but correct has 3"),
    (lambda: precision_coverage(CONF, RIGHT[None]), "correct must be a 1-D"),
    (lambda: precision_coverage(CONF, torch.tensor([0, 2, 1, 0])), "booleans"),
    (lambda: precision_coverage(CONF, torch.tensor([0.0, 1.0, 1.0, 0.0])), "booleans"),
    (lambda: precision_coverage(torch.ones(0), torch.ones(0, dtype=torch.bool)), "at least one item"),
    (lambda: threshold_for_precision(CONF, RIGHT, target=0.0), r"target must be a precision in \(0, 1\]"),
    (lambda: threshold_for_precision(CONF, RIGHT, target=1.2), r"target must be a precision in \(0, 1\]"),
    (lambda: threshold_for_precision(CONF, RIGHT, target=-0.5), r"in \(0, 1\]"),
    (lambda: threshold_for_precision(CONF[None], RIGHT, 0.9), "1-D tensor"),
    (lambda: coverage_at(CONF, RIGHT[:2], 0.5), "4 items but correct has 2"),
    (lambda: aurc(CONF, RIGHT[:1]), "4 items but correct has 1"),
    (lambda: is_correct(torch.ones(3), torch.zeros(3)), "2-D tensor"),
    (lambda: is_correct(torch.ones(3, 2), torch.zeros(4)), "3 labels"),
    (lambda: plot_precision_coverage({}), "at least one curve"),
    (lambda: plot_precision_coverage({"x": (CONF, RIGHT)}, target=2.0), r"in \(0, 1\]"),
])
def test_bad_inputs_say_what_is_wrong(call, phrase):
    with pytest.raises(ValueError, match=phrase):
        call()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_everything_runs_on_the_gpu():
    conf, right = _random(7)
    gc, gr = conf.cuda(), right.cuda()
    assert accept(gc, 0.5).is_cuda and all(t.is_cuda for t in precision_coverage(gc, gr))
    assert threshold_for_precision(gc, gr, 0.9) == threshold_for_precision(conf, right, 0.9)
    assert coverage_at(gc, gr, 0.5) == coverage_at(conf, right, 0.5)
    assert aurc(gc, gr) == pytest.approx(aurc(conf, right))
    assert is_correct(torch.eye(3).cuda(), torch.tensor([0, 1, NONE])).tolist() == [True, True, False]
    assert isinstance(plot_precision_coverage({"gpu": (gc, gr)}, target=0.9), Figure)
