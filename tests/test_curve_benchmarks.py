"""benchmarks/first_order_curves.py and reptile_curves.py: they run, report every variant, and the
port of the paper's Reptile behaves as the paper's code does."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import toy_classes
from course_utils.datasets import FewShotData

ROOT = Path(__file__).resolve().parents[1]


def load(name, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, mod)
    spec.loader.exec_module(mod)
    data = FewShotData(toy_classes(20, side=28, title="train"), toy_classes(6, side=28, title="val"),
                       toy_classes(8, side=28, title="test"), "glyphs", "toy data")
    monkeypatch.setattr(mod, "few_shot_data", lambda *a: data)
    return mod


def test_first_order_curves_runs_every_variant_on_the_same_checkpoints(monkeypatch, tmp_path):
    mod = load("first_order_curves", monkeypatch)
    out = tmp_path / "fo.json"
    text = mod.main(["--iters", "2", "--every", "1", "--episodes", "2", "--hidden", "4", "--meta-batch", "2",
                     "--out", str(out)])
    data = json.loads(out.read_text())
    assert list(data["runs"]) == list(mod.VARIANTS)
    for name, run in data["runs"].items():
        assert [c["iter"] for c in run["curve"]] == [0, 1, 2], name
        assert f"| {name} |" in text
    assert out.with_suffix(".png").stat().st_size > 0
    # two half-runs merge into the same report
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    names = list(mod.VARIANTS)
    for path, only in ((a, names[:1]), (b, names[1:2])):
        mod.main(["--iters", "1", "--every", "1", "--episodes", "2", "--hidden", "4", "--meta-batch", "2",
                  "--out", str(path), "--only", *only])
    merged = mod.main(["--report", str(a), str(b), "--out", str(tmp_path / "m.json"), "--iters", "1"])
    assert f"| {names[0]} |" in merged and f"| {names[1]} |" in merged


def test_port_network_has_the_paper_s_shapes_and_initialisation(monkeypatch):
    mod = load("reptile_curves", monkeypatch)
    net = mod.port_net(5, 8)
    sizes, x = [], torch.zeros(2, 1, 28, 28)
    for m in net:
        x = m(x)
        if isinstance(m, mod.SameConv):
            sizes.append(x.shape[-1])
    assert sizes == [14, 7, 4, 2]                       # TensorFlow "same", stride 2
    assert x.shape == (2, 5)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(b.eps == 1e-3 and not b.track_running_stats for b in bns)
    assert all(m.bias.abs().sum() == 0 for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def test_port_carries_adam_state_in_training_and_restores_everything_after_a_test_task(monkeypatch):
    mod = load("reptile_curves", monkeypatch)
    torch.manual_seed(0)
    learner = mod.PortReptile(mod.port_net(5, 4), 1e-3, 2, 5, test_steps=3, test_batch=5, seed=0)
    x, y = torch.rand(2, 10, 1, 28, 28), torch.arange(5).repeat(2).repeat(2, 1)
    learner.meta_step(x, y, 1.0)
    state = learner.opt.state_dict()
    steps = [s["step"].item() for s in state["state"].values()]
    assert steps and all(s == 4 for s in steps)          # 2 tasks x 2 steps, one Adam in sequence
    weights = [p.detach().clone() for p in learner.net.parameters()]
    from course_utils.episodes import Episode
    ep = Episode(x[0, :5], y[0, :5], x[0, 5:], y[0, 5:], 5, 1, 1)
    learner.classify(ep)
    assert all(torch.equal(a, b) for a, b in zip(weights, learner.net.parameters()))
    assert [s["step"].item() for s in learner.opt.state_dict()["state"].values()] == steps


def test_symmetric_head_wrapper_changes_only_the_test_and_puts_the_head_back(monkeypatch):
    mod = load("reptile_curves", monkeypatch)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5))
    before = net[0].weight.detach().clone()
    seen = []
    mod.symmetric_head(net)(lambda ep: seen.append(net[0].weight.detach().clone()))(None)
    assert torch.allclose(seen[0], before.mean(0, keepdim=True).expand_as(before))
    assert torch.equal(net[0].weight, before)


def test_reptile_curves_runs_every_variant_and_reports_the_end_rows(monkeypatch, tmp_path):
    mod = load("reptile_curves", monkeypatch)
    out = tmp_path / "rc.json"
    text = mod.main(["--iters", "1", "--every", "1", "--episodes", "2", "--final-episodes", "2", "--hidden", "4",
                     "--out", str(out)])
    data = json.loads(out.read_text())
    assert list(data["runs"]) == mod.ORDER
    for name, run in data["runs"].items():
        assert {"final", "symmetric head", "head norm", "head label-specific norm"} <= set(run["extra"]), name
        e = run["extra"]
        assert abs(e["head norm"] ** 2 - e["head shared row norm"] ** 2 - e["head label-specific norm"] ** 2) < 1e-4
        assert ("paper protocol (1 query per class)" in run["extra"]) == name.startswith("port")
        assert f"| {name} |" in text


def test_in_context_regression_reports_all_three_settings(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("in_context_regression",
                                                  ROOT / "benchmarks" / "in_context_regression.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "in_context_regression", mod)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "OUT", tmp_path)
    assert mod.main(["--d", "2", "--k", "3", "--seconds", "0.3", "--prompts", "20"]) == 0
    result = json.loads((tmp_path / "in_context_regression.json").read_text())
    runs = result["runs"]
    assert list(runs) == ["in distribution", "x scaled by 2", "more examples than trained on (k = 6)"]
    assert len(runs["in distribution"]["least squares"]["mean"]) == 3
    assert len(runs["more examples than trained on (k = 6)"]["least squares"]["mean"]) == 6
    # least squares is exact once it has seen d = 2 examples, in every setting
    for curves in runs.values():
        assert max(curves["least squares"]["mean"][2:]) < 1e-6
    text = (tmp_path / "in_context_regression.md").read_text()
    assert "**more examples than trained on (k = 6)**" in text and "| transformer |" in text
    assert (tmp_path / "in_context_regression.png").exists()


def test_notebook_times_merge_replaces_named_rows_keeps_the_rest_and_says_when(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("notebooks", ROOT / "benchmarks" / "notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    table = ("# Notebook times\n\nintro line\n\n| notebook | wall s | CPU s | verdict |\n|---|---|---|---|\n"
             "| 00_a.ipynb | 40 | 39 | ok |\n| 01_b.ipynb | 50 | 49 | ok |\n")
    once = mod.merge(table, [("01_b.ipynb", 61.2, 60.0, "ok"), ("09_c.ipynb", 99.0, 98.0, "ok")], "box, load 0.1")
    rows = [l for l in once.splitlines() if l.startswith("| 0")]
    assert rows == ["| 00_a.ipynb | 40 | 39 | ok |", "| 01_b.ipynb | 61 | 60 | ok |", "| 09_c.ipynb | 99 | 98 | ok |"]
    assert "intro line" in once and "box, load 0.1): 01_b.ipynb, 09_c.ipynb." in once
    twice = mod.merge(once, [("09_c.ipynb", 120.0, 118.0, "over budget")], "box2")
    assert "| 09_c.ipynb | 120 | 118 | over budget |" in twice and twice.count("Measured separately") == 2
    assert "01_b.ipynb, 09_c.ipynb" not in twice and "box2): 09_c.ipynb." in twice
