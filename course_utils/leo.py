"""Latent Embedding Optimization (LEO) on pre-computed features.

Rusu, A. A., Rao, D., Sygnowski, J., Vinyals, O., Pascanu, R., Osindero, S. & Hadsell, R. (2019).
Meta-Learning with Latent Embedding Optimization. ICLR 2019. https://arxiv.org/abs/1807.05960

An N-way K-shot episode arrives as feature vectors x (from a frozen, pre-trained embedding).
LEO never adapts the classifier's weights directly at first; it adapts a low-dimensional code:

    encoder        e_i = g_theta_e(x_i)                                 (N*K, n_z)
    relation net   [mu_z_n, log sigma2_z_n] = 1/(N K^2) sum_{i in class n} sum_j g_theta_r(e_i, e_j)
    latent code    z_n = mu_z_n + sigma_z_n * eps,   eps ~ N(0, I)     (reparameterisation)
    decoder        [mu_w_n, log sigma2_w_n] = g_theta_d(z_n),  w_n = mu_w_n + sigma_w_n * eps'
    classifier     logits = x W^T   (x L2-normalised; one weight vector w_n per class)

    inner loop (latent space)      z <- z - alpha * grad_z L_S(w(z))     ``inner_steps`` times
    fine-tuning (parameter space)  w <- w - eta * grad_w L_S(w)          ``finetune_steps`` times

and the meta-parameters theta = (theta_e, theta_r, theta_d, alpha, eta) (the paper writes phi)
minimise, over episodes, with the paper's names for the regularisers' weights,

    L_Q(w') + beta * mean_n KL_n + gamma * mean (stopgrad(z') - z)^2
            + lambda_1 * ||theta_e, theta_r, theta_d||^2 + lambda_2 * mean_ij (C(W_d) - I)_ij^2

(beta is the KL weight here, not the course's meta learning rate), with C(W_d) the correlation matrix
of the decoder weight's rows (one row per latent dimension), C_ij = <W_i, W_j> / (||W_i|| ||W_j||).
KL_n is summed over the n_z latent dimensions and averaged over the N classes; the official code
averages over the latent dimensions too, so the same beta weighs the KL n_z times more here. alpha
(per latent dimension) and eta (per feature) are learned, as in the paper. While meta-training both
inner loops keep their graph (``create_graph=True``), so the query loss trains the encoder,
relation net and decoder through every inner step; at test time (evaluation mode, or under
``torch.no_grad``) the steps are first order: nothing differentiates through them.

Choices that differ from the official code (noted where they matter): the KL term is the
closed form for diagonal Gaussians (the official code uses a one-sample estimate); distributions
are parameterised by log-variances (the official code: std = exp(u) - 1 + offset); one code and
one weight vector per class (the official code keeps K copies and averages their predictions).
At test time LEO uses the means (no sampling), like the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .episodes import Episode
from .protonet import check_class_major

__all__ = ["L2Normalize", "gaussian_kl", "sample_gaussian", "latent_step", "orthogonality_penalty",
           "weight_decay", "leo_objective", "LEO", "LEOOutput", "leo_forward", "episode_loss"]


class L2Normalize(nn.Module):
    """x / ||x|| along the last dimension (a module, so other models can share LEO's input)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1)


# ----------------------------------------------------------------------------- the pieces

def _check_pair(mu: Tensor, log_var: Tensor, eps: Tensor | None = None) -> None:
    for name, t in (("mu", mu), ("log_var", log_var), ("eps", eps)):
        if t is not None and not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}.")
    if mu.shape != log_var.shape or (eps is not None and eps.shape != mu.shape):
        shapes = f"mu {tuple(mu.shape)}, log_var {tuple(log_var.shape)}" + \
            (f", eps {tuple(eps.shape)}" if eps is not None else "")
        raise ValueError(f"mean, log-variance (and noise) must have the same shape; got {shapes}.")


