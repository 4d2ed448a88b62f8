"""Shared by the learning-curve benchmarks (first_order_curves.py, reptile_curves.py).

A *curve* is a list of checkpoints ``{"iter": i, "mean": m, "ci95": h, "seconds": s}``: test accuracy
(mean over the same seeded test episodes, 95% interval) after ``i`` meta-iterations, and the training
time spent so far. Variants of one benchmark are trained one after the other (or in separate processes
with ``--only``) and merged into one JSON file, one markdown table and one PNG figure.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from course_utils.evaluation import evaluate

Curve = list[dict]


def checkpoints(iters: int, every: int) -> list[int]:
    """0, every, 2 every, ..., iters (always ends at ``iters``)."""
    pts = list(range(0, iters + 1, every))
    return pts if pts[-1] == iters else pts + [iters]


def run_curve(step: Callable[[int], object], classify: Callable, test, iters: int, every: int,
              episodes: int, q_query: int, seed: int, device, desc: str, n_way: int = 5, k_shot: int = 1,
              at_end: Callable[[], dict] | None = None) -> dict:
    """Train with ``step(i)`` for ``iters`` meta-iterations, evaluating ``classify`` at the checkpoints on
    the same ``episodes`` seeded test episodes. ``at_end()`` may add extra rows after the last one."""
    curve: Curve = []
    train_s, done = 0.0, 0
    for target in checkpoints(iters, every):
        t0 = time.perf_counter()
        while done < target:
            step(done)
            done += 1
        train_s += time.perf_counter() - t0
        acc = evaluate(classify, test, n_way, k_shot, q_query, episodes, seed=seed, device=device,
                       desc=f"{desc} @ {target}")
        curve.append({"iter": target, "mean": acc.mean, "ci95": acc.ci95, "seconds": train_s})
        print(f"{desc:44s} iter {target:6d}  {acc}  ({train_s:.0f} s training)", flush=True)
    return {"curve": curve, "extra": at_end() if at_end else {}}


def merge_save(path: Path, meta: dict, results: dict[str, dict]) -> dict:
    """Add ``results`` (variant -> run_curve output) to the JSON at ``path`` when its ``meta`` matches."""
    old = json.loads(path.read_text()) if path.exists() else None
    if old and old.get("meta", {}).get("protocol") == meta["protocol"]:
        runs = {**old["runs"], **results}
        commands = old.get("commands", [])
        commands += [] if commands and commands[-1] == meta["command"] else [meta["command"]]
    else:
        runs, commands = dict(results), [meta["command"]]
    data = {"meta": meta, "commands": commands, "runs": runs}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return data


def merge_files(paths: list[Path], out: Path) -> dict:
    """One result file from several made with the same protocol (e.g. variants run side by side)."""
    parts = [json.loads(p.read_text()) for p in paths]
    if any(p["meta"]["protocol"] != parts[0]["meta"]["protocol"] for p in parts):
        raise SystemExit("the result files were made with different settings; not merging them.")
    data = {"meta": parts[0]["meta"], "commands": [c for p in parts for c in p["commands"]],
            "runs": {k: v for p in parts for k, v in p["runs"].items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    return data


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} thread(s), "
            f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")


def plot(data: dict, path: Path, title: str, order: list[str] | None = None) -> None:
    """Accuracy against meta-iterations, one line per variant, 95% intervals as bands."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from course_utils.plots import COLORS
    fig, ax = plt.subplots(figsize=(10, 4.5))
    names = [n for n in (order or []) if n in data["runs"]] + [n for n in data["runs"] if n not in (order or [])]
    styles = ["-", "--", "-.", ":"]
    for j, name in enumerate(names):
        c = data["runs"][name]["curve"]
        it = [p["iter"] for p in c]
        m = torch.tensor([100 * p["mean"] for p in c])
        h = torch.tensor([100 * p["ci95"] for p in c])
        colour = COLORS[j % len(COLORS)]
        ax.plot(it, m, styles[(j // len(COLORS)) % 4], color=colour, marker="o", ms=3, label=name)
        ax.fill_between(it, m - h, m + h, color=colour, alpha=0.15)
    ax.axhline(20, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("test accuracy (%), mean ± 95% interval")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(data: dict, order: list[str] | None = None) -> list[str]:
    """Markdown rows: each variant's accuracy at every checkpoint (columns: meta-iterations)."""
    names = [n for n in (order or []) if n in data["runs"]] + [n for n in data["runs"] if n not in (order or [])]
    iters = sorted({p["iter"] for n in names for p in data["runs"][n]["curve"]})
    lines = ["| variant | " + " | ".join(str(i) for i in iters) + " | training s |",
             "|---|" + "---|" * (len(iters) + 1)]
    for n in names:
        by = {p["iter"]: p for p in data["runs"][n]["curve"]}
        cells = [f"{100 * by[i]['mean']:.1f} ± {100 * by[i]['ci95']:.1f}" if i in by else "-" for i in iters]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {data['runs'][n]['curve'][-1]['seconds']:.0f} |")
    return lines


def save_report(lines: list[str], out: Path) -> str:
    """Write the markdown report beside ``out`` (``.md``), print it and return it."""
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    print(text)
    return text
