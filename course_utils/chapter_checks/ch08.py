"""Checks for chapter 08 (model-based, "black-box" meta-learning: MANN, CS330 homework 1, SNAIL).

Notation as in the chapter (and :mod:`course_utils.black_box`): N classes (``n_way``), T the sequence
length, x_t an item's features (a row of ``x (T, D)``), y_t its label in 0..N-1, e(y) the one-hot vector of
y (e(none) = 0). Santoro et al. 2016 (MANN) show an item's label one step late; Mishra et al. 2018 (SNAIL)
read the sequence with causal attention; CS330 homework 1 lays an episode out as labelled supports then
unlabelled queries and scores the queries only.

Exercises and the references' semantics (each agrees with :mod:`course_utils.black_box`, which the tests
confirm on random inputs; the references here are self-contained):

- 8.1 ``label_shifted_inputs(x, y, n_way) -> inputs (T, D + N)``: inputs[t] = [x_t, e(y_{t-1})], with a
  zero label part at t = 0 (MANN's offset: an item's label is shown only at the next step). The result keeps
  x's dtype and device (black_box.build_sequence(x, y, n_way)[0]).
- 8.2 ``causal_mask(T) -> (T, T) bool``: True where attention is *forbidden*, PyTorch's convention for
  nn.Transformer / nn.MultiheadAttention masks: mask[t, s] = s > t, so position t attends to s <= t
  (itself included). Decision on float masks: a float additive mask (-inf above the diagonal, 0
  elsewhere, as ``nn.Transformer.generate_square_subsequent_mask`` gives) is *not* accepted, because code
  that uses the mask combines it with bool operations (``mask | padding``, ``~mask``,
  ``scores.masked_fill(mask, ...)``), which a float mask breaks; the message says that such a mask is the
  right additive mask and how to turn it into the bool one. An optional ``device`` parameter, if the
  student's function has one, must be honoured (it is called once with ``device="meta"``); the exercise
  itself takes T alone, so its device probe is that call.
- 8.3 ``query_loss(logits, targets, predict_mask) -> scalar``: the mean cross-entropy over the positions
  where predict_mask is True (one mean over all masked positions of the batch), logits (T, N) or (B, T, N),
  targets and predict_mask of shape logits.shape[:-1] (black_box.sequence_loss). Gradients must reach the
  logits.
- 8.4 ``relabel(y_support, y_query, perm) -> (y_support_new, y_query_new)``: perm (N,) long, perm[n] the new
  label of class n; both sets relabelled with the same map, y_new = perm[y] (black_box's _relabel, before it
  re-sorts the rows).

Each probe calls the student's function several times, changing every argument (n_way with labels that do
not reach it, T, the mask with the same logits, perm with the same labels, (T, N) and (B, T, N) logits), in
float64 with tight tolerances and once in float32, and once on PyTorch's ``meta`` device (a tensor made
without ``device=`` crashes on a GPU). Inputs must not change (run_check's guard names an in-place change).
A wrong answer that no named mistake explains gets its first wrong entry, with the rule as a hint.

Named mistakes:

- 8.1: the current label leaked ([x_t, e(y_t)]); shifted the wrong way (y_{t+1}); wrap-around
  (torch.roll, or y[t - 1] at t = 0 reading y[-1]), either way; e(0) instead of zeros at t = 0 (labels padded
  with class 0); the label part before the features (also with the leak); the features shifted too; integer
  labels concatenated instead of one-hot; one-hot width from the labels present (F.one_hot(y) without
  num_classes, y.max() + 1, len(y.unique())); n_way ignored or fixed; the features missing; rows dropped or
  added (the sequence shifted instead of the labels); (inputs, targets) returned as build_sequence does;
  the dtype not kept; no gradient to x.
- 8.2: inverted (True = allowed, as F.scaled_dot_product_attention reads a bool mask); the diagonal
  forbidden (t cannot see itself); transposed (future visible, past hidden; also inverted with the diagonal
  excluded); nothing forbidden; everything forbidden; only the diagonal allowed; a float additive mask (right
  or wrong pattern); a float 0/1 mask; an integer 0/1 mask; T ignored or fixed; extra dimensions; a device
  argument ignored.
- 8.3: the loss on all positions; on the support positions (mask inverted); summed instead of averaged; the
  unmasked positions zeroed and the mean taken over all of them (divides by T or B*T); divided by B or by T;
  each sequence averaged first, then the sequences; the softmax over the positions (or the batch) instead of
  the classes; MSE of logits or of probabilities against one-hot targets (mean or Brier sum); cross-entropy
  of probabilities; F.nll_loss on logits; per-position losses returned (of the masked positions, or of all);
  a Python float (.item()) or a detached loss; shape (1,) instead of a scalar.
- 8.4: the inverse permutation (argsort(perm)[y]); only the support relabelled; only the query relabelled;
  the query relabelled with another map (the inverse, a fresh randperm: found by calling twice); a fresh
  random permutation for both (perm ignored); perm ignored (deterministically); nothing relabelled; the
  permutation applied to positions (y[perm]); the pair swapped; float or non-long labels; changed inputs
  in place (the guard).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import (Mistake, _close, describe, diagnose, expect_close, expect_device_agnostic, expect_grad,
                      run_check)

__all__ = ["EXERCISES", "label_shifted_inputs", "causal_mask", "query_loss", "relabel",
           "reference_label_shifted_inputs", "reference_causal_mask", "reference_query_loss",
           "reference_relabel"]

EXERCISES = ["8.1", "8.2", "8.3", "8.4"]
D = torch.float64
TOL = dict(atol=1e-12, rtol=1e-10)
TOL32 = dict(atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- references

def _onehot(y: Tensor, n_way: int, dtype: torch.dtype) -> Tensor:
    """``(..., T)`` labels in 0..N-1 -> ``(..., T, N)`` one-hot rows (on y's device)."""
    return (y.unsqueeze(-1) == torch.arange(n_way, device=y.device)).to(dtype)


def _later(e: Tensor) -> Tensor:
    """Row t of the result is row t - 1 of ``e``; row 0 is zeros (one step late, nothing before t = 0)."""
    return torch.cat([torch.zeros_like(e[..., :1, :]), e[..., :-1, :]], dim=-2)


def reference_label_shifted_inputs(x: Tensor, y: Tensor, n_way: int) -> Tensor:
    """MANN's inputs: ``inputs[t] = [x_t, e(y_{t-1})]``, zeros in the label part at t = 0."""
    return torch.cat([x, _later(_onehot(y.to(x.device), n_way, x.dtype))], dim=-1)


def reference_causal_mask(T: int, device: torch.device | str | None = None) -> Tensor:
    """``(T, T)`` bool, True where attention is forbidden: ``mask[t, s] = s > t``."""
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(1)


def reference_query_loss(logits: Tensor, targets: Tensor, predict_mask: Tensor) -> Tensor:
    """Mean cross-entropy over the positions where ``predict_mask`` is True (one mean over the batch)."""
    mask = predict_mask.to(logits.device)
    return F.cross_entropy(logits[mask], targets.to(logits.device)[mask].long())


def reference_relabel(y_support: Tensor, y_query: Tensor, perm: Tensor) -> tuple[Tensor, Tensor]:
    """Both sets under the same class-to-label map: label y becomes ``perm[y]``."""
    return perm.to(y_support.device)[y_support], perm.to(y_query.device)[y_query]


# ----------------------------------------------------------------------------- probe helpers

def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _raw(fn: Callable) -> Callable:
    """The student's own function behind the check's guard (for the meta-device call)."""
    return getattr(fn, "__wrapped__", fn)


def _need_tensor(obj: Any, what: str, expected: str, hint: str = "") -> None:
    if isinstance(obj, Tensor):
        return
    if obj is None:
        raise Mistake(f"your function returned None; {what} should be a torch.Tensor {expected}.",
                      "End the function with `return ...` of the result.")
    if isinstance(obj, (list, tuple)) and not hint:
        hint = "Return a torch.Tensor (torch.stack / torch.cat of your pieces, or torch.tensor(list))."
    raise Mistake(f"{what} should be a torch.Tensor {expected}; your function returned {describe(obj)}.", hint)


def _tol(dtype: torch.dtype) -> dict:
    return TOL if dtype == D else TOL32


def _diagnose(actual: Tensor, expected: Tensor, what: str, mistakes: dict[str, Tensor], hint: str,
              tol: dict) -> None:
    """:func:`checks.diagnose`, with ``hint`` only on a difference no named mistake explains (a named mistake's
    message already says what to do)."""
    a = actual.detach()
    if _close(a, expected, **tol) or any(_close(a, torch.as_tensor(w), **tol) for w in mistakes.values()):
        diagnose(a, expected, what, mistakes, **tol)
    else:
        expect_close(a, expected, what, hint=hint, **tol)


# ----------------------------------------------------------------------------- 8.1

SHIFT_RULE = ("inputs[t] = [x_t, e(y_{t-1})] with zeros in the label part at t = 0: "
              "torch.cat([x, torch.cat([torch.zeros_like(e[:1]), e[:-1]])], dim=1) with e = "
              "F.one_hot(y, n_way).to(x.dtype).")

LEAK = ("the current label is in the input, [x_t, e(y_t)]: the network can copy it, so training accuracy is "
        "near 100% at once and nothing is learned (at test time, with the label unknown, it is at chance). "
        "Show each label one step late, as MANN does: " + SHIFT_RULE)

SHIFT_MISTAKES = {
    "leak": LEAK,
    "next": ("the labels are shifted the wrong way, [x_t, e(y_{t+1})]: step t shows the label of the *next* "
             "item, which the network has not seen yet (and the last step shows nothing). Move the labels one "
             "step later, not earlier: " + SHIFT_RULE),
    "roll": ("the labels wrap around: step 0 shows e(y_{T-1}), the label of the last item (torch.roll(e, 1, "
             "dims=0), or y[t - 1] at t = 0, which Python reads as y[-1]). Nothing comes before the first item, "
             "so its label part is zeros: " + SHIFT_RULE),
    "roll_back": ("the labels are shifted the wrong way and wrap around (torch.roll(e, -1, dims=0)): step t shows "
                  "y_{t+1}, and the last step shows y_0. " + SHIFT_RULE),
    "pad0": ("step 0 shows e(0), as if a previous item had label 0 (the labels padded with class 0 before the "
             "one-hot): before the first item there is no label at all, so its label part is the zero vector. "
             "Pad the one-hot rows with a row of zeros instead: " + SHIFT_RULE),
    "front": ("the label part comes before the features, [e(y_{t-1}), x_t]: the chapter's models read the first D "
              "entries as x_t and the last N as the label. Concatenate in that order: torch.cat([x, e_prev], "
              "dim=1)."),
    "front_leak": ("the label part comes before the features, and it is the current label e(y_t), not the previous "
                   "one: " + LEAK),
    "both": ("the features are shifted too, [x_{t-1}, e(y_{t-1})]: only the labels are shown late; step t must "
             "show the item x_t itself, so the network predicts y_t from it."),
}


def _shift_variants(x: Tensor, y: Tensor, n_way: int) -> dict[str, Tensor]:
    x = x.detach()
    e = _onehot(y, n_way, x.dtype)
    prev = _later(e)
    nxt = torch.cat([e[1:], torch.zeros_like(e[:1])])
    pad0 = _onehot(torch.cat([torch.zeros_like(y[:1]), y[:-1]]), n_way, x.dtype)
    rows = {
        "leak": torch.cat([x, e], 1),
        "next": torch.cat([x, nxt], 1),
        "roll": torch.cat([x, torch.roll(e, 1, dims=0)], 1),
        "roll_back": torch.cat([x, torch.roll(e, -1, dims=0)], 1),
        "pad0": torch.cat([x, pad0], 1),
        "front": torch.cat([prev, x], 1),
        "front_leak": torch.cat([e, x], 1),
        "both": torch.cat([torch.cat([torch.zeros_like(x[:1]), x[:-1]]), prev], 1),
    }
    return {SHIFT_MISTAKES[k]: v for k, v in rows.items()}


def _shift_calls() -> list[tuple[Tensor, Tensor, int, str]]:
    g = _g(81)
    x1 = torch.randn(6, 3, generator=g, dtype=D).requires_grad_()
    y1 = torch.tensor([1, 0, 2, 2, 0, 1])
    x2 = torch.randn(7, 2, generator=g, dtype=D)
    y2 = torch.tensor([3, 1, 0, 3, 2, 1, 0])
    x3 = torch.randn(5, 4, generator=g).float()
    y3 = torch.tensor([1, 1, 0, 1, 0])
    x4 = torch.randn(1, 3, generator=g, dtype=D)
    y4 = torch.tensor([2])
    return [(x1, y1, 3, "T = 6, D = 3, n_way = 3"),
            (x2, y2, 5, "T = 7, D = 2, n_way = 5 with labels 0..3 only (label 4 does not occur)"),
            (x2, y2, 6, "the same x and y with n_way = 6"),
            (x3, y3, 2, "T = 5, D = 4, n_way = 2, float32"),
            (x4, y4, 3, "a single item (T = 1), n_way = 3")]


def _expect_inputs(out: Any, x: Tensor, y: Tensor, n_way: int, desc: str) -> Tensor:
    T, d = x.shape
    want = (T, d + n_way)
    what = f"inputs ({desc})"
    if isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], Tensor):
        raise Mistake(f"your function returned a pair ({describe(out)}); return the inputs alone, a tensor "
                      f"{want}. (black_box.build_sequence also returns the targets; this exercise does not.)")
    _need_tensor(out, what, f"of shape (T, D + N) = {want}")
    shape = tuple(out.shape)
    if shape == want:
        return out
    present = int(y.max()) + 1
    if len(shape) == 2 and shape[0] == T:
        width = shape[1] - d
        if width == 1 and n_way != 1:
            raise Mistake(f"{what} has shape {shape}, expected {want}: the labels are concatenated as numbers, one "
                          "column holding y_{t-1}, not as one-hot vectors. A label is a category, not a "
                          "quantity (class 2 is not twice class 1): give the network e(y_{t-1}), N entries, "
                          "F.one_hot(y, n_way).to(x.dtype).")
        if width == present and present != n_way:
            raise Mistake(f"{what} has shape {shape}, expected {want}: the one-hot width is max(y) + 1 = {present}, "
                          f"taken from the labels present, not n_way = {n_way} (F.one_hot(y) without num_classes, "
                          "y.max() + 1 or len(y.unique())). A sequence need not show every class, but the model's "
                          "input size is fixed by N: F.one_hot(y, num_classes=n_way).")
        if shape[1] == n_way:
            raise Mistake(f"{what} has shape {shape}, expected {want}: the features are missing, only the label "
                          "part is there. " + SHIFT_RULE)
        if width > 0:
            raise Mistake(f"{what} has shape {shape}, expected {want}: the label part has {width} entries, but "
                          f"n_way = {n_way}. n_way is ignored or fixed: build the one-hot vectors with "
                          "F.one_hot(y, n_way), from the argument.")
    if len(shape) == 2 and shape[0] in (T - 1, T + 1):
        raise Mistake(f"{what} has {shape[0]} rows for T = {T} items: the sequence itself was shifted (a row "
                      "dropped or added). Keep one row per item, x_t at row t, and shift only the labels: "
                      + SHIFT_RULE)
    raise Mistake(f"{what} has shape {shape}, expected {want}: one row per item, its D features then the N "
                  "entries of the previous label's one-hot vector.")


