"""The Meta-learner LSTM: an LSTM that *is* the learner's optimiser.

Ravi, S. & Larochelle, H. (2017). Optimization as a Model for Few-Shot Learning. ICLR 2017.
Gradient preprocessing from Andrychowicz, M. et al. (2016). Learning to learn by gradient
descent by gradient descent. NeurIPS 2016. arXiv:1606.04474.

The learner's parameters theta_t (all of them, flattened into one vector of P numbers) are
the cell state c_t of an LSTM. At inner step t, with the learner's support loss L_t and its
gradient grad_t = grad_{theta_{t-1}} L_t:

    c~_t = -grad_t                                            (candidate: a gradient step)
    f_t  = sigmoid(W_F [x_t, theta_{t-1}, f_{t-1}] + b_F)     (forget gate ~ decay / shrinkage)
    i_t  = sigmoid(W_I [x_t, theta_{t-1}, i_{t-1}] + b_I)     (input gate ~ learning rate)
    c_t  = f_t * c_{t-1} + i_t * c~_t                          i.e. theta_t = f_t * theta_{t-1} - i_t * grad_t

With f_t = 1 and i_t = alpha this is plain SGD. x_t is the output h_t of a first, standard
LSTM layer (``nn.LSTMCell``) that reads the preprocessed (grad_t, L_t). Both layers are
*coordinate-wise*: one tiny LSTM, its weights shared by all P coordinates, run as a batch of
P rows (so P can be millions while the meta-learner has a few thousand weights).

Preprocessing (Andrychowicz et al., Appendix A), for p = 10:

    x -> (log|x| / p, sign(x))   if |x| >= e^{-p}
    x -> (-1, e^p x)             otherwise

The initial cell state c_0 is the learner's learned initialisation (a meta-parameter, like
MAML's theta). After T inner steps on the support set, the learner's query loss at theta_T
is back-propagated into the LSTM's weights and into c_0.

Second derivatives are dropped, as in the paper (its Section 3.2): the learner's gradient
and loss enter the meta-learner *detached* (treated as inputs that do not depend on the
meta-learner). The meta-gradient still flows through f_t * c_{t-1}, through the gates
(which read theta_{t-1}) and through the query loss, but not through grad_t or L_t.

BatchNorm in the learner uses batch statistics (``nets.conv4_classifier(batch_stats_only=True)``)
at meta-training and meta-test time alike, so theta holds every parameter and there are no
buffers to carry. (Ravi & Larochelle discuss BatchNorm at meta-test time in their Section 3.3.)

``nn.LSTMCell`` is used on purpose, one call per inner step, not ``nn.LSTM`` on a sequence: the
input at step t is the learner's gradient at theta_{t-1}, which is the previous step's output, so
the inputs are not known in advance and the loop is unrolled by hand. (Variants that keep second
derivatives would also meet a GPU trap: double backward through cuDNN's fused RNN is not
supported. This module takes no second derivatives.)
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .maml import Params, check_model, resolve_loss

__all__ = ["preprocess", "cell_update", "State", "MetaLSTM", "meta_learner_step", "meta_objective", "GateTrace",
           "GATE_PARTS", "input_gate_table"]

LossFn = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------- the two formulas

def preprocess(x: Tensor, p: float = 10.0) -> Tensor:
    """Andrychowicz et al.'s coordinate-wise preprocessing: shape ``(...)`` -> ``(..., 2)``.

    ``(log|x| / p, sign(x))`` where ``|x| >= e^{-p}``, else ``(-1, e^p x)``. Finite everywhere
    (0 included): the log is only taken of values clamped to at least ``e^{-p}``.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"preprocess needs a floating-point tensor, got "
                         f"{type(x).__name__ if not isinstance(x, Tensor) else x.dtype}.")
    if not p > 0:
        raise ValueError(f"p must be positive (the paper uses 10), got {p!r}.")
    big = x.abs() >= math.exp(-p)
    log_part = torch.log(x.abs().clamp_min(math.exp(-p))) / p
    first = torch.where(big, log_part, torch.full_like(x, -1.0))
    second = torch.where(big, torch.sign(x), math.exp(p) * x)
    return torch.stack([first, second], dim=-1)


