"""Chapter 07's checks: right answers in several styles pass; each classic mistake of automatic labelling and
self-training gets its own named message; ignored arguments, mutated inputs, wrong return types and partial
answers are reported as such; stubs are "not attempted".

The mistaken functions below are written independently of the check's own variants (as a student would
write them), so a named message shows that the check recognises the mistake, not merely its own code."""
import dataclasses
import math
import statistics

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from course_utils import checks, protonet
from course_utils.chapter_checks import ch07
from course_utils.labelling_data import NONE
from conftest import expect_stub_handling, message, status, stub  # shared check-test helpers


def sq(z, c):
    return ((z[:, None, :] - c[None, :, :]) ** 2).sum(-1)


# --- 7.1 confidence and acceptance at tau ------------------------------------------------------

def acc_fsoftmax(logits, temperature, tau):  # right: F.softmax, torch.max
    p = F.softmax(logits / temperature, dim=-1)
    confidence, labels = torch.max(p, 1)
    return labels, confidence, confidence >= tau


def acc_explicit(logits, temperature, tau):  # right: a hand-written stable softmax, gather
    a = logits / temperature
    e = torch.exp(a - a.max(dim=1, keepdim=True).values)
    p = e / e.sum(dim=1, keepdim=True)
    labels = p.argmax(dim=1)
    confidence = p.gather(1, labels[:, None]).squeeze(1)
    return labels, confidence, ~(confidence < tau)


def acc_log_then_exp(logits, temperature, tau):  # right: exp of log_softmax
    confidence, labels = torch.log_softmax(logits / temperature, dim=1).max(dim=1)
    confidence = confidence.exp()
    return labels, confidence, confidence >= tau


def acc_dim0(logits, temperature, tau):
    confidence, labels = torch.softmax(logits / temperature, dim=0).max(dim=1)
    return labels, confidence, confidence >= tau


def acc_times_t(logits, temperature, tau):
    confidence, labels = torch.softmax(logits * temperature, dim=1).max(dim=1)
    return labels, confidence, confidence >= tau


def acc_no_t(logits, temperature, tau):
    confidence, labels = torch.softmax(logits, dim=1).max(dim=1)
    return labels, confidence, confidence >= tau


def acc_fixed_t(logits, temperature, tau):
    confidence, labels = torch.softmax(logits / 2.0, dim=1).max(dim=1)
    return labels, confidence, confidence >= tau


def acc_argmin(logits, temperature, tau):  # "the nearest class" read from distances the wrong way
    confidence, labels = torch.softmax(logits / temperature, dim=1).min(dim=1)
    return labels, confidence, confidence >= tau


def acc_neg_logits(logits, temperature, tau):  # reads the logits as distances and negates them again
    p = torch.softmax(-logits / temperature, dim=1)
    confidence, labels = p.max(dim=1)
    return labels, confidence, confidence >= tau


def acc_labels_argmin(logits, temperature, tau):
    p = torch.softmax(logits / temperature, dim=1)
    confidence = p.max(dim=1).values
    return (-logits).argmax(dim=1), confidence, confidence >= tau


def acc_labels_dim0(logits, temperature, tau):
    confidence = torch.softmax(logits / temperature, dim=1).max(dim=1).values
    labels = torch.softmax(logits / temperature, dim=0).argmax(dim=1)
    return labels, confidence, confidence >= tau


def acc_raw_logit(logits, temperature, tau):
    confidence, labels = logits.max(dim=1)
    return labels, confidence, confidence >= tau


def acc_margin(logits, temperature, tau):
    p = torch.softmax(logits / temperature, dim=1)
    top = p.topk(2, dim=1)
    confidence = top.values[:, 0] - top.values[:, 1]
    return top.indices[:, 0], confidence, confidence >= tau


def acc_log_prob(logits, temperature, tau):
    confidence, labels = F.log_softmax(logits / temperature, dim=1).max(dim=1)
    return labels, confidence, confidence >= tau


def acc_strict(logits, temperature, tau):
    confidence, labels = torch.softmax(logits / temperature, dim=1).max(dim=1)
    return labels, confidence, confidence > tau


def acc_all(logits, temperature, tau):  # tau ignored
    confidence, labels = torch.softmax(logits / temperature, dim=1).max(dim=1)
    return labels, confidence, torch.ones_like(labels, dtype=torch.bool)


def acc_fixed_tau(logits, temperature, tau):
    confidence, labels = torch.softmax(logits / temperature, dim=1).max(dim=1)
    return labels, confidence, confidence >= 0.6


def acc_inverted(logits, temperature, tau):
    confidence, labels = torch.softmax(logits / temperature, dim=1).max(dim=1)
    return labels, confidence, confidence < tau


def acc_logit_accept(logits, temperature, tau):
    confidence, labels = torch.softmax(logits / temperature, dim=1).max(dim=1)
    return labels, confidence, logits.max(dim=1).values >= tau


def acc_float_mask(logits, temperature, tau):
    labels, confidence, accepted = ch07.reference_accept_at(logits, temperature, tau)
    return labels, confidence, accepted.float()


def acc_long_mask(logits, temperature, tau):
    labels, confidence, accepted = ch07.reference_accept_at(logits, temperature, tau)
    return labels, confidence, accepted.long()


def acc_float_labels(logits, temperature, tau):
    labels, confidence, accepted = ch07.reference_accept_at(logits, temperature, tau)
    return labels.float(), confidence, accepted


def acc_swapped(logits, temperature, tau):
    labels, confidence, accepted = ch07.reference_accept_at(logits, temperature, tau)
    return confidence, labels, accepted


def acc_pair(logits, temperature, tau):
    labels, confidence, accepted = ch07.reference_accept_at(logits, temperature, tau)
    return labels, accepted


def acc_p(logits, temperature, tau):
    return torch.softmax(logits / temperature, dim=1)


def acc_none(logits, temperature, tau):
    torch.softmax(logits / temperature, dim=1)


def acc_float32(logits, temperature, tau):
    confidence, labels = torch.softmax(logits.float() / temperature, dim=1).max(dim=1)
    return labels, confidence, confidence >= tau


def acc_in_place(logits, temperature, tau):
    logits /= temperature
    confidence, labels = torch.softmax(logits, dim=1).max(dim=1)
    return labels, confidence, confidence >= tau


def acc_cpu_threshold(logits, temperature, tau):
    confidence, labels = torch.softmax(logits / temperature, dim=1).max(dim=1)
    return labels, confidence, confidence >= torch.tensor(tau, dtype=confidence.dtype).expand(confidence.shape)


def acc_partial(logits, temperature, tau):
    p = torch.softmax(logits / temperature, dim=1)
    raise NotImplementedError("the rest later")


@pytest.mark.parametrize("fn", [ch07.reference_accept_at, acc_fsoftmax, acc_explicit, acc_log_then_exp])
def test_accept_right_answers_pass(fn):
    assert ch07.accept_at(fn) is fn
    assert status("7.1") == "right", message("7.1")


