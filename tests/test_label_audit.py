import pytest
import torch

pytest.importorskip("cleanlab.filter")  # imported here, at collection, so no test pays for it

from course_utils.label_audit import (find_label_issues, in_sample_probabilities,  # noqa: E402
                                      loo_probabilities)
from course_utils.labelling import class_means, probabilities  # noqa: E402


def clusters(n_way=3, m=8, dim=4, sep=6.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = sep * torch.randn(n_way, dim, generator=g)
    y = torch.arange(n_way).repeat_interleave(m)
    return centres[y] + torch.randn(y.numel(), dim, generator=g), y


def test_loo_distances_by_hand():
    z = torch.tensor([[0.0], [2.0], [10.0], [12.0], [14.0]])
    y = torch.tensor([0, 0, 1, 1, 1])
    T = 10.0
    # item z=0: own prototype without it is 2 (d = 4), class 1's is 12 (d = 144)
    # item z=10: own prototype without it is 13 (d = 9), class 0's is 1 (d = 81)
    expected = probabilities(-torch.tensor([[4.0, 144.0], [0.0, 0.0]]), T)
    p = loo_probabilities(z, y, 2, T)
    assert torch.allclose(p[0], expected[0])
    assert torch.allclose(p[2], probabilities(-torch.tensor([[81.0, 9.0]]), T)[0])
    assert torch.allclose(p[3], probabilities(-torch.tensor([[121.0, 0.0]]), T)[0])  # z=12 is its LOO mean


def test_loo_matches_brute_force_leave_one_out():
    z, y = clusters(m=5, sep=2.0, seed=1)
    p = loo_probabilities(z, y, 3, 2.0)
    for i in range(z.shape[0]):
        keep = torch.arange(z.shape[0]) != i
        c = class_means(z[keep], y[keep], 3)  # z_i in none of the prototypes: the others don't hold it
        row = probabilities(-(z[i] - c).pow(2).sum(1, keepdim=True).T, 2.0)[0]
        assert torch.allclose(p[i], row, atol=1e-6), i


def test_out_of_sample_never_more_confident_in_the_given_label_than_in_sample():
    z, y = clusters(m=4, sep=2.0, seed=2)
    p_in, p_out = in_sample_probabilities(z, y, 3), loo_probabilities(z, y, 3)
    rows = torch.arange(z.shape[0])
    assert (p_out[rows, y] <= p_in[rows, y] + 1e-7).all()
    assert (p_out[rows, y] < p_in[rows, y]).any()


def test_in_sample_hides_a_wrong_label_that_leave_one_out_reveals():
    # class 0 = {0, 1}; class 1 = {10, 4}, where z = 4 is really class 0
    z = torch.tensor([[0.0], [1.0], [10.0], [4.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert in_sample_probabilities(z, y, 2)[3].argmax().item() == 1  # inside its prototype: agrees
    assert loo_probabilities(z, y, 2)[3].argmax().item() == 0  # out of sample: class 0


def test_a_flipped_label_is_flagged_first():
    z, y = clusters()
    assert find_label_issues(z, y, 3).numel() == 0  # clean, well separated: nothing flagged
    noisy = y.clone()
    noisy[5] = 1  # item 5 is class 0
    idx = find_label_issues(z, noisy, 3)
    assert idx.dtype == torch.long and idx.tolist() == [5]
    noisy[20] = 0  # a second one
    assert sorted(find_label_issues(z, noisy, 3).tolist()) == [5, 20]


def test_a_single_item_class_is_scored_against_the_others_and_cleanlab_warns():
    z, y = clusters(m=4)
    z, y = z[:9], y[:9]  # class 2 keeps one item (index 8)
    p = loo_probabilities(z, y, 3)
    assert p[8, 2].item() == 0.0 and p[8].sum().item() == pytest.approx(1.0)
    assert p[0, 2].item() >= 0.0 and p[:8].sum(1).allclose(torch.ones(8))
    with pytest.warns(UserWarning, match="too few examples"):
        idx = find_label_issues(z, y, 3)
    assert 8 not in idx.tolist()  # cleanlab does not prune a class with <= min_examples_per_class items


@pytest.mark.parametrize("z, y, n_way, T, match", [
    (torch.zeros(4), torch.tensor([0, 0, 1, 1]), 2, 1.0, "2-D tensor"),
    (torch.zeros(4, 2), torch.tensor([0, 1, 1]), 2, 1.0, "one label per row"),
    (torch.zeros(4, 2), torch.tensor([0.0, 0.0, 1.0, 1.0]), 2, 1.0, "integer class indices"),
    (torch.zeros(4, 2), torch.tensor([0, -1, 1, 1]), 2, 1.0, "Drop the none-of-these"),
    (torch.zeros(4, 2), torch.tensor([0, 0, 3, 1]), 2, 1.0, "outside 0..1"),
    (torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]), 3, 1.0, r"Class\(es\) \[2\] have no items"),
    (torch.zeros(4, 2), torch.tensor([0, 0, 0, 0]), 1, 1.0, "n_way must be an int >= 2"),
    (torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]), 2, 0.0, "temperature"),
])
def test_bad_audit_input(z, y, n_way, T, match):
    with pytest.raises(ValueError, match=match):
        loo_probabilities(z, y, n_way, T)
    with pytest.raises(ValueError, match=match):
        find_label_issues(z, y, n_way, T)
