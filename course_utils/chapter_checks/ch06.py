"""Checks for chapter 06 (LEO): the latent inner step, sampling with the reparameterisation trick,
and the full LEO objective.

Each probe calls the student's function on small float64 inputs and checks one property at a time,
so that the message names the part that is wrong:

- 6.1 ``latent_step(z, support_loss, alpha, create_graph)``: two support losses (a softmax
  classifier and a quadratic), ``alpha`` per latent dimension and as a plain number, ``create_graph``
  True and False. Named: a step up the gradient, alpha missing / inverted / averaged / one entry of
  it, the gradient averaged over the classes, a detached z' or z, ``create_graph`` not passed on (or
  ignored when False), z' cut from z when ``create_graph=False``, the step computed under
  ``torch.no_grad()``, ``.backward()`` and ``z.grad`` instead of ``torch.autograd.grad`` (the parameters
  get a ``.grad``, ``z.grad`` is None, or the graph is freed).
- 6.2 ``sample_gaussian(mu, log_var, eps)``: the sample drawn without the reparameterisation trick
  (its own noise, ``torch.normal``, ``.sample()``), sigma / variance / log-variance confusions, the
  KL's sign (any negative KL is called impossible), its 1/2, its -1, the KL averaged over the latent
  dimensions (the chapter sums them) or reduced over the wrong axis, a KL of the sample, log_var
  read as a variance or as log sigma. A sample right only up to float32 rounding gets the dtype message
  of :func:`checks.expect_close` alone (no hint about the noise).
- 6.3 ``leo_objective(..., weights, beta, gamma, lambda_1, lambda_2)``: every term on its own (the
  objective with all weights 0 is the query loss; with one weight set, the difference is that one
  term), then their sum and the gradients. Named: the query loss summed, on probabilities, or with
  class-major labels instead of ``query_y``; the KL subtracted, summed over the classes or divided by
  n_z; the encoder penalty without its stop-gradient or with it on the wrong side, summed, as a norm;
  weight decay halved, averaged, as norms or over some tensors only; the orthogonality penalty on the
  columns (W^T W) instead of the rows (W W^T), unnormalised, summed, as a norm, without the identity,
  or on another matrix than the decoder's (e.g. a relation net's); weights swapped or ignored.

Devices: each exercise is also called once with its tensors on PyTorch's ``meta`` device
(:func:`checks.expect_device_agnostic`), so a tensor made inside without ``device=`` (the classic
``torch.eye(n)``) is caught on a CPU-only machine too, not only on a GPU.

Not checkable here: "the inner step on the wrong set". The step receives the support loss as a
function (``support_loss``) and the objective receives the query logits, so no exercise chooses the
set; the notebook's ``leo_episode`` does, and section 9 compares it with ``course_utils.leo``.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import (Mistake, describe, diagnose, expect, expect_close, expect_device_agnostic, expect_grad,
                      expect_shape, expect_type, run_check)
from ..leo import latent_step as reference_latent_step
from ..leo import leo_objective as reference_leo_objective
from ..leo import orthogonality_penalty
from ..leo import sample_gaussian as reference_sample_gaussian
from ..leo import weight_decay

__all__ = ["EXERCISES", "latent_step", "sample_gaussian", "leo_objective", "reference_latent_step",
           "reference_sample_gaussian", "reference_leo_objective"]

EXERCISES = ["6.1", "6.2", "6.3"]
D = torch.float64
TOL = dict(atol=1e-10, rtol=1e-8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _raw(fn: Callable) -> Callable:
    """The student's own function behind the check's guard (for the meta-device call)."""
    return getattr(fn, "__wrapped__", fn)


def _grads(out: Tensor, v: Tensor, wrt: list[Tensor]) -> list[Tensor | None]:
    if not (isinstance(out, Tensor) and out.requires_grad):
        return [None] * len(wrt)
    return list(torch.autograd.grad((out * v).sum(), wrt, allow_unused=True, retain_graph=True))


def _zero(g: Tensor | None) -> bool:
    return g is None or bool(g.abs().max() < 1e-12)


# ----------------------------------------------------------------------------- 6.1

def _softmax_problem(seed: int = 0, device: str | torch.device = "cpu"):
    """A tiny encoder -> z -> decoder -> support loss (N=3 classes, n_z=4, D=5), alpha per dimension."""
    g = _gen(seed)
    x_s = torch.randn(6, 5, generator=g, dtype=D).to(device)
    y_s = torch.arange(3).repeat_interleave(2).to(device)
    A = torch.randn(5, 4, generator=g, dtype=D).to(device).requires_grad_()          # "encoder"
    Wd = (0.5 * torch.randn(4, 5, generator=g, dtype=D)).to(device).requires_grad_()  # "decoder"
    z = x_s.reshape(3, 2, 5).mean(1) @ A                                              # (3, 4), a function of A

    def support_loss(z: Tensor) -> Tensor:
        return F.cross_entropy(x_s @ (z @ Wd).T, y_s)
    alpha = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=D).to(device)
    return z, support_loss, alpha, A, Wd


def _quadratic_problem(seed: int = 1):
    """Another support loss: a least-squares fit, z (2, 3) a function of B; alpha a plain number."""
    g = _gen(seed)
    x = torch.randn(2, 4, generator=g, dtype=D)
    B = torch.randn(4, 3, generator=g, dtype=D).requires_grad_()
    M = torch.randn(3, 5, generator=g, dtype=D).requires_grad_()
    t = torch.randn(2, 5, generator=g, dtype=D)
    z = x @ B

    def support_loss(z: Tensor) -> Tensor:
        return ((z @ M - t) ** 2).mean()
    return z, support_loss, 0.3, B, M


def _step_mistakes(z: Tensor, g: Tensor, alpha: Tensor | float, softmax: bool) -> dict[str, Tensor]:
    m = {
        "it moves up the gradient (z + alpha * grad); the inner step *descends* the support loss.": z + alpha * g,
        "alpha is missing: z' = z - alpha * grad_z L_S.": z - g,
        "alpha multiplies the wrong way (z - grad / alpha).": z - g / alpha,
    }
    if isinstance(alpha, Tensor) and alpha.numel() > 1:
        m["alpha is used as one number (alpha.mean()): it holds one step size per latent dimension, "
          "so multiply elementwise, z - alpha * grad (broadcast over the classes)."] = z - alpha.mean() * g
        m["only one entry of alpha is used (alpha[0]): it holds one step size per latent dimension, "
          "so multiply elementwise, z - alpha * grad."] = z - alpha[0] * g
    if softmax:
        m["z' equals z: either the step is not applied, or the gradient was averaged over the classes "
          "(g.mean(0)). With a softmax classifier the per-class gradients sum to zero, so their mean is "
          "exactly zero and the 'step' does nothing. Each class's code takes its own step: z - alpha * g "
          "with g of shape (N, n_z), one row per class."] = z
    else:
        m["the gradient is averaged over the classes (g.mean(0)): each class's code takes its own step, "
          "z - alpha * g with g of shape (N, n_z)."] = z - alpha * g.mean(0)
        m["z' equals z: the step is not applied."] = z
    return m


_BACKWARD = ("use torch.autograd.grad(loss, z, create_graph=create_graph), not .backward() and .grad: z is not "
             "a leaf (the encoder computed it), so z.grad is None, and backward() frees the graph (the outer loss "
             "can then no longer reach the encoder through z') and writes .grad into the model's parameters (the "
             "encoder's and decoder's), where the optimiser would find stray gradients.")
_BACKWARD_HINT = "(g,) = torch.autograd.grad(support_loss(z), z, create_graph=create_graph); return z - alpha * g"


def _reads_grad(fn: Callable) -> bool:
    """The function's source reads a ``.grad`` attribute (``z.grad``; not ``torch.autograd.grad(...)``)."""
    try:
        src = inspect.getsource(_raw(fn))
    except (OSError, TypeError):
        return True  # source unavailable: the NoneType error alone is the clue
    return re.search(r"\.grad\b(?!\s*\()", src) is not None


