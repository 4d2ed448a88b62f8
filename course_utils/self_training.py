"""Self-training with pseudo-labels on prototypes: Lee 2013 (Pseudo-Label), Sohn et al. 2020 (FixMatch's
confidence threshold tau), and Li et al. 2019 (LST, "Learning to Self-Train for Semi-Supervised
Few-Shot Classification", NeurIPS 2019, arXiv:1906.00562: class-balanced top-Z selection and
re-anchoring on the labelled data after every round).

The human labelled K supports per class. Every round the model scores the pool with ProtoNet's
probabilities at temperature T,

    d_jn = ||z_j - c_n||^2,      p_jn = exp(-d_jn / T) / sum_n' exp(-d_jn' / T),

and, with a radius r, multiplies each row by the distance mask of :mod:`course_utils.soft_kmeans`
at the item's nearest prototype n*_j = argmax_n p_jn,

    q_jn = p_jn * m_jn*,         m_jn = sigmoid((r - d_jn) / s)         (q = p without a radius).

So the proposed label (the argmax of q) is always the nearest prototype. The mask only lowers the
confidence of items that lie far from that prototype, such as distractors: the softmax alone would
still give them high confidence.
Selection is class-balanced (LST's "cherry-picking"). For each class n, take the items whose argmax
is n and whose q_jn >= tau (FixMatch), keep the Z most confident of them per round, and give them
the hard pseudo-label n (Lee). The budget grows by Z per class per round, in both modes below, so
that after round r (counting from 0) a class holds at most (r + 1) Z pseudo-labels. The pseudo-labelled
items then join the human supports in the prototypes,

    c_n = (lambda_n sum_{human i: y_i = n} z_i + sum_{pseudo j: l_j = n} z_j) / (lambda_n K_n + S_n),

where K_n and S_n count class n's human supports and pseudo-labels, and lambda_n weights each human
support.

``anchored=False`` is the drift-prone loop. lambda_n = 1 (a plain mean), and accepted items are
locked in for good: each round only adds up to Z new items per class from the rest of the pool.
Once the pseudo-labels outnumber the K human labels, the human labels barely count. A wrong
pseudo-label pulls its prototype toward items like itself, which then pass tau and are locked in
next. This is confirmation bias, and precision falls round after round.

``anchored=True`` is LST's drift control. (1) Re-anchoring: lambda_n = max(1, a / (1 - a) * S_n / K_n)
with ``human_share`` a = 1/2, so the human labels always hold at least half of each prototype (LST
re-fits on the labelled data after each round). (2) No self-scoring: when item j, pseudo-labelled l
last round, is scored, its own weight is left out of c_l, giving c_l^(-j) = (A_l - z_j) / (B_l - 1)
with A_l the numerator and B_l the denominator above. This is the same as
||z_j - c_l^(-j)||^2 = (B_l / (B_l - 1))^2 ||z_j - c_l||^2. (3) Every round the *whole* selection is
redone from scratch, so an earlier pseudo-label is dropped or changed when the evidence moves.
(4) The distance mask is measured from the human prototypes (the support means), the same distances
:func:`course_utils.soft_kmeans.fit_radius` calibrated r on. Under anchored=False the mask follows
the current prototypes, so a prototype that walks toward distractors carries its radius along.

Stop rule: stop after the first round whose selection (indices and labels) equals the one before it.
Before round 0 the selection is empty. At that point the prototypes, and so every later round, would
repeat, so the repeated round is the fixed point. Otherwise stop when ``rounds`` are used up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .protonet import squared_distances
from .soft_kmeans import _check_2d, _check_n_way, _check_radius, _check_same_d, check_support

__all__ = ["select_balanced", "self_training_round", "SelfTraining", "self_train", "scores", "pool_labels", "round_metrics"]


def _check_tau(tau: float) -> None:
    if isinstance(tau, Tensor):
        tau = float(tau)
    if not isinstance(tau, (int, float)) or not 0 <= tau <= 1:
        raise ValueError(f"tau is a probability threshold and must lie in [0, 1], got {tau!r}.")


def _check_z(z_per_class: int) -> None:
    if isinstance(z_per_class, bool) or not isinstance(z_per_class, int) or z_per_class < 1:
        raise ValueError(f"z_per_class (Z, items selected per class per round) must be an integer >= 1, "
                         f"got {z_per_class!r}.")


def _check_temperature(temperature: float) -> None:
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature T must be a finite number > 0, got {temperature!r}.")


def select_balanced(p: Tensor, tau: float, z_per_class: int,
                    eligible: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Class-balanced selection: ``(idx (S,), labels (S,))``, idx sorted ascending.

    ``p`` ``(P, N)`` are probabilities (or masked scores q) in [0, 1]. For each class n: the items
    whose argmax is n and whose max is >= tau, the ``z_per_class`` most confident of them (ties go to
    the lower index). ``eligible`` ``(P,)`` bool, if given, restricts the candidates.
    """
    _check_tau(tau)
    _check_z(z_per_class)
    if not isinstance(p, Tensor) or p.dim() != 2 or p.shape[1] < 1:
        shape = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
        raise ValueError(f"p must be a 2-D (P, N) tensor of class probabilities, got {shape}.")
    if not p.dtype.is_floating_point:
        raise ValueError(f"p must hold probabilities (a float tensor), got dtype {p.dtype}.")
    if p.numel() and not (p.min() >= 0 and p.max() <= 1):
        raise ValueError("p must hold probabilities in [0, 1] (softmax over dim 1 first), got values "
                         "outside or NaN.")
    conf, pred = p.max(dim=1) if p.shape[0] else (p.new_zeros(0), p.new_zeros(0, dtype=torch.long))
    ok = conf >= tau
    if eligible is not None:
        if not isinstance(eligible, Tensor) or eligible.dtype != torch.bool or eligible.shape != conf.shape:
            raise ValueError(f"eligible must be a ({p.shape[0]},) bool tensor, one flag per pool item.")
        ok = ok & eligible.to(ok.device)
    chosen = []
    for n in range(p.shape[1]):
        cand = torch.nonzero(ok & (pred == n)).squeeze(1)           # ascending index
        order = torch.sort(conf[cand], descending=True, stable=True).indices
        chosen.append(cand[order[:z_per_class]])
    idx = torch.sort(torch.cat(chosen)).values
    return idx, pred[idx]