def _probe_shift(fn: Callable) -> None:
    calls = _shift_calls()
    for i, (x, y, n, desc) in enumerate(calls):
        out = _expect_inputs(fn(x, y, n), x, y, n, desc)
        if out.dtype != x.dtype:
            raise Mistake(f"inputs ({desc}) has dtype {out.dtype} for {x.dtype} x: keep x's dtype (the one-hot part "
                          ".to(x.dtype); new tensors made with dtype=x.dtype, or torch.zeros_like). The model's "
                          "weights have x's dtype.")
        ref = reference_label_shifted_inputs(x.detach(), y, n)
        _diagnose(out, ref, f"inputs ({desc})", _shift_variants(x, y, n),
                  f"Row t: the D features x_t unchanged, then e(y_{{t-1}}) (zeros at t = 0). {SHIFT_RULE}",
                  _tol(x.dtype))
        if i == 0:
            expect_grad(out, f"inputs ({desc})", "x is the encoder's output: keep it as it is in the result "
                        "(torch.cat), with no .detach(), .numpy() or torch.tensor(...) around it, so that the "
                        "encoder learns.")
    x, y, n, _ = calls[0]
    expect_device_agnostic(_raw(fn), x, y, n, what="your label_shifted_inputs")


def label_shifted_inputs(student: Callable) -> Callable:
    """Exercise 8.1: MANN's inputs [x_t, e(y_{t-1})], each label shown one step late."""
    return run_check("8.1", "label-shifted inputs", student, reference_label_shifted_inputs, _probe_shift)


