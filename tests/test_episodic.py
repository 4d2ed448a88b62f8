import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from course_utils.episodes import ClassSet, sample_episode
from course_utils.episodic import (class_set_fingerprint, embed_class_set, evaluate_paired, make_classifier,
                                   train_episodic, train_or_load)
from course_utils.evaluation import evaluate
from course_utils.matching import MatchingNet, matching_loss
from course_utils.nets import conv4
from course_utils.protonet import ProtoNet, protonet_loss, protonet_logits, prototypes




def blob_classes(n_classes=12, n_examples=10, side=28, seed=0, title="blobs"):
    """Each class: a bright square at its own place, plus noise (easy to learn in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_classes, n_examples, 1, side, side, generator=g) * 0.3
    for c in range(n_classes):
        r, q = divmod(c, 4)
        x[c, :, 0, 2 + 6 * r: 8 + 6 * r, 2 + 6 * q: 8 + 6 * q] += 0.7
    names = [f"a/c{c}" for c in range(n_classes)]
    return ClassSet((x * 255).to(torch.uint8), names, ["a"] * n_classes, title)


@pytest.mark.parametrize("kind", ["proto", "matching"])
def test_training_improves_accuracy(kind):
    torch.manual_seed(0)
    train, test = blob_classes(seed=0), blob_classes(seed=1, title="blobs test")
    model = ProtoNet(conv4(hidden=8)) if kind == "proto" else MatchingNet(conv4(hidden=8), scale=10)
    loss_fn = protonet_loss if kind == "proto" else matching_loss
    classify = make_classifier(model)
    before = evaluate(classify, test, 5, 1, 3, n_episodes=20).mean
    hist = train_episodic(model, loss_fn, train, 5, 1, 3, steps=40, lr=3e-3, val=test, val_every=20,
                          val_episodes=5)
    after = evaluate(classify, test, 5, 1, 3, n_episodes=20).mean
    assert set(hist.values) >= {"loss", "acc", "val_acc"}
    assert len(hist.values["loss"]) == 40 and hist.steps["val_acc"] == [19, 39]
    assert after >= 0.9 and after > before
    assert model.training  # the trainer and classifier leave the mode as they found it


def test_higher_way_for_training_and_validation_way():
    torch.manual_seed(0)
    hist = train_episodic(ProtoNet(conv4(hidden=4)), protonet_loss, blob_classes(), 10, 1, 1, steps=2,
                          val=blob_classes(seed=2), val_way=5, val_shot=2, val_episodes=2)
    assert len(hist.values["val_acc"]) == 1


def test_make_classifier_no_grad_eval_and_custom_fn():
    model = ProtoNet(conv4(hidden=4)).train()
    ep = sample_episode(blob_classes(), 3, 2, 2)
    seen = {}

    def fn(m, e):
        seen["training"] = m.training
        return m(e)
    out = make_classifier(model, fn)(ep)
    assert out.shape == (6, 3) and not out.requires_grad
    assert seen["training"] is False and model.training


def test_embedded_evaluation_equals_episode_evaluation():
    torch.manual_seed(0)
    classes = blob_classes()
    model = ProtoNet(conv4(hidden=8))
    train_episodic(model, protonet_loss, classes, 5, 1, 2, steps=3)
    direct = evaluate(make_classifier(model), classes, 5, 2, 3, n_episodes=10, seed=7)
    emb = embed_class_set(model.encoder, classes)
    assert tuple(emb.x.shape) == (12, 10, 8)  # conv4(hidden=8): 28x28 -> 8 x 1 x 1
    fast = evaluate(lambda ep: protonet_logits(ep.query_x, prototypes(ep.support_x, ep.n_way, ep.k_shot)),
                    emb, 5, 2, 3, n_episodes=10, seed=7)
    assert abs(direct.mean - fast.mean) < 1e-9


def test_train_or_load_caches_by_config(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    classes = blob_classes()
    torch.manual_seed(0)
    m1 = ProtoNet(conv4(hidden=4))
    h1 = train_or_load("t", m1, protonet_loss, classes, {"data": "blobs"}, n_way=3, k_shot=1, q_query=1,
                       steps=2)
    torch.manual_seed(1)
    m2 = ProtoNet(conv4(hidden=4))
    h2 = train_or_load("t", m2, protonet_loss, classes, {"data": "blobs"}, n_way=3, k_shot=1, q_query=1,
                       steps=2)
    assert h1.values == h2.values
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert len(list(tmp_path.rglob("*.pt"))) == 1
    train_or_load("t", ProtoNet(conv4(hidden=4)), protonet_loss, classes, {"data": "blobs"}, n_way=3,
                  k_shot=1, q_query=1, steps=3)
    assert len(list(tmp_path.rglob("*.pt"))) == 2
    assert class_set_fingerprint(classes) != class_set_fingerprint(blob_classes(n_classes=11))


def test_train_or_load_key_covers_a_notebook_loss_functions_code(tmp_path, monkeypatch):
    """A loss written in a notebook (and the functions it calls) is part of the key: edit it, retrain."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    classes = blob_classes()

    def notebook_loss(body):
        ns = {"protonet_loss": protonet_loss, "torch": torch}     # no __name__: like notebook code
        exec("def helper(model, ep):\n    " + body + "\n"
             "def my_loss(model, ep):\n    return helper(model, ep)\n", ns)
        return ns["my_loss"]

    for body, files in (("return protonet_loss(model, ep)", 1), ("return protonet_loss(model, ep)", 1),
                        ("loss, s = protonet_loss(model, ep)\n    return 2 * loss, s", 2)):
        torch.manual_seed(0)
        train_or_load("t", ProtoNet(conv4(hidden=4)), notebook_loss(body), classes, {"data": "blobs"},
                      n_way=3, k_shot=1, q_query=1, steps=1)
        assert len(list(tmp_path.rglob("*.pt"))) == files, body


