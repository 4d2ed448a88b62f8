"""The machinery every exercise check shares: inputs copied and changes named, the stub told from
other NotImplementedErrors, a check that fails on a student's return value, float64 and device hints."""
import pytest
import torch

from course_utils import checks
from conftest import message, status


def ref_step(params, g, alpha):
    return {k: p - alpha * g[k] for k, p in params.items()}


def probe_step(fn):
    params = {"w": torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)}
    g = {"w": torch.tensor([0.5, -1.0], dtype=torch.float64)}
    out = fn(params, g, 0.1)
    checks.expect_type(out, dict, "the result")
    checks.expect_close(out["w"], ref_step(params, g, 0.1)["w"], "the result['w']")
    # the result must stay differentiable in the original parameters (the copies keep the link)
    (grad,) = torch.autograd.grad(out["w"].sum(), params["w"])
    checks.expect_close(grad, torch.ones(2, dtype=torch.float64), "d result / d params")


def check(fn, **kw):
    return checks.run_check("9.9", "a step", fn, ref_step, probe_step, **kw)


def test_a_right_answer_keeps_gradients_through_the_copies():
    def mine(params, g, alpha):
        return {k: torch.lerp(p, p - g[k], alpha) for k, p in params.items()}
    assert check(mine) is mine and status("9.9") == "right"


@pytest.mark.parametrize("body", [
    "params['w'].data -= alpha * g['w'].data; return params",
    "params['w'] = params['w'] - alpha * g['w']; return params",
    "g['w'].mul_(alpha); return {k: p - g[k] for k, p in params.items()}",
    "params.pop('w'); return {'w': torch.zeros(2, dtype=torch.float64)}",
])
def test_inputs_changed_in_place_are_named_first(body):
    ns = {"torch": torch}
    exec("def mutating(params, g, alpha):\n    " + body.replace("; ", "\n    "), ns)
    assert check(ns["mutating"]) is ref_step
    assert status("9.9") == "wrong"
    assert "changed its input" in message("9.9") and "in place" in message("9.9")


def test_an_argument_the_exercise_changes_can_be_allowed():
    def steps_in_place(params, g, alpha):
        with torch.no_grad():
            params["w"].sub_(alpha * g["w"])
        return {k: p - 0 for k, p in params.items()}
    check(steps_in_place, mutates=("params",))
    assert "changed its input" not in message("9.9")


def test_the_stub_is_not_attempted_but_other_not_implemented_errors_are_attempts():
    def stub(params, g, alpha):
        raise NotImplementedError("Exercise 9.9: one step")
    check(stub)
    assert status("9.9") == "not attempted"

    def partial(params, g, alpha):
        out = {}
        raise NotImplementedError("TODO: finish the dict")
    check(partial)
    assert status("9.9") == "wrong"
    assert "TODO: finish the dict" in message("9.9") and "not the exercise's stub" in message("9.9")

    def torch_missing_derivative(params, g, alpha):
        raise NotImplementedError("the derivative for 'foo' is not implemented.")
    check(torch_missing_derivative)
    assert status("9.9") == "wrong" and "derivative" in message("9.9")


def test_a_check_that_fails_on_the_returned_value_says_what_was_returned():
    def returns_tuple(params, g, alpha):
        return tuple(p - alpha * g[k] for k, p in params.items())

    def probe_without_type_check(fn):
        out = fn({"w": torch.ones(2)}, {"w": torch.ones(2)}, 0.1)
        out["w"].shape  # the probe trips over a tuple

    checks.run_check("9.9", "a step", returns_tuple, ref_step, probe_without_type_check)
    assert status("9.9") == "wrong"
    text = message("9.9")
    assert "could not use what your function returned" in text and "a tuple of 1" in text
    assert "your code raised" not in text


def test_not_a_function():
    checks.run_check("9.9", "a step", 3.0, ref_step, probe_step)
    assert status("9.9") == "wrong" and "needs a function" in message("9.9")


