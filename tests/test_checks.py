import pytest
import torch

from course_utils import checks


def ref_double(x):
    return 2 * x


def probe_double(fn):
    x = torch.tensor([1.0, 2.0, 3.0])
    out = fn(x)
    checks.expect_shape(out, (3,), "the output")
    checks.diagnose(out, 2 * x, "the output", {"you added instead of multiplying": x + 2})


@pytest.fixture(autouse=True)
def fresh():
    checks.reset()


def test_right_returns_student_and_records(capsys):
    def student(x):
        return x * 2
    assert checks.run_check("9.1", "double", student, ref_double, probe_double) is student
    assert checks.results()["9.1"].status == "right"
    assert "✅ Exercise 9.1 (double): right" in capsys.readouterr().out


def test_not_attempted_returns_reference(capsys):
    def stub(x):
        raise NotImplementedError("Exercise 9.1: double x")
    assert checks.run_check("9.1", "double", stub, ref_double, probe_double) is ref_double
    assert checks.results()["9.1"].status == "not attempted"
    assert "not attempted" in capsys.readouterr().out


def test_wrong_names_the_classic_mistake(capsys):
    out = checks.run_check("9.1", "double", lambda x: x + 2, ref_double, probe_double)
    assert out is ref_double
    text = capsys.readouterr().out
    assert "wrong" in text and "you added instead of multiplying" in text
    assert "reference implementation" in text


def test_wrong_first_value_and_shape(capsys):
    checks.run_check("9.1", "double", lambda x: torch.tensor([2.0, 4.0, 7.0]), ref_double, probe_double)
    assert "index [2]: got 7, expected 6" in capsys.readouterr().out
    checks.run_check("9.1", "double", lambda x: x[:2], ref_double, probe_double)
    assert "shape (2,), expected (3,)" in capsys.readouterr().out


def test_crash_reports_exception_and_line(capsys):
    def broken(x):
        return x @ torch.zeros(5, 5)
    checks.run_check("9.1", "double", broken, ref_double, probe_double)
    out = capsys.readouterr().out
    assert "raised RuntimeError" in out and "x @ torch.zeros(5, 5)" in out


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError, match="wrong"):
        checks.run_check("9.1", "double", lambda x: x + 2, ref_double, probe_double)

    def stub(x):
        raise NotImplementedError("Exercise 9.1: double x")
    with pytest.raises(checks.ExerciseError, match="not attempted"):
        checks.run_check("9.1", "double", stub, ref_double, probe_double)
    assert checks.run_check("9.1", "double", ref_double, ref_double, probe_double) is ref_double


def test_report_counts(capsys):
    checks.run_check("9.1", "double", ref_double, ref_double, probe_double)
    text = checks.report(["9.1", "9.2"])
    assert "1 of 2 exercises right" in text and "9.2: not attempted" in text


def test_expect_helpers():
    with pytest.raises(checks.Mistake, match="NaN"):
        checks.expect_finite(torch.tensor([1.0, float("nan")]), "the loss")
    with pytest.raises(checks.Mistake, match="does not carry gradients"):
        checks.expect_grad(torch.zeros(2), "the adapted weights")
    with pytest.raises(checks.Mistake, match="dtype torch.int64"):
        checks.expect_dtype(torch.zeros(2, dtype=torch.long), torch.float32, "x")
    with pytest.raises(checks.Mistake, match="should be a Tensor"):
        checks.expect_type([1], torch.Tensor, "x")
    with pytest.raises(checks.Mistake, match="is 3, expected 2"):
        checks.expect_close(3.0, 2.0, "the value")
    checks.expect_close(torch.tensor([1.0]), torch.tensor([1.0 + 1e-7]), "x")


def test_rerunning_a_check_on_the_handed_out_reference_is_not_a_false_right(capsys):
    def stub(x):
        raise NotImplementedError("Exercise 9.1: double x")
    fn = checks.run_check("9.1", "double", stub, ref_double, probe_double)
    assert fn is ref_double
    again = checks.run_check("9.1", "double", fn, ref_double, probe_double)  # the check cell, run twice
    assert again is ref_double and checks.results()["9.1"].status == "not attempted"
    assert "Run your exercise cell again" in capsys.readouterr().out
    def mine(x):
        return 2 * x
    assert checks.run_check("9.1", "double", mine, ref_double, probe_double) is mine
    assert checks.results()["9.1"].status == "right"
