"""Checks for chapter 06 (LEO): the latent inner step, sampling with the reparameterisation trick,
and the full LEO objective.

Classic mistakes recognised (each computed, then matched against the student's output): an inner
step that climbs the gradient, forgets alpha, detaches z (no gradient reaches the encoder) or drops
``create_graph`` (no gradient reaches the decoder through the step); sampling without the
reparameterisation trick (no gradient to mu and sigma), the variance or the log-variance used as the
standard deviation, a KL with the wrong sign (any negative KL is called impossible), without its 1/2,
or averaged over dimensions; an inner step whose gradient is averaged over the classes; an encoder
penalty without the stop-gradient, or with the stop-gradient on z_init instead of z'; the KL term
subtracted; penalties summed (squared norms, ||.||^2 read literally) or as plain norms where the
objective averages; an unnormalised orthogonality penalty (W W^T instead of the correlation matrix) or
one on the columns.

Devices: the 6.3 probe builds its tensors on CUDA when a GPU is present (float64), so a tensor made
inside the student's function without ``device=`` (the classic ``torch.eye(n)``) fails there with a
named diagnosis. On a CPU-only machine that mistake cannot be observed (every tensor is on the CPU);
the hint and the exercise's docstring tell the student to write
``torch.eye(n, device=W.device, dtype=W.dtype)``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import Mistake, diagnose, expect, expect_grad, expect_shape, expect_type, run_check
from ..leo import latent_step as reference_latent_step
from ..leo import leo_objective as reference_leo_objective
from ..leo import orthogonality_penalty
from ..leo import sample_gaussian as reference_sample_gaussian

__all__ = ["EXERCISES", "latent_step", "sample_gaussian", "leo_objective", "reference_latent_step",
           "reference_sample_gaussian", "reference_leo_objective"]

EXERCISES = ["6.1", "6.2", "6.3"]
D = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- 6.1

def _latent_problem(seed: int = 0):
    """A tiny encoder -> z -> decoder -> support loss, in float64 (N=3 classes, n_z=4, D=5)."""
    g = _gen(seed)
    x_s = torch.randn(6, 5, generator=g, dtype=D)
    y_s = torch.arange(3).repeat_interleave(2)
    A = torch.randn(5, 4, generator=g, dtype=D).requires_grad_()        # "encoder"
    Wd = (0.5 * torch.randn(4, 5, generator=g, dtype=D)).requires_grad_()  # "decoder"
    z = x_s.reshape(3, 2, 5).mean(1) @ A                                # (3, 4), a function of A

    def support_loss(z: Tensor) -> Tensor:
        return F.cross_entropy(x_s @ (z @ Wd).T, y_s)
    alpha = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=D)
    return z, support_loss, alpha, A, Wd


def _grads(out: Tensor, v: Tensor, wrt: list[Tensor]) -> list[Tensor | None]:
    if not out.requires_grad:
        return [None] * len(wrt)
    gs = torch.autograd.grad((out * v).sum(), wrt, allow_unused=True, retain_graph=True)
    return list(gs)


def _probe_latent_step(fn: Callable) -> None:
    z, loss_fn, alpha, A, Wd = _latent_problem()
    out = fn(z, loss_fn, alpha)
    expect_shape(out, tuple(z.shape), "z' (the adapted codes)", "Return z - alpha * grad, one row per class.")
    (g,) = torch.autograd.grad(loss_fn(z), z, retain_graph=True)
    zd, gd = z.detach(), g.detach()
    want = zd - alpha * gd
    diagnose(out, want, "z'", {
        "it moves up the gradient (z + alpha * grad); the inner step *descends* the support loss.":
            zd + alpha * gd,
        "alpha is missing: z' = z - alpha * grad_z L_S.": zd - gd,
        "alpha multiplies the wrong way (z - grad / alpha).": zd - gd / alpha,
        "z' equals z: either the step is not applied, or the gradient was averaged over the classes "
        "(g.mean(0)). With a softmax classifier the per-class gradients sum to zero, so their mean is "
        "exactly zero and the 'step' does nothing. Each class's code takes its own step: z - alpha * g "
        "with g of shape (N, n_z), one row per class.": zd,
    }, atol=1e-10, rtol=1e-8)
    expect(out.requires_grad,
           "z' carries no gradient (requires_grad is False): the inner step is detached, so no gradient "
           "reaches the encoder or the decoder and the outer loss cannot train them.",
           "Write z - alpha * grad with the z you were given and create_graph=True: no .detach(), .data, "
           "torch.no_grad() or fresh tensor.")
    v = torch.randn(z.shape, generator=_gen(7), dtype=D)
    ref = reference_latent_step(z, loss_fn, alpha)
    gA, gW = _grads(out, v, [A, Wd])
    rA, rW = _grads(ref, v, [A, Wd])
    expect(gA is not None and gA.abs().sum() > 0,
           "no gradient reaches the encoder through z': the step starts from a detached z "
           "(z.detach() or z.data), so the outer loss cannot train the encoder.",
           "Write z - alpha * grad with the z you were given.")
    expect(gW is not None and gW.abs().sum() > 0,
           "no gradient reaches the decoder through the inner step: torch.autograd.grad was called without "
           "create_graph=True (or the gradient was detached), so the step's gradient is a constant.",
           "torch.autograd.grad(loss, z, create_graph=True)")
    diagnose(gW, rW, "the decoder's gradient through z'", atol=1e-9, rtol=1e-7,
             hint="Keep the gradient's graph: create_graph=True, no .detach().")
    diagnose(gA, rA, "the encoder's gradient through z'", {
        "z' is cut from z (detached), so the encoder gets only the part of its gradient that flows "
        "through grad_z L_S, not the direct path z -> z'.": rA - torch.autograd.grad(
            (z * v).sum(), A, retain_graph=True)[0],
    }, atol=1e-9, rtol=1e-7)


def latent_step(student: Callable) -> Callable:
    """Exercise 6.1: z' = z - alpha * grad_z L_S(decode(z)), differentiable."""
    return run_check("6.1", "the latent inner step", student, reference_latent_step, _probe_latent_step)


