"""Episodic training: "train as you test" (Vinyals et al., 2016, NeurIPS, arXiv:1606.04080).

Each optimiser step samples one N-way K-shot episode from the meta-training classes,
computes the model's loss on the episode's *query* set given its *support* set, and takes
a gradient step on the shared parameters theta:

    theta <- theta - lr * grad_theta L(theta; S, Q),   (S, Q) ~ episodes of the training classes

The same loop serves Matching Networks, Prototypical Networks (Snell et al., 2017,
arXiv:1703.05175) and any model given as ``episode_loss_fn(model, episode) -> (loss, scores)``.
Snell et al. found that training with *more* classes per episode than at test time helps
(60-way training for 5-way testing): ``n_way`` here is the training way; validation uses
``val_way`` (default: ``n_way``).
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .episodes import ClassSet, Episode, EpisodeSampler
from .evaluation import Accuracy, episode_accuracy, episode_accuracies, evaluate, mean_ci95
from .training import History, code_fingerprint, load_or_train, train_loop

__all__ = ["train_episodic", "make_classifier", "train_or_load", "class_set_fingerprint", "embed_class_set",
           "evaluate_paired"]

EpisodeLoss = Callable[[nn.Module, Episode], "tuple[Tensor, Tensor] | Tensor"]


def _default_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def make_classifier(model: nn.Module, classify_fn: Callable[[nn.Module, Episode], Tensor] | None = None
                    ) -> Callable[[Episode], Tensor]:
    """``classify(episode) -> scores (N*Q, N)`` for :func:`evaluation.evaluate`: eval mode, no gradients.

    ``classify_fn(model, episode)`` gives the scores; by default ``model(episode)``.
    """
    fn = classify_fn or (lambda m, ep: m(ep))

    def classify(episode: Episode) -> Tensor:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return fn(model, episode.to(_default_device(model)))
        finally:
            model.train(was_training)
    return classify


def _scores_of(episode_loss_fn: EpisodeLoss) -> Callable[[nn.Module, Episode], Tensor]:
    """``(model, episode) -> scores`` from a loss function that returns ``(loss, scores)``."""
    def scores(model: nn.Module, episode: Episode) -> Tensor:
        out = episode_loss_fn(model, episode)
        return out[1] if isinstance(out, tuple) else model(episode)
    return scores


def _check_int(name: str, v: Any, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")


def train_episodic(model: nn.Module, episode_loss_fn: EpisodeLoss, train: ClassSet, n_way: int,
                   k_shot: int, q_query: int = 15, steps: int = 1000, lr: float = 1e-3,
                   device: torch.device | str | None = None, val: ClassSet | None = None,
                   val_every: int = 0, val_episodes: int = 50, val_way: int | None = None,
                   val_shot: int | None = None, lr_halve_every: int = 0, seed: int = 0,
                   desc: str = "episodic training", max_seconds: float | None = None,
                   clip_grad_norm: float | None = None) -> History:
    """Train ``model`` in place with Adam on ``steps`` episodes of ``train``; return the History.

    Logged per step: ``loss`` and ``acc`` (query accuracy of the training episode). With ``val``
    given, ``val_acc`` (mean accuracy over ``val_episodes`` fixed ``val_way``-way ``val_shot``-shot
    episodes) every ``val_every`` steps and at the end. ``lr_halve_every`` > 0 halves the step size
    that often (Snell et al. halve it every 2000 episodes). ``max_seconds`` stops training after
    that much time even if fewer than ``steps`` episodes ran. ``clip_grad_norm`` rescales each
    step's gradient to at most that norm (LEO's official code clips at 0.1). A loss that turns NaN or
    infinite stops training with an error instead of silently training on garbage.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not callable(episode_loss_fn):
        raise ValueError("episode_loss_fn must be a function (model, episode) -> (loss, scores).")
    for name, v, low in (("steps", steps, 1), ("val_every", val_every, 0), ("val_episodes", val_episodes, 1),
                         ("lr_halve_every", lr_halve_every, 0)):
        _check_int(name, v, low)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}.")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be > 0 (or None for no clipping), got {clip_grad_norm!r}.")
    val_way, val_shot = val_way or n_way, val_shot or k_shot
    sampler = EpisodeSampler(train, n_way, k_shot, q_query, seed=seed)  # checks the request
    if val is not None:
        EpisodeSampler(val, val_way, val_shot, q_query)  # fail now, not after training
    device = torch.device(device) if device is not None else _default_device(model)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, lr_halve_every, 0.5) if lr_halve_every else None

    def step(i: int) -> dict[str, float]:
        model.train()
        ep = next(sampler).to(device)
        out = episode_loss_fn(model, ep)
        loss, scores = out if isinstance(out, tuple) else (out, None)
        if not (isinstance(loss, Tensor) and loss.dim() == 0):
            raise ValueError("episode_loss_fn must return a scalar loss tensor (or (loss, scores)).")
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Training diverged at step {i}: the episode loss is {loss.item()}. Lower lr (now {lr}), "
                "clip the gradients (clip_grad_norm=...), or look for a log of 0 or an exp that overflows.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        opt.step()
        if sched is not None:
            sched.step()
        metrics = {"loss": loss.item()}
        if scores is not None:
            metrics["acc"] = episode_accuracy(scores.detach(), ep.query_y)
        return metrics

    validate = None
    if val is not None:
        classify = make_classifier(model, _scores_of(episode_loss_fn))

        def validate() -> dict[str, float]:
            acc = evaluate(classify, val, val_way, val_shot, q_query, n_episodes=val_episodes,
                           seed=12345, device=device, desc="validation")
            return {"val_acc": acc.mean}

    return train_loop(step, steps, desc=desc, validate=validate, every=val_every, max_seconds=max_seconds)


