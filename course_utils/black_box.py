"""Model-based ("black-box") meta-learning: a sequence model that learns from the sequence it reads.

Santoro, A., Bartunov, S., Botvinick, M., Wierstra, D. & Lillicrap, T. (2016). Meta-Learning with
Memory-Augmented Neural Networks (MANN). ICML 2016.
Mishra, N., Rohaninejad, M., Chen, X. & Abbeel, P. (2018). A Simple Neural Attentive Meta-Learner
(SNAIL). ICLR 2018. arXiv:1707.03141.
Vaswani, A. et al. (2017). Attention Is All You Need. NeurIPS 2017. arXiv:1706.03762.
Stanford CS330 (Deep Multi-Task and Meta Learning), homework 1: an LSTM reads the support set.

No inner loop and no hand-made classifier: a network h_theta reads a task as a sequence and its
output at a position is the prediction for that position's input. Whatever learning happens inside
one task happens in the network's state (LSTM memory, attention over the past). With
z_t = f_theta(x_t) the embedded input and e(y) the one-hot vector of label y (e(none) = 0):

    MANN (Santoro et al.):  input_t = [z_t, e(y_{t-1})],  p(y_t | z_1..z_t, y_1..y_{t-1}) = h_theta(input_1..input_t)_t

    CS330 / episode layout: input = [z_s, e(y_s)] for every support item s (in random order),
                            then [z_q, 0] for every query q; predict y_q at the query positions only.

The objective is the usual episodic cross-entropy, min_theta E_tasks [ -sum_{t in P} log p(y_t | ...) ],
with P every position (MANN: each label is predicted before it is shown) or the query positions
(episode layout). h_theta is causal: the output at t depends on positions <= t only (an LSTM by
construction; a transformer through :func:`causal_mask`, as SNAIL's causal attention).

Two traps this module guards against:
- *The label leak.* [z_t, e(y_t)] (``build_sequence(..., shift=False)``) shows the answer with the
  question: the network learns to copy it, trains to 100% and has learnt nothing. MANN's offset
  ``shift=True`` shows y_t only at step t + 1.
- *Memorising classes.* If a class always has the same label, the network can learn the class, not
  how to learn it. :func:`permute_labels` draws a fresh class-to-label map per episode
  (:func:`black_box_loss` does it every training step); :func:`santoro_episode` draws its own.
  Order is a label too: supports in class-major order (0,0,1,1,...) would let the network read a
  label off the position, so :func:`episode_sequence` shuffles them, and
  :meth:`BlackBoxLearner.forward` reads each query on its own (or shuffles the queries).

Per-instance accuracy (Santoro et al., Table 1): in a MANN episode each class appears ``instances``
times; accuracy at a class's 1st appearance cannot use that class's label (it was never shown), at
the 2nd it can. The first is *not* bounded by chance 1/N: a network can guess among the labels not
shown yet, and the k-th new class (k = 0..N-1) has N - k of them, so the best first-instance
accuracy is mean_k 1/(N - k) (:func:`first_instance_ceiling`; 45.7% for N = 5: compare it with the
first-instance column of Santoro et al.'s Table 1). Only the very first item of an episode is at chance.

Everything works on the device of its inputs; generators are CPU ``torch.Generator`` s (random
orders are drawn on the CPU, then moved).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .episodes import ClassSet, Episode

__all__ = ["permute_labels", "build_sequence", "episode_sequence", "causal_mask", "BlackBoxLSTM",
           "BlackBoxTransformer", "sequence_loss", "BlackBoxLearner", "black_box_loss",
           "santoro_episode", "santoro_batch", "santoro_loss", "per_instance_accuracy",
           "first_instance_ceiling"]

QUERY_MODES = ("each", "together")
IGNORE = -100  # targets at positions whose label is unknown (torch's cross-entropy ignore_index)


# ----------------------------------------------------------------------------- checks

def _check_int(name: str, v: Any, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")


def _shape(t: Any) -> Any:
    return tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__


def _check_labels(y: Any, n_way: int, what: str) -> None:
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{what} must be an integer tensor of labels 0..{n_way - 1}, got "
                         f"{y.dtype if isinstance(y, Tensor) else type(y).__name__}; use .long().")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_way):
        raise ValueError(f"{what} holds labels {int(y.min())}..{int(y.max())}, but an {n_way}-way task has "
                         f"labels 0..{n_way - 1}. Relabel to 0..N-1 or check n_way.")


def _check_features(z: Any, what: str, dims: tuple[int, ...]) -> None:
    if not isinstance(z, Tensor) or z.dim() not in dims or not z.dtype.is_floating_point:
        want = " or ".join(["(T, D)", "(B, T, D)"][d - 2] for d in dims)
        raise ValueError(f"{what} must be a float tensor {want}, got {_shape(z)}"
                         f"{' of ' + str(z.dtype) if isinstance(z, Tensor) else ''}. "
                         "Flatten each item's features to one vector D first.")


def _randperm(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randperm(n, generator=generator).to(device)


def _single(episode: Any) -> None:
    if not isinstance(episode, Episode):
        raise ValueError(f"Expected an Episode (course_utils.episodes.sample_episode), got "
                         f"{type(episode).__name__}.")
    if episode.batched:
        raise ValueError("This takes one episode at a time, got a meta-batch; loop over "
                         "episode.task(b) for b in range(B).")


# ----------------------------------------------------------------------------- labels and sequences

def _relabel(episode: Episode, perm: Tensor) -> tuple[Episode, Tensor, Tensor]:
    """Episode with label c renamed perm[c], support and query sorted by the new label (stable),
    plus the row orders used: ``new.support_x[i] = episode.support_x[s_order[i]]`` (same for queries)."""
    n = episode.n_way
    _check_labels(episode.support_y, n, "episode.support_y")
    _check_labels(episode.query_y, n, "episode.query_y")
    perm = perm.to(episode.support_y.device)
    ys, yq = perm[episode.support_y], perm.to(episode.query_y.device)[episode.query_y]
    s_order = torch.sort(ys, stable=True).indices
    q_order = torch.sort(yq, stable=True).indices
    classes = list(episode.classes)
    if len(classes) == n:
        renamed = [None] * n
        for c, new in enumerate(perm.tolist()):
            renamed[new] = classes[c]
        classes = renamed
    out = Episode(episode.support_x[s_order], ys[s_order], episode.query_x[q_order], yq[q_order],
                  n, episode.k_shot, episode.q_query, classes)
    return out, s_order, q_order


def permute_labels(episode: Episode, generator: torch.Generator | None = None) -> Episode:
    """The same task under a fresh random class-to-label map: label c becomes perm[c].

    Support and query are relabelled with the same permutation and ``classes`` is reordered to
    match (``new.classes[perm[c]] == episode.classes[c]``). Rows are re-sorted by the new label
    (stable), so a class-major episode stays class-major, as :func:`sample_episode` makes it.
    """
    _single(episode)
    perm = torch.randperm(episode.n_way, generator=generator)
    return _relabel(episode, perm)[0]


def _onehot(y: Tensor, n_way: int, like: Tensor) -> Tensor:
    return F.one_hot(y.long(), n_way).to(like.dtype)


def build_sequence(x: Tensor, y: Tensor, n_way: int, shift: bool = True) -> tuple[Tensor, Tensor]:
    """MANN's input sequence: ``inputs[t] = [x_t, e(y_{t-1})]`` with e(y_{-1}) = 0; ``targets = y``.

    ``x``: features ``(T, D)`` or a batch ``(B, T, D)``; ``y``: labels ``(T,)`` / ``(B, T)`` in 0..N-1.
    Returns ``inputs (T, D + N)`` (or ``(B, T, D + N)``) and ``targets`` (``y`` itself), so the
    network predicts y_t before it is shown. ``shift=False`` gives ``[x_t, e(y_t)]``: the label leak
    (the answer is in the input), kept only to demonstrate what goes wrong.
    """
    _check_int("n_way", n_way, 1)
    _check_features(x, "x", (2, 3))
    if not isinstance(y, Tensor) or tuple(y.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"y must have one label per item: shape {tuple(x.shape[:-1])} for x of shape "
                         f"{tuple(x.shape)}, got {_shape(y)}.")
    if x.shape[-2] == 0:
        raise ValueError("The sequence is empty (T = 0); give at least one item.")
    _check_labels(y, n_way, "y")
    e = _onehot(y.to(x.device), n_way, x)
    if shift:
        e = torch.cat([torch.zeros_like(e[..., :1, :]), e[..., :-1, :]], dim=-2)
    return torch.cat([x, e], dim=-1), y


def episode_sequence(z_support: Tensor, y_support: Tensor, z_query: Tensor, n_way: int,
                     y_query: Tensor | None = None, generator: torch.Generator | None = None
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """CS330's layout of one episode: ``[z_s, e(y_s)]`` for each support item, then ``[z_q, 0]``.

    The supports are the training examples, so their *own* labels are visible; they are shuffled
    with ``generator`` (class-major order would give the labels away by position). The queries
    follow in the order given, with a zero label vector, so row i of ``logits[predict_mask]`` is
    ``z_query[i]``: shuffle them first if their order carries labels (class-major query sets do;
    :meth:`BlackBoxLearner.forward` does). Under causal models a query sees the supports and the
    queries before it (their features, never their labels).

    ``z_support (N*K, D)``, ``y_support (N*K,)``, ``z_query (M, D)``. Returns ``inputs (N*K + M, D + N)``,
    ``targets (N*K + M,)`` (the shuffled support labels, then ``y_query``, or -100, torch's
    ``ignore_index``, where no query labels are given) and ``predict_mask`` (bool, True at the M
    query positions).
    """
    _check_int("n_way", n_way, 1)
    _check_features(z_support, "z_support", (2,))
    _check_features(z_query, "z_query", (2,))
    if z_support.shape[1] != z_query.shape[1]:
        raise ValueError(f"Supports have {z_support.shape[1]}-d features but queries {z_query.shape[1]}-d; "
                         "embed both with the same network.")
    if z_support.shape[0] == 0 or z_query.shape[0] == 0:
        raise ValueError(f"An episode sequence needs at least one support and one query item, got "
                         f"{z_support.shape[0]} and {z_query.shape[0]}.")
    if not isinstance(y_support, Tensor) or tuple(y_support.shape) != (z_support.shape[0],):
        raise ValueError(f"y_support must have one label per support row: shape ({z_support.shape[0]},), "
                         f"got {_shape(y_support)}.")
    _check_labels(y_support, n_way, "y_support")
    device, m = z_support.device, z_query.shape[0]
    if y_query is None:
        y_query = torch.full((m,), IGNORE, dtype=torch.long, device=device)
    else:
        if not isinstance(y_query, Tensor) or tuple(y_query.shape) != (m,):
            raise ValueError(f"y_query must have one label per query row: shape ({m},), got {_shape(y_query)}.")
        _check_labels(y_query, n_way, "y_query")
    order = _randperm(z_support.shape[0], generator, device)
    ys = y_support.to(device)[order]
    support = torch.cat([z_support[order], _onehot(ys, n_way, z_support)], dim=1)
    query = torch.cat([z_query.to(device), z_support.new_zeros(m, n_way)], dim=1)
    targets = torch.cat([ys.long(), y_query.to(device).long()])
    mask = torch.cat([torch.zeros(len(ys), dtype=torch.bool, device=device),
                      torch.ones(m, dtype=torch.bool, device=device)])
    return torch.cat([support, query]), targets, mask


# ----------------------------------------------------------------------------- sequence learners

def causal_mask(T: int, device: torch.device | str | None = None) -> Tensor:
    """``(T, T)`` bool attention mask, True where attention is *forbidden* (PyTorch's convention):
    ``mask[t, s] = s > t``, so position t attends only to positions s <= t."""
    _check_int("T", T, 1)
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(1)


def _as_batch(inputs: Any, width: int, who: str) -> tuple[Tensor, bool]:
    if not isinstance(inputs, Tensor) or inputs.dim() not in (2, 3) or not inputs.dtype.is_floating_point:
        raise ValueError(f"{who} takes float inputs (B, T, D + N) or (T, D + N), got {_shape(inputs)}.")
    if inputs.shape[-1] != width:
        raise ValueError(f"{who} expects {width} input features per step (in_dim + n_way), got "
                         f"{inputs.shape[-1]}; build them with build_sequence / episode_sequence and "
                         "the same n_way, and set in_dim to the encoder's embedding_dim.")
    if inputs.shape[-2] == 0:
        raise ValueError(f"{who} got an empty sequence (T = 0).")
    return (inputs, False) if inputs.dim() == 3 else (inputs.unsqueeze(0), True)


class BlackBoxLSTM(nn.Module):
    """LSTM over ``[z_t, e(label)]`` steps and a linear head: ``(B, T, D + N) -> logits (B, T, N)``
    (CS330 HW1; MANN's LSTM baseline). ``in_dim`` is D, the feature size without the label part."""

    def __init__(self, in_dim: int, n_way: int, hidden: int = 128, layers: int = 1):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("n_way", n_way), ("hidden", hidden), ("layers", layers)):
            _check_int(name, v, 1)
        self.in_dim, self.n_way = in_dim, n_way
        self.lstm = nn.LSTM(in_dim + n_way, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, n_way)

    def forward(self, inputs: Tensor) -> Tensor:
        h, single = _as_batch(inputs, self.in_dim + self.n_way, "BlackBoxLSTM")
        logits = self.head(self.lstm(h)[0])
        return logits[0] if single else logits


class BlackBoxTransformer(nn.Module):
    """A small causal transformer (SNAIL's causal attention without its temporal convolutions).

    Linear embedding of ``[z_t, e(label)]`` to ``d_model`` plus a learned positional embedding
    (``max_len`` positions; in the episode layout positions carry little, since the supports are
    shuffled, but MANN sequences need "the step before me" to pair an item with its late label;
    initialised small, std 0.02 as in GPT-2: with ``nn.Embedding``'s default N(0, 1) the positions
    dominate every attention score and training sits on a plateau for many times longer),
    ``layers`` pre-norm ``nn.TransformerEncoderLayer`` s under :func:`causal_mask`, and a linear head:
    ``(B, T, D + N) -> logits (B, T, N)``. ``dropout`` defaults to 0: tasks are tiny and the episode
    stream is the regulariser.
    """

    def __init__(self, in_dim: int, n_way: int, d_model: int = 64, heads: int = 4, layers: int = 2,
                 max_len: int = 256, dropout: float = 0.0):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("n_way", n_way), ("d_model", d_model), ("heads", heads),
                        ("layers", layers), ("max_len", max_len)):
            _check_int(name, v, 1)
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads}).")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        self.in_dim, self.n_way, self.max_len = in_dim, n_way, max_len
        self.embed = nn.Linear(in_dim + n_way, d_model)
        self.position = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.position.weight, std=0.02)  # nn.Embedding's N(0, 1) drowns the features
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model),
                                             enable_nested_tensor=False)
        self.head = nn.Linear(d_model, n_way)

    def forward(self, inputs: Tensor) -> Tensor:
        h, single = _as_batch(inputs, self.in_dim + self.n_way, "BlackBoxTransformer")
        T = h.shape[1]
        if T > self.max_len:
            raise ValueError(f"The sequence has {T} steps but this transformer has positions for "
                             f"max_len = {self.max_len}; build it with a larger max_len.")
        h = self.embed(h) + self.position(torch.arange(T, device=h.device))
        logits = self.head(self.encoder(h, mask=causal_mask(T, h.device)))
        return logits[0] if single else logits