# ----------------------------------------------------------------------------- 6.2

def _probe_sample(fn: Callable) -> None:
    g = _gen(3)
    mu = torch.randn(3, 4, generator=g, dtype=D).requires_grad_()
    log_var = (0.8 * torch.randn(3, 4, generator=g, dtype=D) - 0.5).requires_grad_()
    eps = torch.randn(3, 4, generator=g, dtype=D)
    out = fn(mu, log_var, eps)
    expect(isinstance(out, tuple) and len(out) == 2,
           f"sample_gaussian should return a pair (sample, kl), got {type(out).__name__}"
           + (f" of length {len(out)}" if isinstance(out, tuple) else "") + ".")
    s, kl = out
    expect_shape(s, (3, 4), "the sample", "One sample per entry of mu: mu + sigma * eps.")
    expect_shape(kl, (3,), "the KL", "One KL per row: sum over the last dimension.")
    m, lv = mu.detach(), log_var.detach()
    sigma = torch.exp(0.5 * lv)
    want_s = m + sigma * eps
    expect(s.requires_grad,
           "the sample carries no gradient to mu and sigma: it was drawn without the reparameterisation "
           "trick (torch.normal, Normal(...).sample(), or detached). The decoder and encoder could not learn.",
           "Write mu + sigma * eps with the eps you are given: the noise is the only random part.")
    diagnose(s, want_s, "the sample", {
        "it uses the variance as the standard deviation: sigma = exp(log_var / 2), not exp(log_var).":
            m + torch.exp(lv) * eps,
        "it uses the log-variance itself as the standard deviation: sigma = exp(log_var / 2).": m + lv * eps,
        "it uses exp(-log_var / 2): sigma = exp(+log_var / 2).": m + torch.exp(-0.5 * lv) * eps,
        "it is the mean alone: add sigma * eps.": m,
    }, atol=1e-10, rtol=1e-8, hint="Use the noise eps you are given (no torch.randn inside): "
                                   "sample = mu + exp(log_var / 2) * eps.")
    g_mu, g_lv = torch.autograd.grad((s * eps.flip(0)).sum(), [mu, log_var], allow_unused=True,
                                     retain_graph=True)
    expect(g_mu is not None and g_lv is not None,
           "the sample is not differentiable in both mu and log_var (one of them is detached): the "
           "reparameterisation trick writes it as mu + exp(log_var / 2) * eps.")
    diagnose(g_lv, 0.5 * sigma * eps * eps.flip(0), "d sample / d log_var (times a vector)",
             atol=1e-10, rtol=1e-8)
    want_kl = 0.5 * (lv.exp() + m ** 2 - 1 - lv).sum(-1)
    kl_d = kl.detach()
    if torch.isfinite(kl_d).all() and (kl_d < -1e-9).any():
        whole = torch.allclose(kl_d, -want_kl, atol=1e-10, rtol=1e-8)
        raise Mistake(
            f"the KL is negative ({kl_d.min().item():.6g}), which is impossible: a KL divergence is never "
            "negative. " + ("It looks like the whole KL has the wrong sign: KL(q || N(0, I)) = "
                            "1/2 sum (sigma^2 + mu^2 - 1 - log sigma^2) >= 0. (The VAE paper's term "
                            "1/2 sum (1 + log sigma^2 - mu^2 - sigma^2) is *minus* the KL.)" if whole else
                            "Check the sign of log_var in it, and of the 1 + log sigma^2 - mu^2 - sigma^2 "
                            "term: the KL is 1/2 sum (sigma^2 + mu^2 - 1 - log sigma^2), i.e. minus that term."),
            "0.5 * (log_var.exp() + mu ** 2 - 1 - log_var).sum(-1)")
    diagnose(kl, want_kl, "the KL", {
        "the KL has the wrong sign: KL(q || N(0, I)) = 1/2 sum (sigma^2 + mu^2 - 1 - log sigma^2) >= 0.":
            -want_kl,
        "the KL lacks its factor 1/2.": 2 * want_kl,
        "the KL is averaged over the dimensions; sum them (one KL per row).": want_kl / 4,
        "the KL uses sigma instead of sigma^2 (sigma^2 = exp(log_var)).":
            0.5 * (sigma + m ** 2 - 1 - lv).sum(-1),
        "the KL forgets the - 1 in 1/2 sum (sigma^2 + mu^2 - 1 - log sigma^2).":
            0.5 * (lv.exp() + m ** 2 - lv).sum(-1),
        "the KL is for the sample, not the distribution: use mu and log_var, never the sample.":
            0.5 * (lv.exp() + want_s ** 2 - 1 - lv).sum(-1),
    }, atol=1e-10, rtol=1e-8)
    expect_grad(kl, "the KL", "The KL is a loss term: it must stay a function of mu and log_var.")