def test_evaluate_paired_scores_every_method_on_the_same_episodes():
    classes = blob_classes(n_examples=8)
    torch.manual_seed(0)
    enc = conv4(hidden=4)
    z = embed_class_set(enc, classes)
    z2 = ClassSet(z.x * 3.0, list(z.names), list(z.alphabets), "scaled")        # same classes, same counts

    def proto(ep):
        return protonet_logits(ep.query_x, prototypes(ep.support_x, ep.n_way, ep.k_shot))

    seen = {"a": [], "b": []}

    def logging(key):
        def classify(ep):
            seen[key].append(ep.classes)
            return proto(ep)
        return classify
    accs, per = evaluate_paired({"a": (z, logging("a")), "b": (z2, logging("b"))}, 3, 2, 2, n_episodes=7, seed=4)
    assert seen["a"] == seen["b"] and len(seen["a"]) == 7          # the same episodes, in the same order
    assert per["a"].shape == (7,) and torch.equal(per["a"], per["b"])  # scaling does not change the argmin
    ref = evaluate(proto, z, 3, 2, 2, n_episodes=7, seed=4)
    assert accs["a"].mean == pytest.approx(ref.mean) and accs["a"].ci95 == pytest.approx(ref.ci95)
    with pytest.raises(ValueError, match="not the same classes"):
        evaluate_paired({"a": (z, proto), "b": (z.subset(range(11)), proto)}, 3, 2, 2, n_episodes=2)


def test_bad_inputs_give_clear_errors():
    model, classes = ProtoNet(conv4(hidden=4)), blob_classes()
    with pytest.raises(ValueError, match="steps"):
        train_episodic(model, protonet_loss, classes, 3, 1, 1, steps=0)
    with pytest.raises(ValueError, match="needs 20 classes"):
        train_episodic(model, protonet_loss, classes, 20, 1, 1, steps=1)
    with pytest.raises(ValueError, match="needs 30 classes"):
        train_episodic(model, protonet_loss, classes, 3, 1, 1, steps=1, val=classes, val_way=30)
    with pytest.raises(ValueError, match="lr"):
        train_episodic(model, protonet_loss, classes, 3, 1, 1, steps=1, lr=0)
    with pytest.raises(ValueError, match="scalar loss"):
        train_episodic(model, lambda m, e: (m(e), m(e)), classes, 3, 1, 1, steps=1)
    with pytest.raises(ValueError, match="nn.Module"):
        train_episodic(lambda e: e, protonet_loss, classes, 3, 1, 1, steps=1)
    with pytest.raises(ValueError, match="clip_grad_norm"):
        train_episodic(model, protonet_loss, classes, 3, 1, 1, steps=1, clip_grad_norm=0)


def test_divergence_stops_training_with_a_clear_error():
    model, classes = ProtoNet(conv4(hidden=4)), blob_classes()

    def blows_up(m, ep):
        loss, scores = protonet_loss(m, ep)
        return (loss * float("nan") if blows_up.calls == 2 else loss), scores
    blows_up.calls = 0

    def counting(m, ep):
        blows_up.calls += 1
        return blows_up(m, ep)
    with pytest.raises(FloatingPointError, match="diverged at step 1.*clip_grad_norm"):
        train_episodic(model, counting, classes, 3, 1, 1, steps=5)
    assert all(torch.isfinite(p).all() for p in model.parameters())   # the NaN step was not applied


def test_gradient_clipping_bounds_each_step():
    seen = []

    def record(optimizer, args, kwargs):               # runs just before every optimiser step
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
    handle = register_optimizer_step_pre_hook(record)
    try:
        hurry = lambda m, ep: (1e4 * protonet_loss(m, ep)[0], None)               # huge gradients
        for clip in (None, 0.5):
            torch.manual_seed(0)
            train_episodic(ProtoNet(conv4(hidden=4)), hurry, blob_classes(), 3, 1, 1, steps=3, clip_grad_norm=clip)
    finally:
        handle.remove()
    unclipped, clipped = seen[:3], seen[3:]
    assert min(unclipped) > 0.5 and max(clipped) <= 0.5 + 1e-4
