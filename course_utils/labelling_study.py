"""Chapter 07's measurements of automatic labelling, shared by the notebook and the benchmark.

Every function samples many labelling problems (:class:`labelling_data.Pool`) from an embedded class
set and reports means with 95% intervals over them (:func:`evaluation.mean_ci95`):

1. :func:`calibrate` (on meta-val pools) and :func:`acceptance`: coverage at a target precision with
   the threshold tau chosen on meta-val, and the precision actually obtained on the new alphabet;
2. :func:`calibration_errors`: ECE before and after temperature scaling;
3. :func:`accuracy_vs_m`: pool accuracy against the number of unlabelled items per class, plain
   prototypes vs soft k-means vs masked soft k-means, with and without distractors;
4. :func:`self_training_study`: accepted-label precision, coverage and held-out accuracy per round;
5. :func:`human_effort`: pool accuracy against human clicks for each acquisition order.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from . import confidence as conf_mod
from . import selective, soft_kmeans
from .episodes import ClassSet
from .evaluation import Accuracy, mean_ci95
from .labelling_data import NONE, Pool, sample_pool
from .plots import COLORS
from .protonet import protonet_logits, prototypes

__all__ = ["sample_pools", "pool_logits", "stack_logits", "Calibration", "calibrate", "acceptance",
           "calibration_errors", "accuracy_vs_m"]


def sample_pools(embedded: ClassSet, n_way: int, k_shot: int, m_per_class: int, n_pools: int,
                 n_distractors: int = 0, seed: int = 0) -> list[Pool]:
    """``n_pools`` independent pools from one seeded stream."""
    g = torch.Generator().manual_seed(seed)
    return [sample_pool(embedded, n_way, k_shot, m_per_class, n_distractors, generator=g) for _ in range(n_pools)]


def pool_logits(pool: Pool, c: Tensor | None = None) -> Tensor:
    """ProtoNet logits ``-||z - c_n||^2`` of the pool items, ``(P, N)``; ``c`` defaults to the support means."""
    c = prototypes(pool.support_z, pool.n_way, pool.k_shot) if c is None else c
    return protonet_logits(pool.pool_z, c)


def stack_logits(pools: Sequence[Pool]) -> tuple[Tensor, Tensor]:
    """All pools' logits and true labels, concatenated: ``(sum P, N)``, ``(sum P,)``."""
    return torch.cat([pool_logits(p) for p in pools]), torch.cat([p.pool_y for p in pools])


def _correct(logits: Tensor, y: Tensor) -> Tensor:
    return logits.argmax(dim=1) == y  # a distractor (y = NONE) is never right


@dataclass
class Calibration:
    """What meta-val chose: temperature T, threshold tau (for ``target`` precision), radius r."""

    temperature: float
    tau: float
    radius: float
    target: float
    kind: str = "max_prob"

    def as_dict(self) -> dict:
        return asdict(self)


def calibrate(val_pools: Sequence[Pool], target: float = 0.99, kind: str = "max_prob",
              radius_quantile: float = 0.99) -> Calibration:
    """T by NLL on meta-val pools' labelled items, tau for ``target`` precision, r a distance quantile.

    All three are chosen on meta-validation pools (classes the embedding was not trained on, with
    their labels known), never on the support set of the problem at hand.
    """
    logits, y = stack_logits(val_pools)
    known = y != NONE
    T = conf_mod.fit_temperature(logits[known], y[known])
    c = conf_mod.confidence(logits, kind, T)
    tau = selective.threshold_for_precision(c, _correct(logits, y), target)
    d_true = -logits[known].gather(1, y[known].view(-1, 1)).squeeze(1)
    r = float(torch.quantile(d_true, radius_quantile))
    return Calibration(float(T), float(tau), r, target, kind)


