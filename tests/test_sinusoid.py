import math

import pytest
import torch

from course_utils import sinusoid as S
from conftest import cuda


def test_shapes_dtype_and_values_follow_the_wave():
    b = S.sample_sine_tasks(6, 5, 7, torch.Generator().manual_seed(0))
    assert b.x_s.shape == b.y_s.shape == (6, 5, 1) and b.x_q.shape == b.y_q.shape == (6, 7, 1)
    assert b.amplitude.shape == b.phase.shape == (6,) and len(b) == 6
    assert b.x_s.dtype == torch.float32
    a, p = b.amplitude[:, None, None], b.phase[:, None, None]
    assert torch.allclose(b.y_s, a * torch.sin(b.x_s - p)) and torch.allclose(b.y_q, a * torch.sin(b.x_q - p))


def test_ranges_are_the_papers_and_configurable():
    b = S.sample_sine_tasks(2000, 3, 2, torch.Generator().manual_seed(1))
    assert 0.1 <= b.amplitude.min() and b.amplitude.max() <= 5.0
    assert 0 <= b.phase.min() and b.phase.max() <= math.pi
    assert b.phase.max() > 0.95 * math.pi  # uses the whole range
    xs = torch.cat([b.x_s.flatten(), b.x_q.flatten()])
    assert -5 <= xs.min() and xs.max() <= 5 and xs.min() < -4.9 and xs.max() > 4.9
    r = S.sample_sine_tasks(2000, 1, 1, torch.Generator().manual_seed(1), phase=(0, 2 * math.pi))
    assert r.phase.max() > 1.1 * math.pi  # Reptile's range


def test_seeded_is_repeatable_and_sampler_streams():
    a = S.sample_sine_tasks(3, 4, 4, torch.Generator().manual_seed(5))
    b = S.sample_sine_tasks(3, 4, 4, torch.Generator().manual_seed(5))
    assert torch.equal(a.x_s, b.x_s) and torch.equal(a.amplitude, b.amplitude)
    s1, s2 = S.SineTaskSampler(3, 4, seed=9), S.SineTaskSampler(3, 4, seed=9)
    first, second = next(s1), next(s1)
    assert torch.equal(first.x_q, next(s2).x_q) and not torch.equal(first.x_q, second.x_q)


def test_task_and_dtype():
    b = S.sample_sine_tasks(4, 2, 3, torch.Generator().manual_seed(0), dtype=torch.float64)
    t = b.task(2)
    assert t.x_s.shape == (1, 2, 1) and t.x_s.dtype == torch.float64
    assert torch.equal(t.y_q[0], b.y_q[2]) and torch.equal(b.task(-1).x_s[0], b.x_s[3])
    with pytest.raises(ValueError, match="out of range"):
        b.task(4)


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(batch_size=0, k_support=5), "batch_size"),
    (dict(batch_size=2, k_support=0), "k_support"),
    (dict(batch_size=2, k_support=2.5), "k_support"),
    (dict(batch_size=2, k_support=2, k_query=0), "k_query"),
    (dict(batch_size=2, k_support=2, amplitude=(5, 0.1)), "low <= high"),
    (dict(batch_size=2, k_support=2, amplitude=(-1, 1)), "negative"),
    (dict(batch_size=2, k_support=2, phase="pi"), "pair"),
    (dict(batch_size=2, k_support=2, x_range=(0, float("inf"))), "finite"),
    (dict(batch_size=2, k_support=2, dtype=torch.int64), "floating"),
])
def test_bad_inputs_say_what_to_change(kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        S.sample_sine_tasks(**kwargs)
    with pytest.raises(ValueError, match=phrase):
        S.SineTaskSampler(**kwargs)


@cuda
@pytest.mark.cuda
def test_on_cuda_same_values():
    a = S.sample_sine_tasks(2, 3, 3, torch.Generator().manual_seed(0), device="cuda")
    b = S.sample_sine_tasks(2, 3, 3, torch.Generator().manual_seed(0))
    assert a.x_s.is_cuda and torch.equal(a.x_s.cpu(), b.x_s)