def sequence_loss(logits: Tensor, targets: Tensor, predict_mask: Tensor) -> Tensor:
    """Mean cross-entropy over the positions where ``predict_mask`` is True; the others are ignored.

    ``logits (T, N)`` or ``(B, T, N)``; ``targets`` and ``predict_mask`` of shape ``logits.shape[:-1]``.
    """
    if not isinstance(logits, Tensor) or logits.dim() not in (2, 3):
        raise ValueError(f"logits must be (T, N) or (B, T, N), got {_shape(logits)}.")
    for name, t in (("targets", targets), ("predict_mask", predict_mask)):
        if not isinstance(t, Tensor) or tuple(t.shape) != tuple(logits.shape[:-1]):
            raise ValueError(f"{name} must have shape {tuple(logits.shape[:-1])} (one per position), "
                             f"got {_shape(t)}.")
    if predict_mask.dtype != torch.bool:
        raise ValueError(f"predict_mask must be a bool tensor, got {predict_mask.dtype}; use mask.bool().")
    mask = predict_mask.to(logits.device)
    if not bool(mask.any()):
        raise ValueError("predict_mask selects no position, so there is nothing to score; it must be "
                         "True at the query positions (episode_sequence returns it).")
    picked = targets.to(logits.device)[mask]
    _check_labels(picked, logits.shape[-1], "targets at the masked positions (unknown labels are -100: "
                                            "pass y_query to episode_sequence)")
    return F.cross_entropy(logits[mask], picked.long())