def acceptance(pools: Sequence[Pool], cal: Calibration) -> dict:
    """Coverage and precision of ``confidence >= tau`` per pool (means with 95% intervals).

    ``precision_pooled`` counts every accepted item of every pool once; ``gap`` is the target minus
    it (positive: the threshold chosen on meta-val promised more than it gave).
    """
    cov, prec, n_acc, n_right = [], [], 0, 0
    for p in pools:
        logits = pool_logits(p)
        c = conf_mod.confidence(logits, cal.kind, cal.temperature)
        ok = _correct(logits, p.pool_y)
        acc = c >= cal.tau
        cov.append(acc.float().mean().item())
        if acc.any():
            prec.append(ok[acc].float().mean().item())
        n_acc += int(acc.sum())
        n_right += int((ok & acc).sum())
    pooled = n_right / n_acc if n_acc else math.nan
    return {"coverage": mean_ci95(cov), "precision": mean_ci95(prec) if prec else None,
            "precision_pooled": pooled, "gap": cal.target - pooled, "accepted": n_acc,
            "pools_with_acceptances": len(prec), "pools": len(pools)}


def calibration_errors(pools: Sequence[Pool], temperature: float, block: int = 10,
                       n_bins: int = 15) -> dict[str, Accuracy]:
    """ECE with T = 1 and with ``temperature``, each over blocks of ``block`` pools (mean, 95% interval)."""
    out: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(0, len(pools) - block + 1, block):
        logits, y = stack_logits(pools[i:i + block])
        for name, T in (("before", 1.0), ("after", temperature)):
            out[name].append(conf_mod.expected_calibration_error(conf_mod.probabilities(logits, T), y, n_bins))
    return {k: mean_ci95(v) for k, v in out.items()}


def _pool_accuracy(c: Tensor, pool: Pool) -> float:
    real = pool.pool_y != NONE
    return (pool_logits(pool, c)[real].argmax(1) == pool.pool_y[real]).float().mean().item()


def truncate_pool(pool: Pool, m: int) -> Pool:
    """The same pool with only the first ``m`` unlabelled items of each class (distractor classes too)."""
    if pool.pool_ref is None:
        raise ValueError("truncate_pool needs pool_ref (pools from labelling_data.sample_pool have it).")
    keep = torch.zeros(len(pool.pool_y), dtype=torch.bool)
    for c in pool.pool_ref[:, 0].unique():
        keep[(pool.pool_ref[:, 0] == c).nonzero().flatten()[:m]] = True
    return Pool(pool.support_z, pool.support_y, pool.pool_z[keep], pool.pool_y[keep], pool.n_way, pool.k_shot,
                pool.classes, pool.distractor_classes, pool.support_ref, pool.pool_ref[keep])


def refine_with(step: Callable, pool: Pool, steps: int = 1, radius: float | None = None,
                sharpness: float | None = None) -> Tensor:
    """Prototypes refined by ``steps`` calls of a soft k-means step with exercise 7.3's signature
    ``step(c, support_z, support_y, z_unlabelled, mask)``; the mask (if a radius is given) is measured
    once from the support means, as :func:`soft_kmeans.refine_prototypes` does."""
    c = prototypes(pool.support_z, pool.n_way, pool.k_shot)
    mask = None if radius is None else soft_kmeans.distance_mask(pool.pool_z, c, radius, sharpness)
    for _ in range(steps):
        c = step(c, pool.support_z, pool.support_y, pool.pool_z, mask)
    return c


