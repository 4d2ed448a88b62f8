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


def _class_label(name: str, width: int = 20) -> str:
    """A class name as a readable row label: ``'Mkhedruli_(Georgian)/character04/rot180'`` becomes
    ``'Mkhedruli (Georgian)'`` over ``'character04, rot 180°'`` (long alphabet names wrapped)."""
    import textwrap

    parts = name.replace("_", " ").split("/")
    rot = ""
    if len(parts) > 1 and parts[-1].startswith("rot") and parts[-1][3:].isdigit():
        rot = f", rot {parts.pop()[3:]}°"
    alphabet, char = ("/".join(parts[:-1]), parts[-1]) if len(parts) > 1 else ("", parts[0])
    lines = textwrap.wrap(alphabet, width) if alphabet else []
    return "\n".join(lines + [char + rot])


_ROW_LABEL_SIZE = 10  # points: row labels of the image grids


def _wrap_title(title: str, width_in: float) -> str:
    """Wrap a figure title of 11-point text to the figure's width (about 11 characters an inch)."""
    import textwrap

    return "\n".join(textwrap.wrap(title, max(20, int(11 * width_in)))) or title


def show_episode(ep: Episode, max_query: int = 3, title: str | None = None) -> Figure:
    """One row per class: its K support images (left, blue frame), then up to ``max_query`` queries."""
    if ep.batched:
        ep = ep.task(0)
    n, k, q = ep.n_way, ep.k_shot, min(max_query, ep.q_query)
    width = 1.1 * (k + q) + (2.2 if ep.classes else 1.0)
    fig, axes = plt.subplots(n, k + q, figsize=(width, 1.15 * n + 0.7), squeeze=False)
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
        label = f"y = {c}\n{_class_label(ep.classes[c])}" if ep.classes else f"y = {c}"
        axes[c, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=_ROW_LABEL_SIZE,
                              labelpad=8)
    axes[0, 0].set_title("support", fontsize=11, color=COLORS[0], loc="left")
    axes[0, k].set_title("query", fontsize=11, color=COLORS[1], loc="left")
    title = title or f"A {n}-way {k}-shot episode ({ep.q_query} queries per class)"
    fig.suptitle(_wrap_title(title, width), fontsize=11)
    fig.tight_layout()
    return fig


def show_classes(classes: ClassSet, n_classes: int = 8, n_examples: int = 8, seed: int = 0,
                 title: str | None = None) -> Figure:
    """A grid of ``n_classes`` random classes (rows) by ``n_examples`` examples (columns)."""
    n_classes = min(n_classes, len(classes))
    n_examples = min(n_examples, classes.min_examples())
    idx = torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed))[:n_classes]
    fig, axes = plt.subplots(n_classes, n_examples, figsize=(0.9 * n_examples + 2.4, 0.95 * n_classes + 0.6),
                             squeeze=False)
    for r, c in enumerate(idx.tolist()):
        ex = classes.examples(c)
        ex = ex.float() / 255 if ex.dtype == torch.uint8 else ex
        for j in range(n_examples):
            _img(axes[r, j], ex[j])
        axes[r, 0].set_ylabel(_class_label(classes.names[c]), rotation=0, ha="right", va="center",
                              fontsize=_ROW_LABEL_SIZE, labelpad=8)
    fig.suptitle(_wrap_title(title or f"{classes.title}: {n_classes} classes x {n_examples} examples",
                             0.9 * n_examples + 2.4), fontsize=11)
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


# ----------------------------------------------------------------------------- chapter 04 (Meta-learner LSTM)

