"""make check's plugin names the failing exercise and section; run_notebooks makes saved widget
outputs static; the thread policy."""
import nbformat
import pytest
import torch

from course_utils import devices, nbcheck, run_notebooks

md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell


def notebook():
    return [md("# Chapter"), md("## 2 · Prototypes\nText."),
            code("def prototypes(z):\n    # Exercise 2.2: class means\n    return z"),
            code("prototypes = check.prototypes(prototypes)"), md("## 3 · Training"), code("train()")]


def test_a_failed_check_names_the_exercise_and_section():
    cells = notebook()
    text = "ExerciseError: ❌ Exercise 2.2 (prototypes): wrong.\n   the means are sums"
    msg = nbcheck.describe_failure(text, cells, cells[3], 2)
    assert "Exercise 2.2 (prototypes) is wrong" in msg and "'2 · Prototypes'" in msg and "Cell 2" in msg
    msg = nbcheck.describe_failure("ExerciseError: ⭕ Exercise 2.2 (prototypes): not attempted yet.",
                                   cells, cells[3], 2)
    assert "not attempted" in msg


def test_a_later_cell_failure_points_at_the_exercise_above():
    cells = notebook()
    msg = nbcheck.describe_failure("RuntimeError: shapes", cells, cells[5], 3)
    assert "'3 · Training'" in msg and "after Exercise 2.2 (class means)" in msg


def test_output_timeout_setting(monkeypatch):
    monkeypatch.setenv("COURSE_NBVAL_OUTPUT_TIMEOUT", "30")
    assert nbcheck.output_timeout() == 30
    monkeypatch.setenv("COURSE_NBVAL_OUTPUT_TIMEOUT", "soon")
    with pytest.raises(pytest.UsageError, match="not a number"):
        nbcheck.output_timeout()


def _widget_nb():
    """A notebook as nbclient saves it: a hidden (closed) bar, a kept bar, an explorer."""
    def view(mid):
        return nbformat.v4.new_output("display_data", data={
            run_notebooks.WIDGET_VIEW: {"model_id": mid, "version_major": 2, "version_minor": 0},
            "text/plain": "interactive(children=(FloatSlider(value=3.0)" if mid == "ex" else "maml:   0%|  | 0/2500"})
    state = {
        "bar": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_h1", "IPY_MODEL_p", "IPY_MODEL_h2"],
                                                       "layout": "IPY_MODEL_lay"}},
        "h1": {"model_name": "HTMLModel", "state": {"value": "maml: 100%"}},
        "p": {"model_name": "FloatProgressModel", "state": {"value": 5}},
        "h2": {"model_name": "HTMLModel", "state": {"value": "5/5 [00:01&lt;00:00]"}},
        "lay": {"model_name": "LayoutModel", "state": {"visibility": None}},
        "hidden": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_h1", "IPY_MODEL_p"],
                                                          "layout": "IPY_MODEL_hlay"}},
        "hlay": {"model_name": "LayoutModel", "state": {"visibility": "hidden"}},
        "ex": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_s", "IPY_MODEL_o"]}},
        "s": {"model_name": "FloatSliderModel", "state": {"value": 3.0}},
        "o": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}, "metadata": {}}]}},
    }
    nb = nbformat.v4.new_notebook(cells=[code("x")])
    nb.cells[0].outputs = [view("hidden"), nbformat.v4.new_output("stream", name="stdout", text="done\n"),
                           view("bar"), view("ex")]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state}}
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb


def test_clean_replaces_widgets_by_what_they_showed():
    nb = _widget_nb()
    assert len(run_notebooks.problems(nb)) >= 4
    out = run_notebooks.clean(nb)
    assert run_notebooks.problems(out) == []
    kinds = [(o.output_type, o.get("text", ""), list(o.get("data", {}))) for o in out.cells[0].outputs]
    texts = "".join(k[1] for k in kinds)
    assert "done" in texts and "maml: 100% 5/5 [00:01<00:00]" in texts and "0%|" not in texts
    assert any("image/png" in k[2] for k in kinds), "the explorer's figure is kept"
    assert out.metadata.kernelspec["display_name"] == "Python 3 (ipykernel)" and "widgets" not in out.metadata
    assert run_notebooks.clean(out) == out, "cleaning is idempotent"


def test_thread_policy(monkeypatch):
    n = torch.get_num_threads()
    try:
        monkeypatch.delenv("COURSE_THREADS", raising=False)
        assert devices.apply_thread_policy() == 1
        monkeypatch.setenv("COURSE_THREADS", "2")
        devices.pick_device("cpu")
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("COURSE_THREADS", "many")
        with pytest.raises(ValueError, match="COURSE_THREADS"):
            devices.apply_thread_policy()
        monkeypatch.setenv("COURSE_THREADS", "-1")
        with pytest.raises(ValueError, match="COURSE_THREADS"):
            devices.apply_thread_policy()
    finally:
        torch.set_num_threads(n)


def test_exercise_titles_from_comments_drop_parentheticals():
    cells = [code("def f(z):\n    # Exercise 6.1: the latent inner step (pass create_graph on)\n    return z"), code("x")]
    assert nbcheck.locate(cells, cells[1])["exercise"] == "Exercise 6.1 (the latent inner step)"


def test_a_failed_checks_report_keeps_the_message_not_the_traceback():
    text = ("Notebook cell execution failed\nCell 4: Cell execution caused an exception\n\x1b[31m---\x1b[0m\n"
            "File ~/course_utils/chapter_checks/ch05.py:146, in inner_loop(student)\n    return run_check(...)\n"
            "\x1b[31mExerciseError\x1b[39m: ❌ Exercise 5.2 (the inner loop): wrong.\n   one step too few")
    msg = nbcheck.exercise_message(text)
    assert msg.startswith("❌ Exercise 5.2 (the inner loop): wrong.") and "one step too few" in msg
    assert "chapter_checks" not in msg and "\x1b" not in msg
    assert nbcheck.exercise_message("RuntimeError: shapes") == ""