# ----------------------------------------------------------------------------- 8.2

CONVENTION = ("PyTorch's nn.Transformer, nn.TransformerEncoder(mask=...) and nn.MultiheadAttention(attn_mask=...) "
              "read a bool mask as True = *not allowed* to attend (F.scaled_dot_product_attention reads it the "
              "other way round, True = allowed; this exercise follows nn.Transformer).")
MASK_RULE = "torch.ones(T, T, dtype=torch.bool).triu(1): mask[t, s] = s > t, True above the diagonal."

MASK_MISTAKES = {
    "inverted": ("the mask is inverted: it is True where attention is *allowed* (at and below the diagonal). "
                 + CONVENTION + " Mark the forbidden positions, the future s > t: " + MASK_RULE),
    "diag": ("the diagonal is forbidden: position t cannot attend to itself, only to the past, so at t = 0 it "
             "sees nothing at all (a softmax over no position gives NaN), and at every step the current input "
             "(the item to classify) is hidden from the output that classifies it. Position t may attend to "
             "s <= t, itself included: " + MASK_RULE),
    "transposed": ("the mask is True below the diagonal: position t may attend to its future (s > t) but not to its "
                   "past, so the model can read the labels shown later and the sequence is not causal. Either the "
                   "mask is transposed (rows are the attending position t, columns the attended s), or it marks the "
                   "allowed positions (True = allowed) and also leaves out the diagonal. " + CONVENTION + " "
                   + MASK_RULE),
    "none": ("nothing is forbidden (all False): every position attends to the whole sequence, future included, "
             "so the output at t can read the labels shown at later steps. " + MASK_RULE),
    "all": ("everything is forbidden (all True): no position may attend to anything (a softmax over no position "
            "gives NaN). " + MASK_RULE),
    "eye": ("only the diagonal is allowed: position t attends to itself alone, so the model never sees the "
            "labelled items before it and cannot learn from the sequence. Position t may attend to every s <= t: "
            + MASK_RULE),
}


