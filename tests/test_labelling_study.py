"""labelling_study: chapter 07's measurements on small synthetic embeddings (fast, seeded)."""
from __future__ import annotations

import math

import pytest
import torch

from course_utils import labelling_study as study
from course_utils.episodes import ClassSet
from course_utils.labelling_data import NONE, Pool, sample_pool


def clusters(c: int = 30, m: int = 20, d: int = 8, spread: float = 0.6, seed: int = 0) -> ClassSet:
    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(c, 1, d, generator=g)
    x = centres + spread * torch.randn(c, m, d, generator=g)
    return ClassSet(x, [f"toy/c{i}" for i in range(c)], ["toy"] * c, "toy clusters")


def test_calibrate_threshold_reaches_target_on_meta_val_and_t_is_positive():
    val = study.sample_pools(clusters(seed=1), 5, 1, 10, 40, seed=0)
    cal = study.calibrate(val, target=0.95)
    assert cal.temperature > 0 and cal.radius > 0 and math.isfinite(cal.tau)
    res = study.acceptance(val, cal)
    assert res["precision_pooled"] >= 0.95, "tau chosen on these pools must reach the target on them"
    lower = study.acceptance(val, study.Calibration(cal.temperature, cal.tau * 0.8, cal.radius, 0.95))
    assert lower["coverage"].mean >= res["coverage"].mean


def test_acceptance_counts_distractors_as_wrong():
    emb = clusters()
    pools = study.sample_pools(emb, 3, 1, 5, 5, n_distractors=2, seed=3)
    accept_all = study.Calibration(1.0, 0.0, 1.0, 0.99)
    res = study.acceptance(pools, accept_all)
    assert res["coverage"].mean == pytest.approx(1.0)
    n_distractors = sum(int((p.pool_y == NONE).sum()) for p in pools)
    n_items = sum(len(p.pool_y) for p in pools)
    assert res["precision_pooled"] <= 1 - n_distractors / n_items + 1e-9


def test_support_set_threshold_is_the_lowest_confidence_at_one_shot():
    """At K = 1 every support sits on its prototype, so tau from the supports accepts them all."""
    pools = study.sample_pools(clusters(), 5, 1, 5, 10, seed=2)
    tau = study.support_set_threshold(pools, 1.0, 0.99)
    from course_utils import confidence
    lowest = min(float(confidence.confidence(study.pool_logits(p, None).new_tensor(
        (-(p.support_z[:, None] - p.support_z[None]).pow(2).sum(-1)).tolist()), "max_prob").min()) for p in pools)
    assert tau == pytest.approx(lowest)


def test_calibration_errors_blocks_and_scaling():
    pools = study.sample_pools(clusters(spread=1.2), 5, 1, 10, 40, seed=4)
    cal = study.calibrate(pools)
    ece = study.calibration_errors(pools, cal.temperature, block=10)
    assert ece["before"].n == 4 and ece["after"].n == 4
    assert ece["after"].mean <= ece["before"].mean + 1e-6, "kappa fitted by NLL on these pools should not worsen ECE"


def test_accuracy_vs_m_soft_kmeans_helps_and_m_zero_is_refused():
    emb = clusters(spread=1.0)
    res = study.accuracy_vs_m(emb, [10], 5, 1, 30, radius=20.0)
    assert res["soft k-means"][10].mean > res["plain prototypes"][10].mean
    with pytest.raises(ValueError, match="M must be >= 1"):
        study.accuracy_vs_m(emb, [0], 5, 1, 3, radius=1.0)


def test_split_heldout_takes_q_per_class_and_keeps_distractors():
    p = sample_pool(clusters(), 4, 1, 8, n_distractors=2, generator=torch.Generator().manual_seed(0))
    rest, hz, hy = study.split_heldout(p, 3)
    assert sorted(hy.tolist()) == sorted([n for n in range(4) for _ in range(3)])
    assert (rest.pool_y == NONE).sum() == (p.pool_y == NONE).sum()
    assert len(rest.pool_y) + len(hy) == len(p.pool_y)


def test_self_training_study_shapes_and_lock_in_drifts_with_distractors():
    emb = clusters(spread=1.0)
    settings = {"locked": dict(tau=0.3, anchored=False), "anchored": dict(tau=0.3, anchored=True)}
    res = study.self_training_study(emb, settings, 4, 1, 10, 8, rounds=3, z_per_class=2, temperature=1.0)
    for r in res.values():
        assert len(r["precision"]) == 3 and len(r["coverage"]) == 3 and len(r["heldout"]) == 4