def cell_update(c_prev: Tensor, f: Tensor, i: Tensor, grad: Tensor) -> Tensor:
    """c_t = f_t * c_{t-1} + i_t * c~_t with c~_t = -grad_t (all shape ``(P,)``)."""
    return f * c_prev - i * grad


# ----------------------------------------------------------------------------- the meta-learner

class State(NamedTuple):
    """What the LSTM carries between inner steps besides theta (= c_t of the second layer).

    ``h, c``: the first layer's hidden and cell state, ``(P, hidden)``; ``f, i``: the previous
    forget and input gates, ``(P,)``.
    """

    h: Tensor
    c: Tensor
    f: Tensor
    i: Tensor


class GateTrace(NamedTuple):
    """Gates and losses of each inner step: ``f, i`` shape ``(T, P)``, ``loss`` shape ``(T,)``.

    ``i_parts`` ``(T, 4)``: the input gate's logit ``W_I [h_t, theta_{t-1}, i_{t-1}] + b_I`` split into
    its four parts (from h_t, from theta_{t-1}, from i_{t-1}, the bias b_I), each the mean over the P
    coordinates; a row sums to the mean of ``logit(i_t)``.
    """

    f: Tensor
    i: Tensor
    loss: Tensor
    i_parts: Tensor | None = None


#: the names of ``GateTrace.i_parts``' four columns
GATE_PARTS = ("h_t", "theta_{t-1}", "i_{t-1}", "b_I")


