"""Human-in-the-loop labelling with a meta-learned ProtoNet (chapter 07, section 5).

The model proposes, the human disposes. Every pool item z_j = f_theta(x_j) is scored by ProtoNet
(Snell et al., 2017) against prototypes built from the *human* labels only (the K supports plus each
answer the human has given),

    c_n = mean{ z : human label n },      p_jn = softmax_n( -||z_j - c_n||^2 / T ),

with the softmax over the class axis (dim 1) and T a temperature fitted on meta-val. The session then

- asks the human about one item at a time, in an *acquisition* order (Settles 2009's uncertainty
  sampling: least margin p_(1) - p_(2), or highest entropy; k-center greedy, Sener & Savarese 2018,
  picks the item farthest from everything labelled; random is the baseline);
- auto-labels every item with max_n p_jn >= tau on request (:meth:`LabellingSession.accept_above`,
  Geifman & El-Yaniv 2017's selective classification);
- retrains (recomputes the prototypes) every ``retrain_every`` answers, as Label Studio's ML
  backend retrains every N annotations, optionally refining them by self-training on the pool
  (``self_training=True``: :func:`course_utils.self_training.self_train`, anchored).

Auto labels never feed the prototypes (that would be self-training without its safeguards), and a
human label is never overwritten by an auto label. :func:`simulate` replaces the human by an oracle
that answers from the hidden truth and records pool accuracy after every click, the curve of Woodward
& Finn (2017); :func:`clicks_to_reach` and :func:`labels_saved` (= 1 - clicks / P) summarise it.

An acquisition function is ``(p (P, N), z (P, D), labelled_mask (P,), generator) -> order``: the
indices of the items where ``labelled_mask`` is False, the one to ask about first. The session also
passes ``limit=1`` and ``support_z`` to a function that takes them (the four here do; k-center counts
the supports as labelled). The queue design follows superintendent (an acquisition function over
predict_proba, undo, skip); the widget is a thin view in :mod:`course_utils.labelling_widget`.
"""
from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .labelling_data import NONE, Pool
from .protonet import protonet_logits

__all__ = ["NONE", "UNLABELLED", "Proposal", "LabellingSession", "nearest_prototype", "class_means",
           "probabilities", "random", "least_margin", "entropy", "kcenter", "ACQUISITIONS",
           "pool_accuracy", "simulate", "clicks_to_reach", "labels_saved"]

UNLABELLED = -2  # labels() value of an item that has no label yet
SOURCES = ("auto", "human", "none-of-these")

Scorer = Callable[[Tensor, Tensor, int, Tensor], Tensor]


# ---------------------------------------------------------------------------------------- scoring
def class_means(z: Tensor, y: Tensor, n_way: int) -> Tensor:
    """Prototypes c_n = mean of the rows of ``z`` with label n: ``(S, D), (S,) -> (N, D)``.

    Any order and any number per class (human answers make classes unequal); every class needs a row.
    """
    counts = torch.bincount(y, minlength=n_way)[:n_way]
    if (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"Class(es) {missing} have no labelled example, so no prototype; give each "
                         "class at least one support.")
    c = torch.zeros(n_way, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, y, z)
    return c / counts.unsqueeze(1).to(z.dtype)


def nearest_prototype(support_z: Tensor, support_y: Tensor, n_way: int, z: Tensor) -> Tensor:
    """The default scorer: ProtoNet logits -||z - c_n||^2 against the class means, ``(P, N)``."""
    return protonet_logits(z, class_means(support_z, support_y, n_way))


from .confidence import probabilities  # noqa: E402  p = softmax(logits / kappa) over the classes (dim 1)


# ------------------------------------------------------------------------------------ acquisition
# Each: (p (P, N), z (P, D), labelled_mask (P,) bool, generator) -> order, a (U,) long tensor of the
# U items with labelled_mask False, the one to ask about first. ``limit`` returns only the first few;
# ``support_z`` (only kcenter uses it) are labelled embeddings outside the pool.
def _candidates(labelled_mask: Tensor) -> Tensor:
    return (~labelled_mask).nonzero().flatten()


