"""Plots the chapters share: episodes, class grids, accuracy vs shots, training curves.

Colours are the Okabe-Ito palette (safe for the common forms of colour blindness).
Every function returns its matplotlib Figure so notebooks can tweak or save it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .episodes import ClassSet, Episode
from .evaluation import Accuracy
from .training import History

__all__ = ["use_course_style", "COLORS", "show_episode", "show_classes", "plot_accuracy_vs_shots", "plot_method_comparison",
           "plot_curves"]

def use_course_style(dpi: int = 80) -> None:
    """Modest-resolution PNG figures (notebooks stay small) with light grids."""
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "axes.titlesize": 11})


use_course_style()

COLORS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
INK = "Greys"  # ink-high images: dark strokes on white


def _img(ax, x: torch.Tensor) -> None:
    ax.imshow(x.detach().float().cpu().squeeze(0).numpy(), cmap=INK, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def show_episode(ep: Episode, max_query: int = 3, title: str | None = None) -> Figure:
    """One row per class: its K support images (left, blue frame), then up to ``max_query`` queries."""
    if ep.batched:
        ep = ep.task(0)
    n, k, q = ep.n_way, ep.k_shot, min(max_query, ep.q_query)
    fig, axes = plt.subplots(n, k + q, figsize=(1.1 * (k + q) + 1.5, 1.1 * n + 0.6), squeeze=False)
    for c in range(n):
        sup = ep.support_x[ep.support_y == c]
        qry = ep.query_x[ep.query_y == c]
        for j in range(k + q):
            ax = axes[c, j]
            _img(ax, sup[j] if j < k else qry[j - k])
            colour = COLORS[0] if j < k else COLORS[1]
            for s in ax.spines.values():
                s.set_edgecolor(colour)
                s.set_linewidth(2.5)
        label = f"y={c}\n{ep.classes[c]}" if ep.classes else f"y={c}"
        axes[c, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    axes[0, 0].set_title("support", fontsize=9, color=COLORS[0], loc="left")
    axes[0, k].set_title("query", fontsize=9, color=COLORS[1], loc="left")
    fig.suptitle(title or f"A {n}-way {k}-shot episode ({ep.q_query} queries per class)", fontsize=11)
    fig.tight_layout()
    return fig


def show_classes(classes: ClassSet, n_classes: int = 8, n_examples: int = 8, seed: int = 0,
                 title: str | None = None) -> Figure:
    """A grid of ``n_classes`` random classes (rows) by ``n_examples`` examples (columns)."""
    n_classes = min(n_classes, len(classes))
    n_examples = min(n_examples, classes.min_examples())
    idx = torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed))[:n_classes]
    fig, axes = plt.subplots(n_classes, n_examples, figsize=(0.9 * n_examples + 1.8, 0.9 * n_classes + 0.5),
                             squeeze=False)
    for r, c in enumerate(idx.tolist()):
        ex = classes.examples(c)
        ex = ex.float() / 255 if ex.dtype == torch.uint8 else ex
        for j in range(n_examples):
            _img(axes[r, j], ex[j])
        axes[r, 0].set_ylabel(classes.names[c], rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title or f"{classes.title}: {n_classes} classes x {n_examples} examples", fontsize=11)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_shots(results: Mapping[str, Mapping[int, Accuracy]], n_way: int,
                           title: str | None = None, chance: bool = True) -> Figure:
    """Accuracy against K for each method, with 95% interval bands."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, by_k) in enumerate(results.items()):
        ks = sorted(by_k)
        m = np.array([100 * by_k[k].mean for k in ks])
        h = np.array([100 * by_k[k].ci95 for k in ks])
        colour = COLORS[i % len(COLORS)]
        ax.plot(ks, m, "o-", color=colour, label=name)
        ax.fill_between(ks, m - h, m + h, color=colour, alpha=0.25, linewidth=0)
    if chance:
        ax.axhline(100 / n_way, color="grey", ls="--", lw=1, label=f"chance (1/{n_way})")
    ax.set_xlabel("shots per class K")
    ax.set_ylabel("query accuracy (%)")
    ax.set_title(title or f"{n_way}-way accuracy vs shots (mean and 95% interval)")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_method_comparison(columns: Mapping[str, Mapping[str, Accuracy]], n_way: int,
                           title: str | None = None) -> Figure:
    """One panel per column (e.g. data set): each method's accuracy as a dot with its 95% interval.

    ``columns[column][method]`` is an :class:`Accuracy`; methods keep their order, top to bottom.
    """
    if not columns or not all(columns.values()):
        raise ValueError("plot_method_comparison needs at least one column with at least one method.")
    methods = list(dict.fromkeys(m for col in columns.values() for m in col))
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns) + 1.8, 0.36 * len(methods) + 1.4),
                             sharey=True, squeeze=False)
    for j, (ax, (name, col)) in enumerate(zip(axes[0], columns.items())):
        for i, m in enumerate(methods):
            if m in col:
                mean, half = col[m].as_percent()
                ax.errorbar(mean, i, xerr=half, fmt="o", color=COLORS[j % len(COLORS)], capsize=3, ms=5)
        ax.axvline(100 / n_way, color="grey", ls="--", lw=1, label=f"chance (1/{n_way})")
        ax.set_title(name)
        ax.set_xlabel("query accuracy (%), 95% interval")
        ax.grid(alpha=0.3, axis="x")
        ax.legend(frameon=False, loc="lower left", fontsize=8)
    axes[0][0].set_yticks(range(len(methods)))
    axes[0][0].set_yticklabels(methods)
    axes[0][0].invert_yaxis()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(histories: Mapping[str, History] | History, keys: Sequence[str] = ("loss",),
                smooth: int = 20, title: str = "Training curves") -> Figure:
    """Metrics against step (a moving average of ``smooth`` steps), one panel per key."""
    if isinstance(histories, History):
        histories = {"": histories}
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (name, h) in enumerate(histories.items()):
            if key not in h.values:
                continue
            v = torch.tensor(h.values[key])
            w = max(1, min(smooth, len(v) // 5 or 1))
            sm = torch.nn.functional.avg_pool1d(v[None, None], w, 1).flatten() if w > 1 else v
            ax.plot(h.steps[key][w - 1:], sm.numpy(), color=COLORS[i % len(COLORS)], label=name or key)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if len(histories) > 1:
            ax.legend(frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