@pytest.mark.parametrize("fn, phrase", [
    (acc_dim0, "the softmax runs over the items (dim=0)"),
    (acc_times_t, "multiplied by the temperature"),
    (acc_no_t, "the temperature is ignored"),
    (acc_fixed_t, "the temperature is fixed or ignored"),
    (acc_argmin, "*least* likely class"),
    (acc_neg_logits, "the logits are already minus the squared distances: softmax(logits / kappa), without "
                     "another minus sign"),
    (acc_labels_argmin, "the labels are the argmin"),
    (acc_labels_dim0, "the labels come from a softmax over the items"),
    (acc_raw_logit, "the confidence is the raw logit"),
    (acc_margin, "the confidence is the margin"),
    (acc_log_prob, "log-probability"),
    (acc_strict, "The comparison is strict"),
    (acc_all, "tau is ignored: every item is accepted"),
    (acc_fixed_tau, "tau is fixed or ignored"),
    (acc_inverted, "accepted is inverted"),
    (acc_logit_accept, "accepted compares the raw logits with tau"),
    (acc_float_mask, "it should be a bool tensor"),
    (acc_long_mask, "picks rows 0 and 1"),
    (acc_float_labels, "it holds indices"),
    (acc_swapped, "labels and confidence are swapped"),
    (acc_pair, "return a triple (labels, confidence, accepted)"),
    (acc_p, "That looks like one of the three alone"),
    (acc_none, "returned None"),
    (acc_float32, "compute in float64"),
    (acc_in_place, "changed its input `logits` in place"),
    (acc_cpu_threshold, "makes a tensor on the CPU"),
    (acc_partial, "not the exercise's stub"),
])
def test_accept_mistakes_are_named(fn, phrase):
    assert ch07.accept_at(fn) is ch07.reference_accept_at
    assert status("7.1") == "wrong"
    assert phrase in message("7.1"), message("7.1")


def test_accept_reference_semantics():
    logits = torch.tensor([[-1.0, -1.0], [0.0, -2.0], [-3.0, 0.0]], dtype=torch.float64)
    labels, conf, acc = ch07.reference_accept_at(logits, 1.0, 0.5)
    assert conf[0] == 0.5 and bool(acc[0])  # equal to tau: accepted (>=)
    assert labels[1:].tolist() == [0, 1] and acc.dtype == torch.bool
    _, conf2, _ = ch07.reference_accept_at(logits, 2.0, 0.5)
    assert conf2[1] < conf[1]  # a higher temperature softens


# --- 7.2 the threshold for a target precision ----------------------------------------------------

def _student_scores(pool, temperature, *, use_support=False, euclid=False, raw=False, cdist=False):
    """What a student writes: prototypes, logits, max-prob, correct (written apart from the check)."""
    c = protonet.prototypes(pool.support_z, pool.n_way, pool.k_shot)
    z, y = (pool.support_z, pool.support_y) if use_support else (pool.pool_z, pool.pool_y)
    d = torch.cdist(z, c) ** 2 if cdist else sq(z, c)
    if euclid:
        d = d.sqrt()
    logits = -d / temperature
    if raw:
        conf, pred = logits.max(dim=1)
    else:
        conf, pred = F.softmax(logits, dim=1).max(dim=1)
    return conf, pred == y, y == NONE


def _student_tau(conf, correct, target, *, largest=False, stop_early=False, positions=False, over_all=False,
                 strict=False):
    """A loop over the candidate thresholds from the top down (as a student writes it)."""
    values = torch.sort(conf, descending=True, stable=True)
    cs, cc = values.values, correct[values.indices].double()
    best = math.inf
    for i in range(len(cs)):
        if not positions and i + 1 < len(cs) and cs[i + 1] == cs[i]:
            continue  # not the end of a run of equal confidences
        prec = cc[: i + 1].sum().item() / (len(cs) if over_all else i + 1)
        if (prec > target if strict else prec >= target):
            if largest:
                return cs[i].item()
            best = cs[i].item()
        elif stop_early:
            break
    return best


def make_threshold(*, use_support=False, distractors="wrong", euclid=False, raw=False, which="all",
                   average=False, fixed_t=None, fixed_target=None, **rule):
    def fit(pools, temperature, target):
        t = temperature if fixed_t is None else fixed_t
        goal = target if fixed_target is None else fixed_target
        use = {"all": pools, "first": pools[:1], "last": pools[-1:]}[which]
        confs, rights = [], []
        for pool in use:
            conf, right, distr = _student_scores(pool, t, use_support=use_support, euclid=euclid, raw=raw)
            if distractors == "right":
                right = right | distr
            if distractors == "dropped":
                conf, right = conf[~distr], right[~distr]
            confs.append(conf)
            rights.append(right)
        if average:
            return sum(_student_tau(c, r, goal, **rule) for c, r in zip(confs, rights)) / len(confs)
        return _student_tau(torch.cat(confs), torch.cat(rights), goal, **rule)
    return fit


def thr_unique(pools, temperature, target):  # right: torch.unique candidates, ascending, first that reaches
    conf, right = [], []
    for pool in pools:
        c = torch.stack([pool.support_z[pool.support_y == n].mean(0) for n in range(pool.n_way)])
        p = torch.softmax(-(torch.cdist(pool.pool_z, c) ** 2) / temperature, dim=1)
        m, a = p.max(1)
        conf.append(m)
        right.append(a == pool.pool_y)
    conf, right = torch.cat(conf), torch.cat(right)
    for tau in torch.unique(conf):  # ascending
        accepted = conf >= tau
        if right[accepted].double().mean() >= target:
            return tau.item()
    return float("inf")


def thr_vectorised(pools, temperature, target):  # right: cumsum over the sorted list, run ends only
    scored = [_student_scores(p, temperature, cdist=True)[:2] for p in pools]
    conf, right = torch.cat([s[0] for s in scored]), torch.cat([s[1] for s in scored])
    cs, order = conf.sort(descending=True)
    prec = right[order].cumsum(0) / torch.arange(1, len(cs) + 1, device=cs.device)
    last = torch.ones_like(cs, dtype=torch.bool)
    last[:-1] = cs[1:] < cs[:-1]
    ok = last & (prec >= target)
    return cs[ok].min().item() if ok.any() else math.inf


thr_right_loop = make_threshold()
thr_support = make_threshold(use_support=True)
thr_distractors_right = make_threshold(distractors="right")
thr_distractors_dropped = make_threshold(distractors="dropped")
thr_largest = make_threshold(largest=True)
thr_stop_early = make_threshold(stop_early=True)
thr_positions = make_threshold(positions=True)
thr_over_all = make_threshold(over_all=True)
thr_no_t = make_threshold(fixed_t=1.0)
thr_target_099 = make_threshold(fixed_target=0.99)
thr_target_09 = make_threshold(fixed_target=0.9)
thr_target_08 = make_threshold(fixed_target=0.8)  # not a listed value: the behavioural test names it
thr_average = make_threshold(average=True)
thr_euclid = make_threshold(euclid=True)
thr_raw = make_threshold(raw=True)
thr_first = make_threshold(which="first")
thr_last = make_threshold(which="last")