def _by_score(score: Tensor, labelled_mask: Tensor, limit: int | None) -> Tensor:
    """Candidates sorted by increasing ``score`` (ties: lower index first)."""
    cand = _candidates(labelled_mask)
    order = cand[torch.sort(score[cand], stable=True).indices]
    return order if limit is None else order[:limit]


def random(p: Tensor, z: Tensor, labelled_mask: Tensor, generator: torch.Generator | None = None, *,
           limit: int | None = None, support_z: Tensor | None = None) -> Tensor:
    """A uniformly random order of the unlabelled items (the baseline)."""
    cand = _candidates(labelled_mask)
    perm = torch.randperm(cand.numel(), generator=generator).to(cand.device)
    order = cand[perm]
    return order if limit is None else order[:limit]


def least_margin(p: Tensor, z: Tensor, labelled_mask: Tensor, generator: torch.Generator | None = None, *,
                 limit: int | None = None, support_z: Tensor | None = None) -> Tensor:
    """Smallest margin p_(1) - p_(2) first: the items the model is torn between two classes on."""
    top2 = p.topk(2, dim=1).values
    return _by_score(top2[:, 0] - top2[:, 1], labelled_mask, limit)


def entropy(p: Tensor, z: Tensor, labelled_mask: Tensor, generator: torch.Generator | None = None, *,
            limit: int | None = None, support_z: Tensor | None = None) -> Tensor:
    """Highest entropy -sum_n p_n log p_n first."""
    h = -(p * p.clamp_min(1e-30).log()).sum(dim=1)
    return _by_score(-h, labelled_mask, limit)


def kcenter(p: Tensor, z: Tensor, labelled_mask: Tensor, generator: torch.Generator | None = None, *,
            limit: int | None = None, support_z: Tensor | None = None) -> Tensor:
    """k-center greedy (Sener & Savarese 2018): repeatedly the item farthest (squared Euclidean, in
    embedding space) from everything labelled so far: the pool items in ``labelled_mask``, the
    ``support_z`` rows, and the items already picked. With nothing labelled the first pick is random.
    """
    cand = _candidates(labelled_mask)
    n = cand.numel() if limit is None else min(limit, cand.numel())
    centres = z[labelled_mask]
    if support_z is not None:
        centres = torch.cat([support_z.to(z), centres])
    zc = z[cand]
    picked: list[int] = []
    if centres.shape[0]:
        nearest = torch.cdist(zc, centres).pow(2).min(dim=1).values
    elif n:
        picked.append(int(torch.randint(cand.numel(), (1,), generator=generator)))
        nearest = (zc - zc[picked[0]]).pow(2).sum(-1)
        nearest[picked[0]] = -math.inf
    while len(picked) < n:
        j = int(nearest.argmax())  # the first index among ties
        picked.append(j)
        nearest = torch.minimum(nearest, (zc - zc[j]).pow(2).sum(-1))
        nearest[j] = -math.inf
    return cand[torch.tensor(picked, dtype=torch.long, device=cand.device)]


ACQUISITIONS: dict[str, Callable[..., Tensor]] = {
    "random": random, "least_margin": least_margin, "entropy": entropy, "kcenter": kcenter}


