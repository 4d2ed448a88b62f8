import pytest
import torch

from course_utils import baselines
from course_utils.episodes import ClassSet, sample_episode, sample_meta_batch
from conftest import toy_classes


def test_pixel_nn_finds_the_copy():
    g = torch.Generator().manual_seed(0)
    sx = torch.rand(6, 1, 5, 5, generator=g)
    sy = torch.tensor([2, 0, 1, 2, 0, 1])
    order = torch.tensor([3, 1, 4, 0, 5, 2])
    assert torch.equal(baselines.pixel_nn(sx, sy, sx[order]), sy[order])
    ep = sample_episode(toy_classes(), 4, 1, 2)
    assert baselines.pixel_nn_classify(ep).shape == (8,)


def blobs(n_classes=6, m=20, d=16, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, 1, d, generator=g)
    x = centres + noise * torch.randn(n_classes, m, d, generator=g)
    return ClassSet(x, [f"b/{i}" for i in range(n_classes)], ["b"] * n_classes, "blobs")


def test_linear_head_separates_blobs_batched():
    batch = sample_meta_batch(blobs(), 16, 5, 3, 5, torch.Generator().manual_seed(1))
    acc = baselines.linear_head_accuracies(batch)
    assert acc.shape == (16,) and acc.mean() > 0.95
    noisy = sample_meta_batch(blobs(noise=5.0), 16, 5, 1, 5, torch.Generator().manual_seed(1))
    assert baselines.linear_head_accuracies(noisy).mean() < 0.9  # the test can fail: noise hurts


def test_fit_linear_head_fits_the_support_set():
    ep = sample_episode(blobs(noise=0.5), 5, 5, 1, torch.Generator().manual_seed(2))
    W, b = baselines.fit_linear_head(ep.support_x, ep.support_y, 5)
    f = torch.nn.functional.normalize(ep.support_x, dim=-1)
    assert W.shape == (5, 16) and b.shape == (5,)
    assert ((f @ W.T + b).argmax(1) == ep.support_y).float().mean() == 1.0


def test_pretrain_and_embed_shapes():
    cs = toy_classes(6, 20, side=28)
    cs.x = (torch.rand(6, 20, 1, 28, 28) * 255).to(torch.uint8)
    net, hist = baselines.pretrain_embedding(cs, steps=3, batch_size=8, hidden=8)
    assert len(hist.values["loss"]) == 3 and not net.training
    emb = baselines.embed_classes(net, cs)
    assert emb.x.shape == (6, 20, 8) and emb.names == cs.names
    chunked = baselines.embed_classes(net, cs, batch_size=40, desc="embedding")  # 2 classes a chunk
    assert chunked.names == cs.names and torch.allclose(chunked.x, emb.x, atol=1e-5)
    ragged = ClassSet([cs.x[0], cs.x[1][:15], cs.x[2]], cs.names[:3], cs.alphabets[:3], "ragged")
    parts = baselines.embed_classes(net, ragged, batch_size=16, desc="embedding").x
    assert [tuple(p.shape) for p in parts] == [(20, 8), (15, 8), (20, 8)]
    assert torch.allclose(parts[1], emb.x[1][:15], atol=1e-5)


def test_linear_head_logits_one_episode_agree_with_the_batched_accuracy():
    batch = sample_meta_batch(blobs(noise=1.0), 4, 5, 1, 5, torch.Generator().manual_seed(3))
    one = baselines.linear_head_logits(sample_episode(blobs(noise=1.0), 5, 1, 5, torch.Generator().manual_seed(3)))
    assert one.shape == (25, 5)
    logits = baselines.linear_head_logits(batch)
    assert logits.shape == (4, 25, 5)
    acc = (logits.argmax(-1) == batch.query_y).float().mean(-1)
    assert torch.equal(acc, baselines.linear_head_accuracies(batch))
