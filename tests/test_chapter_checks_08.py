"""Chapter 08's checks (model-based, "black-box" meta-learning): right answers in several styles pass; each
classic mistake of MANN's label offset, the causal mask, the masked query loss and the per-episode label
permutation gets its own named message; wrong types, mutated inputs and CPU-made tensors are reported as such;
stubs are "not attempted"; the check's references agree with course_utils.black_box.

The mistaken functions below are written independently of the check's own variants (as a student would write
them), so a named message shows that the check recognises the mistake, not merely its own code."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils import black_box as bb
from course_utils import checks
from course_utils.chapter_checks import ch08
from course_utils.episodes import Episode
from conftest import expect_stub_handling, message, status, stub  # shared check-test helpers


# --- 8.1 label-shifted inputs ------------------------------------------------------------------------

def shift_cat(x, y, n_way):  # right: F.one_hot, a zero row on top
    e = F.one_hot(y, n_way).to(x.dtype)
    e = torch.cat([torch.zeros(1, n_way, dtype=x.dtype, device=x.device), e[:-1]], dim=0)
    return torch.cat([x, e], dim=1)


def shift_assign(x, y, n_way):  # right: a zero tensor filled by slices
    T, D = x.shape
    out = x.new_zeros(T, D + n_way)
    out[:, :D] = x
    out[1:, D:] = F.one_hot(y[:-1], num_classes=n_way).to(x.dtype)
    return out


def shift_eye_pad(x, y, n_way):  # right: rows of the identity, F.pad then drop the last row
    e = torch.eye(n_way, dtype=x.dtype, device=x.device)[y]
    return torch.cat([x, F.pad(e, (0, 0, 1, 0))[:-1]], dim=-1)


def shift_loop(x, y, n_way):  # right: one step at a time
    rows = []
    for t in range(x.shape[0]):
        prev = torch.zeros(n_way, dtype=x.dtype, device=x.device)
        if t > 0:
            prev = F.one_hot(y[t - 1], n_way).to(x.dtype)
        rows.append(torch.cat([x[t], prev]))
    return torch.stack(rows)


def shift_leak(x, y, n_way):
    return torch.cat([x, F.one_hot(y, n_way).to(x.dtype)], dim=1)


def shift_next(x, y, n_way):
    e = F.one_hot(y, n_way).to(x.dtype)
    return torch.cat([x, torch.cat([e[1:], torch.zeros_like(e[:1])])], dim=1)


def shift_roll(x, y, n_way):
    return torch.cat([x, torch.roll(F.one_hot(y, n_way).to(x.dtype), shifts=1, dims=0)], dim=1)


def shift_loop_wrap(x, y, n_way):  # y[t - 1] at t = 0 is y[-1]
    return torch.stack([torch.cat([x[t], F.one_hot(y[t - 1], n_way).to(x.dtype)]) for t in range(len(y))])


def shift_roll_back(x, y, n_way):
    return torch.cat([x, F.one_hot(y, n_way).to(x.dtype).roll(-1, 0)], dim=1)


def shift_pad_class0(x, y, n_way):
    prev = torch.cat([torch.zeros_like(y[:1]), y[:-1]])
    return torch.cat([x, F.one_hot(prev, n_way).to(x.dtype)], dim=1)


def shift_front(x, y, n_way):
    e = F.pad(F.one_hot(y, n_way).to(x.dtype), (0, 0, 1, 0))[:-1]
    return torch.cat([e, x], dim=1)


def shift_front_leak(x, y, n_way):
    return torch.cat([F.one_hot(y, n_way).to(x.dtype), x], dim=1)


def shift_both(x, y, n_way):
    return F.pad(torch.cat([x, F.one_hot(y, n_way).to(x.dtype)], dim=1), (0, 0, 1, 0))[:-1]


def shift_integer_labels(x, y, n_way):
    prev = torch.cat([torch.zeros_like(y[:1]), y[:-1]]).to(x.dtype)
    return torch.cat([x, prev[:, None]], dim=1)


def shift_onehot_width(x, y, n_way):  # F.one_hot without num_classes
    e = F.one_hot(y).to(x.dtype)
    return torch.cat([x, F.pad(e, (0, 0, 1, 0))[:-1]], dim=1)


def shift_unique_width(x, y, n_way):
    k = len(torch.unique(y))
    e = (y[:, None] == torch.arange(k, device=y.device)).to(x.dtype)
    return torch.cat([x, F.pad(e, (0, 0, 1, 0))[:-1]], dim=1)


def shift_fixed_n(x, y, n_way):  # the chapter's 5-way typed in
    return shift_cat(x, y, 5)


def shift_no_features(x, y, n_way):
    return F.pad(F.one_hot(y, n_way).to(x.dtype), (0, 0, 1, 0))[:-1]


def shift_sequence(x, y, n_way):  # shifts the sequence instead of the labels
    return torch.cat([x[1:], F.one_hot(y[:-1], n_way).to(x.dtype)], dim=1)


def shift_pair(x, y, n_way):  # as black_box.build_sequence
    return shift_cat(x, y, n_way), y


def shift_float32(x, y, n_way):
    return shift_cat(x.float(), y, n_way)


def shift_detached(x, y, n_way):
    return shift_cat(x.detach(), y, n_way)


def shift_cpu_eye(x, y, n_way):  # torch.eye without device=
    e = torch.eye(n_way)[y]
    return torch.cat([x, F.pad(e, (0, 0, 1, 0))[:-1].to(x.dtype)], dim=1)


def shift_labels_in_place(x, y, n_way):
    y[1:] = y[:-1].clone()
    e = F.one_hot(y, n_way).to(x.dtype)
    e[0] = 0
    return torch.cat([x, e], dim=1)


def shift_numpy(x, y, n_way):
    return shift_cat(x, y, n_way).detach().numpy()


def shift_none(x, y, n_way):
    shift_cat(x, y, n_way)


def shift_scaled(x, y, n_way):  # no named mistake: the first wrong entry, and the rule as a hint
    return shift_cat(2 * x, y, n_way)


@pytest.mark.parametrize("fn", [ch08.reference_label_shifted_inputs, shift_cat, shift_assign, shift_eye_pad,
                                shift_loop])
def test_shift_right_answers_pass(fn):
    assert ch08.label_shifted_inputs(fn) is fn
    assert status("8.1") == "right", message("8.1")


@pytest.mark.parametrize("fn, phrase", [
    (shift_leak, "the network can copy it, so training accuracy is near 100% at once and nothing is learned"),
    (shift_next, "shifted the wrong way, [x_t, e(y_{t+1})]"),
    (shift_roll, "the labels wrap around"),
    (shift_loop_wrap, "which Python reads as y[-1]"),
    (shift_roll_back, "shifted the wrong way and wrap around"),
    (shift_pad_class0, "step 0 shows e(0)"),
    (shift_front, "the label part comes before the features, [e(y_{t-1}), x_t]"),
    (shift_front_leak, "it is the current label e(y_t)"),
    (shift_both, "the features are shifted too"),
    (shift_integer_labels, "the labels are concatenated as numbers"),
    (shift_onehot_width, "the one-hot width is max(y) + 1 = 4"),
    (shift_unique_width, "taken from the labels present, not n_way = 5"),
    (shift_fixed_n, "n_way is ignored or fixed"),
    (shift_no_features, "the features are missing"),
    (shift_sequence, "the sequence itself was shifted"),
    (shift_pair, "return the inputs alone"),
    (shift_float32, "keep x's dtype"),
    (shift_detached, "does not carry gradients"),
    (shift_cpu_eye, "makes a tensor on the CPU"),
    (shift_labels_in_place, "changed its input `y` in place"),
    (shift_numpy, "NumPy array"),
    (shift_none, "returned None"),
    (shift_scaled, "differs at index [0, 0]"),
])
def test_shift_mistakes_are_named(fn, phrase):
    assert ch08.label_shifted_inputs(fn) is ch08.reference_label_shifted_inputs
    assert status("8.1") == "wrong"
    assert phrase in message("8.1"), message("8.1")


def test_named_mistakes_carry_no_repeated_hint():
    ch08.label_shifted_inputs(shift_leak)
    assert "Hint:" not in message("8.1")
    ch08.label_shifted_inputs(shift_scaled)
    assert "Hint: Row t" in message("8.1")


def test_shift_reference_semantics():
    x = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    out = ch08.reference_label_shifted_inputs(x, torch.tensor([2, 0, 1]), 4)
    assert out.dtype == torch.float64 and out.shape == (3, 6)
    assert torch.equal(out[:, :2], x)
    assert out[0, 2:].tolist() == [0, 0, 0, 0]  # nothing before the first item
    assert out[1, 2:].tolist() == [0, 0, 1, 0] and out[2, 2:].tolist() == [1, 0, 0, 0]  # y_0 = 2, y_1 = 0


# --- 8.2 the causal mask ------------------------------------------------------------------------------

def mask_triu(T):  # right
    return torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)


def mask_compare(T):  # right: key index > query index
    i = torch.arange(T)
    return i[None, :] > i[:, None]


def mask_not_tril(T):  # right: forbidden = not allowed
    return ~torch.tril(torch.ones(T, T)).bool()


def mask_from_additive(T):  # right: the bool form of nn.Transformer's additive mask
    return nn.Transformer.generate_square_subsequent_mask(T) == float("-inf")


def mask_with_device(T, device=None):  # right, with an optional device as black_box.causal_mask
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(1)


def mask_inverted(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool))


def mask_diag(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool))


def mask_transposed(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1).T


def mask_additive(T):
    return nn.Transformer.generate_square_subsequent_mask(T)


def mask_additive_wrong(T):
    return torch.full((T, T), float("-inf")).tril(-1)


def mask_additive_large(T):  # -1e9 for -inf
    return torch.triu(torch.full((T, T), -1e9), diagonal=1)


def mask_float01(T):
    return torch.triu(torch.ones(T, T), diagonal=1)


def mask_long(T):
    return torch.triu(torch.ones(T, T), diagonal=1).long()


def mask_fixed_t(T):
    return mask_triu(4)


def mask_none(T):
    return torch.zeros(T, T, dtype=torch.bool)


def mask_all(T):
    return torch.ones(T, T, dtype=torch.bool)


def mask_self_only(T):
    return ~torch.eye(T, dtype=torch.bool)


def mask_batched(T):
    return mask_triu(T)[None]


def mask_device_ignored(T, device=None):
    return mask_triu(T)


def mask_numpy(T):
    import numpy as np
    return np.triu(np.ones((T, T), dtype=bool), 1)


def mask_none_returned(T):
    mask_triu(T)


def mask_one_off(T):
    m = mask_triu(T)
    m[-1, 0] = True
    return m


@pytest.mark.parametrize("fn", [ch08.reference_causal_mask, mask_triu, mask_compare, mask_not_tril,
                                mask_from_additive, mask_with_device])
def test_mask_right_answers_pass(fn):
    assert ch08.causal_mask(fn) is fn
    assert status("8.2") == "right", message("8.2")


@pytest.mark.parametrize("fn, phrase", [
    (mask_inverted, "the mask is inverted: it is True where attention is *allowed*"),
    (mask_diag, "the diagonal is forbidden: position t cannot attend to itself"),
    (mask_transposed, "position t may attend to its future (s > t) but not to its past"),
    (mask_additive, "As an additive mask it is right"),
    (mask_additive_wrong, "its -inf entries are not the forbidden positions"),
    (mask_additive_large, "As an additive mask it is right"),
    (mask_float01, "a float 0/1 mask"),
    (mask_long, "its 1s are at the right positions"),
    (mask_fixed_t, "T is ignored or fixed"),
    (mask_none, "nothing is forbidden"),
    (mask_all, "everything is forbidden"),
    (mask_self_only, "only the diagonal is allowed"),
    (mask_batched, "drop the extra dimensions"),
    (mask_device_ignored, "takes a device argument but does not use it"),
    (mask_numpy, "NumPy array"),
    (mask_none_returned, "returned None"),
    (mask_one_off, "differs at [3, 0]: got True, expected False (position 3 may attend to position 0)"),
])
def test_mask_mistakes_are_named(fn, phrase):
    assert ch08.causal_mask(fn) is ch08.reference_causal_mask
    assert status("8.2") == "wrong"
    assert phrase in message("8.2"), message("8.2")


def test_mask_reference_follows_pytorch_convention():
    # nn.MultiheadAttention with the reference mask: the output at t does not change with later inputs
    torch.manual_seed(0)
    att = nn.MultiheadAttention(4, 1, batch_first=True)
    x = torch.randn(1, 5, 4)
    x2 = x.clone()
    x2[0, 3:] += 10.0
    m = ch08.reference_causal_mask(5)
    a, b = att(x, x, x, attn_mask=m)[0], att(x2, x2, x2, attn_mask=m)[0]
    assert torch.allclose(a[0, :3], b[0, :3], atol=1e-6) and not torch.allclose(a[0, 3:], b[0, 3:])


# --- 8.3 the masked query loss ------------------------------------------------------------------------

def loss_index(logits, targets, predict_mask):  # right: boolean indexing
    return F.cross_entropy(logits[predict_mask], targets[predict_mask])


def loss_weighted(logits, targets, predict_mask):  # right: per-position losses, masked mean
    n = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, n), targets.reshape(-1), reduction="none").reshape(targets.shape)
    w = predict_mask.to(ce.dtype)
    return (ce * w).sum() / w.sum()


def loss_manual(logits, targets, predict_mask):  # right: log_softmax, gather, torch.where
    nll = -logits.log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.where(predict_mask, nll, torch.zeros_like(nll)).sum() / predict_mask.sum()


def loss_ignore_index(logits, targets, predict_mask):  # right: -100 where not predicted
    t = torch.where(predict_mask, targets, torch.full_like(targets, -100))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1))


def _ce(logits, targets):
    n = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, n), targets.reshape(-1), reduction="none").reshape(targets.shape)


def loss_all(logits, targets, predict_mask):
    return _ce(logits, targets).mean()


def loss_inverted(logits, targets, predict_mask):
    return F.cross_entropy(logits[~predict_mask], targets[~predict_mask])


def loss_sum(logits, targets, predict_mask):
    return F.cross_entropy(logits[predict_mask], targets[predict_mask], reduction="sum")


def loss_zeroed_mean(logits, targets, predict_mask):
    return (_ce(logits, targets) * predict_mask).mean()


def loss_per_sequence(logits, targets, predict_mask):
    if logits.dim() == 2:
        logits, targets, predict_mask = logits[None], targets[None], predict_mask[None]
    ce = _ce(logits, targets) * predict_mask
    return (ce.sum(dim=1) / predict_mask.sum(dim=1)).mean()


def loss_over_b(logits, targets, predict_mask):  # right for one sequence, divided by B for a batch
    if logits.dim() == 2:
        return loss_index(logits, targets, predict_mask)
    return (_ce(logits, targets) * predict_mask).sum() / logits.shape[0]


def loss_over_b_everywhere(logits, targets, predict_mask):  # (T, N) as a batch of one: B = 1 is the sum
    if logits.dim() == 2:
        logits, targets, predict_mask = logits[None], targets[None], predict_mask[None]
    return (_ce(logits, targets) * predict_mask).sum() / logits.shape[0]


def loss_axis_t(logits, targets, predict_mask):
    logp = F.log_softmax(logits, dim=-2)
    return -logp.gather(-1, targets[..., None])[..., 0][predict_mask].mean()


def loss_axis_0(logits, targets, predict_mask):  # dim 0: the positions for (T, N), the batch for (B, T, N)
    logp = torch.log_softmax(logits, dim=0)
    return -logp.gather(-1, targets[..., None])[..., 0][predict_mask].mean()


def loss_mse(logits, targets, predict_mask):
    return F.mse_loss(logits[predict_mask], F.one_hot(targets[predict_mask], logits.shape[-1]).to(logits.dtype))


def loss_mse_probs(logits, targets, predict_mask):
    p = logits[predict_mask].softmax(-1)
    return F.mse_loss(p, F.one_hot(targets[predict_mask], logits.shape[-1]).to(p.dtype))


def loss_brier(logits, targets, predict_mask):
    p = logits[predict_mask].softmax(-1)
    return ((p - F.one_hot(targets[predict_mask], logits.shape[-1])) ** 2).sum(-1).mean()


def loss_ce_of_probs(logits, targets, predict_mask):
    return F.cross_entropy(logits[predict_mask].softmax(-1), targets[predict_mask])


def loss_nll(logits, targets, predict_mask):
    return F.nll_loss(logits[predict_mask], targets[predict_mask])


def loss_per_position(logits, targets, predict_mask):
    return F.cross_entropy(logits[predict_mask], targets[predict_mask], reduction="none")


def loss_per_position_all(logits, targets, predict_mask):
    return _ce(logits, targets) * predict_mask


def loss_item(logits, targets, predict_mask):
    return loss_index(logits, targets, predict_mask).item()


def loss_detached(logits, targets, predict_mask):
    return loss_index(logits.detach(), targets, predict_mask)


def loss_keepdim(logits, targets, predict_mask):
    return loss_index(logits, targets, predict_mask).reshape(1)


def loss_float32(logits, targets, predict_mask):
    return loss_index(logits.float(), targets, predict_mask)


def loss_cpu_weights(logits, targets, predict_mask):
    w = torch.where(predict_mask, torch.ones(predict_mask.shape), torch.zeros(predict_mask.shape))
    return (_ce(logits, targets) * w).sum() / w.sum()


def loss_targets_in_place(logits, targets, predict_mask):
    targets[~predict_mask] = -100
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def loss_none(logits, targets, predict_mask):
    loss_index(logits, targets, predict_mask)


def loss_smoothed(logits, targets, predict_mask):  # no named mistake: the values, and the rule as a hint
    return F.cross_entropy(logits[predict_mask], targets[predict_mask], label_smoothing=0.1)


@pytest.mark.parametrize("fn", [ch08.reference_query_loss, loss_index, loss_weighted, loss_manual,
                                loss_ignore_index])
def test_loss_right_answers_pass(fn):
    assert ch08.query_loss(fn) is fn
    assert status("8.3") == "right", message("8.3")


@pytest.mark.parametrize("fn, phrase", [
    (loss_all, "the loss is taken at every position, predict_mask ignored"),
    (loss_inverted, "the mask is inverted"),
    (loss_sum, "summed over the masked positions, not averaged"),
    (loss_zeroed_mean, "averaged over *all* positions"),
    (loss_per_sequence, "each sequence is averaged over its own masked positions first"),
    (loss_over_b, "divided by the number of sequences B"),
    (loss_over_b_everywhere, "summed over the masked positions, not averaged"),
    (loss_axis_t, "the softmax runs over the positions (the T axis: dim=-2"),
    (loss_axis_0, "which is dim=0 for (T, N) logits"),  # on the (T, N) call dim 0 is the positions
    (loss_mse, "mean squared error between the logits and one-hot targets"),
    (loss_mse_probs, "between the softmax probabilities and one-hot targets"),
    (loss_brier, "the Brier score"),
    (loss_ce_of_probs, "the cross-entropy is taken of probabilities"),
    (loss_nll, "F.nll_loss on the logits"),
    (loss_per_position, "per-position losses of the 3 masked positions"),
    (loss_per_position_all, "per-position losses at every position"),
    (loss_item, "cut the gradient"),
    (loss_detached, "does not carry gradients"),
    (loss_keepdim, "return a scalar (shape ())"),
    (loss_float32, "compute in float64"),
    (loss_cpu_weights, "makes a tensor on the CPU"),
    (loss_targets_in_place, "changed its input `targets` in place"),
    (loss_none, "returned None"),
    (loss_smoothed, "Hint: The mean cross-entropy over the positions where predict_mask is True"),
])
def test_loss_mistakes_are_named(fn, phrase):
    assert ch08.query_loss(fn) is ch08.reference_query_loss
    assert status("8.3") == "wrong"
    assert phrase in message("8.3"), message("8.3")


def test_loss_axis_over_the_batch_is_named_on_batched_logits():
    L, t, m, _ = ch08._loss_calls()[2]
    variants = ch08._loss_variants(L, t, m)
    got = loss_axis_0(L.detach(), t, m)
    assert any("runs over the batch (dim=0)" in k and torch.allclose(got, v) for k, v in variants.items())


# --- 8.4 the per-episode label permutation ------------------------------------------------------------

def rl_index(y_support, y_query, perm):  # right
    return perm[y_support], perm[y_query]


def rl_index_select(y_support, y_query, perm):  # right: index_select
    return perm.index_select(0, y_support), torch.index_select(perm, 0, y_query)


def rl_loop(y_support, y_query, perm):  # right: a Python lookup
    table = perm.tolist()
    return (torch.tensor([table[c] for c in y_support.tolist()], dtype=torch.long),
            torch.tensor([table[c] for c in y_query.tolist()], dtype=torch.long))


def rl_one_hot(y_support, y_query, perm):  # right: one-hot rows times perm
    n = perm.shape[0]
    return (F.one_hot(y_support, n) * perm).sum(-1), (F.one_hot(y_query, n) * perm).sum(-1)


def rl_inverse(y_support, y_query, perm):
    inv = torch.argsort(perm)
    return inv[y_support], inv[y_query]


def rl_inverse_scatter(y_support, y_query, perm):  # "new label n -> old class": the inverse map
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm), device=perm.device)
    return inv[y_support], inv[y_query]


def rl_support_only(y_support, y_query, perm):
    return perm[y_support], y_query


def rl_query_only(y_support, y_query, perm):
    return y_support, perm[y_query]


def rl_query_inverse(y_support, y_query, perm):
    return perm[y_support], perm.argsort()[y_query]


def rl_query_fresh(y_support, y_query, perm):
    return perm[y_support], torch.randperm(len(perm))[y_query]


def rl_both_fresh(y_support, y_query, perm):
    p = torch.randperm(len(perm))
    return p[y_support], p[y_query]


def rl_seeded(y_support, y_query, perm):  # perm ignored: its own (fixed) permutation
    p = torch.randperm(len(perm), generator=torch.Generator().manual_seed(0))
    return p[y_support], p[y_query]


def rl_query_shifted(y_support, y_query, perm):  # the query with another (deterministic) map
    return perm[y_support], perm[(y_query + 1) % len(perm)]


def rl_nothing(y_support, y_query, perm):
    return y_support.clone(), y_query.clone()


def rl_positions(y_support, y_query, perm):
    return y_support[perm], y_query[perm]


def rl_swapped(y_support, y_query, perm):
    return perm[y_query], perm[y_support]


def rl_float(y_support, y_query, perm):
    return perm.float()[y_support], perm.float()[y_query]


def rl_in_place(y_support, y_query, perm):
    y_support.copy_(perm[y_support])
    y_query.copy_(perm[y_query])
    return y_support, y_query


def rl_cpu_base(y_support, y_query, perm):
    return (torch.zeros(len(y_support), dtype=torch.long) + perm[y_support],
            torch.zeros(len(y_query), dtype=torch.long) + perm[y_query])


def rl_one(y_support, y_query, perm):
    return perm[y_support]


def rl_none(y_support, y_query, perm):
    perm[y_support]


def rl_first_wrong(y_support, y_query, perm):
    ys = perm[y_support]
    return torch.cat([(ys[:1] + 1) % len(perm), ys[1:]]), perm[y_query]


@pytest.mark.parametrize("fn", [ch08.reference_relabel, rl_index, rl_index_select, rl_loop, rl_one_hot])
def test_relabel_right_answers_pass(fn):
    assert ch08.relabel(fn) is fn
    assert status("8.4") == "right", message("8.4")


@pytest.mark.parametrize("fn, phrase", [
    (rl_inverse, "it applies the inverse permutation"),
    (rl_inverse_scatter, "the convention is perm[n] = the new label of class n"),
    (rl_support_only, "only the support labels are relabelled"),
    (rl_query_only, "only the query labels are relabelled"),
    (rl_query_inverse, "the query with its inverse"),
    (rl_query_fresh, "the query with a fresh permutation drawn inside your function"),
    (rl_both_fresh, "draws its own random permutation instead of using perm"),
    (rl_seeded, "perm is ignored or fixed"),
    (rl_query_shifted, "but the query with another map"),
    (rl_nothing, "nothing is relabelled"),
    (rl_positions, "applied to the positions (y[perm]"),
    (rl_swapped, "the pair is swapped"),
    (rl_float, "labels are torch.long"),
    (rl_in_place, "changed its input `y_support` in place"),
    (rl_cpu_base, "makes a tensor on the CPU"),
    (rl_one, "return a pair (y_support_new, y_query_new)"),
    (rl_none, "returned None"),
    (rl_first_wrong, "y_support_new (5-way 2-shot (10 supports in a shuffled order), 8 queries, perm = [2, 0, 4, 1, "
                     "3]) differs at item 0 (class 3): got 2, expected perm[3] = 1"),
])
def test_relabel_mistakes_are_named(fn, phrase):
    torch.manual_seed(8)  # the fresh-permutation mistakes draw from torch's global generator
    assert ch08.relabel(fn) is ch08.reference_relabel
    assert status("8.4") == "wrong"
    assert phrase in message("8.4"), message("8.4")


# --- the references agree with course_utils.black_box --------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_references_agree_with_black_box(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 7, (1,), generator=g))
    T, d = int(torch.randint(1, 12, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
    for dtype in (torch.float64, torch.float32):
        x = torch.randn(T, d, generator=g, dtype=dtype)
        y = torch.randint(0, n, (T,), generator=g)
        want = bb.build_sequence(x, y, n)[0]
        got = ch08.reference_label_shifted_inputs(x, y, n)
        assert got.dtype == want.dtype and torch.equal(got, want)
        xb, yb = torch.randn(3, T, d, generator=g, dtype=dtype), torch.randint(0, n, (3, T), generator=g)
        assert torch.equal(ch08.reference_label_shifted_inputs(xb, yb, n), bb.build_sequence(xb, yb, n)[0])
    for t in range(1, 9):
        assert torch.equal(ch08.reference_causal_mask(t), bb.causal_mask(t))
    for shape in ((T, n), (3, T, n)):
        logits = torch.randn(*shape, generator=g, dtype=torch.float64)
        targets = torch.randint(0, n, shape[:-1], generator=g)
        mask = torch.rand(shape[:-1], generator=g) < 0.5
        mask.view(-1)[0] = True
        assert torch.allclose(ch08.reference_query_loss(logits, targets, mask),
                              bb.sequence_loss(logits, targets, mask), atol=1e-14, rtol=0)
    k, q = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g))
    ys = torch.randint(0, n, (n * k,), generator=g)
    yq = torch.randint(0, n, (n * q,), generator=g)
    ep = Episode(torch.randn(n * k, 2, generator=g), ys, torch.randn(n * q, 2, generator=g), yq, n, k, q,
                 [f"c{i}" for i in range(n)])
    perm = torch.randperm(n, generator=g)
    new, s_order, q_order = bb._relabel(ep, perm)
    new_s, new_q = ch08.reference_relabel(ys, yq, perm)
    assert torch.equal(new.support_y, new_s[s_order]) and torch.equal(new.query_y, new_q[q_order])
    # permute_labels draws perm from its generator: the same draw gives the same labels
    drawn = bb.permute_labels(ep, torch.Generator().manual_seed(seed))
    perm2 = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    s2, q2 = ch08.reference_relabel(ys, yq, perm2)
    assert torch.equal(drawn.support_y, torch.sort(s2).values) and torch.equal(drawn.query_y, torch.sort(q2).values)


# --- the probes themselves ------------------------------------------------------------------------------

def _distinct(ref, variants):
    names, values = list(variants), list(variants.values())
    for name, v in zip(names, values):
        assert not (v.shape == ref.shape and torch.allclose(v.double(), ref.double(), atol=1e-9)), name
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            a, b = values[i], values[j]
            assert not (a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=1e-9)), (names[i], names[j])


def test_every_named_mistake_is_told_apart_by_the_probes():
    x, y, n, _ = ch08._shift_calls()[0]
    _distinct(ch08.reference_label_shifted_inputs(x.detach(), y, n), ch08._shift_variants(x, y, n))
    _distinct(ch08.reference_causal_mask(ch08.MASK_CALLS[0]), ch08._mask_variants(ch08.MASK_CALLS[0]))
    for i in (0, 1, 2, 3):
        L, t, m, _ = ch08._loss_calls()[i]
        _distinct(ch08.reference_query_loss(L.detach(), t, m), ch08._loss_variants(L, t, m))
    for ys, yq, perm, _ in ch08._relabel_calls():
        ref = torch.cat(ch08.reference_relabel(ys, yq, perm))
        _distinct(ref, {k: torch.cat(v) for k, v in ch08._relabel_variants(ys, yq, perm).items()})


def test_probe_permutations_are_not_their_own_inverse():
    for _, _, perm, _ in ch08._relabel_calls():
        assert not torch.equal(perm, torch.argsort(perm))


# --- protocol ----------------------------------------------------------------------------------------

CHECKS = [(ch08.label_shifted_inputs, "8.1", ch08.reference_label_shifted_inputs, shift_leak),
          (ch08.causal_mask, "8.2", ch08.reference_causal_mask, mask_inverted),
          (ch08.query_loss, "8.3", ch08.reference_query_loss, loss_all),
          (ch08.relabel, "8.4", ch08.reference_relabel, rl_inverse)]


@pytest.mark.parametrize("check, number, ref, wrong", CHECKS)
def test_stubs_are_not_attempted_and_strict_mode_raises(check, number, ref, wrong, monkeypatch):
    expect_stub_handling(check, number, ref, wrong, monkeypatch)


@pytest.mark.parametrize("check, number, ref, wrong", CHECKS)
@pytest.mark.parametrize("value", [None, 3, "label_shifted_inputs"])
def test_not_a_function(check, number, ref, wrong, value):
    assert check(value) is ref
    assert status(number) == "wrong" and "needs a function" in message(number)


def test_report_lists_every_exercise():
    ch08.label_shifted_inputs(ch08.reference_label_shifted_inputs)
    text = checks.report(ch08.EXERCISES)
    assert "Exercise 8.1" in text and "Exercise 8.4" in text and "1 of 4" in text
