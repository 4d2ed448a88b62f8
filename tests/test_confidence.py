"""Confidence scores, temperature scaling and calibration (course_utils.confidence)."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_utils.confidence import (confidence, expected_calibration_error, fit_temperature, margin,  # noqa: E402
                                     max_prob, nearest_distance, plot_reliability, probabilities, reliability)
from course_utils.labelling_data import NONE  # noqa: E402
from course_utils.protonet import protonet_logits  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# A 4-item, 2-class case whose max-probs avoid the bin edges: 0.9, 0.7, 0.65, 0.55.
P4 = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.65, 0.35], [0.45, 0.55]])
Y4 = torch.tensor([0, 0, 0, NONE])  # right, wrong (argmax 1), right, distractor (always wrong)


def _calibrated(n_items, n_way, t_star, seed):
    """Logits l * T* whose softmax(. / T*) = softmax(l) is calibrated: y is drawn from softmax(l)."""
    g = torch.Generator().manual_seed(seed)
    base = 2.0 * torch.randn(n_items, n_way, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(base, 1), 1, generator=g).squeeze(1)
    return base * t_star, y


# ----------------------------------------------------------------------------- probabilities

def test_probabilities_are_softmax_over_classes_with_temperature():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    p = probabilities(logits, temperature=2.0)
    e = torch.exp(logits / 2.0)
    assert torch.allclose(p, e / e.sum(1, keepdim=True))
    assert torch.allclose(p.sum(1), torch.ones(2))


def test_softmax_axis_is_the_class_axis_not_the_items():
    # square on purpose: a softmax over dim 0 would run without error and give another answer
    logits = torch.tensor([[3.0, 0.0], [2.0, 1.0]])
    p = probabilities(logits)
    assert torch.allclose(p, torch.softmax(logits, 1))
    assert not torch.allclose(p, torch.softmax(logits, 0), atol=1e-2)
    assert torch.allclose(confidence(logits), torch.softmax(logits, 1).max(1).values)
    # item 1 has a smaller gap between its classes, so it must be the less confident one
    c = confidence(logits)
    assert c[0] > c[1]
    assert not torch.allclose(c, torch.softmax(logits, 0).max(1).values, atol=1e-2)


def test_temperature_never_changes_argmax_and_softens_monotonically():
    g = torch.Generator().manual_seed(1)
    logits = 5 * torch.randn(50, 6, generator=g)
    top = logits.argmax(1)
    previous = None
    for t in (0.1, 0.5, 1.0, 2.0, 10.0):
        p = probabilities(logits, t)
        assert torch.equal(p.argmax(1), top)
        if previous is not None:
            assert (max_prob(p) <= previous + 1e-6).all()  # a hotter softmax is never more confident
        previous = max_prob(p)


def test_probabilities_are_differentiable_in_logits_and_temperature():
    logits = torch.tensor([[1.0, -0.5, 0.2]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: max_prob(probabilities(a, b)), (logits, t))
    assert torch.autograd.gradcheck(lambda a: margin(probabilities(a, 0.7)), (logits,))


# ----------------------------------------------------------------------------- scores

def test_max_prob_margin_nearest_distance_hand_computed():
    p = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.35, 0.45]])
    assert torch.allclose(max_prob(p), torch.tensor([0.6, 0.45]))
    assert torch.allclose(margin(p), torch.tensor([0.3, 0.1]))
    d = torch.tensor([[4.0, 1.0, 9.0], [0.5, 2.0, 0.25]])
    assert torch.equal(nearest_distance(d), torch.tensor([1.0, 0.25]))


def test_confidence_kinds_on_protonet_logits():
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 1.0]])
    c = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    logits = protonet_logits(z, c)  # -d: [[0, -4], [-9, -1], [-2, -2]]
    assert torch.equal(confidence(logits, "distance"), torch.tensor([0.0, -1.0, -2.0]))
    assert torch.equal(confidence(logits, "distance", temperature=5.0), confidence(logits, "distance"))
    s = 1 / (1 + math.exp(-4))  # softmax of a gap of 4 between two classes
    s8 = 1 / (1 + math.exp(-8))
    assert torch.allclose(confidence(logits, "max_prob"), torch.tensor([s, 1 / (1 + math.exp(-8)), 0.5]))
    assert torch.allclose(confidence(logits, "margin"), torch.tensor([2 * s - 1, 2 * s8 - 1, 0.0]))
    assert torch.allclose(confidence(logits, "max_prob", temperature=2.0),
                          torch.tensor([1 / (1 + math.exp(-2)), s, 0.5]))


def test_scores_stay_on_the_input_device_and_dtype():
    logits = torch.randn(4, 3, dtype=torch.float64)
    for kind in ("max_prob", "margin", "distance"):
        out = confidence(logits, kind)
        assert out.shape == (4,) and out.dtype == torch.float64 and out.device == logits.device


# ----------------------------------------------------------------------------- temperature fitting

@pytest.mark.parametrize("t_star", [0.5, 2.5])
def test_fit_temperature_recovers_the_generating_temperature(t_star):
    logits, y = _calibrated(20000, 5, t_star, seed=0)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(t_star, rel=0.04)


def test_fit_temperature_lowers_the_ece_of_overconfident_logits():
    logits, y = _calibrated(5000, 5, 3.0, seed=1)
    t = fit_temperature(logits.float(), y)
    before = expected_calibration_error(probabilities(logits), y)
    after = expected_calibration_error(probabilities(logits, t), y)
    assert after < 0.03 < before


def test_fit_temperature_is_a_minimum_and_deterministic():
    logits, y = _calibrated(2000, 4, 1.7, seed=2)
    t = fit_temperature(logits, y)
    assert fit_temperature(logits, y) == t

    def nll(tt):
        return float(torch.nn.functional.cross_entropy(logits / tt, y))
    assert nll(t) <= min(nll(0.97 * t), nll(1.03 * t))


def test_fit_temperature_on_support_logits_runs_to_zero_and_warns():
    # K = 1: each support item sits on its own prototype (d = 0), always right
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    logits, y = protonet_logits(z, z), torch.arange(5)
    with pytest.warns(UserWarning, match="support logits"):
        t = fit_temperature(logits, y)
    assert t < 1e-3


# ----------------------------------------------------------------------------- ECE and reliability

def test_ece_of_four_items_by_hand():
    # 5 bins of width 0.2: (0.4, 0.6] holds 0.55 (distractor, wrong): |0 - 0.55| * 1/4
    # (0.6, 0.8] holds 0.7 (wrong) and 0.65 (right): |0.5 - 0.675| * 2/4; (0.8, 1] holds 0.9 (right): 0.1 * 1/4
    assert expected_calibration_error(P4, Y4, n_bins=5) == pytest.approx(0.25, abs=1e-6)
    # one bin: |mean accuracy 0.5 - mean confidence 0.7|
    assert expected_calibration_error(P4, Y4, n_bins=1) == pytest.approx(0.2, abs=1e-6)


def test_distractors_count_as_wrong():
    # if the distractor counted as right for its argmax (class 1), bin (0.4, 0.6] would be |1 - 0.55|
    y_as_if_right = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(P4, y_as_if_right, 5) == pytest.approx(0.25 - 0.1375 + 0.1125, abs=1e-6)
    r = reliability(P4, Y4, n_bins=5)
    assert r["accuracy"][2] == 0.0 and r["count"][2] == 1


def test_distractor_is_wrong_whatever_its_argmax():
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1]])  # the distractor's argmax is class 0, the smallest label
    assert expected_calibration_error(p, torch.tensor([0, NONE]), n_bins=1) == pytest.approx(0.4)
    assert reliability(p, torch.tensor([NONE, NONE]), n_bins=2)["accuracy"][1] == 0.0


def test_bins_are_right_closed_as_in_guo():
    # B_m = ((m-1)/M, m/M]: 0.5 and 0.75 (exact in binary) fall in the bin they close
    p = torch.tensor([[0.5, 0.5], [0.75, 0.25]])
    assert reliability(p, torch.tensor([0, 0]), n_bins=2)["count"] == [1, 1]
    assert reliability(p, torch.tensor([0, 0]), n_bins=4)["count"] == [0, 1, 1, 0]


def test_reliability_bins_by_hand():
    r = reliability(P4, Y4, n_bins=5)
    assert r["lower"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert r["upper"] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert r["count"] == [0, 0, 1, 2, 1]
    assert math.isnan(r["confidence"][0]) and math.isnan(r["accuracy"][1])
    assert r["confidence"][2:] == pytest.approx([0.55, 0.675, 0.9])
    assert r["accuracy"][2:] == pytest.approx([0.0, 0.5, 1.0])


def test_perfectly_confident_and_right_has_zero_ece():
    p = torch.eye(3)
    assert expected_calibration_error(p, torch.arange(3)) == pytest.approx(0.0)
    assert expected_calibration_error(p, torch.tensor([1, 2, 0])) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- plot

def test_plot_reliability_returns_a_labelled_figure():
    logits, y = _calibrated(400, 4, 3.0, seed=3)
    fig = plot_reliability(probabilities(logits), probabilities(logits, 3.0), y, n_bins=10)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(texts) == 3 and sum("ECE" in t for t in texts) == 2 and "perfect calibration" in texts
    fig2, ax2 = plt.subplots()
    assert plot_reliability(P4, None, Y4, n_bins=5, ax=ax2) is fig2


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("call,phrase", [
    (lambda: probabilities(torch.ones(3)), "2-D tensor"),
    (lambda: probabilities(torch.ones(2, 3), temperature=0.0), "temperature must be > 0"),
    (lambda: probabilities(torch.ones(2, 3), temperature=-1.0), "temperature must be > 0"),
    (lambda: probabilities(torch.ones(2, 3), temperature=torch.ones(2)), "one scalar"),
    (lambda: confidence(torch.ones(2, 3), kind="entropy"), "kind must be one of"),
    (lambda: confidence(torch.ones(2, 3), temperature=0), "temperature must be > 0"),
    (lambda: margin(torch.ones(4, 1)), "at least 2 classes"),
    (lambda: max_prob(torch.ones(2, 3, 4)), "2-D tensor"),
    (lambda: nearest_distance(torch.ones(3)), "2-D tensor"),
    (lambda: fit_temperature(torch.ones(4, 3), torch.zeros(5, dtype=torch.long)), "4 rows but y has 5"),
    (lambda: fit_temperature(torch.ones(4, 3), torch.tensor([0, 1, 2, -1])), "Drop distractor rows"),
    (lambda: fit_temperature(torch.ones(4, 3), torch.zeros(4, dtype=torch.long), max_iter=0), "max_iter"),
    (lambda: fit_temperature(torch.ones(4), torch.zeros(4, dtype=torch.long)), "2-D tensor"),
    (lambda: expected_calibration_error(P4, Y4, n_bins=0), "n_bins must be an integer >= 1"),
    (lambda: expected_calibration_error(P4, Y4[:3]), "4 rows but y has 3"),
    (lambda: expected_calibration_error(P4, Y4.float()), "integer class indices"),
    (lambda: expected_calibration_error(P4, torch.tensor([0, 0, 2, 0])), "-1 \\(distractor\\) or 0..1"),
    (lambda: expected_calibration_error(P4.log(), Y4), "Did you pass logits"),
    (lambda: expected_calibration_error(P4[0], Y4), "2-D tensor"),
    (lambda: reliability(P4, Y4.reshape(2, 2)), "1-D tensor"),
    (lambda: plot_reliability(P4, None, Y4, n_bins=0), "n_bins"),
])
def test_bad_inputs_say_what_is_wrong(call, phrase):
    with pytest.raises(ValueError, match=phrase):
        call()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_everything_runs_on_the_gpu_and_stays_there():
    logits, y = _calibrated(2000, 5, 2.0, seed=4)
    logits, y = logits.cuda(), y.cuda()
    p = probabilities(logits, 2.0)
    assert p.is_cuda and confidence(logits, "margin").is_cuda and confidence(logits, "distance").is_cuda
    assert fit_temperature(logits, y) == pytest.approx(fit_temperature(logits.cpu(), y.cpu()), rel=1e-6)
    assert expected_calibration_error(p, y) == pytest.approx(expected_calibration_error(p.cpu(), y.cpu()))
    assert isinstance(plot_reliability(probabilities(logits), p, y), Figure)