# ----------------------------------------------------------------------------- the few-shot learner

class BlackBoxLearner(nn.Module):
    """Image encoder f_theta plus sequence learner h_theta: a few-shot classifier with no inner loop.

    ``forward(episode)`` embeds every image in one pass, lays the episode out with
    :func:`episode_sequence` (labels as given: training should relabel them per episode, which
    :func:`black_box_loss` does) and returns the query logits ``(N*Q, N)`` in the episode's query
    order. The learner must map ``(B, T, D + N) -> (B, T, N)`` with D the encoder's output size
    (:func:`course_utils.nets.embedding_dim`). ``seed`` gives the model its own generator for the
    random orders and label maps (None: torch's global RNG).

    ``queries``: ``"each"`` (default) reads every query in a sequence of its own, the shuffled
    supports then that one query (a batch of N*Q sequences of N*K + 1 steps), so a prediction
    depends on the support set and its query only, as in the metric-based chapters, and does not
    change with the other queries. ``"together"`` is CS330's single sequence, supports then all
    queries (in a random order, since class-major queries would give labels away by position);
    a query then also sees the earlier queries' features. It is cheaper (one sequence of
    N*K + N*Q steps) but slower to train: a query's most similar key is itself and its classmates
    among the queries, none of which carries a label.
    """

    def __init__(self, encoder: nn.Module, learner: nn.Module, n_way: int, seed: int | None = None,
                 queries: str = "each"):
        super().__init__()
        _check_int("n_way", n_way, 1)
        if queries not in QUERY_MODES:
            raise ValueError(f"queries must be one of {QUERY_MODES}, got {queries!r}.")
        if not isinstance(encoder, nn.Module) or not isinstance(learner, nn.Module):
            raise ValueError("encoder and learner must be torch.nn.Modules, e.g. nets.conv4() and "
                             "BlackBoxTransformer(embedding_dim(encoder), n_way).")
        if getattr(learner, "n_way", n_way) != n_way:
            raise ValueError(f"The learner predicts {learner.n_way} classes but n_way = {n_way}; build "
                             "both with the same n_way.")
        self.encoder, self.learner, self.n_way, self.queries = encoder, learner, n_way, queries
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def _check(self, episode: Episode) -> None:
        _single(episode)
        if episode.n_way != self.n_way:
            raise ValueError(f"This model is {self.n_way}-way but the episode is {episode.n_way}-way; "
                             "a black-box learner's output size fixes N, so sample episodes with "
                             f"n_way={self.n_way}.")

    def embed(self, x: Tensor) -> Tensor:
        """``(n, *item) -> (n, D)``: one pass of the encoder, flattened."""
        return self.encoder(x).flatten(start_dim=1)

    def forward(self, episode: Episode, generator: torch.Generator | None = None) -> Tensor:
        self._check(episode)
        g = generator if generator is not None else self.generator
        n_s = episode.support_x.shape[0]
        z = self.embed(torch.cat([episode.support_x, episode.query_x]))
        if self.queries == "each":
            inputs, _, mask = episode_sequence(z[:n_s], episode.support_y, z[n_s:], self.n_way, generator=g)
            support, query = inputs[~mask], inputs[mask]
            seqs = torch.cat([support.expand(len(query), *support.shape), query[:, None]], dim=1)
            return self.learner(seqs)[:, -1]
        q_order = _randperm(episode.query_x.shape[0], g, z.device)  # query order must not tell labels
        inputs, _, mask = episode_sequence(z[:n_s], episode.support_y, z[n_s:][q_order], self.n_way,
                                           generator=g)
        shuffled = self.learner(inputs.unsqueeze(0))[0][mask]
        return shuffled[torch.argsort(q_order)]

    def loss(self, episode: Episode, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(cross-entropy on the query set, query logits (N*Q, N))``, labels as given."""
        logits = self(episode, generator)
        _check_labels(episode.query_y, self.n_way, "episode.query_y")
        return F.cross_entropy(logits, episode.query_y.to(logits.device)), logits

    def sequence_logits(self, x: Tensor, y: Tensor, shift: bool = True) -> Tensor:
        """MANN-style logits for items ``x (T, *item)`` (or ``(B, T, *item)``) with labels ``y (T,)``
        (or ``(B, T)``) shown one step late: ``(T, N)`` (or ``(B, T, N)``)."""
        if not isinstance(x, Tensor) or not isinstance(y, Tensor) or y.dim() not in (1, 2) \
                or tuple(x.shape[:y.dim()]) != tuple(y.shape) or x.dim() <= y.dim():
            raise ValueError(f"x must be items (T, *item) with labels y (T,), or (B, T, *item) with y (B, T); "
                             f"got x {_shape(x)} and y {_shape(y)}.")
        lead = tuple(y.shape)
        z = self.embed(x.reshape(-1, *x.shape[y.dim():])).reshape(*lead, -1)
        inputs, _ = build_sequence(z, y, self.n_way, shift)
        return self.learner(inputs)


def black_box_loss(model: BlackBoxLearner, episode: Episode) -> tuple[Tensor, Tensor]:
    """Episode loss for :func:`course_utils.episodic.train_episodic`: ``(loss, scores (N*Q, N))``.

    Relabels the episode with a fresh permutation (``model.generator``, or torch's global RNG), takes
    :meth:`BlackBoxLearner.loss` on it, and maps the scores back to the episode's own rows and labels,
    so they are scored against ``episode.query_y``.
    """
    if not isinstance(model, BlackBoxLearner):
        raise ValueError(f"black_box_loss takes a BlackBoxLearner, got {type(model).__name__}.")
    model._check(episode)
    g = model.generator
    perm = torch.randperm(episode.n_way, generator=g)
    relabelled, _, q_order = _relabel(episode, perm)
    loss, scores = model.loss(relabelled, g)
    # row j of scores is query q_order[j]; column perm[c] is the old class c
    return loss, scores[torch.argsort(q_order)][:, perm.to(scores.device)]


# ----------------------------------------------------------------------------- MANN's protocol

def _check_santoro(classes: Any, n_way: int, instances: int) -> None:
    _check_int("n_way", n_way, 1)
    _check_int("instances", instances, 1)
    if not isinstance(classes, ClassSet):
        raise ValueError(f"Episodes are sampled from a ClassSet, got {type(classes).__name__}.")
    if n_way > len(classes):
        raise ValueError(f"A {n_way}-way episode needs {n_way} classes, but {classes.title} has only "
                         f"{len(classes)}. Lower n_way.")
    if instances > classes.min_examples():
        raise ValueError(f"Each class must give {instances} distinct instances, but {classes.title} has "
                         f"classes with only {classes.min_examples()}. Lower instances.")


def santoro_episode(classes: ClassSet, n_way: int, instances: int = 10,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One MANN episode: N random classes, ``instances`` distinct examples of each, in random order.

    Labels are a fresh random map (label i is the i-th class drawn). Returns ``x (T, *item)`` (float;
    uint8 images scaled to 0..1), ``y (T,)`` and ``instance_index (T,)``: how many times y[t]'s class
    appeared before t (0 at its first appearance). T = N * instances.
    """
    _check_santoro(classes, n_way, instances)
    chosen = torch.randperm(len(classes), generator=generator)[:n_way].tolist()
    xs = []
    for c in chosen:
        ex = classes.examples(c)
        xs.append(ex[torch.randperm(ex.shape[0], generator=generator)[:instances]])
    x = torch.cat(xs)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    y = torch.arange(n_way).repeat_interleave(instances)
    order = torch.randperm(len(y), generator=generator)
    x, y = x[order], y[order]
    seen = F.one_hot(y, n_way).cumsum(0) - F.one_hot(y, n_way)
    return x, y, seen.gather(1, y[:, None])[:, 0]


def santoro_batch(classes: ClassSet, n_way: int, instances: int = 10, batch_size: int = 16,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``batch_size`` independent :func:`santoro_episode` s stacked: ``(B, T, *item), (B, T), (B, T)``."""
    _check_int("batch_size", batch_size, 1)
    eps = [santoro_episode(classes, n_way, instances, generator) for _ in range(batch_size)]
    return tuple(torch.stack(t) for t in zip(*eps))  # type: ignore[return-value]


def santoro_loss(model: BlackBoxLearner, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """MANN's loss: mean cross-entropy at *every* position (each label is predicted before it is shown).

    ``x (T, *item)`` / ``(B, T, *item)`` on the model's device, ``y (T,)`` / ``(B, T)``. Returns
    ``(loss, logits)``.
    """
    if not isinstance(model, BlackBoxLearner):
        raise ValueError(f"santoro_loss takes a BlackBoxLearner, got {type(model).__name__}.")
    logits = model.sequence_logits(x, y, shift=True)
    return F.cross_entropy(logits.reshape(-1, model.n_way), y.to(logits.device).reshape(-1).long()), logits


def first_instance_ceiling(n_way: int) -> float:
    """The best possible accuracy at a class's first appearance: mean over k = 0..N-1 of 1/(N - k)
    (guessing among the labels not shown yet). Chance 1/N only holds for the first item."""
    _check_int("n_way", n_way, 1)
    return sum(1.0 / (n_way - k) for k in range(n_way)) / n_way


def per_instance_accuracy(model: BlackBoxLearner, classes: ClassSet, n_way: int, instances: int = 10,
                          n_episodes: int = 100, generator: torch.Generator | None = None,
                          batch_size: int = 32) -> tuple[Tensor, Tensor]:
    """Santoro et al.'s Table 1: accuracy at the 1st, 2nd, ... appearance of a class.

    Runs ``n_episodes`` :func:`santoro_episode` s (eval mode, no gradients, on the model's device).
    Returns ``(acc (instances,), per_episode (n_episodes, instances))``, CPU float64: ``acc[i]`` is the
    mean of ``per_episode[:, i]``, the accuracy over the N items that are their class's (i+1)-th
    appearance; ``evaluation.mean_ci95(per_episode[:, i])`` gives its 95% interval.
    """
    if not isinstance(model, BlackBoxLearner):
        raise ValueError(f"per_instance_accuracy takes a BlackBoxLearner, got {type(model).__name__}.")
    _check_santoro(classes, n_way, instances)
    _check_int("n_episodes", n_episodes, 1)
    _check_int("batch_size", batch_size, 1)
    if n_way != model.n_way:
        raise ValueError(f"The model is {model.n_way}-way; evaluate it with n_way={model.n_way}, not {n_way}.")
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    rows, was_training = [], model.training
    model.eval()
    try:
        with torch.no_grad():
            done = 0
            while done < n_episodes:
                b = min(batch_size, n_episodes - done)
                x, y, idx = santoro_batch(classes, n_way, instances, b, generator)
                right = (model.sequence_logits(x.to(device), y.to(device)).argmax(-1).cpu() == y).double()
                hits = torch.zeros(b, instances, dtype=torch.float64).scatter_add_(1, idx, right)
                rows.append(hits / n_way)
                done += b
    finally:
        model.train(was_training)
    per_episode = torch.cat(rows)
    return per_episode.mean(0), per_episode