def meta_lstm_gradient_histogram(grad: torch.Tensor, p: float = 10.0, title: str | None = None) -> Figure:
    """Histogram of log10 |grad| over the coordinates (exact zeros left out), with the e^-p threshold."""
    g = grad.detach().double().cpu().reshape(-1)
    mag = g[g != 0].abs().log10().numpy()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(mag, bins=60, color=COLORS[0])
    ax.axvline(-p / np.log(10), color=COLORS[3], ls="--", label=rf"$e^{{-p}}$, $p = {p:g}$")
    ax.set_xlabel(r"$\log_{10} |\partial \mathcal{L} / \partial \theta_j|$")
    ax.set_ylabel("parameters")
    ax.set_title(title or "The learner's gradient, one coordinate per parameter")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def meta_lstm_preprocessing_figure(preprocess, p: float = 10.0) -> Figure:
    """The two channels of ``preprocess(x, p)``: the magnitude against |x| (log scale), the second
    entry around the threshold (linear scale); dotted lines at |x| = e^-p."""
    thr = float(np.exp(-p))
    xs = torch.logspace(np.log10(thr) - 4, 1, 400, dtype=torch.float64)
    lin = torch.linspace(-4 * thr, 4 * thr, 401, dtype=torch.float64)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].plot(xs.numpy(), preprocess(xs, p)[:, 0].numpy(), color=COLORS[0])
    axes[0].set_xscale("log")
    axes[0].set_xlabel("|x| (log scale)")
    axes[0].set_ylabel("first entry")
    axes[0].set_title("first entry (magnitude)")
    axes[0].axvline(thr, color=COLORS[7], ls=":", lw=1)
    axes[1].plot(lin.numpy() / thr, preprocess(lin, p)[:, 1].numpy(), color=COLORS[1])
    axes[1].set_xlabel(r"x in units of $e^{-p}$ (linear scale)")
    axes[1].set_ylabel("second entry")
    axes[1].set_title(r"second entry (sign, or $e^p x$ when tiny)")
    for sgn in (-1, 1):
        axes[1].axvline(sgn, color=COLORS[7], ls=":", lw=1)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"The preprocessing, p = {p:g} (dotted: |x| = e^-p)")
    fig.tight_layout()
    return fig


