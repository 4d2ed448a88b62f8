"""Model-Agnostic Meta-Learning (MAML), written functionally with ``torch.func``.

Finn, C., Abbeel, P. & Levine, S. (2017). Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks. ICML 2017. arXiv:1703.03400.

A task i has a support set S_i and a query set Q_i. With meta-parameters theta, inner
learning rate alpha and a loss L (MSE for regression, cross-entropy for classification):

    theta'_i = theta - alpha * grad_theta L_{S_i}(f_theta)          inner step (``steps`` times)
    L_meta(theta) = 1/B * sum_i L_{Q_i}(f_{theta'_i})                outer (meta) objective

and for one inner step the meta-gradient of a task is

    grad_theta L_Q(f_theta') = (I - alpha * H_S(theta)) grad_theta' L_Q(f_theta'),

with H_S the Hessian of the support loss. *Second order* keeps that Hessian term (it
differentiates through the inner update, ``create_graph``); *first order* (FOMAML)
treats the inner gradient as a constant and keeps only grad_theta' L_Q(f_theta').
The paper's Algorithm 2 sums over tasks; its code (github.com/cbfinn/maml) and we average, which
only rescales the meta learning rate.

Names follow chapter 03's exercises: the inner-loop functions (:func:`inner_step`, :func:`adapt`,
:func:`task_loss`) take ``loss_fn`` and ``create_graph`` (``True``: differentiate through the inner
gradient, second order; ``False``: treat it as a constant, first order), in the exercises' order. The
algorithm-level ones (:func:`meta_gradient`, :class:`MAML`) take ``first_order`` (FOMAML, the name of
the variant) and ``loss``.

Loss scale: ``loss_fn`` is a *mean* over the examples (``F.mse_loss``, ``F.cross_entropy``), so alpha
is a step on the mean loss. Finn et al.'s classification code differentiates the per-example
cross-entropy summed over the N*K support examples and divided by K, i.e. N times the mean: their
alpha = 0.4 for 5-way Omniglot is a step of 0.4 * 5 = 2.0 on the mean loss. (Their sinusoid MSE is a
mean, so alpha = 0.01 there means the same as here.)

First order on few-shot classification (``benchmarks/first_order_curves.py``, Omniglot 5-way 1-shot,
equal meta-iterations): with one inner step and a head that keeps label-specific rows, FOMAML trails
second order far behind. Labels are permuted in every task, so the head's rows are noise to the next
task, and FOMAML's meta-gradient (the query gradient at theta') carries that noise. Keeping the head at
zero (``zero_head=True``, Kao et al. 2022) and taking several inner steps (from a zero head, the first
step adapts the head alone) brings it close to second order.

Parameters are plain dicts ``{name: tensor}`` and the network runs with
``torch.func.functional_call``, so an adapted copy of the weights never touches the
``nn.Module``: the meta-optimiser steps the module's own parameters, theta.

BatchNorm: as in the paper, batch statistics only (transductive: every forward pass
normalises with the statistics of the batch in hand, support or query). Build
networks with ``nets.conv4_classifier(batch_stats_only=True)``; a BatchNorm layer that
keeps running statistics is rejected, so running statistics are never on the
meta-parameters' path. BatchNorm's scale and shift are meta-parameters like any other
and are adapted in the inner loop.

Two ways to run a meta-batch of B tasks, same numbers (tests check it):

- ``"vmap"``: ``vmap(grad(task_loss))`` over tasks, then the mean. One call for all tasks;
  much faster for small nets (the sinusoid MLP).
- ``"loop"``: one task at a time, ``torch.autograd`` with ``create_graph``; one task's graph
  in memory at a time. Faster for conv nets on the CPU, where ``vmap`` turns each
  per-task convolution into a slow grouped convolution. There it feeds images channels-last
  (``torch.channels_last``; same function, float32 rounding differs), which makes max-pool and
  BatchNorm vectorise over channels: 1.3-1.6x per meta-step for Conv-4.

``strategy="auto"`` picks ``"loop"`` for nets with convolutions on the CPU and ``"vmap"``
otherwise. On a Linux CPU, MAML runs about a third faster when glibc's malloc keeps freed memory
(:func:`course_utils.devices.keep_freed_cpu_memory`, a process setting applied by
``pick_device()``; this module does not change it).

Never differentiate *through* a vmapped inner loop (``grad(vmap(grad(...)))``): with affine
BatchNorm, torch 2.13 returns silently wrong second-order gradients;
``vmap(grad(...))`` (a gradient per task, then the mean) is right.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from .devices import keep_freed_cpu_memory  # noqa: F401  (re-exported: moved to devices, see there)

__all__ = ["Params", "LOSSES", "STRATEGIES", "meta_parameters", "check_model", "resolve_loss",
           "forward", "inner_step", "adapt", "task_loss", "meta_gradient", "choose_strategy",
           "MAML", "zero_head", "classifier_head", "adaptation_curve", "saved_tensor_bytes", "keep_freed_cpu_memory"]

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
STRATEGIES = ("auto", "vmap", "loop")


def _mse(pred: Tensor, y: Tensor) -> Tensor:
    if pred.shape != y.shape:
        raise ValueError(f"Regression targets have shape {tuple(y.shape)} but the net predicts "
                         f"{tuple(pred.shape)}; give targets the prediction's shape (e.g. (K, 1)), "
                         "or MSE will silently broadcast.")
    return F.mse_loss(pred, y)


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    if logits.dim() != 2 or y.shape != logits.shape[:1]:
        raise ValueError(f"Classification needs logits (N, n_way) and labels (N,); got logits "
                         f"{tuple(logits.shape)} and labels {tuple(y.shape)}.")
    return F.cross_entropy(logits, y)


LOSSES: dict[str, LossFn] = {"mse": _mse, "cross_entropy": _cross_entropy}


def resolve_loss(loss: str | LossFn) -> LossFn:
    """``"mse"`` (regression), ``"cross_entropy"`` (classification), or your own ``loss(pred, y)``."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)} or a function (pred, y) -> scalar, "
                         f"got {loss!r}.")
    return LOSSES[loss]


