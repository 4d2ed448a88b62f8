"""Chapter 00's checks: the reference passes; each classic mistake is named; stubs are 'not attempted'."""
import math

import pytest
import torch

from course_utils import checks
from course_utils.chapter_checks import ch00
from course_utils.episodes import sample_episode
from conftest import message, status, stub  # shared check-test helpers




# --- 0.1 -------------------------------------------------------------------

def good_sampler(classes, n_way, k_shot, q_query, generator=None):
    ep = sample_episode(classes, n_way, k_shot, q_query, generator)
    return ep.support_x, ep.support_y, ep.query_x, ep.query_y


def global_labels(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.randperm(len(classes), generator=generator)[:n_way]
    sx, sy, qx, qy = [], [], [], []
    for c in chosen.tolist():
        pick = torch.randperm(classes.min_examples(), generator=generator)[:k_shot + q_query]
        ex = classes.x[c][pick].float() / 255
        sx.append(ex[:k_shot]); qx.append(ex[k_shot:])
        sy += [c] * k_shot; qy += [c] * q_query
    return torch.cat(sx), torch.tensor(sy), torch.cat(qx), torch.tensor(qy)


def overlapping(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.randperm(len(classes), generator=generator)[:n_way]
    sx, qx = [], []
    for c in chosen.tolist():
        ex = classes.x[c].float() / 255
        sx.append(ex[:k_shot]); qx.append(ex[:q_query])  # queries reuse the support examples
    y = torch.arange(n_way)
    return torch.cat(sx), y.repeat_interleave(k_shot), torch.cat(qx), y.repeat_interleave(q_query)


def with_replacement(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.zeros(n_way, dtype=torch.long)  # always class 0
    sx, qx = [], []
    for c in chosen.tolist():
        pick = torch.randperm(classes.min_examples(), generator=generator)[:k_shot + q_query]
        ex = classes.x[c][pick].float() / 255
        sx.append(ex[:k_shot]); qx.append(ex[k_shot:])
    y = torch.arange(n_way)
    return torch.cat(sx), y.repeat_interleave(k_shot), torch.cat(qx), y.repeat_interleave(q_query)


def ignores_generator(classes, n_way, k_shot, q_query, generator=None):
    return good_sampler(classes, n_way, k_shot, q_query, None)


def not_normalised(classes, n_way, k_shot, q_query, generator=None):
    sx, sy, qx, qy = good_sampler(classes, n_way, k_shot, q_query, generator)
    return sx * 255, sy, qx * 255, qy


@pytest.mark.parametrize("fn,phrase", [
    (global_labels, "labels must be 0.."),
    (overlapping, "in both the support and the query"),
    (with_replacement, "picked twice"),
    (ignores_generator, "seeded alike"),
    (not_normalised, "float in [0, 1]"),
    (lambda *a, **k: good_sampler(*a, **k)[:3], "return a tuple"),
])
def test_sampler_mistakes(fn, phrase):
    assert ch00.sample_episode(fn) is not fn
    assert status("0.1") == "wrong" and phrase in message("0.1")


def test_sampler_right_and_stub():
    assert ch00.sample_episode(good_sampler) is good_sampler and status("0.1") == "right"
    ch00.sample_episode(stub)
    assert status("0.1") == "not attempted"


# --- 0.2 -------------------------------------------------------------------

def nn_good(sx, sy, qx):
    return sy[torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(1)]


@pytest.mark.parametrize("fn,phrase", [
    (lambda sx, sy, qx: torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(1), "index of the nearest"),
    (lambda sx, sy, qx: sy[torch.cdist(qx.flatten(1), sx.flatten(1)).argmax(1)], "FARTHEST"),
    (lambda sx, sy, qx: torch.cdist(qx.flatten(1), sx.flatten(1)), "shape"),
    (lambda sx, sy, qx: sy[torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(1)].float(), "integers"),
    (lambda sx, sy, qx: sy[(qx.flatten(1) @ sx).argmin(1)], "raised RuntimeError"),
    (lambda sx, sy, qx: sy[torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(0)], "dim=0"),
])
def test_nearest_neighbour_mistakes(fn, phrase):
    ch00.nearest_neighbour(fn)
    assert status("0.2") == "wrong" and phrase in message("0.2")


def test_nearest_neighbour_right_and_stub():
    assert ch00.nearest_neighbour(nn_good) is nn_good and status("0.2") == "right"
    ch00.nearest_neighbour(stub)
    assert status("0.2") == "not attempted"


# --- 0.3 -------------------------------------------------------------------

def ci_good(a):
    return a.mean().item(), 1.96 * a.std().item() / math.sqrt(len(a))


@pytest.mark.parametrize("fn,phrase", [
    (lambda a: (a.mean().item(), 1.96 * a.std().item()), "forgot to divide by sqrt(n)"),
    (lambda a: (a.mean().item(), 1.96 * a.std().item() / len(a)), "by n instead of sqrt(n)"),
    (lambda a: (a.mean().item(), 1.96 * a.std(unbiased=False).item() / math.sqrt(len(a))), "population"),
    (lambda a: (a.mean().item(), 1.645 * a.std().item() / math.sqrt(len(a))), "1.645"),
    (lambda a: (a.mean().item(), 1.96 * a.var().item() / math.sqrt(len(a))), "variance"),
    (lambda a: (a.mean().item(), a.std().item() / math.sqrt(len(a))), "factor 1.96"),
    (lambda a: (a.median().item(), 1.96 * a.std().item() / math.sqrt(len(a))), "the mean is"),
    (lambda a: a.mean().item(), "return a pair"),
])
def test_ci_mistakes(fn, phrase):
    ch00.mean_ci95(fn)
    assert status("0.3") == "wrong" and phrase in message("0.3")


def test_ci_right_accepts_exact_quantile_and_strict_mode(monkeypatch):
    assert ch00.mean_ci95(ci_good) is ci_good and status("0.3") == "right"
    exact = lambda a: (a.mean(), 1.959964 * a.std() / math.sqrt(len(a)))  # noqa: E731
    assert ch00.mean_ci95(exact) is exact
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError):
        ch00.mean_ci95(stub)