def sample_gaussian(student: Callable) -> Callable:
    """Exercise 6.2: w = mu + sigma * eps (reparameterisation) and KL(N(mu, sigma^2) || N(0, I))."""
    return run_check("6.2", "sampling with the reparameterisation trick", student, reference_sample_gaussian,
                     _probe_sample)


# ----------------------------------------------------------------------------- 6.3

def _probe_device() -> torch.device:
    """CUDA when present (float64 works there; MPS lacks it), else the CPU. See the module docstring."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _objective_inputs(seed: int = 5, device: torch.device | None = None):
    """Small fixed inputs, drawn on the CPU (the same numbers everywhere), then moved to ``device``."""
    dev = device or torch.device("cpu")
    g = _gen(seed)
    logits = torch.randn(6, 3, generator=g, dtype=D)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    kl = torch.rand(3, generator=g, dtype=D) + 0.5
    z0 = torch.randn(3, 4, generator=g, dtype=D)
    z1 = z0 + 0.7 * torch.randn(3, 4, generator=g, dtype=D)
    W = torch.randn(4, 10, generator=g, dtype=D)
    leaf = lambda t: t.to(dev).requires_grad_()  # noqa: E731
    return (leaf(logits), y.to(dev), leaf(kl), leaf(z0), leaf(z1), leaf(W), 0.5, 0.7, 0.3)


def _ortho_cols(W: Tensor) -> Tensor:
    return orthogonality_penalty(W.T)


def _gram(W: Tensor) -> Tensor:
    return (W @ W.T - torch.eye(W.shape[0], dtype=W.dtype, device=W.device)).pow(2).mean()


def _ortho_sum(W: Tensor) -> Tensor:
    """||C - I||_F^2, the squared Frobenius norm: a sum over the n_z^2 entries instead of their mean."""
    return orthogonality_penalty(W) * W.shape[0] ** 2


_SUMMED = ("you summed where the objective averages: ")


def _probe_objective(fn: Callable) -> None:
    dev = _probe_device()
    logits, y, kl, z0, z1, W, beta, gamma, lam = _objective_inputs(device=dev)
    try:
        out = fn(logits, y, kl, z0, z1, W, beta, gamma, lam)
    except RuntimeError as e:
        if "device" not in str(e):
            raise
        raise Mistake(f"your function mixes devices on {dev}: {e}. A tensor created inside the function "
                      "(typically torch.eye(n)) lands on the CPU while the inputs are on the GPU.",
                      "Create it where the inputs live: torch.eye(n, device=W.device, dtype=W.dtype).") from e
    expect_type(out, Tensor, "the objective")
    expect(out.dim() == 0, f"the objective should be a scalar tensor, got shape {tuple(out.shape)}.",
           "Average the query cross-entropy and the penalties to one number.")
    with torch.no_grad():
        lq = F.cross_entropy(logits, y)
        lq_sum = F.cross_entropy(logits, y, reduction="sum")
        k = kl.mean()
        diff = z1 - z0
        pen = diff.pow(2).mean()
        pen_sum, pen_norm = diff.pow(2).sum(), diff.norm()
        orth = orthogonality_penalty(W)
        orth_sum = _ortho_sum(W)
        orth_norm = orth_sum.sqrt()
    base = lq + beta * k
    want = base + gamma * pen + lam * orth
    diagnose(out, want, "the objective", {
        "the KL term is subtracted: the objective *adds* beta * KL (it pulls q(z | S) towards the prior).":
            lq - beta * k + gamma * pen + lam * orth,
        "the KL is summed over the classes; this course averages it (beta * kl.mean()).":
            lq + beta * kl.detach().sum() + gamma * pen + lam * orth,
        _SUMMED + "both penalties are sums (||z' - z||^2 and ||C - I||^2 read as squared norms), but the "
        "objective takes means: gamma * ((z' - z) ** 2).mean() and lam * ((C - I) ** 2).mean().":
            base + gamma * pen_sum + lam * orth_sum,
        _SUMMED + "both penalties are plain norms (torch.norm / torch.linalg.norm), but the objective takes "
        "means of squares: gamma * ((z' - z) ** 2).mean() and lam * ((C - I) ** 2).mean().":
            base + gamma * pen_norm + lam * orth_norm,
        _SUMMED + "the encoder penalty is the squared norm ||z' - z||^2 (a sum over the N x n_z entries); "
        "the objective takes the mean squared difference ((z' - z) ** 2).mean().":
            base + gamma * pen_sum + lam * orth,
        _SUMMED + "the encoder penalty is the norm ||z' - z|| (not even squared); the objective takes the "
        "mean squared difference ((z' - z) ** 2).mean().": base + gamma * pen_norm + lam * orth,
        _SUMMED + "the orthogonality penalty is the squared Frobenius norm ||C - I||^2 (a sum over the "
        "n_z x n_z entries); the objective takes the mean, ((C - I) ** 2).mean().":
            base + gamma * pen + lam * orth_sum,
        _SUMMED + "the orthogonality penalty is the Frobenius norm ||C - I|| (torch.linalg.norm, not even "
        "squared); the objective takes the mean of the squares, ((C - I) ** 2).mean().":
            base + gamma * pen + lam * orth_norm,
        "the orthogonality penalty uses W W^T without dividing by the row norms: it must be the "
        "correlation matrix, C_ij = <W_i, W_j> / (||W_i|| ||W_j||).": base + gamma * pen + lam * _gram(W.detach()),
        "the orthogonality penalty is on the columns (W^T W); LEO's is on the rows of the decoder weight "
        "(n_z, 2D): one row per latent dimension.": base + gamma * pen + lam * _ortho_cols(W.detach()),
        "the query loss is summed over the queries; use the mean cross-entropy.":
            lq_sum + beta * k + gamma * pen + lam * orth,
        "the orthogonality penalty is missing (lam * mean((C - I)^2)).": base + gamma * pen,
        "the encoder penalty is missing (gamma * mean((stopgrad(z') - z)^2)).": base + lam * orth,
        "the KL term is missing (beta * KL).": lq + gamma * pen + lam * orth,
        "beta and gamma are swapped.": lq + gamma * k + beta * pen + lam * orth,
    }, atol=1e-10, rtol=1e-8)
    expect(out.requires_grad, "the objective carries no gradient: nothing could be trained with it.")
    g_logits, g_kl, g_z0, g_z1, g_W = torch.autograd.grad(out, [logits, kl, z0, z1, W], allow_unused=True)
    z0_cut = g_z0 is None or g_z0.abs().max() < 1e-12
    z1_cut = g_z1 is None or g_z1.abs().max() < 1e-12
    expect(not (z0_cut and not z1_cut),
           "the stop-gradient is on the wrong side: z_init (the encoder's code) is detached and z_adapted is "
           "not. The encoder then gets no gradient from the penalty, so nothing pulls its proposal z towards "
           "where adaptation ends; instead the penalty's gradient flows into z' and, through the inner "
           "steps, pulls the adaptation back towards the encoder's guess: the opposite of its purpose.",
           "gamma * (z_adapted.detach() - z_init).pow(2).mean(): detach z', keep z_init.")
    expect(z1_cut,
           "the encoder penalty sends gradient into z' (the adapted codes): stop the gradient with "
           "z_adapted.detach(). Without it the penalty pulls the adaptation back towards z, instead of "
           "pulling the encoder's z towards where adaptation ends.",
           "gamma * (z_adapted.detach() - z_init).pow(2).mean()")
    expect(g_z0 is not None, "the encoder penalty does not reach z_init (the encoder's codes): z_init must "
           "not be detached; only z_adapted is.")
    diagnose(g_z0, 2 * gamma * (z0 - z1).detach() / z0.numel(), "d objective / d z_init", atol=1e-10, rtol=1e-8)
    expect(g_kl is not None, "the objective does not depend on the KL tensor (is it detached?).")
    diagnose(g_kl, torch.full_like(kl, beta / kl.numel()), "d objective / d kl", atol=1e-10, rtol=1e-8)
    expect(g_W is not None, "the orthogonality penalty does not reach the decoder weight (is it detached?).")


def leo_objective(student: Callable) -> Callable:
    """Exercise 6.3: L_Q + beta mean(KL) + gamma mean((stopgrad(z') - z)^2) + lam mean_ij((C(W_d) - I)^2).

    On a GPU machine the probe's tensors are on CUDA, so a ``torch.eye(n)`` without ``device=`` is caught;
    on a CPU it cannot be (see the module docstring)."""
    return run_check("6.3", "the LEO objective", student, reference_leo_objective, _probe_objective)
