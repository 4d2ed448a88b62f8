"""The two dependency lists agree, and the README keeps its two commands."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env_deps() -> list[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "- pip:")
    return [l.strip()[2:].strip() for l in lines[start + 1:] if l.strip().startswith("- ")]


def test_pyproject_and_environment_list_the_same_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(project) == sorted(_env_deps())


def test_core_packages_are_declared():
    deps = " ".join(_env_deps())
    for pkg in ("jupyterlab", "torch", "matplotlib", "ipywidgets", "numpy", "nbval"):
        assert re.search(rf"\b{pkg}\b", deps), pkg
    assert "torchvision" not in deps


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