# ---------------------------------------------------------------------------------------- session
@dataclass
class Proposal:
    """The item to label next and the model's top guesses (at most 3, most probable first)."""

    index: int
    classes: list[int]
    names: list[str]
    probs: list[float]


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def _check_inputs(pool_z, support_z, support_y, class_names) -> None:
    for what, t in (("pool_z", pool_z), ("support_z", support_z)):
        if not isinstance(t, Tensor) or t.dim() != 2:
            raise ValueError(f"{what} must be a 2-D tensor (rows, D) of embeddings, got {_shape(t)}. "
                             "Embed the images first (labelling_data.embed) and flatten to (rows, D).")
    if pool_z.shape[0] == 0:
        raise ValueError("pool_z is empty: there is nothing to label.")
    if pool_z.shape[1] != support_z.shape[1]:
        raise ValueError(f"pool_z has {pool_z.shape[1]}-d embeddings but support_z {support_z.shape[1]}-d; "
                         "embed both with the same network.")
    if not isinstance(support_y, Tensor) or support_y.dim() != 1 or support_y.shape[0] != support_z.shape[0]:
        raise ValueError(f"support_y must be a 1-D tensor with one label per support row "
                         f"({support_z.shape[0]}), got {_shape(support_y)}.")
    if support_y.is_floating_point() or support_y.dtype == torch.bool:
        raise ValueError(f"support_y must hold integer class indices, got dtype {support_y.dtype}.")
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise ValueError("class_names must be a list with one name per class.")
    n = len(class_names)
    if n < 2:
        raise ValueError(f"Labelling needs at least 2 classes, got {n} class name(s).")
    if support_y.numel() and (int(support_y.min()) < 0 or int(support_y.max()) >= n):
        raise ValueError(f"support_y holds labels {int(support_y.min())}..{int(support_y.max())}, but "
                         f"class_names names {n} classes (labels 0..{n - 1}); give one name per class.")
    counts = torch.bincount(support_y, minlength=n)
    if (counts == 0).any():
        missing = [class_names[i] for i in (counts == 0).nonzero().flatten().tolist()]
        raise ValueError(f"Class(es) {missing} have no support example; label at least one example of "
                         f"every class (give one name per class in the support, not {n}).")