def _backward_used(leaves: tuple[Tensor, ...], error: BaseException | None = None, fn: Callable | None = None) -> None:
    """Name .backward() / .grad: the parameters got a .grad, or z.grad was None."""
    if any(t.grad is not None for t in leaves):
        raise Mistake("your function calls .backward(). " + _BACKWARD[0].upper() + _BACKWARD[1:],
                      _BACKWARD_HINT) from error
    if error is None or not getattr(error, "_course_student", False):
        return
    text = str(error)
    if isinstance(error, (TypeError, AttributeError)) and "NoneType" in text and (fn is None or _reads_grad(fn)):
        raise Mistake(f"your code raised {type(error).__name__}: {text}. That None is most likely z.grad: "
                      + _BACKWARD, _BACKWARD_HINT) from error


def _freed_graph(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and "backward through the graph a second time" in str(error)


def _call_step(fn: Callable, z: Tensor, loss: Callable, alpha: Any, create_graph: bool, note: str,
               leaves: tuple[Tensor, ...] = ()) -> Tensor:
    try:
        out = fn(z, loss, alpha, create_graph=create_graph)
    except Exception as e:
        _backward_used(leaves, e, fn)
        if not isinstance(e, (AttributeError, TypeError, IndexError)):
            raise
        if getattr(e, "_course_student", False) and not isinstance(alpha, Tensor) and "create_graph" not in str(e):
            raise Mistake(f"with alpha a plain number ({alpha}) your function raised {type(e).__name__}: {e}. "
                          "alpha may be a number or a tensor (n_z,): write z - alpha * grad, which works for "
                          "both (no alpha.mean(), alpha[0] or alpha.shape).") from e
        raise
    _backward_used(leaves)
    expect_shape(out, tuple(z.shape), f"z' ({note})", "Return z - alpha * grad, one row per class.")
    return out


def _probe_latent_step(fn: Callable) -> None:
    try:
        _probe_latent_step_parts(fn)
    except RuntimeError as e:
        if _freed_graph(e):  # the graph behind z was freed: a .backward() (without inputs=) in the step
            raise Mistake("the graph behind z was freed (\"Trying to backward through the graph a second "
                          "time\"): your function calls .backward(), or differentiates the same loss twice. "
                          "Differentiate once, and " + _BACKWARD, _BACKWARD_HINT) from e
        raise


def _probe_latent_step_parts(fn: Callable) -> None:
    # (a) create_graph=True, a softmax support loss, alpha per latent dimension
    z, loss_fn, alpha, A, Wd = _softmax_problem()
    out = _call_step(fn, z, loss_fn, alpha, True, "create_graph=True", (A, Wd))
    (g,) = torch.autograd.grad(loss_fn(z), z, retain_graph=True)
    zd, gd = z.detach(), g.detach()
    diagnose(out, zd - alpha * gd, "z'", _step_mistakes(zd, gd, alpha, softmax=True), **TOL,
             hint="z' = z - alpha * grad_z support_loss(z): differentiate the support_loss you are given, "
                  "at the z you are given.")
    expect(out.requires_grad,
           "z' carries no gradient (requires_grad is False): the inner step is detached, so no gradient "
           "reaches the encoder or the decoder and the outer loss cannot train them.",
           "Write z - alpha * grad with the z you were given and create_graph=create_graph: no .detach(), "
           ".data, torch.no_grad() or fresh tensor.")
    v = torch.randn(z.shape, generator=_gen(7), dtype=D)
    ref = reference_latent_step(z, loss_fn, alpha, create_graph=True)
    gA, gW = _grads(out, v, [A, Wd])
    rA, rW = _grads(ref, v, [A, Wd])
    expect(not _zero(gA),
           "no gradient reaches the encoder through z': the step starts from a detached z "
           "(z.detach() or z.data) or is computed under torch.no_grad(), so the outer loss cannot train "
           "the encoder.",
           "Write z - alpha * grad with the z you were given, outside torch.no_grad().")
    expect(not _zero(gW),
           "with create_graph=True no gradient reaches the decoder through the inner step: "
           "torch.autograd.grad was called without create_graph=create_graph (or the gradient was "
           "detached), so the step's gradient is a constant.",
           "torch.autograd.grad(loss, z, create_graph=create_graph)")
    diagnose(gW, rW, "the decoder's gradient through z'", atol=1e-9, rtol=1e-7,
             hint="Keep the gradient's graph when create_graph is True: no .detach().")
    direct = torch.autograd.grad((z * v).sum(), A, retain_graph=True)[0]
    diagnose(gA, rA, "the encoder's gradient through z'", {
        "z' is cut from z (detached), so the encoder gets only the part of its gradient that flows "
        "through grad_z L_S, not the direct path z -> z'.": rA - direct,
    }, atol=1e-9, rtol=1e-7)

    # (b) create_graph=False (test time): the same values, z' a function of z, the gradient a constant
    out_f = _call_step(fn, z, loss_fn, alpha, False, "create_graph=False", (A, Wd))
    expect_close(out_f, zd - alpha * gd, "z' with create_graph=False", **TOL,
                 hint="create_graph changes only whether the gradient keeps its graph, never the value.")
    expect(out_f.requires_grad,
           "with create_graph=False, z' carries no gradient at all: it must still be a function of z "
           "(z - alpha * grad with a constant grad), so that the next step can differentiate the support "
           "loss with respect to it.",
           "Do not detach z' or use torch.no_grad(); only the gradient is built without a graph: "
           "torch.autograd.grad(loss, z, create_graph=create_graph).")
    gA_f, gW_f = _grads(out_f, v, [A, Wd])
    expect(_zero(gW_f),
           "create_graph is ignored: with create_graph=False the step still keeps the gradient's graph "
           "(gradient reaches the decoder through grad_z L_S). At test time that builds a second-order "
           "graph nobody uses.", "Pass it on: torch.autograd.grad(loss, z, create_graph=create_graph).")
    diagnose(gA_f, direct, "the encoder's gradient through z' with create_graph=False", atol=1e-9, rtol=1e-7,
             hint="With create_graph=False, z' = z - alpha * (a constant): its gradient w.r.t. z is the identity.")

    # (c) another support loss, alpha a plain number: the function must use what it is given
    zq, loss_q, a_q, B, M = _quadratic_problem()
    out_q = _call_step(fn, zq, loss_q, a_q, True, "a second support loss, alpha a number", (B, M))
    (gq,) = torch.autograd.grad(loss_q(zq), zq, retain_graph=True)
    diagnose(out_q, zq.detach() - a_q * gq.detach(), "z' for a second support loss (a least-squares fit, "
             "alpha = 0.3)", _step_mistakes(zq.detach(), gq.detach(), a_q, softmax=False), **TOL,
             hint="Differentiate the support_loss you are given, at the z you are given.")
    vq = torch.randn(zq.shape, generator=_gen(8), dtype=D)
    rB, rM = _grads(reference_latent_step(zq, loss_q, a_q, create_graph=True), vq, [B, M])
    gB, gM = _grads(out_q, vq, [B, M])
    expect(gB is not None and gM is not None and not _zero(gM),
           "for the second support loss, gradient does not reach both the encoder and the decoder through z'.")
    diagnose(gM, rM, "the decoder's gradient through z' (second support loss)", atol=1e-9, rtol=1e-7)
    diagnose(gB, rB, "the encoder's gradient through z' (second support loss)", atol=1e-9, rtol=1e-7)

    # (d) on the meta device: tensors made inside must follow the inputs' device
    zm, loss_m, alpha_m, _, _ = _softmax_problem(device="meta")
    expect_device_agnostic(_raw(fn), zm, loss_m, alpha_m, create_graph=True, what="your latent_step")


def latent_step(student: Callable) -> Callable:
    """Exercise 6.1: z' = z - alpha * grad_z L_S(decode(z)), keeping the graph when create_graph is True."""
    return run_check("6.1", "the latent inner step", student, reference_latent_step, _probe_latent_step)


# ----------------------------------------------------------------------------- 6.2

def _expect_pair(out: Any) -> tuple[Any, Any]:
    expect(isinstance(out, (tuple, list)) and len(out) == 2,
           f"sample_gaussian should return a pair (sample, kl), but it returned {describe(out)}.",
           "return sample, kl")
    s, kl = out
    if isinstance(s, Tensor) and isinstance(kl, Tensor) and s.dim() == 1 and kl.dim() == 2:
        raise Mistake("the pair is in the wrong order: the first is one number per row and the second a "
                      "matrix. Return (sample, kl).", "return sample, kl")
    expect_type(s, Tensor, "the sample (first of the pair)")
    expect_type(kl, Tensor, "the KL (second of the pair)")
    return s, kl


def _expect_kl_shape(kl: Tensor, n: int, d: int) -> None:
    shape = tuple(kl.shape)
    if shape == (n,):
        return
    if shape == ():
        raise Mistake("the KL is one number for the whole batch (summed or averaged over the rows too); "
                      f"return one KL per row, shape ({n},).", "Sum over the last dimension only: .sum(-1).")
    if shape == (d,):
        raise Mistake(f"the KL has shape ({d},): it is reduced over the rows (dim 0) instead of the latent "
                      f"dimensions. Return one KL per row, shape ({n},).", ".sum(-1), not .sum(0)")
    if shape == (n, d):
        raise Mistake(f"the KL has shape ({n}, {d}): it is not summed over the latent dimensions. "
                      f"Return one KL per row, shape ({n},).", ".sum(-1)")
    expect_shape(kl, (n,), "the KL", "One KL per row: sum over the last dimension.")


def _probe_sample(fn: Callable) -> None:
    g = _gen(3)
    n, d = 3, 4
    mu = torch.randn(n, d, generator=g, dtype=D).requires_grad_()
    log_var = (0.8 * torch.randn(n, d, generator=g, dtype=D) - 0.5).requires_grad_()
    eps = torch.randn(n, d, generator=g, dtype=D)
    s, kl = _expect_pair(fn(mu, log_var, eps))
    expect_shape(s, (n, d), "the sample", "One sample per entry of mu: mu + sigma * eps.")
    _expect_kl_shape(kl, n, d)
    m, lv = mu.detach(), log_var.detach()
    sigma = torch.exp(0.5 * lv)
    want_s = m + sigma * eps

    # the sample
    s2, _ = _expect_pair(fn(mu, log_var, eps))
    expect(torch.equal(torch.nan_to_num(s.detach()), torch.nan_to_num(s2.detach())),
           "two calls with the same eps gave different samples: your function draws its own noise "
           "(torch.randn_like, torch.normal, Normal(...).sample()), which is sampling without the "
           "reparameterisation trick. The noise must come in from outside, as eps.",
           "Use the eps you are given: mu + exp(log_var / 2) * eps.")
    expect(s.requires_grad,
           "the sample carries no gradient to mu and sigma: it was drawn without the reparameterisation "
           "trick (torch.normal, Normal(...).sample(), or detached). The decoder and encoder could not learn.",
           "Write mu + sigma * eps with the eps you are given: the noise is the only random part.")
    if not torch.isfinite(s.detach()).all():
        raise Mistake("the sample contains NaN: it takes the square root (or the log) of log_var as if it were "
                      "a variance. log_var is already a log and is negative for variances below 1.",
                      "sigma = exp(log_var / 2) = torch.exp(0.5 * log_var)")
    # a sample right up to float32 rounding: checks.expect_close names the dtype, so no hint about the noise
    rounding = torch.allclose(s.detach().double(), want_s, atol=1e-4, rtol=1e-3)
    diagnose(s, want_s, "the sample", {
        "it uses the variance as the standard deviation: sigma = exp(log_var / 2), not exp(log_var).":
            m + torch.exp(lv) * eps,
        "it uses the log-variance itself as the standard deviation: sigma = exp(log_var / 2).": m + lv * eps,
        "it uses exp(-log_var / 2): sigma = exp(+log_var / 2).": m + torch.exp(-0.5 * lv) * eps,
        "it is the mean alone: add sigma * eps.": m,
        "the noise eps is missing (mu + sigma): the sample is mu + sigma * eps.": m + sigma,
        "sigma is missing (mu + eps): the sample is mu + sigma * eps, sigma = exp(log_var / 2).": m + eps,
    }, **TOL, hint="" if rounding else
        "Use the noise eps you are given (no torch.randn inside): sample = mu + exp(log_var / 2) * eps.")
    w = eps.flip(0)
    g_mu, g_lv = torch.autograd.grad((s * w).sum(), [mu, log_var], allow_unused=True, retain_graph=True)
    expect(not _zero(g_mu) and not _zero(g_lv),
           "the sample is not differentiable in both mu and log_var (one of them is detached, or the noise "
           "came from a sampler): the reparameterisation trick writes it as mu + exp(log_var / 2) * eps.")
    diagnose(g_mu, w, "d sample / d mu (times a vector)", **TOL)
    diagnose(g_lv, 0.5 * sigma * eps * w, "d sample / d log_var (times a vector)", **TOL)
    z_s, _ = _expect_pair(fn(mu, log_var, torch.zeros_like(eps)))
    expect_close(z_s, m, "the sample with eps = 0 (it must be mu)", **TOL)

    # the KL
    want_kl = 0.5 * (lv.exp() + m ** 2 - 1 - lv).sum(-1)
    kl_d = kl.detach()
    if not torch.isfinite(kl_d).all():
        raise Mistake("the KL contains NaN or inf: it takes the log (or square root) of log_var as if log_var "
                      "were the variance. log_var is already log sigma^2, and sigma^2 = exp(log_var).",
                      "0.5 * (log_var.exp() + mu ** 2 - 1 - log_var).sum(-1)")
    if (kl_d < -1e-9).any():
        whole = torch.allclose(kl_d, -want_kl, **TOL)
        raise Mistake(
            f"the KL is negative ({kl_d.min().item():.6g}), which is impossible: a KL divergence is never "
            "negative. " + ("It looks like the whole KL has the wrong sign: KL(q || N(0, I)) = "
                            "1/2 sum (sigma^2 + mu^2 - 1 - log sigma^2) >= 0. (The VAE paper's term "
                            "1/2 sum (1 + log sigma^2 - mu^2 - sigma^2) is *minus* the KL.)" if whole else
                            "Check the sign of log_var in it, and of the 1 + log sigma^2 - mu^2 - sigma^2 "
                            "term: the KL is 1/2 sum (sigma^2 + mu^2 - 1 - log sigma^2), i.e. minus that term."),
            "0.5 * (log_var.exp() + mu ** 2 - 1 - log_var).sum(-1)")
    diagnose(kl, want_kl, "the KL", {
        "the KL lacks its factor 1/2.": 2 * want_kl,
        "the KL is averaged over the latent dimensions (.mean(-1)); this chapter sums them: one KL per "
        "row, the sum over its d dimensions (.sum(-1)).": want_kl / d,
        "the KL uses sigma instead of sigma^2 (sigma^2 = exp(log_var)).":
            0.5 * (sigma + m ** 2 - 1 - lv).sum(-1),
        "the KL forgets the - 1 in 1/2 sum (sigma^2 + mu^2 - 1 - log sigma^2).":
            0.5 * (lv.exp() + m ** 2 - lv).sum(-1),
        "the KL is for the sample, not the distribution: use mu and log_var, never the sample.":
            0.5 * (lv.exp() + want_s ** 2 - 1 - lv).sum(-1),
        "the KL uses log sigma (= log_var / 2) where log sigma^2 (= log_var) belongs.":
            0.5 * (lv.exp() + m ** 2 - 1 - 0.5 * lv).sum(-1),
        "the KL reads log_var as log sigma (the log standard deviation): it is the log-variance, "
        "so sigma^2 = exp(log_var) and log sigma^2 = log_var.":
            0.5 * (torch.exp(2 * lv) + m ** 2 - 1 - 2 * lv).sum(-1),
    }, **TOL)
    expect_grad(kl, "the KL", "The KL is a loss term: it must stay a function of mu and log_var.")
    gk_mu, gk_lv = torch.autograd.grad(kl.sum(), [mu, log_var], allow_unused=True)
    expect(not _zero(gk_mu) and not _zero(gk_lv),
           "the KL does not depend on both mu and log_var (one of them is detached in it).")
    diagnose(gk_mu, m, "d KL / d mu (it is mu)", **TOL)
    diagnose(gk_lv, 0.5 * (lv.exp() - 1), "d KL / d log_var (it is (sigma^2 - 1) / 2)", **TOL)

    # another shape: nothing may depend on the probe's (3, 4)
    g2 = _gen(4)
    mu2, lv2 = torch.randn(5, 2, generator=g2, dtype=D), torch.randn(5, 2, generator=g2, dtype=D)
    eps2 = torch.randn(5, 2, generator=g2, dtype=D)
    s5, kl5 = _expect_pair(fn(mu2, lv2, eps2))
    ref_s, ref_kl = reference_sample_gaussian(mu2, lv2, eps2)
    expect_close(s5, ref_s, "the sample for inputs of shape (5, 2)", **TOL)
    expect_close(kl5, ref_kl, "the KL for inputs of shape (5, 2)", **TOL,
                 hint="One KL per row, summed over the last dimension, whatever the shape.")

    expect_device_agnostic(_raw(fn), mu, log_var, eps, what="your sample_gaussian")


def sample_gaussian(student: Callable) -> Callable:
    """Exercise 6.2: w = mu + sigma * eps (reparameterisation) and KL(N(mu, sigma^2) || N(0, I)) per row."""
    return run_check("6.2", "sampling with the reparameterisation trick", student, reference_sample_gaussian,
                     _probe_sample)


# ----------------------------------------------------------------------------- 6.3

BETA, GAMMA, LAMBDA_1, LAMBDA_2 = 0.5, 0.7, 0.05, 0.3
_NAMES = ("beta", "gamma", "lambda_1", "lambda_2")
_TERMS = {"beta": "KL term", "gamma": "encoder penalty", "lambda_1": "weight decay",
          "lambda_2": "orthogonality penalty"}


_HINTS = {"beta": "beta * kl.mean(): kl holds one KL per class.",
          "gamma": "gamma * (z_adapted.detach() - z_init).pow(2).mean()",
          "lambda_1": "lambda_1 * sum(w.pow(2).sum() for w in weights)",
          "lambda_2": "n = W.norm(dim=1, keepdim=True); C = W @ W.T / (n @ n.T); "
                      "lambda_2 * (C - torch.eye(len(W), device=W.device, dtype=W.dtype)).pow(2).mean()"}


def _objective_inputs(seed: int = 5):
    """Small fixed float64 inputs shaped like LEO's (N = 3, Q = 2, n_z = 4, D = 5); labels not class-major."""
    g = _gen(seed)
    leaf = lambda t: t.requires_grad_()  # noqa: E731
    logits = leaf(torch.randn(6, 3, generator=g, dtype=D))
    y = torch.tensor([2, 0, 1, 1, 0, 2])
    kl = leaf(torch.rand(3, generator=g, dtype=D) + 0.5)
    z0 = torch.randn(3, 4, generator=g, dtype=D)
    z1 = leaf(z0 + 0.7 * torch.randn(3, 4, generator=g, dtype=D))
    z0 = leaf(z0)
    W = leaf(torch.randn(4, 10, generator=g, dtype=D))                       # decoder (n_z, 2D)
    enc = leaf(0.3 * torch.randn(4, 5, generator=g, dtype=D))                # encoder (n_z, D)
    rel = [leaf(0.3 * torch.randn(8, 8, generator=g, dtype=D)) for _ in range(3)]  # relation net (2n_z, 2n_z)
    return logits, y, kl, z0, z1, W, [enc, *rel, W]


def _ortho_cols(W: Tensor) -> Tensor:
    return orthogonality_penalty(W.T)


def _gram(W: Tensor) -> Tensor:
    return (W @ W.T - torch.eye(W.shape[0], dtype=W.dtype)).pow(2).mean()


def _gram_cols(W: Tensor) -> Tensor:
    return (W.T @ W - torch.eye(W.shape[1], dtype=W.dtype)).pow(2).mean()


def _corr(W: Tensor) -> Tensor:
    n = W.norm(dim=1, keepdim=True)
    return W @ W.T / (n @ n.T)


def _expect_scalar(out: Any, what: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise Mistake(f"{what} should be a scalar tensor, but your function returned {describe(out)}.",
                      "Return one tensor: the sum of the terms.")
    expect(out.dim() == 0, f"{what} should be a scalar tensor, got shape {tuple(out.shape)}.",
           "Average the query cross-entropy and the penalties to one number.")
    return out


def _close(a: Tensor, b: Tensor) -> bool:
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), **TOL)