class MetaLSTM(nn.Module):
    """Ravi & Larochelle's meta-learner for one learner architecture.

    Args:
        learner: the network whose parameters the LSTM updates (e.g. ``nets.conv4_classifier(5,
            hidden=16, batch_stats_only=True)``). Only its *structure* is used: its current weights
            become c_0, the learned initialisation, and it is not registered as a sub-module.
        hidden: size of the first LSTM layer (the paper: 20).
        p: the preprocessing constant (the paper: 10).
        forget_bias, input_bias: ranges of the uniform initialisation of b_F and b_I. The defaults
            start with f ~ 1 (keep theta) and i ~ 0.01 (a small step), as the paper suggests.
        loss: the learner's loss, ``"cross_entropy"`` (default), ``"mse"`` or ``fn(pred, y)``.

    Meta-parameters (``self.parameters()``): the LSTMCell's weights, W_F, b_F, W_I, b_I and c_0.
    """

    def __init__(self, learner: nn.Module, hidden: int = 20, p: float = 10.0,
                 forget_bias: tuple[float, float] = (4.0, 6.0),
                 input_bias: tuple[float, float] = (-5.0, -4.0),
                 loss: str | LossFn = "cross_entropy"):
        super().__init__()
        check_model(learner)
        if any(True for _ in learner.buffers()):
            names = [n for n, _ in learner.named_buffers()]
            raise ValueError(f"the learner has buffers {names}; the Meta-learner LSTM keeps all of the "
                             "learner's state in theta. Use BatchNorm with batch statistics only "
                             "(track_running_stats=False).")
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer (the paper uses 20), got {hidden!r}.")
        if not isinstance(p, (int, float)) or not p > 0:
            raise ValueError(f"p must be a positive number (the paper uses 10), got {p!r}.")
        for name, rng in (("forget_bias", forget_bias), ("input_bias", input_bias)):
            if len(rng) != 2 or rng[0] > rng[1]:
                raise ValueError(f"{name} must be a range (low, high) with low <= high, got {rng!r}.")
        self.__dict__["learner"] = learner  # structure only; not a sub-module, its weights are not used
        self.names = [n for n, _ in learner.named_parameters()]
        self.shapes = [tuple(v.shape) for _, v in learner.named_parameters()]
        self.p, self.hidden, self.loss_fn = float(p), hidden, resolve_loss(loss)
        ref = next(learner.parameters())
        kw = dict(device=ref.device, dtype=ref.dtype)
        self.lstm = nn.LSTMCell(4, hidden, **kw)                     # layer 1: reads (grad, loss)
        self.W_F = nn.Linear(hidden + 2, 1, **kw)                     # layer 2: [h, theta, f_prev]
        self.W_I = nn.Linear(hidden + 2, 1, **kw)                     #          [h, theta, i_prev]
        with torch.no_grad():
            for lin, (lo, hi) in ((self.W_F, forget_bias), (self.W_I, input_bias)):
                lin.weight.uniform_(-0.01, 0.01)
                lin.bias.uniform_(lo, hi)
        self.c_0 = nn.Parameter(torch.cat([v.detach().reshape(-1) for v in learner.parameters()]).clone())
        # the inner step adapt() runs; a notebook may swap in its own (same signature as meta_learner_step)
        self.step_fn: Callable[..., tuple[Tensor, State, Tensor]] = meta_learner_step

    @property
    def n_params(self) -> int:
        """P: how many numbers the learner has (= coordinates the LSTM updates in parallel)."""
        return self.c_0.numel()

    def extra_repr(self) -> str:
        return f"learner: {type(self.learner).__name__} with P = {self.n_params} parameters, p = {self.p}"

    # --------------------------------------------------------------------- the learner, run from theta

    def unflatten(self, theta: Tensor) -> Params:
        """The flat vector theta ``(P,)`` as the learner's parameter dict (views, differentiable)."""
        self._check_theta(theta)
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            n = math.prod(shape)
            out[name] = theta[start:start + n].view(shape)
            start += n
        return out

    def learner_forward(self, theta: Tensor, x: Tensor) -> Tensor:
        """f_theta(x): the learner run with the flat parameters theta."""
        if not isinstance(x, Tensor):
            raise ValueError(f"x must be a tensor, got {type(x).__name__}.")
        if x.device != theta.device:
            raise ValueError(f"x is on {x.device} but theta is on {theta.device}; move it with .to(device).")
        return functional_call(self.learner, self.unflatten(theta), (x,))

    def learner_loss_and_grad(self, theta: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """L(theta) on ``(x, y)`` and grad_theta L, both *detached* (no second derivatives)."""
        leaf = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = self.loss_fn(self.learner_forward(leaf, x), y)
            (grad,) = torch.autograd.grad(loss, leaf)
        return loss.detach(), grad.detach()

    def by_layer(self, values: Tensor) -> dict[str, Tensor]:
        """``values`` of shape ``(..., P)`` (one number per coordinate) split by the learner's layers.

        Keys are readable layer names (``conv1, bn1, ..., linear``: the module's type and its rank
        among modules of that type), values the layer's coordinates, shape ``(..., n_layer)``, weights
        and biases together.
        """
        if not isinstance(values, Tensor) or values.shape[-1:] != (self.n_params,):
            raise ValueError(f"values must have a last dimension of P = {self.n_params}, got "
                             f"{tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__}.")
        short = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.BatchNorm1d: "bn", nn.Linear: "linear"}
        label, count = {}, {}
        for name, module in self.learner.named_modules():
            kind = short.get(type(module), type(module).__name__.lower())
            if any(True for _ in module.parameters(recurse=False)):
                count[kind] = count.get(kind, 0) + 1
                label[name] = f"{kind}{count[kind]}"
        if count.get("linear") == 1:
            label = {k: ("linear" if v == "linear1" else v) for k, v in label.items()}
        out: dict[str, list[Tensor]] = {}
        start = 0
        for n, shape in zip(self.names, self.shapes):
            k = math.prod(shape)
            out.setdefault(label[n.rsplit(".", 1)[0] if "." in n else ""], []).append(values[..., start:start + k])
            start += k
        return {k: torch.cat(v, dim=-1) for k, v in out.items()}

    # --------------------------------------------------------------------- the LSTM

    def initial_state(self) -> State:
        """Zeros for the first layer's state and the previous gates."""
        z = torch.zeros(self.n_params, self.hidden, device=self.c_0.device, dtype=self.c_0.dtype)
        g = torch.zeros(self.n_params, device=self.c_0.device, dtype=self.c_0.dtype)
        return State(z, z.clone(), g, g.clone())

    def inputs(self, grad: Tensor, loss: Tensor) -> Tensor:
        """The first layer's input per coordinate: ``(P, 4)`` = (preprocessed grad, preprocessed loss)."""
        g = preprocess(grad, self.p)
        l_ = preprocess(loss.reshape(1), self.p).expand(grad.numel(), 2)
        return torch.cat([g, l_], dim=1)

    def input_gate_parts(self, h: Tensor, theta_prev: Tensor, i_prev: Tensor) -> Tensor:
        """The input gate's logit split by input, each part's mean over the coordinates: ``(4,)`` =
        (from h_t, from theta_{t-1}, from i_{t-1}, b_I), detached. Their sum is the mean logit."""
        with torch.no_grad():
            w, k = self.W_I.weight[0], self.hidden
            return torch.stack([(h @ w[:k]).mean(), (theta_prev * w[k]).mean(),
                                (i_prev * w[k + 1]).mean(), self.W_I.bias[0]]).detach()

    def gates(self, h: Tensor, theta_prev: Tensor, f_prev: Tensor, i_prev: Tensor) -> tuple[Tensor, Tensor]:
        """f_t = sigma(W_F [h, theta_{t-1}, f_{t-1}] + b_F), i_t likewise with W_I; each ``(P,)``."""
        f = torch.sigmoid(self.W_F(torch.cat([h, theta_prev[:, None], f_prev[:, None]], 1))).squeeze(1)
        i = torch.sigmoid(self.W_I(torch.cat([h, theta_prev[:, None], i_prev[:, None]], 1))).squeeze(1)
        return f, i

    # --------------------------------------------------------------------- inner loop and meta-objective

    def adapt(self, x_s: Tensor, y_s: Tensor, steps: int, trace: bool = False
              ) -> Tensor | tuple[Tensor, GateTrace]:
        """theta_T after ``steps`` meta-learner steps from c_0 on one support set.

        Differentiable with respect to the meta-parameters when grad mode is on (under
        ``torch.no_grad`` each step still differentiates the learner, then detaches). With ``trace``
        also returns the gates and support losses of every step (detached) and the parts of the input
        gate's logit (:class:`GateTrace`).
        """
        _check_steps(steps)
        _check_task(x_s, y_s, "support", self.c_0)
        grad_on = torch.is_grad_enabled()
        frozen = [p for p in self.parameters() if p.requires_grad] if not grad_on else []
        for p in frozen:  # under no_grad: record no graph of the LSTM, only the learner's gradient
            p.requires_grad_(False)
        try:
            theta, state = self.c_0, self.initial_state()
            fs, is_, losses, parts = [], [], [], []
            for _ in range(steps):
                theta_prev, i_prev = theta, state.i
                with torch.enable_grad():  # the step differentiates the learner even under no_grad
                    theta, state, loss = self.step_fn(self, theta, state, x_s, y_s)
                if not grad_on:
                    theta, state = theta.detach(), State(*(s.detach() for s in state))
                if trace:
                    fs.append(state.f.detach())
                    is_.append(state.i.detach())
                    losses.append(loss.detach())
                    parts.append(self.input_gate_parts(state.h, theta_prev, i_prev))
        finally:
            for p in frozen:
                p.requires_grad_(True)
        if trace:
            return theta, GateTrace(torch.stack(fs), torch.stack(is_), torch.stack(losses), torch.stack(parts))
        return theta

    def task_loss(self, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor, steps: int) -> Tensor:
        """The meta-objective of one task: L_Q(f_{theta_T}), theta_T from ``steps`` steps on the support set."""
        _check_task(x_q, y_q, "query", self.c_0)
        theta = self.adapt(x_s, y_s, steps)
        return self.loss_fn(self.learner_forward(theta, x_q), y_q)

    def meta_step(self, optimizer: torch.optim.Optimizer, x_s: Tensor, y_s: Tensor, x_q: Tensor,
                  y_q: Tensor, steps: int, clip: float | None = 0.25) -> float:
        """One outer step on a meta-batch (leading dim B): mean query loss, backward, clip, step.

        ``clip`` is the paper's gradient-norm clipping (0.25); ``None`` turns it off.
        Returns the mean query loss before the step.
        """
        if not isinstance(x_s, Tensor) or x_s.dim() < 2 or x_q.dim() < 2:
            raise ValueError("meta_step needs a meta-batch with a leading task dimension B, e.g. "
                             "support_x (B, N*K, 1, 28, 28); for one task use .unsqueeze(0).")
        if not (x_s.shape[0] == y_s.shape[0] == x_q.shape[0] == y_q.shape[0]):
            raise ValueError(f"support and query must hold the same number of tasks; got "
                             f"{x_s.shape[0]}, {y_s.shape[0]}, {x_q.shape[0]}, {y_q.shape[0]}.")
        optimizer.zero_grad()
        b = x_s.shape[0]
        total = 0.0
        for k in range(b):  # one task's graph in memory at a time
            loss = self.task_loss(x_s[k], y_s[k], x_q[k], y_q[k], steps) / b
            loss.backward()
            total += loss.item()
        if clip is not None:
            nn.utils.clip_grad_norm_(self.parameters(), clip)
        optimizer.step()
        return total

    def classify(self, episode, steps: int) -> Tensor:
        """Query logits of one :class:`~course_utils.episodes.Episode` after ``steps`` steps (no graph)."""
        dev = self.c_0.device
        with torch.no_grad():
            theta = self.adapt(episode.support_x.to(dev), episode.support_y.to(dev), steps)
            return self.learner_forward(theta, episode.query_x.to(dev))

    # --------------------------------------------------------------------- checks

    def _check_theta(self, theta: Tensor) -> None:
        if not isinstance(theta, Tensor) or theta.shape != (self.n_params,):
            got = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
            raise ValueError(f"theta must be the learner's flat parameter vector of shape "
                             f"({self.n_params},), got {got}.")


