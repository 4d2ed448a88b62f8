import os
import shutil
import tempfile

import pytest
import torch

from course_utils.episodes import ClassSet

_CACHE = None


def pytest_configure(config):
    """One fresh cache for the whole run (tests and the notebooks they start): nothing a test
    measures comes from an earlier run, and the user's own cache is never touched."""
    global _CACHE
    if os.environ.get("COURSE_TEST_CACHE"):
        os.environ["COURSE_CACHE"] = os.environ["COURSE_TEST_CACHE"]  # reuse, for quick local runs
    else:
        _CACHE = tempfile.mkdtemp(prefix="course-test-cache-")
        os.environ["COURSE_CACHE"] = _CACHE
    os.environ["COURSE_QUIET"] = "1"


def pytest_unconfigure(config):
    if _CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Unit tests use tiny tensors: one torch thread is faster (and far faster on a shared CPU).
    Notebook tests run in their own processes and keep torch's default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    from course_utils import checks
    checks.reset()  # every test starts with no exercise results
    monkeypatch.setenv("COURSE_QUIET", "1")
    for name in ("COURSE_STRICT", "COURSE_BUDGET", "COURSE_RETRAIN", "COURSE_DEVICE"):
        monkeypatch.delenv(name, raising=False)


def toy_classes(n_classes: int = 12, n_examples: int = 20, n_alphabets: int = 3, side: int = 8,
                title: str = "toy") -> ClassSet:
    """A small ClassSet whose examples encode their class and index (for exact checks)."""
    x = torch.zeros(n_classes, n_examples, 1, side, side, dtype=torch.uint8)
    for c in range(n_classes):
        for m in range(n_examples):
            x[c, m, 0, 0, 0] = c
            x[c, m, 0, 0, 1] = m
    names = [f"a{c % n_alphabets}/c{c:03d}" for c in range(n_classes)]
    return ClassSet(x, names, [n.split("/")[0] for n in names], title)


@pytest.fixture
def toy():
    return toy_classes()


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def status(number: str) -> str:
    """The latest check verdict of exercise ``number`` ('right', 'wrong', 'not attempted')."""
    from course_utils import checks
    return checks.results()[number].status


def message(number: str) -> str:
    """The diagnosis the latest check of exercise ``number`` printed."""
    from course_utils import checks
    return checks.results()[number].message


def stub(*args, **kwargs):
    """An exercise the student has not attempted."""
    raise NotImplementedError("Exercise N.M: not attempted")


def expect_stub_handling(check, number: str, ref, wrong, monkeypatch) -> None:
    """A check's verdicts on unattempted work: a stub (the chapter's own, and the shared one) is "not
    attempted" and answered with the reference; in strict mode a stub and a ``wrong`` answer raise."""
    import pytest
    from course_utils import checks

    def exercise_stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise {number}: write this function")
    assert check(exercise_stub) is ref
    assert status(number) == "not attempted"
    assert check(stub) is ref and status(number) == "not attempted"
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError):
        check(exercise_stub)
    with pytest.raises(checks.ExerciseError):
        check(wrong)
