"""The notebooks: chapters are in sync with solutions and read right without a kernel; solutions run
with every check right; chapters run unfilled; and the student's validation command (`make check`)
passes a solved copy of every chapter (with a forced retrain and progress bars on) and fails an
unfilled and a wrongly filled one, naming the exercise.

Tests assert correctness, never speed: each notebook's wall and CPU seconds are recorded in
.pytest_cache/notebook_times.json; the 3-minute budget is measured by `make bench-notebooks`."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from course_utils import exercises, run_notebooks

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted(p.name for p in (ROOT / "solutions").glob("*.ipynb"))
CHAPTERS = [n for n in SOLUTIONS if n[:2].isdigit()]
TIMES = ROOT / ".pytest_cache" / "notebook_times.json"

# One wrong answer per chapter, as a student might write it: (text in the solution, replacement,
# a phrase the check's message must contain). Each is inside one exercise's solution region.
WRONG = {
    "00_few_shot_tasks.ipynb": ("1.96 * a.std()", "2 * a.std()", "z = 2 instead of 1.96"),
    "01_contrastive_siamese.ipynb": ("return ((z1 - z2) ** 2).sum(dim=-1).add(1e-12).sqrt()",
                                     "return ((z1 - z2) ** 2).sum(dim=-1).sqrt() + 1e-12",
                                     "The eps goes under the root, not after it"),
    "02_matching_prototypical.ipynb": ("return torch.softmax(scale * (f @ g.T), dim=1)",
                                       "return torch.softmax(scale * (f @ g.T), dim=0)",
                                       "the softmax runs over the queries (dim=0)"),
    "03_maml.ipynb": ("    return dict(zip(adapted, torch.autograd.grad(loss, list(adapted.values()))))",
                      "    return {name: (params[name] - p).detach() for name, p in adapted.items()}",
                      "Reptile's direction theta - theta'"),
    "04_meta_lstm.ipynb": ("return torch.stack(losses).mean()", "return torch.stack(losses).sum()",
                           "task losses are summed (mean vs sum)"),
    "05_reptile.ipynb": ("    return {k: theta[k] + epsilon * sum(w[k] - theta[k] for w in adapted) / B for k in theta}",
                         "    return {k: epsilon * sum(w[k] for w in adapted) / B for k in theta}", "theta is forgotten"),
    "06_leo.ipynb": ("(grad_z,) = torch.autograd.grad(loss, z, create_graph=create_graph)",
                     "loss.backward(); grad_z = z.grad", "your function calls .backward()"),
    "07_autolabel.ipynb": ("p = torch.softmax(logits / temperature, dim=1)",
                           "p = torch.softmax(logits / temperature, dim=0)", "the softmax runs over the items (dim=0)"),
    "08_black_box.ipynb": ("late = torch.cat([torch.zeros_like(e[:1]), e[:-1]])", "late = e",
                           "the current label is in the input"),
    "09_few_shot_text.ipynb": ('x[i, zlib.crc32(s[j:j + n].encode("utf-8")) % n_buckets] += 1',
                               'x[i, hash(s[j:j + n]) % n_buckets] += 1', "salted per process"),
    "10_few_shot_speech.ipynb": ("p_n = n.pow(2).mean(dim=-1, keepdim=True)", "p_n = noise.pow(2).mean(dim=-1, keepdim=True)",
                                 "measured on the whole noise"),
}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_nbval(path: Path, **env: str) -> tuple[subprocess.CompletedProcess, float, float]:
    """nbval on one notebook in a fresh process; returns (process, wall s, CPU s incl. the kernel)."""
    full_env = {**os.environ, "COURSE_QUIET": "1", "PYTHONWARNINGS": "ignore", **env}
    full_env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbval-lax", "-o", "addopts=",
           "-q", str(path)]
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=1800)
    return proc, time.perf_counter() - t0, _children_cpu() - c0


def _record(name: str, wall: float, cpu: float) -> None:
    TIMES.parent.mkdir(exist_ok=True)
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times[name] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
    TIMES.write_text(json.dumps(times, indent=1, sort_keys=True))


@pytest.fixture(scope="session")
def warm_data():
    """Build the data caches once, so that notebook timings measure the notebooks themselves."""
    from course_utils.datasets import few_shot_data
    from course_utils import omniglot
    few_shot_data("glyphs")
    if omniglot.available():
        few_shot_data("omniglot")


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


@pytest.mark.parametrize("folder", ["solutions", "chapters"])
def test_notebooks_read_right_without_a_kernel(folder):
    """No widget output (it shows as a frozen '0%|' bar or an 'interactive(children=...' repr in
    JupyterLab, which does not restore widget state), and the kernelspec ipykernel installs."""
    for name in SOLUTIONS:
        nb = nbformat.read(ROOT / folder / name, as_version=4)
        assert run_notebooks.problems(nb) == [], f"{folder}/{name}: run `make solutions SOL=solutions/{name}`"


def test_every_chapter_ends_with_navigation_to_the_course_map():
    for name in CHAPTERS:
        nb = nbformat.read(ROOT / "solutions" / name, as_version=4)
        tail = "".join(c.source for c in nb.cells[-3:] if c.cell_type == "markdown")
        assert "(index.ipynb)" in tail, f"{name}: the last cells should link to the course map (index.ipynb)"


@pytest.mark.notebook
@pytest.mark.parametrize("name", SOLUTIONS)
def test_solution_runs_with_all_checks_right(name, warm_data):
    proc, wall, cpu = run_nbval(ROOT / "solutions" / name, COURSE_STRICT="1")
    _record(f"solutions/{name}", wall, cpu)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.mark.notebook
@pytest.mark.parametrize("name", SOLUTIONS)
def test_chapter_runs_unfilled_to_the_end(name, warm_data):
    proc, wall, cpu = run_nbval(ROOT / "chapters" / name, COURSE_BUDGET="smoke")
    _record(f"chapters/{name} (smoke)", wall, cpu)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def student_copy(folder: Path, name: str, wrong: tuple[str, str, str] | None = None) -> Path:
    """A chapter as a student who solved everything would have it (optionally one exercise wrong)."""
    nb = nbformat.read(ROOT / "solutions" / name, as_version=4)
    replaced = False
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if wrong and not replaced and exercises.BEGIN in cell.source:
                head, region = cell.source.split(exercises.BEGIN, 1)
                region, tail = region.split(exercises.END, 1)
                if wrong[0] in region:  # only inside the student's part, never a docstring above it
                    region = region.replace(wrong[0], wrong[1], 1)
                    cell.source = head + exercises.BEGIN + region + exercises.END + tail
                    replaced = True
    assert wrong is None or replaced, f"{name}: {wrong[0]!r} is in no exercise cell"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


def make_check(nb: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COURSE_BUDGET": "smoke", **env}
    full_env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(["make", "-s", "check", f"NB={nb}"], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=1200)


@pytest.mark.notebook
@pytest.mark.parametrize("name", CHAPTERS)
def test_make_check_passes_a_solved_chapter_with_progress_bars_and_a_retrain(name, tmp_path, warm_data):
    solved = make_check(student_copy(tmp_path, name), COURSE_RETRAIN="1", COURSE_QUIET="0")
    assert solved.returncode == 0, solved.stdout[-4000:]


@pytest.mark.notebook
@pytest.mark.parametrize("name", CHAPTERS)
def test_make_check_fails_an_unfilled_chapter_naming_the_exercise(name, warm_data):
    unfilled = make_check(ROOT / "chapters" / name, COURSE_QUIET="1")
    assert unfilled.returncode != 0
    number = name[:2].lstrip("0") or "0"
    assert f"Exercise {number}.1 (" in unfilled.stdout and "is not attempted yet" in unfilled.stdout, \
        unfilled.stdout[-3000:]
    assert "what to fix (make check)" in unfilled.stdout


@pytest.mark.notebook
@pytest.mark.parametrize("name", sorted(WRONG))
def test_make_check_fails_a_wrong_answer_naming_the_mistake(name, tmp_path, warm_data):
    wrong = make_check(student_copy(tmp_path, name, WRONG[name]), COURSE_QUIET="1")
    assert wrong.returncode != 0
    assert WRONG[name][2] in wrong.stdout and " is wrong: see its check cell in the section" in wrong.stdout, \
        wrong.stdout[-3000:]