def self_training_round(support_z: Tensor, support_y: Tensor, pool_z: Tensor, pseudo_idx: Tensor,
                        pseudo_y: Tensor, n_way: int, temperature: float, tau: float,
                        z_per_class: int) -> tuple[Tensor, Tensor]:
    """One re-anchored round with equal weights (chapter 07's exercise 7.5): ``(idx, labels)``.

    c_n = mean of class n's human supports and current pseudo-supports ``pool_z[pseudo_idx]``; a
    pseudo-labelled item j of class n is scored against c_n^(-j) = (sum_n - z_j) / (count_n - 1) (it
    never votes for its own confidence); p = softmax(-d / T); then a fresh :func:`select_balanced`, so
    an earlier pseudo-label is kept only if it is selected again. :func:`self_train` repeats rounds
    like this one (with the human labels weighted to keep ``human_share`` of each prototype).
    """
    y = check_support(support_z, support_y, n_way)
    _check_2d(pool_z, "pool_z")
    _check_same_d(pool_z, support_z, "pool_z", "support_z")
    _check_temperature(temperature)
    pseudo_idx = torch.as_tensor(pseudo_idx, dtype=torch.long, device=pool_z.device).reshape(-1)
    pseudo_y = torch.as_tensor(pseudo_y, dtype=torch.long, device=pool_z.device).reshape(-1)
    if pseudo_idx.shape != pseudo_y.shape:
        raise ValueError(f"pseudo_idx and pseudo_y must have one label per index, got {len(pseudo_idx)} and "
                         f"{len(pseudo_y)}.")
    if len(pseudo_idx) and (pseudo_idx.min() < 0 or pseudo_idx.max() >= len(pool_z)
                            or pseudo_y.min() < 0 or pseudo_y.max() >= n_way):
        raise ValueError(f"pseudo_idx must index pool_z (0..{len(pool_z) - 1}) and pseudo_y lie in 0..{n_way - 1}.")
    z = torch.cat([support_z, pool_z[pseudo_idx]])
    onehot = torch.nn.functional.one_hot(torch.cat([y, pseudo_y]), n_way).to(pool_z.dtype)
    total, count = onehot.T @ z, onehot.sum(0)
    d = squared_distances(pool_z, total / count[:, None])
    if len(pseudo_idx):
        own = (total[pseudo_y] - pool_z[pseudo_idx]) / (count[pseudo_y] - 1)[:, None]
        d[pseudo_idx, pseudo_y] = (pool_z[pseudo_idx] - own).pow(2).sum(-1)
    return select_balanced(torch.softmax(-d / temperature, dim=1), tau, z_per_class)