def class_set_fingerprint(classes: ClassSet) -> str:
    """A short hash of a ClassSet's identity (title, class names, item shape, feature function) for cache keys."""
    feats = repr(code_fingerprint(classes.features)) if classes.features is not None else ""
    text = "\n".join([classes.title, str(classes.item_shape), feats, classes.source, *classes.names])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_or_load(name: str, model: nn.Module, episode_loss_fn: EpisodeLoss, train: ClassSet,
                  config: dict[str, Any] | None = None, **kwargs: Any) -> History:
    """:func:`train_episodic`, cached with :func:`training.load_or_train`; the model ends up trained.

    The cache key holds ``name``, ``config`` (anything else the result depends on), every keyword
    argument, the model's architecture, the loss function (for one written in a notebook: its code
    and the notebook functions and settings it names, see :func:`training.code_fingerprint`) and the
    data (class names). The trained
    weights are loaded into ``model``; the History is returned.
    """
    val = kwargs.get("val")
    key = {**(config or {}), **{k: v for k, v in kwargs.items() if k not in {"val", "device", "desc"}},
           "model": repr(model), "loss": code_fingerprint(episode_loss_fn),
           "train": class_set_fingerprint(train),
           "val": class_set_fingerprint(val) if val is not None else None}
    device = kwargs.get("device") or _default_device(model)

    def fit() -> dict[str, Any]:
        hist = train_episodic(model, episode_loss_fn, train, **kwargs)
        return {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "history": hist.as_dict()}

    result = load_or_train(name, key, fit)
    model.load_state_dict(result["state"])
    model.to(device)
    return History.from_dict(result["history"])


def embed_class_set(encoder: nn.Module, classes: ClassSet, device: torch.device | str | None = None,
                    batch_size: int = 1000, title: str | None = None) -> ClassSet:
    """Every example of ``classes`` through ``encoder`` (eval mode, no gradients): a ClassSet of vectors.

    When a model's test-time embedding depends on each image alone (Prototypical Networks, Matching
    Networks without full context embeddings), embedding the test set once and sampling episodes of
    embeddings gives exactly the accuracy of embedding every episode, many times faster.
    """
    device = torch.device(device) if device is not None else _default_device(encoder)
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        with torch.no_grad():
            for c in range(len(classes)):
                out.append(classes.examples(c))
            sizes = [int(t.shape[0]) for t in out]
            flat = torch.cat(out)
            z = []
            for i in range(0, flat.shape[0], batch_size):
                xb = flat[i:i + batch_size].to(device)
                xb = xb.float() / 255.0 if xb.dtype == torch.uint8 else xb.float()
                z.append(encoder(xb).flatten(start_dim=1).cpu())
            z = torch.cat(z)
    finally:
        encoder.train(was_training)
    parts = list(torch.split(z, sizes))
    x = torch.stack(parts) if len(set(sizes)) == 1 else parts
    return ClassSet(x, list(classes.names), list(classes.alphabets), title or f"{classes.title} (embedded)")


def _sizes(classes: ClassSet) -> list[int]:
    return [classes.n_examples(c) for c in range(len(classes))]


def evaluate_paired(methods: dict[str, tuple[ClassSet, Callable[[Episode], Tensor]]], n_way: int, k_shot: int,
                    q_query: int = 15, n_episodes: int = 600, seed: int = 0, desc: str | None = None
                    ) -> tuple[dict[str, Accuracy], dict[str, Tensor]]:
    """Score several methods on the *same* episodes: ``methods[name] = (pool, classify)``.

    The pools may hold different representations of the same classes (images, or each model's
    embeddings from :func:`embed_class_set`): they must have the same class names and example counts,
    so that one seed draws the same classes and examples from each. Each method's :class:`Accuracy`
    equals ``evaluate(classify, pool, n_way, k_shot, q_query, n_episodes, seed)``; the second result
    holds the per-episode accuracies (``n_episodes`` values per method), so that a difference between
    two methods can be measured per episode (paired), e.g. ``mean_ci95(per[a] - per[b])``.
    """
    if not methods:
        raise ValueError("evaluate_paired needs at least one method: {name: (pool, classify)}.")
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}.")
    names = list(methods)
    first = methods[names[0]][0]
    for name in names[1:]:
        pool = methods[name][0]
        if pool.names != first.names or _sizes(pool) != _sizes(first):
            raise ValueError(f"The pools of {names[0]!r} and {name!r} are not the same classes with the same "
                             "numbers of examples, so one seed would not draw the same episodes from both.")
    values = {name: episode_accuracies(classify, pool, n_way, k_shot, q_query, n_episodes, seed,
                                       desc=desc or f"{name}: {n_way}-way {k_shot}-shot eval")
              for name, (pool, classify) in methods.items()}
    return {name: mean_ci95(v) for name, v in values.items()}, values