def _mask_variants(T: int) -> dict[str, Tensor]:
    ref = reference_causal_mask(T)
    eye = torch.eye(T, dtype=torch.bool)
    rows = {"inverted": ~ref, "diag": ref | eye, "transposed": ref.T, "none": torch.zeros_like(ref),
            "all": torch.ones_like(ref), "eye": ~eye}
    return {MASK_MISTAKES[k]: v for k, v in rows.items()}


MASK_CALLS = (4, 6, 1, 3)


def _check_mask_dtype(out: Tensor, ref: Tensor, what: str) -> None:
    if out.dtype == torch.bool:
        return
    to_bool = "Return the bool tensor itself (no .float(), .int() or .long()), or build it with dtype=torch.bool."
    if out.dtype.is_floating_point:
        o = out.detach().cpu()
        neg = (o < -1e8) | (torch.isinf(o) & (o < 0))  # -inf, or a large negative number used as -inf
        zero = o == 0
        if bool((neg | zero).all()) and bool(neg.any()):
            if torch.equal(neg, ref):
                raise Mistake(f"{what} is a float additive mask (-inf above the diagonal, 0 elsewhere), dtype "
                              f"{out.dtype}. As an additive mask it is right (nn.Transformer's "
                              "generate_square_subsequent_mask gives the same), but this exercise asks for the bool "
                              "form, True where attention is forbidden: code that uses the mask combines it with "
                              "bool operations (mask | padding, ~mask, scores.masked_fill(mask, float('-inf'))), "
                              "which a float mask breaks. Return `mask == float('-inf')`, or " + MASK_RULE, to_bool)
            raise Mistake(f"{what} is a float additive mask (dtype {out.dtype}) and its -inf entries are not the "
                          "forbidden positions: -inf belongs above the diagonal (s > t). And this exercise asks for "
                          "the bool form, True where attention is forbidden: " + MASK_RULE, to_bool)
        if bool(((o == 0) | (o == 1)).all()):
            same = torch.equal(o == 1, ref)
            raise Mistake(f"{what} is a float 0/1 mask (dtype {out.dtype})" + (" with 1 at the right positions" if same
                          else "") + ". PyTorch reads a float attention mask as numbers *added* to the attention "
                          "scores, so 1 above the diagonal barely changes attention and the future stays visible. "
                          "Return a bool mask, True where attention is forbidden: " + MASK_RULE, to_bool)
        raise Mistake(f"{what} has dtype {out.dtype}; it should be a bool tensor, True where attention is forbidden: "
                      + MASK_RULE, to_bool)
    same = bool(torch.equal(out.detach().cpu() != 0, ref))
    raise Mistake(f"{what} has dtype {out.dtype}" + (" (its 1s are at the right positions)" if same else "") +
                  "; it should be a bool tensor. nn.Transformer rejects an integer mask (and an old uint8 mask is "
                  "deprecated), and a 0/1 integer tensor does not index or combine like a mask (x[mask] picks rows "
                  "0 and 1). " + MASK_RULE, to_bool)


