"""Checks for chapter 07 (automatic labelling and self-training).

Notation as in the chapter: logits ``(P, N)`` are ProtoNet's -||z - c_n||^2 (Snell et al. 2017), kappa
the softmax temperature (the argument ``temperature``; the course keeps T for inner steps, so no message
calls the temperature T), p = softmax(logits / kappa) over the classes, tau the acceptance threshold, Z the
items selected per class per round, w soft assignments, m a mask. Pools are
:class:`course_utils.labelling_data.Pool` (supports class-major; a distractor's true label is ``NONE``).

Exercises and the references' semantics:

- 7.1 ``accept_at(logits, temperature, tau) -> (labels, confidence, accepted)``: p = softmax(logits / kappa,
  dim=1); confidence = max_n p, labels = argmax_n p, accepted = confidence >= tau (a bool tensor).
- 7.2 ``fit_threshold(pools, temperature, target) -> float``: every pool's items are scored against the
  prototypes of its supports; confidences and correctness (argmax == pool_y; a distractor is never
  correct) are pooled over all the pools; tau is the smallest confidence value whose accepted set
  {conf >= tau} has precision >= target (the largest coverage). Items with equal confidence are
  accepted or rejected together: the precision is evaluated only at distinct confidence values.
  Precision need not fall monotonically as tau falls, so tau is the smallest qualifying value over all
  of them, not the last one before the first dip. ">= target": a cut whose precision equals the target
  exactly qualifies (one probe has 12 of 16 right at target 0.75, exact in binary). ``float('inf')``
  (accept nothing) if none qualifies.
- 7.3 ``soft_kmeans_step(c, support_z, support_y, z_unlabelled, mask=None) -> c_new`` (Ren et al. 2018):
  w = softmax over classes of -||z~_j - c_n||^2, times the mask m (M, N) if given;
  c~_n = (sum_i z_i [y_i = n] + sum_j w_jn m_jn z~_j) / (sum_i [y_i = n] + sum_j w_jn m_jn).
  The numerator uses the supports themselves (grouped by ``support_y``); ``c`` only gives w (in the
  probes ``c`` is not the support mean, as after a first refinement step).
- 7.4 ``select_balanced(p, tau, z_per_class) -> (idx, labels)``: for each class n, among the items whose
  argmax is n and whose max p >= tau, the Z most confident (ties by lower index); idx sorted, labels the
  argmax. The student's pairs may come in any order (they are sorted before comparing); the probes have
  no ties at a class's cut, so any tie rule passes.
- 7.5 ``self_training_round(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature, tau,
  z_per_class) -> (idx, labels)``: one re-anchored round (Lee 2013; Li et al. 2019, LST). Prototypes are
  the means of the human supports of class n together with the current pseudo-supports
  (``pool_z[pseudo_idx]`` labelled ``pseudo_y``). Every pool item is scored; a pseudo-labelled item j is
  scored against its own class's prototype *without itself*, c_n^(-j) = (sum_n - z_j) / (count_n - 1)
  (the other classes' prototypes do not contain it), so it never votes for its own confidence. Then a
  fresh class-balanced selection (7.4's rule) over the whole pool: earlier pseudo-labels are not kept.

Each probe calls the student's function several times, changing one argument at a time (kappa, tau, the
target, Z, the mask, c, the pseudo-labels), in float64 with tight tolerances and once in float32, and
once on PyTorch's ``meta`` device (a tensor made without ``device=`` crashes on a GPU). Inputs must not
change (the pools of 7.2 are compared field by field after each call). A wrong answer is matched against
the chapter's classic mistakes, computed from the same inputs. For 7.2, 7.4 and 7.5, whose answers are a
number or a small set, a mistake is named only when it reproduces the student's answers on *every* call
(a single threshold or selection can agree with several mistakes by chance); then ignored arguments are
named from pairs of calls that differ in that argument alone, and last the first call that differs.

Named mistakes:

- 7.1: softmax over the items (dim 0); logits multiplied by kappa; the logits negated again
  (softmax(-logits / kappa)); kappa ignored or fixed; the least likely class (min / argmin); the raw
  logit, or logit / kappa, as the confidence; the margin; a log-probability; labels from argmin or from
  the items' softmax; strict > instead of >= (two equal logits give exactly 0.5); tau ignored or fixed;
  accepted inverted; accepted from the raw logits or without kappa; accepted as a float or integer mask
  instead of bool.
- 7.2: the threshold chosen on the support set; distractors counted as correct, or dropped; the largest
  tau reaching the target; the scan stopped at the first cut below the target (at run ends, or at every
  position); strict > target; ties split (precision evaluated inside a run of equal confidences);
  precision over all items instead of the accepted ones; kappa ignored or fixed; the target ignored or
  fixed (0.99, 0.9, any); per-pool thresholds combined (mean, median, lower median as torch.median
  gives, min); Euclidean instead of squared distances; the raw logit as the confidence; only the first
  or the last pool.
- 7.3: softmax over the items; Euclidean distances; +distances; supports left out, or missing from the
  numerator only; uniform or hard (one-hot) assignments; no normalisation; the denominator without the
  support count, with 1 instead of K, or with M instead of the weights' sum; the support mean counted
  once; the support mean and the soft mean averaged; the mask ignored, renormalised over the classes, or
  only in the numerator; the old prototypes returned; c used in place of the supports (with weight K or
  1); c ignored (assignments to the support means); support_y ignored (class-major order assumed).
- 7.4: the top Z*N overall (class imbalance); tau ignored or fixed; strict >; top Z per class by p[:, n]
  regardless of the argmax; the least confident Z; Z ignored (all above tau) or fixed; labels that do not
  follow their items (class order kept after sorting idx) or are positions; a bool mask returned.
- 7.5: no leave-one-out; leave-one-out divided by the full count, or applied to every class; earlier
  pseudo-labels kept (their union with the new selection, or locked in: no re-anchoring);
  pseudo-labelled items left out of the scoring; human supports dropped (with or without leave-one-out,
  with or without them in round 1); pseudo-labels ignored in the prototypes; human and pseudo means
  averaged with equal weight; unbalanced selection (top Z*N); tau, kappa or Z ignored; logits multiplied
  by kappa; Euclidean distances.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import Mistake, _close, describe, diagnose, expect_device_agnostic, expect_shape, run_check
from ..labelling_data import NONE, Pool

__all__ = ["EXERCISES", "accept_at", "fit_threshold", "soft_kmeans_step", "select_balanced",
           "self_training_round", "reference_accept_at", "reference_fit_threshold",
           "reference_soft_kmeans_step", "reference_select_balanced", "reference_self_training_round"]

EXERCISES = ["7.1", "7.2", "7.3", "7.4", "7.5"]
D = torch.float64
TOL = dict(atol=1e-10, rtol=1e-8)


# ----------------------------------------------------------------------------- references

def _sqdist(z: Tensor, c: Tensor) -> Tensor:
    """d[j, n] = ||z_j - c_n||^2, from the differences: ``(M, D), (N, D) -> (M, N)``."""
    return (z.unsqueeze(1) - c.unsqueeze(0)).pow(2).sum(-1)


def _onehot(y: Tensor, n_way: int, dtype: torch.dtype) -> Tensor:
    """``(S,)`` labels in 0..N-1 -> ``(S, N)`` one-hot rows (on y's device)."""
    return (y.unsqueeze(1) == torch.arange(n_way, device=y.device)).to(dtype)


def _class_means(z: Tensor, y: Tensor, n_way: int) -> Tensor:
    oh = _onehot(y, n_way, z.dtype)
    return oh.T @ z / oh.sum(0).unsqueeze(1)


def reference_accept_at(logits: Tensor, temperature: float, tau: float) -> tuple[Tensor, Tensor, Tensor]:
    """p = softmax(logits / kappa) over the classes; (argmax p, max p, max p >= tau)."""
    p = torch.softmax(logits / temperature, dim=1)
    confidence, labels = p.max(dim=1)
    return labels, confidence, confidence >= tau


def _pool_confidence(pool: Pool, temperature: float) -> tuple[Tensor, Tensor]:
    """Max-prob confidence of every pool item and whether its argmax is its true label."""
    c = _class_means(pool.support_z, pool.support_y, pool.n_way)
    p = torch.softmax(-_sqdist(pool.pool_z, c) / temperature, dim=1)
    conf, pred = p.max(dim=1)
    return conf, pred == pool.pool_y  # a distractor (NONE = -1) is never correct


def _smallest_tau(conf: Tensor, correct: Tensor, target: float) -> float:
    """The smallest confidence value whose set {conf >= tau} has precision >= target; inf if none."""
    cs, order = torch.sort(conf, descending=True)
    hits = correct[order].to(conf.dtype).cumsum(0)
    precision = hits / torch.arange(1, cs.shape[0] + 1, device=conf.device, dtype=conf.dtype)
    run_end = torch.cat([cs[:-1] != cs[1:], torch.ones(1, dtype=torch.bool, device=conf.device)])
    ok = run_end & (precision >= target)  # ties are accepted together: judge each run at its end
    return float(cs[ok].min()) if bool(ok.any()) else float("inf")


def reference_fit_threshold(pools: Sequence[Pool], temperature: float, target: float) -> float:
    """tau reaching precision ``target`` on the pooled items of validation pools (smallest such tau)."""
    scored = [_pool_confidence(pool, temperature) for pool in pools]
    if not scored:
        return float("inf")
    return _smallest_tau(torch.cat([s[0] for s in scored]), torch.cat([s[1] for s in scored]), target)


def reference_soft_kmeans_step(c: Tensor, support_z: Tensor, support_y: Tensor, z_unlabelled: Tensor,
                               mask: Tensor | None = None) -> Tensor:
    """One soft k-means refinement (Ren et al. 2018): supports count 1 each, unlabelled items w_jn m_jn."""
    w = torch.softmax(-_sqdist(z_unlabelled, c), dim=1)
    if mask is not None:
        w = w * mask
    oh = _onehot(support_y, c.shape[0], support_z.dtype)
    num = oh.T @ support_z + w.T @ z_unlabelled
    den = oh.sum(0) + w.sum(0)
    return num / den.unsqueeze(1)


def reference_select_balanced(p: Tensor, tau: float, z_per_class: int) -> tuple[Tensor, Tensor]:
    """For each class, the Z most confident items predicted as it with max p >= tau; idx sorted."""
    conf, pred = p.max(dim=1)
    chosen = []
    for n in range(p.shape[1]):
        cand = torch.nonzero((pred == n) & (conf >= tau)).squeeze(1)
        order = torch.sort(conf[cand], descending=True, stable=True).indices  # ties: lower index first
        chosen.append(cand[order[:z_per_class]])
    idx = torch.sort(torch.cat(chosen)).values
    return idx, pred[idx]


def _round_probabilities(support_z: Tensor, support_y: Tensor, pool_z: Tensor, pseudo_idx: Tensor,
                         pseudo_y: Tensor, n_way: int, temperature: float) -> Tensor:
    pz = pool_z[pseudo_idx]
    oh_s, oh_p = _onehot(support_y, n_way, support_z.dtype), _onehot(pseudo_y, n_way, support_z.dtype)
    sums = oh_s.T @ support_z + oh_p.T @ pz
    counts = oh_s.sum(0) + oh_p.sum(0)
    d = _sqdist(pool_z, sums / counts.unsqueeze(1))
    own = counts[pseudo_y].unsqueeze(1)  # >= K + 1: the human supports are always there
    d_loo = (pz - (sums[pseudo_y] - pz) / (own - 1)).pow(2).sum(1)  # its own class's prototype without it
    d = d.index_put((pseudo_idx, pseudo_y), d_loo)
    return torch.softmax(-d / temperature, dim=1)


def reference_self_training_round(support_z: Tensor, support_y: Tensor, pool_z: Tensor, pseudo_idx: Tensor,
                                  pseudo_y: Tensor, n_way: int, temperature: float, tau: float,
                                  z_per_class: int) -> tuple[Tensor, Tensor]:
    """One re-anchored round: prototypes from the human supports plus the pseudo-supports (each
    pseudo-labelled item scored without itself), then a fresh class-balanced selection."""
    p = _round_probabilities(support_z, support_y, pool_z, pseudo_idx, pseudo_y, n_way, temperature)
    return reference_select_balanced(p, tau, z_per_class)


# ----------------------------------------------------------------------------- probe helpers

def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _raw(fn: Callable) -> Callable:
    """The student's own function behind the check's guard (for the meta-device call)."""
    return getattr(fn, "__wrapped__", fn)


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and _close(a, b, TOL["atol"], TOL["rtol"])


def _need_tensor(obj: Any, what: str, expected: str, hint: str = "") -> None:
    if isinstance(obj, Tensor):
        return
    got = describe(obj)
    if isinstance(obj, (list, tuple)) and not hint:
        hint = "Return a torch.Tensor (torch.stack / torch.cat of your pieces, or torch.tensor(list))."
    raise Mistake(f"{what} should be a torch.Tensor {expected}; your function returned {got}.", hint)


def _integer(t: Tensor, what: str, hint: str) -> None:
    if t.dtype == torch.bool or t.dtype.is_floating_point or t.dtype.is_complex:
        raise Mistake(f"{what} has dtype {t.dtype}; it holds indices, so it should be an integer tensor "
                      "(torch.long, what argmax, topk and nonzero give).", hint)


def _first_wrong(actual: Tensor, expected: Tensor) -> int:
    bad = actual.cpu() != expected.cpu()
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else -1


# ----------------------------------------------------------------------------- 7.1

SOFTMAX_ITEMS = ("the softmax runs over the items (dim=0), so each *column* sums to 1: an item's "
                 "probabilities then depend on the other items of the pool. p(y = n | x) is a softmax over "
                 "the classes of one item: torch.softmax(logits / temperature, dim=1).")


def _conf_variants(L: Tensor, T: float) -> dict[str, Tensor]:
    p = torch.softmax(L / T, dim=1)
    top2 = p.topk(2, dim=1).values
    return {
        SOFTMAX_ITEMS: torch.softmax(L / T, dim=0).max(dim=1).values,
        "the logits are multiplied by the temperature; kappa divides them, softmax(logits / kappa) (kappa > 1 "
        "softens the probabilities, kappa < 1 sharpens them).": torch.softmax(L * T, dim=1).max(dim=1).values,
        "the logits are negated a second time, softmax(-logits / kappa), which makes the *farthest* prototype "
        "the most likely. Remember that the logits are already minus the squared distances: softmax(logits / "
        "kappa), without another minus sign (torch.softmax(logits / temperature, dim=1)).":
            torch.softmax(-L / T, dim=1).max(dim=1).values,
        f"the temperature is ignored (these are the confidences for kappa = 1, not kappa = {T:g}): divide the "
        "logits by temperature before the softmax.": torch.softmax(L, dim=1).max(dim=1).values,
        "the confidence is the probability of the *least* likely class (min instead of max): the "
        "logits are minus distances, so the nearest prototype has the largest logit and the largest "
        "probability; take p.max(dim=1).": p.min(dim=1).values,
        "the confidence is the raw logit (minus the squared distance), not a probability: apply the "
        "softmax first, p = softmax(logits / kappa, dim=1), and take its max; tau is a probability in [0, 1].":
            L.max(dim=1).values,
        "the confidence is the logit divided by kappa, not a probability: apply the softmax over the "
        "classes, then take the max.": (L / T).max(dim=1).values,
        "the confidence is the margin (top-1 minus top-2 probability); this exercise's confidence is "
        "the max probability itself, max_n p.": top2[:, 0] - top2[:, 1],
        "the confidence is a log-probability (log_softmax): use torch.softmax, so that the confidence "
        "is a probability in [0, 1] that tau can be compared with.":
            torch.log_softmax(L / T, dim=1).max(dim=1).values,
    }


def _label_variants(L: Tensor, T: float) -> dict[str, Tensor]:
    p = torch.softmax(L / T, dim=1)
    return {
        "the labels are the argmin, the least likely class (the *farthest* prototype): the logits are "
        "minus distances, so the best guess is the argmax, p.argmax(dim=1).": p.argmin(dim=1),
        "the labels come from a softmax over the items (dim=0), whose columns sum to 1: an item's label then "
        "depends on the other items of the pool. Take the softmax over the classes, torch.softmax(logits / "
        "temperature, dim=1), and its argmax.":
            torch.softmax(L / T, dim=0).argmax(dim=1),
    }


def _accept_variants(L: Tensor, T: float, tau: float) -> dict[str, Tensor]:
    conf = torch.softmax(L / T, dim=1).max(dim=1).values
    return {
        "the comparison is strict (confidence > tau): your function rejects an item whose confidence equals "
        "tau exactly, but tau is the lowest confidence that is accepted. Compare with `confidence >= tau`.":
            conf > tau,
        "accepted is inverted: it marks the items *below* tau. Accept the confident ones, "
        "`confidence >= tau`.": conf < tau,
        "accepted is inverted (confidence <= tau): accept the confident ones, `confidence >= tau`.": conf <= tau,
        "tau is ignored: every item is accepted. accepted = confidence >= tau.":
            torch.ones_like(conf, dtype=torch.bool),
        "accepted compares the raw logits with tau (a logit is minus a squared distance, never a "
        "probability): compare the confidence, `confidence >= tau`.": L.max(dim=1).values >= tau,
        "accepted uses the probabilities without the temperature: compare the confidence you return "
        "(softmax(logits / kappa)), `confidence >= tau`.": torch.softmax(L, dim=1).max(dim=1).values >= tau,
    }


def _accept_triple(out: Any, n_items: int) -> tuple[Tensor, Tensor, Tensor]:
    if out is None:
        raise Mistake("your function returned None; return the triple (labels, confidence, accepted).",
                      "End the function with `return labels, confidence, accepted`.")
    if not (isinstance(out, (tuple, list)) and len(out) == 3):
        extra = ""
        if isinstance(out, Tensor):
            extra = (" That looks like one of the three alone: return all three, "
                     "`return labels, confidence, accepted`.")
        raise Mistake(f"return a triple (labels, confidence, accepted); your function returned "
                      f"{describe(out)}.{extra}")
    labels, conf, acc = out
    for t, what, exp in ((labels, "labels", f"of shape ({n_items},)"), (conf, "confidence", f"of shape ({n_items},)"),
                         (acc, "accepted", f"of shape ({n_items},)")):
        _need_tensor(t, what, exp)
    if labels.dtype.is_floating_point and not conf.dtype.is_floating_point and conf.dtype != torch.bool:
        raise Mistake("labels and confidence are swapped: return (labels, confidence, accepted), in that order "
                      "(the class indices first, then their probabilities).")
    for t, what in ((labels, "labels"), (conf, "confidence"), (acc, "accepted")):
        expect_shape(t, (n_items,), f"{what} for {n_items} items",
                     "one entry per item (row of logits): reduce over the classes, dim=1.")
    _integer(labels, "labels", "labels = p.argmax(dim=1), the class of the largest probability.")
    if not conf.dtype.is_floating_point:
        raise Mistake(f"confidence has dtype {conf.dtype}; it is a probability (a float tensor).")
    return labels, conf, acc


def _check_accepted_dtype(acc: Tensor, ref: Tensor, what: str) -> None:
    if acc.dtype == torch.bool:
        return
    same = bool(torch.equal(acc.detach().cpu() != 0, ref.cpu()))
    head = f"{what} has dtype {acc.dtype}" + (" (it marks the right items)" if same else "")
    raise Mistake(f"{head}; it should be a bool tensor, `confidence >= tau` gives one. A float or integer "
                  "0/1 tensor does not work as a mask: pool_z[accepted] with a long tensor picks rows 0 and 1 "
                  "over and over, not the accepted rows.", "Return the comparison itself (no .float(), "
                  ".long() or .int()).")


def _labels_right(labels: Tensor, ref_p: Tensor) -> Tensor:
    """Per item: the label is one of the classes with the largest probability (ties allow any of them)."""
    lab = labels.detach().cpu().long()
    if bool(((lab < 0) | (lab >= ref_p.shape[1])).any()):
        return torch.zeros_like(lab, dtype=torch.bool)
    best = ref_p.max(dim=1, keepdim=True).values
    return ref_p.gather(1, lab.unsqueeze(1)).squeeze(1) == best.squeeze(1)


def _probe_accept(fn: Callable) -> None:
    # most items near class 0: a softmax over the items (dim 0) then changes some items' argmax
    L1 = _example_logits([0, 0, 1, 0, 2, 0, 0], 4, seed=71)
    L2 = _example_logits([0, 1, 2, 0, 1], 3, seed=72).float()
    ties = torch.tensor([[-1.0, -1.0], [-3.0, -0.5], [-2.0, -2.0], [0.0, -4.0], [-0.25, -0.75]], dtype=D)
    # (logits, kappa, tau, description): kappa and tau change one at a time; ties give confidence exactly 0.5
    calls = [(L1, 2.0, 0.6, "7 items, 4 classes, kappa = 2, tau = 0.6"),
             (L1, 0.8, 0.8, "the same logits with kappa = 0.8, tau = 0.8"),
             (L1, 0.8, 0.93, "the same logits with kappa = 0.8, tau = 0.93"),
             (ties, 1.0, 0.5, "2 classes with equal logits in rows 0 and 2 (confidence exactly 0.5), kappa = 1, "
                              "tau = 0.5"),
             (L2, 1.5, 0.7, "5 items, 3 classes, float32, kappa = 1.5, tau = 0.7")]
    prev = None
    for i, (L, T, tau, desc) in enumerate(calls):
        labels, conf, acc = _accept_triple(fn(L, T, tau), L.shape[0])
        ref_labels, ref_conf, ref_acc = reference_accept_at(L, T, tau)
        ref_p = torch.softmax(L / T, dim=1)
        atol = 1e-10 if L.dtype == D else 1e-6
        cv = {}
        if prev is not None and prev[1] != T and prev[0] is L:
            cv[f"the temperature is fixed or ignored (these are the confidences for kappa = {prev[1]:g}, the "
               f"previous call's, not kappa = {T:g}): divide the logits by temperature."] = \
                torch.softmax(L / prev[1], dim=1).max(dim=1).values
        cv.update(_conf_variants(L, T))
        diagnose(conf, ref_conf, f"the confidence ({desc})", cv, atol=atol, rtol=1e-8)
        if conf.dtype != L.dtype:
            raise Mistake(f"confidence is {conf.dtype} for {L.dtype} logits: keep the logits' dtype "
                          "(no .float() or .double()).")
        ok = _labels_right(labels, ref_p)
        if not bool(ok.all()):
            for msg, wrong in _label_variants(L, T).items():
                if torch.equal(labels.detach().cpu().long(), wrong.cpu()):
                    raise Mistake(f"the labels ({desc}): wrong. It looks like {msg}")
            j = int((~ok).nonzero()[0, 0])
            raise Mistake(f"the labels ({desc}) differ at item {j}: got {int(labels[j])}, expected "
                          f"{int(ref_labels[j])} (the class with the largest probability).",
                          "labels = p.argmax(dim=1).")
        _check_accepted_dtype(acc, ref_acc, f"accepted ({desc})")
        if not torch.equal(acc.cpu(), ref_acc.cpu()):
            if i == 3:  # the tie call: the student's own confidence equals tau exactly in rows 0 and 2
                own = conf.detach().cpu()
                at_tau = (own == tau) & ~acc.cpu()
                if bool(at_tau.any()):
                    j = int(at_tau.nonzero()[0, 0])
                    raise Mistake(f"accepted ({desc}) is wrong: item {j} has confidence exactly {tau} = tau and "
                                  "is not accepted. The comparison is strict (confidence > tau); the rule is "
                                  "`confidence >= tau` (tau is the lowest confidence that is accepted).")
            av = {}
            if prev is not None and prev[0] is L and prev[2] != tau:
                av[f"tau is fixed or ignored (this is what is accepted at tau = {prev[2]:g}, the previous "
                   f"call's, not tau = {tau:g}): accepted = confidence >= tau."] = ref_conf >= prev[2]
            av.update(_accept_variants(L, T, tau))
            for msg, wrong in av.items():
                if torch.equal(acc.cpu(), wrong.cpu()):
                    raise Mistake(f"accepted ({desc}): wrong. It looks like {msg}")
            j = _first_wrong(acc, ref_acc)
            raise Mistake(f"accepted ({desc}) differs at item {j}: got {bool(acc[j])} for confidence "
                          f"{float(ref_conf[j]):.6g} and tau = {tau}.", "accepted = confidence >= tau.")
        prev = (L, T, tau)
    expect_device_agnostic(_raw(fn), L1, 2.0, 0.6, what="your accept_at")


def _example_logits(assign: Sequence[int], n_way: int, seed: int, dim: int = 3) -> Tensor:
    """Logits -||z - c||^2 / 2 of items scattered around random prototypes (item i near class assign[i])."""
    g = _g(seed)
    c = torch.randn(n_way, dim, generator=g, dtype=D)
    z = c[torch.tensor(assign)] + 0.8 * torch.randn(len(assign), dim, generator=g, dtype=D)
    return -0.5 * _sqdist(z, c)


def accept_at(student: Callable) -> Callable:
    """Exercise 7.1: labels, max-prob confidence and acceptance at tau, with a temperature."""
    return run_check("7.1", "confidence and acceptance at tau", student, reference_accept_at, _probe_accept)


# ----------------------------------------------------------------------------- 7.2

SUPPORT_SET = (
    "the threshold is chosen on the support set: your function scores support_z (the items that built "
    "the prototypes) instead of the pool items. A support sits on or near its own prototype (at K = 1 "
    "exactly on it, at distance 0), so it is almost always right and its precision is far higher than "
    "that of new items: the threshold falls too low (at K = 1 to the lowest support confidence), and the "
    "labels accepted at it are much less precise than the target. Score pool_z against the prototypes "
    "and compare with pool_y: items the prototypes never saw, as the new alphabet's pool will be.")


def _scores(pool: Pool, T: float, score: str = "pool", dist: str = "sq", conf: str = "prob"
            ) -> tuple[Tensor, Tensor, Tensor]:
    """(confidence, correct, is_distractor) of a pool's items under one variant of the scoring."""
    c = _class_means(pool.support_z, pool.support_y, pool.n_way)
    z, y = (pool.support_z, pool.support_y) if score == "support" else (pool.pool_z, pool.pool_y)
    d = _sqdist(z, c)
    logits = -(d.sqrt() if dist == "euclid" else d) / T
    p = torch.softmax(logits, dim=1)
    value, pred = (logits if conf == "logit" else p).max(dim=1)
    return value, pred == y, y == NONE


def _tau_variant(conf: Tensor, correct: Tensor, target: float, rule: str = "smallest") -> float:
    if conf.numel() == 0:
        return float("inf")
    order = torch.sort(correct.long(), descending=True, stable=True).indices  # ties: the correct ones first
    order = order[torch.sort(conf[order], descending=True, stable=True).indices]
    cs, cc = conf[order], correct[order].to(conf.dtype).cumsum(0)
    count = torch.arange(1, cs.shape[0] + 1, dtype=conf.dtype)
    precision = cc / (cs.shape[0] if rule == "all_items" else count)
    run_end = torch.cat([cs[:-1] != cs[1:], torch.ones(1, dtype=torch.bool)])
    if rule in ("positions", "contiguous_positions"):  # every position is a cut, also inside a run of ties
        run_end = torch.ones_like(run_end)
    ok = (precision > target if rule == "strict" else precision >= target) & run_end
    if rule in ("contiguous", "contiguous_positions"):  # from the top, up to the first cut below the target
        bad = run_end & ~ok
        if bool(bad.any()):
            ok = ok & (torch.arange(cs.shape[0]) < int(bad.nonzero()[0, 0]))
    if not bool(ok.any()):
        return float("inf")
    return float(cs[ok].max()) if rule == "largest" else float(cs[ok].min())


_PER_POOL: dict[str, Callable[[list[float]], float]] = {  # sorted per-pool thresholds -> one number
    "mean": lambda t: sum(t) / len(t),
    "median": lambda t: (t[(len(t) - 1) // 2] + t[len(t) // 2]) / 2,  # statistics / NumPy: middle pair averaged
    "median_low": lambda t: t[(len(t) - 1) // 2],  # torch.median: the lower of the middle pair
    "min": lambda t: t[0],
}


def _threshold_variant(pools: Sequence[Pool], T: float, target: float, *, score: str = "pool",
                       distractors: str = "wrong", rule: str = "smallest", dist: str = "sq",
                       conf: str = "prob", which: str = "all") -> float:
    use = {"all": list(pools), "first": list(pools[:1]), "last": list(pools[-1:])}.get(which, list(pools))
    parts = []
    for pool in use:
        v, right, distr = _scores(pool, T, score, dist, conf)
        if distractors == "right":
            right = right | distr
        elif distractors == "dropped":
            v, right = v[~distr], right[~distr]
        parts.append((v, right))
    if which in _PER_POOL:  # the right rule on each pool alone, then one number from the pool's thresholds
        return _PER_POOL[which](sorted(_tau_variant(v, r, target, rule) for v, r in parts))
    return _tau_variant(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), target, rule)


PER_POOL = ("a threshold chosen on each pool alone and then combined does not give the target precision on "
            "the pooled items (a pool's precision curve is not the pooled one). Pool the items of all the "
            "validation pools (torch.cat their confidences and correctness) and choose one threshold on all "
            "of them.")


def _threshold_mistakes(pools: Sequence[Pool], T: float, target: float) -> dict[str, float]:
    v = lambda **kw: _threshold_variant(pools, T, target, **kw)  # noqa: E731
    out = {
        SUPPORT_SET: v(score="support"),
        "distractors are counted as correct: a distractor belongs to none of the N classes, so any label "
        "the prototypes give it is wrong (pool_y is NONE = -1, and argmax == pool_y is then False, as it "
        "should be). Keep correct = (argmax == pool_y).": v(distractors="right"),
        "the distractors are dropped before the threshold is chosen: they are part of the pool the "
        "threshold will be applied to, and every one accepted is a wrong label, so they must count (as "
        "wrong) in the precision. Keep every pool item.": v(distractors="dropped"),
        "it is the *largest* confidence whose accepted set reaches the target (the coverage is "
        "minimised): take the smallest such tau, so that as many items as possible are accepted.":
            v(rule="largest"),
        "the scan stops at the first position whose precision drops below the target: your function scans "
        "the cuts from the most confident item down and breaks at the first one that fails. Precision is not "
        "monotone in the cut (one wrong item makes it dip, more right ones below it lift it again), so a "
        "deeper cut can reach the target again: check *every* cut and return the smallest tau whose "
        "accepted set reaches the target (no break).": v(rule="contiguous"),
        "the scan stops at the first position whose precision drops below the target, and it counts "
        "positions inside a run of equal confidences as cuts. Precision is not monotone in the cut, so a "
        "deeper cut can reach the target again: check every cut without a break, and only at the last item "
        "of each run of equal confidences ({conf >= tau} accepts them together).":
            v(rule="contiguous_positions"),
        "the comparison is strict > target: a cut whose precision equals the target reaches it. Your "
        "function keeps a cut only when its precision is *above* the target, so a cut at exactly the target "
        "(e.g. 12 of 16 right for target 0.75) is passed over; compare with `precision >= target`.":
            v(rule="strict"),
        "items with the same confidence are split: the precision is evaluated at every position of the "
        "sorted list, also inside a run of equal confidences, but {conf >= tau} accepts all of them "
        "together. Evaluate the precision only at the last item of each run of equal values (e.g. keep "
        "positions where the next sorted confidence is smaller).": v(rule="positions"),
        "the precision is computed over all the items (correct accepted / P) instead of over the accepted "
        "ones (correct accepted / number accepted): precision is the fraction of the *accepted* labels "
        "that are right.": v(rule="all_items"),
        "the temperature is ignored (these are the thresholds for kappa = 1): use softmax(logits / "
        "temperature).": _threshold_variant(pools, 1.0, target),
        "the per-pool thresholds are averaged (their mean): " + PER_POOL: v(which="mean"),
        "the per-pool thresholds are averaged by their median: " + PER_POOL: v(which="median"),
        "the per-pool thresholds are averaged by their lower median (torch.median of an even count "
        "returns the lower middle value): " + PER_POOL: v(which="median_low"),
        "the per-pool thresholds are combined by their minimum: " + PER_POOL: v(which="min"),
        "the distances are Euclidean (not squared): ProtoNet's logits are -||z - c_n||^2, the squared "
        "distance.": v(dist="euclid"),
        "the confidence is the raw logit, not a probability: p = softmax(logits / kappa, dim=1), confidence "
        "= p.max(dim=1).": v(conf="logit"),
        "only the first pool is used: loop over all the pools.": v(which="first"),
        "only the last pool is used (a variable overwritten in the loop?): collect every pool's "
        "confidences and correctness, then choose tau on all of them.": v(which="last"),
    }
    for fixed in (0.99, 0.9):
        out[f"the target is ignored (these are the thresholds for target = {fixed}, whatever the target "
            "passed): compare the precision with target."] = _threshold_variant(pools, T, fixed)
    return out


def _copy_pool(pool: Pool) -> Pool:
    return dataclasses.replace(pool, **{f: getattr(pool, f).clone() for f in _POOL_TENSORS})


_POOL_TENSORS = ("support_z", "support_y", "pool_z", "pool_y")


def _pools_unchanged(given: Sequence[Pool], original: Sequence[Pool]) -> None:
    for i, (now, before) in enumerate(zip(given, original)):
        for f in _POOL_TENSORS:
            a, b = getattr(now, f), getattr(before, f)
            if not (isinstance(a, Tensor) and a.shape == b.shape and torch.equal(a, b)):
                raise Mistake(f"your function changed its input `pools[{i}].{f}` in place. Inputs must stay as "
                              "they were: compute new tensors (`z = pool.pool_z - c` or `torch.cat(...)`) instead "
                              "of assigning into a pool's tensors or using in-place operations (`-=`, `.sub_()`).")


def _val_pool(seed: int, n_way: int, k_shot: int, m: int, n_distractors: int, spread: float = 1.0,
              scale: float = 1.5) -> Pool:
    """A random validation pool on 3-D embeddings (float64): clusters around the class centres."""
    g = _g(seed)
    centres = scale * torch.randn(n_way + n_distractors, 3, generator=g, dtype=D)
    noise = torch.randn(n_way * k_shot, 3, generator=g, dtype=D)
    support = centres[:n_way].repeat_interleave(k_shot, 0) + 0.7 * noise
    noise = torch.randn((n_way + n_distractors) * m, 3, generator=g, dtype=D)
    z = centres.repeat_interleave(m, 0) + spread * noise
    y = torch.arange(n_way + n_distractors).repeat_interleave(m)
    y = torch.where(y < n_way, y, torch.full_like(y, NONE))
    order = torch.randperm(z.shape[0], generator=g)
    return Pool(support, torch.arange(n_way).repeat_interleave(k_shot), z[order], y[order], n_way, k_shot)


def _tie_pool() -> Pool:
    """A 2-way 1-shot pool on dyadic coordinates (exact distances); item 3 is a distractor identical to item 2.

    With supports at (0, 0) and (4, 0) an item's logit margin is |8 x - 16|: all different but for the pair.
    """
    s = torch.tensor([[0.0, 0.0], [4.0, 0.0]], dtype=D)
    z = torch.tensor([[0.25, 1.0], [3.5, -0.5], [0.75, 0.5], [0.75, 0.5], [3.0, 1.0], [1.25, -1.0], [2.5, 0.25],
                      [1.75, 0.5]], dtype=D)
    y = torch.tensor([0, 1, 0, NONE, NONE, 1, 1, 0])
    return Pool(s, torch.tensor([0, 1]), z, y, 2, 1)


def _top_distractor_pool() -> Pool:
    """A 2-way 1-shot pool whose most confident item is a distractor (so no threshold reaches precision 1)."""
    s = torch.tensor([[0.0, 0.0], [4.0, 0.0]], dtype=D)
    z = torch.tensor([[-1.5, 0.5], [0.375, 1.0], [3.375, -1.0], [0.875, 0.0], [2.875, 0.75]], dtype=D)
    y = torch.tensor([NONE, 0, 1, 1, 1])
    return Pool(s, torch.tensor([0, 1]), z, y, 2, 1)


def _threshold_calls() -> list[tuple[list[Pool], float, float, str]]:
    a = [_val_pool(s, 3, 1, 4, 1) for s in (720, 721, 722)]
    b = [_val_pool(s, 4, 2, 3, 2, spread=1.2) for s in (723, 724)]
    t = [_tie_pool()]
    return [(a, 2.0, 0.83, "3 pools (3-way 1-shot, with distractors), kappa = 2, target = 0.83"),
            (a, 2.0, 0.57, "the same pools, kappa = 2, target = 0.57"),
            (a, 1.2, 0.57, "the same pools, kappa = 1.2, target = 0.57"),
            (b, 1.6, 0.71, "2 pools (4-way 2-shot), kappa = 1.6, target = 0.71"),
            (t, 2.0, 0.78, "a 2-way pool with a distractor identical to a class item (equal confidences), "
                           "kappa = 2, target = 0.78"),
            (t + [_top_distractor_pool()], 2.0, 1.0, "that pool and one whose most confident item is a "
             "distractor, kappa = 2, target = 1.0 (no threshold reaches it)"),
            # 12 of the 16 most confident are right: precision exactly 0.75 (exact in binary, in any dtype),
            # and no deeper cut reaches it, so `precision > target` stops at a shallower cut
            (b, 1.6, 0.75, "the 2 pools (4-way 2-shot), kappa = 1.6, target = 0.75 (the cut at the 16 most "
                           "confident items has precision 12/16 = 0.75 exactly)")]


def _same_number(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b) or math.isnan(a) or math.isnan(b):
        return a == b
    return abs(a - b) <= 1e-10 + 1e-8 * abs(b)


def _float32_close(a: float, b: float) -> bool:
    """Equal to about float32's 7 significant digits (finite numbers only)."""
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-6 * abs(b) + 1e-9


def _expect_number(out: Any, what: str) -> float:
    if isinstance(out, Tensor):
        raise Mistake(f"{what} should be a Python float, but your function returned {describe(out)}.",
                      "Return float(tau) (or tau.item()); return float('inf') when no threshold reaches the "
                      "target.")
    if isinstance(out, bool) or not isinstance(out, (int, float)):
        raise Mistake(f"{what} should be a Python float, but your function returned {describe(out)}.",
                      "Return one number, float(tau); float('inf') when no threshold reaches the target.")
    return float(out)


def _selected_behaviour(got: list, ref: list, same: Callable, pairs: Sequence[tuple[int, int, str]]) -> None:
    for i, j, msg in pairs:
        if same(got[i], got[j]) and not same(ref[i], ref[j]):
            raise Mistake(msg)


def _probe_threshold(fn: Callable) -> None:
    calls = _threshold_calls()
    got, ref = [], []
    for pools, T, target, desc in calls:
        given = [_copy_pool(p) for p in pools]
        out = fn(given, T, target)
        _pools_unchanged(given, pools)
        value = _expect_number(out, f"the threshold ({desc})")
        if math.isnan(value):
            raise Mistake(f"the threshold ({desc}) is NaN. tau is one of the confidence values (or inf when "
                          "none reaches the target); a 0/0 precision of an empty accepted set gives NaN.")
        got.append(value)
        ref.append(reference_fit_threshold(pools, T, target))
    if all(_same_number(a, b) for a, b in zip(got, ref)):
        _meta_threshold(fn, calls[0])
        return
    variants = _threshold_variants(calls)
    for msg, values in variants.items():
        if all(_same_number(a, b) for a, b in zip(got, values)):
            raise Mistake(f"the threshold: wrong. It looks like {msg}")
    for msg, values in variants.items():  # the same mistake with a step in float32 (torch.tensor(list_of_floats))
        if all(_same_number(a, b) or _float32_close(a, b) for a, b in zip(got, values)):
            raise Mistake(f"the threshold: wrong. It looks like {msg} Also, your thresholds agree with that "
                          "mistake's to about 7 significant digits only, as if a step ran in float32 (a .float(), "
                          "or torch.tensor(a list of floats) without dtype=): compute in float64 throughout.")
    _selected_behaviour(got, ref, _same_number, [
        (0, 1, "the threshold: wrong. The target is ignored or fixed: your function returns the same threshold "
               "for target = 0.83 and target = 0.57 on the same pools. Choose the smallest tau whose accepted "
               "set has precision >= target."),
        (1, 2, "the threshold: wrong. The temperature is ignored or fixed: your function returns the same "
               "threshold for kappa = 2 and kappa = 1.2 on the same pools. Use p = softmax(logits / temperature, "
               "dim=1)."),
    ])
    k = next(i for i, (a, b) in enumerate(zip(got, ref)) if not _same_number(a, b))
    f32 = ""
    if _float32_close(got[k], ref[k]):
        f32 = (" Your threshold agrees with it to about 7 significant digits only, as if a step ran in float32 "
               "(a .float(), or a tensor made without dtype=): compute in float64 throughout (the pools are "
               "float64).")
    raise Mistake(f"the threshold ({calls[k][3]}) is {got[k]:.10g}, expected {ref[k]:.10g}: the smallest "
                  "confidence value tau whose accepted set {conf >= tau} (pooled over all the pools) has "
                  f"precision >= target.{f32}", "Score every pool's items against the prototypes of its "
                  "supports; correct = (argmax == pool_y); sort the confidences in decreasing order and compute the "
                  "precision of each prefix (cumsum of correct / count).")


def _threshold_variants(calls) -> dict[str, list[float]]:
    per_call = [_threshold_mistakes(pools, T, target) for pools, T, target, _ in calls]
    return {msg: [m[msg] for m in per_call] for msg in per_call[0]}


def _meta_threshold(fn: Callable, call) -> None:
    pools, T, target, _ = call
    meta = [dataclasses.replace(p, **{f: getattr(p, f).to("meta") for f in _POOL_TENSORS}) for p in pools]
    expect_device_agnostic(lambda: _raw(fn)(meta, T, target), what="your fit_threshold")


def fit_threshold(student: Callable) -> Callable:
    """Exercise 7.2: the threshold reaching a target precision on validation pools."""
    return run_check("7.2", "a threshold for a target precision", student, reference_fit_threshold,
                     _probe_threshold)


# ----------------------------------------------------------------------------- 7.3

def _kmeans_mistakes(c: Tensor, s: Tensor, y: Tensor, u: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
    n = c.shape[0]
    d = _sqdist(u, c)
    m = torch.ones_like(d) if mask is None else mask
    w = torch.softmax(-d, dim=1)
    wm = w * m
    oh = _onehot(y, n, s.dtype)
    sums, cnt = oh.T @ s, oh.sum(0)
    mu = sums / cnt.unsqueeze(1)

    def refine(weights: Tensor, num: Tensor = sums, count: Tensor = cnt) -> Tensor:
        return (num + weights.T @ u) / (count + weights.sum(0)).unsqueeze(1)

    out = {
        "the soft assignments are a softmax over the unlabelled items (dim=0): each unlabelled item spreads "
        "one unit of weight over the classes, w_jn = softmax over n of -||z~_j - c_n||^2 (dim=1).":
            refine(torch.softmax(-d, dim=0) * m),
        "the assignments use the Euclidean distance ||z~ - c||; soft k-means (like ProtoNet) uses the "
        "*squared* distance, w = softmax(-||z~_j - c_n||^2, dim=1).": refine(torch.softmax(-d.sqrt(), dim=1) * m),
        "the assignments are a softmax of +distances, which favours the *farthest* prototype: use minus the "
        "squared distance.": refine(torch.softmax(d, dim=1) * m),
        "the supports are left out: the new prototype is the weighted mean of the unlabelled items alone. The "
        "labelled supports stay in it with weight 1 each: add sum_i z_i [y_i = n] to the numerator and their "
        "count to the denominator.": (wm.T @ u) / wm.sum(0).unsqueeze(1),
        "the supports are missing from the numerator only: the numerator is sum_j w_jn m_jn z~_j alone, while "
        "the denominator counts the supports, sum_i [y_i = n] + sum_j w_jn m_jn. Add the supports themselves "
        "to the numerator, sum_i z_i [y_i = n] (one_hot(support_y, N).T @ support_z): each support counts "
        "with weight 1 in both.": (wm.T @ u) / (cnt + wm.sum(0)).unsqueeze(1),
        "the denominator adds M (the number of unlabelled items) instead of the soft weights' sum: every "
        f"class's count grows by M = {u.shape[0]}, but an unlabelled item adds w_jn m_jn to class n, not 1 to "
        "every class. Divide by sum_i [y_i = n] + sum_j w_jn m_jn (w.sum(0) after the mask).":
            (sums + wm.T @ u) / (cnt + u.shape[0]).unsqueeze(1),
        "it is the average of the support mean and the soft mean (two means averaged instead of one weighted "
        "mean): (mean of the supports + sum_j w_jn m_jn z~_j / sum_j w_jn m_jn) / 2 gives the supports and "
        "the unlabelled items half the weight each, however many supports and however much soft weight there "
        "are. Compute one mean over both, (sum_i z_i [y_i = n] + sum_j w_jn m_jn z~_j) / (sum_i [y_i = n] + "
        "sum_j w_jn m_jn).":
            (mu + (wm.T @ u) / wm.sum(0).unsqueeze(1)) / 2,
        "the unlabelled weights are uniform (1/N for every class): they are the soft assignments w_jn = "
        "softmax(-||z~_j - c_n||^2) over the classes.": refine(torch.full_like(d, 1.0 / n) * m),
        "the unlabelled weights are hard (one-hot at the nearest prototype): soft k-means keeps the "
        "probabilities themselves, w_jn = softmax(-||z~_j - c_n||^2) over the classes.":
            refine(F.one_hot(d.argmin(dim=1), n).to(d.dtype) * m),
        "it returns the weighted *sum*, not the mean: divide by the total weight, the support count plus "
        "sum_j w_jn m_jn.": sums + wm.T @ u,
        "the denominator lacks the support count: divide by sum_i [y_i = n] + sum_j w_jn m_jn (each support "
        "counts 1).": (sums + wm.T @ u) / wm.sum(0).unsqueeze(1),
        "the denominator counts the supports as 1 instead of K: each of the K supports of a class adds 1, so "
        "the denominator is K + sum_j w_jn m_jn.": (sums + wm.T @ u) / (1 + wm.sum(0)).unsqueeze(1),
        "the supports enter as their mean with weight 1 (c_n = (mean + sum_j w z~_j) / (1 + sum_j w)): each of "
        "the K supports counts 1, numerator sum_i z_i [y_i = n], denominator K + sum_j w_jn m_jn.":
            (mu + wm.T @ u) / (1 + wm.sum(0)).unsqueeze(1),
        "it returns the old prototypes c unchanged: compute the refined prototypes.": c,
        "c is used in place of the supports (K c_n in the numerator): c only gives the soft assignments w; "
        "the numerator uses the supports themselves, sum_i z_i [y_i = n] (c need not be their mean, e.g. "
        "after a first refinement step).": refine(wm, cnt.unsqueeze(1) * c),
        "c is used in place of the supports, with weight 1: c only gives the soft assignments w; the "
        "numerator uses the supports themselves, sum_i z_i [y_i = n], and the denominator counts each.":
            refine(wm, c, torch.ones_like(cnt)),
        "c is ignored: the assignments are to the support means, not to the prototypes c you are given "
        "(w_jn = softmax(-||z~_j - c_n||^2) with the c passed in, e.g. the previous step's prototypes).":
            refine(torch.softmax(-_sqdist(u, mu), dim=1) * m),
    }
    if mask is not None:
        out.update({
            "the mask is ignored: multiply the soft assignments by it, w_jn m_jn, in the numerator and the "
            "denominator.": refine(w),
            "the masked weights are renormalised over the classes (w m / sum_n w m, or a softmax of "
            "-d + log m): that undoes the mask for an item far from every prototype (a distractor), whose "
            "small mask values then sum to 1 again. Use w_jn m_jn as they are.":
                refine(wm / wm.sum(1, keepdim=True)),
            "the mask is applied in the numerator only: the denominator uses the same weights, "
            "K + sum_j w_jn m_jn.": (sums + wm.T @ u) / (cnt + w.sum(0)).unsqueeze(1),
        })
    k = s.shape[0] // n
    if s.shape[0] == n * k and not torch.equal(y, torch.arange(n, device=y.device).repeat_interleave(k)):
        cm = s.reshape(n, k, -1)
        out["support_y is ignored: the supports were read as class-major (reshape(N, K, D)), but here they "
            f"come in another order (support_y = {y.tolist()}). Group them by their labels: "
            "one_hot(support_y, N).T @ support_z, or support_z[support_y == n]."] = \
            refine(wm, cm.sum(1), torch.full_like(cnt, k))
    return out


def _kmeans_problem(seed: int, n: int, k: int, m_items: int, dim: int, shuffle: bool = False):
    g = _g(seed)
    centres = 2.0 * torch.randn(n, dim, generator=g, dtype=D)
    y = torch.arange(n).repeat_interleave(k)
    if shuffle:
        y = y[torch.randperm(n * k, generator=g)]
    s = centres[y] + 0.6 * torch.randn(n * k, dim, generator=g, dtype=D)
    u = centres[torch.arange(m_items) % n] + 0.9 * torch.randn(m_items, dim, generator=g, dtype=D)
    c = _class_means(s, y, n) + 0.5 * torch.randn(n, dim, generator=g, dtype=D)  # not the support mean
    return c, s, y, u


def _expect_prototypes(out: Any, n: int, dim: int, dtype: torch.dtype, what: str) -> Tensor:
    if out is None:
        raise Mistake(f"your function returned None; {what} should be a tensor (N, D) = ({n}, {dim}).",
                      "End the function with `return` of the new prototypes.")
    _need_tensor(out, what, f"of shape (N, D) = ({n}, {dim})")
    expect_shape(out, (n, dim), what, "one row per class: (N, D), like c.")
    if out.dtype != dtype:
        raise Mistake(f"{what} is {out.dtype} for {dtype} inputs: keep the inputs' dtype (no .float(); give "
                      "new tensors dtype=support_z.dtype).")
    return out


def _probe_kmeans(fn: Callable) -> None:
    c, s, y, u = _kmeans_problem(73, 3, 2, 7, 4)
    mask = torch.rand(7, 3, generator=_g(74), dtype=D) * 0.8 + 0.1
    far = u.clone()
    far[6] = far[6] + 12.0  # far from every prototype, tiny mask: renormalising undoes the mask
    mask_far = mask.clone()
    mask_far[6] = torch.tensor([0.02, 0.01, 0.03], dtype=D)
    c2, s2, y2, u2 = _kmeans_problem(75, 4, 1, 5, 3)
    c2, s2, u2 = c2.float(), s2.float(), u2.float()
    c3, s3, y3, u3 = _kmeans_problem(76, 3, 2, 6, 3, shuffle=True)
    # (c, supports, labels, unlabelled, mask, how the mask is passed, description)
    calls = [(c, s, y, u, None, "none", "3-way 2-shot, 7 unlabelled items, no mask"),
             (c, s, y, far, mask_far, "kw", "the same with a mask (item 6 far from every prototype, mask ~0.02)"),
             (c + 0.7, s, y, u, None, "none", "the first call with another c (c + 0.7)"),
             (c2, s2, y2, u2, torch.rand(5, 4, generator=_g(77)).float(), "pos", "4-way 1-shot, float32, a mask"),
             (c3, s3, y3, u3, None, "none", "3-way 2-shot with the supports in a shuffled order")]
    results = []
    for i, (cc, ss, yy, uu, mm, how, desc) in enumerate(calls):
        args = (cc, ss, yy, uu)
        out = fn(*args) if how == "none" else fn(*args, mask=mm) if how == "kw" else fn(*args, mm)
        what = f"the refined prototypes ({desc})"
        out = _expect_prototypes(out, cc.shape[0], cc.shape[1], cc.dtype, what)
        ref = reference_soft_kmeans_step(cc, ss, yy, uu, mm)
        atol = 1e-10 if cc.dtype == D else 1e-5
        mistakes = _kmeans_mistakes(cc, ss, yy, uu, mm)
        if i == 1:
            without = fn(cc, ss, yy, uu)
            unmasked = reference_soft_kmeans_step(cc, ss, yy, uu)
            if isinstance(without, Tensor) and _same(without, out) and not _same(ref, unmasked):
                mistakes["the mask is ignored: the result is the same with and without it. Multiply the soft "
                         "assignments by the mask, w_jn m_jn (numerator and denominator)."] = out
        if i == 2:
            mistakes["c is ignored: the result is the same for two different c. The assignments w use the "
                     "prototypes c you are given."] = results[0]
        diagnose(out, ref, what, mistakes, atol=atol, rtol=1e-8 if cc.dtype == D else 1e-5)
        results.append(out.detach())
    expect_device_agnostic(_raw(fn), c, s, y, u, what="your soft_kmeans_step")
    expect_device_agnostic(_raw(fn), c, s, y, far, mask=mask_far, what="your soft_kmeans_step")


def soft_kmeans_step(student: Callable) -> Callable:
    """Exercise 7.3: one (masked) soft k-means refinement of the prototypes (Ren et al. 2018)."""
    return run_check("7.3", "a soft k-means step", student, reference_soft_kmeans_step, _probe_kmeans)


# ----------------------------------------------------------------------------- 7.4

Pairs = list  # sorted [(idx, label), ...]


def _pairs(idx: Tensor, labels: Tensor) -> Pairs:
    return sorted(zip(idx.detach().cpu().long().tolist(), labels.detach().cpu().long().tolist()))


def _select_variant(p: Tensor, tau: float, z: int, rule: str = "right") -> Pairs:
    conf, pred = p.max(dim=1)
    n_way = p.shape[1]
    above = conf > tau if rule == "strict" else conf >= tau
    if rule == "no_tau":
        above = torch.ones_like(above)
    if rule == "overall":
        cand = torch.nonzero(above).squeeze(1)
        top = cand[torch.sort(conf[cand], descending=True, stable=True).indices[:z * n_way]]
        return _pairs(top, pred[top])
    out = []
    for n in range(n_way):
        if rule in ("column", "column_tau"):
            keep = above if rule == "column" else p[:, n] >= tau
            cand = torch.nonzero(keep).squeeze(1)
            key = p[cand, n]
        else:
            cand = torch.nonzero((pred == n) & above).squeeze(1)
            key = conf[cand]
        order = torch.sort(key, descending=rule != "least", stable=True).indices
        take = cand[order] if rule == "no_z" else cand[order[:z]]
        out.append((take, torch.full_like(take, n)))
    idx = torch.cat([t for t, _ in out])
    lab = torch.cat([lab for _, lab in out])
    if rule == "class_order":  # idx sorted, labels left in the loop's class order
        return sorted(zip(torch.sort(idx).values.tolist(), lab.tolist()))
    if rule == "positions":
        return sorted(zip(torch.sort(idx).values.tolist(), range(idx.numel())))
    return _pairs(idx, lab)


SELECT_MISTAKES = {
    "overall": "it takes the Z*N most confident items overall: one class that is easy (many confident items) "
               "then takes most of the selection, and the pseudo-labels become class-imbalanced. Select per "
               "class: for each class n, the Z most confident of the items predicted as n (Li et al.'s "
               "class-balanced selection).",
    "no_tau": "tau is ignored: items below the threshold are selected too (the Z most confident per class, "
              "however low). Keep only items with max p >= tau, then take the top Z per class.",
    "strict": "the threshold is strict (max p > tau): your function leaves out the items whose max p equals "
              "tau exactly, but tau is the lowest confidence that may be selected. Keep the items with "
              "`max p >= tau`.",
    "column": "each class takes its top Z by p[:, n] regardless of the argmax: an item may then be selected for "
              "a class that is not its best guess, or for two classes. Consider for class n only the items "
              "whose argmax is n.",
    "least": "it takes the *least* confident Z items per class above tau: sort by decreasing confidence "
             "(descending=True, or topk) and take the first Z.",
    "no_z": "z_per_class is ignored: every item above tau is selected. Take at most Z per class, the most "
            "confident.",
    "class_order": "the labels do not follow their items: idx was sorted, but the labels were left in the order "
                   "of the class loop. Sort the (idx, label) pairs together (labels = labels[order] with the "
                   "order that sorts idx), or take labels = argmax p[idx] after sorting.",
    "positions": "the labels are positions (0, 1, 2, ...) in the selection, not classes: labels[k] is the class "
                 "of item idx[k], its argmax.",
}
SELECT_MISTAKES["column_tau"] = SELECT_MISTAKES["column"]


def _pairs_text(pairs: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"item {i} as class {n}" for i, n in pairs[:6]) + (" ..." if len(pairs) > 6 else "")


def _expect_selection(out: Any, n_items: int, what: str) -> tuple[Tensor, Tensor]:
    if out is None:
        raise Mistake("your function returned None; return the pair (idx, labels).",
                      "End the function with `return idx, labels`.")
    if isinstance(out, Tensor):
        extra = ""
        if out.dtype == torch.bool and out.shape == (n_items,):
            extra = (" That is a mask over the items: return their indices, idx = mask.nonzero().squeeze(1), "
                     "and their labels.")
        raise Mistake(f"return a pair (idx, labels); your function returned {describe(out)}.{extra}")
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise Mistake(f"return a pair (idx, labels); your function returned {describe(out)}.")
    idx, labels = out
    _need_tensor(idx, f"idx ({what})", "of item indices (S,)")
    _need_tensor(labels, f"labels ({what})", "of classes (S,)")
    if idx.dtype == torch.bool and idx.shape == (n_items,):
        raise Mistake(f"idx ({what}) is a bool mask over the {n_items} items; return the indices of the selected "
                      "items (mask.nonzero().squeeze(1)), sorted.")
    if idx.dim() != 1 or labels.dim() != 1 or idx.shape != labels.shape:
        raise Mistake(f"idx and labels ({what}) should be two 1-D tensors of the same length S (one entry per "
                      f"selected item), but they have shapes {tuple(idx.shape)} and {tuple(labels.shape)}.",
                      "idx = torch.cat(per-class indices), labels = the argmax of p at idx.")
    _integer(idx, f"idx ({what})", "Build it with nonzero, topk or torch.cat of index tensors.")
    _integer(labels, f"labels ({what})", "labels are the items' argmax classes.")
    ids = idx.detach().cpu().tolist()
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise Mistake(f"idx ({what}) selects item {dup} more than once: an item belongs to one class at most, its "
                      "argmax. It looks like " + SELECT_MISTAKES["column"])
    return idx, labels


def _verdict(got: list[Pairs], ref: list[Pairs], variants: dict[str, list[Pairs]], descs: list[str],
             what: str, behaviour: Sequence[tuple[int, int, str]], hint: str) -> None:
    """Name a mistake that reproduces every call; else an ignored argument; else the first difference."""
    if got == ref:
        return
    for msg, values in variants.items():
        if values == got:
            raise Mistake(f"{what}: wrong. It looks like {msg}")
    _selected_behaviour(got, ref, lambda a, b: a == b, behaviour)
    k = next(i for i, (a, b) in enumerate(zip(got, ref)) if a != b)
    extra = [q for q in got[k] if q not in ref[k]]
    missing = [q for q in ref[k] if q not in got[k]]
    parts = ([f"it selects {_pairs_text(extra)}, which the rule does not"] if extra else []) + (
        [f"it misses {_pairs_text(missing)}"] if missing else [])
    raise Mistake(f"{what} ({descs[k]}) differs from the rule's: {'; '.join(parts)}.", hint)


def _select_calls() -> list[tuple[Tensor, float, int, str]]:
    # integer rows / 64: exact probabilities, so an item can sit exactly at tau; class 0 is the easy class
    rows = [[61, 2, 1], [10, 40, 14], [59, 3, 2], [4, 6, 54], [57, 4, 3], [20, 25, 19], [55, 5, 4],
            [33, 29, 2], [12, 45, 7], [53, 8, 3], [9, 13, 42], [31, 3, 30], [6, 20, 38], [51, 7, 6],
            [2, 28, 34], [49, 9, 6]]
    p1 = torch.tensor(rows, dtype=D) / 64
    rows2 = [[3, 50, 6, 5], [40, 8, 8, 8], [9, 9, 37, 9], [4, 4, 4, 52], [44, 10, 5, 5], [5, 5, 47, 7],
             [6, 43, 9, 6], [8, 8, 8, 40], [36, 12, 8, 8], [2, 2, 58, 2]]
    p2 = (torch.tensor(rows2, dtype=D) / 64).float()
    return [(p1, 0.625, 2, "16 items, 3 classes, class 0 easy, tau = 0.625 (item 1 exactly at tau), Z = 2"),
            (p1, 0.625, 3, "the same p, tau = 0.625, Z = 3"),
            (p1, 0.375, 3, "the same p, tau = 0.375, Z = 3"),
            (p2, 0.6, 1, "10 items, 4 classes, float32, tau = 0.6, Z = 1"),
            (p2, 0.95, 2, "the float32 p with tau = 0.95: no item reaches it (an empty selection)")]


def _select_variants(calls) -> dict[str, list[Pairs]]:
    out: dict[str, list[Pairs]] = {}
    for rule, msg in SELECT_MISTAKES.items():
        values = [_select_variant(p, tau, z, rule) for p, tau, z, _ in calls]
        if rule == "column_tau":
            out[msg + " "] = values  # the same explanation, another reading of "above tau"
        else:
            out[msg] = values
    return out


def _probe_select(fn: Callable) -> None:
    calls = _select_calls()
    got, ref = [], []
    for p, tau, z, desc in calls:
        idx, labels = _expect_selection(fn(p, tau, z), p.shape[0], desc)
        got.append(_pairs(idx, labels))
        ref.append(_pairs(*reference_select_balanced(p, tau, z)))
    _verdict(got, ref, _select_variants(calls), [c[3] for c in calls], "the selection", [
        (0, 1, "the selection: wrong. z_per_class is ignored or fixed: your function selects the same items "
               "for Z = 2 and Z = 3. Take the Z most confident items per class."),
        (1, 2, "the selection: wrong. tau is ignored or fixed: your function selects the same items for "
               "tau = 0.625 and tau = 0.375. Keep only the items with max p >= tau."),
    ], "For each class n: the items with argmax n and max p >= tau, sorted by decreasing max p, the first Z.")
    expect_device_agnostic(_raw(fn), calls[0][0], 0.625, 2, what="your select_balanced")


def select_balanced(student: Callable) -> Callable:
    """Exercise 7.4: class-balanced top-Z selection above tau."""
    return run_check("7.4", "class-balanced selection", student, reference_select_balanced, _probe_select)


# ----------------------------------------------------------------------------- 7.5

def _round_variant(support_z: Tensor, support_y: Tensor, pool_z: Tensor, pseudo_idx: Tensor, pseudo_y: Tensor,
                   n_way: int, T: float, tau: float, z: int, *, loo: str = "minus1", human: bool = True,
                   pseudo: bool = True, keep: str = "none", select: str = "right", dist: str = "sq",
                   weight: str = "mean", scale: str = "divide", fallback: bool = False,
                   return_p: bool = False) -> Pairs | Tensor:
    dt = pool_z.dtype
    if fallback and not pseudo_idx.numel():  # human supports dropped, but used while there are no pseudo-labels
        human = True
    pz = pool_z[pseudo_idx]
    oh_s, oh_p = _onehot(support_y, n_way, dt), _onehot(pseudo_y, n_way, dt)
    none = (torch.zeros(n_way, pool_z.shape[1], dtype=dt), torch.zeros(n_way, dtype=dt))
    s_sum, s_cnt = (oh_s.T @ support_z, oh_s.sum(0)) if human else none
    p_sum, p_cnt = (oh_p.T @ pz, oh_p.sum(0)) if pseudo else none
    sums, counts = s_sum + p_sum, s_cnt + p_cnt
    if weight == "halves":  # the human mean and the pseudo mean, equal weight
        hm, pm = s_sum / s_cnt.unsqueeze(1), p_sum / p_cnt.clamp_min(1).unsqueeze(1)
        c = torch.where((p_cnt > 0).unsqueeze(1), (hm + pm) / 2, hm)
    else:
        c = sums / counts.unsqueeze(1)
    d = _sqdist(pool_z, c)
    if pseudo and loo == "every" and pseudo_idx.numel():  # the item taken out of every class's sum and count
        c_minus = (sums.unsqueeze(0) - pz.unsqueeze(1)) / (counts - 1).view(1, -1, 1)
        d = d.index_put((pseudo_idx,), (pz.unsqueeze(1) - c_minus).pow(2).sum(-1))
    elif pseudo and loo != "none" and weight != "halves" and pseudo_idx.numel():
        own = counts[pseudo_y].unsqueeze(1)
        c_loo = (sums[pseudo_y] - pz) / (own - 1 if loo == "minus1" else own)
        d = d.index_put((pseudo_idx, pseudo_y), (pz - c_loo).pow(2).sum(1))
    if dist == "euclid":
        d = d.sqrt()
    logits = -d * T if scale == "times" else -d / T
    p = torch.softmax(logits, dim=1)
    if return_p:
        return p
    if keep == "exclude" or keep == "locked":
        p = p.clone()
        p[pseudo_idx] = 0.0  # not candidates (max p = 0 < tau)
    rule = {"right": "right", "overall": "overall", "no_tau": "no_tau", "no_z": "no_z"}[select]
    new = _select_variant(p, tau, z, rule)
    if keep in ("union", "locked"):  # an index in both keeps its old label
        old = dict(zip(pseudo_idx.tolist(), pseudo_y.tolist()))
        merged = dict(new)
        merged.update(old)
        return sorted(merged.items())
    if keep == "union_new":  # an index in both takes its new label
        merged = dict(zip(pseudo_idx.tolist(), pseudo_y.tolist()))
        merged.update(new)
        return sorted(merged.items())
    return new


HUMAN_ANCHOR = ("the K human labels are the anchor in every round. Every prototype is the mean of its human "
                "supports *and* its pseudo-supports, so a wrong pseudo-label is outweighed instead of taking its "
                "class over.")

ROUND_MISTAKES = {
    "no_loo": (dict(loo="none"), "a pseudo-labelled item is scored against a prototype that contains itself, "
               "so it votes for its own confidence (confirmation bias: once in, it looks more certain every "
               "round). Score item j with its own class's prototype without it, c_n^(-j) = (sum_n - z_j) / "
               "(count_n - 1)."),
    "loo_count": (dict(loo="full"), "the pseudo-labelled item is taken out of its prototype's sum but the count is "
                  "not lowered: c_n^(-j) = (sum_n - z_j) / (count_n - 1)."),
    "loo_every": (dict(loo="every"), "leave-one-out is applied to every class (the item removed from prototypes of "
                  "classes it is not in): a pseudo-labelled item is in its own class's sum only, so subtracting it "
                  "from the other classes' sums (and 1 from their counts) moves their prototypes. Only its own "
                  "class n = pseudo_y[j] loses it, c_n^(-j) = (sum_n - z_j) / (count_n - 1); its distances to the "
                  "other classes use their full means."),
    "union": (dict(keep="union"), "earlier pseudo-labels are kept: your function returns the union of the "
              "previous pseudo-labels (pseudo_idx, pseudo_y) and the new selection, so the new selection is added "
              "to the old one and a label, once given, is never withdrawn. Re-anchor every round: the human "
              "supports are always in the prototypes, but the pseudo-labels are chosen afresh from the whole "
              "pool (return the new selection alone), so an earlier mistake can be dropped."),
    "union_new": (dict(keep="union_new"), "earlier pseudo-labels are kept: your function returns the union of the "
                  "previous pseudo-labels (pseudo_idx, pseudo_y) and the new selection (an item selected again "
                  "takes its new label, but an item no longer selected keeps its old one). Re-anchor every "
                  "round: return the new selection alone, so that an earlier mistake can be dropped."),
    "locked": (dict(keep="locked"), "earlier pseudo-labels are locked in: they are kept as they are and only the "
               "other items compete for the new selection. Re-anchor every round: score every pool item and "
               "select afresh, so that an earlier mistake can be dropped."),
    "exclude": (dict(keep="exclude"), "the pseudo-labelled items are left out of the scoring and the selection: "
                "every pool item is scored each round (the pseudo-labelled ones with leave-one-out prototypes) "
                "and the selection is made afresh from all of them."),
    "no_human": (dict(human=False), "it builds the prototypes from the pseudo-labels only (human supports "
                 "dropped): " + HUMAN_ANCHOR),
    "no_human_no_loo": (dict(human=False, loo="none"), "it builds the prototypes from the pseudo-labels only "
                        "(human supports dropped), and no leave-one-out: " + HUMAN_ANCHOR + " And score a "
                        "pseudo-labelled item without itself (leave-one-out)."),
    "no_human_fallback": (dict(human=False, fallback=True), "it builds the prototypes from the pseudo-labels only "
                          "(human supports dropped) as soon as there are pseudo-labels (the human supports serve "
                          "only in round 1): " + HUMAN_ANCHOR),
    "no_human_fallback_no_loo": (dict(human=False, fallback=True, loo="none"), "it builds the prototypes from the "
                                 "pseudo-labels only (human supports dropped), and no leave-one-out, as soon as "
                                 "there are pseudo-labels (the human supports serve only in round 1): " +
                                 HUMAN_ANCHOR + " And score a pseudo-labelled item without itself "
                                 "(leave-one-out)."),
    "no_pseudo": (dict(pseudo=False), "the pseudo-labels are ignored: the prototypes are the human supports' means "
                  "only. Add the current pseudo-supports, pool_z[pseudo_idx] with labels pseudo_y, to their "
                  "classes' prototypes."),
    "halves": (dict(weight="halves"), "each prototype averages the human mean and the pseudo-label mean with equal "
               "weight (and scores every item with them): it is the mean over all its members, (sum of human "
               "supports + sum of pseudo-supports) / (count of both), and each pseudo-labelled item is scored "
               "without itself."),
    "overall": (dict(select="overall"), "the selection is not class-balanced (the Z*N most confident items "
                "overall): select the Z most confident per class, 7.4's rule (select_balanced)."),
    "no_tau": (dict(select="no_tau"), "tau is ignored: items below the threshold are selected. Keep only max p "
               ">= tau (7.4's rule)."),
    "no_z": (dict(select="no_z"), "z_per_class is ignored: every item above tau is selected. Take the Z most "
             "confident per class (7.4's rule)."),
    "no_T": (dict(), "the temperature is ignored: p = softmax(-d / kappa), torch.softmax(-d / temperature, dim=1)."),
    "times_T": (dict(scale="times"), "the distances are multiplied by the temperature: p = softmax(-d / kappa) "
                "(kappa divides)."),
    "euclid": (dict(dist="euclid"), "the distances are Euclidean (not squared): ProtoNet scores with "
               "-||z - c_n||^2."),
}


def _st_problem(seed: int, n: int = 3, k: int = 1, m: int = 5, h: int = 4, dim: int = 2, scale: float = 1.4,
                spread: float = 0.6):
    """Embeddings for a self-training round: N classes (K supports, M pool items each) and H distractors."""
    g = _g(seed)
    centres = scale * torch.randn(n + 1, dim, generator=g, dtype=D)
    support_y = torch.arange(n).repeat_interleave(k)
    support_z = centres[support_y] + 0.5 * spread * torch.randn(n * k, dim, generator=g, dtype=D)
    y = torch.cat([torch.arange(n).repeat_interleave(m), torch.full((h,), n)])
    pool_z = centres[y] + spread * torch.randn(y.shape[0], dim, generator=g, dtype=D)
    order = torch.randperm(y.shape[0], generator=g)
    pool_y = torch.where(y < n, y, torch.full_like(y, NONE))[order]
    return support_z, support_y, pool_z[order], pool_y


def _st_pseudo(pool_y: Tensor, n: int, per_class: int = 2, wrong: int = 1) -> tuple[Tensor, Tensor]:
    """Pseudo-labels: the first ``per_class`` items of each class, plus ``wrong`` distractors labelled 0, 1..."""
    idx, lab = [], []
    for c in range(n):
        items = (pool_y == c).nonzero().squeeze(1)[:per_class].tolist()
        idx += items
        lab += [c] * len(items)
    distractors = (pool_y == NONE).nonzero().squeeze(1)[:wrong].tolist()
    idx += distractors
    lab += [i % n for i in range(len(distractors))]
    order = sorted(range(len(idx)), key=lambda i: idx[i])
    return torch.tensor([idx[i] for i in order]), torch.tensor([lab[i] for i in order])


_ROUND = dict(seeds=(750, 751), T=(1.5, 0.6, 1.3), tau=(0.7, 0.9, 0.6))


def _round_calls():
    (s1, s2), (t1, t2, t3), (u1, u2, u3) = _ROUND["seeds"], _ROUND["T"], _ROUND["tau"]
    sz, sy, pz, py = _st_problem(s1)
    pi, pl = _st_pseudo(py, 3)
    empty = torch.zeros(0, dtype=torch.long)
    sz2, sy2, pz2, py2 = _st_problem(s2, n=3, k=2, m=4, h=3)
    pi2, pl2 = _st_pseudo(py2, 3, per_class=2, wrong=2)
    base = (sz, sy, pz)
    pseudo = _pairs_text(list(zip(pi.tolist(), pl.tolist())))
    return [((*base, empty, empty, 3, t1, u1, 2),
             f"round 1 (no pseudo-labels yet), kappa = {t1}, tau = {u1}, Z = 2"),
            ((*base, pi, pl, 3, t1, u1, 2), f"pseudo-labels {pseudo}, kappa = {t1}, tau = {u1}, Z = 2"),
            ((*base, pi, pl, 3, t1, u1, 3), f"the same pseudo-labels, kappa = {t1}, tau = {u1}, Z = 3"),
            ((*base, pi, pl, 3, t1, u2, 2), f"the same pseudo-labels, kappa = {t1}, tau = {u2}, Z = 2"),
            ((*base, pi, pl, 3, t2, u1, 2), f"the same pseudo-labels, kappa = {t2}, tau = {u1}, Z = 2"),
            ((sz2.float(), sy2, pz2.float(), pi2, pl2, 3, t3, u3, 2),
             f"3-way 2-shot, float32, 2 wrong pseudo-labels, kappa = {t3}, tau = {u3}, Z = 2")]


def _round_variants(calls) -> dict[str, list[Pairs]]:
    out: dict[str, list[Pairs]] = {}
    for key, (opts, msg) in ROUND_MISTAKES.items():
        values = []
        for args, _ in calls:
            a = list(args)
            a[:3] = [t.double() for t in a[:3]]
            if key == "no_T":
                a[6] = 1.0
            values.append(_round_variant(*a, **opts))
        out[msg if msg not in out else msg + " "] = values
    return out


def _probe_round(fn: Callable) -> None:
    calls = _round_calls()
    got, ref = [], []
    for args, desc in calls:
        idx, labels = _expect_selection(fn(*args), args[2].shape[0], desc)
        got.append(_pairs(idx, labels))
        ref.append(_pairs(*reference_self_training_round(*args)))
    _verdict(got, ref, _round_variants(calls), [c[1] for c in calls], "the new selection", [
        (1, 2, "the new selection: wrong. z_per_class is ignored or fixed: the same items come back for Z = 2 "
               "and Z = 3."),
        (1, 3, "the new selection: wrong. tau is ignored or fixed: the same items come back for tau = "
               f"{calls[1][0][7]} and tau = {calls[3][0][7]}."),
        (1, 4, "the new selection: wrong. The temperature is ignored or fixed: the same items come back for "
               f"kappa = {calls[1][0][6]} and kappa = {calls[4][0][6]}. p = softmax(-d / kappa), "
               "torch.softmax(-d / temperature, dim=1)."),
    ], "Prototypes: mean of the human supports and the pseudo-supports of each class; each pseudo-labelled "
       "item scored without itself; then 7.4's class-balanced selection over the whole pool.")
    args = calls[1][0]
    expect_device_agnostic(_raw(fn), *args, what="your self_training_round")


def self_training_round(student: Callable) -> Callable:
    """Exercise 7.5: one re-anchored self-training round with leave-one-out scoring."""
    return run_check("7.5", "a re-anchored self-training round", student, reference_self_training_round,
                     _probe_round)