thr_strict_loop = make_threshold(strict=True)


def _pooled(pools, temperature):
    scored = [_student_scores(p, temperature, cdist=True)[:2] for p in pools]
    return torch.cat([s[0] for s in scored]), torch.cat([s[1] for s in scored])


def thr_strict(pools, temperature, target):  # thr_vectorised with precision > target
    conf, right = _pooled(pools, temperature)
    cs, order = conf.sort(descending=True)
    prec = right[order].cumsum(0) / torch.arange(1, len(cs) + 1, device=cs.device)
    last = torch.ones_like(cs, dtype=torch.bool)
    last[:-1] = cs[1:] < cs[:-1]
    ok = last & (prec > target)
    return cs[ok].min().item() if ok.any() else math.inf


def thr_break_first_fail(pools, temperature, target):  # from the top, break at the first failing item
    conf, right = _pooled(pools, temperature)
    tau, hits = math.inf, 0
    for i, j in enumerate(torch.argsort(conf, descending=True).tolist()):
        hits += int(right[j])
        if hits / (i + 1) < target:
            break
        tau = conf[j].item()
    return tau


def thr_break_vectorised(pools, temperature, target):  # the cut just before the first dip
    conf, right = _pooled(pools, temperature)
    cs, order = conf.sort(descending=True)
    prec = right[order].double().cumsum(0) / torch.arange(1, len(cs) + 1, device=cs.device)
    bad = (prec < target).nonzero()
    k = int(bad[0, 0]) if len(bad) else len(cs)
    return cs[k - 1].item() if k > 0 else math.inf


def _per_pool(pools, temperature, target):  # the right rule, one pool at a time
    return [thr_vectorised([p], temperature, target) for p in pools]


def thr_per_pool_mean(pools, temperature, target):
    return statistics.mean(_per_pool(pools, temperature, target))


def thr_per_pool_tensor_mean(pools, temperature, target):
    return torch.tensor(_per_pool(pools, temperature, target), dtype=torch.float64).mean().item()


def thr_per_pool_median(pools, temperature, target):
    return float(np.median(_per_pool(pools, temperature, target)))


def thr_per_pool_torch_median(pools, temperature, target):  # torch.median: the lower middle value
    return torch.tensor(_per_pool(pools, temperature, target), dtype=torch.float64).median().item()


def thr_per_pool_median_f32(pools, temperature, target):  # torch.tensor(list) without dtype: float32
    return torch.tensor(_per_pool(pools, temperature, target)).median().item()


def thr_per_pool_min(pools, temperature, target):
    return min(_per_pool(pools, temperature, target))


def thr_t_fixed_2(pools, temperature, target):  # the temperature hard-coded: the behavioural test names it
    return thr_right_loop(pools, 2.0, target)


def thr_off(pools, temperature, target):  # no listed mistake: the first call that differs is shown
    return thr_right_loop(pools, temperature, target) + 0.01


def thr_float32(pools, temperature, target):
    f32 = [dataclasses.replace(p, support_z=p.support_z.float(), pool_z=p.pool_z.float()) for p in pools]
    return thr_right_loop(f32, temperature, target)


def thr_tensor(pools, temperature, target):
    return torch.tensor(thr_right_loop(pools, temperature, target))


def thr_none(pools, temperature, target):
    thr_right_loop(pools, temperature, target)


def thr_nan(pools, temperature, target):
    return float("nan")


def thr_mutates(pools, temperature, target):
    for pool in pools:
        pool.pool_z -= pool.pool_z.mean(0)  # "centre the embeddings", in place
    return thr_right_loop(pools, temperature, target)


def thr_cpu(pools, temperature, target):  # accumulators made without device=
    confs, rights = torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool)
    for pool in pools:
        conf, right, _ = _student_scores(pool, temperature)
        confs, rights = torch.cat([confs, conf]), torch.cat([rights, right])
    return _student_tau(confs, rights, target)


def thr_partial(pools, temperature, target):
    raise NotImplementedError("Exercise 7.2 is hard")  # not the stub's own "Exercise 7.2: ..." message


@pytest.mark.parametrize("fn", [ch07.reference_fit_threshold, thr_right_loop, thr_unique, thr_vectorised])
def test_threshold_right_answers_pass(fn):
    assert ch07.fit_threshold(fn) is fn
    assert status("7.2") == "right", message("7.2")


@pytest.mark.parametrize("fn, phrase", [
    (thr_support, "threshold is chosen on the support set"),
    (thr_distractors_right, "distractors are counted as correct"),
    (thr_distractors_dropped, "distractors are dropped"),
    (thr_largest, "*largest* confidence"),
    (thr_stop_early, "the scan stops at the first position whose precision drops below the target"),
    (thr_break_first_fail, "the scan stops at the first position whose precision drops below the target"),
    (thr_break_vectorised, "the scan stops at the first position whose precision drops below the target"),
    (thr_strict, "strict > target: a cut whose precision equals the target reaches it"),
    (thr_strict_loop, "strict > target: a cut whose precision equals the target reaches it"),
    (thr_positions, "items with the same confidence are split"),
    (thr_over_all, "computed over all the items"),
    (thr_no_t, "the temperature is ignored (these are the thresholds for kappa = 1)"),
    (thr_t_fixed_2, "The temperature is ignored or fixed: your function returns the same threshold"),
    (thr_target_099, "the thresholds for target = 0.99"),
    (thr_target_09, "the thresholds for target = 0.9,"),
    (thr_target_08, "The target is ignored or fixed: your function returns the same threshold"),
    (thr_off, "is 0.9740899093, expected 0.9640899093"),
    (thr_float32, "7 significant digits"),
    (thr_average, "per-pool thresholds are averaged (their mean)"),
    (thr_per_pool_mean, "per-pool thresholds are averaged (their mean)"),
    (thr_per_pool_tensor_mean, "per-pool thresholds are averaged (their mean)"),
    (thr_per_pool_median, "per-pool thresholds are averaged by their median"),
    (thr_per_pool_torch_median, "per-pool thresholds are averaged by their lower median"),
    (thr_per_pool_min, "per-pool thresholds are combined by their minimum"),
    (thr_per_pool_median_f32, "per-pool thresholds are averaged by their lower median"),
    (thr_per_pool_median_f32, "as if a step ran in float32"),
    (thr_euclid, "Euclidean (not squared)"),
    (thr_raw, "the confidence is the raw logit"),
    (thr_first, "only the first pool"),
    (thr_last, "only the last pool"),
    (thr_tensor, "should be a Python float"),
    (thr_none, "should be a Python float, but your function returned None"),
    (thr_nan, "is NaN"),
    (thr_mutates, "changed its input `pools[0].pool_z` in place"),
    (thr_cpu, "makes a tensor on the CPU"),
    (thr_partial, "not the exercise's stub"),
])
def test_threshold_mistakes_are_named(fn, phrase):
    assert ch07.fit_threshold(fn) is ch07.reference_fit_threshold
    assert status("7.2") == "wrong"
    assert phrase in message("7.2"), message("7.2")


