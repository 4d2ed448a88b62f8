"""Chapter 00's checks: valid styles pass; each mistake is named; stubs are 'not attempted'.

The wrong answers below are written for these tests (mutated inputs, wrong return types, partial
answers, ignored arguments, wrong axis, wrong set, the chapter's pitfalls), each asserting that the
message names the mistake.
"""
import math
import statistics

import numpy as np
import pytest
import torch

from course_utils import checks
from course_utils.chapter_checks import ch00
from course_utils.episodes import sample_episode
from course_utils.evaluation import student_t_quantile
from conftest import message, status, stub  # shared check-test helpers


def verdict(check, fn, number):
    """Run a check; return (status, message)."""
    returned = check(fn)
    s, m = status(number), message(number)
    assert (returned is fn) == (s == "right")
    return s, m


# --- 0.1 -------------------------------------------------------------------

def good_sampler(classes, n_way, k_shot, q_query, generator=None):
    ep = sample_episode(classes, n_way, k_shot, q_query, generator)
    return ep.support_x, ep.support_y, ep.query_x, ep.query_y


def loop_sampler(classes, n_way, k_shot, q_query, generator=None):
    """Another valid style: multinomial for the classes, argsort of uniforms for the examples,
    Python lists of labels, torch.stack, a list returned instead of a tuple, float64 images."""
    chosen = torch.multinomial(torch.ones(len(classes)), n_way, generator=generator)
    sx, qx, sy, qy = [], [], [], []
    for label, c in enumerate(chosen.tolist()):
        order = torch.rand(classes.x[c].shape[0], generator=generator).argsort()
        for i in order[:k_shot].tolist():
            sx.append(classes.x[c][i].double() / 255)
            sy.append(label)
        for i in order[k_shot:k_shot + q_query].tolist():
            qx.append(classes.x[c][i].double() / 255)
            qy.append(label)
    return [torch.stack(sx), torch.tensor(sy), torch.stack(qx), torch.tensor(qy)]


def vector_sampler(classes, n_way, k_shot, q_query, generator=None):
    """Vectorised: one random permutation per class, fancy indexing, reshape."""
    chosen = torch.randperm(len(classes), generator=generator)[:n_way]
    m = classes.x.shape[1]
    idx = torch.rand(n_way, m, generator=generator).argsort(dim=1)[:, :k_shot + q_query]
    x = classes.x[chosen[:, None], idx].float() / 255          # (N, K+Q, 1, H, W)
    y = torch.arange(n_way)
    shape = x.shape[2:]
    return (x[:, :k_shot].reshape(-1, *shape), y.repeat_interleave(k_shot),
            x[:, k_shot:].reshape(-1, *shape), y.repeat_interleave(q_query))


def _build(classes, chosen, picks, k_shot, q_query, labels=None):
    """Helper of the wrong samplers: images of ``chosen`` classes at example indices ``picks``."""
    sx, qx = [], []
    for c, pick in zip(chosen, picks):
        ex = classes.x[c][pick].float() / 255
        sx.append(ex[:k_shot])
        qx.append(ex[k_shot:k_shot + q_query])
    y = torch.arange(len(chosen))
    sy, qy = (y.repeat_interleave(k_shot), y.repeat_interleave(q_query)) if labels is None else labels
    return torch.cat(sx), sy, torch.cat(qx), qy


def _randperm_picks(classes, chosen, m, generator):
    return [torch.randperm(classes.x.shape[1], generator=generator)[:m] for _ in chosen]


