"""Siamese networks: one embedding used twice, trained on pairs, used for one-shot classification.

* Bromley et al., "Signature Verification using a 'Siamese' Time Delay Neural Network",
  NeurIPS 1993: two inputs go through the *same* network f (shared weights) and are
  compared by a distance, D(x_1, x_2) = ||f(x_1) - f(x_2)||_2.
* Hadsell, Chopra & LeCun, CVPR 2006: train f with the contrastive loss
  (:mod:`course_utils.contrastive`, pair label Y = 0 similar, 1 dissimilar).
* Koch, Zemel & Salakhutdinov, "Siamese Neural Networks for One-shot Image Recognition",
  ICML Deep Learning Workshop 2015: a *verification* head on the weighted L1 distance,

      p(same | x_1, x_2) = sigma( sum_j alpha_j |h_1j - h_2j| + beta ),   h_i = f(x_i),

  trained with binary cross-entropy on the target t = 1 for the same class (note: Koch's
  t = 1 - Y of the contrastive convention), then used for one-shot N-way classification by
  *verification*: score the query against every support example and pick the class of the
  best match, c* = argmax_c max_{i: y_i = c} s(x_hat, x_i) (``reduce="mean"`` averages instead).

Here f is the course's Conv-4 (:func:`course_utils.nets.conv4`) on 28x28 images, much smaller
than Koch's 105x105 network; pairs come from :func:`sample_pairs` (balanced same/different).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .contrastive import contrastive_loss, euclidean_distance
from .episodes import ClassSet, Episode
from .evaluation import Accuracy, mean_ci95
from .nets import conv4, embedding_dim
from .training import History, train_loop

__all__ = ["SiameseNet", "VerificationNet", "verification_loss", "sample_pairs", "pair_scores",
           "fit_threshold", "verification_accuracy", "classify_by_verification",
           "verification_classifier", "contrastive_objective", "verification_objective", "train_pairs"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _as_float(x: Tensor) -> Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def _check_pair_inputs(x1: Tensor, x2: Tensor) -> None:
    if not isinstance(x1, Tensor) or not isinstance(x2, Tensor):
        raise ValueError("x1 and x2 must be tensors of P inputs each.")
    if x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must have the same shape (pair i is x1[i], x2[i]), got "
                         f"{tuple(x1.shape)} and {tuple(x2.shape)}.")


# ----------------------------------------------------------------------------- the networks

class SiameseNet(nn.Module):
    """One embedding network f used on both inputs; ``forward(x1, x2)`` returns D = ||f(x1) - f(x2)||.

    ``distance(z1, z2)`` may be swapped (e.g. for a student's own safe distance).

    There is one set of weights (``self.embed``): the "twins" are the same module called twice,
    so gradients from both branches add up in the same parameters. Both halves are run as one
    batch (so BatchNorm sees them together and D(x1, x2) = D(x2, x1) exactly).
    """

    def __init__(self, embed: nn.Module | None = None, distance: ScoreFn = euclidean_distance):
        super().__init__()
        self.embed = embed if embed is not None else conv4()
        self.distance_fn = distance  # D(z1, z2) -> (P,), safe at zero

    def embed_pair(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x1), f(x2))``, computed in one batch through the one shared network."""
        _check_pair_inputs(x1, x2)
        z = self.embed(torch.cat([x1, x2]))
        return z[: len(x1)], z[len(x1):]

    def distance(self, z1: Tensor, z2: Tensor) -> Tensor:
        """The distance between embeddings, ``(P,)`` (by default the safe Euclidean distance)."""
        return self.distance_fn(z1, z2)

    def score(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Similarity of embeddings for classification by verification: -D (higher = more alike)."""
        return -self.distance(z1, z2)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return self.distance(*self.embed_pair(x1, x2))


class VerificationNet(nn.Module):
    """Koch et al. (2015): logit = alpha . |f(x1) - f(x2)| + beta; p(same) = sigmoid(logit).

    ``forward(x1, x2)`` returns the logits ``(P,)``; train with :func:`verification_loss`.
    """

    def __init__(self, embed: nn.Module | None = None, image_shape: tuple[int, ...] = (1, 28, 28)):
        super().__init__()
        self.embed = embed if embed is not None else conv4(image_shape[0])
        self.head = nn.Linear(embedding_dim(self.embed, image_shape), 1)  # weights alpha_j, bias beta

    def embed_pair(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        _check_pair_inputs(x1, x2)
        h = self.embed(torch.cat([x1, x2]))
        return h[: len(x1)], h[len(x1):]

    def score(self, h1: Tensor, h2: Tensor) -> Tensor:
        """The logit of p(same) from two embeddings (higher = more alike)."""
        return self.head((h1 - h2).abs()).squeeze(-1)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return self.score(*self.embed_pair(x1, x2))

    def probability(self, x1: Tensor, x2: Tensor) -> Tensor:
        """p(same class | x1, x2), ``(P,)``."""
        return torch.sigmoid(self(x1, x2))


def verification_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Binary cross-entropy for Koch's head. ``y`` uses the course's convention (0 = same class),
    so the target "same" is ``t = 1 - y``."""
    if logits.shape != y.shape:
        raise ValueError(f"logits and y must both be (P,), got {tuple(logits.shape)} and {tuple(y.shape)}.")
    return F.binary_cross_entropy_with_logits(logits, 1 - y.to(logits.dtype))


# ----------------------------------------------------------------------------- pairs

def _counts(classes: ClassSet) -> list[int]:
    if isinstance(classes.x, Tensor):
        return [int(classes.x.shape[1])] * len(classes)
    return [len(t) for t in classes.x]


def _randint(high: int, g: torch.Generator | None) -> int:
    return int(torch.randint(high, (1,), generator=g))


def sample_pairs(classes: ClassSet, n_pairs: int, generator: torch.Generator | None = None,
                 within_alphabet: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """A balanced batch of pairs: ``n_pairs / 2`` same-class, ``n_pairs / 2`` different-class.

    Returns ``(x1, x2, Y)``: ``x1``, ``x2`` ``(P, *item)`` float in [0, 1]; ``Y`` ``(P,)`` float,
    **0 for same class, 1 for different** (the contrastive convention). The first half are the
    similar pairs. A similar pair is two *different* examples of one class; a dissimilar pair
    is one example each of two different classes. With ``within_alphabet = p``, each negative is,
    with probability p, two classes of the same alphabet (harder negatives, as in Lake's task).
    """
    if not isinstance(classes, ClassSet):
        raise ValueError(f"sample_pairs needs a ClassSet, got {type(classes).__name__}.")
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 2 or n_pairs % 2:
        raise ValueError(f"n_pairs must be an even integer >= 2 (half similar, half dissimilar), got {n_pairs!r}.")
    if not 0.0 <= float(within_alphabet) <= 1.0:
        raise ValueError(f"within_alphabet is a probability in [0, 1], got {within_alphabet!r}.")
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(f"{classes.title} has {n_classes} class(es); dissimilar pairs need at least 2.")
    counts = _counts(classes)
    if min(counts) < 2:
        raise ValueError(f"{classes.title} has classes with fewer than 2 examples; a similar pair needs "
                         "two different examples of one class.")
    groups: dict[str, list[int]] = {}
    if within_alphabet > 0:
        for c, a in enumerate(classes.alphabets):
            groups.setdefault(a, []).append(c)
        groups = {a: cs for a, cs in groups.items() if len(cs) >= 2}
        if not groups:
            raise ValueError(f"within_alphabet > 0, but no alphabet of {classes.title} has two classes. "
                             "Use within_alphabet=0.")
    eligible = [c for cs in groups.values() for c in cs]
    alphabet_of = classes.alphabets
    g, half = generator, n_pairs // 2
    a_idx: list[tuple[int, int]] = []
    b_idx: list[tuple[int, int]] = []
    for _ in range(half):  # similar: class c, two distinct examples i != j
        c = _randint(n_classes, g)
        i = _randint(counts[c], g)
        j = (i + 1 + _randint(counts[c] - 1, g)) % counts[c]
        a_idx.append((c, i))
        b_idx.append((c, j))
    hard = (torch.rand(half, generator=g) < within_alphabet).tolist()
    for k in range(half):  # dissimilar: two distinct classes
        if hard[k]:
            c1 = eligible[_randint(len(eligible), g)]
            mates = [c for c in groups[alphabet_of[c1]] if c != c1]
            c2 = mates[_randint(len(mates), g)]
        else:
            c1 = _randint(n_classes, g)
            c2 = (c1 + 1 + _randint(n_classes - 1, g)) % n_classes
        a_idx.append((c1, _randint(counts[c1], g)))
        b_idx.append((c2, _randint(counts[c2], g)))
    x1 = torch.cat([classes.take(c, [i]) for c, i in a_idx])
    x2 = torch.cat([classes.take(c, [i]) for c, i in b_idx])
    y = torch.cat([torch.zeros(half), torch.ones(half)])
    return _as_float(x1), _as_float(x2), y


# ----------------------------------------------------------------------------- verification

@torch.no_grad()
def pair_scores(net: nn.Module, x1: Tensor, x2: Tensor, batch_size: int = 256) -> Tensor:
    """Similarity ``net.score(f(x1), f(x2))`` of many pairs in eval mode (higher = more alike), on the CPU."""
    _check_pair_inputs(x1, x2)
    was = net.training
    net.eval()
    device = next(net.parameters()).device
    out = []
    for s in range(0, len(x1), batch_size):
        h1, h2 = net.embed_pair(x1[s:s + batch_size].to(device), x2[s:s + batch_size].to(device))
        out.append(net.score(h1, h2).cpu())
    net.train(was)
    return torch.cat(out)


def fit_threshold(scores: Tensor, y: Tensor) -> float:
    """The threshold t maximising the accuracy of "same iff score > t" on these pairs (pair label y = 0 same).

    Fit it on validation pairs, never on the pairs you report.
    """
    if scores.shape != y.shape or scores.dim() != 1 or len(scores) == 0:
        raise ValueError("scores and y must be (P,) with P >= 1 and the same shape.")
    s, order = scores.double().sort()
    same = (y[order] == 0).double()
    # threshold between s[k-1] and s[k]: pairs 0..k-1 called different, k.. called same
    correct_diff = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(1 - same, 0)])
    correct_same = same.sum() - torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(same, 0)])
    k = int(torch.argmax(correct_diff + correct_same))
    lo = s[k - 1].item() if k > 0 else s[0].item() - 1.0
    hi = s[k].item() if k < len(s) else s[-1].item() + 1.0
    return (lo + hi) / 2