def accuracy_vs_m(embedded: ClassSet, ms: Sequence[int], n_way: int, k_shot: int, n_pools: int,
                  radius: float, n_distractors: int = 0, steps: int = 1, seed: int = 0,
                  sharpness: float | None = None, step: Callable | None = None) -> dict[str, dict[int, Accuracy]]:
    """Accuracy on the pool's real-class items against M, for plain / soft k-means / masked prototypes.

    The same pools for every M and every method: pools are drawn once with max(ms) items per class and
    cut to the first M of each class (so the curves differ only by M, not by resampling). Distractors
    (``n_distractors`` classes of M items each) are in the pool the refinement sees but are not scored.
    Plain prototypes ignore the pool: their accuracy changes with M only because the scored items do.
    ``step``: the soft k-means step to use (exercise 7.3's signature; default
    :func:`soft_kmeans.soft_kmeans_step`).
    """
    if not ms or min(ms) < 1:
        raise ValueError(f"M must be >= 1 (accuracy is measured on the pool's items), got {list(ms)}.")
    step = step or soft_kmeans.soft_kmeans_step
    methods: dict[str, Callable[[Pool], Tensor]] = {
        "plain prototypes": lambda p: prototypes(p.support_z, p.n_way, p.k_shot),
        "soft k-means": lambda p: refine_with(step, p, steps),
        "masked soft k-means": lambda p: refine_with(step, p, steps, radius, sharpness),
    }
    full = sample_pools(embedded, n_way, k_shot, max(ms), n_pools, n_distractors, seed=seed)
    out: dict[str, dict[int, Accuracy]] = {name: {} for name in methods}
    for m in ms:
        pools = [truncate_pool(p, m) for p in full]
        for name, fn in methods.items():
            out[name][m] = mean_ci95([_pool_accuracy(fn(p), p) for p in pools])
    return out


def support_set_threshold(pools: Sequence[Pool], temperature: float, target: float = 0.99,
                          kind: str = "max_prob") -> float:
    """The classic mistake, for measuring it: tau chosen on the pools' own *support* items."""
    conf, right = [], []
    for p in pools:
        logits = protonet_logits(p.support_z, prototypes(p.support_z, p.n_way, p.k_shot))
        conf.append(conf_mod.confidence(logits, kind, temperature))
        right.append(_correct(logits, p.support_y))
    return selective.threshold_for_precision(torch.cat(conf), torch.cat(right), target)


# ----------------------------------------------------------------------------- pictures

def _mean_band(ax, xs: Sequence[float], accs: Sequence[Accuracy], color: str, label: str, style: str = "-") -> None:
    m = torch.tensor([100 * a.mean for a in accs])
    h = torch.tensor([100 * a.ci95 for a in accs])
    ax.plot(xs, m, style, marker="o", ms=3, color=color, label=label)
    ax.fill_between(xs, m - h, m + h, color=color, alpha=0.15)


