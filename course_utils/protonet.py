"""Prototypical Networks (Snell, Swersky & Zemel, 2017, NeurIPS; arXiv:1703.05175).

An embedding f_theta maps every image to a vector. For an N-way K-shot episode, the
*prototype* of class n is the mean embedding of its K support examples,

    c_n = (1 / K) * sum_{(x_i, y_i) in S, y_i = n} f_theta(x_i),

and a query x is classified by a softmax over negative squared Euclidean distances,

    p(y = n | x) = exp(-d(f_theta(x), c_n)) / sum_n' exp(-d(f_theta(x), c_n')),
    d(z, c) = ||z - c||^2.

(The paper writes phi for the embedding's weights and k for the class; the course writes theta and n.)
Training is episodic: minimise the cross-entropy -log p(y = y_q | x_q) over the *query*
set of each episode (the support set only builds the prototypes).

Section 2.4 of the paper: with squared Euclidean distance the classifier is linear in z,

    -||z - c_n||^2 = -z.z + 2 c_n.z - c_n.c_n,

and -z.z is the same for every class, so it cancels in the softmax: the logits are those of a
linear layer with w_n = 2 c_n and b_n = -||c_n||^2 (:func:`linear_classifier`).

Support tensors are class-major (rows n*K .. n*K+K-1 are class n), as in
:mod:`course_utils.episodes`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .episodes import Episode
from .nets import conv4

__all__ = ["prototypes", "squared_distances", "protonet_logits", "linear_classifier", "ProtoNet",
           "protonet_loss", "check_class_major"]


def _check_2d(z: Tensor, what: str) -> None:
    if not isinstance(z, Tensor) or z.dim() != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"{what} must be a 2-D tensor (rows, D) of embeddings, got {shape}. "
                         "Flatten the encoder's output to (rows, D) first.")


def prototypes(z_support: Tensor, n_way: int, k_shot: int) -> Tensor:
    """Class means c_n of class-major support embeddings: ``(N*K, D) -> (N, D)``."""
    _check_2d(z_support, "z_support")
    if z_support.shape[0] != n_way * k_shot:
        raise ValueError(f"z_support has {z_support.shape[0]} rows, but an {n_way}-way {k_shot}-shot "
                         f"support set has n_way * k_shot = {n_way * k_shot}.")
    return z_support.reshape(n_way, k_shot, -1).mean(dim=1)


def squared_distances(z_query: Tensor, c: Tensor) -> Tensor:
    """d[q, n] = ||z_q - c_n||^2: ``(NQ, D), (N, D) -> (NQ, N)``.

    Computed from the differences (not the expansion z.z - 2 z.c + c.c), so it is exactly 0 for a
    query on its prototype and never negative.
    """
    _check_2d(z_query, "z_query")
    _check_2d(c, "the prototypes c")
    if z_query.shape[1] != c.shape[1]:
        raise ValueError(f"Queries have {z_query.shape[1]}-d embeddings but prototypes {c.shape[1]}-d; "
                         "embed both with the same network.")
    return (z_query.unsqueeze(1) - c.unsqueeze(0)).pow(2).sum(dim=-1)


def protonet_logits(z_query: Tensor, c: Tensor) -> Tensor:
    """Logits -||f(x) - c_n||^2, shape ``(NQ, N)``; softmax over the classes gives p(y = n | x)."""
    return -squared_distances(z_query, c)


def classify_embedded(episode: Episode) -> Tensor:
    """Query logits of an episode whose examples are already embeddings (nearest prototype).

    For ``evaluation.evaluate`` on a class set embedded once (``episodic.embed_class_set``).
    """
    return protonet_logits(episode.query_x, prototypes(episode.support_x, episode.n_way, episode.k_shot))


def linear_classifier(c: Tensor) -> tuple[Tensor, Tensor]:
    """The prototypes as a linear layer (Snell et al., section 2.4): ``W = 2 c`` ``(N, D)``, ``b = -||c||^2`` ``(N,)``.

    ``z @ W.T + b`` equals ``protonet_logits(z, c) + ||z||^2``: the same argmax and softmax.
    """
    _check_2d(c, "the prototypes c")
    return 2 * c, -c.pow(2).sum(dim=1)


def check_class_major(episode: Episode) -> None:
    """Raise ``ValueError`` unless ``episode`` is one episode with class-major support labels."""
    if episode.batched:
        raise ValueError("This model takes one episode at a time, got a meta-batch; loop over "
                         "episode.task(b) for b in range(B).")
    n, k = episode.n_way, episode.k_shot
    expected = torch.arange(n, device=episode.support_y.device).repeat_interleave(k)
    if episode.support_y.shape != expected.shape or not torch.equal(episode.support_y, expected):
        raise ValueError("The support set must be class-major (labels 0,..,0,1,..,1,...: K of each "
                         "class in turn), as sample_episode makes it; sort it by label first.")


class ProtoNet(nn.Module):
    """f_phi plus the prototype classifier. ``forward(episode)`` gives query logits ``(N*Q, N)``."""

    def __init__(self, encoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else conv4()

    def embed(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """``(z_support (N*K, D), z_query (N*Q, D))``, from one pass of the encoder over both sets."""
        check_class_major(episode)
        n_s = episode.support_x.shape[0]
        z = self.encoder(torch.cat([episode.support_x, episode.query_x]))
        z = z.flatten(start_dim=1)
        return z[:n_s], z[n_s:]

    def forward(self, episode: Episode) -> Tensor:
        z_support, z_query = self.embed(episode)
        c = prototypes(z_support, episode.n_way, episode.k_shot)
        return protonet_logits(z_query, c)


def protonet_loss(model: ProtoNet, episode: Episode) -> tuple[Tensor, Tensor]:
    """Episodic cross-entropy on the query set: ``(loss, logits)``."""
    logits = model(episode)
    return F.cross_entropy(logits, episode.query_y), logits