def test_float32_answer_to_float64_inputs_is_told_to_compute_in_float64():
    def in_float32(params, g, alpha):
        return {k: (p.float() - alpha * g[k].float()) for k, p in params.items()}

    def probe_tight(fn):
        params = {"w": torch.tensor([1.0 / 3, 2.0 / 7], dtype=torch.float64)}
        g = {"w": torch.tensor([0.1234567, -1.0], dtype=torch.float64)}
        checks.expect_close(fn(params, g, 0.1)["w"], ref_step(params, g, 0.1)["w"], "w", atol=1e-12, rtol=1e-12)

    checks.run_check("9.9", "a step", in_float32, ref_step, probe_tight)
    assert "compute in float64" in message("9.9")
    got, expected = message("9.9").split("got ")[1].split(", expected ")[:2]
    assert got != expected.split(" ")[0], "the message must show digits that differ"


def test_describe():
    assert checks.describe(torch.zeros(2, 3)) == "a torch.float32 tensor of shape (2, 3)"
    assert checks.describe((torch.zeros(1), 2.0)).startswith("a tuple of 2")
    assert "keys ['a']" in checks.describe({"a": 1})


def test_device_less_tensors_are_caught_on_the_meta_device():
    def bare_eye(w):
        return (w @ w.T - torch.eye(w.shape[0])).pow(2).mean()

    def good_eye(w):
        return (w @ w.T - torch.eye(w.shape[0], device=w.device)).pow(2).mean()

    w = torch.randn(3, 4)
    with pytest.raises(checks.Mistake, match="device"):
        checks.expect_device_agnostic(bare_eye, w, what="the penalty")
    checks.expect_device_agnostic(good_eye, w, what="the penalty")


def test_named_tuple_inputs_are_copied_and_changes_named_by_field():
    from typing import NamedTuple

    class State(NamedTuple):
        h: torch.Tensor
        c: torch.Tensor

    def ref(state):
        return state.h + state.c

    def probe(fn):
        checks.expect_close(fn(State(torch.ones(2), torch.zeros(2))), torch.ones(2), "the sum")

    def in_place(state):
        state.c.add_(0)  # harmless
        state.h.mul_(1.0)
        out = state.h + state.c
        state.c.add_(1.0)
        return out

    checks.run_check("9.8", "state", in_place, ref, probe)
    assert "changed its input `state` in place (the values of `state.c` changed)" in message("9.8")
    checks.run_check("9.8", "state", lambda state: state.h + state.c, ref, probe)
    assert status("9.8") == "right"


def test_none_in_place_of_a_function_is_wrong_not_a_rerun():
    checks.run_check("9.7", "a step", None, ref_step, probe_step)
    assert status("9.7") == "wrong" and "needs a function" in message("9.7")


def test_strict_mode_error_does_not_chain_the_probe_traceback(monkeypatch):
    """make check shows the ExerciseError's traceback: it must not carry the check's internals."""
    monkeypatch.setenv("COURSE_STRICT", "1")
    with pytest.raises(checks.ExerciseError) as info:
        check(lambda params, g, alpha: {k: p + alpha * g[k] for k, p in params.items()})
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_describe_numpy_and_articles():
    import numpy as np
    assert checks.describe(np.zeros((2, 3))) == "a NumPy array of shape (2, 3) (return a torch.Tensor)"
    class Item: pass
    assert checks.describe(Item()) == "an Item"


def test_a_float32_step_inside_a_float64_result_is_named():
    e = torch.tensor([0.0197357010123], dtype=torch.float64)
    a = e.float().double() + 1e-9  # right to float32's digits only
    with pytest.raises(checks.Mistake, match="about 7 significant digits"):
        checks.expect_close(a, e, "the penalty", atol=1e-12, rtol=1e-10)


def test_device_check_rebuilds_named_tuples():
    from typing import NamedTuple

    class State(NamedTuple):
        h: torch.Tensor

    def bare_zeros(state):
        return state.h + torch.zeros(state.h.shape[0])

    with pytest.raises(checks.Mistake, match="device"):
        checks.expect_device_agnostic(bare_zeros, State(torch.ones(3)), what="the step")
    checks.expect_device_agnostic(lambda state: state.h * 2, State(torch.ones(3)), what="the step")
