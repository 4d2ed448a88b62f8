"""The shared machinery (sampler, ProtoNet, MAML, evaluation) serves non-image items unchanged.

Classes here are "languages" of random strings over their own letters; the feature function counts
letters, so a class is recognisable from a few of its strings. ProtoNet and MAML learn on it with the
same code that trains on images.
"""
import torch
from torch import nn

from course_utils import episodes as E
from course_utils.episodic import class_set_fingerprint, embed_class_set, train_episodic
from course_utils.evaluation import evaluate
from course_utils.maml import MAML
from course_utils.protonet import ProtoNet, classify_embedded, protonet_loss

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def letter_counts(items):
    out = torch.zeros(len(items), len(ALPHABET))
    for i, s in enumerate(items):
        for ch in s:
            out[i, ALPHABET.index(ch)] += 1
    return out


def string_classes(n_classes=12, per_class=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, names = [], []
    for c in range(n_classes):
        weights = torch.rand(26, generator=g) ** 4          # each class favours a few letters
        idx = torch.multinomial(weights, per_class * 8, replacement=True, generator=g).view(per_class, 8)
        x.append(["".join(ALPHABET[i] for i in row) for row in idx.tolist()])
        names.append(f"lang{c}")
    return E.ClassSet(x, names, [f"fam{c % 3}" for c in range(n_classes)], "strings", letter_counts)


def test_protonet_trains_and_evaluates_on_strings_through_the_shared_code():
    torch.manual_seed(0)
    train, test = E.split_classes(string_classes(), [8, 4], seed=0, titles=["train", "test"])
    model = ProtoNet(nn.Sequential(nn.Linear(26, 16)))
    hist = train_episodic(model, protonet_loss, train, 4, 1, 5, steps=60, lr=1e-2, desc="strings")
    assert len(hist.values["loss"]) == 60
    acc = evaluate(lambda ep: model(ep), test, 4, 1, 5, n_episodes=50, seed=1)
    assert acc.mean > 0.5                                       # chance is 0.25
    emb = embed_class_set(model.encoder, test)                   # featurised once, then embedded
    assert emb.x.shape == (4, 20, 16)
    with torch.no_grad():
        direct = evaluate(lambda ep: model(ep), test, 4, 1, 5, n_episodes=20, seed=2)
    assert abs(evaluate(classify_embedded, emb, 4, 1, 5, n_episodes=20, seed=2).mean - direct.mean) < 1e-9


def test_maml_adapts_a_linear_head_on_string_features():
    torch.manual_seed(0)
    train = string_classes(seed=1)
    head = nn.Linear(26, 4)
    maml = MAML(head, alpha=0.5, steps=3, loss="cross_entropy")
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    sampler = E.EpisodeSampler(train, 4, 2, 5, batch_size=4, seed=0)
    losses = [maml.meta_step(opt, *(lambda b: (b.support_x, b.support_y, b.query_x, b.query_y))(next(sampler)))
              for _ in range(30)]
    assert sum(losses[-5:]) < sum(losses[:5])
    acc = evaluate(maml.classify, train, 4, 2, 5, n_episodes=30, seed=3)
    assert acc.mean > 0.5


def test_cache_fingerprint_covers_the_feature_function():
    a = string_classes()
    b = E.ClassSet(a.x, a.names, a.alphabets, a.title, lambda items: letter_counts(items) * 2)
    assert class_set_fingerprint(a) != class_set_fingerprint(b)


def test_a_featurised_set_remembers_its_feature_function_for_cache_keys():
    a = string_classes()
    doubled = E.ClassSet(a.x, a.names, a.alphabets, a.title, lambda items: letter_counts(items) * 2)
    fa, fb = a.featurised(), doubled.featurised()
    assert fa.features is None and fa.source and fa.source != fb.source
    assert class_set_fingerprint(fa) != class_set_fingerprint(fb)
    assert class_set_fingerprint(fa) == class_set_fingerprint(string_classes().featurised())
    assert fa.subset([0, 1]).source == fa.source