def scores(d: Tensor, temperature: float = 1.0, radius: float | None = None,
           sharpness: float | None = None, d_mask: Tensor | None = None) -> Tensor:
    """q = softmax(-d / T, dim=1), each row times the mask at its argmax n*, when a radius is given: ``(P, N)``.

    ``d`` ``(P, N)`` squared distances. The mask is m_jn* = sigmoid((r - d_mask[j, n*]) / s), where
    ``d_mask`` (default ``d``) holds the distances the mask is measured on. The argmax of q is the
    argmax of p.
    """
    _check_temperature(temperature)
    q = torch.softmax(-d / temperature, dim=1)
    if radius is not None:
        s = _check_radius(radius, sharpness)
        dm = (d if d_mask is None else d_mask).gather(1, q.argmax(dim=1, keepdim=True))
        q = q * torch.sigmoid((radius - dm) / s)
    elif sharpness is not None:
        raise ValueError("sharpness only shapes the distance mask; give a radius too (or leave both None).")
    return q


@dataclass
class SelfTraining:
    """Per-round record of :func:`self_train` (index r = round r, from 0).

    ``selected[r]`` are the pool indices (sorted) holding a pseudo-label after round r, and
    ``labels[r]`` are those labels. ``prototypes[r]`` are the (N, D) prototypes that scored round r
    (round 0: the human support means). ``confidence[r]`` ``(P,)`` is each item's top score q in round
    r. Under anchored=False, locked items are scored with themselves inside the prototypes.
    ``final_prototypes`` come from the human supports plus the last selection. ``stopped_at`` is the
    number of rounds run. ``converged`` is True when the stop rule fired, in which case the last round
    repeats the one before.
    """

    selected: list[Tensor]
    labels: list[Tensor]
    prototypes: list[Tensor]
    confidence: list[Tensor]
    final_prototypes: Tensor
    stopped_at: int
    converged: bool
    anchored: bool
    tau: float
    z_per_class: int
    pool_size: int

    def accepted(self, round: int = -1) -> Tensor:
        """``(P,)`` pseudo-labels after ``round`` (default: the last), -1 where none was accepted."""
        idx = self.selected[round]
        out = torch.full((self.pool_size,), -1, dtype=torch.long, device=idx.device)
        out[idx] = self.labels[round]
        return out


def _pseudo_prototypes(human_sum: Tensor, human_count: Tensor, pool_z: Tensor, idx: Tensor, lab: Tensor,
                       human_share: float) -> tuple[Tensor, Tensor]:
    """c ``(N, D)`` from human and pseudo supports, and each class's total weight B ``(N,)``."""
    n_way = human_sum.shape[0]
    s_sum = torch.zeros_like(human_sum).index_add_(0, lab, pool_z[idx])
    s_count = torch.bincount(lab, minlength=n_way).to(human_sum.dtype)
    lam = torch.ones_like(human_count)
    if human_share > 0:
        lam = torch.clamp(human_share / (1 - human_share) * s_count / human_count, min=1.0)
    total = lam * human_count + s_count
    return (lam.unsqueeze(1) * human_sum + s_sum) / total.unsqueeze(1), total