def _probe_mask(fn: Callable) -> None:
    first = None
    for T in MASK_CALLS:
        what = f"causal_mask({T})"
        out = fn(T)
        _need_tensor(out, what, f"of shape ({T}, {T})")
        shape = tuple(out.shape)
        if shape != (T, T):
            if len(shape) == 2 and shape[0] == shape[1] and first is not None:
                raise Mistake(f"{what} has shape {shape}, expected ({T}, {T}): T is ignored or fixed (causal_mask"
                              f"({first}) had the right shape). Build the mask from the argument T.")
            if len(shape) > 2 and shape[-2:] == (T, T) and out.numel() == T * T:
                raise Mistake(f"{what} has shape {shape}, expected ({T}, {T}): drop the extra dimensions "
                              "(nn.Transformer broadcasts a (T, T) mask over the batch and the heads itself).")
            raise Mistake(f"{what} has shape {shape}, expected ({T}, {T}): one row per attending position t, one "
                          "column per attended position s.")
        first = T if first is None else first
        ref = reference_causal_mask(T)
        _check_mask_dtype(out, ref, what)
        got = out.detach().cpu()
        if torch.equal(got, ref):
            continue
        for msg, wrong in _mask_variants(T).items():
            if torch.equal(got, wrong):
                raise Mistake(f"{what}: wrong. It looks like {msg}")
        bad = (got != ref).nonzero()[0].tolist()
        t, s = bad
        raise Mistake(f"{what} differs at [{t}, {s}]: got {bool(got[t, s])}, expected {bool(ref[t, s])} (position "
                      f"{t} {'may not' if bool(ref[t, s]) else 'may'} attend to position {s}).", MASK_RULE)
    raw = _raw(fn)
    try:
        params = inspect.signature(raw).parameters
    except (TypeError, ValueError):
        params = {}
    if "device" in params:
        out = raw(3, device="meta")
        if isinstance(out, Tensor) and out.device.type != "meta":
            raise Mistake(f"causal_mask(3, device='meta') returned a tensor on {out.device}: your function takes a "
                          "device argument but does not use it. Pass it on: torch.ones(T, T, dtype=torch.bool, "
                          "device=device).triu(1).")


def causal_mask(student: Callable) -> Callable:
    """Exercise 8.2: the causal attention mask, True where attention is forbidden."""
    return run_check("8.2", "the causal mask", student, reference_causal_mask, _probe_mask)


# ----------------------------------------------------------------------------- 8.3

LOSS_RULE = "F.cross_entropy(logits[predict_mask], targets[predict_mask])."

