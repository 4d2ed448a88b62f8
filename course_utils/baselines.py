"""Honest baselines for few-shot classification (chapter 00).

1. **Pixel nearest neighbour**: label a query with the label of the closest support image,
   ŷ(x̂) = y_{i*}, i* = argmin_i ||x̂ - x_i||_2 (raw pixels; no learning at all).
2. **Pre-train, then fit a linear head** (the "Baseline" of Chen et al., ICLR 2019,
   arXiv:1904.04232; Tian et al., ECCV 2020, arXiv:2003.11539): train an embedding f_θ as an
   ordinary classifier over all meta-training classes, freeze it, and for each episode fit a
   softmax regression p(y | x) = softmax(W f_θ(x) / ||f_θ(x)|| + b) on the support set alone.

Both work on whole batches of episodes at once where it pays (heads for 600 episodes are
fitted together as one batched optimisation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .episodes import ClassSet, Episode
from .nets import conv4, embedding_dim
from .episodic import embed_class_set
from .progress import progress
from .training import History, train_loop

__all__ = ["pixel_nn", "pixel_nn_classify", "pretrain_embedding", "embed_classes", "fit_linear_head",
           "linear_head_logits", "linear_head_accuracies"]


def pixel_nn(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
    """1-nearest-neighbour labels of the queries in raw pixel space (Euclidean distance)."""
    d = torch.cdist(query_x.flatten(start_dim=1).float(), support_x.flatten(start_dim=1).float())
    return support_y[d.argmin(dim=1)]


def pixel_nn_classify(ep: Episode) -> Tensor:
    """``classify(episode)`` form of :func:`pixel_nn`, for ``evaluation.evaluate``."""
    return pixel_nn(ep.support_x, ep.support_y, ep.query_x)


def pretrain_embedding(train: ClassSet, steps: int, batch_size: int = 128, lr: float = 1e-3,
                       hidden: int = 64, device: torch.device | str = "cpu", seed: int = 0,
                       max_seconds: float | None = None) -> tuple[nn.Module, History]:
    """Train Conv-4 + a linear layer to classify all of ``train``'s classes; return the Conv-4 part.

    ``max_seconds``: stop after that much time even if fewer than ``steps`` steps ran.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n_classes, m = len(train), train.min_examples()
    body = conv4(train.item_shape[0], hidden).to(device)
    head = nn.Linear(embedding_dim(body, train.item_shape), n_classes).to(device)
    opt = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=lr)
    stacked = train.x if isinstance(train.x, Tensor) else torch.stack([x[:m] for x in train.x])

    def step(_: int) -> dict[str, float]:
        c = torch.randint(n_classes, (batch_size,), generator=g)
        j = torch.randint(m, (batch_size,), generator=g)
        x = stacked[c, j].to(device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        logits = head(body(x))
        loss = F.cross_entropy(logits, c.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "acc": (logits.argmax(1).cpu() == c).float().mean().item()}

    body.train()
    hist = train_loop(step, steps, desc="pre-training", max_seconds=max_seconds)
    body.eval()
    return body, hist


def embed_classes(net: nn.Module, classes: ClassSet, batch_size: int = 512,
                  device: torch.device | str = "cpu", desc: str | None = None) -> ClassSet:
    """The same classes with every example replaced by its embedding ``f(x)`` (C, M, D).

    ``desc``: show a progress bar with this label (the classes are then embedded a chunk of about
    ``batch_size`` images at a time). The course's one implementation of the embedding itself is
    :func:`episodic.embed_class_set`.
    """
    if desc is None or len(classes) == 0:
        return embed_class_set(net, classes, device=device, batch_size=batch_size)
    per = max(1, batch_size // max(1, classes.min_examples()))
    chunks = [list(range(i, min(i + per, len(classes)))) for i in range(0, len(classes), per)]
    xs: list[Tensor] = []
    for idx in progress(chunks, desc=desc):
        part = embed_class_set(net, classes.subset(idx), device=device, batch_size=batch_size).x
        xs.extend(part.unbind(0) if isinstance(part, Tensor) else part)
    x = torch.stack(xs) if len({t.shape for t in xs}) == 1 else xs
    return ClassSet(x, list(classes.names), list(classes.alphabets), f"{classes.title} (embedded)")


def fit_linear_head(support_f: Tensor, support_y: Tensor, n_way: int, steps: int = 100, lr: float = 0.5,
                    weight_decay: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Softmax regression on the support features, batched over any leading task dims.

    ``support_f``: (..., N*K, D); returns W (..., N, D) and b (..., N). Features are
    L2-normalised inside (and must be for prediction too: see :func:`linear_head_accuracies`).
    """
    f = F.normalize(support_f.float(), dim=-1)
    W = torch.zeros(*f.shape[:-2], n_way, f.shape[-1], requires_grad=True)
    b = torch.zeros(*f.shape[:-2], n_way, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=lr, max_iter=steps, line_search_fn="strong_wolfe")
    target = support_y.long()

    def closure() -> Tensor:
        opt.zero_grad()
        logits = torch.einsum("...nd,...kd->...nk", f, W) + b.unsqueeze(-2)
        loss = F.cross_entropy(logits.reshape(-1, n_way), target.reshape(-1)) * \
            (logits.numel() // (n_way * f.shape[-2]))  # a sum over tasks: tasks stay independent
        loss = loss + weight_decay * (W ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def linear_head_logits(episode: Episode, steps: int = 100) -> Tensor:
    """Query logits ``(..., NQ, N)`` of a linear head fitted on the support features of each episode.

    Works on one episode or a batch of them; usable as ``classify`` in ``evaluation.evaluate``.
    """
    W, b = fit_linear_head(episode.support_x, episode.support_y, episode.n_way, steps)
    q = F.normalize(episode.query_x.float(), dim=-1)
    return torch.einsum("...nd,...kd->...nk", q, W) + b.unsqueeze(-2)


def linear_head_accuracies(batch: Episode, steps: int = 100) -> Tensor:
    """Per-episode query accuracy of a linear head fitted on each episode's support features."""
    return (linear_head_logits(batch, steps).argmax(-1) == batch.query_y).float().mean(-1)