class LabellingSession:
    """One person labelling one pool, helped by a few-shot model (plain Python, no widgets).

    Per item the session holds a label (a class, ``NONE`` for "none of these", or none yet) and its
    source: ``"human"``, ``"none-of-these"`` (a human said no class fits), ``"auto"`` (accepted from
    the model by :meth:`accept_above`) or ``None``.

    Semantics:

    - :meth:`propose` offers the first unlabelled, unskipped item in the acquisition order (the same
      one until something changes); skipped items come back only when nothing else is left.
    - :meth:`answer` labels the proposed item (or ``index``) as a human: it may replace an auto label
      or an earlier human answer. A class answer becomes a support; a "none of these" answer does not.
      Every ``retrain_every`` answers (0 = never automatically) the model retrains.
    - :meth:`retrain` recomputes the prototypes from the human labels (optionally refined by
      self-training) and re-scores the pool. Auto labels follow the new model: an auto-labelled item
      takes the new argmax if its max probability still reaches the tau it was accepted at, else its
      auto label is withdrawn and the item goes back into the queue (so it may be proposed again).
    - :meth:`undo` restores the session exactly as it was before the last answer, skip or
      accept_above (labels, sources, skips, the model's scores and the proposed item): after undoing
      an answer the same item is proposed again.
    - :meth:`stats`: ``human_clicks`` counts the human answers standing (class or none-of-these; an
      undone answer no longer counts); ``auto_labelled`` the auto labels; ``coverage`` =
      auto_labelled / P (the share the model labelled, as in selective classification);
      ``estimated_precision`` the mean calibrated max probability of the auto labels (nan if none);
      ``remaining`` the items with no label at all (skipped ones included); ``skipped`` those of them
      skipped.

    ``scorer(support_z, support_y, n_way, z) -> logits (P, N)`` replaces nearest-prototype scoring
    (e.g. chapter 00's linear head; pixel nearest-prototype is this session on flattened pixels);
    self-training refines prototypes and works only with the default scorer. ``z_per_class`` and
    ``rounds`` are passed to ``self_train``.
    """

    def __init__(self, pool_z: Tensor, support_z: Tensor, support_y: Tensor, class_names: Sequence[str],
                 temperature: float = 1.0, tau: float = 0.9, acquisition: str | Callable = "least_margin",
                 retrain_every: int = 1, self_training: bool = False, seed: int = 0,
                 scorer: Scorer | None = None, z_per_class: int = 5, rounds: int = 3):
        _check_inputs(pool_z, support_z, support_y, class_names)
        if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
        _check_tau(tau)
        if isinstance(acquisition, str):
            if acquisition not in ACQUISITIONS:
                raise ValueError(f"Unknown acquisition {acquisition!r}; use one of {sorted(ACQUISITIONS)} "
                                 "or a function (p, z, labelled_mask, generator) -> order.")
            acquisition = ACQUISITIONS[acquisition]
        elif not callable(acquisition):
            raise ValueError("acquisition must be a name or a function (p, z, labelled_mask, generator).")
        self._acq_kwargs = _accepts(acquisition, ("limit", "support_z"))
        if isinstance(retrain_every, bool) or not isinstance(retrain_every, int) or retrain_every < 0:
            raise ValueError("retrain_every must be an int >= 0 (0 = retrain only when asked), "
                             f"got {retrain_every!r}.")
        if self_training and scorer is not None:
            raise ValueError("self_training refines ProtoNet prototypes, so it needs the default scorer; "
                             "pass scorer=None or self_training=False.")
        if scorer is not None and not callable(scorer):
            raise ValueError("scorer must be a function (support_z, support_y, n_way, z) -> logits.")
        self.pool_z = pool_z if pool_z.is_floating_point() else pool_z.float()
        self.device = self.pool_z.device
        self.support_z = support_z.to(self.pool_z)
        self.support_y = support_y.to(self.device, torch.long)
        self.class_names = [str(n) for n in class_names]
        self.n_way = len(self.class_names)
        self.temperature, self.tau = float(temperature), float(tau)
        self.acquisition, self.retrain_every = acquisition, retrain_every
        self.self_training, self.scorer = bool(self_training), scorer
        self.z_per_class, self.rounds = z_per_class, rounds
        self.generator = torch.Generator().manual_seed(seed)
        P = self.pool_z.shape[0]
        self._label: list[int | None] = [None] * P
        self._source: list[str | None] = [None] * P
        self._accepted_at: list[float | None] = [None] * P  # tau of each auto label
        self._skipped: dict[int, None] = {}  # an ordered set: oldest skip first
        self._proposed: int | None = None
        self._since_retrain = 0
        self._history: list[dict] = []
        self.prototypes: Tensor | None = None
        self.retrain()

    # -- state -------------------------------------------------------------------------------
    @property
    def pool_size(self) -> int:
        return len(self._label)

    def _snapshot(self) -> dict:
        return dict(label=list(self._label), source=list(self._source), accepted_at=list(self._accepted_at),
                    skipped=dict(self._skipped), proposed=self._proposed, since=self._since_retrain,
                    logits=self.logits, p=self.p, prototypes=self.prototypes)

    def _restore(self, s: dict) -> None:
        self._label, self._source, self._accepted_at = s["label"], s["source"], s["accepted_at"]
        self._skipped, self._proposed, self._since_retrain = s["skipped"], s["proposed"], s["since"]
        self.logits, self.p, self.prototypes = s["logits"], s["p"], s["prototypes"]

    def labels(self) -> Tensor:
        """``(P,)`` long: the class of a human or auto label, -1 none-of-these, -2 unlabelled."""
        return torch.tensor([UNLABELLED if v is None else v for v in self._label], dtype=torch.long,
                            device=self.device)

    def sources(self) -> list[str | None]:
        """Per item ``"human"``, ``"none-of-these"``, ``"auto"`` or ``None``."""
        return list(self._source)

    def predictions(self) -> Tensor:
        """``(P,)`` the model's argmax class for every item (whatever its label)."""
        return self.p.argmax(dim=1)

    def final_labels(self) -> Tensor:
        """``(P,)``: the item's label where it has one (human, none-of-these, auto), else the argmax."""
        lab = self.labels()
        return torch.where(lab == UNLABELLED, self.predictions(), lab)

    def _human_supports(self) -> tuple[Tensor, Tensor]:
        idx = [i for i, s in enumerate(self._source) if s == "human"]
        z = torch.cat([self.support_z, self.pool_z[idx]])
        y = torch.cat([self.support_y, torch.tensor([self._label[i] for i in idx], dtype=torch.long,
                                                    device=self.device)])
        order = torch.sort(y, stable=True).indices  # class-major, as the course's support sets are
        return z[order], y[order]

    # -- model -------------------------------------------------------------------------------
    def retrain(self) -> None:
        """Prototypes from the human labels (supports + class answers), optionally refined by
        self-training on the items no human has answered; re-score the pool; refresh auto labels."""
        sz, sy = self._human_supports()
        if self.scorer is not None:
            logits = self.scorer(sz, sy, self.n_way, self.pool_z)
            if not isinstance(logits, Tensor) or tuple(logits.shape) != (self.pool_size, self.n_way):
                raise ValueError(f"scorer must return logits of shape (P, N) = ({self.pool_size}, "
                                 f"{self.n_way}), got {_shape(logits)}.")
            self.prototypes = None
        else:
            if self.self_training:
                c = self._self_trained_prototypes(sz, sy)
            else:
                c = class_means(sz, sy, self.n_way)
            self.prototypes = c
            logits = protonet_logits(self.pool_z, c)
        self.logits = logits
        self.p = probabilities(logits, self.temperature)
        self._since_retrain = 0
        self._proposed = None
        conf, pred = self.p.max(dim=1)
        for i, s in enumerate(self._source):
            if s == "auto":
                if float(conf[i]) >= self._accepted_at[i]:
                    self._label[i] = int(pred[i])
                else:
                    self._label[i], self._source[i], self._accepted_at[i] = None, None, None

    def _self_trained_prototypes(self, sz: Tensor, sy: Tensor) -> Tensor:
        from .self_training import self_train  # optional hook: imported only when asked for

        pool_idx = [i for i, s in enumerate(self._source) if s not in ("human", "none-of-these")]
        if not pool_idx:
            return class_means(sz, sy, self.n_way)
        result = self_train(sz, sy, self.pool_z[pool_idx], self.n_way, self.tau, self.z_per_class,
                            self.rounds, temperature=self.temperature, anchored=True)
        # ``final_prototypes`` (supports + the last selection) where the result has them; else the
        # last round's (which scored that round, so they lag one selection behind)
        c = getattr(result, "final_prototypes", None)
        return (result.prototypes[-1] if c is None else c).to(self.pool_z)

    # -- the loop ----------------------------------------------------------------------------
    def _next(self) -> int | None:
        fresh = [v is None and i not in self._skipped for i, v in enumerate(self._label)]
        if any(fresh):
            mask = ~torch.tensor(fresh, dtype=torch.bool, device=self.device)
            extra = dict(limit=1, support_z=self.support_z)
            order = self.acquisition(self.p, self.pool_z, mask, self.generator,
                                     **{k: v for k, v in extra.items() if k in self._acq_kwargs})
            return int(order[0])
        # only skipped items are left: they come back, the longest-skipped first
        return next((i for i in self._skipped if self._label[i] is None), None)

    def propose(self) -> Proposal | None:
        """The next item to label and the model's top-3 guesses; ``None`` when every item has a label."""
        if self._proposed is None:
            self._proposed = self._next()
            if self._proposed is None:
                return None
        i = self._proposed
        probs, cls = self.p[i].topk(min(3, self.n_way))
        cls = cls.tolist()
        return Proposal(i, cls, [self.class_names[c] for c in cls], probs.tolist())

    def answer(self, label: int | None, index: int | None = None) -> None:
        """The human's answer for the proposed item (or for ``index``): a class 0..N-1, or ``None``
        (or ``NONE`` = -1) for "none of these"."""
        if label is not None:
            try:
                if isinstance(label, bool):
                    raise TypeError
                label = operator.index(label)  # int, numpy or 0-d torch integer
            except (TypeError, RuntimeError):
                raise ValueError(f"label must be a class index 0..{self.n_way - 1} or None (none of these), "
                                 f"got {label!r}.") from None
        if label is not None and label != NONE and not 0 <= label < self.n_way:
            raise ValueError(f"label {label} is out of range: use a class index 0..{self.n_way - 1}, or "
                             "None for none of these.")
        if index is None:
            if self._proposed is None:
                raise ValueError("Nothing is proposed: call propose() first (or pass index=).")
            index = self._proposed
        elif not 0 <= index < self.pool_size:
            raise ValueError(f"index {index} is out of range 0..{self.pool_size - 1}.")
        self._history.append(self._snapshot())
        none = label is None or label == NONE
        self._label[index] = NONE if none else label
        self._source[index] = "none-of-these" if none else "human"
        self._accepted_at[index] = None
        self._skipped.pop(index, None)
        self._proposed = None
        self._since_retrain += 1
        if self.retrain_every and self._since_retrain >= self.retrain_every:
            self.retrain()

    def skip(self) -> None:
        """Put the proposed item aside: not asked again until nothing else is left, never auto-labelled."""
        if self._proposed is None:
            raise ValueError("Nothing is proposed to skip: call propose() first.")
        self._history.append(self._snapshot())
        self._skipped.pop(self._proposed, None)  # a second skip sends it to the back again
        self._skipped[self._proposed] = None
        self._proposed = None

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    def undo(self) -> None:
        """Go back to the state before the last answer, skip or accept_above."""
        if not self._history:
            raise ValueError("Nothing to undo: no answer, skip or accept_above has been made yet.")
        self._restore(self._history.pop())

    def count_above(self, tau: float) -> int:
        """How many items :meth:`accept_above` would label now."""
        return len(self._above(tau))

    def _above(self, tau: float) -> list[int]:
        _check_tau(tau)
        conf = self.p.max(dim=1).values.tolist()
        return [i for i, v in enumerate(self._label)
                if v is None and i not in self._skipped and conf[i] >= tau]

    def accept_above(self, tau: float | None = None) -> int:
        """Auto-label every unlabelled, unskipped item whose max probability is >= tau (default: the
        session's tau) with the model's argmax, source ``"auto"``. Returns how many were labelled."""
        tau = self.tau if tau is None else tau
        idx = self._above(tau)
        if not idx:
            return 0
        self._history.append(self._snapshot())
        pred = self.predictions().tolist()
        for i in idx:
            self._label[i], self._source[i], self._accepted_at[i] = pred[i], "auto", float(tau)
        self._proposed = None
        return len(idx)

    def stats(self) -> dict:
        """Counters: see the class docstring. ``estimated_precision`` is an estimate from the model's
        probabilities, without ground truth: it is only as good as their calibration (fit T on meta-val)."""
        auto = [i for i, s in enumerate(self._source) if s == "auto"]
        conf = self.p.max(dim=1).values
        est = float(conf[auto].mean()) if auto else float("nan")
        unl = [i for i, v in enumerate(self._label) if v is None]
        return dict(auto_labelled=len(auto),
                    human_clicks=sum(s in ("human", "none-of-these") for s in self._source),
                    estimated_precision=est, coverage=len(auto) / self.pool_size, remaining=len(unl),
                    skipped=sum(i in self._skipped for i in unl),
                    none_of_these=sum(s == "none-of-these" for s in self._source), pool_size=self.pool_size)

    def __repr__(self) -> str:
        s = self.stats()
        return (f"LabellingSession({self.pool_size} items, {self.n_way} classes: {s['human_clicks']} human, "
                f"{s['auto_labelled']} auto, {s['remaining']} left)")