def _terms_without_weight(fn: Callable, args: tuple) -> None:
    """With every weight 0, change the inputs of one term at a time: a change in the objective means
    that term does not vanish with its weight (the weight ignored, or a number typed in)."""
    logits, y, kl, z0, z1, W, weights = args
    zeros = (0.0, 0.0, 0.0, 0.0)
    base = fn(*args, *zeros).detach()
    W2 = torch.randn(W.shape, generator=_gen(11), dtype=D)
    changed = {
        "beta": (logits, y, kl + 1.0, z0, z1, W, weights),
        "gamma": (logits, y, kl, z0, z1 + 1.0, W, weights),
        "lambda_1": (logits, y, kl, z0, z1, W, [2.0 * w for w in weights[:-1]] + [weights[-1]]),
        "lambda_2": (logits, y, kl, z0, z1, W2, weights),
    }
    for n, new_args in changed.items():
        out = fn(*new_args, *zeros)
        if isinstance(out, Tensor) and out.dim() == 0 and not _close(out, base):
            raise Mistake(f"with beta = gamma = lambda_1 = lambda_2 = 0 the objective still changes with the "
                          f"{_TERMS[n]}'s inputs: the {_TERMS[n]} is not multiplied by {n} (is {n} ignored, or "
                          "a number typed in instead?).", f"Multiply the {_TERMS[n]} by the argument {n}.")


