import pytest
import torch

from course_utils import episodes as E
from conftest import toy_classes
from course_utils.episodes import ClassSet, sample_episode, split_by_alphabet, with_rotations


def decode(x):
    """(class, example) ids written into the toy images."""
    v = (x[:, 0, 0, :2] * 255).round().long()
    return v[:, 0], v[:, 1]


def test_episode_shapes_labels_and_class_major_order(toy):
    ep = E.sample_episode(toy, 5, 2, 3, torch.Generator().manual_seed(1))
    assert ep.support_x.shape == (10, 1, 8, 8) and ep.query_x.shape == (15, 1, 8, 8)
    assert ep.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert ep.query_y.tolist() == sum([[c] * 3 for c in range(5)], [])
    assert ep.support_x.dtype == torch.float32 and 0 <= ep.support_x.min() and ep.support_x.max() <= 1
    assert len(ep.classes) == 5 and len(set(ep.classes)) == 5


def test_labels_map_to_classes_and_support_query_disjoint(toy):
    ep = E.sample_episode(toy, 4, 3, 5, torch.Generator().manual_seed(2))
    sc, sm = decode(ep.support_x)
    qc, qm = decode(ep.query_x)
    for y in range(4):
        cls = toy.names.index(ep.classes[y])
        assert (sc[ep.support_y == y] == cls).all() and (qc[ep.query_y == y] == cls).all()
        s_ids = set(sm[ep.support_y == y].tolist())
        q_ids = set(qm[ep.query_y == y].tolist())
        assert not s_ids & q_ids, "a query example also appears in the support set"
        assert len(s_ids) == 3 and len(q_ids) == 5


def test_seeded_sampling_is_repeatable_and_varies(toy):
    a = E.sample_episode(toy, 5, 1, 2, torch.Generator().manual_seed(7))
    b = E.sample_episode(toy, 5, 1, 2, torch.Generator().manual_seed(7))
    c = E.sample_episode(toy, 5, 1, 2, torch.Generator().manual_seed(8))
    assert torch.equal(a.support_x, b.support_x) and a.classes == b.classes
    assert not torch.equal(a.query_x, c.query_x)
    s1, s2 = E.EpisodeSampler(toy, 3, 1, 1, seed=3), E.EpisodeSampler(toy, 3, 1, 1, seed=3)
    assert all(next(s1).classes == next(s2).classes for _ in range(5))


def test_every_class_gets_sampled(toy):
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        seen |= set(E.sample_episode(toy, 3, 1, 1, gen).classes)
    assert seen == set(toy.names)


def test_meta_batch_stacks_tasks(toy):
    mb = E.sample_meta_batch(toy, 4, 5, 1, 2, torch.Generator().manual_seed(0))
    assert mb.batched and mb.support_x.shape == (4, 5, 1, 8, 8) and mb.query_y.shape == (4, 10)
    t = mb.task(2)
    assert not t.batched and t.classes == mb.classes[2]
    with pytest.raises(ValueError, match="meta-batch"):
        t.task(0)
    sampler = E.EpisodeSampler(toy, 5, 1, 2, batch_size=3)
    assert next(sampler).support_x.shape[0] == 3