def meta_learner_step(meta: MetaLSTM, theta: Tensor, state: State, x_s: Tensor, y_s: Tensor
                      ) -> tuple[Tensor, State, Tensor]:
    """One inner step of the Meta-learner LSTM (Exercise 4.3's reference).

    1. the learner's support loss L_t and gradient grad_t at theta_{t-1}, both detached;
    2. preprocess them and run the first LSTM layer (coordinate-wise, P rows);
    3. the gates f_t, i_t from [h_t, theta_{t-1}, previous gate];
    4. theta_t = f_t * theta_{t-1} - i_t * grad_t.

    Returns ``(theta_t, new State, L_t)``.
    """
    loss, grad = meta.learner_loss_and_grad(theta, x_s, y_s)
    h, c = meta.lstm(meta.inputs(grad, loss), (state.h, state.c))
    f, i = meta.gates(h, theta, state.f, state.i)
    return cell_update(theta, f, i, grad), State(h, c, f, i), loss


def meta_objective(meta: MetaLSTM, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor, steps: int) -> Tensor:
    """The meta-objective of a meta-batch (Exercise 4.4's reference): a scalar with its graph.

    The inputs have a leading task dimension B (``x_s (B, N*K, ...)``, ``y_s (B, N*K)``, ``x_q (B, N*Q,
    ...)``, ``y_q (B, N*Q)``). For every task i, from theta_0 = c_0 and a fresh ``meta.initial_state()``
    (both reset for every task), ``steps`` (T) inner steps of ``meta.step_fn`` on the task's support set
    give theta_T = theta'_i; the result is the mean over the B tasks of the query loss
    L_Q(f_{theta'_i}). One graph per task is kept until the caller's backward; ``MetaLSTM.meta_step``
    back-propagates task by task instead (same gradient, less memory).
    """
    _check_steps(steps)
    if not all(isinstance(t, Tensor) for t in (x_s, y_s, x_q, y_q)) or y_s.dim() != 2 or y_q.dim() != 2:
        raise ValueError("meta_objective needs a meta-batch with a leading task dimension B, e.g. "
                         "support_x (B, N*K, 1, 28, 28); for one task use .unsqueeze(0).")
    if not (x_s.shape[0] == y_s.shape[0] == x_q.shape[0] == y_q.shape[0]):
        raise ValueError(f"support and query must hold the same number of tasks; got "
                         f"{x_s.shape[0]}, {y_s.shape[0]}, {x_q.shape[0]}, {y_q.shape[0]}.")
    losses = []
    for k in range(x_s.shape[0]):
        theta, state = meta.c_0, meta.initial_state()
        for _ in range(steps):
            theta, state, _ = meta.step_fn(meta, theta, state, x_s[k], y_s[k])
        losses.append(meta.loss_fn(meta.learner_forward(theta, x_q[k]), y_q[k]))
    return torch.stack(losses).mean()