def plot_pool(support_x: Tensor, pool_x: Tensor, pool_y: Tensor, classes: Sequence[str], title: str = "",
              per_row: int = 12) -> Figure:
    """The supports (one column per class, top) and the pool (below; distractors framed in orange)."""
    import matplotlib.pyplot as plt

    n_rows = 1 + math.ceil(len(pool_x) / per_row)
    fig, axes = plt.subplots(n_rows, per_row, figsize=(per_row * 0.75, n_rows * 0.85))
    for ax in axes.flat:
        ax.axis("off")
    k = len(support_x) // max(1, len(classes))
    for i in range(min(len(support_x), per_row)):
        ax = axes[0, i]
        ax.imshow(support_x[i].float().squeeze(0) / (255.0 if support_x.dtype == torch.uint8 else 1.0),
                  cmap="Greys", vmin=0, vmax=1)
        ax.set_title(classes[i // k].split("/")[-1][:12], fontsize=7)
    for j in range(len(pool_x)):
        ax = axes[1 + j // per_row, j % per_row]
        ax.imshow(pool_x[j].float().squeeze(0) / (255.0 if pool_x.dtype == torch.uint8 else 1.0),
                  cmap="Greys", vmin=0, vmax=1)
        if int(pool_y[j]) == NONE:
            ax.axis("on")
            ax.set_xticks([]); ax.set_yticks([])
            for s in ax.spines.values():
                s.set_color(COLORS[1]); s.set_linewidth(2.5)
    fig.suptitle(title or "A labelling problem", fontsize=10)
    fig.text(0.5, 0.01, "orange frame: a distractor (its class is in no support set; right answer: none of these)",
             ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig


def plot_accuracy_vs_m(results: dict[int, dict[str, dict[int, Accuracy]]], title: str = "") -> Figure:
    """Accuracy vs M per method; one panel per number of distractor classes H (``results[H]``)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 3.6), sharey=True, squeeze=False)
    for ax, (h, res) in zip(axes[0], results.items()):
        for j, (name, by_m) in enumerate(res.items()):
            ms = sorted(by_m)
            _mean_band(ax, ms, [by_m[m] for m in ms], COLORS[j], name)
        ax.set_xlabel("M, unlabelled items per class")
        ax.set_xticks(sorted(next(iter(res.values()))))
        ax.set_title(f"H = {h} distractor classes" if h else "no distractors")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy on the pool (%), mean ± 95%")
    axes[0, 0].legend(frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig





# ----------------------------------------------------------------------------- 4. self-training rounds

def split_heldout(pool: Pool, q_per_class: int) -> tuple[Pool, Tensor, Tensor]:
    """Take ``q_per_class`` items of each real class out of the pool: ``(pool, heldout_z, heldout_y)``."""
    keep = torch.ones(len(pool.pool_y), dtype=torch.bool)
    for n in range(pool.n_way):
        keep[(pool.pool_y == n).nonzero().flatten()[:q_per_class]] = False
    rest = Pool(pool.support_z, pool.support_y, pool.pool_z[keep], pool.pool_y[keep], pool.n_way, pool.k_shot,
                pool.classes, pool.distractor_classes, pool.support_ref,
                None if pool.pool_ref is None else pool.pool_ref[keep])
    return rest, pool.pool_z[~keep], pool.pool_y[~keep]


def self_training_study(embedded: ClassSet, settings: dict[str, dict], n_way: int, k_shot: int,
                        m_per_class: int, n_pools: int, rounds: int, z_per_class: int, temperature: float,
                        n_distractors: int = 0, q_heldout: int = 4, seed: int = 0) -> dict[str, dict]:
    """Per setting and round: precision and coverage of the accepted pseudo-labels, held-out accuracy.

    ``settings[name]`` holds ``self_training.self_train``'s keywords (``tau``, ``anchored``, ``radius``...).
    Each pool holds ``m_per_class`` items per class; ``q_heldout`` more per class are kept out of it and
    scored with each round's prototypes. The same pools serve every setting. A run that stops early
    (its selection stopped changing) keeps its last round's values for the later rounds.
    """
    from . import self_training

    pools = [split_heldout(p, q_heldout) for p in
             sample_pools(embedded, n_way, k_shot, m_per_class + q_heldout, n_pools, n_distractors, seed)]
    out = {}
    for name, kw in settings.items():
        prec = [[] for _ in range(rounds)]
        cov = [[] for _ in range(rounds)]
        held = [[] for _ in range(rounds + 1)]
        for pool, hz, hy in pools:
            res = self_training.self_train(pool.support_z, pool.support_y, pool.pool_z, n_way,
                                           z_per_class=z_per_class, rounds=rounds, temperature=temperature, **kw)
            metrics = self_training.round_metrics(res, pool.pool_y)
            protos = list(res.prototypes) + [res.final_prototypes]
            for r in range(rounds):
                m = metrics[min(r, len(metrics) - 1)]
                if not math.isnan(m["precision"]):
                    prec[r].append(m["precision"])
                cov[r].append(m["coverage"])
            for r in range(rounds + 1):
                c = protos[min(r, len(protos) - 1)]
                held[r].append((protonet_logits(hz, c).argmax(1) == hy).float().mean().item())
        out[name] = {"precision": [mean_ci95(v) if v else None for v in prec],
                     "coverage": [mean_ci95(v) for v in cov],
                     "heldout": [mean_ci95(v) for v in held]}
    return out


def plot_self_training(results: dict[int, dict[str, dict]], title: str = "") -> Figure:
    """Rows: with / without distractors; columns: precision, coverage, held-out accuracy per round."""
    import matplotlib.pyplot as plt

    cols = (("precision", "precision of accepted labels (%)"), ("coverage", "coverage (% of pool)"),
            ("heldout", "held-out accuracy (%)"))
    fig, axes = plt.subplots(len(results), 3, figsize=(13, 3.3 * len(results)), squeeze=False)
    for i, (h, res) in enumerate(results.items()):
        for j, (key, label) in enumerate(cols):
            ax = axes[i, j]
            for s, (name, r) in enumerate(res.items()):
                vals = r[key]
                xs = [x for x, v in enumerate(vals) if v is not None]
                start = 0 if key == "heldout" else 1
                _mean_band(ax, [x + start for x in xs], [vals[x] for x in xs], COLORS[s], name)
            ax.set_xlabel("round" if key != "heldout" else "round (0 = human labels only)")
            ax.set_ylabel(label)
            ax.set_title(("no distractors" if not h else f"H = {h} distractor classes") + ": "
                         + {"precision": "precision", "coverage": "coverage", "heldout": "held-out accuracy"}[key])
            ax.grid(alpha=0.3)
    axes[0, 0].legend(frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- 5. human effort

def nn_scorer(support_z: Tensor, support_y: Tensor, n_way: int, z: Tensor) -> Tensor:
    """1-nearest-neighbour logits: minus the squared distance to the closest labelled item of each class."""
    d = torch.cdist(z, support_z).pow(2)                                # (P, S)
    out = torch.full((z.shape[0], n_way), float("inf"), dtype=z.dtype)
    for n in range(n_way):
        members = support_y == n
        if members.any():
            out[:, n] = d[:, members].min(dim=1).values
    return -out


def linear_head_scorer(steps: int = 50) -> Callable[[Tensor, Tensor, int, Tensor], Tensor]:
    """Chapter 00's linear head on frozen features, refitted on the labelled items at every call."""
    from .baselines import fit_linear_head

    def scorer(support_z: Tensor, support_y: Tensor, n_way: int, z: Tensor) -> Tensor:
        W, b = fit_linear_head(support_z, support_y, n_way, steps)
        return torch.nn.functional.normalize(z.float(), dim=-1) @ W.T + b
    return scorer


def pretrained_baseline(data, device: torch.device | str = "cpu", steps: int | None = None) -> torch.nn.Module:
    """Chapter 00's baseline embedding: Conv-4 trained as a plain classifier of the meta-train classes (cached)."""
    from . import budget
    from .baselines import pretrain_embedding
    from .episodic import class_set_fingerprint
    from .nets import conv4
    from .training import load_or_train

    steps = budget.pick(quick=400, full=20000, smoke=3) if steps is None else steps
    batch = budget.pick(quick=64, full=256, smoke=32)
    config = {"steps": steps, "batch_size": batch, "lr": 2e-3, "train": class_set_fingerprint(data.train)}

    def fit() -> dict:
        net, _ = pretrain_embedding(data.train, steps, batch, 2e-3, device=device)
        return {"state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}

    net = conv4()
    net.load_state_dict(load_or_train("autolabel-pretrain", config, fit)["state"])
    return net.to(device).eval()


def _pixels(classes: ClassSet) -> ClassSet:
    x = [classes.examples(c).flatten(start_dim=1).float() / 255.0 for c in range(len(classes))]
    return ClassSet(torch.stack(x), list(classes.names), list(classes.alphabets), f"{classes.title} (pixels)")


def fit_pool_temperature(embedded: ClassSet, n_way: int, scorer=None, n_pools: int = 20, seed: int = 7) -> float:
    """kappa for a representation at ``n_way`` ways, fitted on 1-shot pools of ``embedded`` (meta-val) by
    the NLL of the scorer's logits (default: nearest prototype)."""
    logits, ys = [], []
    for p in sample_pools(embedded, n_way, 1, 5, n_pools, seed=seed):
        logits.append(pool_logits(p) if scorer is None else scorer(p.support_z, p.support_y, n_way, p.pool_z))
        ys.append(p.pool_y)
    return float(conf_mod.fit_temperature(torch.cat(logits), torch.cat(ys)))


HEAD_REFIT_EVERY = 10  # the linear head is refitted every 10 human answers (LBFGS each time: the slow part)


def human_effort(data, new_embedded: ClassSet, val_embedded: ClassSet, baseline_encoder: torch.nn.Module | None,
                 n_way: int = 20, per_class: int = 20, n_runs: int = 3, seed: int = 0,
                 orders: Sequence[str] = ("random", "least_margin", "entropy", "kcenter"),
                 self_training_orders: Sequence[str] = ("random", "least_margin")) -> dict:
    """Pool accuracy vs human clicks on pools of ``n_way`` new classes x ``per_class`` images.

    The first click per class is the K = 1 label that names it (the supports); every later click is a
    simulated human answer in the session's acquisition order. Accuracy and clicks count the whole
    pool of ``n_way * per_class`` images (the supports are right by construction). The same pools (the
    same images) serve every method: the meta-learned embedding with each order, with and without
    self-training, pixel nearest neighbour and chapter 00's pre-trained embedding with a linear head.
    """
    from . import labelling
    from .labelling_data import embed_classes

    reps: dict[str, tuple[ClassSet, ClassSet, Callable | None]] = {"meta": (new_embedded, val_embedded, None)}
    reps["pixels"] = (_pixels(data.new), _pixels(data.val), nn_scorer)
    if baseline_encoder is not None:
        reps["pre-trained"] = (embed_classes(baseline_encoder, data.new), embed_classes(baseline_encoder, data.val),
                               linear_head_scorer())
    retrain = {"meta": 1, "pixels": 1, "pre-trained": HEAD_REFIT_EVERY}
    methods = [(f"meta-learned, {o}", "meta", o, False) for o in orders]
    methods += [(f"meta-learned, {o} + self-training", "meta", o, True) for o in self_training_orders]
    methods += [("pixel nearest neighbour, least_margin", "pixels", "least_margin", False)]
    if baseline_encoder is not None:
        methods += [("pre-trained + linear head, least_margin", "pre-trained", "least_margin", False)]
    temps = {r: fit_pool_temperature(val, n_way, sc) for r, (_, val, sc) in reps.items()}
    total = n_way * per_class
    curves: dict[str, list[list[float]]] = {name: [] for name, *_ in methods}
    for run in range(n_runs):
        for name, rep, order, st in methods:
            emb, _, scorer = reps[rep]
            pool = sample_pool(emb, n_way, 1, per_class - 1, generator=torch.Generator().manual_seed(seed + run))
            sim = labelling.simulate(pool, order, self_training=st, temperature=temps[rep], seed=seed + run,
                                     scorer=scorer, retrain_every=retrain[rep])
            pool_n = sim["pool_size"]
            acc = [(n_way + a * pool_n) / total for a in sim["pool_accuracy"]]
            curves[name].append(acc + [1.0] * (pool_n + 1 - len(acc)))
    return {"curves": curves, "n_way": n_way, "per_class": per_class, "total": total, "runs": n_runs,
            "first_click": n_way, "temperatures": temps}


def _clicks(curve: Sequence[float], target: float, offset: int) -> int | None:
    for c, a in enumerate(curve):
        if a >= target - 1e-12:
            return c + offset
    return None


def effort_summary(effort: dict, targets: Sequence[float] = (0.95, 0.99)) -> dict[str, dict]:
    """Per method: clicks to reach each target pool accuracy (mean over runs), and labels saved."""
    out = {}
    for name, runs in effort["curves"].items():
        row = {}
        for t in targets:
            cl = [_clicks(c, t, effort["first_click"]) for c in runs]
            if any(c is None for c in cl):
                row[t] = None
            else:
                m = mean_ci95([float(c) for c in cl]) if len(cl) > 1 else Accuracy(float(cl[0]), float("nan"), 1)
                row[t] = {"clicks": m, "saved": 1 - m.mean / effort["total"]}
        out[name] = row
    return out


def effort_table(effort: dict, targets: Sequence[float] = (0.95, 0.99)) -> str:
    """A markdown table of :func:`effort_summary` (clicks as mean ± 95% interval over runs)."""
    summ = effort_summary(effort, targets)
    head = "| method | " + " | ".join(f"clicks to {100 * t:.0f}% | labels saved" for t in targets) + " |"
    lines = [head, "|---|" + "---|---|" * len(targets)]
    for name, row in summ.items():
        cells = []
        for t in targets:
            r = row[t]
            if r is None:
                cells += ["not reached", "-"]
            else:
                c = r["clicks"]
                ci = "" if math.isnan(c.ci95) else f" ± {c.ci95:.0f}"
                cells += [f"{c.mean:.0f}{ci}", f"{100 * r['saved']:.0f}%"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline(effort: dict, target: float = 0.99) -> str:
    """The chapter's one-sentence result, computed from :func:`human_effort`'s curves."""
    summ = effort_summary(effort, (target,))
    reached = {n: r[target] for n, r in summ.items() if r[target] is not None}
    total = effort["total"]
    if not reached:
        return (f"No method reached {100 * target:.0f}% accuracy on a pool of {total} images before every image "
                "was labelled by hand.")
    best = min(reached, key=lambda n: reached[n]["clicks"].mean)
    c = reached[best]["clicks"].mean
    others = [n for n in summ if not n.startswith("meta-learned")]
    tail = []
    for n in others:
        r = summ[n][target]
        tail.append(f"{n} {'needs ' + format(r['clicks'].mean, '.0f') if r else 'does not reach it in'} clicks"
                    if r else f"{n} never reaches it before the pool is labelled by hand")
    return (f"Labelling {effort['n_way']} new classes x {effort['per_class']} images ({total} images) to "
            f"{100 * target:.0f}% accuracy took {c:.0f} human clicks with {best} "
            f"({100 * (1 - c / total):.0f}% of the labels saved, mean of {effort['runs']} runs); "
            + "; ".join(tail) + ".")


def _effort_style(name: str) -> tuple[str, str]:
    """Colour by acquisition order (self-training dashed in its order's colour); baselines apart."""
    if name.startswith("pixel"):
        return COLORS[4], "-"
    if name.startswith("pre-trained"):
        return COLORS[7], "-"
    order = ("random", "least_margin", "entropy", "kcenter")
    j = next((i for i, o in enumerate(order) if f", {o}" in name), 5)
    return COLORS[j if j < 4 else 5], "--" if "self-training" in name else "-"


def plot_human_effort(effort: dict, title: str = "") -> Figure:
    """Pool accuracy vs clicks per method (mean over runs, band = min..max over runs); right: a zoom."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    for ax, zoom in zip(axes, (False, True)):
        for name, runs in effort["curves"].items():
            a = 100 * torch.tensor(runs)
            xs = torch.arange(a.shape[1]) + effort["first_click"]
            color, style = _effort_style(name)
            ax.plot(xs, a.mean(0), style, color=color, label=name, lw=1.5)
            if a.shape[0] > 1:
                ax.fill_between(xs, a.min(0).values, a.max(0).values, color=color, alpha=0.12)
        for t in (95, 99):
            ax.axhline(t, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("human clicks (the first one per class names it)")
        ax.set_ylabel("pool accuracy (%)")
        ax.grid(alpha=0.3)
        if zoom:
            ax.set_xlim(effort["first_click"], min(effort["total"], 8 * effort["first_click"]))
            ax.set_ylim(90, 100.3)
            ax.set_title("zoom: the first clicks, accuracy above 90%")
        else:
            ax.set_ylim(max(0, ax.get_ylim()[0]), 100.5)
            ax.set_title("the whole pool")
            ax.legend(frameon=False, fontsize=7, loc="lower right")
    fig.suptitle(title or "Accuracy of the labelled pool vs human effort", fontsize=11)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- audit and the tool

def audit_demo(embedded: ClassSet, n_way: int = 20, per_class: int = 20, flip: float = 0.05,
               temperature: float = 1.0, seed: int = 0) -> dict:
    """Flip a share of a labelled pool's labels at random; how many flips does cleanlab find?

    Probabilities are out-of-sample (leave-one-out prototypes, :func:`label_audit.loo_probabilities`).
    """
    from . import label_audit

    g = torch.Generator().manual_seed(seed)
    p = sample_pool(embedded, n_way, 1, per_class - 1, generator=g)
    z, y = torch.cat([p.support_z, p.pool_z]), torch.cat([p.support_y, p.pool_y])
    n_flip = max(1, round(flip * len(y)))
    idx = torch.randperm(len(y), generator=g)[:n_flip]
    noisy = y.clone()
    noisy[idx] = (y[idx] + torch.randint(1, n_way, (n_flip,), generator=g)) % n_way
    flagged = label_audit.find_label_issues(z, noisy, n_way, temperature)
    hits = len(set(flagged.tolist()) & set(idx.tolist()))
    return {"flipped": n_flip, "flagged": len(flagged), "hits": hits,
            "precision": hits / len(flagged) if len(flagged) else float("nan"), "recall": hits / n_flip}


def write_demo_folder(folder, images: ClassSet, n_classes: int = 10, k_shot: int = 1, n_unlabelled: int = 10,
                      n_distractor_classes: int = 0, seed: int = 0) -> dict[str, str]:
    """Write a ``course-autolabel`` input folder from a class set of images; return the hidden truth.

    ``labelled/<class>/*.png`` (``k_shot`` each) and ``unlabelled/img_XXXX.png`` (``n_unlabelled`` per
    class, shuffled, black ink on white as a scan would be). The truth (path -> class, or "" for a
    distractor) is also written to ``truth.json`` beside the folder, not inside it.
    """
    import json
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(images), generator=g)[:n_classes + n_distractor_classes].tolist()
    items: list[tuple[Tensor, str]] = []
    for i, c in enumerate(chosen):
        ex = images.examples(c)
        pick = torch.randperm(ex.shape[0], generator=g)
        name = images.names[c].replace("/", "_").replace(" ", "_")
        if i < n_classes:
            (folder / "labelled" / name).mkdir(parents=True, exist_ok=True)
            for j in pick[:k_shot].tolist():
                _save_png(ex[j], folder / "labelled" / name / f"{j:02d}.png", Image)
            items += [(ex[j], name) for j in pick[k_shot:k_shot + n_unlabelled].tolist()]
        else:
            items += [(ex[j], "") for j in pick[:n_unlabelled].tolist()]
    (folder / "unlabelled").mkdir(parents=True, exist_ok=True)
    truth = {}
    for t, i in enumerate(torch.randperm(len(items), generator=g).tolist()):
        rel = f"unlabelled/img_{t:04d}.png"
        _save_png(items[i][0], folder / rel, Image)
        truth[rel] = items[i][1]
    (folder.parent / "truth.json").write_text(json.dumps(truth, indent=0))
    return truth


def _save_png(x: Tensor, path, Image) -> None:
    a = x.squeeze(0).float()
    a = a / 255.0 if x.dtype == torch.uint8 else a
    Image.fromarray((255 * (1 - a.clamp(0, 1))).round().to(torch.uint8).numpy(), mode="L").save(path)


def demo_truth(folder) -> dict[str, str]:
    """The hidden truth :func:`write_demo_folder` wrote beside ``folder``."""
    import json
    from pathlib import Path

    return json.loads((Path(folder).parent / "truth.json").read_text())
