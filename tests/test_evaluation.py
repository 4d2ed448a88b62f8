import math

import pytest
import torch

from course_utils.evaluation import Accuracy, episode_accuracy, evaluate, mean_ci95, student_t_quantile
from conftest import toy_classes


def test_mean_ci95_matches_hand_computation():
    v = [0.5, 0.75, 1.0, 0.25]
    m = sum(v) / 4
    s = math.sqrt(sum((x - m) ** 2 for x in v) / 3)
    acc = mean_ci95(v)
    assert acc.mean == pytest.approx(m) and acc.ci95 == pytest.approx(1.959964 * s / 2, rel=1e-5)
    assert acc.n == 4 and str(acc) == f"{100 * m:.1f}% ± {100 * acc.ci95:.1f}% (4 episodes)"


def test_mean_ci95_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        mean_ci95([])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci95([0.5, float("nan")])
    assert math.isnan(mean_ci95([1.0]).ci95)


def test_episode_accuracy_labels_and_scores():
    y = torch.tensor([0, 1, 2, 2])
    assert episode_accuracy(torch.tensor([0, 1, 0, 2]), y) == 0.75
    scores = torch.eye(3)[[0, 1, 2, 0]]
    assert episode_accuracy(scores, y) == 0.75
    with pytest.raises(ValueError, match="one label per query"):
        episode_accuracy(torch.tensor([0, 1]), y)


def test_evaluate_oracle_and_chance():
    cs = toy_classes(10, 20)

    def oracle(ep):  # reads the class id written into each toy image
        s = (ep.support_x[:, 0, 0, 0] * 255).round()
        q = (ep.query_x[:, 0, 0, 0] * 255).round()
        return ep.support_y[(q[:, None] == s[None]).float().argmax(1)]

    acc = evaluate(oracle, cs, 5, 1, 3, n_episodes=20)
    assert acc.mean == 1.0 and acc.ci95 == 0.0 and acc.n == 20
    rand = evaluate(lambda ep: torch.randint(0, 5, ep.query_y.shape), cs, 5, 1, 3, n_episodes=200)
    assert abs(rand.mean - 0.2) < 3 * rand.ci95 + 0.02
    assert isinstance(rand, Accuracy)


def test_student_t_quantile_known_values():
    assert student_t_quantile(0.975, 4) == pytest.approx(2.776445105, abs=1e-8)
    assert student_t_quantile(0.975, 19) == pytest.approx(2.093024054, abs=1e-8)
    assert student_t_quantile(0.95, 10) == pytest.approx(1.812461123, abs=1e-8)
    assert student_t_quantile(0.975, 1) == pytest.approx(12.70620474, abs=1e-6)
    assert student_t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError):
        student_t_quantile(0.3, 4)


def test_episode_accuracies_are_what_evaluate_averages():
    from conftest import toy_classes
    from course_utils.baselines import pixel_nn_classify
    from course_utils.evaluation import episode_accuracies, evaluate, mean_ci95
    toy = toy_classes()
    per = episode_accuracies(pixel_nn_classify, toy, 3, 1, 2, n_episodes=9, seed=5)
    assert per.shape == (9,) and per.dtype == torch.float64
    assert evaluate(pixel_nn_classify, toy, 3, 1, 2, n_episodes=9, seed=5) == mean_ci95(per)


def test_episode_accuracies_takes_a_task_familys_own_sampler_and_keeps_the_seeded_stream():
    from course_utils.episodes import sample_episode
    from course_utils.evaluation import episode_accuracies
    pool = toy_classes(6, side=8)
    calls = []

    def sampler(classes, n_way, k_shot, q_query, generator):
        calls.append((classes is pool, n_way, k_shot, q_query))
        return sample_episode(classes, n_way, k_shot, q_query, generator)

    first = lambda ep: ep.query_y                       # a perfect classifier, to see the stream
    a = episode_accuracies(first, pool, 3, 2, 4, n_episodes=5, seed=7, sampler=sampler)
    assert calls == [(True, 3, 2, 4)] * 5 and torch.equal(a, torch.ones(5, dtype=torch.float64))
    seen = []
    episode_accuracies(lambda ep: seen.append(ep.classes) or ep.query_y, pool, 3, 2, 4, n_episodes=3, seed=7)
    again = []
    episode_accuracies(lambda ep: again.append(ep.classes) or ep.query_y, pool, 3, 2, 4, n_episodes=3, seed=7,
                       sampler=sampler)
    assert seen == again                                  # the default sampler is sample_episode, same seed
    with pytest.raises(ValueError, match="sampler must be a function"):
        episode_accuracies(first, pool, 3, 2, 4, n_episodes=2, sampler="speaker")
