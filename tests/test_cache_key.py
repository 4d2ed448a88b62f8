"""A cached result is never answered for a different configuration: the key covers every setting
and every piece of code behind it (issue 2c). Each test changes one thing and sees a retrain."""
import json
import sys
import textwrap

import nbformat
import pytest
import torch

from course_utils import training

NOTEBOOK_CODE = '''
import torch
CFG = dict(alpha=0.5, eta=0.1, steps=3, hidden=[4, 4], seed=0, device="cpu")
def episode(x):
    return x * CFG["alpha"] + CFG["eta"]
def student_step(x):
    return x - 1
def train():
    torch.manual_seed(CFG["seed"])
    x = torch.ones(CFG["hidden"][0])
    for _ in range(CFG["steps"]):
        x = student_step(episode(x))
    return x
'''


def namespace(code: str = NOTEBOOK_CODE) -> dict:
    ns = {"__name__": "__main__"}
    exec(textwrap.dedent(code), ns)
    return ns


def key(ns: dict, config: dict | None = None) -> str:
    return json.dumps(training.cache_key("run", config or {}, ns["train"]), sort_keys=True, default=str)


def test_same_code_and_settings_same_key():
    assert key(namespace()) == key(namespace())


@pytest.mark.parametrize("field, value", [("alpha", 0.4), ("eta", 0.2), ("steps", 4), ("hidden", [4, 5]),
                                          ("seed", 1), ("device", "cuda")])
def test_every_setting_of_a_named_config_dict_is_in_the_key(field, value):
    ns = namespace()
    before = key(ns)
    ns["CFG"][field] = value
    assert key(ns) != before, f"changing CFG[{field!r}] did not change the key"


def test_a_new_setting_is_in_the_key():
    ns = namespace()
    before = key(ns)
    ns["CFG"]["extra"] = True
    assert key(ns) != before


@pytest.mark.parametrize("old, new", [
    ('return x * CFG["alpha"] + CFG["eta"]', 'return x * CFG["alpha"] - CFG["eta"]'),  # a helper's body
    ("return x - 1", "return x - 2"),                                             # the student's function
    ('for _ in range(CFG["steps"]):', 'for _ in range(CFG["steps"] + 1):'),        # train's own body
])
def test_the_code_behind_the_result_is_in_the_key(old, new):
    assert old in NOTEBOOK_CODE
    assert key(namespace()) != key(namespace(NOTEBOOK_CODE.replace(old, new)))


def test_closures_and_defaults_are_in_the_key():
    ns = namespace("def make(alpha, steps=2):\n    def train():\n        return alpha * steps\n    return train\n")
    k = lambda f: json.dumps(training.code_fingerprint(f), sort_keys=True)
    assert k(ns["make"](0.1)) != k(ns["make"](0.2))
    assert k(ns["make"](0.1)) != k(ns["make"](0.1, steps=3))


def test_library_code_is_in_the_key(monkeypatch):
    ns = namespace()
    before = key(ns)
    monkeypatch.setattr(training, "library_fingerprint", lambda: "something else")
    assert key(ns) != before


def test_the_config_argument_and_the_name_are_in_the_key():
    ns = namespace()
    assert key(ns, {"data": "glyphs"}) != key(ns, {"data": "omniglot"})
    assert training.cache_key("a", {}, ns["train"]) != training.cache_key("b", {}, ns["train"])


def test_tensors_named_by_the_code_are_in_the_key():
    ns = namespace("import torch\nW = torch.zeros(3)\ndef train():\n    return W.sum()\n")
    before = key(ns)
    ns["W"][1] = 1.0
    assert key(ns) != before


def trained(cache) -> int:
    """How many results were trained and stored (one file per key)."""
    return len(list((cache / "runs").glob("*.pt")))


def test_load_or_train_retrains_when_a_setting_changes(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    ns = namespace()
    training.load_or_train("run", {}, ns["train"])
    training.load_or_train("run", {}, ns["train"])
    assert trained(tmp_path) == 1 and "Loaded 'run' from the cache" in capsys.readouterr().out
    ns["CFG"]["alpha"] = 0.25
    out = training.load_or_train("run", {}, ns["train"])
    assert trained(tmp_path) == 2, "changing CFG['alpha'] must retrain"
    assert "Loaded" not in capsys.readouterr().out
    x = torch.ones(4)
    for _ in range(3):
        x = x * 0.25 + 0.1 - 1
    assert torch.allclose(out, x), "the retrained result must use the new setting"


def test_in_a_real_kernel_a_changed_setting_retrains(tmp_path):
    """The same in a Jupyter kernel, where notebook functions live in __main__ (cells as sources)."""
    from nbclient import NotebookClient
    cells = [
        "import os; os.environ['COURSE_CACHE'] = " + repr(str(tmp_path)),
        "from course_utils.training import load_or_train\n"
        "CFG = dict(alpha=0.5, eta=0.1)\n"
        "def train():\n    return CFG['alpha'] * 2 + CFG['eta']",
        "a = load_or_train('leo', {}, train); b = load_or_train('leo', {}, train)",
        "CFG['eta'] = 0.3\nc = load_or_train('leo', {}, train)",
        "def train():\n    return CFG['alpha'] * 3 + CFG['eta']\nd = load_or_train('leo', {}, train)",
        "print(a, b, c, d)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    assert "Loaded 'leo' from the cache" in nb.cells[2].outputs[0]["text"]
    assert trained(tmp_path) == 3, "expected 3 trainings: the first, eta changed, train's body changed"
    a, b, c, d = map(float, nb.cells[-1].outputs[0]["text"].split())
    assert (a, b) == (1.1, 1.1) and c == pytest.approx(1.3) and d == pytest.approx(1.8)