LOSS_MISTAKES = {
    "all": ("the loss is taken at every position, predict_mask ignored: in the episode layout a support position "
            "shows its own label in the input, so its loss only teaches the network to copy that label, and it "
            "dilutes the query loss. Score the masked positions only: " + LOSS_RULE),
    "inverted": ("the loss is taken at the positions where predict_mask is *False* (the supports): the mask is "
                 "inverted. True marks the positions to predict (the queries): " + LOSS_RULE),
    "sum": ("the cross-entropy is summed over the masked positions, not averaged: the loss (and the step size) "
            "then grows with the number of queries. Take the mean: " + LOSS_RULE),
    "zeroed": ("the loss is zeroed at the unmasked positions and then averaged over *all* positions ((loss * "
               "mask).mean()): that divides by the number of positions (T, or B*T) instead of the number of masked "
               "ones, so the loss shrinks as the support set grows. Divide by predict_mask.sum(), or: " + LOSS_RULE),
    "per_seq": ("each sequence is averaged over its own masked positions first, then the sequences are averaged: "
                "a sequence with few masked positions then weighs as much as one with many. Take one mean over all "
                "masked positions of the batch: " + LOSS_RULE),
    "over_b": ("the summed loss is divided by the number of sequences B, not by the number of masked positions: "
               + LOSS_RULE),
    "over_t": ("the summed loss is divided by T (the sequence length), not by the number of masked positions: "
               + LOSS_RULE),
    "axis_t": ("the softmax runs over the positions (the T axis: dim=-2, which is dim=0 for (T, N) logits), not over "
               "the classes: each class's probabilities then "
               "sum to 1 along the sequence. p(y_t | ...) is a softmax over the N classes at one position "
               "(dim=-1): " + LOSS_RULE),
    "axis_b": ("the softmax runs over the batch (dim=0), not over the classes (dim=-1): " + LOSS_RULE),
    "mse": ("it is the mean squared error between the logits and one-hot targets: classification is trained with "
            "the cross-entropy of the softmax, " + LOSS_RULE),
    "mse_p": ("it is the mean squared error between the softmax probabilities and one-hot targets (mean over all "
              "entries): use the cross-entropy, " + LOSS_RULE),
    "brier": ("it is the squared error between the probabilities and one-hot targets (the Brier score): use the "
              "cross-entropy, " + LOSS_RULE),
    "ce_p": ("the cross-entropy is taken of probabilities (a softmax before F.cross_entropy, which applies "
             "log_softmax itself): pass the logits, " + LOSS_RULE),
    "nll": ("it uses F.nll_loss on the logits: nll_loss expects log-probabilities, so without log_softmax it is not "
            "a cross-entropy. " + LOSS_RULE),
}


def _loss_variants(logits: Tensor, targets: Tensor, mask: Tensor) -> dict[str, Tensor]:
    L, n = logits.detach(), logits.shape[-1]
    ce = F.cross_entropy(L.reshape(-1, n), targets.reshape(-1), reduction="none").reshape(mask.shape)
    Lm, tm = L[mask], targets[mask]
    oh = F.one_hot(tm, n).to(L.dtype)
    p = torch.softmax(Lm, dim=-1)
    picked = ce * mask

    def nll_along(dim: int) -> Tensor:
        return -torch.log_softmax(L, dim=dim).gather(-1, targets.unsqueeze(-1)).squeeze(-1)[mask].mean()

    rows = {
        "all": ce.mean(), "inverted": ce[~mask].mean(), "sum": picked.sum(),
        "zeroed": picked.sum() / mask.numel(), "axis_t": nll_along(-2),
        "mse": (Lm - oh).pow(2).mean(), "mse_p": (p - oh).pow(2).mean(), "brier": (p - oh).pow(2).sum(-1).mean(),
        "ce_p": F.cross_entropy(p, tm), "nll": F.nll_loss(Lm, tm),
    }
    if L.dim() == 3:
        rows.update({"over_b": picked.sum() / mask.shape[0], "over_t": picked.sum() / mask.shape[1],
                     "axis_b": nll_along(0)})
        counts = mask.sum(1)
        if bool((counts != counts[0]).any()):  # with equal counts per sequence the two means agree
            rows["per_seq"] = (picked.sum(1) / counts).mean()
    return {LOSS_MISTAKES[k]: v for k, v in rows.items()}


def _loss_calls() -> list[tuple[Tensor, Tensor, Tensor, str]]:
    g = _g(83)
    L1 = (1.5 * torch.randn(7, 3, generator=g, dtype=D)).requires_grad_()
    t1 = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    m1 = torch.tensor([False, False, False, True, True, False, True])
    m2 = torch.tensor([True, False, True, False, False, True, True])
    L3 = (1.5 * torch.randn(3, 6, 4, generator=g, dtype=D)).requires_grad_()
    t3 = torch.randint(0, 4, (3, 6), generator=g)
    m3 = torch.zeros(3, 6, dtype=torch.bool)
    m3[0, 5] = True
    m3[1, 2:] = True
    m3[2, [1, 4]] = True
    L4 = torch.randn(2, 5, 3, generator=g).float().requires_grad_()
    t4 = torch.randint(0, 3, (2, 5), generator=g)
    m4 = torch.zeros(2, 5, dtype=torch.bool)
    m4[:, 3:] = True
    return [(L1, t1, m1, "logits (T, N) = (7, 3), 3 positions masked"),
            (L1, t1, m2, "the same logits and targets with another mask, 4 positions masked"),
            (L3, t3, m3, "logits (B, T, N) = (3, 6, 4), 1, 4 and 2 positions masked in the three sequences"),
            (L4, t4, m4, "logits (B, T, N) = (2, 5, 3), float32, the last 2 positions of each sequence masked")]


def _expect_scalar_loss(out: Any, logits: Tensor, targets: Tensor, mask: Tensor, desc: str) -> Tensor:
    what = f"the loss ({desc})"
    if out is None:
        raise Mistake(f"your function returned None; {what} should be a scalar tensor.",
                      "End the function with `return loss`.")
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        raise Mistake(f"{what} is {describe(out)}; it should be a scalar torch.Tensor. .item() or float() cut the "
                      "gradient, so the model could not learn from it: return the tensor itself.")
    _need_tensor(out, what, "(a scalar, shape ())")
    if out.dim() == 0:
        return out
    shape, m = tuple(out.shape), int(mask.sum())
    if shape == (m,):
        raise Mistake(f"{what} has shape {shape}: these are the per-position losses of the {m} masked positions "
                      "(reduction='none'). Return one number, their mean: " + LOSS_RULE)
    if shape == tuple(mask.shape) or shape == (mask.numel(),):
        raise Mistake(f"{what} has shape {shape}: these are per-position losses at every position. Return one "
                      "number, the mean over the masked positions: " + LOSS_RULE)
    if out.numel() == 1:
        raise Mistake(f"{what} has shape {shape}; return a scalar (shape ()): no keepdim, or .squeeze().")
    raise Mistake(f"{what} has shape {shape}; it should be a scalar (shape ()), the mean over the masked positions: "
                  + LOSS_RULE)


