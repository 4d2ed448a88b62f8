"""Reptile: first-order meta-learning by moving the initialisation towards adapted weights.

Nichol, A., Achiam, J. & Schulman, J. (2018). On First-Order Meta-Learning Algorithms.
arXiv:1803.02999.

The course's notation (the paper writes phi for the initialisation, W~ for the adapted weights
and k for the number of inner steps): with meta-parameters theta, a task tau and its inner loop
U_tau (T steps of SGD or Adam on minibatches of tau's data, starting from theta, step size alpha),
the adapted weights are theta'_tau = U_tau(theta) and

    serial:   theta <- theta + epsilon * (theta' - theta)                     (one task per update)
    batched:  theta <- theta + epsilon * 1/B * sum_i (theta'_i - theta)       (B tasks per update)

No second derivatives and no support/query split in meta-training: each task's data only
feeds its inner loop. ``theta - theta'`` can be read as a gradient ("pseudo-gradient"): with
T = 1 and plain SGD, theta - theta' = alpha * grad L_tau(theta), so Reptile is joint training on
the sum of the task losses; with T > 1 steps on *different minibatches* the Taylor expansion of
the paper's section 5 adds a term that increases the inner product between gradients of different
minibatches of the same task.

Inner Adam: the paper's code (openai/supervised-reptile) keeps one TensorFlow Adam (beta1 = 0)
for the whole run and, after each task, restores only the trainable weights, so Adam's second
moments and its step count carry over from task to task and across meta-iterations; at test time it
restores all variables after each test task, so every test task starts from the state meta-training
left. :class:`Reptile` does nearly the same (``carry_state=True``, the default): the tasks of a
meta-batch start from the carried state :class:`AdamState`, and the state kept is the mean of their
final moment estimates, with the step count advanced by T. For B = 1 this is the paper's serial
update; for B > 1 the paper's code runs a batch's tasks one after the other, so its state advances
B*T steps per meta-iteration, not T (``benchmarks/reptile_curves.py`` finds no difference at B = 5).
Why it matters: a fresh Adam with beta1 = 0 moves *every* weight by about alpha at every step,
whatever the size of its gradient (its first step is exactly alpha * sign(g)), so theta' - theta is
dominated by that sign noise. One visible symptom: the softmax gradient of a linear head has rows
that sum to zero, so gradient steps never move the mean of the head's rows; sign steps do, and that
drift does not depend on the labels, so it piles up over tasks and the head's norm grows steadily
(``carry_state=False``; a test checks both). Most of that growth is a row shared by all labels,
which softmax ignores, but on Omniglot the label-specific part grows too, and testing from a symmetric
head recovers part of the lost accuracy (``benchmarks/reptile_curves.py``).

Parameters are dicts ``{name: tensor}``, run with ``torch.func.functional_call`` through
:func:`course_utils.maml.forward`, so theta (the ``nn.Module``'s own weights) is never touched by
an inner loop. Argument names and orders follow the chapter's exercises: ``inner_loop(model,
theta, x, y, alpha, steps, loss_fn)``. Tasks of a meta-batch are adapted with ``vmap`` (small MLPs) or in a loop (conv
nets on the CPU), as :func:`course_utils.maml.choose_strategy` decides. BatchNorm: batch
statistics only (transductive, as in the paper's Omniglot runs); layers that keep running
statistics are rejected.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from .maml import (LossFn, Params, check_model, choose_strategy, forward, meta_parameters,
                   resolve_loss)

__all__ = ["OPTIMIZERS", "AdamState", "minibatch_schedule", "inner_loop", "pseudo_gradient", "reptile_update",
           "reptile_direction", "fomaml_direction", "task_directions", "linear_epsilon", "Reptile"]

OPTIMIZERS = ("sgd", "adam")


class AdamState(NamedTuple):
    """The inner Adam's state: first moments ``m``, second moments ``v`` (dicts like theta) and the
    number ``t`` of steps already taken (for the bias correction)."""
    m: Params
    v: Params
    t: int


# ----------------------------------------------------------------------------- the inner loop

def minibatch_schedule(n_points: int, steps: int, batch_size: int | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
    """Indices ``(steps, b)`` of the minibatch each inner step uses, sampled without replacement.

    Walks through random permutations of the ``n_points`` examples (a new one when the last is
    used up), like the paper's code. ``batch_size=None`` (or >= n_points): every step sees all
    points, in order.
    """
    _check_int("n_points", n_points, 1)
    _check_int("steps", steps, 0)
    if batch_size is not None:
        _check_int("batch_size", batch_size, 1)
    if batch_size is None or batch_size >= n_points:
        return torch.arange(n_points).repeat(steps, 1)
    need = steps * batch_size
    perms = [torch.randperm(n_points, generator=generator) for _ in range(-(-need // n_points))]
    return torch.cat(perms)[:need].reshape(steps, batch_size) if perms else \
        torch.zeros(0, batch_size, dtype=torch.long)


def _inner(model: nn.Module, theta: Params, x: Tensor, y: Tensor, idx: Tensor, alpha: float,
           loss_fn: LossFn, optimizer: str, betas: tuple[float, float], adam_eps: float,
           state: AdamState | None = None) -> tuple[Params, Tensor, AdamState | None]:
    """The inner loop proper (vmap-safe): theta', the minibatch loss at each step and, for Adam, the
    final state. Adam starts from ``state`` (None: zero moments, step count 0)."""
    w = dict(theta)
    if optimizer == "adam":
        state = state or AdamState({k: torch.zeros_like(v) for k, v in w.items()},
                                   {k: torch.zeros_like(v) for k, v in w.items()}, 0)
        m, v2, t0 = dict(state.m), dict(state.v), state.t
    losses = []
    for t in range(idx.shape[0]):
        xb, yb = x[idx[t]], y[idx[t]]
        g, loss = grad_and_value(lambda p: loss_fn(forward(model, p, xb), yb))(w)
        losses.append(loss)
        if optimizer == "sgd":
            w = {k: w[k] - alpha * g[k] for k in w}
        else:
            b1, b2 = betas
            m = {k: b1 * m[k] + (1 - b1) * g[k] for k in w}
            v2 = {k: b2 * v2[k] + (1 - b2) * g[k] ** 2 for k in w}
            c1, c2 = 1 - b1 ** (t0 + t + 1), 1 - b2 ** (t0 + t + 1)
            w = {k: w[k] - alpha * (m[k] / c1) / ((v2[k] / c2).sqrt() + adam_eps) for k in w}
    out = torch.stack(losses) if losses else x.new_zeros(0)
    new_state = AdamState(m, v2, t0 + idx.shape[0]) if optimizer == "adam" else None
    return w, out, new_state


def inner_loop(model: nn.Module, theta: Params, x: Tensor, y: Tensor, alpha: float, steps: int,
               loss_fn: str | LossFn = "mse", optimizer: str = "sgd", batch_size: int | None = None,
               generator: torch.Generator | None = None, betas: tuple[float, float] = (0.0, 0.999),
               adam_eps: float = 1e-8, return_losses: bool = False, state: AdamState | None = None
               ) -> Params | tuple[Params, Tensor]:
    """theta' = U(theta): ``steps`` (T) steps of SGD or Adam with step size ``alpha`` on one task's data
    ``x (n, ...)``, ``y (n, ...)`` (exercise 5.2's signature, plus options).

    Each step uses a minibatch of ``batch_size`` examples (all of them if None), see
    :func:`minibatch_schedule`. ``theta`` is never modified; the result carries no graph.
    With ``return_losses`` also returns the minibatch loss before each step, shape ``(steps,)``.
    Adam starts afresh unless ``state`` (an :class:`AdamState`, e.g. ``Reptile.adam_state``) is given.
    """
    check_model(model)
    _check_int("steps", steps, 0)
    _check_lr("alpha", alpha)
    _check_optimizer(optimizer, betas)
    _check_task(theta, x, y)
    idx = minibatch_schedule(x.shape[0], steps, batch_size, generator).to(x.device)
    with torch.no_grad():  # torch.func.grad still differentiates inside; nothing else is tracked
        w, losses, _ = _inner(model, {k: v.detach() for k, v in theta.items()}, x, y, idx, alpha,
                              resolve_loss(loss_fn), optimizer, betas, adam_eps, state)
    w = {k: v.detach() for k, v in w.items()}
    return (w, losses.detach()) if return_losses else w


# ----------------------------------------------------------------------------- the outer update

def _stack_adapted(theta: Params, adapted: Params | Sequence[Params]) -> Params:
    """theta' as tensors with a leading task dimension: ``{name: (B, *shape)}``."""
    if isinstance(adapted, dict):
        out = {}
        for k, p in theta.items():
            if k not in adapted:
                raise ValueError(f"adapted weights lack {k!r}; they must have theta's names {list(theta)}.")
            a = adapted[k]
            if a.shape == p.shape:
                out[k] = a.unsqueeze(0)
            elif a.dim() == p.dim() + 1 and a.shape[1:] == p.shape:
                out[k] = a
            else:
                raise ValueError(f"adapted[{k!r}] has shape {tuple(a.shape)}; expected theta's "
                                 f"{tuple(p.shape)} (one task) or (B, *{tuple(p.shape)}) (B tasks).")
        if len({v.shape[0] for v in out.values()}) != 1:
            raise ValueError("adapted weights hold different numbers of tasks for different names.")
        return out
    if not isinstance(adapted, Sequence) or len(adapted) == 0:
        raise ValueError("adapted must be a dict of weights (one task, or stacked tasks) or a "
                         "non-empty list of such dicts, one per task.")
    for i, a in enumerate(adapted):
        if not isinstance(a, dict) or set(a) != set(theta):
            raise ValueError(f"adapted[{i}] must be a dict with theta's names {list(theta)}.")
        for k in theta:
            if a[k].shape != theta[k].shape:
                raise ValueError(f"adapted[{i}][{k!r}] has shape {tuple(a[k].shape)}, theta's is "
                                 f"{tuple(theta[k].shape)}.")
    return {k: torch.stack([a[k] for a in adapted]) for k in theta}


def pseudo_gradient(theta: Params, adapted: Params | Sequence[Params]) -> Params:
    """g = 1/B sum_i (theta - theta'_i): the Reptile update is theta - epsilon * g.

    ``adapted``: one task's theta' (a dict like theta), stacked tasks ``{name: (B, *shape)}``, or a
    list of dicts. Hand g to any optimiser as ``.grad`` (the paper's Adam variant).
    """
    stacked = _stack_adapted(theta, adapted)
    return {k: (theta[k].detach() - stacked[k].to(theta[k].dtype)).mean(0) for k in theta}


def reptile_update(theta: Params, adapted: Params | Sequence[Params], epsilon: float) -> Params:
    """theta + epsilon * 1/B sum_i (theta'_i - theta), as a new dict (serial: B = 1); ``theta`` is not
    modified (exercise 5.1's signature)."""
    _check_epsilon(epsilon)
    g = pseudo_gradient(theta, adapted)
    return {k: theta[k].detach() - epsilon * g[k] for k in theta}


def reptile_direction(theta: Params, adapted: Params, alpha: float) -> Params:
    """(theta - theta') / alpha: for SGD this is the sum of the T inner gradients, g_1 + ... + g_T."""
    _check_lr("alpha", alpha)
    return {k: v / alpha for k, v in pseudo_gradient(theta, adapted).items()}


def fomaml_direction(model: nn.Module, theta: Params, x_s: Tensor, y_s: Tensor, x_q: Tensor,
                     y_q: Tensor, alpha: float, steps: int, loss_fn: str | LossFn = "mse",
                     optimizer: str = "sgd") -> Params:
    """First-order MAML's direction: grad L_Q at theta' = U(theta) adapted on the support set
    (exercise 5.3's signature, plus the inner optimiser)."""
    w = inner_loop(model, theta, x_s, y_s, alpha, steps, loss_fn, optimizer)
    _check_task(theta, x_q, y_q, "x_q", "y_q")
    loss = resolve_loss(loss_fn)
    with torch.no_grad():
        g, _ = grad_and_value(lambda p: loss(forward(model, p, x_q), y_q))(w)
    return {k: v.detach() for k, v in g.items()}


def task_directions(model: nn.Module, theta: Params, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor,
                    alpha: float, steps: int, loss_fn: str | LossFn = "mse", batch_size: int | None = None,
                    generator: torch.Generator | None = None, strategy: str = "auto"
                    ) -> tuple[Params, Params]:
    """Reptile's and first-order MAML's directions for a meta-batch, from the *same* inner loops.

    Each task i runs ``steps`` SGD steps on its support set (``x_s (B, n, ...)``), giving theta'_i;
    then Reptile's direction is (theta - theta'_i) / alpha and FOMAML's is grad L_{Q_i}(theta'_i).
    Returns both, each averaged over the tasks ``{name: tensor}``: feed either to an optimiser as
    ``.grad``.
    """
    check_model(model)
    _check_int("steps", steps, 1)
    _check_lr("alpha", alpha)
    _check_meta_batch(theta, x_s, y_s)
    _check_meta_batch(theta, x_q, y_q)
    if x_s.shape[0] != x_q.shape[0]:
        raise ValueError(f"support and query hold different numbers of tasks: {x_s.shape[0]} vs {x_q.shape[0]}.")
    loss, theta = resolve_loss(loss_fn), {k: v.detach() for k, v in theta.items()}
    idx = torch.stack([minibatch_schedule(x_s.shape[1], steps, batch_size, generator)
                       for _ in range(x_s.shape[0])]).to(x_s.device)

    def one(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor, ii: Tensor) -> tuple[Params, Params]:
        w, _, _ = _inner(model, theta, xs, ys, ii, alpha, loss, "sgd", (0.0, 0.999), 1e-8)
        g, _ = grad_and_value(lambda p: loss(forward(model, p, xq), yq))(w)
        return {k: (theta[k] - w[k]) / alpha for k in theta}, g

    strategy = choose_strategy(model, x_s.device) if strategy == "auto" else strategy
    with torch.no_grad():
        if strategy == "vmap":
            rep, fo = vmap(one)(x_s, y_s, x_q, y_q, idx)
        else:
            outs = [one(x_s[i], y_s[i], x_q[i], y_q[i], idx[i]) for i in range(x_s.shape[0])]
            rep = {k: torch.stack([o[0][k] for o in outs]) for k in theta}
            fo = {k: torch.stack([o[1][k] for o in outs]) for k in theta}
    return {k: v.mean(0) for k, v in rep.items()}, {k: v.mean(0) for k, v in fo.items()}


def linear_epsilon(i: int, n: int, start: float, final: float = 0.0) -> float:
    """The paper's schedule: epsilon decays linearly from ``start`` (i = 0) to ``final`` (i = n)."""
    frac = min(max(i / max(n, 1), 0.0), 1.0)
    return start + (final - start) * frac


# ----------------------------------------------------------------------------- the algorithm

class Reptile:
    """Reptile on one model: batched meta-updates, test-time adaptation and prediction.

    Args:
        model: the network; its parameters are theta (updated in place by :meth:`meta_step`).
        inner_lr: alpha, the inner optimiser's step size.
        inner_steps: T, inner steps per task in meta-training.
        epsilon: the outer step size (a float; see :func:`linear_epsilon` for the schedule).
        optimizer: ``"sgd"`` or ``"adam"`` (inner loop; Adam with betas (0, 0.999) as the paper).
        inner_batch_size: examples per inner step (None: all of the task's data).
        test_steps, test_batch_size: the same at test time (default: training's values).
        loss: ``"mse"``, ``"cross_entropy"`` or ``(pred, y) -> scalar``.
        strategy: ``"auto"``, ``"vmap"`` or ``"loop"``: how a meta-batch's tasks are adapted.
        seed: seeds the minibatch order (meta-training and, from a separate generator, test time).
        carry_state: Adam only: carry its state from task to task as the paper's code does (True),
            or start it afresh for every task (False; the head then drifts, see the module docstring).
        symmetric_head: classification: at test time, start adaptation from theta with every row of the
            head (the last ``nn.Linear``, weight and bias) replaced by the rows' mean, so that it favours
            no label; labels are assigned at random in every task. Not the paper's method.
    """

    def __init__(self, model: nn.Module, inner_lr: float, inner_steps: int, epsilon: float = 0.1,
                 optimizer: str = "sgd", inner_batch_size: int | None = None,
                 test_steps: int | None = None, test_batch_size: int | None = None,
                 loss: str | LossFn = "mse", strategy: str = "auto", seed: int = 0,
                 carry_state: bool = True, symmetric_head: bool = False):
        check_model(model)
        _check_lr("inner_lr", inner_lr)
        _check_int("inner_steps", inner_steps, 1)
        _check_epsilon(epsilon)
        _check_optimizer(optimizer, (0.0, 0.999))
        for name, v in (("inner_batch_size", inner_batch_size), ("test_batch_size", test_batch_size)):
            if v is not None:
                _check_int(name, v, 1)
        if test_steps is not None:
            _check_int("test_steps", test_steps, 0)
        if strategy not in ("auto", "vmap", "loop"):
            raise ValueError(f"strategy must be 'auto', 'vmap' or 'loop', got {strategy!r}.")
        self.model, self.inner_lr, self.inner_steps, self.epsilon = model, float(inner_lr), inner_steps, epsilon
        self.optimizer, self.inner_batch_size = optimizer, inner_batch_size
        self.test_steps = inner_steps if test_steps is None else test_steps
        self.test_batch_size = inner_batch_size if test_batch_size is None else test_batch_size
        self.loss_fn, self.strategy, self.carry_state = resolve_loss(loss), strategy, bool(carry_state)
        self.generator = torch.Generator().manual_seed(seed)
        # test-time minibatches come from their own generator: evaluating never changes the training
        self.test_generator = torch.Generator().manual_seed(seed + 1_000_003)
        self.adam_state: AdamState | None = None   # the carried inner Adam state (None: not started)
        self.symmetric_head = bool(symmetric_head)
        heads = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        self._head = heads[-1] if heads else None
        if self.symmetric_head and self._head is None:
            raise ValueError("symmetric_head needs a classifier whose last layer is an nn.Linear.")

    @property
    def theta(self) -> Params:
        return {k: v.detach() for k, v in meta_parameters(self.model).items()}

    def _start_state(self) -> AdamState | None:
        return self.adam_state if self.optimizer == "adam" and self.carry_state else None

    def adapt_batch(self, x: Tensor, y: Tensor) -> tuple[Params, Tensor]:
        """theta'_i for a meta-batch ``x (B, n, ...)``, ``y (B, n, ...)``: stacked ``{name: (B, ...)}``,
        and each task's inner-step losses ``(B, T)``. With a carried Adam state, every task starts
        from it and the state kept afterwards is the tasks' mean (step count + T)."""
        theta = self.theta
        _check_meta_batch(theta, x, y)
        b, n = x.shape[0], x.shape[1]
        idx = torch.stack([minibatch_schedule(n, self.inner_steps, self.inner_batch_size, self.generator)
                           for _ in range(b)]).to(x.device)
        args = (self.inner_lr, self.loss_fn, self.optimizer, (0.0, 0.999), 1e-8, self._start_state())
        strategy = choose_strategy(self.model, x.device) if self.strategy == "auto" else self.strategy
        def one(xi: Tensor, yi: Tensor, ii: Tensor) -> tuple[Params, Tensor, Params, Params]:
            wi, li, si = _inner(self.model, theta, xi, yi, ii, *args)
            return wi, li, ({} if si is None else si.m), ({} if si is None else si.v)  # vmap: tensors only

        with torch.no_grad():
            if strategy == "vmap":
                w, losses, m, v = vmap(one)(x, y, idx)
            else:
                outs = [one(x[i], y[i], idx[i]) for i in range(b)]
                w, m, v = ({k: torch.stack([o[j][k] for o in outs]) for k in outs[0][j]} for j in (0, 2, 3))
                losses = torch.stack([o[1] for o in outs])
        if self.optimizer == "adam" and self.carry_state:
            t = (self.adam_state.t if self.adam_state else 0) + self.inner_steps
            self.adam_state = AdamState({k: mk.mean(0) for k, mk in m.items()},
                                        {k: vk.mean(0) for k, vk in v.items()}, t)
        return w, losses

    def meta_step(self, x: Tensor, y: Tensor, epsilon: float | None = None) -> dict[str, float]:
        """One batched Reptile update of the model's weights on ``B`` tasks (``B = 1``: serial).

        Returns the mean minibatch loss at the first and at the last inner step.
        """
        w, losses = self.adapt_batch(x, y)
        new = reptile_update(self.theta, w, self.epsilon if epsilon is None else epsilon)
        with torch.no_grad():
            for k, p in self.model.named_parameters():
                p.copy_(new[k])
        return {"loss": losses[:, 0].mean().item(), "loss_last": losses[:, -1].mean().item()}

    def adapt(self, x: Tensor, y: Tensor, steps: int | None = None) -> Params:
        """Test-time adaptation of one task from theta (``test_steps`` steps by default), starting
        the inner Adam from the state meta-training left (which it does not change)."""
        steps = self.test_steps if steps is None else steps
        return inner_loop(self.model, self.start(), x, y, self.inner_lr, steps, self.loss_fn, self.optimizer,
                          self.test_batch_size, self.test_generator, state=self._start_state())

    def start(self) -> Params:
        """Where test-time adaptation starts: theta, with a symmetric head if ``symmetric_head``."""
        theta = self.theta
        if self.symmetric_head:
            for k in (f"{self._head}.weight", f"{self._head}.bias"):
                if k in theta:
                    theta[k] = theta[k].mean(0, keepdim=True).expand_as(theta[k]).clone()
        return theta

    def predict(self, x: Tensor, params: Params | None = None) -> Tensor:
        """f(x) with theta (or adapted ``params``), no gradients. With batch-statistics BatchNorm the
        whole ``x`` is normalised together (transductive)."""
        with torch.no_grad():
            return forward(self.model, params or self.theta, x)

    def classify(self, episode) -> Tensor:
        """Query logits of one :class:`~course_utils.episodes.Episode` (for ``evaluation.evaluate``)."""
        dev = next(self.model.parameters()).device
        w = self.adapt(episode.support_x.to(dev), episode.support_y.to(dev))
        return self.predict(episode.query_x.to(dev), w)


# ----------------------------------------------------------------------------- input checks

def _check_int(name: str, v: int, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")


def _check_lr(name: str, lr: float) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"{name} (a learning rate) must be a positive number, got {lr!r}.")


def _check_epsilon(epsilon: float) -> None:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon (the outer step size) must be a number in [0, 1], got {epsilon!r}: "
                         "theta moves the fraction epsilon of the way towards the adapted weights.")