def _probe_objective(fn: Callable) -> None:
    logits, y, kl, z0, z1, W, weights = _objective_inputs()
    args = (logits, y, kl, z0, z1, W, weights)
    weights_on = dict(zip(_NAMES, (BETA, GAMMA, LAMBDA_1, LAMBDA_2)))

    def call(**on: float) -> Tensor:
        ws = [on.get(n, 0.0) for n in _NAMES]
        return _expect_scalar(fn(*args, *ws), "the objective")

    full = call(**weights_on)
    with torch.no_grad():
        lq = F.cross_entropy(logits, y)
        k = kl.mean()
        diff = z1 - z0
        pen = diff.pow(2).mean()
        wd = weight_decay(weights)
        orth = orthogonality_penalty(W)
    terms = {"beta": k, "gamma": pen, "lambda_1": wd, "lambda_2": orth}

    # the query loss alone: every weight 0
    q = call()
    q_mistakes = {
        "the query loss is summed over the queries; use the mean cross-entropy, F.cross_entropy(logits, y).":
            F.cross_entropy(logits.detach(), y, reduction="sum"),
        "the cross-entropy is taken of probabilities (softmax first): F.cross_entropy takes the logits.":
            F.cross_entropy(logits.detach().softmax(-1), y),
        "it uses F.nll_loss on the logits: that is not a cross-entropy without log_softmax; use "
        "F.cross_entropy(query_logits, query_y).": F.nll_loss(logits.detach(), y),
        "it ignores query_y and assumes class-major labels (0, 0, 1, 1, ...): use the labels you are given.":
            F.cross_entropy(logits.detach(), torch.arange(3).repeat_interleave(2)),
    }
    for n in _NAMES:
        q_mistakes[f"the {_TERMS[n]} is added without its weight {n} (with {n} = 0 it must vanish)."] = lq + terms[n]
    if not _close(q, lq) and not any(_close(q, m_) for m_ in q_mistakes.values()):
        _terms_without_weight(fn, args)
    diagnose(q, lq, "the objective with beta = gamma = lambda_1 = lambda_2 = 0 (the query loss alone)",
             q_mistakes, **TOL, hint="With every weight 0 the objective is F.cross_entropy(query_logits, query_y).")

    # each term on its own: the objective with one weight set, minus the query loss
    Wd = W.detach()
    specific = {
        "beta": {
            "the KL term is subtracted: the objective *adds* beta * KL (it pulls q(z | S) towards the prior).": -k,
            "the KL is summed over the classes; this course averages it (beta * kl.mean()).": kl.detach().sum(),
            "the KL is divided by n_z (as if averaged over the latent dimensions, as the official code does); "
            "this course sums the KL over the latent dimensions (exercise 6.2) and averages over the classes "
            "only: beta * kl.mean().": k / z0.shape[1],
        },
        "gamma": {
            "the encoder penalty is the squared norm ||z' - z||^2 (a sum over the N x n_z entries); the "
            "objective takes the mean squared difference ((z' - z) ** 2).mean().": diff.pow(2).sum(),
            "the encoder penalty is the norm ||z' - z|| (not even squared); the objective takes the mean "
            "squared difference ((z' - z) ** 2).mean().": diff.norm(),
            "the encoder penalty sums over the latent dimensions and averages over the classes; the "
            "objective averages over all N x n_z entries: ((z' - z) ** 2).mean().": diff.pow(2).sum(1).mean(),
            "the encoder penalty is the mean absolute difference; it is the mean *squared* difference.":
                diff.abs().mean(),
            "the encoder penalty is not squared (the mean of z' - z); it is ((z' - z) ** 2).mean().": diff.mean(),
        },
        "lambda_1": {
            "the weight decay is halved (1/2 ||theta||^2, TensorFlow's l2_loss); this course uses the plain sum "
            "of squares, sum(w.pow(2).sum() for w in weights).": 0.5 * wd,
            "the weight decay averages the squares within each tensor; it is the sum of the squares of every "
            "entry: sum(w.pow(2).sum() for w in weights).": sum(w.detach().pow(2).mean() for w in weights),
            "the weight decay is the mean square over all entries; it is their sum.":
                wd / sum(w.numel() for w in weights),
            "the weight decay sums the norms ||w|| (not squared); it is the sum of squares.":
                sum(w.detach().norm() for w in weights),
            "the weight decay is the norm ||theta|| (not squared); it is the sum of squares.": wd.sqrt(),
            "the weight decay covers only the first tensor of `weights`; it covers all of them.":
                weights[0].detach().pow(2).sum(),
            "the weight decay leaves out the last tensor of `weights` (the decoder's weight, which is also "
            "passed as decoder_weight); it covers every tensor in the list.":
                sum(w.detach().pow(2).sum() for w in weights[:-1]),
        },
        "lambda_2": {
            "the orthogonality penalty is on the columns (W^T W): LEO's is on the rows of the decoder weight "
            "(n_z, 2D), C = W W^T normalised: one row per latent dimension.": _ortho_cols(Wd),
            "the orthogonality penalty uses W W^T without dividing by the row norms: it must be the "
            "correlation matrix, C_ij = <W_i, W_j> / (||W_i|| ||W_j||).": _gram(Wd),
            "the orthogonality penalty uses W^T W, the columns and unnormalised: LEO's is the correlation "
            "matrix of the rows, C = W W^T / (||W_i|| ||W_j||), (n_z, n_z).": _gram_cols(Wd),
            "you summed where the objective averages: the orthogonality penalty is the squared Frobenius "
            "norm ||C - I||^2 (a sum over the n_z x n_z entries); the objective takes the mean, "
            "((C - I) ** 2).mean().": orth * Wd.shape[0] ** 2,
            "you summed where the objective averages: the orthogonality penalty is the Frobenius norm "
            "||C - I|| (torch.linalg.norm, not even squared); the objective takes the mean of the squares, "
            "((C - I) ** 2).mean().": (orth * Wd.shape[0] ** 2).sqrt(),
            "the identity is not subtracted: the penalty is mean((C - I)^2), which is 0 for orthogonal rows.":
                _corr(Wd).pow(2).mean(),
        },
    }
    for i, t in enumerate(weights[:-1]):
        part = "the encoder's" if i == 0 else "a relation net layer's"
        for label, val in ((f"weights[{i}] ({part})", orthogonality_penalty(t.detach())),
                           (f"the transpose of weights[{i}] ({part})", _ortho_cols(t.detach()))):
            specific["lambda_2"][f"the orthogonality penalty is on {label} weight, not on decoder_weight: LEO's "
                                 "penalty is on the decoder's weight (n_z, 2D), the argument decoder_weight."] = val
    for n in _NAMES:
        wv = weights_on[n]
        out = call(**{n: wv})
        delta = out - q
        mistakes = {expl: wv * val for expl, val in specific[n].items()}
        for other in _NAMES:
            if other != n:
                mistakes[f"{n} multiplies the {_TERMS[other]}: the weights are mixed up. The paper's names: "
                         "beta KL + gamma encoder penalty + lambda_1 weight decay + lambda_2 orthogonality."] = \
                    wv * terms[other]
        mistakes[f"the {_TERMS[n]} is missing (or {n} is not used): with only {n} = {wv} set, the objective "
                 "equals the query loss."] = torch.zeros((), dtype=D)
        what = f"the {_TERMS[n]} (the objective with only {n} = {wv} set, minus the query loss)"
        if n == "lambda_2":
            (gW,) = (torch.autograd.grad(out, W, allow_unused=True, retain_graph=True) if out.requires_grad
                     else (None,))
            a = delta.detach()
            if _zero(gW) and not any(torch.allclose(a, m_.detach(), **TOL) for m_ in mistakes.values()):
                raise Mistake("the orthogonality penalty does not depend on decoder_weight: it is computed from "
                              "another matrix (a model's weights from outside the function, e.g. the relation "
                              "net's?) or from a detached copy. It must be the rows' correlation matrix of the "
                              "decoder_weight you are given.")
        diagnose(delta, wv * terms[n], what, mistakes, **TOL, hint=_HINTS[n])

    # all together: the terms add up
    want = lq + sum(weights_on[n] * terms[n] for n in _NAMES)
    expect_close(full, want, "the objective with all four weights set", **TOL,
                 hint="Each term is right on its own, so they do not combine right: the objective is their sum, "
                      "L_Q + beta KL + gamma penalty + lambda_1 decay + lambda_2 orthogonality.")

    # gradients of the full objective
    expect(full.requires_grad, "the objective carries no gradient (requires_grad is False): nothing could be "
           "trained with it. Something detaches it (.item(), .detach(), torch.no_grad(), a new tensor).")
    leaves = [logits, kl, z0, z1, W, *weights[:-1]]
    g_logits, g_kl, g_z0, g_z1, g_W, *g_rest = torch.autograd.grad(full, leaves, allow_unused=True)
    z0_cut, z1_cut = _zero(g_z0), _zero(g_z1)
    expect(not (z0_cut and not z1_cut),
           "the stop-gradient is on the wrong side: z_init (the encoder's code) is detached and z_adapted is "
           "not. The encoder then gets no gradient from the penalty, so nothing pulls its proposal z towards "
           "where adaptation ends; instead the penalty's gradient flows into z' and, through the inner "
           "steps, pulls the adaptation back towards the encoder's guess: the opposite of its purpose.",
           "gamma * (z_adapted.detach() - z_init).pow(2).mean(): detach z', keep z_init.")
    expect(z1_cut,
           "the stop-gradient is missing in the encoder penalty: it sends gradient into z' (the adapted "
           "codes). Stop the gradient with z_adapted.detach(). Without it the penalty pulls the adaptation "
           "back towards z, instead of pulling the encoder's z towards where adaptation ends.",
           "gamma * (z_adapted.detach() - z_init).pow(2).mean()")
    expect(not z0_cut, "the encoder penalty does not reach z_init (the encoder's codes): z_init must "
           "not be detached; only z_adapted is.")
    diagnose(g_z0, 2 * GAMMA * (z0 - z1).detach() / z0.numel(), "d objective / d z_init", **TOL)
    expect(not _zero(g_kl), "the objective does not depend on the KL tensor (is it detached?).")
    diagnose(g_kl, torch.full_like(kl, BETA / kl.numel()), "d objective / d kl", **TOL)
    expect(not _zero(g_logits), "the objective does not depend on the query logits (is the query loss detached?).")
    ref = reference_leo_objective(*args, *weights_on.values())
    r_logits, r_W, *r_rest = torch.autograd.grad(ref, [logits, W, *weights[:-1]])
    diagnose(g_logits, r_logits, "d objective / d query_logits", **TOL)
    expect(not any(_zero(gr) for gr in g_rest),
           "the weight decay does not reach some of the weights (is a tensor detached, or left out?).")
    for i, (gr, rr) in enumerate(zip(g_rest, r_rest)):
        diagnose(gr, rr, f"d objective / d weights[{i}]", **TOL)
    expect(not _zero(g_W), "the orthogonality penalty and weight decay do not reach the decoder weight "
           "(is it detached?).")
    diagnose(g_W, r_W, "d objective / d decoder_weight (orthogonality penalty and weight decay)", **TOL)

    # on the meta device: tensors made inside must follow the inputs' device (torch.eye(n, device=...))
    expect_device_agnostic(_raw(fn), *args, *weights_on.values(), what="your leo_objective")


def leo_objective(student: Callable) -> Callable:
    """Exercise 6.3: L_Q + beta mean KL + gamma mean((stopgrad(z') - z)^2) + lambda_1 ||theta||^2
    + lambda_2 mean_ij((C(W_d) - I)^2), each term checked on its own."""
    return run_check("6.3", "the LEO objective", student, reference_leo_objective, _probe_objective)
