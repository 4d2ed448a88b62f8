"""Copy the measured results into README.md (between its results markers); nothing is typed in.

    .venv/bin/python benchmarks/readme_results.py

Sources: the reports the benchmark scripts wrote (benchmarks/out/*.md), the notebook times among
them (benchmarks/notebooks.py, `make bench-notebooks`).
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
ORDER = ["notebooks", "threads", "compare_all", "baselines", "metric_omniglot", "maml_speed", "maml_speed_sine", "maml_sine",
         "first_order_curves", "maml_omniglot", "meta_lstm_omniglot", "reptile_curves", "reptile_omniglot", "leo_omniglot"]
SKIP = ("maml_speed_ideas",)   # prototypes' raw rounds: maml_speed_ideas.py's docstring sums them up


def _demote(md: str) -> str:
    """Report headings become level-4 headings inside the README's results section."""
    return re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 3, 6) + " ", md, flags=re.M)


def section() -> str:
    parts = []
    out = ROOT / "benchmarks" / "out"
    for name in ORDER + sorted(p.stem for p in out.glob("*.md") if p.stem not in ORDER):
        f = out / f"{name}.md"
        if f.exists() and not name.startswith(SKIP):
            text = re.sub(r"\]\(([\w.-]+\.png)\)", r"](benchmarks/out/\1)", f.read_text().strip())
            parts += [_demote(text), ""]
    return "\n".join(parts) if parts else "No benchmark has been run yet (`make bench`)."


LANDING = ROOT / "solutions" / "index.ipynb"
FIG_START, FIG_END = "<!-- comparison:start -->", "<!-- comparison:end -->"


def landing_page() -> None:
    """The landing page's comparison, visible without running it: a PNG and the report's table."""
    import matplotlib
    matplotlib.use("Agg")
    import nbformat
    from course_utils import exercises, results

    runs = results.load_comparison()
    if not runs:
        return
    png = ROOT / "benchmarks" / "out" / "compare_all.png"
    results.comparison_figure(runs).savefig(png, dpi=80)
    report = (ROOT / "benchmarks" / "out" / "compare_all.md").read_text()
    table = "\n".join(l for l in report.splitlines() if l.startswith("|"))
    block = (f"{FIG_START}\n![Every method's 5-way 1-shot accuracy with its 95% interval]"
             f"(../benchmarks/out/compare_all.png)\n\n{table}\n{FIG_END}")
    nb = nbformat.read(LANDING, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and FIG_START in cell.source:
            head, rest = cell.source.split(FIG_START, 1)
            cell.source = head + block + rest.split(FIG_END, 1)[1]
            nbformat.write(nb, LANDING)
            exercises.generate(ROOT / "solutions", ROOT / "chapters")
            print("landing page comparison updated.")
            return
    raise SystemExit(f"{LANDING} needs the markers {FIG_START} and {FIG_END} in a markdown cell.")


def main() -> None:
    landing_page()
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md needs the markers {START} and {END}.")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{section()}\n{END}{tail}")
    print("README results updated.")


if __name__ == "__main__":
    main()