def test_list_classset_with_unequal_counts():
    xs = [torch.rand(n, 1, 4, 4) for n in (5, 7, 6)]
    cs = E.ClassSet(xs, ["a/x", "a/y", "b/z"], ["a", "a", "b"], "ragged")
    assert cs.min_examples() == 5
    ep = E.sample_episode(cs, 3, 2, 3)
    assert ep.query_x.shape == (9, 1, 4, 4)
    with pytest.raises(ValueError, match="only 5"):
        E.sample_episode(cs, 3, 3, 3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_way=13, k_shot=1, q_query=1), "only 12"),
    (dict(n_way=5, k_shot=15, q_query=6), "k_shot \\+ q_query"),
    (dict(n_way=0, k_shot=1, q_query=1), "n_way must be an integer >= 1"),
    (dict(n_way=5, k_shot=0, q_query=1), "k_shot must be an integer >= 1"),
    (dict(n_way=5, k_shot=1, q_query=0), "q_query must be an integer >= 1"),
    (dict(n_way=5.0, k_shot=1, q_query=1), "n_way must be an integer"),
])
def test_bad_requests_say_what_to_change(toy, kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.sample_episode(toy, **kwargs)
    with pytest.raises(ValueError, match=match):
        E.EpisodeSampler(toy, **kwargs)


def test_empty_set_and_wrong_type():
    empty = toy_classes().subset([], "empty split")
    with pytest.raises(ValueError, match="empty"):
        E.sample_episode(empty, 1, 1, 1)
    with pytest.raises(ValueError, match="ClassSet"):
        E.sample_episode(torch.zeros(3, 4), 1, 1, 1)


def test_classset_validation():
    with pytest.raises(ValueError, match="one name"):
        E.ClassSet(torch.zeros(2, 3, 1, 2, 2), ["a"], ["x", "y"])
    with pytest.raises(ValueError, match="unique"):
        E.ClassSet(torch.zeros(2, 3, 1, 2, 2), ["a", "a"], ["x", "y"])


def test_rotations_are_new_classes_with_rotated_images():
    cs = toy_classes(4, 3)
    cs.x[:, :, 0, 7, 0] = 200  # a mark in the bottom-left corner
    r = E.with_rotations(cs)
    assert len(r) == 16 and r.names[4].endswith("/rot90") and r.names[0] == cs.names[0]
    assert torch.equal(r.x[4], torch.rot90(cs.x[0], 1, dims=(-2, -1)))
    assert torch.equal(r.x[8], torch.rot90(cs.x[0], 2, dims=(-2, -1)))
    assert E.base_name(r.names[12]) == cs.names[0]
    with pytest.raises(ValueError, match="multiples of 90"):
        E.with_rotations(cs, (45,))


def test_split_classes_disjoint_complete_repeatable(toy):
    a, b, c = E.split_classes(toy, [6, 4, 2], seed=1, titles=("tr", "va", "te"))
    assert (len(a), len(b), len(c)) == (6, 4, 2)
    assert set(a.names) | set(b.names) | set(c.names) == set(toy.names)
    a2, *_ = E.split_classes(toy, [6, 4, 2], seed=1)
    assert a.names == a2.names
    assert torch.equal(a.x[0], toy.x[toy.names.index(a.names[0])])
    f1, f2 = E.split_classes(toy, [0.75, 0.25])
    assert (len(f1), len(f2)) == (9, 3)


@pytest.mark.parametrize("sizes,match", [([12, 0], "at least one class"), ([10, 5], "need 15"),
                                         ([0.5, 0.6], "sum to 1")])
def test_bad_splits(toy, sizes, match):
    with pytest.raises(ValueError, match=match):
        E.split_classes(toy, sizes)


def test_overlap_is_caught_including_rotations(toy):
    a, b = E.split_classes(toy, [6, 6])
    E.check_disjoint(a, b)
    leaked = E.with_rotations(a.subset([0], "test with leak"))
    with pytest.raises(ValueError, match="overlap"):
        E.check_disjoint(E.with_rotations(a), leaked)


def test_split_by_alphabet(toy):
    a, b = E.split_by_alphabet(toy, [["a0", "a1"], ["a2"]], ("bg", "ev"))
    assert set(a.alphabets) == {"a0", "a1"} and set(b.alphabets) == {"a2"}
    with pytest.raises(ValueError, match="Unknown alphabets"):
        E.split_by_alphabet(toy, [["zz"]])
    with pytest.raises(ValueError, match="two groups"):
        E.split_by_alphabet(toy, [["a0"], ["a0"]])


def test_episode_to_device(toy):
    ep = E.sample_episode(toy, 2, 1, 1).to("cpu")
    assert ep.support_x.device.type == "cpu"


# --------------------------------------------------------------- items with a feature function

def _length_features(items):
    """A toy feature function: each string becomes (its length, its first character code)."""
    return torch.tensor([[float(len(s)), float(ord(s[0]))] for s in items])


def _item_set():
    words = [[f"{c}{'x' * i}" for i in range(1, 9)] for c in "abcdef"]
    return ClassSet(words, [f"w{c}" for c in "abcdef"], ["g1"] * 3 + ["g2"] * 3, "words", _length_features)


def test_item_class_set_samples_featurised_episodes_from_the_chosen_items_only():
    calls = []

    def feats(items):
        calls.append(len(items))
        return _length_features(items)

    words = _item_set()
    words.features = feats
    ep = sample_episode(words, 3, 2, 3, torch.Generator().manual_seed(0))
    assert ep.support_x.shape == (6, 2) and ep.query_x.shape == (9, 2)
    assert calls == [5, 5, 5]                     # K + Q items of each of the N classes, never the whole set
    for n, name in enumerate(ep.classes):          # every row of class n comes from the class it names
        first = ord(name[1])
        assert (ep.support_x[ep.support_y == n, 1] == first).all()
        assert (ep.query_x[ep.query_y == n, 1] == first).all()
    rows = torch.cat([ep.support_x, ep.query_x])
    assert len({tuple(r.tolist()) for r in rows}) == 15   # support and query never share an item


def test_item_class_set_subset_split_featurised_and_errors():
    words = _item_set()
    assert words.min_examples() == 8 and words.item_shape == (2,) and words.n_examples(2) == 8
    a, b = split_by_alphabet(words, [["g1"], ["g2"]])
    assert a.features is words.features and b.names == ["wd", "we", "wf"]
    dense = words.featurised()
    assert isinstance(dense.x, torch.Tensor) and dense.x.shape == (6, 8, 2) and dense.features is None
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    e1, e2 = sample_episode(words, 4, 1, 2, g1), sample_episode(dense, 4, 1, 2, g2)
    assert torch.equal(e1.support_x, e2.support_x) and torch.equal(e1.query_x, e2.query_x)
    with pytest.raises(ValueError, match="K \\+ Q|k_shot \\+ q_query"):
        sample_episode(words, 2, 5, 4)
    bad = ClassSet(words.x, words.names, words.alphabets, "bad", lambda items: torch.zeros(1, 2))
    with pytest.raises(ValueError, match="one row per item"):
        sample_episode(bad, 2, 1, 1)
    with pytest.raises(ValueError, match="features must be a function"):
        ClassSet(words.x, words.names, words.alphabets, "bad", features="ngrams")
    with pytest.raises(ValueError, match="stored as tensors"):
        with_rotations(words)