def verification_accuracy(scores: Tensor, y: Tensor, threshold: float) -> Accuracy:
    """Accuracy of "same class iff score > threshold" with a 95% interval over the pairs (n = pairs)."""
    if scores.shape != y.shape:
        raise ValueError(f"scores and y must have the same shape, got {tuple(scores.shape)} and {tuple(y.shape)}.")
    correct = ((scores > threshold) == (y == 0)).float()
    return mean_ci95(correct)


def classify_by_verification(score_pairs: ScoreFn, support_x: Tensor, support_y: Tensor,
                             query_x: Tensor, n_way: int, reduce: str = "max") -> Tensor:
    """One-shot N-way classification by verification (Koch et al. 2015).

    ``score_pairs(a, b)`` scores P pairs of rows ``(a[i], b[i])`` (higher = more alike). Every
    query is scored against every support example: s_qi = score(query_q, support_i); the class
    score is the max over that class's support examples (or their mean). Returns ``(NQ, N)``.
    The support set may be in any order: ``support_y`` says which class each row belongs to.
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}.")
    if support_y.dim() != 1 or len(support_y) != len(support_x):
        raise ValueError(f"support_y must be (NS,) with one label per support row; got {tuple(support_y.shape)} "
                         f"for {len(support_x)} rows.")
    present = set(support_y.tolist())
    if present != set(range(n_way)):
        raise ValueError(f"support_y must hold every label 0..{n_way - 1} (n_way={n_way}); it holds "
                         f"{sorted(present)}.")
    nq, ns = len(query_x), len(support_x)
    a = query_x.repeat_interleave(ns, dim=0)  # q0 x ns, q1 x ns, ...
    b = support_x.repeat(nq, *([1] * (support_x.dim() - 1)))  # s0 s1 ... s_ns-1, s0 s1 ...
    s = score_pairs(a, b).reshape(nq, ns)
    out = []
    for c in range(n_way):
        sc = s[:, support_y == c]
        out.append(sc.max(dim=1).values if reduce == "max" else sc.mean(dim=1))
    return torch.stack(out, dim=1)


def verification_classifier(net: nn.Module, reduce: str = "max", embedded: bool = False,
                            classify: Callable | None = None) -> Callable[[Episode], Tensor]:
    """``classify(episode) -> (NQ, N)`` scores for ``evaluation.evaluate``, using ``net.score``.

    ``embedded=True`` when the episodes already hold embeddings (from a class set embedded once
    with ``baselines.embed_classes(net.embed, ...)``, much faster than embedding every episode).
    ``classify`` swaps in another :func:`classify_by_verification` with the same arguments (e.g. a
    student's); it is used for ``reduce="max"``, the reference for ``"mean"``.
    """
    rule = classify or classify_by_verification

    @torch.no_grad()
    def run(ep: Episode) -> Tensor:
        net.eval()
        device = next(net.parameters()).device
        xs, xq = ep.support_x.to(device), ep.query_x.to(device)
        if not embedded:
            xs, xq = net.embed(xs), net.embed(xq)
        if reduce == "max":
            return rule(net.score, xs, ep.support_y.to(device), xq, ep.n_way)
        return classify_by_verification(net.score, xs, ep.support_y.to(device), xq, ep.n_way, reduce)

    return run


# ----------------------------------------------------------------------------- training

PairLoss = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]


def contrastive_objective(margin: float = 1.0, loss_fn: Callable = contrastive_loss) -> PairLoss:
    """``pair_loss(net, x1, x2, y)`` = mean contrastive loss of ``net(x1, x2) = D`` (y = 0 same)."""
    def pair_loss(net: nn.Module, x1: Tensor, x2: Tensor, y: Tensor) -> Tensor:
        return loss_fn(net(x1, x2), y, margin).mean()
    return pair_loss


def verification_objective(net: nn.Module, x1: Tensor, x2: Tensor, y: Tensor) -> Tensor:
    """``pair_loss`` for :class:`VerificationNet`: BCE of its logits against "same" = 1 - y."""
    return verification_loss(net(x1, x2), y)


def train_pairs(net: nn.Module, classes: ClassSet, pair_loss: PairLoss, n_steps: int, n_pairs: int = 64,
                lr: float = 1e-3, sampler: Callable | None = None, seed: int = 0,
                validate: Callable[[], dict[str, float]] | None = None, every: int = 0,
                desc: str = "pair training", max_seconds: float | None = None) -> History:
    """Adam on ``pair_loss(net, x1, x2, y)`` over ``n_steps`` batches of ``n_pairs`` pairs.

    ``max_seconds`` stops training after that much time even if fewer than ``n_steps`` steps ran.
    ``sampler(classes, n_pairs, generator) -> (x1, x2, y)`` defaults to :func:`sample_pairs`.
    ``validate()`` runs in eval mode every ``every`` steps and at the end; the net is left in eval mode.
    """
    sampler = sampler or sample_pairs
    device = next(net.parameters()).device
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def step(_: int) -> dict[str, float]:
        x1, x2, y = sampler(classes, n_pairs, g)
        loss = pair_loss(net, x1.to(device), x2.to(device), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    def val() -> dict[str, float]:
        net.eval()
        out = validate()
        net.train()
        return out

    net.train()
    hist = train_loop(step, n_steps, desc=desc, validate=val if validate else None, every=every,
                      max_seconds=max_seconds)
    net.eval()
    return hist
