"""labelling_data: the splits, the pool sampler and the encoder checkpoint round trip."""
from __future__ import annotations

import pytest
import torch

from course_utils.episodes import ClassSet, base_name
from course_utils.labelling_data import (NONE, embed, labelling_data, load_encoder, sample_pool,
                                         save_encoder)
from course_utils.nets import conv4


def _embedded(c: int = 12, m: int = 20, d: int = 4) -> ClassSet:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(c, m, d, generator=g) + 10 * torch.arange(c).view(c, 1, 1).float()
    return ClassSet(x, [f"a/c{i}" for i in range(c)], ["a"] * c, "toy")


def test_glyph_splits_are_disjoint_and_new_alphabets_unseen():
    data = labelling_data("glyphs")
    assert data.source == "glyphs"
    train_bases = {base_name(n) for n in data.train.names}
    assert not train_bases & set(data.val.names), "meta-val characters leak into meta-training"
    assert not set(data.train.alphabets) & set(data.new.alphabets), "a new alphabet was seen in training"
    assert all("/rot" not in n for n in data.val.names + data.new.names), "val and new must be unrotated"
    assert len(data.train) == 4 * (len(train_bases))


def test_sample_pool_shapes_labels_and_distractors():
    emb = _embedded()
    p = sample_pool(emb, n_way=3, k_shot=2, m_per_class=5, n_distractors=2, m_distractor=4,
                    generator=torch.Generator().manual_seed(1))
    assert p.support_z.shape == (6, 4) and p.support_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert p.pool_z.shape == (3 * 5 + 2 * 4, 4)
    assert (p.pool_y == NONE).sum() == 8 and p.is_distractor.sum() == 8
    assert sorted(p.pool_y[p.pool_y >= 0].tolist()) == sorted([0] * 5 + [1] * 5 + [2] * 5)
    assert not set(p.classes) & set(p.distractor_classes)
    # Each pool item is an example of the class its label names (clusters are 10 apart).
    for z, y in zip(p.pool_z, p.pool_y.tolist()):
        centre = round(float(z.mean()) / 10)
        name = f"a/c{centre}"
        assert (name in p.distractor_classes) if y == NONE else (p.classes[y] == name)
    # Supports and pool items of a class are different examples.
    flat = torch.cat([p.support_z, p.pool_z])
    assert torch.unique(flat, dim=0).shape[0] == flat.shape[0]


def test_sample_pool_is_seeded():
    emb = _embedded()
    a = sample_pool(emb, 3, 1, 4, generator=torch.Generator().manual_seed(5))
    b = sample_pool(emb, 3, 1, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.pool_z, b.pool_z) and a.classes == b.classes


@pytest.mark.parametrize("kwargs, words", [
    (dict(n_way=10, k_shot=1, m_per_class=2, n_distractors=5), "need 15 classes"),
    (dict(n_way=3, k_shot=5, m_per_class=16), r"k_shot \+ m_per_class = 21"),
    (dict(n_way=1, k_shot=1, m_per_class=2), "at least 2"),
    (dict(n_way=3, k_shot=0, m_per_class=2), "k_shot must be >= 1"),
])
def test_sample_pool_bad_requests(kwargs, words):
    with pytest.raises(ValueError, match=words):
        sample_pool(_embedded(), **kwargs)


def test_encoder_checkpoint_round_trip(tmp_path):
    net = conv4()
    path = tmp_path / "enc.pt"
    save_encoder(net, path)
    back = load_encoder(path)
    x = torch.rand(3, 1, 28, 28)
    net.eval()
    assert torch.allclose(back(x), net(x))
    assert torch.allclose(embed(back, (x * 255).to(torch.uint8)), embed(net, (x * 255).to(torch.uint8) / 255.0))


def test_load_encoder_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_encoder(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_encoder(junk)
    wrong = tmp_path / "wrong.pt"
    torch.save({"state": torch.nn.Linear(2, 2).state_dict()}, wrong)
    with pytest.raises(ValueError, match="Conv-4 embedding"):
        load_encoder(wrong)


def test_embed_rejects_wrong_dims():
    with pytest.raises(ValueError, match="4-D tensor"):
        embed(conv4(), torch.zeros(28, 28))


def test_pool_images_are_the_embedded_examples():
    from course_utils.labelling_data import pool_images
    emb = _embedded()
    # "images" = the embeddings themselves, so the lookup must give back exactly the pool's rows.
    p = sample_pool(emb, 3, 2, 4, n_distractors=1, generator=torch.Generator().manual_seed(3))
    sx, px = pool_images(p, emb)
    assert torch.equal(sx, p.support_z) and torch.equal(px, p.pool_z)


def test_meta_val_holds_whole_alphabets():
    data = labelling_data("glyphs", n_val=100)
    assert len(data.val) >= 100
    assert not set(data.val.alphabets) & set(data.train.alphabets), "meta-val must be split by alphabet"