def meta_lstm_gates_figure(i_gates: torch.Tensor, f_gates: torch.Tensor, losses: torch.Tensor,
                           title: str = "The trained meta-learner") -> Figure:
    """Three panels over the inner steps t = 1..T: the input gate, the forget gate (mean over episodes
    and coordinates, band: 10th-90th percentile over coordinates) and the support loss (mean over
    episodes). ``i_gates, f_gates``: (episodes, T, P); ``losses``: (episodes, T)."""
    T = i_gates.shape[1]
    steps = np.arange(1, T + 1)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
    for ax, g, colour, label, sub in ((axes[0], i_gates, COLORS[0], "input gate $i_t$", "input gate ~ learning rate"),
                                      (axes[1], f_gates, COLORS[3], "forget gate $f_t$", "forget gate ~ 1 - decay")):
        flat = g.detach().double().cpu().transpose(0, 1).reshape(T, -1)       # (T, episodes * P)
        sample = flat[:, ::max(1, flat.shape[1] // 100000)]
        q = torch.quantile(sample, torch.tensor([0.1, 0.9], dtype=sample.dtype), dim=1)
        ax.plot(steps, flat.mean(1).numpy(), "o-", color=colour, label=f"{label}: mean")
        ax.fill_between(steps, q[0].numpy(), q[1].numpy(), color=colour, alpha=0.25, lw=0,
                        label="10th-90th percentile")
        ax.set_title(sub)
        ax.set_ylabel("gate value")
        ax.legend(frameon=False)
    mean_loss = losses.detach().double().cpu().mean(0).numpy()
    axes[2].plot(steps, mean_loss, "o-", color=COLORS[2])
    axes[2].set_title(r"support loss $\mathcal{L}_t$ seen at step t")
    axes[2].set_ylabel("cross-entropy")
    for ax in axes:
        ax.set_xlabel("inner step t")
        ax.set_xticks(steps)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- chapter 02 (Matching, Prototypical)

def matching_attention_figure(ep: Episode, weights: torch.Tensor, y_hat: torch.Tensor, q: int) -> Figure:
    """Query ``q`` of episode ``ep`` (left) and the support images tinted by its attention ``weights``
    (``(N*K,)``, class-major), one row per class, each row labelled with the class probability
    ``y_hat[n]`` (``(N,)``)."""
    n, k = ep.n_way, ep.k_shot
    w, y_hat = weights.detach().cpu(), y_hat.detach().cpu()
    cmap, top = plt.get_cmap("Blues"), float(w.max())
    fig, axes = plt.subplots(n, k + 1, figsize=(1.5 * (k + 1) + 2.0, 1.35 * n + 0.8), squeeze=False)
    for r in range(n):
        axes[r, 0].axis("off")
        for j in range(k):
            i = r * k + j
            ink = ep.support_x[i, 0].detach().float().cpu().numpy()[..., None]
            tint = np.array(cmap(0.85 * float(w[i]) / top)[:3])
            axes[r, j + 1].imshow(tint * (1 - ink))
            axes[r, j + 1].set_title(f"a = {float(w[i]):.2f}", fontsize=10)
            axes[r, j + 1].set_xticks([])
            axes[r, j + 1].set_yticks([])
        axes[r, -1].yaxis.set_label_position("right")
        axes[r, -1].set_ylabel(f"class {r}\nŷ = {float(y_hat[r]):.2f}", rotation=0, ha="left", va="center",
                               fontsize=10)
    mid = axes[n // 2, 0]
    mid.axis("on")
    mid.set_xticks([])
    mid.set_yticks([])
    mid.imshow(ep.query_x[q, 0].detach().float().cpu().numpy(), cmap=INK, vmin=0, vmax=1)
    mid.set_title(f"query {q}\ntrue class {int(ep.query_y[q])}", fontsize=10, color=COLORS[3])
    fig.suptitle(f"Attention of one query over the support set (predicted class {int(y_hat.argmax())})",
                 fontsize=11)
    fig.tight_layout()
    return fig


def proto_embedding_figure(z_support: torch.Tensor, z_query: torch.Tensor, c: torch.Tensor,
                           support_y: torch.Tensor, query_y: torch.Tensor, title: str) -> Figure:
    """An episode's embeddings on its first two principal components: support points (circles),
    queries (crosses) and prototypes ``c`` (stars), coloured by class."""
    zs, zq, c = (t.detach().double().cpu() for t in (z_support, z_query, c))
    z = torch.cat([zs, zq])
    mean = z.mean(0)
    _, _, V = torch.linalg.svd(z - mean, full_matrices=False)
    ps, pq, pc = (((t - mean) @ V[:2].T).numpy() for t in (zs, zq, c))
    sy, qy = support_y.cpu(), query_y.cpu()
    fig, ax = plt.subplots(figsize=(6.0, 4.8))
    for n in range(c.shape[0]):
        col = COLORS[n % len(COLORS)]
        ax.scatter(*ps[(sy == n).numpy()].T, color=col, s=40, label=f"class {n}")
        ax.scatter(*pq[(qy == n).numpy()].T, color=col, marker="x", s=22, alpha=0.8)
        ax.scatter(*pc[n], color=col, marker="*", s=380, edgecolor="black", linewidth=1.2, zorder=3)
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=9, frameon=False, loc="best")
    fig.tight_layout()
    return fig


def matching_proto_accuracy_bars(results: Mapping[str, Mapping[tuple[int, int], Accuracy]],
                                 settings: Sequence[tuple[int, int]], title: str) -> Figure:
    """Grouped bars: each method's accuracy (with its 95% interval) per (N, K) setting; dashed: chance."""
    fig, ax = plt.subplots(figsize=(9, 3.8))
    m = len(results)
    width = 0.8 / max(m, 1)
    for i, (name, r) in enumerate(results.items()):
        x = np.arange(len(settings)) + (i - (m - 1) / 2) * width
        ax.bar(x, [100 * r[s].mean for s in settings], width, yerr=[100 * r[s].ci95 for s in settings],
               color=COLORS[i % len(COLORS)], label=name, capsize=3)
    for j, (n, k) in enumerate(settings):
        ax.hlines(100 / n, j - 0.4, j + 0.4, color="black", ls="--", lw=1, zorder=3)
    ax.set_xticks(range(len(settings)), [f"{n}-way {k}-shot" for n, k in settings])
    ax.set_ylabel("meta-test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def matching_training_curves(histories: Mapping[str, History], keys: Sequence[str] = ("loss", "acc", "val_acc"),
                             title: str = "Episodic training", few: int = 12) -> Figure:
    """:func:`plot_curves`, readable for short runs too: a curve with at most ``few`` points gets
    markers (a different, hollow one per method, so equal values stay visible), steps are integers,
    the y axis has no offset, and a flat panel (one point) gets a sensible range (within [0, 1] for
    an accuracy)."""
    from matplotlib.ticker import MaxNLocator
    fig = plot_curves(histories, keys=keys, title=title)
    for ax, key in zip(fig.axes, keys):
        lines = ax.get_lines()
        for i, line in enumerate(lines):
            if len(line.get_xdata()) <= few:
                line.set_marker("osD^v"[i % 5])
                line.set_markersize(8 - 2 * (i % 2))
                line.set_markerfacecolor("none" if i else line.get_color())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        xs = np.concatenate([np.asarray(line.get_xdata(), dtype=float) for line in lines]) if lines else np.array([])
        if xs.size and np.ptp(xs) < 2:                    # one or two steps: a little room either side
            ax.set_xlim(xs.min() - 1, xs.max() + 1)
        ax.ticklabel_format(axis="y", useOffset=False)
        ys = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in lines]) if lines else np.array([])
        if ys.size and np.ptp(ys) < 1e-6 * max(1.0, float(np.abs(ys).max())):
            pad = 0.05 if "acc" in key else 0.05 * max(1.0, float(np.abs(ys).max()))
            lo, hi = float(ys.min()) - pad, float(ys.max()) + pad
            ax.set_ylim((max(0.0, lo), min(1.0, hi)) if "acc" in key else (lo, hi))
        if ax.get_legend() is not None:
            ax.legend(frameon=False)                  # redrawn, so that it shows the markers
    return fig


