"""The notebooks: chapters are in sync with solutions, solutions run with every check right
within the time budget, chapters run unfilled, and the student's validation command
passes a solved chapter and fails an unfilled or a wrongly filled one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from course_utils import exercises

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted(p.name for p in (ROOT / "solutions").glob("*.ipynb"))
# The quick budget: each solution notebook top to bottom in 3 minutes on 2 CPU cores. On a machine
# shared with other jobs, COURSE_NOTEBOOK_BUDGET_S raises the limit (CI leaves it alone).
BUDGET_S = float(os.environ.get("COURSE_NOTEBOOK_BUDGET_S", 180))
TIMES = ROOT / ".pytest_cache" / "notebook_times.json"


def _nbval(path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    full_env = {**os.environ, "COURSE_QUIET": "1", "PYTHONWARNINGS": "ignore", **env}
    full_env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbval-lax", "-o", "addopts=",
           "-q", str(path)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=1200)
    return proc, time.perf_counter() - t0


def _record(name: str, seconds: float) -> None:
    TIMES.parent.mkdir(exist_ok=True)
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times[name] = round(seconds, 1)
    TIMES.write_text(json.dumps(times, indent=1, sort_keys=True))


@pytest.fixture(scope="session")
def warm_data():
    """Build the data caches once, so notebook timings measure the notebooks themselves."""
    from course_utils.datasets import few_shot_data
    from course_utils import omniglot
    t0 = time.perf_counter()
    few_shot_data("glyphs")
    if omniglot.available():
        few_shot_data("omniglot")
    return time.perf_counter() - t0


def test_every_solution_has_its_generated_chapter():
    assert SOLUTIONS, "no solution notebooks"
    assert exercises.out_of_date(ROOT / "solutions", ROOT / "chapters") == [], \
        "chapters/ differ from what solutions/ generate: run `make chapters`"


def test_chapters_hold_no_solutions_or_outputs():
    for name in SOLUTIONS:
        nb = nbformat.read(ROOT / "chapters" / name, as_version=4)
        for cell in nb.cells:
            assert exercises.BEGIN not in cell.source and exercises.END not in cell.source
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{name} has outputs"


@pytest.mark.notebook
@pytest.mark.parametrize("name", SOLUTIONS)
def test_solution_runs_with_all_checks_right_in_budget(name, warm_data):
    proc, seconds = _nbval(ROOT / "solutions" / name, COURSE_STRICT="1")
    _record(f"solutions/{name}", seconds)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert seconds < BUDGET_S + 15, f"{name} took {seconds:.0f} s; the quick budget is {BUDGET_S} s " \
                                    "(15 s allowed for starting the kernel)"


@pytest.mark.notebook
@pytest.mark.parametrize("name", SOLUTIONS)
def test_chapter_runs_unfilled_to_the_end(name, warm_data):
    proc, seconds = _nbval(ROOT / "chapters" / name, COURSE_BUDGET="smoke")
    _record(f"chapters/{name} (smoke)", seconds)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _student_copy(tmp_path: Path, wrong: str | None = None) -> Path:
    """Chapter 00 as a student who solved everything would have it (optionally one exercise wrong)."""
    nb = nbformat.read(ROOT / "solutions" / "00_few_shot_tasks.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if wrong and "# Exercise 0.3" in cell.source:
                cell.source = cell.source.replace("1.96 *", "1.645 *")
                assert "1.645" in cell.source
    path = tmp_path / "00_few_shot_tasks.ipynb"
    nbformat.write(nb, path)
    return path


def _make_check(nb: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COURSE_BUDGET": "smoke", "COURSE_QUIET": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(["make", "-s", "check", f"NB={nb}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.notebook
def test_student_validation_command(tmp_path, warm_data):
    (tmp_path / "solved").mkdir()
    solved = _make_check(_student_copy(tmp_path / "solved"))
    assert solved.returncode == 0, solved.stdout[-3000:]
    unfilled = _make_check(ROOT / "chapters" / "00_few_shot_tasks.ipynb")
    assert unfilled.returncode != 0 and "not attempted" in unfilled.stdout
    (tmp_path / "wrong").mkdir()
    wrong = _make_check(_student_copy(tmp_path / "wrong", wrong="0.3"))
    assert wrong.returncode != 0 and "1.645" in wrong.stdout
