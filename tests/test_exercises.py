import nbformat
import pytest

from course_utils import exercises as X

SOLVED = """# Exercise 1.2: add the numbers
def add(a, b):
    \"\"\"Return a + b.\"\"\"
    ### BEGIN SOLUTION
    c = a + b
    return c
    ### END SOLUTION
"""


def test_stub_replaces_region_and_keeps_rest():
    out = X.stub_source(SOLVED)
    assert "c = a + b" not in out and 'raise NotImplementedError("Exercise 1.2: add the numbers")' in out
    assert out.startswith("# Exercise 1.2") and '"""Return a + b."""' in out
    ns = {}
    exec(out, ns)
    with pytest.raises(NotImplementedError, match="Exercise 1.2"):
        ns["add"](1, 2)


def test_cell_without_markers_unchanged():
    assert X.stub_source("x = 1\n") == "x = 1\n"


@pytest.mark.parametrize("source,match", [
    ("# Exercise 1.1: f\ndef f():\n    ### BEGIN SOLUTION\n    return 1\n", "without a matching"),
    ("# Exercise 1.1: f\ndef f():\n    return 1\n    ### END SOLUTION\n", "without a ### BEGIN"),
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n", "Exercise N.M"),
    ("# Exercise 1.1: f\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n", "function body"),
    ("# Exercise 1.1: f\ndef f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n", "inside another"),
    ("# Exercise 1.1: f\ndef f():\n    ### BEGIN SOLUTION\n    ### SOLUTION END\n    ### END SOLUTION\n",
     "unknown marker"),
])
def test_malformed_markers_raise(source, match):
    with pytest.raises(X.MarkerError, match=match):
        X.stub_source(source, "nb, cell 3")


def _notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    return nb


def test_make_chapter_clears_outputs_and_rejects_markdown_markers():
    code = nbformat.v4.new_code_cell(SOLVED)
    code.outputs = [nbformat.v4.new_output("stream", text="hi")]
    code.execution_count = 3
    ch = X.make_chapter(_notebook([nbformat.v4.new_markdown_cell("# Title"), code]))
    assert ch.cells[1].outputs == [] and ch.cells[1].execution_count is None
    assert "NotImplementedError" in ch.cells[1].source
    with pytest.raises(X.MarkerError, match="code cells only"):
        X.make_chapter(_notebook([nbformat.v4.new_markdown_cell("### BEGIN SOLUTION")]))


def test_generate_and_out_of_date(tmp_path):
    sol, ch = tmp_path / "solutions", tmp_path / "chapters"
    sol.mkdir()
    nbformat.write(_notebook([nbformat.v4.new_code_cell(SOLVED)]), sol / "01_x.ipynb")
    assert X.out_of_date(sol, ch) == ["01_x.ipynb"]
    assert X.main([str(sol), str(ch), "--check"]) == 1
    assert [p.name for p in X.generate(sol, ch)] == ["01_x.ipynb"]
    assert X.out_of_date(sol, ch) == [] and X.generate(sol, ch) == []
    (ch / "99_orphan.ipynb").write_text("{}")
    assert X.out_of_date(sol, ch) == ["99_orphan.ipynb"]