def test_threshold_reference_semantics():
    tie = ch07._tie_pool()
    # margins 14, 12, 10, 10, ...: precision 1, 1, then 3/4 once the tied distractor joins
    conf, right = ch07._pool_confidence(tie, 2.0)
    assert conf[2] == conf[3] and bool(right[2]) and not bool(right[3])
    tau = ch07.reference_fit_threshold([tie], 2.0, 0.78)
    assert tau == pytest.approx(torch.sigmoid(torch.tensor(6.0, dtype=torch.float64)).item())  # margin 12 / T
    assert ch07.reference_fit_threshold([tie, ch07._top_distractor_pool()], 2.0, 1.0) == math.inf
    assert ch07.reference_fit_threshold([], 2.0, 0.9) == math.inf
    # the smallest qualifying tau, past a dip: precision 1, 1/2, 2/3, 3/4 -> target 0.7 gives the last
    c = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float64)
    assert ch07._smallest_tau(c, torch.tensor([True, False, True, True]), 0.7) == pytest.approx(0.6)
    # >= target: 3 of 4 right is precision 0.75 exactly, and it reaches target 0.75
    assert ch07._smallest_tau(c, torch.tensor([True, True, False, True]), 0.75) == pytest.approx(0.6)


def test_threshold_probe_has_a_cut_exactly_at_the_target():
    pools, temperature, target, _ = ch07._threshold_calls()[-1]
    scored = [ch07._pool_confidence(p, temperature) for p in pools]
    conf, right = torch.cat([s[0] for s in scored]), torch.cat([s[1] for s in scored])
    tau = ch07.reference_fit_threshold(pools, temperature, target)
    accepted = conf >= tau
    assert right[accepted].sum().item() / accepted.sum().item() == target == 0.75  # exactly at the target
    assert thr_strict(pools, temperature, target) > tau  # so `>` stops at a shallower cut


# --- 7.3 a soft k-means step ----------------------------------------------------------------------

def km_loop(c, support_z, support_y, z_unlabelled, mask=None):  # right: per class, cdist**2, F.softmax
    w = F.softmax(-torch.cdist(z_unlabelled, c) ** 2, dim=1)
    if mask is not None:
        w = w * mask
    rows = []
    for n in range(c.shape[0]):
        s = support_z[support_y == n]
        num = s.sum(0) + (w[:, n:n + 1] * z_unlabelled).sum(0)
        rows.append(num / (s.shape[0] + w[:, n].sum()))
    return torch.stack(rows)


def km_one_hot(c, support_z, support_y, z_unlabelled, mask=None):  # right: one_hot, einsum
    w = torch.softmax(-sq(z_unlabelled, c), dim=1) * (1.0 if mask is None else mask)
    y = F.one_hot(support_y, c.shape[0]).to(support_z.dtype)
    num = torch.einsum("sn,sd->nd", y, support_z) + torch.einsum("mn,md->nd", w, z_unlabelled)
    return num / (y.sum(0) + w.sum(0))[:, None]


def _km(c, s, y, u, mask, *, weights=None, support=True, norm="right", old=False, c_for_support=None,
        renorm=False, num_only_mask=False, dist="sq", assign_to=None):
    n = c.shape[0]
    centres = c if assign_to is None else assign_to
    d = sq(u, centres)
    if dist == "euclid":
        d = d.sqrt()
    w = torch.softmax(-d if dist != "plus" else d, dim=1 if weights != "dim0" else 0)
    if weights == "uniform":
        w = torch.full_like(w, 1.0 / n)
    if weights == "hard":
        w = F.one_hot(d.argmin(1), n).to(u.dtype)
    w0 = w
    if mask is not None:
        w = w * mask
        if renorm:
            w = w / w.sum(1, keepdim=True)
    if old:
        return c.clone()
    rows = []
    for k in range(n):
        sk = s[y == k]
        if c_for_support == "K":
            s_sum, s_cnt = sk.shape[0] * c[k], sk.shape[0]
        elif c_for_support == "one":
            s_sum, s_cnt = c[k], 1
        elif norm == "mean_once":
            s_sum, s_cnt = sk.mean(0), 1
        else:
            s_sum, s_cnt = sk.sum(0), sk.shape[0]
        if not support:
            s_sum, s_cnt = torch.zeros_like(s_sum), 0
        num = s_sum + (w[:, k:k + 1] * u).sum(0)
        wk = (w0 if num_only_mask else w)[:, k].sum()
        den = {"right": s_cnt + wk, "mean_once": s_cnt + wk, "none": 1.0, "no_count": wk, "one": 1 + wk}[norm]
        rows.append(num / den)
    return torch.stack(rows)


def make_km(**kw):
    def step(c, support_z, support_y, z_unlabelled, mask=None):
        return _km(c, support_z, support_y, z_unlabelled, mask, **kw)
    return step


km_dim0 = make_km(weights="dim0")
km_euclid = make_km(dist="euclid")
km_plus = make_km(dist="plus")
km_no_support = make_km(support=False)
km_uniform = make_km(weights="uniform")
km_hard = make_km(weights="hard")
km_sum_only = make_km(norm="none")
km_no_count = make_km(norm="no_count")
km_count_one = make_km(norm="one")
km_mean_once = make_km(norm="mean_once")
km_old = make_km(old=True)
km_c_for_support = make_km(c_for_support="K")
km_c_weight_one = make_km(c_for_support="one")
km_renorm = make_km(renorm=True)
km_num_only_mask = make_km(num_only_mask=True)


def _km_parts(c, support_z, support_y, z_unlabelled, mask):  # written as a student would, one-hot sums
    w = F.softmax(-torch.cdist(z_unlabelled, c) ** 2, dim=1)
    if mask is not None:
        w = w * mask
    onehot = F.one_hot(support_y, c.shape[0]).to(c.dtype)
    return w, onehot.T @ support_z, onehot.sum(0)


def km_num_no_support(c, support_z, support_y, z_unlabelled, mask=None):
    w, _, count = _km_parts(c, support_z, support_y, z_unlabelled, mask)
    return (w.T @ z_unlabelled) / (count + w.sum(0))[:, None]


def km_den_plus_m(c, support_z, support_y, z_unlabelled, mask=None):
    w, total, count = _km_parts(c, support_z, support_y, z_unlabelled, mask)
    return (total + w.T @ z_unlabelled) / (count + z_unlabelled.shape[0])[:, None]


def km_two_means(c, support_z, support_y, z_unlabelled, mask=None):
    w, total, count = _km_parts(c, support_z, support_y, z_unlabelled, mask)
    support_mean = total / count[:, None]
    soft_mean = (w.T @ z_unlabelled) / w.sum(0)[:, None]
    return (support_mean + soft_mean) / 2


def km_no_mask(c, support_z, support_y, z_unlabelled, mask=None):
    return _km(c, support_z, support_y, z_unlabelled, None)


def km_mask_forgotten_by_keyword(c, support_z, support_y, z_unlabelled, *args, **kwargs):
    return _km(c, support_z, support_y, z_unlabelled, None)