def meta_parameters(model: nn.Module) -> Params:
    """theta: the model's own parameters by name (what the meta-optimiser steps)."""
    return dict(model.named_parameters())


def check_model(model: nn.Module) -> None:
    """Raise ``ValueError`` unless MAML can run ``model`` functionally (see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not any(True for _ in model.parameters()):
        raise ValueError("model has no parameters: there is nothing to meta-learn.")
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            raise ValueError(
                f"Normalisation layer {name!r} ({type(m).__name__}) keeps running statistics. MAML uses "
                "batch statistics only (as Finn et al.): build it with track_running_stats=False, e.g. "
                "nets.conv4_classifier(n_way, batch_stats_only=True).")


def forward(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """f_theta(x): the model run with the weights in ``params`` (buffers stay the model's)."""
    return functional_call(model, params, (x,))


def _support_grads(model: nn.Module, params: Params, x_s: Tensor, y_s: Tensor, loss_fn: LossFn,
                   first_order: bool, use_autograd: bool) -> Params:
    """grad_theta L_S(f_theta); a constant (no graph back to theta) when ``first_order``."""
    if use_autograd:  # plain autograd: params must require grad (the "loop" strategy)
        loss = loss_fn(forward(model, params, x_s), y_s)
        gs = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order,
                                 allow_unused=True)
        return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(params.items(), gs)}
    g, _ = grad_and_value(lambda p: loss_fn(forward(model, p, x_s), y_s))(params)
    return {k: v.detach() for k, v in g.items()} if first_order else g


def inner_step(model: nn.Module, params: Params, x_s: Tensor, y_s: Tensor, alpha: float,
               loss_fn: str | LossFn = "mse", create_graph: bool = True,
               use_autograd: bool = False) -> Params:
    """One inner step: theta' = theta - alpha * grad_theta L_S(f_theta) (exercise 3.1's signature).

    ``create_graph=True`` keeps the gradient differentiable, so theta' is a second-order function of
    ``params`` (MAML); ``create_graph=False`` treats it as a constant (first order). With
    ``use_autograd`` the gradient comes from ``torch.autograd.grad`` (params must require grad),
    otherwise from ``torch.func.grad`` (works inside ``vmap`` and on tensors that do not require grad).
    """
    g = _support_grads(model, params, x_s, y_s, resolve_loss(loss_fn), not create_graph, use_autograd)
    return {k: params[k] - alpha * g[k] for k in params}


def adapt(model: nn.Module, params: Params, x_s: Tensor, y_s: Tensor, alpha: float, steps: int,
          loss_fn: str | LossFn = "mse", create_graph: bool = True, use_autograd: bool = False, *,
          first_order: bool | None = None) -> Params:
    """``steps`` inner steps from ``params`` on the support set (``steps=0`` returns ``params``).

    ``first_order=True`` is an older spelling of ``create_graph=False``, kept for existing callers.
    """
    _check_steps(steps, allow_zero=True)
    if first_order is not None:
        create_graph = not first_order
    for _ in range(steps):
        params = inner_step(model, params, x_s, y_s, alpha, loss_fn, create_graph, use_autograd)
    return params


