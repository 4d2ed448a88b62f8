"""Generate the student chapters from the solution notebooks.

``solutions/`` is the source of truth. In a code cell, the student's part sits
between the exact lines ``### BEGIN SOLUTION`` and ``### END SOLUTION``
(nbgrader's markers), inside a function body, and the cell names the exercise
in a comment line ``# Exercise 0.1: sample an episode``. The generator replaces
each region by a stub that raises ``NotImplementedError("Exercise 0.1: ...")``
and clears every output, so a chapter runs top to bottom unfilled.

Command line::

    python -m course_utils.exercises solutions chapters          # write chapters/
    python -m course_utils.exercises solutions chapters --check  # exit 1 if out of date
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

__all__ = ["MarkerError", "stub_source", "make_chapter", "generate", "out_of_date", "main"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_TITLE = re.compile(r"#\s*Exercise\s+(\d+\.\d+)\s*:\s*(.+?)\s*$")


class MarkerError(ValueError):
    """A solution cell whose exercise markers are malformed."""


def stub_source(source: str, where: str = "cell") -> str:
    """The cell's source with every solution region replaced by a ``NotImplementedError`` stub."""
    lines = source.split("\n")
    if not any(l.strip() in (BEGIN, END) for l in lines):
        return source
    titles = [m.groups() for m in map(_TITLE.search, lines) if m]
    if not titles:
        raise MarkerError(f"{where}: has {BEGIN} but no '# Exercise N.M: what to do' comment line; "
                          "add one so the stub can say which exercise it is.")
    number, text = titles[0]
    out, inside, indent = [], False, ""
    for i, line in enumerate(lines, 1):
        tag = line.strip()
        if tag == BEGIN:
            if inside:
                raise MarkerError(f"{where}, line {i}: {BEGIN} inside another solution region.")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            if not indent:
                raise MarkerError(f"{where}, line {i}: the solution region must sit inside a function "
                                  "body (indented), so that the chapter runs unfilled.")
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f'{indent}raise NotImplementedError("Exercise {number}: {text}")')
        elif tag == END:
            if not inside:
                raise MarkerError(f"{where}, line {i}: {END} without a {BEGIN} before it.")
            inside = False
        elif not inside:
            out.append(line)
        elif tag.startswith("###") and ("SOLUTION" in tag):
            raise MarkerError(f"{where}, line {i}: unknown marker {tag!r}; use exactly {BEGIN!r} / {END!r}.")
    if inside:
        raise MarkerError(f"{where}: {BEGIN} without a matching {END}.")
    return "\n".join(out)


def make_chapter(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The student version of a solution notebook: stubs in place of solutions, no outputs."""
    nb = nbformat.from_dict(solution)
    nb.nbformat, nb.nbformat_minor = 4, max(int(nb.get("nbformat_minor", 5)), 5)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source = stub_source(cell.source, f"{name}, cell {i}")
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        elif BEGIN in cell.source or END in cell.source:
            raise MarkerError(f"{name}, cell {i}: solution markers belong in code cells only.")
        if not cell.get("id"):
            cell["id"] = f"cell-{i}"  # stable ids keep regenerated chapters identical
    nb.metadata.pop("widgets", None)
    from .run_notebooks import KERNELSPEC
    nb.metadata["kernelspec"] = dict(KERNELSPEC)  # what ipykernel installs: opening it changes nothing
    return nb


def _render(solution_path: Path) -> str:
    nb = nbformat.read(solution_path, as_version=4)
    chapter = make_chapter(nb, solution_path.name)
    return nbformat.writes(chapter) + "\n"


def generate(solutions: Path | str, chapters: Path | str) -> list[Path]:
    """Write ``chapters/X.ipynb`` for every ``solutions/X.ipynb``; return the paths written."""
    solutions, chapters = Path(solutions), Path(chapters)
    chapters.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(solutions.glob("*.ipynb")):
        dst = chapters / src.name
        text = _render(src)
        if not dst.exists() or dst.read_text(encoding="utf-8") != text:
            dst.write_text(text, encoding="utf-8")
            written.append(dst)
    return written


def out_of_date(solutions: Path | str, chapters: Path | str) -> list[str]:
    """Names of chapters that are missing, stale, or have no solution behind them."""
    solutions, chapters = Path(solutions), Path(chapters)
    bad = []
    for src in sorted(solutions.glob("*.ipynb")):
        dst = chapters / src.name
        if not dst.exists() or dst.read_text(encoding="utf-8") != _render(src):
            bad.append(src.name)
    bad += sorted(p.name for p in chapters.glob("*.ipynb") if not (solutions / p.name).exists())
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate student chapters from solution notebooks.")
    ap.add_argument("solutions", nargs="?", default="solutions")
    ap.add_argument("chapters", nargs="?", default="chapters")
    ap.add_argument("--check", action="store_true", help="only report chapters that are out of date")
    args = ap.parse_args(argv)
    if args.check:
        bad = out_of_date(args.solutions, args.chapters)
        for name in bad:
            print(f"out of date: {name} (run `make chapters`)")
        return 1 if bad else 0
    for path in generate(args.solutions, args.chapters):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
