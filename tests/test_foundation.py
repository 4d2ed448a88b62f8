"""Devices, seeds, budgets, cache keys, the training loop and the load-or-train cache."""
import pytest
import torch

from course_utils import budget, cache, devices, training
from conftest import cuda


def test_pick_device_default_and_override(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert devices.pick_device().type == expected
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert devices.pick_device() == torch.device("cpu")
    assert "cpu" in devices.describe_device(torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")
def test_asking_for_missing_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        devices.pick_device()


@cuda
@pytest.mark.cuda
def test_cuda_device_is_picked_and_usable(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    d = devices.pick_device()
    assert d.type == "cuda" and (torch.ones(2, device=d) * 2).sum().item() == 4


def test_seed_everything_repeats():
    g1 = devices.seed_everything(5)
    a = torch.rand(3), torch.rand(3, generator=g1)
    g2 = devices.seed_everything(5)
    b = torch.rand(3), torch.rand(3, generator=g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError):
        devices.seed_everything("5")


def test_budget_pick(monkeypatch):
    assert budget.current() == "quick" and budget.pick(1, 2, 3) == 1
    monkeypatch.setenv("COURSE_BUDGET", "full")
    assert budget.pick(1, 2, 3) == 2 and budget.pick(1) == 1
    monkeypatch.setenv("COURSE_BUDGET", "smoke")
    assert budget.pick(1, 2, 3) == 3
    monkeypatch.setenv("COURSE_BUDGET", "huge")
    with pytest.raises(ValueError, match="smoke, quick, full"):
        budget.current()


def test_config_key_is_order_free_and_sensitive():
    assert cache.config_key({"a": 1, "b": 2}) == cache.config_key({"b": 2, "a": 1})
    assert cache.config_key({"a": 1}) != cache.config_key({"a": 2})


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir("x") == tmp_path / "c" / "x" and (tmp_path / "c" / "x").is_dir()


def test_train_loop_logs_and_validates():
    w = torch.tensor(5.0, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)

    def step(i):
        opt.zero_grad()
        loss = w ** 2
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    hist = training.train_loop(step, 30, validate=lambda: {"w": w.item()}, every=10)
    assert len(hist.values["loss"]) == 30 and hist.steps["w"] == [9, 19, 29]
    assert hist.last("loss") < hist.values["loss"][0]
    assert training.History.from_dict(hist.as_dict()).values == hist.values
    with pytest.raises(ValueError):
        training.train_loop(step, 0)


def test_train_loop_stops_at_its_time_budget(monkeypatch):
    clock = iter(range(1000))                      # a fake clock: each call is one second later
    monkeypatch.setattr(training.time, "perf_counter", lambda: float(next(clock)))
    calls = []
    hist = training.train_loop(lambda i: calls.append(i) or {"loss": 1.0}, 100, max_seconds=5,
                               validate=lambda: {"v": 0.0}, every=50)
    assert calls == [0, 1, 2, 3, 4] and len(hist.values["loss"]) == 5
    assert hist.steps["v"] == [4]                  # validated once more where it stopped
    assert len(training.train_loop(lambda i: {"loss": 1.0}, 3, max_seconds=1e9).values["loss"]) == 3
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="max_seconds"):
            training.train_loop(lambda i: {}, 3, max_seconds=bad)


def test_load_or_train_caches_by_config(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    calls = []

    def train():
        calls.append(1)
        return {"w": torch.tensor([len(calls)])}

    a = training.load_or_train("demo", {"steps": 3}, train)
    b = training.load_or_train("demo", {"steps": 3}, train)
    c = training.load_or_train("demo", {"steps": 4}, train)
    assert len(calls) == 2 and torch.equal(a["w"], b["w"]) and not torch.equal(a["w"], c["w"])
    for f in (tmp_path / "runs").glob("demo-*.pt"):
        f.write_bytes(b"garbage")
    training.load_or_train("demo", {"steps": 3}, train)
    assert len(calls) == 3
    monkeypatch.setenv("COURSE_RETRAIN", "1")
    training.load_or_train("demo", {"steps": 3}, train)
    assert len(calls) == 4


def test_load_or_train_retrains_when_the_students_code_changes(monkeypatch, tmp_path, capsys):
    from course_utils import checks
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    checks.reset()
    calls = []
    train = lambda: calls.append(1) or len(calls)  # noqa: E731
    training.load_or_train("demo", {"steps": 1}, train)
    training.load_or_train("demo", {"steps": 1}, train)
    assert len(calls) == 1 and "Loaded 'demo' from the cache" in capsys.readouterr().out
    checks.run_check("9.9", "id", lambda x: x, lambda x: x, lambda fn: None)  # now the student's own
    training.load_or_train("demo", {"steps": 1}, train)
    assert len(calls) == 2
    checks.reset()
