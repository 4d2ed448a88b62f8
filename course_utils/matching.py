"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, 2016, NeurIPS; arXiv:1606.04080).

A query x̂ is labelled by attention over the support set S = {(x_i, y_i)}, i = 1..N*K:

    ŷ = sum_i a(x̂, x_i) y_i                                    (y_i one-hot, ŷ in the simplex)
    a(x̂, x_i) = exp(c(f(x̂), g(x_i))) / sum_j exp(c(f(x̂), g(x_j)))
    c(u, v) = u.v / (||u|| ||v||)                               (cosine similarity)

The softmax runs over the *support set* (each row of ``a`` sums to 1), so the classifier is a
differentiable, soft nearest neighbour. It is trained episodically, minimising -log ŷ_{y} over
the query set ("train as you test").

In the simplest form f = g = f' = g' is one embedding network (Conv-4 here). With *full context
embeddings* (FCE, the paper's appendix) both see the whole support set:

- g(x_i, S) = g'(x_i) + h→_i + h←_i: a bidirectional LSTM over the support embeddings g'(x_i)
  (in the episode's order), with a skip connection (:class:`FullContextSupport`);
- f(x̂, S) = attLSTM(f'(x̂), g(S), T): T "processing steps" (the paper calls them K; here T,
  since K is the shot count) of an LSTM that re-reads the support set (:class:`AttentionLSTM`)::

      r_{t-1} = sum_i softmax_i(h_{t-1} . g(x_i)) g(x_i)       (dot-product attention read-out)
      ĥ_t, c_t = LSTM(f'(x̂), [h_{t-1}, r_{t-1}], c_{t-1})
      h_t = ĥ_t + f'(x̂),    h_0 = c_0 = 0,    f(x̂, S) = h_T

  The paper concatenates r_{t-1} to the LSTM's *state*; here it is concatenated to the cell's
  *input*. The gates are linear in input and state together, so both give the same family of
  gates. ``nn.LSTMCell`` is used (a Python loop over T steps) rather than cuDNN's fused LSTM,
  which cannot be differentiated twice, should a later chapter need second-order gradients.
  (The support set's bidirectional ``nn.LSTM`` is fused on a GPU: fine for the first-order
  episodic training here; wrap it in ``torch.backends.cudnn.flags(enabled=False)`` for double
  backward.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .episodes import Episode
from .nets import conv4, embedding_dim
from .protonet import check_class_major

__all__ = ["cosine_similarities", "cosine_attention", "attention_predict", "FullContextSupport",
           "AttentionLSTM", "MatchingNet", "matching_loss"]


def _check_pair(f_query: Tensor, g_support: Tensor) -> None:
    for t, what in ((f_query, "f_query"), (g_support, "g_support")):
        if not isinstance(t, Tensor) or t.dim() != 2:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{what} must be a 2-D tensor (rows, D) of embeddings, got {shape}.")
    if f_query.shape[1] != g_support.shape[1]:
        raise ValueError(f"Query embeddings are {f_query.shape[1]}-d but support embeddings "
                         f"{g_support.shape[1]}-d; they must live in the same space.")


def cosine_similarities(f_query: Tensor, g_support: Tensor, eps: float = 1e-8) -> Tensor:
    """c(f(x̂_q), g(x_i)) for every query q and support example i: ``(NQ, D), (NK, D) -> (NQ, NK)``."""
    _check_pair(f_query, g_support)
    u = f_query / f_query.norm(dim=1, keepdim=True).clamp_min(eps)
    v = g_support / g_support.norm(dim=1, keepdim=True).clamp_min(eps)
    return u @ v.T


def cosine_attention(f_query: Tensor, g_support: Tensor, scale: float = 1.0) -> Tensor:
    """a(x̂_q, x_i): softmax over the support set of the cosine similarities, ``(NQ, NK)``, rows sum to 1.

    ``scale`` multiplies the similarities before the softmax (1 in the paper; a larger value makes
    the attention sharper, closer to a hard nearest neighbour).
    """
    return torch.softmax(scale * cosine_similarities(f_query, g_support), dim=1)


def attention_predict(a: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """ŷ = sum_i a(x̂, x_i) y_i with one-hot y_i: ``(NQ, NK) -> (NQ, N)``, rows sum to 1."""
    if a.dim() != 2 or a.shape[1] != support_y.shape[0]:
        raise ValueError(f"Attention of shape {tuple(a.shape)} does not match {support_y.shape[0]} "
                         "support labels; it should be (queries, support examples).")
    return a @ F.one_hot(support_y, n_way).to(a.dtype)


class FullContextSupport(nn.Module):
    """g(x_i, S) = g'(x_i) + h→_i + h←_i: a bidirectional LSTM over the support embeddings (plus skip)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.lstm = nn.LSTM(dim, dim, bidirectional=True, batch_first=True)

    def forward(self, g_prime: Tensor) -> Tensor:
        """``(N*K, D) -> (N*K, D)``; the support set is read in its given (class-major) order."""
        h, _ = self.lstm(g_prime.unsqueeze(0))
        h_forward, h_backward = h[0, :, : self.dim], h[0, :, self.dim:]
        return g_prime + h_forward + h_backward


class AttentionLSTM(nn.Module):
    """f(x̂, S) = attLSTM(f'(x̂), g(S), T): T processing steps that re-read the support set."""

    def __init__(self, dim: int, steps: int = 5):
        super().__init__()
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps (the number of processing steps T) must be an int >= 1, got {steps!r}.")
        self.dim, self.steps = dim, steps
        self.cell = nn.LSTMCell(2 * dim, dim)

    def forward(self, f_prime: Tensor, g: Tensor) -> Tensor:
        """``f_prime (NQ, D)``, ``g (N*K, D)`` -> ``h_T (NQ, D)``; queries are processed independently."""
        h = torch.zeros_like(f_prime)
        c = torch.zeros_like(f_prime)
        for _ in range(self.steps):
            r = torch.softmax(h @ g.T, dim=1) @ g          # r_{t-1}: read-out with attention from h_{t-1}
            h_hat, c = self.cell(torch.cat([f_prime, r], dim=1), (h, c))
            h = h_hat + f_prime                            # skip connection
        return h


class MatchingNet(nn.Module):
    """Embeddings f, g (shared Conv-4 f' = g', optionally full-context) and the cosine attention classifier.

    ``forward(episode)`` returns log ŷ, shape ``(N*Q, N)`` (log-probabilities: use ``nll_loss``).
    """

    def __init__(self, encoder: nn.Module | None = None, fce: bool = False, steps: int = 5,
                 scale: float = 1.0, image_shape: tuple[int, ...] = (1, 28, 28)):
        super().__init__()
        self.encoder = encoder if encoder is not None else conv4()
        self.fce, self.scale = fce, float(scale)
        if fce:
            dim = embedding_dim(self.encoder, image_shape)
            self.g_lstm = FullContextSupport(dim)
            self.f_lstm = AttentionLSTM(dim, steps)

    def extra_repr(self) -> str:
        steps = f", steps={self.f_lstm.steps}" if self.fce else ""
        return f"fce={self.fce}{steps}, scale={self.scale:g}"

    def embed(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """``(f(x̂) (N*Q, D), g(x_i) (N*K, D))`` for the episode's queries and support set."""
        check_class_major(episode)
        n_s = episode.support_x.shape[0]
        z = self.encoder(torch.cat([episode.support_x, episode.query_x])).flatten(start_dim=1)
        g, f = z[:n_s], z[n_s:]
        if self.fce:
            g = self.g_lstm(g)
            f = self.f_lstm(f, g)
        return f, g

    def attention(self, episode: Episode) -> Tensor:
        """a(x̂, x_i), shape ``(N*Q, N*K)``: each query's attention over the support set."""
        f, g = self.embed(episode)
        return cosine_attention(f, g, self.scale)

    def forward(self, episode: Episode) -> Tensor:
        f, g = self.embed(episode)
        s = self.scale * cosine_similarities(f, g)                     # (NQ, N*K)
        log_a = torch.log_softmax(s, dim=1)
        # log ŷ_n = log sum_{i in class n} a_i; the support set is class-major, so class n is a block
        return torch.logsumexp(log_a.reshape(s.shape[0], episode.n_way, episode.k_shot), dim=2)


def matching_loss(model: MatchingNet, episode: Episode) -> tuple[Tensor, Tensor]:
    """-mean log ŷ_{y} over the query set: ``(loss, log ŷ)``."""
    log_y_hat = model(episode)
    return F.nll_loss(log_y_hat, episode.query_y), log_y_hat