def task_loss(model: nn.Module, params: Params, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor,
              alpha: float, steps: int, loss_fn: str | LossFn = "mse", create_graph: bool = True,
              use_autograd: bool = False) -> Tensor:
    """One task's meta-objective: L_Q(f_theta') with theta' adapted on the support set.

    Its gradient with respect to ``params`` is MAML's meta-gradient with ``create_graph=True`` and
    first-order MAML's with ``create_graph=False``.
    """
    loss_fn = resolve_loss(loss_fn)
    adapted = adapt(model, params, x_s, y_s, alpha, steps, loss_fn, create_graph, use_autograd)
    return loss_fn(forward(model, adapted, x_q), y_q)


def choose_strategy(model: nn.Module, device: torch.device | str | None = None) -> str:
    """The faster way to batch tasks, as measured (benchmarks/maml_speed.py): ``"loop"`` for conv
    nets on the CPU, ``"vmap"`` otherwise."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return "loop" if has_conv and device.type == "cpu" else "vmap"


_CPU_CHANNELS_LAST = True  # the "loop" strategy's channels-last images on the CPU (False: NCHW)


def _has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _channels_last(x: Tensor) -> Tensor:
    """A copy of image batch ``x`` (N, C, H, W) with channels-last strides. Also for C = 1, where
    ``x.contiguous(memory_format=torch.channels_last)`` returns ``x`` itself, whose strides read
    as NCHW, so the first conv, and everything after it, would stay NCHW."""
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


def meta_gradient(model: nn.Module, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor,
                  alpha: float, steps: int = 1, loss: str | LossFn = "mse", first_order: bool = False,
                  strategy: str = "auto", params: Params | None = None) -> tuple[Tensor, Params]:
    """The mean query loss over a meta-batch and its gradient with respect to theta.

    Shapes: ``x_s (B, N_s, ...)``, ``y_s (B, N_s, ...)``, ``x_q (B, N_q, ...)``, ``y_q (B, N_q, ...)``.
    ``params`` defaults to the model's parameters. Returns ``(loss, {name: gradient})``; the
    gradients carry no graph. ``model`` is never modified.
    """
    check_model(model)
    _check_steps(steps, allow_zero=False)
    _check_alpha(alpha)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
    theta = {k: v.detach() for k, v in (params or meta_parameters(model)).items()}
    _check_batch(theta, x_s, y_s, x_q, y_q)
    loss_fn = resolve_loss(loss)
    if strategy == "auto":
        strategy = choose_strategy(model, next(iter(theta.values())).device)
    if strategy == "vmap":
        def one(p, xs, ys, xq, yq):
            return task_loss(model, p, xs, ys, xq, yq, alpha, steps, loss_fn, not first_order)
        g, losses = vmap(grad_and_value(one), in_dims=(None, 0, 0, 0, 0))(theta, x_s, y_s, x_q, y_q)
        return losses.mean().detach(), {k: v.mean(0) for k, v in g.items()}
    b = x_s.shape[0]
    # Conv nets on the CPU: channels-last images (1.3-1.6x per meta-step, benchmarks/maml_speed.py):
    # max-pool, BatchNorm and ReLU vectorise over channels. Support sets too, except for second order
    # over several steps, whose repeated double backward runs slower channels-last.
    cl_q = _CPU_CHANNELS_LAST and x_q.dim() == 5 and x_q.device.type == "cpu" and _has_conv2d(model)
    cl_s = cl_q and (first_order or steps == 1)
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    total = {k: torch.zeros_like(v) for k, v in theta.items()}
    loss_sum = torch.zeros((), dtype=x_q.dtype if x_q.is_floating_point() else torch.float32,
                           device=x_q.device)
    for i in range(b):
        xs = _channels_last(x_s[i]) if cl_s else x_s[i]
        xq = _channels_last(x_q[i]) if cl_q else x_q[i]
        li = task_loss(model, leaves, xs, y_s[i], xq, y_q[i], alpha, steps, loss_fn,
                       create_graph=not first_order, use_autograd=True)
        gs = torch.autograd.grad(li, list(leaves.values()), allow_unused=True)
        for k, gk in zip(leaves, gs):
            if gk is not None:
                total[k] += gk
        loss_sum += li.detach()
    return loss_sum / b, {k: v / b for k, v in total.items()}


def classifier_head(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of ``model``: the layer whose rows belong to the N labels."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise ValueError("zero_head needs a classifier whose last layer is an nn.Linear; this model has none.")
    return heads[-1]


def zero_head(model: nn.Module) -> None:
    """Kao et al. (2022)'s *zeroing trick*: set the classifier head's weight and bias to zero, in place.

    In few-shot classification the labels are assigned to the classes at random in every task, so a head
    row learnt for "label 2" in one task is noise to the next. A zero head favours no label: the first
    inner step writes each row from that task's support set alone (with a mean loss over N*K balanced
    support images, row n becomes alpha / N times the mean feature of class n minus the mean feature of
    all support images: a prototype), and the body receives no gradient in that step. Applied after
    every outer step, the head stays zero in theta.
    """
    head = classifier_head(model)
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()


_zero = zero_head   # the class below takes an argument of the same name


class MAML:
    """MAML on one model: meta-training steps, test-time adaptation and prediction.

    Args:
        model: the network f_theta; its parameters are theta.
        alpha: inner learning rate.
        steps: inner steps in meta-training; ``test_steps`` (default ``steps``) at test time.
        first_order: FOMAML (drop the Hessian term) when True.
        loss: ``"mse"``, ``"cross_entropy"`` or a function ``(pred, y) -> scalar``.
        strategy: ``"auto"``, ``"vmap"`` or ``"loop"`` (see the module docstring).
        zero_head: classification only: keep the head at zero in theta (:func:`zero_head`, set at the
            start and after every :meth:`meta_step`).
    """

    def __init__(self, model: nn.Module, alpha: float, steps: int = 1, test_steps: int | None = None,
                 first_order: bool = False, loss: str | LossFn = "mse", strategy: str = "auto",
                 zero_head: bool = False):
        check_model(model)
        _check_alpha(alpha)
        _check_steps(steps, allow_zero=False)
        if test_steps is not None:
            _check_steps(test_steps, allow_zero=True, name="test_steps")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}.")
        self.model, self.alpha, self.steps = model, float(alpha), steps
        self.test_steps = steps if test_steps is None else test_steps
        self.first_order, self.loss_fn, self.strategy = first_order, resolve_loss(loss), strategy
        self.zero_head = bool(zero_head)
        if self.zero_head:
            _zero(model)

    def meta_gradient(self, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor) -> tuple[Tensor, Params]:
        """Mean query loss and its meta-gradient for a meta-batch (see :func:`meta_gradient`)."""
        return meta_gradient(self.model, x_s, y_s, x_q, y_q, self.alpha, self.steps, self.loss_fn,
                             self.first_order, self.strategy)

    def meta_step(self, optimizer: torch.optim.Optimizer, x_s: Tensor, y_s: Tensor, x_q: Tensor,
                  y_q: Tensor) -> float:
        """One outer step: set theta's ``.grad`` to the meta-gradient and step ``optimizer``.

        ``optimizer`` must hold the model's parameters (theta), never adapted copies.
        Returns the meta-batch's mean query loss before the step.
        """
        loss, grads = self.meta_gradient(x_s, y_s, x_q, y_q)
        for name, p in self.model.named_parameters():
            p.grad = grads[name].to(p.dtype)
        optimizer.step()
        if self.zero_head:
            _zero(self.model)
        return loss.item()

    def adapt(self, x_s: Tensor, y_s: Tensor, steps: int | None = None,
              params: Params | None = None) -> Params:
        """Test-time adaptation of one task: ``test_steps`` inner steps, no graph kept."""
        steps = self.test_steps if steps is None else steps
        theta = {k: v.detach().requires_grad_() for k, v in (params or meta_parameters(self.model)).items()}
        with torch.enable_grad():  # plain autograd, first order: the fastest for one task
            out = adapt(self.model, theta, x_s, y_s, self.alpha, steps, self.loss_fn, create_graph=False,
                        use_autograd=True)
        return {k: v.detach() for k, v in out.items()}

    def predict(self, x: Tensor, params: Params | None = None) -> Tensor:
        """f_theta(x) (or with adapted ``params``), without gradients."""
        with torch.no_grad():
            return forward(self.model, params or meta_parameters(self.model), x)

    def adapt_predict(self, x_s: Tensor, y_s: Tensor, x_q: Tensor, steps: int | None = None) -> Tensor:
        """Adapt on ``(x_s, y_s)``, then predict ``x_q`` (one task; classification: logits)."""
        return self.predict(x_q, self.adapt(x_s, y_s, steps))

    def classify(self, episode) -> Tensor:
        """Query logits of one :class:`~course_utils.episodes.Episode` (for ``evaluation.evaluate``)."""
        dev = next(self.model.parameters()).device
        return self.adapt_predict(episode.support_x.to(dev), episode.support_y.to(dev),
                                  episode.query_x.to(dev))


# ----------------------------------------------------------------------------- measuring

def adaptation_curve(model: nn.Module, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor,
                     alpha: float, steps: int, loss: str | LossFn = "mse", params: Params | None = None,
                     strategy: str = "auto") -> Tensor:
    """Query loss of each task after 0, 1, ..., ``steps`` inner steps: shape ``(B, steps + 1)``.

    Test-time adaptation (no meta-gradient); tasks batched with ``vmap`` or looped as in
    :func:`meta_gradient`.
    """
    _check_steps(steps, allow_zero=True)
    _check_alpha(alpha)
    theta = {k: v.detach() for k, v in (params or meta_parameters(model)).items()}
    _check_batch(theta, x_s, y_s, x_q, y_q)
    loss_fn = resolve_loss(loss)

    def one(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> Tensor:
        p, out = theta, [loss_fn(forward(model, theta, xq), yq)]
        for _ in range(steps):
            p = inner_step(model, p, xs, ys, alpha, loss_fn, create_graph=False)
            out.append(loss_fn(forward(model, p, xq), yq))
        return torch.stack(out)

    if strategy == "auto":
        strategy = choose_strategy(model, next(iter(theta.values())).device)
    with torch.no_grad():  # torch.func.grad still differentiates inside
        if strategy == "vmap":
            return vmap(one)(x_s, y_s, x_q, y_q)
        return torch.stack([one(x_s[i], y_s[i], x_q[i], y_q[i]) for i in range(x_s.shape[0])])


class _Saved:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: Tensor):
        self.tensor = tensor


def saved_tensor_bytes(fn: Callable[[], Tensor]) -> tuple[Tensor, int]:
    """Run ``fn()``; return its result and the bytes autograd's graph still holds for its backward.

    Counts the distinct storages of the tensors saved for backward that are still alive when
    ``fn`` returns (so an inner gradient's graph freed by first order is not counted). That is
    the memory a meta-gradient costs until ``backward``, parameters included; works on any
    device. Use it with plain autograd (e.g. ``task_loss(..., use_autograd=True)``).
    """
    refs: list[weakref.ref] = []

    def pack(t: Tensor) -> _Saved:
        box = _Saved(t)
        refs.append(weakref.ref(box))
        return box

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        out = fn()
    storages = {}
    for r in refs:
        box = r()
        if box is not None:
            st = box.tensor.untyped_storage()
            storages[(st.data_ptr(), str(box.tensor.device))] = st.nbytes()
    return out, sum(storages.values())


# ----------------------------------------------------------------------------- input checks

def _check_steps(steps: int, allow_zero: bool, name: str = "steps") -> None:
    low = 0 if allow_zero else 1
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < low:
        extra = "" if allow_zero else " (with 0 inner steps MAML is plain multi-task training)"
        raise ValueError(f"{name} must be an integer >= {low}{extra}, got {steps!r}.")


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, Tensor):
        raise ValueError("alpha must be a Python number; a learned per-parameter alpha is Meta-SGD, "
                         "not covered here.")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        raise ValueError(f"alpha (the inner learning rate) must be a positive number, got {alpha!r}.")


def _check_batch(theta: Params, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor) -> None:
    names = ("x_s", "y_s", "x_q", "y_q")
    for n, t in zip(names, (x_s, y_s, x_q, y_q)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{n} must be a tensor, got {type(t).__name__}.")
        if t.dim() < 2:
            raise ValueError(f"{n} has shape {tuple(t.shape)}; a meta-batch needs a leading task "
                             "dimension B and an example dimension, e.g. (B, K, 1). For one task, "
                             "add it with .unsqueeze(0).")
    sizes = {n: int(t.shape[0]) for n, t in zip(names, (x_s, y_s, x_q, y_q))}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"Support and query must hold the same number of tasks B; got {sizes}.")
    if x_s.shape[1] != y_s.shape[1] or x_q.shape[1] != y_q.shape[1]:
        raise ValueError(f"Inputs and targets must pair up: x_s {tuple(x_s.shape)} vs y_s "
                         f"{tuple(y_s.shape)}, x_q {tuple(x_q.shape)} vs y_q {tuple(y_q.shape)}.")
    p = next(iter(theta.values()))
    for n, t in zip(names, (x_s, y_s, x_q, y_q)):
        if t.device != p.device:
            raise ValueError(f"{n} is on {t.device} but the model is on {p.device}; move the batch "
                             "with .to(device).")
    for n, t in (("x_s", x_s), ("x_q", x_q)):
        if t.is_floating_point() and t.dtype != p.dtype:
            raise ValueError(f"{n} is {t.dtype} but the model's parameters are {p.dtype}; convert one "
                             f"of them (e.g. x.to({p.dtype})).")
