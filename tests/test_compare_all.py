"""benchmarks/compare_all.py: every method runs, on the very same test tasks, within its time budget."""
import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import toy_classes
from course_utils import training
from course_utils.datasets import FewShotData

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def compare(monkeypatch):
    spec = importlib.util.spec_from_file_location("compare_all", ROOT / "benchmarks" / "compare_all.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "compare_all", mod)   # dataclasses look their module up
    spec.loader.exec_module(mod)
    data = FewShotData(toy_classes(40, side=28, title="train"), toy_classes(10, side=28, title="val"),
                       toy_classes(12, side=28, title="test"), "glyphs", "toy data")
    monkeypatch.setattr(mod, "few_shot_data", lambda source: data)
    return mod


class TickingClock:
    """A stand-in for the ``time`` module whose clock advances one second per reading, so that a time
    budget is counted in clock readings, not in the machine's speed (the test holds on a busy laptop)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def test_every_method_runs_on_the_same_tasks(compare, tmp_path, monkeypatch):
    clock = TickingClock()
    monkeypatch.setattr(training, "time", clock)    # train_loop's max_seconds
    monkeypatch.setattr(compare, "time", clock)     # the budgets compare_all splits itself (LEO, Reptile)
    monkeypatch.setattr(compare, "MANY", 40)        # a method that ignores its budget runs 40 steps
    text = compare.main(["--source", "glyphs", "--seconds", "0.5", "--episodes", "4", "--hidden", "4",
                         "--out", str(tmp_path)])
    result = json.loads((tmp_path / "compare_all_glyphs.json").read_text())
    assert list(result["rows"]) == list(compare.METHODS)
    for name, row in result["rows"].items():
        assert 0 <= row["mean"] <= 1 and row["n"] == 4, name
        # a budget of 0.5 ticks buys one step per training loop; a method that ignores it runs 40
        counts = [int(n) for n in re.findall(r"(\d+) (?=batches|meta-batches|episodes|20-way|5-way)", row["steps"])]
        assert name == "pixel 1-NN" or counts, f"{name}: no step count in {row['steps']!r}"
        assert all(n <= 2 for n in counts), f"{name} ignored its time budget: {row['steps']}"
        assert f"| {name} |" in text
    assert (tmp_path / "compare_all.md").read_text() == text


def test_a_method_tested_on_other_tasks_is_refused(compare, tmp_path, monkeypatch):
    def fewer_classes(s):
        return compare.Trained(compare.baselines.pixel_nn_classify, s.data.test.subset(range(8)), "-", 0.0)
    monkeypatch.setattr(compare, "METHODS", {"cheat": ("00", fewer_classes)})
    with pytest.raises(RuntimeError, match="other tasks"):
        compare.main(["--source", "glyphs", "--episodes", "4", "--out", str(tmp_path)])


def test_task_fingerprint_tells_tasks_apart(compare):
    classes = toy_classes(12, side=8)
    fp = compare.task_fingerprint(classes, 5, seed=0)
    assert fp == compare.task_fingerprint(classes, 5, seed=0)
    assert fp != compare.task_fingerprint(classes, 5, seed=1)
    embedded = compare.ClassSet(torch.randn(12, 20, 3), classes.names, classes.alphabets, "features")
    assert compare.task_fingerprint(embedded, 5, seed=0) == fp   # same classes, same draws: same tasks


def test_report_without_results_says_what_to_run(compare, tmp_path):
    assert "run benchmarks/compare_all.py" in compare.report([])
    assert "No results yet" in compare.main(["--report", "--out", str(tmp_path)])   # trains nothing


def test_only_reruns_some_methods_and_keeps_the_others(compare, tmp_path):
    common = ["--source", "glyphs", "--seconds", "0.1", "--episodes", "4", "--hidden", "4", "--out", str(tmp_path)]
    compare.main(common + ["--only", "pixel", "Prototypical"])
    first = json.loads((tmp_path / "compare_all_glyphs.json").read_text())
    compare.main(common + ["--only", "Prototypical"])
    second = json.loads((tmp_path / "compare_all_glyphs.json").read_text())
    assert list(second["rows"]) == ["pixel 1-NN", "Prototypical Networks"]
    assert second["rows"]["pixel 1-NN"] == first["rows"]["pixel 1-NN"]
    assert "; then " in second["command"]
    compare.main(common[:-2] + ["--episodes", "6", "--out", str(tmp_path), "--only", "Prototypical"])
    third = json.loads((tmp_path / "compare_all_glyphs.json").read_text())  # other tasks: nothing kept
    assert list(third["rows"]) == ["Prototypical Networks"]