# ----------------------------------------------------------------------------- chapter 01 (contrastive loss, Siamese nets)

def contrastive_toy_panels(panels: Mapping[str, tuple[torch.Tensor, float, float, float]], margin: float = 1.0) -> Figure:
    """One scatter per trained toy embedding. ``panels[title] = (z, same, different, accuracy)`` with
    ``z`` of shape (C, n, 2): n held-out points of each of C classes in the 2-D embedding."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 4.3), squeeze=False)
    for ax, (title, (z, same, diff, acc)) in zip(axes[0], panels.items()):
        z = z.detach().cpu()
        for c in range(len(z)):
            ax.scatter(z[c, :, 0], z[c, :, 1], s=12, color=COLORS[c % len(COLORS)], label=f"class {c}")
        ax.set_title(f"{title}\nsame-class {same:.2f} · different-class {diff:.2f} · 1-shot acc {acc:.0%}",
                     fontsize=10)
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
        ax.set_aspect("equal", "datalim")
    axes[0][0].legend(frameon=False, fontsize=9)
    fig.suptitle(f"A 2-D embedding trained with the contrastive loss (margin m = {margin:g}): mean distances "
                 "between held-out points and 4-way 1-shot accuracy")
    fig.tight_layout()
    return fig


def contrastive_margin_picture(points: torch.Tensor, classes: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                               pair_Y: torch.Tensor, D: torch.Tensor, loss: torch.Tensor, force: torch.Tensor,
                               margin: float) -> Figure:
    """Section 6's picture: on the left every pair (i[k], j[k]) of ``points`` that costs something, drawn with
    a width that grows with its loss (solid blue: same class, Y = 0; dashed orange: different classes inside
    the margin; dotted grey: beyond the margin), and the forces -dL/dz on the points; on the right, every
    pair on its loss curve."""
    points, D, loss, force = (t.detach().cpu() for t in (points, D, loss, force))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6))
    for k in range(len(i)):
        a, b = points[i[k]], points[j[k]]
        width = 0.5 + 3 * loss[k].item()
        if pair_Y[k] == 0:
            ax.plot([a[0], b[0]], [a[1], b[1]], color=COLORS[0], lw=width, zorder=1)
        elif loss[k] > 0:
            ax.plot([a[0], b[0]], [a[1], b[1]], "--", color=COLORS[1], lw=width, zorder=1)
        else:
            ax.plot([a[0], b[0]], [a[1], b[1]], ":", color="0.8", lw=0.8, zorder=0)
    for c, marker, colour in zip(range(int(classes.max()) + 1), "os^D", (COLORS[2], COLORS[4], COLORS[7], COLORS[5])):
        ax.scatter(points[classes == c, 0], points[classes == c, 1], s=60, marker=marker, color=colour, zorder=3,
                   label=f"class {c}")
    ax.quiver(points[:, 0], points[:, 1], force[:, 0], force[:, 1], angles="xy", scale_units="xy",
              scale=max(4.0, force.norm(dim=1).max().item() / 0.4), width=0.006, zorder=4)
    ax.add_patch(plt.Circle(points[0].tolist(), margin, fill=False, ls="--", color="0.5"))
    ax.set_xlim(-1.2, 2.8)
    ax.set_ylim(-1.2, 2.6)
    ax.set_aspect("equal")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.legend(frameon=False, fontsize=9, loc="lower right")
    inside = int((loss[pair_Y == 1] > 0).sum())
    ax.set_title(f"m = {margin:.2f} (grey circle: radius m around one point)\n{inside} of {int(pair_Y.sum())} "
                 f"different-class pairs inside the margin · total loss {loss.sum():.2f}", fontsize=10)
    grid = torch.linspace(0, 3, 200)
    scale = 1.0  # the curves in the student's own scale (1, or 1/2 with Hadsell's factor)
    same = pair_Y == 0
    if bool(same.any()) and float(D[same].max()) > 0:
        k = int(D[same].argmax())
        scale = float(loss[same][k] / D[same][k] ** 2)
    bx.plot(grid, scale * grid ** 2, color=COLORS[0], label="same class: $D^2$")
    bx.plot(grid, scale * torch.clamp(margin - grid, min=0) ** 2, "--", color=COLORS[1],
            label="different: $\\max(0, m - D)^2$")
    bx.scatter(D[same], loss[same], color=COLORS[0], zorder=3)
    bx.scatter(D[~same], loss[~same], color=COLORS[1], marker="s", zorder=3)
    bx.axvline(margin, color="0.5", ls=":", lw=1)
    bx.set_xlim(0, 3)
    bx.set_ylim(0, 4)
    bx.set_xlabel("distance D")
    bx.set_ylabel("loss of the pair")
    bx.set_title("each pair on its loss curve (dotted line: D = m)", fontsize=10)
    bx.legend(frameon=False)
    fig.tight_layout()
    return fig


def siamese_pair_grid(x1: torch.Tensor, x2: torch.Tensor, Y: torch.Tensor, n: int = 12) -> Figure:
    """The first ``n`` pairs as columns (x1 above x2), titled with their label Y (0 same class, 1 different)."""
    n = min(n, len(x1))
    fig, axes = plt.subplots(2, n, figsize=(n, 2.5), squeeze=False)
    for k in range(n):
        for r, x in enumerate((x1, x2)):
            _img(axes[r, k], x[k])
        axes[0, k].set_title(f"Y = {int(Y[k])}", fontsize=11, color=COLORS[0] if Y[k] == 0 else COLORS[3])
    fig.suptitle(f"{n} training pairs (columns): Y = 0 same class (blue), Y = 1 different classes (red)", fontsize=11)
    fig.tight_layout()
    return fig


def siamese_embedding_panels(panels: Mapping[str, torch.Tensor], labels: torch.Tensor, names: Sequence[str],
                             title: str) -> Figure:
    """Side-by-side 2-D projections (``panels[title] = (n, 2)`` points), coloured by ``labels``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.6), squeeze=False)
    for ax, (name, p) in zip(axes[0], panels.items()):
        p = p.detach().cpu()
        for c in range(len(names)):
            ax.scatter(p[labels == c, 0], p[labels == c, 1], s=14, color=COLORS[c % len(COLORS)], label=names[c])
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    axes[0][-1].legend(frameon=False, fontsize=9, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def siamese_distance_histogram(D: torch.Tensor, Y: torch.Tensor, threshold: float, margin: float,
                               title: str = "Distances of meta-test pairs") -> Figure:
    """Histograms of the distances of same-class (Y = 0) and different-class (Y = 1) pairs, with the
    verification threshold and the margin."""
    D = D.detach().double().cpu()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    bins = torch.linspace(0, float(D.max()), 50).numpy()
    ax.hist(D[Y == 0].numpy(), bins=bins, alpha=0.6, color=COLORS[0], label="same class (Y = 0)")
    ax.hist(D[Y == 1].numpy(), bins=bins, alpha=0.6, color=COLORS[1], label="different classes (Y = 1)")
    ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
    ax.axvline(margin, color="0.5", ls=":", lw=1, label=f"margin m = {margin:g}")
    ax.set_xlabel("distance D between the two embeddings")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def baseline_pretraining_curves(history: History, n_classes: int, title: str | None = None) -> Figure:
    """Chapter 00: loss and accuracy of the pre-training classifier per batch, with chance levels.

    A classifier that guesses among ``n_classes`` classes has cross-entropy ln C and accuracy 1/C.
    """
    fig = plot_curves(history, keys=("loss", "acc"),
                      title=title or f"Pre-training a classifier over {n_classes} classes")
    loss_ax, acc_ax = fig.axes
    loss_ax.axhline(float(np.log(n_classes)), color="grey", ls="--", lw=1, label=f"chance: ln {n_classes}")
    acc_ax.axhline(1 / n_classes, color="grey", ls="--", lw=1, label=f"chance: 1/{n_classes}")
    loss_ax.set_ylabel("cross-entropy (training batch)")
    acc_ax.set_ylabel("accuracy (training batch)")
    for ax in fig.axes:
        ax.legend(frameon=False)
    return fig