def _check_optimizer(optimizer: str, betas: tuple[float, float]) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}.")
    if optimizer == "adam" and not all(0 <= b < 1 for b in betas):
        raise ValueError(f"Adam's betas must lie in [0, 1), got {betas!r}.")


def _check_task(theta: Params, x: Tensor, y: Tensor, xn: str = "x", yn: str = "y") -> None:
    if not isinstance(theta, dict) or not theta:
        raise ValueError("theta must be a non-empty dict {name: tensor}, e.g. dict(model.named_parameters()).")
    for n, t in ((xn, x), (yn, y)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{n} must be a tensor, got {type(t).__name__}.")
    if x.dim() < 1 or y.dim() < 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"{xn} {tuple(x.shape)} and {yn} {tuple(y.shape)} must hold the same, non-zero "
                         "number of examples along dim 0 (one task; a meta-batch goes to Reptile.meta_step).")
    p = next(iter(theta.values()))
    for n, t in ((xn, x), (yn, y)):
        if t.device != p.device:
            raise ValueError(f"{n} is on {t.device} but theta is on {p.device}; move it with .to(device).")
    if x.is_floating_point() and x.dtype != p.dtype:
        raise ValueError(f"{xn} is {x.dtype} but theta is {p.dtype}; convert one (e.g. x.to({p.dtype})).")


def _check_meta_batch(theta: Params, x: Tensor, y: Tensor) -> None:
    for n, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor) or t.dim() < 2:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{n} must be a meta-batch tensor (B, n, ...), got {shape}; for one task "
                             "add the task dimension with .unsqueeze(0).")
    if x.shape[:2] != y.shape[:2]:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must agree on (B, n).")
    _check_task(theta, x[0], y[0])