def _accepts(fn: Callable, names: tuple[str, ...]) -> set[str]:
    """Which of ``names`` a function takes as keywords (all of them if it takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(q.kind is q.VAR_KEYWORD for q in params):
        return set(names)
    return {q.name for q in params if q.name in names and q.kind is not q.POSITIONAL_ONLY}


def _check_tau(tau) -> None:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau is a probability threshold and must lie in [0, 1], got {tau!r}.")


# ------------------------------------------------------------------------------------- simulation
def pool_accuracy(session: LabellingSession, pool_y: Tensor) -> float:
    """Share of pool items whose final label (theirs if labelled, else the model's argmax) is the
    truth; a distractor (truth ``NONE``) is right only when labelled none-of-these."""
    if not isinstance(pool_y, Tensor) or pool_y.shape != (session.pool_size,):
        raise ValueError(f"pool_y must be a (P,) = ({session.pool_size},) tensor of true labels, "
                         f"got {_shape(pool_y)}.")
    return float((session.final_labels() == pool_y.to(session.device)).float().mean())


def simulate(pool: Pool, acquisition: str | Callable = "least_margin", clicks: int | None = None,
             self_training: bool = False, temperature: float = 1.0, tau: float = 0.9,
             retrain_every: int = 1, seed: int = 0, scorer: Scorer | None = None,
             z_per_class: int = 5, rounds: int = 3) -> dict:
    """A simulated human (an oracle answering from ``pool.pool_y``; ``None`` for a distractor) gives
    up to ``clicks`` answers (default: until every item is labelled) in the acquisition order.

    Returns ``{"clicks": [0, 1, ..], "pool_accuracy": [..], "pool_size": P, ...}``: the pool accuracy
    (:func:`pool_accuracy`) before any click and after each.
    """
    if clicks is not None and (isinstance(clicks, bool) or not isinstance(clicks, int) or clicks < 0):
        raise ValueError(f"clicks must be an int >= 0 (or None: until the pool is labelled), got {clicks!r}.")
    names = list(pool.classes) if len(pool.classes) == pool.n_way else [str(n) for n in range(pool.n_way)]
    s = LabellingSession(pool.pool_z, pool.support_z, pool.support_y, names, temperature=temperature,
                         tau=tau, acquisition=acquisition, retrain_every=retrain_every,
                         self_training=self_training, seed=seed, scorer=scorer, z_per_class=z_per_class,
                         rounds=rounds)
    truth = pool.pool_y.to(s.device)
    budget = s.pool_size if clicks is None else clicks
    curve = [pool_accuracy(s, truth)]
    for _ in range(budget):
        prop = s.propose()
        if prop is None:
            break
        y = int(truth[prop.index])
        s.answer(None if y == NONE else y)
        curve.append(pool_accuracy(s, truth))
    name = acquisition if isinstance(acquisition, str) else getattr(acquisition, "__name__", "custom")
    return {"clicks": list(range(len(curve))), "pool_accuracy": curve, "pool_size": s.pool_size,
            "acquisition": name, "self_training": bool(self_training)}


def clicks_to_reach(curve: dict | Sequence[float], target: float) -> int | None:
    """The first click count at which pool accuracy >= ``target``; ``None`` if it never does.

    ``curve``: :func:`simulate`'s dict, or a list of accuracies indexed by clicks.
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target is an accuracy and must lie in [0, 1], got {target!r}.")
    if isinstance(curve, dict):
        clicks, acc = curve["clicks"], curve["pool_accuracy"]
    else:
        acc = list(curve)
        clicks = list(range(len(acc)))
    for c, a in zip(clicks, acc):
        if a >= target:
            return int(c)
    return None


def labels_saved(clicks: int | None, pool_size: int) -> float | None:
    """1 - clicks / P: the share of the pool nobody had to label (``None`` if the target was never met)."""
    if clicks is None:
        return None
    if pool_size <= 0 or not 0 <= clicks <= pool_size:
        raise ValueError(f"Need 0 <= clicks <= pool_size and pool_size > 0, got {clicks} and {pool_size}.")
    return 1.0 - clicks / pool_size