def test_nn_scorer_is_one_nearest_neighbour():
    support = torch.tensor([[0.0], [10.0], [1.0]])
    y = torch.tensor([0, 1, 1])
    logits = study.nn_scorer(support, y, 2, torch.tensor([[0.9], [0.2]]))
    assert logits.argmax(1).tolist() == [1, 0]
    assert logits[0, 1] == pytest.approx(-(0.1 ** 2))


def test_effort_summary_and_headline_from_known_curves():
    effort = {"curves": {"meta-learned, least_margin": [[0.5, 0.9, 0.96, 0.99, 1.0]],
                         "pixel nearest neighbour, least_margin": [[0.5, 0.6, 0.7, 0.8, 0.9]]},
              "n_way": 2, "per_class": 5, "total": 10, "runs": 1, "first_click": 2}
    s = study.effort_summary(effort)
    assert s["meta-learned, least_margin"][0.95]["clicks"].mean == 4     # index 2 + 2 first clicks
    assert s["meta-learned, least_margin"][0.99]["clicks"].mean == 5
    assert s["pixel nearest neighbour, least_margin"][0.95] is None
    line = study.headline(effort)
    assert "5 human clicks" in line and "50% of the labels saved" in line and "never reaches" in line
    assert "not reached" in study.effort_table(effort)


def test_human_effort_runs_on_tiny_pools():
    class Data:  # the image sets the pixel baseline reads
        new = ClassSet((torch.rand(6, 6, 1, 4, 4) * 255).to(torch.uint8), [f"c{i}" for i in range(6)], ["a"] * 6)
        val = ClassSet((torch.rand(6, 6, 1, 4, 4) * 255).to(torch.uint8), [f"v{i}" for i in range(6)], ["b"] * 6)
    emb = clusters(c=6, m=6)
    effort = study.human_effort(Data, emb, clusters(c=6, m=6, seed=5), None, n_way=3, per_class=6, n_runs=1,
                                orders=("random", "least_margin"), self_training_orders=())
    assert set(effort["curves"]) == {"meta-learned, random", "meta-learned, least_margin",
                                     "pixel nearest neighbour, least_margin"}
    for runs in effort["curves"].values():
        curve = runs[0]
        assert len(curve) == 3 * 6 - 3 + 1 and curve[-1] == pytest.approx(1.0), "all labelled by hand = 100%"


def test_write_demo_folder_layout_and_truth(tmp_path):
    imgs = ClassSet((torch.rand(5, 6, 1, 28, 28) * 255).to(torch.uint8), [f"alpha/c{i}" for i in range(5)],
                    ["alpha"] * 5)
    folder = tmp_path / "demo"
    truth = study.write_demo_folder(folder, imgs, n_classes=3, k_shot=2, n_unlabelled=3, n_distractor_classes=1)
    assert sorted(p.name for p in (folder / "labelled").iterdir()) == ["alpha_c0", "alpha_c1", "alpha_c2"] or \
        len(list((folder / "labelled").iterdir())) == 3
    assert all(len(list(d.iterdir())) == 2 for d in (folder / "labelled").iterdir())
    assert len(list((folder / "unlabelled").iterdir())) == 3 * 3 + 3
    assert study.demo_truth(folder) == truth
    assert sum(v == "" for v in truth.values()) == 3
    assert not (folder / "truth.json").exists(), "the truth must not sit inside the folder the tool reads"


def test_accuracy_vs_m_uses_the_given_step_and_nested_pools():
    emb = clusters(spread=1.0)

    def no_refinement(c, support_z, support_y, z_unlabelled, mask=None):
        return c

    res = study.accuracy_vs_m(emb, [3, 8], 5, 1, 10, radius=20.0, step=no_refinement)
    for m in (3, 8):
        assert res["soft k-means"][m].mean == res["plain prototypes"][m].mean, "the step passed in must be used"


def test_truncate_pool_keeps_the_first_m_of_every_class():
    p = sample_pool(clusters(), 3, 1, 6, n_distractors=2, generator=torch.Generator().manual_seed(1))
    t = study.truncate_pool(p, 2)
    assert len(t.pool_y) == 5 * 2 and (t.pool_y == NONE).sum() == 4
    kept = {tuple(r) for r in t.pool_ref.tolist()}
    assert kept <= {tuple(r) for r in p.pool_ref.tolist()}
    assert study.truncate_pool(p, 6).pool_y.tolist() == p.pool_y.tolist()