def global_labels(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.randperm(len(classes), generator=generator)[:n_way]
    picks = _randperm_picks(classes, chosen, k_shot + q_query, generator)
    return _build(classes, chosen.tolist(), picks, k_shot, q_query,
                  (chosen.repeat_interleave(k_shot), chosen.repeat_interleave(q_query)))


def overlapping(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.randperm(len(classes), generator=generator)[:n_way].tolist()
    sx, qx = [], []
    for c in chosen:
        ex = classes.x[c][torch.randperm(classes.x.shape[1], generator=generator)].float() / 255
        sx.append(ex[:k_shot])
        qx.append(ex[:q_query])  # the queries reuse the support examples
    y = torch.arange(n_way)
    return torch.cat(sx), y.repeat_interleave(k_shot), torch.cat(qx), y.repeat_interleave(q_query)


def always_class_zero(classes, n_way, k_shot, q_query, generator=None):
    chosen = [0] * n_way
    return _build(classes, chosen, _randperm_picks(classes, chosen, k_shot + q_query, generator), k_shot, q_query)


def with_replacement(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.randint(len(classes), (n_way,), generator=generator).tolist()  # can repeat a class
    return _build(classes, chosen, _randperm_picks(classes, chosen, k_shot + q_query, generator), k_shot, q_query)


def global_rng(classes, n_way, k_shot, q_query, generator=None):
    return good_sampler(classes, n_way, k_shot, q_query, None)


def copied_generator(classes, n_way, k_shot, q_query, generator=None):
    g = torch.Generator().set_state(generator.get_state()) if generator is not None else None
    return good_sampler(classes, n_way, k_shot, q_query, g)


def not_normalised(classes, n_way, k_shot, q_query, generator=None):
    sx, sy, qx, qy = good_sampler(classes, n_way, k_shot, q_query, generator)
    return sx * 255, sy, qx * 255, qy


def uint8_images(classes, n_way, k_shot, q_query, generator=None):
    sx, sy, qx, qy = good_sampler(classes, n_way, k_shot, q_query, generator)
    return (sx * 255).round().to(torch.uint8), sy, (qx * 255).round().to(torch.uint8), qy


def float_labels(classes, n_way, k_shot, q_query, generator=None):
    sx, sy, qx, qy = good_sampler(classes, n_way, k_shot, q_query, generator)
    return sx, sy.float(), qx, qy.float()


def int32_labels(classes, n_way, k_shot, q_query, generator=None):
    sx, sy, qx, qy = good_sampler(classes, n_way, k_shot, q_query, generator)
    return sx, sy.int(), qx, qy.int()


def interleaved_labels(classes, n_way, k_shot, q_query, generator=None):
    sx, sy, qx, qy = good_sampler(classes, n_way, k_shot, q_query, generator)
    return sx, torch.arange(n_way).repeat(k_shot), qx, qy


def first_classes(classes, n_way, k_shot, q_query, generator=None):
    chosen = list(range(n_way))
    return _build(classes, chosen, _randperm_picks(classes, chosen, k_shot + q_query, generator), k_shot, q_query)


def sorted_classes(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.randperm(len(classes), generator=generator)[:n_way].sort().values.tolist()
    return _build(classes, chosen, _randperm_picks(classes, chosen, k_shot + q_query, generator), k_shot, q_query)


def without_last_class(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.randperm(len(classes) - 1, generator=generator)[:n_way].tolist()
    return _build(classes, chosen, _randperm_picks(classes, chosen, k_shot + q_query, generator), k_shot, q_query)


def first_examples(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.randperm(len(classes), generator=generator)[:n_way].tolist()
    return _build(classes, chosen, [torch.arange(k_shot + q_query)] * n_way, k_shot, q_query)


def only_first_kq_examples(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.randperm(len(classes), generator=generator)[:n_way].tolist()
    picks = [torch.randperm(k_shot + q_query, generator=generator) for _ in chosen]
    return _build(classes, chosen, picks, k_shot, q_query)


def shared_positions(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.randperm(len(classes), generator=generator)[:n_way].tolist()
    pick = torch.randperm(classes.x.shape[1], generator=generator)[:k_shot + q_query]  # once, for all classes
    return _build(classes, chosen, [pick] * n_way, k_shot, q_query)


def repeated_query(classes, n_way, k_shot, q_query, generator=None):
    chosen = torch.randperm(len(classes), generator=generator)[:n_way].tolist()
    picks = []
    for _ in chosen:
        p = torch.randperm(classes.x.shape[1], generator=generator)
        picks.append(torch.cat([p[:k_shot], p[k_shot:k_shot + 1].repeat(q_query)]))
    return _build(classes, chosen, picks, k_shot, q_query)


def fixed(param, value):
    """A sampler that ignores one argument (uses a fixed value instead)."""
    def sampler(classes, n_way, k_shot, q_query, generator=None):
        args = {**dict(n_way=n_way, k_shot=k_shot, q_query=q_query), param: value}
        return good_sampler(classes, args["n_way"], args["k_shot"], args["q_query"], generator)
    return sampler


def swapped_k_q(classes, n_way, k_shot, q_query, generator=None):
    return good_sampler(classes, n_way, q_query, k_shot, generator)


def k_for_queries(classes, n_way, k_shot, q_query, generator=None):
    return good_sampler(classes, n_way, k_shot, k_shot, generator)  # k_shot where q_query belongs


def q_for_support(classes, n_way, k_shot, q_query, generator=None):
    return good_sampler(classes, n_way, q_query, q_query, generator)  # q_query where k_shot belongs


def shuffles_in_place(classes, n_way, k_shot, q_query, generator=None):
    for c in range(len(classes)):  # "shuffle the examples first": changes the caller's data
        classes.x[c] = classes.x[c][torch.randperm(classes.x.shape[1], generator=generator)]
    chosen = torch.randperm(len(classes), generator=generator)[:n_way].tolist()
    return _build(classes, chosen, [torch.arange(k_shot + q_query)] * n_way, k_shot, q_query)


def partial(classes, n_way, k_shot, q_query, generator=None):
    torch.randperm(len(classes), generator=generator)[:n_way]
    raise NotImplementedError("query set: to do")


def returns_episode(classes, n_way, k_shot, q_query, generator=None):
    return sample_episode(classes, n_way, k_shot, q_query, generator)


def list_of_query_images(classes, n_way, k_shot, q_query, generator=None):
    sx, sy, qx, qy = good_sampler(classes, n_way, k_shot, q_query, generator)
    return sx, sy, list(qx), qy


@pytest.mark.parametrize("fn", [good_sampler, loop_sampler, vector_sampler])
def test_sampler_right_styles(fn):
    assert verdict(ch00.sample_episode, fn, "0.1") == ("right", "")


@pytest.mark.parametrize("fn,phrase", [
    (global_labels, "global class ids"),
    (overlapping, "in both the support and the query"),
    (always_class_zero, "for more than one label"),
    (with_replacement, "for more than one label"),
    (global_rng, "global random state"),
    (copied_generator, "two calls in a row"),
    (not_normalised, "values in [0, 1]"),
    (uint8_images, "dtype torch.uint8"),
    (float_labels, "labels should be integers"),
    (int32_labels, "should be int64"),
    (interleaved_labels, "interleaved"),
    (first_classes, "first N classes"),
    (sorted_classes, "increasing order"),
    (without_last_class, "never chosen"),
    (first_examples, "always the first K examples"),
    (only_first_kq_examples, "were never used"),
    (shared_positions, "same example positions"),
    (repeated_query, "query example is repeated"),
    (fixed("n_way", 5), "does not use n_way"),
    (fixed("k_shot", 2), "does not use k_shot"),
    (fixed("q_query", 3), "does not use q_query"),
    (swapped_k_q, "The support set has N*K rows: use k_shot (not q_query)"),
    (k_for_queries, "The query set has N*Q rows: use q_query (not k_shot)"),
    (q_for_support, "The support set has N*K rows: use k_shot (not q_query)"),
    (shuffles_in_place, "changed its input `classes` in place"),
    (partial, "not the exercise's stub"),
    (returns_episode, "Episode object"),
    (lambda *a, **k: good_sampler(*a, **k)[:3], "tuple of four tensors"),
    (lambda *a, **k: dict(zip("abcd", good_sampler(*a, **k))), "tuple of four tensors"),
    (list_of_query_images, "query_x should be a tensor"),
])
def test_sampler_mistakes(fn, phrase):
    s, m = verdict(ch00.sample_episode, fn, "0.1")
    assert s == "wrong" and phrase in m, m


def test_sampler_wrapping_the_library_is_accepted():
    """Like every chapter, the check accepts any correct implementation, a call of the course's own
    sampler included (good_sampler is exactly that wrapper)."""
    assert verdict(ch00.sample_episode, good_sampler, "0.1") == ("right", "")


def test_sampler_stub_and_global_random_state_untouched():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    ch00.sample_episode(good_sampler)
    assert torch.equal(torch.rand(3), expected)  # the probe leaves the notebook's random state alone
    assert verdict(ch00.sample_episode, stub, "0.1")[0] == "not attempted"


# --- 0.2 -------------------------------------------------------------------

def nn_good(sx, sy, qx):
    return sy[torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(1)]


def nn_broadcast(sx, sy, qx):
    d2 = ((qx.flatten(1)[:, None, :] - sx.flatten(1)[None, :, :]) ** 2).sum(-1)  # squared: same argmin
    return sy[d2.argmin(dim=1)]


def nn_loop(sx, sy, qx):
    out = []
    for q in qx:
        dists = torch.stack([torch.norm(q - s) for s in sx])
        out.append(sy[dists.argmin()])
    return torch.stack(out)


def nn_expanded(sx, sy, qx):
    q, s = qx.reshape(len(qx), -1), sx.reshape(len(sx), -1)
    d2 = (q ** 2).sum(1, keepdim=True) - 2 * q @ s.T + (s ** 2).sum(1)
    return sy[d2.argmin(1)]


def nn_mutates(sx, sy, qx):
    qx -= qx.mean()  # "centre the queries": changes the caller's tensor
    return nn_good(sx, sy, qx + qx.mean())


def _flat(sx, qx):
    return sx.flatten(1), qx.flatten(1)


def nn_unflattened(sx, sy, qx):
    return sy[torch.cdist(qx, sx).argmin(dim=1)]  # on 4-D images: torch's "size of tensor a ..."


def nn_unflattened_broadcast(sx, sy, qx):
    d2 = ((qx[:, None] - sx[None]) ** 2).sum(-1)  # sums the last axis only: a wrong shape, no error
    return sy[d2.argmin(dim=1)]


def nn_unflattened_and_wrong(sx, sy, qx):
    return sy[torch.cdist(qx, sx).argmax(dim=1)]  # raises too, but would be wrong when flattened


@pytest.mark.parametrize("fn", [nn_good, nn_broadcast, nn_loop, nn_expanded])
def test_nearest_neighbour_right_styles(fn):
    assert verdict(ch00.nearest_neighbour, fn, "0.2") == ("right", "")


@pytest.mark.parametrize("fn,phrase", [
    (lambda sx, sy, qx: torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(1), "index of the nearest"),
    (lambda sx, sy, qx: sy[torch.cdist(qx.flatten(1), sx.flatten(1)).argmax(1)], "FARTHEST"),
    (lambda sx, sy, qx: torch.cdist(qx.flatten(1), sx.flatten(1)), "shape"),
    (lambda sx, sy, qx: nn_good(sx, sy, qx).float(), "integers"),
    (lambda sx, sy, qx: sy[(qx.flatten(1) @ sx).argmin(1)], "raised RuntimeError"),
    (lambda sx, sy, qx: sy[torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(0)], "dim=0"),
    (lambda sx, sy, qx: sy[torch.cdist(qx.flatten(1), qx.flatten(1)).argmin(1)], "query vs query"),
    (lambda sx, sy, qx: sy[torch.cdist(sx.flatten(1), sx.flatten(1)).argmin(1)], "support vs support"),
    (lambda sx, sy, qx: torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(1) // (len(sy) // (int(sy.max()) + 1)),
     "index // K"),
    (lambda sx, sy, qx: torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(1) % (int(sy.max()) + 1), "index % N"),
    (lambda sx, sy, qx: sy[torch.cdist(qx.flatten(1), sx.flatten(1), p=1).argmin(1)], "L1"),
    (lambda sx, sy, qx: sy[(qx.flatten(1) @ sx.flatten(1).T).argmax(1)], "dot product"),
    (lambda sx, sy, qx: sy[torch.nn.functional.cosine_similarity(
        qx.flatten(1)[:, None], sx.flatten(1)[None], dim=-1).argmax(1)], "cosine"),
    (lambda sx, sy, qx: nn_good(sx, sy, qx).tolist(), "should be a Tensor"),
    (lambda sx, sy, qx: (nn_good(sx, sy, qx), torch.cdist(qx.flatten(1), sx.flatten(1))), "return only"),
    (nn_mutates, "changed its input `qx` in place"),
    (nn_unflattened, "flatten each image to a vector first: x.flatten(start_dim=1)"),
    (nn_unflattened_broadcast, "flatten each image to a vector first: x.flatten(start_dim=1)"),
    (nn_unflattened_and_wrong, "runs (its labels are still wrong then"),
    (lambda sx, sy, qx: sy[(qx.flatten(1) @ sx.flatten(1).T.T).argmin(1)], "raised RuntimeError: mat1"),
    (lambda sx, sy, qx: sy[torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(1)].flip(0), "wrong for"),
])
def test_nearest_neighbour_mistakes(fn, phrase):
    s, m = verdict(ch00.nearest_neighbour, fn, "0.2")
    assert s == "wrong" and phrase in m, m


def test_nearest_neighbour_device_and_stub():
    def cpu_tensor(sx, sy, qx):  # a bare new tensor ends up on the CPU
        d = torch.cdist(qx.flatten(1), sx.flatten(1)) + torch.zeros(len(qx), len(sx))
        return sy[d.argmin(1)]
    s, m = verdict(ch00.nearest_neighbour, cpu_tensor, "0.2")
    assert s == "wrong" and "on the CPU" in m
    assert verdict(ch00.nearest_neighbour, stub, "0.2")[0] == "not attempted"


# --- 0.3 -------------------------------------------------------------------

def ci_good(a):
    return a.mean().item(), 1.96 * a.std().item() / math.sqrt(len(a))


def ci_python(a):
    values = a.tolist()  # Python floats are float64
    return statistics.mean(values), 1.96 * statistics.stdev(values) / math.sqrt(len(values))


def ci_numpy(a):
    v = a.numpy()
    return [float(v.mean()), float(1.959964 * v.std(ddof=1) / np.sqrt(v.size))]  # a list is fine


def ci_std_mean(a):
    s, m = torch.std_mean(a.double())
    return m, 1.96 * s / a.numel() ** 0.5  # 0-dim tensors are fine


def ci_loop(a):
    xs = [float(x) for x in a]
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return m, 1.96 * s / math.sqrt(len(xs))


def ci_z(z, **std):
    return lambda a: (a.mean().item(), z * a.double().std(**std).item() / math.sqrt(len(a)))


def ci_t(a):
    t = student_t_quantile(0.975, len(a) - 1)
    return a.mean().item(), t * a.std().item() / math.sqrt(len(a))


def ci_partial(a):
    m = a.mean().item()
    raise NotImplementedError("half-width later")


@pytest.mark.parametrize("fn", [ci_good, ci_python, ci_numpy, ci_std_mean, ci_loop, ci_z(1.959964)])
def test_ci_right_styles(fn):
    assert verdict(ch00.mean_ci95, fn, "0.3") == ("right", "")


@pytest.mark.parametrize("fn,phrase", [
    (ci_z(2.0), "z = 2 instead of 1.96"),
    (ci_z(1.645), "90% interval"),
    (ci_z(2.576), "99% interval"),
    (ci_t, "Student's t quantile"),
    (ci_t, "exact only for normally distributed values"),
    (ci_z(1.96, unbiased=False), "population standard deviation"),
    (lambda a: (float(a.mean()), 1.96 * float(np.std(a.numpy())) / math.sqrt(len(a))), "ddof=0"),
    (lambda a: (a.mean().item(), 1.96 * a.std().item()), "without the division by sqrt(n)"),
    (lambda a: (a.mean().item(), 1.96 * a.std().item() / len(a)), "by n instead of sqrt(n)"),
    (lambda a: (a.mean().item(), 1.96 * a.std().item() / math.sqrt(len(a) - 1)), "sqrt(n - 1)"),
    (lambda a: (a.mean().item(), 1.96 * a.std().item() / math.sqrt(600)), "fixed n = 600"),
    (lambda a: (a.mean().item(), 1.96 * a.var().item() / math.sqrt(len(a))), "variance instead of"),
    (lambda a: (a.mean().item(), a.std().item() / math.sqrt(len(a))), "without the factor 1.96"),
    (lambda a: (a.mean().item(), 2 * 1.96 * a.std().item() / math.sqrt(len(a))), "full width"),
    (lambda a: (a.mean().item(), 2 * a.std(unbiased=False).item() / math.sqrt(len(a))),
     "z = 2 instead of 1.96 (2 rounds 1.96 up, and makes the interval 2% wider); and the population"),
    (lambda a: (a.median().item(), ci_good(a)[1]), "median"),
    (lambda a: (100 * a.mean().item(), 100 * ci_good(a)[1]), "percentage"),
    (lambda a: ci_good(a)[::-1], "(half_width, mean)"),
    (lambda a: (ci_good(a)[0] - ci_good(a)[1], ci_good(a)[0] + ci_good(a)[1]), "bounds"),
    (lambda a: (ci_good(a)[0], ci_good(a)[0] - ci_good(a)[1], ci_good(a)[0] + ci_good(a)[1]), "lower bound"),
    (lambda a: a.mean().item(), "return a pair"),
    (lambda a: {"mean": ci_good(a)[0], "ci95": ci_good(a)[1]}, "return a pair"),
    (lambda a: (a, ci_good(a)[1]), "the mean should be one number"),
    (lambda a: ci_good(a.float()), "Compute in float64"),
    (lambda a: ci_good(torch.tensor(a.tolist())), "Compute in float64"),
    (ci_partial, "not the exercise's stub"),
])
def test_ci_mistakes(fn, phrase):
    s, m = verdict(ch00.mean_ci95, fn, "0.3")
    assert s == "wrong" and phrase in m, m


def test_ci_stub_and_strict_mode(monkeypatch):
    assert verdict(ch00.mean_ci95, stub, "0.3")[0] == "not attempted"
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError):
        ch00.mean_ci95(stub)
    with pytest.raises(checks.ExerciseError, match="z = 2"):
        ch00.mean_ci95(ci_z(2.0))