def _probe_loss(fn: Callable) -> None:
    calls = _loss_calls()
    for i, (L, t, m, desc) in enumerate(calls):
        out = _expect_scalar_loss(fn(L, t, m), L, t, m, desc)
        ref = reference_query_loss(L.detach(), t, m)
        _diagnose(out, ref, f"the loss ({desc})", _loss_variants(L, t, m),
                  "The mean cross-entropy over the positions where predict_mask is True: " + LOSS_RULE, _tol(L.dtype))
        if out.dtype != L.dtype:
            raise Mistake(f"the loss ({desc}) is {out.dtype} for {L.dtype} logits: keep the logits' dtype (no "
                          ".float() or .double()).")
        expect_grad(out, f"the loss ({desc})", "Compute it from the logits with torch operations (no .detach(), "
                    ".item(), .numpy() or torch.tensor(...)): the gradient must reach the model.")
    L, t, m, _ = calls[2]
    expect_device_agnostic(_raw(fn), L, t, m, what="your query_loss")


def query_loss(student: Callable) -> Callable:
    """Exercise 8.3: the mean cross-entropy over the masked (query) positions."""
    return run_check("8.3", "the masked query loss", student, reference_query_loss, _probe_loss)


# ----------------------------------------------------------------------------- 8.4

PERM_RULE = ("perm[n] is the new label of class n, so an item of class y gets label perm[y]: "
             "y_support_new = perm[y_support], y_query_new = perm[y_query] (the same perm for both).")

RELABEL_MISTAKES = {
    "inverse": ("it applies the inverse permutation (argsort(perm)[y], or a lookup from new labels back to old "
                "classes): the convention is perm[n] = the new label of class n, so label y becomes perm[y]. "
                "argsort(perm) maps a new label back to its class, which is how the scores are mapped back "
                "afterwards, not how the labels are given. " + PERM_RULE),
    "support_only": ("only the support labels are relabelled; the query labels are left as they were, so the "
                     "queries are scored against labels that no longer match the support set's. " + PERM_RULE),
    "query_only": ("only the query labels are relabelled; the support labels are left as they were, so the "
                   "labels shown with the supports do not match the labels the queries are scored against. "
                   + PERM_RULE),
    "query_inverse": ("the support is relabelled with perm but the query with its inverse (argsort(perm)): both "
                      "sets must use the same map, or the queries are scored against other labels than the "
                      "supports show. " + PERM_RULE),
    "none": "nothing is relabelled: both label sets come back unchanged. " + PERM_RULE,
}