def input_gate_table(i_gates: Tensor, parts: Tensor) -> str:
    """A printable table of the input gate over the inner steps and its logit split by input.

    ``i_gates`` ``(episodes, T, P)``; ``parts`` ``(episodes, T, 4)`` (``GateTrace.i_parts`` stacked).
    Means over episodes (and coordinates); the last line names the part whose change from step 1 to
    step 2 is the largest, so that a text can point to it instead of guessing.
    """
    mean_parts = parts.double().mean(0)                                   # (T, 4)
    mean_i = i_gates.double().mean(dim=(0, 2))                            # (T,)
    head = "".join(f"{'from ' + n:>18s}" for n in GATE_PARTS[:3]) + f"{GATE_PARTS[3]:>8s}"
    lines = ["the input gate i_t and its logit W_I [h_t, theta_{t-1}, i_{t-1}] + b_I, split by input "
             "(means over coordinates and episodes):",
             f"{'step':>4s}{'mean i_t':>10s}{'logit':>8s}{head}"]
    for t in range(mean_parts.shape[0]):
        row = mean_parts[t]
        lines.append(f"{t + 1:4d}{mean_i[t].item():10.3f}{row.sum().item():+8.2f}"
                     + "".join(f"{v.item():+18.2f}" for v in row[:3]) + f"{row[3].item():+8.2f}")
    if mean_parts.shape[0] >= 2:
        d = mean_parts[1] - mean_parts[0]
        top = int(d.abs().argmax())
        line = (f"from step 1 to step 2 the mean logit changes by {d.sum().item():+.2f}; the part that changes "
                f"most is the one from {GATE_PARTS[top]} ({d[top].item():+.2f})")
        if top != 2:
            line += f", the part from i_{{t-1}} changes by {d[2].item():+.2f}"
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- input checks

def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps (inner updates by the meta-learner) must be an integer >= 1, got {steps!r}.")


def _check_task(x: Tensor, y: Tensor, which: str, ref: Tensor) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ValueError(f"the {which} set must be tensors (x, y).")
    if x.dim() < 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"the {which} set of one task needs x (N, ...) and y (N,) with the same N; got "
                         f"x {tuple(x.shape)}, y {tuple(y.shape)}. (A meta-batch goes to meta_step.)")
    if x.device != ref.device or y.device != ref.device:
        raise ValueError(f"the {which} set is on {x.device}/{y.device} but the meta-learner is on "
                         f"{ref.device}; move it with .to(device).")
    if x.is_floating_point() and x.dtype != ref.dtype:
        raise ValueError(f"the {which} inputs are {x.dtype} but the learner is {ref.dtype}; convert one.")