def gaussian_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) per row: 1/2 sum_d (sigma^2 + mu^2 - 1 - log sigma^2). ``(N, d) -> (N,)``."""
    _check_pair(mu, log_var)
    return 0.5 * (log_var.exp() + mu.pow(2) - 1.0 - log_var).sum(dim=-1)


def sample_gaussian(mu: Tensor, log_var: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """Reparameterised sample ``mu + sigma * eps`` (sigma = exp(log_var / 2)) and its KL to N(0, I) per row.

    ``eps`` is standard normal noise of ``mu``'s shape (zeros give the mean). Shapes ``(N, d)``;
    returns ``(sample (N, d), kl (N,))``. The sample is differentiable in ``mu`` and ``log_var``.
    """
    _check_pair(mu, log_var, eps)
    return mu + torch.exp(0.5 * log_var) * eps, gaussian_kl(mu, log_var)


def latent_step(z: Tensor, support_loss: Callable[[Tensor], Tensor], alpha: Tensor | float,
                create_graph: bool = True) -> Tensor:
    """One gradient step ``z - alpha * grad_z support_loss(z)``.

    ``alpha`` is a number or a tensor broadcastable to ``z`` (per latent dimension). With
    ``create_graph=True`` (meta-training) the gradient keeps its graph, so an outer loss can
    differentiate through the step; with ``False`` (test time) the gradient is a constant and
    ``z'`` is a function of ``z`` only (so a next step can still differentiate). LEO uses the same
    step for the latent codes (``z``, ``alpha``) and, in fine-tuning, for the weights (``w``, ``eta``).
    """
    if not isinstance(z, Tensor) or not z.requires_grad:
        raise ValueError("latent_step needs a tensor z that requires grad (it is a function of the "
                         "encoder's output); to adapt a constant code, pass z.detach().requires_grad_().")
    loss = support_loss(z)
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise ValueError("support_loss(z) must return a scalar tensor.")
    (g,) = torch.autograd.grad(loss, z, create_graph=create_graph)
    return z - alpha * g


def orthogonality_penalty(W: Tensor) -> Tensor:
    """mean_ij (C_ij - I_ij)^2 with C = W W^T / (||W_i|| ||W_j||), the rows' correlation matrix.

    Zero exactly when the rows of ``W`` are orthogonal (any lengths). ``W``: (rows, columns); LEO
    passes the decoder weight (n_z, 2D): one row per latent dimension.
    """
    if not isinstance(W, Tensor) or W.dim() != 2:
        raise ValueError(f"W must be a 2-D weight matrix, got {tuple(W.shape) if isinstance(W, Tensor) else W!r}.")
    n = W.norm(dim=1, keepdim=True) + 1e-12
    C = (W @ W.T) / (n @ n.T)
    return (C - torch.eye(W.shape[0], dtype=W.dtype, device=W.device)).pow(2).mean()


def weight_decay(weights: list[Tensor]) -> Tensor:
    """||theta||^2: the sum of the squares of every entry of every tensor in ``weights``."""
    return sum(w.pow(2).sum() for w in weights)


def leo_objective(query_logits: Tensor, query_y: Tensor, kl: Tensor, z_init: Tensor, z_adapted: Tensor,
                  decoder_weight: Tensor, weights: list[Tensor], beta: float, gamma: float,
                  lambda_1: float, lambda_2: float) -> Tensor:
    """L_Q + beta mean_n KL_n + gamma mean (stopgrad(z') - z)^2 + lambda_1 ||weights||^2 + lambda_2 orthogonality(W_d).

    ``kl`` (N,) is each class's KL (summed over the latent dimensions); ``weights`` the tensors that
    weight decay covers (the encoder's, relation net's and decoder's weights: ``LEO.decayed_weights()``).
    """
    if z_init.shape != z_adapted.shape:
        raise ValueError(f"z_init {tuple(z_init.shape)} and z_adapted {tuple(z_adapted.shape)} must match.")
    l_q = F.cross_entropy(query_logits, query_y)
    encoder_penalty = (z_adapted.detach() - z_init).pow(2).mean()
    return (l_q + beta * kl.mean() + gamma * encoder_penalty + lambda_1 * weight_decay(weights)
            + lambda_2 * orthogonality_penalty(decoder_weight))


# ----------------------------------------------------------------------------- the model

def _check_positive(name: str, v: float, allow_zero: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {v!r}.")


def _check_int(name: str, v: int, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")


class LEO(nn.Module):
    """LEO's meta-parameters theta and hyper-parameters, for features of dimension ``feature_dim``.

    ``encoder`` (D -> n_z, no bias), ``relation`` (3 layers 2 n_z -> 2 n_z, ReLU between),
    ``decoder_weight`` (n_z, 2 D: means then log-variances of w), learned ``alpha`` (n_z,) and
    ``eta`` (D,), each starting at the given number. The regularisers' weights have the paper's
    names: ``beta`` (KL), ``gamma`` (encoder penalty), ``lambda_1`` (weight decay), ``lambda_2``
    (orthogonality). ``dropout`` applies to the features during meta-training.
    """

    def __init__(self, feature_dim: int, n_z: int = 16, inner_steps: int = 5, finetune_steps: int = 5,
                 alpha: float = 1.0, eta: float = 1e-3, learn_lr: bool = True, beta: float = 1e-3,
                 gamma: float = 1e-3, lambda_1: float = 1e-4, lambda_2: float = 1e-3, dropout: float = 0.0):
        super().__init__()
        _check_int("feature_dim", feature_dim, 1)
        _check_int("n_z", n_z, 1)
        _check_int("inner_steps", inner_steps, 0)
        _check_int("finetune_steps", finetune_steps, 0)
        for name, v in (("alpha", alpha), ("eta", eta)):
            _check_positive(name, v)
        for name, v in (("beta", beta), ("gamma", gamma), ("lambda_1", lambda_1), ("lambda_2", lambda_2)):
            _check_positive(name, v, allow_zero=True)
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        self.feature_dim, self.n_z = feature_dim, n_z
        self.inner_steps, self.finetune_steps = inner_steps, finetune_steps
        self.beta, self.gamma, self.lambda_1, self.lambda_2 = beta, gamma, lambda_1, lambda_2
        self.learn_lr = learn_lr
        self.encoder = nn.Linear(feature_dim, n_z, bias=False)
        self.relation = nn.Sequential(nn.Linear(2 * n_z, 2 * n_z, bias=False), nn.ReLU(),
                                      nn.Linear(2 * n_z, 2 * n_z, bias=False), nn.ReLU(),
                                      nn.Linear(2 * n_z, 2 * n_z, bias=False))
        self.decoder_weight = nn.Parameter(torch.empty(n_z, 2 * feature_dim))
        nn.init.xavier_uniform_(self.decoder_weight)
        self.drop = nn.Dropout(dropout)
        lr_a, lr_e = torch.full((n_z,), float(alpha)), torch.full((feature_dim,), float(eta))
        if learn_lr:
            self.alpha, self.eta = nn.Parameter(lr_a), nn.Parameter(lr_e)
        else:
            self.register_buffer("alpha", lr_a)
            self.register_buffer("eta", lr_e)
        # the weights' std starts near a Glorot scale (official code: a std offset sqrt(2/(fan_in+fan_out)))
        self.log_var_offset = -math.log(feature_dim)

    def extra_repr(self) -> str:
        return (f"feature_dim={self.feature_dim}, n_z={self.n_z}, inner_steps={self.inner_steps}, "
                f"finetune_steps={self.finetune_steps}, learn_lr={self.learn_lr}, beta={self.beta}, "
                f"gamma={self.gamma}, lambda_1={self.lambda_1}, lambda_2={self.lambda_2}")

    def features(self, x: Tensor) -> Tensor:
        """L2-normalised features (dropout while training): ``(rows, D) -> (rows, D)``."""
        if not isinstance(x, Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            hint = (" These look like images: LEO works on pre-computed features; embed the classes first "
                    "(baselines.embed_classes)." if isinstance(x, Tensor) and x.dim() >= 3 else "")
            raise ValueError(f"LEO takes features of shape (rows, D) for one episode, got {shape}.{hint}")
        if x.shape[1] != self.feature_dim:
            raise ValueError(f"The features are {x.shape[1]}-d but this LEO was built with feature_dim="
                             f"{self.feature_dim}; embed with the same network, or build LEO(feature_dim="
                             f"{x.shape[1]}).")
        return self.drop(F.normalize(x.float(), dim=-1))

    def encode(self, x_s: Tensor, n_way: int, k_shot: int, per_example: bool = False) -> tuple[Tensor, Tensor]:
        """(mu_z, log sigma2_z), each ``(N, n_z)`` (``(N*K, n_z)`` with ``per_example``) from class-major support features."""
        if x_s.shape[0] != n_way * k_shot:
            raise ValueError(f"The support set has {x_s.shape[0]} rows; an {n_way}-way {k_shot}-shot "
                             f"episode has n_way * k_shot = {n_way * k_shot}.")
        e = self.encoder(x_s)                                             # (NK, n_z)
        m = e.shape[0]
        pairs = torch.cat([e.unsqueeze(1).expand(m, m, -1), e.unsqueeze(0).expand(m, m, -1)], dim=-1)
        r = self.relation(pairs).mean(dim=1)                              # (NK, 2 n_z): mean over partners
        if not per_example:
            r = r.reshape(n_way, k_shot, -1).mean(dim=1)                  # (N, 2 n_z): mean over the class
        return r[:, :self.n_z], r[:, self.n_z:]

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(mu_w, log sigma2_w), each ``(N, D)``, from codes ``z (N, n_z)``."""
        if z.dim() != 2 or z.shape[1] != self.n_z:
            raise ValueError(f"z must have shape (N, n_z={self.n_z}), got {tuple(z.shape)}.")
        h = z @ self.decoder_weight                                       # (N, 2D)
        return h[:, :self.feature_dim], h[:, self.feature_dim:] + self.log_var_offset

    def noise(self, like: Tensor) -> Tensor:
        """eps ~ N(0, I) while meta-training; zeros (the mean) in evaluation mode, as the paper."""
        return torch.randn_like(like) if self.training else torch.zeros_like(like)

    @staticmethod
    def logits(x: Tensor, w: Tensor) -> Tensor:
        """x W^T: ``(rows, D), (N, D) -> (rows, N)``."""
        return x @ w.T

    def decayed_weights(self) -> list[Tensor]:
        """The tensors weight decay covers: the encoder's, relation net's and decoder's weights (not alpha, eta)."""
        return [p for n, p in self.named_parameters() if n not in {"alpha", "eta"}]

    def l2_penalty(self) -> Tensor:
        """||theta||^2 over the encoder, relation and decoder weights (not the learning rates)."""
        return weight_decay(self.decayed_weights())


@dataclass
class LEOOutput:
    """Everything one episode's forward pass produces (codes are ``(N, n_z)``, weights ``(N, D)``)."""

    loss: Tensor
    logits: Tensor
    z_init: Tensor
    z_adapted: Tensor
    w: Tensor
    kl: Tensor
    support_losses: list[float]


def _check_episode(model: LEO, episode: Episode) -> None:
    if not isinstance(model, LEO):
        raise ValueError(f"model must be a leo.LEO, got {type(model).__name__}.")
    if not isinstance(episode, Episode):
        raise ValueError(f"episode must be an episodes.Episode, got {type(episode).__name__}.")
    check_class_major(episode)


def leo_forward(model: LEO, episode: Episode, step: Callable = latent_step, sample: Callable = sample_gaussian,
                objective: Callable = leo_objective, inner_steps: int | None = None,
                finetune_steps: int | None = None, create_graph: bool | None = None) -> LEOOutput:
    """One episode: encode, sample z, latent inner loop, decode, fine-tune w, query loss + regularisers.

    ``step``, ``sample`` and ``objective`` default to this module's and may be replaced by the
    notebook's exercises; ``inner_steps``/``finetune_steps`` override the model's (e.g. 0 to measure
    what each stage adds). ``create_graph`` (default: ``model.training and torch.is_grad_enabled()``)
    says whether the inner steps keep their graph (meta-training) or are first order (evaluation:
    the code is adapted from a detached copy, and no second-order graph is built). Works under
    ``torch.no_grad`` too (the inner loops re-enable gradients).
    ``support_losses``: the support loss before each latent step, then after fine-tuning.
    """
    _check_episode(model, episode)
    inner_steps = model.inner_steps if inner_steps is None else inner_steps
    finetune_steps = model.finetune_steps if finetune_steps is None else finetune_steps
    _check_int("inner_steps", inner_steps, 0)
    _check_int("finetune_steps", finetune_steps, 0)
    if create_graph is None:
        create_graph = model.training and torch.is_grad_enabled()
    n, k = episode.n_way, episode.k_shot
    x_s, x_q = model.features(episode.support_x), model.features(episode.query_x)
    y_s = episode.support_y
    trace: list[float] = []
    with torch.enable_grad():
        mu_z, log_var_z = model.encode(x_s, n, k)
        z, kl = sample(mu_z, log_var_z, model.noise(mu_z))
        # evaluation, or frozen parameters: adapt a detached copy of the code
        z_init = z if (create_graph and z.requires_grad) else z.detach().requires_grad_()
        z = z_init

        def loss_of_z(z: Tensor) -> Tensor:
            mu_w, log_var_w = model.decode(z)
            w, _ = sample(mu_w, log_var_w, model.noise(mu_w))
            loss = F.cross_entropy(model.logits(x_s, w), y_s)
            trace.append(loss.item())
            return loss

        for _ in range(inner_steps):
            z = step(z, loss_of_z, model.alpha, create_graph=create_graph)
        mu_w, log_var_w = model.decode(z)
        w, _ = sample(mu_w, log_var_w, model.noise(mu_w))
        if not w.requires_grad:  # frozen decoder and no latent step: fine-tune a detached copy
            w = w.detach().requires_grad_()
        for _ in range(finetune_steps):
            w = step(w, lambda w: F.cross_entropy(model.logits(x_s, w), y_s), model.eta,
                     create_graph=create_graph)
        logits = model.logits(x_q, w)
        loss = objective(logits, episode.query_y, kl, z_init, z, model.decoder_weight, model.decayed_weights(),
                         model.beta, model.gamma, model.lambda_1, model.lambda_2)
    with torch.no_grad():
        trace.append(F.cross_entropy(model.logits(x_s, w), y_s).item())
    return LEOOutput(loss, logits, z_init, z, w, kl, trace)


def episode_loss(model: LEO, episode: Episode) -> tuple[Tensor, Tensor]:
    """``(loss, query logits)`` for ``episodic.train_episodic`` and ``evaluation.evaluate``."""
    out = leo_forward(model, episode)
    return out.loss, out.logits