def _relabel_variants(ys: Tensor, yq: Tensor, perm: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    inv = torch.argsort(perm)
    rows = {"inverse": (inv[ys], inv[yq]), "support_only": (perm[ys], yq), "query_only": (ys, perm[yq]),
            "query_inverse": (perm[ys], inv[yq]), "none": (ys, yq)}
    return {RELABEL_MISTAKES[k]: v for k, v in rows.items()}


POSITIONS = ("the permutation is applied to the positions (y[perm], which reorders the items) instead of the "
             "labels (perm[y], which renames each label): y[perm] has one entry per class, not one per item. "
             + PERM_RULE)


def _relabel_calls() -> list[tuple[Tensor, Tensor, Tensor, str]]:
    ys = torch.tensor([3, 0, 4, 1, 2, 2, 0, 3, 1, 4])
    yq = torch.tensor([1, 4, 0, 0, 3, 2, 4, 1])
    ys3 = torch.tensor([0, 3, 1, 2])
    yq3 = torch.tensor([2, 0, 3, 3, 1, 0, 2])
    return [(ys, yq, torch.tensor([2, 0, 4, 1, 3]), "5-way 2-shot (10 supports in a shuffled order), 8 queries, "
             "perm = [2, 0, 4, 1, 3]"),
            (ys, yq, torch.tensor([4, 3, 0, 2, 1]), "the same labels with perm = [4, 3, 0, 2, 1]"),
            (ys3, yq3, torch.tensor([1, 3, 0, 2]), "4-way 1-shot (4 supports), 7 queries, perm = [1, 3, 0, 2]")]


def _expect_labels(out: Any, ys: Tensor, yq: Tensor, n_way: int, desc: str) -> tuple[Tensor, Tensor]:
    if out is None:
        raise Mistake("your function returned None; return the pair (y_support_new, y_query_new).",
                      "End the function with `return y_support_new, y_query_new`.")
    if isinstance(out, Tensor):
        raise Mistake(f"return a pair (y_support_new, y_query_new); your function returned {describe(out)}. Both "
                      "sets are relabelled, with the same perm: " + PERM_RULE)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise Mistake(f"return a pair (y_support_new, y_query_new); your function returned {describe(out)}.")
    a, b = out
    _need_tensor(a, f"y_support_new ({desc})", f"of shape {tuple(ys.shape)}")
    _need_tensor(b, f"y_query_new ({desc})", f"of shape {tuple(yq.shape)}")
    if a.shape == yq.shape and b.shape == ys.shape and ys.shape != yq.shape:
        raise Mistake(f"the pair is swapped ({desc}): return (y_support_new, y_query_new), the support first, "
                      "in the order of the arguments.")
    for t, y, name in ((a, ys, "y_support_new"), (b, yq, "y_query_new")):
        if t.shape != y.shape:
            if tuple(t.shape) == (n_way,):
                raise Mistake(f"{name} ({desc}) has shape {tuple(t.shape)}, expected {tuple(y.shape)}: it looks like "
                              + POSITIONS)
            raise Mistake(f"{name} ({desc}) has shape {tuple(t.shape)}, expected {tuple(y.shape)}: one new label per "
                          "item. " + PERM_RULE)
        if t.dtype != torch.long:
            raise Mistake(f"{name} ({desc}) has dtype {t.dtype}; labels are torch.long, as F.one_hot and "
                          "F.cross_entropy need (perm[y] keeps perm's dtype, long).",
                          "Index perm with the labels, perm[y], without .float() or .int().")
    return a, b


def _consistent_map(y: Tensor, new: Tensor, n_way: int) -> list[int] | None:
    """The map class -> new label that ``new`` follows, if it is a function of the class (else None)."""
    out: list[int] = [-1] * n_way
    for c, v in zip(y.tolist(), new.tolist()):
        if out[c] not in (-1, v):
            return None
        out[c] = v
    return out


def _probe_relabel(fn: Callable) -> None:
    calls = _relabel_calls()
    got = []
    for ys, yq, perm, desc in calls:
        a, b = _expect_labels(fn(ys, yq, perm), ys, yq, perm.shape[0], desc)
        got.append((a.detach().cpu(), b.detach().cpu()))
    for i, ((ys, yq, perm, desc), (a, b)) in enumerate(zip(calls, got)):
        n = perm.shape[0]
        ra, rb = reference_relabel(ys, yq, perm)
        if torch.equal(a, ra) and torch.equal(b, rb):
            continue
        for msg, (va, vb) in _relabel_variants(ys, yq, perm).items():
            if torch.equal(a, va) and torch.equal(b, vb):
                raise Mistake(f"the new labels ({desc}): wrong. It looks like {msg}")
        again = _expect_labels(fn(ys, yq, perm), ys, yq, n, desc)
        a2, b2 = again[0].detach().cpu(), again[1].detach().cpu()
        if not (torch.equal(a, a2) and torch.equal(b, b2)):
            which = ("the query labels change" if torch.equal(a, a2) else "the support labels change" if
                     torch.equal(b, b2) else "both change")
            extra = (" The support is relabelled with perm, but the query with a fresh permutation drawn inside "
                     "your function (a new torch.randperm): both sets must use the same map."
                     if torch.equal(a, ra) and torch.equal(a, a2) else "")
            raise Mistake(f"the new labels ({desc}): wrong. Two calls with the same perm gave different labels "
                          f"({which}): your function draws its own random permutation instead of using perm.{extra} "
                          + PERM_RULE)
        if torch.equal(got[0][0], got[1][0]) and torch.equal(got[0][1], got[1][1]):
            raise Mistake(f"the new labels: wrong. perm is ignored or fixed: your function gives the same labels for "
                          f"perm = {calls[0][2].tolist()} and perm = {calls[1][2].tolist()}. " + PERM_RULE)
        ms, mq = _consistent_map(ys, a, n), _consistent_map(yq, b, n)
        if torch.equal(a, ra) and mq is not None:
            raise Mistake(f"the new labels ({desc}): wrong. The support is relabelled with perm, but the query with "
                          f"another map (class -> label {mq}, where perm is {perm.tolist()}): both sets must use the "
                          "same map, or the queries are scored against other labels than the supports show. "
                          + PERM_RULE)
        if ms is not None and mq is not None and ms == mq:
            raise Mistake(f"the new labels ({desc}): wrong. Both sets follow the map class -> label {ms}, not perm = "
                          f"{perm.tolist()}. " + PERM_RULE)
        name, t, r, y = ("y_support_new", a, ra, ys) if not torch.equal(a, ra) else ("y_query_new", b, rb, yq)
        j = int((t != r).nonzero()[0, 0])
        raise Mistake(f"{name} ({desc}) differs at item {j} (class {int(y[j])}): got {int(t[j])}, expected "
                      f"perm[{int(y[j])}] = {int(r[j])}.", PERM_RULE)
    ys, yq, perm, _ = calls[0]
    expect_device_agnostic(_raw(fn), ys, yq, perm, what="your relabel")


def relabel(student: Callable) -> Callable:
    """Exercise 8.4: one episode's label permutation, the same for the support and the query."""
    return run_check("8.4", "the per-episode label permutation", student, reference_relabel, _probe_relabel)