def km_c_ignored(c, support_z, support_y, z_unlabelled, mask=None):  # assignments to the support means
    mu = torch.stack([support_z[support_y == n].mean(0) for n in range(c.shape[0])])
    return _km(c, support_z, support_y, z_unlabelled, mask, assign_to=mu)


def km_class_major(c, support_z, support_y, z_unlabelled, mask=None):  # support_y ignored
    n, d = c.shape
    k = support_z.shape[0] // n
    w = torch.softmax(-sq(z_unlabelled, c), dim=1) * (1.0 if mask is None else mask)
    num = support_z.reshape(n, k, d).sum(1) + w.T @ z_unlabelled
    return num / (k + w.sum(0))[:, None]


def km_float(c, support_z, support_y, z_unlabelled, mask=None):
    return km_one_hot(c, support_z, support_y, z_unlabelled, mask).float()


def km_transposed(c, support_z, support_y, z_unlabelled, mask=None):
    return km_one_hot(c, support_z, support_y, z_unlabelled, mask).T


def km_none(c, support_z, support_y, z_unlabelled, mask=None):
    km_one_hot(c, support_z, support_y, z_unlabelled, mask)


def km_updates_c(c, support_z, support_y, z_unlabelled, mask=None):
    c.copy_(km_one_hot(c, support_z, support_y, z_unlabelled, mask))
    return c


def km_cpu_ones(c, support_z, support_y, z_unlabelled, mask=None):
    m = torch.ones(z_unlabelled.shape[0], c.shape[0], dtype=c.dtype) if mask is None else mask
    return km_one_hot(c, support_z, support_y, z_unlabelled, m)


@pytest.mark.parametrize("fn", [ch07.reference_soft_kmeans_step, km_loop, km_one_hot, make_km()])
def test_kmeans_right_answers_pass(fn):
    assert ch07.soft_kmeans_step(fn) is fn
    assert status("7.3") == "right", message("7.3")


@pytest.mark.parametrize("fn, phrase", [
    (km_dim0, "softmax over the unlabelled items (dim=0)"),
    (km_euclid, "Euclidean distance"),
    (km_plus, "softmax of +distances"),
    (km_no_support, "the supports are left out"),
    (km_num_no_support, "the supports are missing from the numerator only"),
    (km_den_plus_m, "the denominator adds M (the number of unlabelled items) instead of the soft weights' sum"),
    (km_two_means, "the average of the support mean and the soft mean (two means averaged instead of one "
                   "weighted mean)"),
    (km_uniform, "weights are uniform"),
    (km_hard, "weights are hard (one-hot"),
    (km_sum_only, "weighted *sum*, not the mean"),
    (km_no_count, "denominator lacks the support count"),
    (km_count_one, "counts the supports as 1 instead of K"),
    (km_mean_once, "the supports enter as their mean with weight 1"),
    (km_old, "returns the old prototypes c unchanged"),
    (km_c_for_support, "c is used in place of the supports (K c_n"),
    (km_c_weight_one, "c is used in place of the supports, with weight 1"),
    (km_renorm, "renormalised over the classes"),
    (km_num_only_mask, "the mask is applied in the numerator only"),
    (km_no_mask, "the mask is ignored"),
    (km_mask_forgotten_by_keyword, "the mask is ignored"),
    (km_c_ignored, "c is ignored: the assignments are to the support means"),
    (km_class_major, "support_y is ignored"),
    (km_float, "keep the inputs' dtype"),
    (km_transposed, "has shape (4, 3), expected (3, 4)"),
    (km_none, "returned None"),
    (km_updates_c, "changed its input `c` in place"),
    (km_cpu_ones, "makes a tensor on the CPU"),
])
def test_kmeans_mistakes_are_named(fn, phrase):
    assert ch07.soft_kmeans_step(fn) is ch07.reference_soft_kmeans_step
    assert status("7.3") == "wrong"
    assert phrase in message("7.3"), message("7.3")


