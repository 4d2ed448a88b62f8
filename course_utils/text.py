"""Meta-learning an n-gram encoder for few-shot language identification (chapter 09).

Prototypical Networks (Snell, Swersky & Zemel, 2017) on hashed character n-gram features
x(s) in R^B (:mod:`course_utils.text_data`): an encoder f_theta maps a sentence's features to z, the
prototype of language n is the mean of its K support embeddings, c_n = 1/K sum_i f_theta(x_i), and a
query is classified by p(y = n | s) = softmax_n(-||f_theta(x(s)) - c_n||^2), trained episodically on
the meta-training languages. The encoders, smallest first:

- ``"weights"``: one weight per bucket, f(x) = normalise(w * x), B parameters (a learnt, IDF-like
  re-weighting of the n-grams; w = 1 is the raw baseline);
- ``"linear"``: an embedding bag over the buckets, f(x) = normalise(W x), W in R^{d x B};
- ``"mlp"``: f(x) = W_2 relu(W_1 x), W_1 in R^{h x B}: many parameters for few training tasks.

With ~30 meta-training languages there are only ~C(30, 5) distinct class sets, and a big encoder
memorises the training languages' n-grams instead of learning what distinguishes languages in
general: **meta-overfitting** (Yin et al., 2020; Rajendran et al., 2020). Its held-out accuracy falls
below the no-learning baseline while its meta-training accuracy rises. The generalisation gap,

    gap = acc(meta-training languages) - acc(held-out languages),
    95% interval: gap +- 1.96 * sqrt(s_1^2 / n_1 + s_2^2 / n_2),

measures it (:func:`generalisation_gap`; s_i the per-episode standard deviations, n_i the episodes).

MAML (Finn, Abbeel & Levine, 2017) on a linear head over the (frozen) features: ``maml.MAML`` adapts
a zero-initialised B -> N linear layer to each episode's support set in a few gradient steps.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .episodes import ClassSet, Episode, EpisodeSampler
from .episodic import embed_class_set, train_or_load
from .evaluation import Z95, episode_accuracies
from .maml import MAML
from .protonet import ProtoNet, classify_embedded, protonet_loss
from .training import History, load_or_train, train_loop

__all__ = ["BucketWeights", "LinearEncoder", "MLPEncoder", "ENCODERS", "make_encoder", "n_parameters",
           "train_protonet", "protonet_accuracies", "train_maml_head", "generalisation_gap",
           "ngram_dropout_loss"]


SCALE = 4.0  # embeddings have norm SCALE: squared distances in [0, 4 SCALE^2], a softmax temperature


class BucketWeights(nn.Module):
    """f(x) = (w * x) / ||w * x||: one learnt weight per bucket, initialised to 1 (the raw features)."""

    def __init__(self, n_buckets: int, scale: float = SCALE):
        super().__init__()
        self.w = nn.Parameter(torch.ones(n_buckets))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.normalize(x * self.w, dim=-1)

    def extra_repr(self) -> str:
        return f"n_buckets={self.w.shape[0]}, scale={self.scale}"


class LinearEncoder(nn.Module):
    """f(x) = W x / ||W x||: an embedding bag (each bucket's d-vector, weighted by its count)."""

    def __init__(self, n_buckets: int, dim: int = 64, seed: int = 0, scale: float = SCALE):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(n_buckets, dim, generator=g) / math.sqrt(dim))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.normalize(x @ self.W, dim=-1)

    def extra_repr(self) -> str:
        return f"n_buckets={self.W.shape[0]}, dim={self.W.shape[1]}, scale={self.scale}"