def self_train(support_z: Tensor, support_y: Tensor, pool_z: Tensor, n_way: int, tau: float, z_per_class: int,
               rounds: int = 5, temperature: float = 1.0, anchored: bool = True, radius: float | None = None,
               sharpness: float | None = None, human_share: float = 0.5) -> SelfTraining:
    """Pseudo-label the pool for up to ``rounds`` rounds (see the module docstring for both modes).

    ``support_z`` ``(N*K, D)`` with ``support_y`` in 0..N-1 (the human labels), ``pool_z`` ``(P, D)``.
    ``tau`` in [0, 1] is the acceptance threshold on q. ``z_per_class`` (Z) is the number of items added
    per class per round. ``temperature`` is T of p. ``radius``/``sharpness`` turn on the distance mask.
    ``human_share`` in [0, 1) is the smallest share of each prototype the human labels keep when
    anchored (ignored when not anchored: plain mean).
    """
    _check_n_way(n_way)
    y = check_support(support_z, support_y, n_way)
    _check_2d(pool_z, "pool_z")
    _check_same_d(pool_z, support_z, "Pool items", "supports")
    _check_tau(tau)
    _check_z(z_per_class)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}.")
    _check_temperature(temperature)
    if radius is not None:
        _check_radius(radius, sharpness)
    elif sharpness is not None:
        raise ValueError("sharpness only shapes the distance mask; give a radius too (or leave both None).")
    if not isinstance(human_share, (int, float)) or not 0 <= human_share < 1:
        raise ValueError(f"human_share must lie in [0, 1) (0 = plain mean), got {human_share!r}.")
    share = float(human_share) if anchored else 0.0

    onehot = torch.nn.functional.one_hot(y, n_way).to(support_z.dtype)
    human_sum, human_count = onehot.T @ support_z, onehot.sum(dim=0)
    pool_z = pool_z.to(support_z.dtype)
    P, device = pool_z.shape[0], pool_z.device
    idx = torch.zeros(0, dtype=torch.long, device=device)
    lab = torch.zeros(0, dtype=torch.long, device=device)
    rec = SelfTraining([], [], [], [], human_sum / human_count.unsqueeze(1), 0, False, anchored, float(tau),
                       z_per_class, P)
    d_human = squared_distances(pool_z, human_sum / human_count.unsqueeze(1))   # mask distances, anchored
    for r in range(rounds):
        c, total = _pseudo_prototypes(human_sum, human_count, pool_z, idx, lab, share)
        d = squared_distances(pool_z, c)
        if anchored and idx.numel():                               # leave each pseudo-label out of its own c
            factor = (total[lab] / (total[lab] - 1)).pow(2)
            d[idx, lab] = d[idx, lab] * factor
        q = scores(d, temperature, radius, sharpness, d_mask=d_human if anchored else d)
        if anchored:
            new_idx, new_lab = select_balanced(q, tau, (r + 1) * z_per_class)
        else:
            free = torch.ones(P, dtype=torch.bool, device=device)
            free[idx] = False
            add_idx, add_lab = select_balanced(q, tau, z_per_class, eligible=free)
            new_idx, order = torch.sort(torch.cat([idx, add_idx]))
            new_lab = torch.cat([lab, add_lab])[order]
        rec.selected.append(new_idx)
        rec.labels.append(new_lab)
        rec.prototypes.append(c)
        rec.confidence.append(q.max(dim=1).values if P else q.new_zeros(0))
        rec.stopped_at = r + 1
        if torch.equal(new_idx, idx) and torch.equal(new_lab, lab):
            rec.converged = True
            break
        idx, lab = new_idx, new_lab
    rec.final_prototypes = _pseudo_prototypes(human_sum, human_count, pool_z, idx, lab, share)[0]
    return rec


def pool_labels(source: SelfTraining | Tensor, pool_z: Tensor, tau: float, temperature: float = 1.0,
                radius: float | None = None, sharpness: float | None = None) -> Tensor:
    """``(P,)`` nearest-prototype labels where the score q >= tau, else -1 (not accepted).

    ``source``: a :class:`SelfTraining` (its ``final_prototypes``) or prototypes c ``(N, D)``. For the
    pseudo-labels self-training itself accepted, use ``result.accepted()``.
    """
    c = source.final_prototypes if isinstance(source, SelfTraining) else source
    _check_2d(c, "the prototypes c")
    _check_2d(pool_z, "pool_z")
    _check_same_d(pool_z, c, "Pool items", "the prototypes c")
    _check_tau(tau)
    q = scores(squared_distances(pool_z, c), temperature, radius, sharpness)
    if q.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=pool_z.device)
    conf, pred = q.max(dim=1)
    return torch.where(conf >= tau, pred, torch.full_like(pred, -1))


def round_metrics(result: SelfTraining, pool_y: Tensor) -> list[dict]:
    """Per round: ``precision`` (right pseudo-labels / selected, nan if none), ``coverage`` (selected / P),
    ``n_selected``, ``n_correct``, ``n_distractors``.

    ``pool_y`` ``(P,)`` are the true labels. A distractor (-1) is wrong whatever label it got.
    """
    if not isinstance(pool_y, Tensor) or pool_y.dim() != 1 or pool_y.shape[0] != result.pool_size:
        shape = tuple(pool_y.shape) if isinstance(pool_y, Tensor) else type(pool_y).__name__
        raise ValueError(f"pool_y must be a 1-D tensor with one true label per pool item "
                         f"({result.pool_size}), got {shape}.")
    out = []
    for idx, lab in zip(result.selected, result.labels):
        truth = pool_y.to(idx.device)[idx]
        n = int(idx.numel())
        correct = int(((lab == truth) & (truth >= 0)).sum())
        out.append(dict(precision=correct / n if n else float("nan"),
                        coverage=n / result.pool_size if result.pool_size else float("nan"),
                        n_selected=n, n_correct=correct, n_distractors=int((truth < 0).sum())))
    return out
