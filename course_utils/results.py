"""The course's cross-method comparison, read from what ``benchmarks/compare_all.py`` wrote.

The landing page (``chapters/index.ipynb``) shows it twice: as a committed picture and table that
need no kernel (``benchmarks/readme_results.py`` writes them from the reports), and live, drawn
from the same JSON files by :func:`comparison_figure`. Nothing in either is typed in.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .evaluation import Accuracy
from .plots import plot_method_comparison

__all__ = ["REPORTS", "load_comparison", "comparison_figure", "comparison_lines"]

REPORTS = Path(__file__).resolve().parents[1] / "benchmarks" / "out"


def load_comparison(folder: Path | str = REPORTS) -> list[dict[str, Any]]:
    """The comparison runs (one per data source), or [] if none was measured yet."""
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("compare_all_*.json"))]


def comparison_figure(runs: list[dict[str, Any]]) -> Figure:
    """One panel per data source: every method's accuracy with its 95% interval, chance marked."""
    if not runs:
        raise ValueError("No comparison measured yet: run `python benchmarks/compare_all.py` from the course folder.")
    columns = {f"{r['source']} ({r['test_classes']} test classes)":
               {name: Accuracy(row["mean"], row["ci95"], row["n"]) for name, row in r["rows"].items()}
               for r in runs}
    return plot_method_comparison(columns, n_way=5,
                                  title=f"5-way 1-shot, {runs[0]['seconds']:g} s of training per method")


def comparison_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The table as text lines: per source, each method's accuracy, interval and training steps."""
    lines = []
    for r in runs:
        lines.append(f"{r['source']}: {r['episodes']} test episodes, Conv-4 with {r['hidden']} channels, "
                     f"{r['seconds']:g} s of training each, measured {r['date']} on {r['device']}:")
        lines += [f"  {name:34s} {100 * row['mean']:5.1f}% ± {100 * row['ci95']:.1f}   ({row['steps']})"
                  for name, row in r["rows"].items()]
        lines.append("")
    return lines
