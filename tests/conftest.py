import os

import pytest
import torch

from course_utils.episodes import ClassSet

# Tests never show progress bars and never write into the user's real cache.
os.environ.setdefault("COURSE_QUIET", "1")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("COURSE_QUIET", "1")
    monkeypatch.delenv("COURSE_STRICT", raising=False)
    monkeypatch.delenv("COURSE_BUDGET", raising=False)
    if "COURSE_CACHE" not in os.environ:
        monkeypatch.setenv("COURSE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


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