class MLPEncoder(nn.Module):
    """f(x) = W_2 relu(W_1 x + b_1): the "bigger network" that meta-overfits on few languages."""

    def __init__(self, n_buckets: int, hidden: int = 256, dim: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(n_buckets, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


ENCODERS = ("weights", "linear", "mlp")


def make_encoder(kind: str, n_buckets: int, size: int = 64, seed: int = 0) -> nn.Module:
    """``"weights"`` (size unused), ``"linear"`` (size = d) or ``"mlp"`` (size = hidden width, d = 64)."""
    if kind not in ENCODERS:
        raise ValueError(f"Unknown encoder {kind!r}; use one of {ENCODERS}.")
    for name, v in (("n_buckets", n_buckets), ("size", size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")
    if kind == "weights":
        return BucketWeights(n_buckets)
    if kind == "linear":
        return LinearEncoder(n_buckets, size, seed)
    return MLPEncoder(n_buckets, size, 64, seed)


def n_parameters(model: nn.Module) -> int:
    """How many numbers the meta-learner fits."""
    return sum(p.numel() for p in model.parameters())


def ngram_dropout_loss(p: float):
    """A ProtoNet episode loss that drops each input bucket with probability ``p`` (an augmentation).

    Each training episode sees a random part of its sentences' n-grams, so the encoder cannot lean on a
    few n-grams of a training language. Test episodes are unchanged.
    """
    if not 0 <= p < 1:
        raise ValueError(f"The drop probability p must be in [0, 1), got {p!r}.")

    def loss(model: ProtoNet, episode):
        if model.training and p > 0:
            keep_s = (torch.rand_like(episode.support_x) >= p).to(episode.support_x.dtype)
            keep_q = (torch.rand_like(episode.query_x) >= p).to(episode.query_x.dtype)
            episode = Episode(episode.support_x * keep_s, episode.support_y, episode.query_x * keep_q,
                              episode.query_y, episode.n_way, episode.k_shot, episode.q_query, episode.classes)
        return protonet_loss(model, episode)
    loss.__qualname__ = f"ngram_dropout_loss(p={p})"
    return loss


def _check_featurised(classes: ClassSet, what: str) -> None:
    if not isinstance(classes, ClassSet):
        raise ValueError(f"{what} must be a ClassSet of languages (text_data.language_class_set), got "
                         f"{type(classes).__name__}.")
    if classes.features is not None:
        raise ValueError(f"{what} still holds sentences; featurise it once first: classes.featurised().")


def train_protonet(name: str, encoder: nn.Module, train: ClassSet, n_way: int = 10, k_shot: int = 5,
                   q_query: int = 10, steps: int = 300, lr: float = 1e-2, seed: int = 0,
                   dropout: float = 0.0, config: dict[str, Any] | None = None
                   ) -> tuple[ProtoNet, History]:
    """Episodic ProtoNet training of ``encoder`` on featurised ``train`` languages (cached by settings).

    ``dropout`` > 0 trains with :func:`ngram_dropout_loss`. The cache key holds every setting, the
    encoder's repr and the training set's title and class names (:func:`episodic.train_or_load`), so the
    title should say how the set was made (``language_class_set``'s default title does). Returns the
    trained model and its History.
    """
    _check_featurised(train, "train")
    if n_way > len(train):
        raise ValueError(f"{n_way}-way training episodes need {n_way} languages; the training set has "
                         f"{len(train)}. Lower n_way or add languages.")
    torch.manual_seed(seed)
    model = ProtoNet(encoder)
    loss = ngram_dropout_loss(dropout) if dropout else protonet_loss
    hist = train_or_load(name, model, loss, train, config={**(config or {}), "dropout": dropout},
                         n_way=n_way, k_shot=k_shot, q_query=q_query, steps=steps, lr=lr, seed=seed,
                         desc=name)
    return model, hist


def protonet_accuracies(encoder: nn.Module | None, classes: ClassSet, n_way: int = 5, k_shot: int = 5,
                        q_query: int = 15, n_episodes: int = 600, seed: int = 0) -> Tensor:
    """Per-episode accuracies of the nearest prototype on ``encoder``'s embeddings (raw features if None)."""
    _check_featurised(classes, "classes")
    pool = classes if encoder is None else embed_class_set(encoder, classes)
    return episode_accuracies(classify_embedded, pool, n_way, k_shot, q_query, n_episodes, seed)


def train_maml_head(name: str, train: ClassSet, n_way: int = 5, k_shot: int = 5, q_query: int = 10,
                    steps: int = 200, batch: int = 4, alpha: float = 1.0, inner_steps: int = 3,
                    lr: float = 1e-2, seed: int = 0, encoder: nn.Module | None = None) -> MAML:
    """MAML (second order) on a linear head ``B -> N`` over frozen features (or ``encoder``'s embeddings).

    The model is ``x -> W (s * x) + b``. The head (W, b) is kept at zero in theta (``zero_head``, Kao et
    al. 2022: labels are permuted in every task, so a learnt head row would be noise), and the inner loop
    adapts it on each episode's support set; what the outer loop meta-learns is the per-input scale
    ``s`` (initialised to 1), which sets how fast each n-gram bucket's weight moves in the inner steps.
    Cached by its settings.
    """
    _check_featurised(train, "train")
    pool = train if encoder is None else embed_class_set(encoder, train)
    dim = pool.item_shape[0]

    def build() -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(_Scale(dim), nn.Linear(dim, n_way))

    def fit() -> dict[str, Any]:
        model = build()
        maml = MAML(model, alpha=alpha, steps=inner_steps, loss="cross_entropy", zero_head=True)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sampler = EpisodeSampler(pool, n_way, k_shot, q_query, batch_size=batch, seed=seed)

        def step(i: int) -> dict[str, float]:
            b = next(sampler)
            return {"loss": maml.meta_step(opt, b.support_x, b.support_y, b.query_x, b.query_y)}
        hist = train_loop(step, steps, desc=name)
        return {"state": model.state_dict(), "history": hist.as_dict()}

    key = {"n_way": n_way, "k_shot": k_shot, "q_query": q_query, "steps": steps, "batch": batch,
           "alpha": alpha, "inner_steps": inner_steps, "lr": lr, "seed": seed, "dim": dim,
           "train": [pool.title, *pool.names], "encoder": repr(encoder)}
    out = load_or_train(name, key, fit)
    model = build()
    model.load_state_dict(out["state"])
    maml = MAML(model, alpha=alpha, steps=inner_steps, loss="cross_entropy", zero_head=True)
    maml.history = History.from_dict(out["history"])
    return maml


class _Scale(nn.Module):
    """x -> s * x with one learnt scale per input (initialised to 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.s = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.s


def generalisation_gap(acc_train: Sequence[float] | Tensor, acc_held_out: Sequence[float] | Tensor
                       ) -> tuple[float, float]:
    """``(gap, half_width)``: mean(acc_train) - mean(acc_held_out) and its 95% interval half-width.

    The two sets of episodes are independent (different languages), so the variances of the two means
    add: half_width = 1.96 * sqrt(s_1^2 / n_1 + s_2^2 / n_2), with sample standard deviations (n - 1).
    """
    a = torch.as_tensor(acc_train, dtype=torch.float64).flatten()
    b = torch.as_tensor(acc_held_out, dtype=torch.float64).flatten()
    if a.numel() < 2 or b.numel() < 2:
        raise ValueError("generalisation_gap needs at least 2 episode accuracies on each side.")
    half = Z95 * math.sqrt(a.var(unbiased=True).item() / a.numel() + b.var(unbiased=True).item() / b.numel())
    return (a.mean() - b.mean()).item(), half