def test_kmeans_reference_semantics():
    c = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    s = torch.tensor([[0.0, 1.0], [0.0, -1.0], [10.0, 0.0], [10.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    u = torch.tensor([[1.0, 0.0]], dtype=torch.float64)  # w ~ (1, 0)
    new = ch07.reference_soft_kmeans_step(c, s, y, u)
    assert torch.allclose(new[0], torch.tensor([1 / 3, 0.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(new[1], torch.tensor([10.0, 1.0], dtype=torch.float64), atol=1e-12)
    masked = ch07.reference_soft_kmeans_step(c, s, y, u, torch.zeros(1, 2, dtype=torch.float64))
    assert torch.allclose(masked, torch.tensor([[0.0, 0.0], [10.0, 1.0]], dtype=torch.float64))


# --- 7.4 class-balanced selection -------------------------------------------------------------------

def sel_topk(p, tau, z_per_class):  # right: topk over masked confidences
    conf, pred = p.max(dim=1)
    idx = []
    for n in range(p.shape[1]):
        keep = (pred == n) & (conf >= tau)
        k = min(z_per_class, int(keep.sum()))
        if k:
            idx.append(torch.where(keep, conf, torch.full_like(conf, -1.0)).topk(k).indices)
    idx = torch.cat(idx).sort().values if idx else torch.zeros(0, dtype=torch.long, device=p.device)
    return idx, pred[idx]


def sel_unsorted(p, tau, z_per_class):  # right pairs, in the class loop's order (not sorted)
    conf, pred = p.max(dim=1)
    idx, lab = [], []
    for n in range(p.shape[1]):
        items = sorted((i for i in range(p.shape[0]) if pred[i] == n and conf[i] >= tau),
                       key=lambda i: (-conf[i].item(), i))[:z_per_class]
        idx += items
        lab += [n] * len(items)
    return torch.tensor(idx, dtype=torch.long), torch.tensor(lab, dtype=torch.long)


def _sel(p, tau, z, *, overall=False, use_tau=True, strict=False, column=False, least=False, all_z=False):
    conf, pred = p.max(dim=1)
    above = (conf > tau) if strict else (conf >= tau)
    if not use_tau:
        above = torch.ones_like(above)
    if overall:
        cand = above.nonzero().squeeze(1)
        top = cand[conf[cand].argsort(descending=True)[: z * p.shape[1]]]
        top = top.sort().values
        return top, pred[top]
    idx, lab = [], []
    for n in range(p.shape[1]):
        cand = (above if column else (pred == n) & above).nonzero().squeeze(1)
        score = p[cand, n] if column else conf[cand]
        order = score.argsort(descending=not least)
        take = cand[order] if all_z else cand[order[:z]]
        idx.append(take)
        lab.append(torch.full_like(take, n))
    idx, lab = torch.cat(idx), torch.cat(lab)
    o = idx.argsort()
    return idx[o], lab[o]


def make_sel(**kw):
    return lambda p, tau, z_per_class: _sel(p, tau, z_per_class, **kw)


sel_overall = make_sel(overall=True)
sel_no_tau = make_sel(use_tau=False)
sel_strict = make_sel(strict=True)
sel_column = make_sel(column=True)
sel_least = make_sel(least=True)
sel_all = make_sel(all_z=True)


def sel_fixed_z(p, tau, z_per_class):
    return _sel(p, tau, 2)


def sel_fixed_tau(p, tau, z_per_class):
    return _sel(p, 0.625, z_per_class)


def sel_class_order_labels(p, tau, z_per_class):  # idx sorted, labels left in the class loop's order
    idx, lab = _sel(p, tau, z_per_class)
    counts = torch.bincount(lab, minlength=p.shape[1])
    return idx, torch.arange(p.shape[1]).repeat_interleave(counts)


def sel_position_labels(p, tau, z_per_class):
    idx, _ = _sel(p, tau, z_per_class)
    return idx, torch.arange(idx.numel())


def sel_column_dup(p, tau, z_per_class):  # p[:, n] >= tau per class: an item can come twice
    idx, lab = [], []
    for n in range(p.shape[1]):
        cand = (p[:, n] >= tau).nonzero().squeeze(1)
        take = cand[p[cand, n].argsort(descending=True)[:z_per_class]]
        idx.append(take)
        lab.append(torch.full_like(take, n))
    return torch.cat(idx), torch.cat(lab)


def sel_duplicated(p, tau, z_per_class):  # the classes' lists concatenated twice
    idx, lab = _sel(p, tau, z_per_class)
    return torch.cat([idx, idx]), torch.cat([lab, lab])


def sel_last_class_missing(p, tau, z_per_class):  # range(n_way - 1): no listed mistake
    idx, lab = _sel(p, tau, z_per_class)
    keep = lab < p.shape[1] - 1
    return idx[keep], lab[keep]


def sel_mask(p, tau, z_per_class):
    idx, _ = _sel(p, tau, z_per_class)
    mask = torch.zeros(p.shape[0], dtype=torch.bool)
    mask[idx] = True
    return mask


def sel_mask_pair(p, tau, z_per_class):
    idx, lab = _sel(p, tau, z_per_class)
    mask = torch.zeros(p.shape[0], dtype=torch.bool)
    mask[idx] = True
    return mask, p.argmax(1)


def sel_lists(p, tau, z_per_class):
    idx, lab = _sel(p, tau, z_per_class)
    return idx.tolist(), lab.tolist()


def sel_float_idx(p, tau, z_per_class):
    idx, lab = _sel(p, tau, z_per_class)
    return idx.float(), lab


def sel_sorts_p(p, tau, z_per_class):
    p.copy_(p.sort(dim=0, descending=True).values)
    return _sel(p, tau, z_per_class)


@pytest.mark.parametrize("fn", [ch07.reference_select_balanced, sel_topk, sel_unsorted, make_sel()])
def test_select_right_answers_pass(fn):
    assert ch07.select_balanced(fn) is fn
    assert status("7.4") == "right", message("7.4")


@pytest.mark.parametrize("fn, phrase", [
    (sel_overall, "Z*N most confident items overall"),
    (sel_no_tau, "tau is ignored: items below the threshold"),
    (sel_strict, "the threshold is strict"),
    (sel_column, "regardless of the argmax"),
    (sel_column_dup, "regardless of the argmax"),
    (sel_duplicated, "selects item 0 more than once"),
    (sel_least, "*least* confident Z"),
    (sel_all, "z_per_class is ignored: every item above tau"),
    (sel_fixed_z, "z_per_class is ignored or fixed"),
    (sel_fixed_tau, "tau is ignored or fixed"),
    (sel_class_order_labels, "the labels do not follow their items"),
    (sel_position_labels, "the labels are positions"),
    (sel_mask, "That is a mask over the items"),
    (sel_last_class_missing, "it misses item 3 as class 2, item 10 as class 2"),
    (sel_mask_pair, "is a bool mask over the 16 items"),
    (sel_lists, "should be a torch.Tensor"),
    (sel_float_idx, "it holds indices"),
    (sel_sorts_p, "changed its input `p` in place"),
])
def test_select_mistakes_are_named(fn, phrase):
    assert ch07.select_balanced(fn) is ch07.reference_select_balanced
    assert status("7.4") == "wrong"
    assert phrase in message("7.4"), message("7.4")


def test_select_reference_semantics():
    p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.95, 0.05], [0.3, 0.7], [0.5, 0.5], [0.6, 0.4]],
                     dtype=torch.float64)
    idx, lab = ch07.reference_select_balanced(p, 0.6, 2)
    assert idx.tolist() == [0, 2, 3] and lab.tolist() == [0, 0, 1]  # class 0 capped at Z, class 1 has one
    ties = torch.tensor([[0.7, 0.3], [0.7, 0.3], [0.7, 0.3]], dtype=torch.float64)
    assert ch07.reference_select_balanced(ties, 0.5, 2)[0].tolist() == [0, 1]  # ties: lower index first
    empty = ch07.reference_select_balanced(p, 0.99, 2)
    assert empty[0].shape == (0,) and empty[0].dtype == torch.long


# --- 7.5 a re-anchored self-training round -----------------------------------------------------------

def _prototypes(support_z, support_y, extra_z, extra_y, n_way):
    return torch.stack([torch.cat([support_z[support_y == n], extra_z[extra_y == n]]).mean(0)
                        for n in range(n_way)])


def st_loop(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    """Right: every item scored with prototypes rebuilt without it (a loop)."""
    rows = []
    label_of = dict(zip(pseudo_idx.tolist(), pseudo_y.tolist()))
    for j in range(pool_z.shape[0]):
        keep = [i for i in range(len(pseudo_idx)) if pseudo_idx[i].item() != j]
        c = _prototypes(support_z, support_y, pool_z[pseudo_idx[keep]], pseudo_y[keep], n_way)
        if j not in label_of:
            c = _prototypes(support_z, support_y, pool_z[pseudo_idx], pseudo_y, n_way)
        rows.append(-sq(pool_z[j:j + 1], c)[0] / temperature)
    p = torch.softmax(torch.stack(rows), dim=1)
    return sel_topk(p, tau, z_per_class)


def st_closed_form(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    """Right: d_loo = (count / (count - 1))^2 d for the item's own class; cdist**2; unsorted pairs."""
    z = torch.cat([support_z, pool_z[pseudo_idx]])
    y = torch.cat([support_y, pseudo_y])
    oh = F.one_hot(y, n_way).to(z.dtype)
    count = oh.sum(0)
    c = (oh.T @ z) / count[:, None]
    d = torch.cdist(pool_z, c) ** 2
    if len(pseudo_idx):
        f = (count[pseudo_y] / (count[pseudo_y] - 1)) ** 2
        d[pseudo_idx, pseudo_y] = d[pseudo_idx, pseudo_y] * f
    return sel_unsorted(torch.softmax(-d / temperature, dim=1), tau, z_per_class)


def _st(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class, *,
        loo=True, loo_full_count=False, human=True, use_pseudo=True, keep=None, select=None, euclid=False,
        times_t=False, halves=False):
    pseudo_z = pool_z[pseudo_idx]
    if halves:
        c = []
        for n in range(n_way):
            h = support_z[support_y == n].mean(0)
            q = pseudo_z[pseudo_y == n]
            c.append((h + q.mean(0)) / 2 if len(q) else h)
        c = torch.stack(c)
    else:
        zs = [support_z] if human else []
        ys = [support_y] if human else []
        if use_pseudo:
            zs.append(pseudo_z)
            ys.append(pseudo_y)
        z, y = torch.cat(zs), torch.cat(ys)
        c = torch.stack([z[y == n].mean(0) for n in range(n_way)])
    d = sq(pool_z, c)
    if loo and use_pseudo and not halves:
        for j, n in zip(pseudo_idx.tolist(), pseudo_y.tolist()):
            members = ((torch.cat([support_y, pseudo_y]) if human else pseudo_y) == n).sum()
            total = c[n] * members
            c_loo = (total - pool_z[j]) / (members if loo_full_count else members - 1)
            d[j, n] = ((pool_z[j] - c_loo) ** 2).sum()
    if euclid:
        d = d.sqrt()
    p = torch.softmax(-d * temperature if times_t else -d / temperature, dim=1)
    if keep in ("locked", "exclude"):
        p[pseudo_idx] = 0.0
    chooser = {None: make_sel(), "overall": sel_overall, "no_tau": sel_no_tau, "all": sel_all}[select]
    idx, lab = chooser(p, tau, z_per_class)
    if keep in ("union", "locked"):
        merged = dict(zip(idx.tolist(), lab.tolist()))
        merged.update(zip(pseudo_idx.tolist(), pseudo_y.tolist()))
        idx = torch.tensor(sorted(merged), dtype=torch.long)
        lab = torch.tensor([merged[i] for i in sorted(merged)], dtype=torch.long)
    return idx, lab


def make_st(**kw):
    def round_(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
        return _st(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class, **kw)
    return round_


st_no_loo = make_st(loo=False)
st_loo_full = make_st(loo_full_count=True)
st_union = make_st(keep="union")
st_locked = make_st(keep="locked")
st_exclude = make_st(keep="exclude")
st_no_human = make_st(human=False)
st_no_human_no_loo = make_st(human=False, loo=False)
st_no_pseudo = make_st(use_pseudo=False)
st_halves = make_st(halves=True)
st_overall = make_st(select="overall")
st_no_tau = make_st(select="no_tau")
st_all = make_st(select="all")
st_euclid = make_st(euclid=True)
st_times_t = make_st(times_t=True)


def _st_vectorised(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class, *,
                   loo="own", human=True, fallback=False):
    """The chapter's solution, written as a student would, with one change (for the mistakes below)."""
    if human or (fallback and len(pseudo_idx) == 0):
        z, y = torch.cat([support_z, pool_z[pseudo_idx]]), torch.cat([support_y, pseudo_y])
    else:
        z, y = pool_z[pseudo_idx], pseudo_y
    onehot = F.one_hot(y, n_way).to(pool_z.dtype)
    total, count = onehot.T @ z, onehot.sum(0)
    d = (pool_z[:, None, :] - (total / count[:, None])[None]).pow(2).sum(-1)
    if len(pseudo_idx) and loo == "own":
        c_own = (total[pseudo_y] - pool_z[pseudo_idx]) / (count[pseudo_y] - 1)[:, None]
        d[pseudo_idx, pseudo_y] = (pool_z[pseudo_idx] - c_own).pow(2).sum(-1)
    if len(pseudo_idx) and loo == "every":  # the item taken out of every class's sum and count
        pz = pool_z[pseudo_idx]
        c_minus = (total[None] - pz[:, None]) / (count - 1)[None, :, None]
        d[pseudo_idx] = (pz[:, None] - c_minus).pow(2).sum(-1)
    p = torch.softmax(-d / temperature, dim=1)
    return sel_topk(p, tau, z_per_class)


def make_st_vec(**kw):
    def round_(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
        return _st_vectorised(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau,
                              z_per_class, **kw)
    return round_


st_loo_every = make_st_vec(loo="every")
st_pseudo_only = make_st_vec(human=False)
st_pseudo_only_no_loo = make_st_vec(human=False, loo="none")
st_pseudo_only_fallback = make_st_vec(human=False, fallback=True)  # round 1: the human supports
st_pseudo_only_fallback_no_loo = make_st_vec(human=False, fallback=True, loo="none")


def st_union_dict(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    """Earlier pseudo-labels kept: the old pairs, then the new ones not already there; sorted by idx."""
    idx, lab = make_st_vec()(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau,
                             z_per_class)
    merged = dict(zip(pseudo_idx.tolist(), pseudo_y.tolist()))
    for i, n in zip(idx.tolist(), lab.tolist()):
        merged.setdefault(i, n)
    keys = sorted(merged)
    return torch.tensor(keys, dtype=torch.long), torch.tensor([merged[i] for i in keys], dtype=torch.long)


def st_union_cat(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    """The same with tensors: torch.cat(old, new), the first occurrence of each index kept, sorted."""
    idx, lab = st_closed_form(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau,
                              z_per_class)
    all_idx, all_lab = torch.cat([pseudo_idx, idx]), torch.cat([pseudo_y, lab])
    first = torch.tensor([int(all_idx[k]) not in all_idx[:k].tolist() for k in range(len(all_idx))],
                         dtype=torch.bool)
    all_idx, all_lab = all_idx[first], all_lab[first]
    order = all_idx.argsort()
    return all_idx[order], all_lab[order]


def st_union_new_label(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    """The union again, but an item selected again takes its new label (dict.update with the new pairs)."""
    idx, lab = make_st_vec()(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau,
                             z_per_class)
    merged = dict(zip(pseudo_idx.tolist(), pseudo_y.tolist()))
    merged.update(zip(idx.tolist(), lab.tolist()))
    keys = sorted(merged)
    return torch.tensor(keys, dtype=torch.long), torch.tensor([merged[i] for i in keys], dtype=torch.long)


def st_no_t(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    return _st(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, 1.0, tau, z_per_class)


def st_fixed_z(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    return _st(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, 2)


def st_fixed_tau(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    return _st(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, 0.7, z_per_class)


def st_fixed_t(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    return _st(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, 1.5, tau, z_per_class)


def st_appends_pseudo(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    idx, lab = make_st()(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class)
    pseudo_idx.zero_()  # "reset" the old selection, in place
    return idx, lab


def st_first_class_missing(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau,
                           z_per_class):
    idx, lab = make_st()(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class)
    return idx[lab > 0], lab[lab > 0]


def st_mask(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    idx, lab = make_st()(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class)
    out = torch.zeros(pool_z.shape[0], dtype=torch.bool)
    out[idx] = True
    return out


def st_cpu_counts(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class):
    counts = torch.zeros(n_way, dtype=pool_z.dtype)  # no device=
    counts = counts + F.one_hot(support_y, n_way).sum(0)
    return make_st()(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau, z_per_class)


@pytest.mark.parametrize("fn", [ch07.reference_self_training_round, st_loop, st_closed_form, make_st(),
                                make_st_vec()])
def test_round_right_answers_pass(fn):
    assert ch07.self_training_round(fn) is fn
    assert status("7.5") == "right", message("7.5")


@pytest.mark.parametrize("fn, phrase", [
    (st_no_loo, "votes for its own confidence"),
    (st_loo_full, "the count is not lowered"),
    (st_union, "earlier pseudo-labels are kept: your function returns the union of the previous pseudo-labels "
                   "(pseudo_idx, pseudo_y) and the new selection, so"),
    (st_union_dict, "earlier pseudo-labels are kept: your function returns the union of the previous pseudo-labels "
                   "(pseudo_idx, pseudo_y) and the new selection, so"),
    (st_union_cat, "earlier pseudo-labels are kept: your function returns the union of the previous pseudo-labels "
                   "(pseudo_idx, pseudo_y) and the new selection, so"),
    (st_union_new_label, "an item selected again takes its new label"),
    (st_loo_every, "leave-one-out is applied to every class (the item removed from prototypes of classes it is "
                   "not in)"),
    (st_locked, "only the other items compete"),
    (st_exclude, "left out of the scoring and the selection"),
    (st_no_human, "prototypes from the pseudo-labels only (human supports dropped)"),
    (st_no_human_no_loo, "prototypes from the pseudo-labels only (human supports dropped), and no leave-one-out"),
    (st_pseudo_only, "prototypes from the pseudo-labels only (human supports dropped)"),
    (st_pseudo_only_no_loo, "prototypes from the pseudo-labels only (human supports dropped), and no "
                            "leave-one-out"),
    (st_pseudo_only_fallback, "prototypes from the pseudo-labels only (human supports dropped)"),
    (st_pseudo_only_fallback_no_loo, "prototypes from the pseudo-labels only (human supports dropped), and no "
                                     "leave-one-out"),
    (st_no_pseudo, "the pseudo-labels are ignored"),
    (st_halves, "equal weight"),
    (st_overall, "not class-balanced"),
    (st_no_tau, "tau is ignored: items below the threshold"),
    (st_all, "z_per_class is ignored: every item above tau"),
    (st_no_t, "the temperature is ignored"),
    (st_times_t, "multiplied by the temperature"),
    (st_euclid, "Euclidean (not squared)"),
    (st_fixed_z, "z_per_class is ignored or fixed"),
    (st_fixed_tau, "tau is ignored or fixed"),
    (st_fixed_t, "The temperature is ignored or fixed"),
    (st_appends_pseudo, "changed its input `pseudo_idx` in place"),
    (st_mask, "That is a mask over the items"),
    (st_first_class_missing, "differs from the rule's: it misses item 8 as class 0"),
    (st_cpu_counts, "makes a tensor on the CPU"),
])
def test_round_mistakes_are_named(fn, phrase):
    assert ch07.self_training_round(fn) is ch07.reference_self_training_round
    assert status("7.5") == "wrong"
    assert phrase in message("7.5"), message("7.5")


def test_round_reference_leave_one_out():
    # class 0: support at 0, pseudo-labelled item at 4 (pool item 0); class 1: support at 10
    s = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    pool = torch.tensor([[4.0], [6.0]], dtype=torch.float64)
    p = ch07._round_probabilities(s, torch.tensor([0, 1]), pool, torch.tensor([0]), torch.tensor([0]), 2, 1.0)
    # item 0 is scored against class 0's prototype without itself (0), not the mean (2): d = 16 vs 36
    assert torch.allclose(p[0], torch.softmax(torch.tensor([-16.0, -36.0], dtype=torch.float64), 0))
    # item 1 is scored against the prototype with the pseudo-label in it (2): d = 16 vs 16
    assert torch.allclose(p[1], torch.tensor([0.5, 0.5], dtype=torch.float64))
    # re-anchoring: item 1 (at 6) wrongly pseudo-labelled 0 is scored against class 0 without itself (at 0,
    # d = 36) and class 1 (at 10, d = 16): it is relabelled 1. Without leave-one-out class 0's prototype
    # would be 3 (d = 9) and the wrong label would confirm itself.
    one, zero = torch.tensor([1]), torch.tensor([0])
    idx, lab = ch07.reference_self_training_round(s, torch.tensor([0, 1]), pool, one, zero, 2, 1.0, 0.99, 2)
    assert list(zip(idx.tolist(), lab.tolist())) == [(0, 0), (1, 1)]
    idx, lab = st_no_loo(s, torch.tensor([0, 1]), pool, one, zero, 2, 1.0, 0.99, 2)
    assert (1, 0) in list(zip(idx.tolist(), lab.tolist()))


# --- the probes themselves ---------------------------------------------------------------------------

def _distinct(ref, variants):
    values = list(variants.values())
    for v in values:
        assert v != ref
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            assert values[i] != values[j], (list(variants)[i], list(variants)[j])


def test_every_named_mistake_is_told_apart_by_the_probes():
    calls = ch07._threshold_calls()
    ref = [ch07.reference_fit_threshold(p, t, g) for p, t, g, _ in calls]
    _distinct(ref, ch07._threshold_variants(calls))
    calls = ch07._select_calls()
    _distinct([ch07._pairs(*ch07.reference_select_balanced(p, t, z)) for p, t, z, _ in calls],
              ch07._select_variants(calls))
    calls = ch07._round_calls()
    _distinct([ch07._pairs(*ch07.reference_self_training_round(*a)) for a, _ in calls], ch07._round_variants(calls))


def test_probe_pools_are_valid_pools():
    for pools, _, _, _ in ch07._threshold_calls():
        for pool in pools:
            assert torch.equal(pool.support_y, torch.arange(pool.n_way).repeat_interleave(pool.k_shot))
            assert pool.pool_z.shape[0] == pool.pool_y.shape[0] and bool((pool.pool_y == NONE).any())
            dataclasses.asdict(pool)


# --- protocol ----------------------------------------------------------------------------------------

CHECKS = [(ch07.accept_at, "7.1", ch07.reference_accept_at, acc_dim0),
          (ch07.fit_threshold, "7.2", ch07.reference_fit_threshold, thr_support),
          (ch07.soft_kmeans_step, "7.3", ch07.reference_soft_kmeans_step, km_dim0),
          (ch07.select_balanced, "7.4", ch07.reference_select_balanced, sel_overall),
          (ch07.self_training_round, "7.5", ch07.reference_self_training_round, st_no_loo)]


@pytest.mark.parametrize("check, number, ref, wrong", CHECKS)
def test_stubs_are_not_attempted_and_strict_mode_raises(check, number, ref, wrong, monkeypatch):
    expect_stub_handling(check, number, ref, wrong, monkeypatch)


@pytest.mark.parametrize("check, number, ref, wrong", CHECKS)
def test_not_a_function(check, number, ref, wrong):
    assert check(None) is ref
    assert status(number) == "wrong" and "needs a function" in message(number)


def test_report_lists_every_exercise():
    ch07.accept_at(ch07.reference_accept_at)
    text = checks.report(ch07.EXERCISES)
    assert "Exercise 7.1" in text and "Exercise 7.5" in text and "1 of 5" in text
