"""Checks for chapter 00 (few-shot tasks): the episode sampler, pixel 1-NN, the 95% interval.

Each probe tests one property at a time and names the one that fails:

- 0.1 (sampler): what it returns (four tensors, shapes, float images in [0, 1], int64 labels
  0..N-1, class-major), that every row is an example of the class its label stands for, no class
  twice, no example twice (within the support set, within the query set, across the two), that
  each of N, K, Q and the generator is used, and over many seeds that the classes and the
  examples are drawn at random (not the first ones, not sorted, not shared between classes).
- 0.2 (pixel 1-NN): three probes (fewer queries than support images, labels not class-major; as
  many queries as support images; random images on which the metrics disagree) that tell the
  right answer from images left unflattened (an answer that is right on flattened images), the
  index instead of the label, the wrong axis, the farthest image, distances within one set,
  labels from positions, and another metric (L1, dot product, cosine).
- 0.3 (mean and 95% interval): each part of ``z * s / sqrt(n)`` is identified separately
  (z = 2, 1.645, 2.576, a t quantile, no z; population std, variance; no sqrt(n), n, sqrt(n - 1), a
  fixed n), and a probe whose values lie close together shows whether the answer is computed in
  float64.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable

import torch
from torch import Tensor

from .. import baselines, episodes
from ..checks import Mistake, describe, expect, expect_device_agnostic, expect_type, run_check
from ..episodes import ClassSet, Episode
from ..evaluation import Z95, student_t_quantile

__all__ = ["sample_episode", "nearest_neighbour", "mean_ci95"]


# ----------------------------------------------------------------------------- 0.1

def _reference_sample_episode(classes: ClassSet, n_way: int, k_shot: int, q_query: int,
                              generator: torch.Generator | None = None):
    ep = episodes.sample_episode(classes, n_way, k_shot, q_query, generator)
    return ep.support_x, ep.support_y, ep.query_x, ep.query_y


_C, _M, _H, _W = 12, 10, 4, 6  # classes, examples per class, image height and width (H != W)
_SEEDS = 30                     # seeds for the randomness checks


def _probe_classes() -> ClassSet:
    """12 classes x 10 examples of random (1, 4, 6) uint8 images that encode where they come from:
    pixel (0, 0) holds the class id, pixel (0, 1) the example id, pixel (0, 2) is 255."""
    x = torch.randint(0, 256, (_C, _M, 1, _H, _W), generator=torch.Generator().manual_seed(123),
                      dtype=torch.uint8)
    x[:, :, 0, 0, 0] = torch.arange(_C, dtype=torch.uint8)[:, None]
    x[:, :, 0, 0, 1] = torch.arange(_M, dtype=torch.uint8)[None, :]
    x[:, :, 0, 0, 2] = 255
    return ClassSet(x, [f"s/c{c}" for c in range(_C)], ["s"] * _C, "probe classes")


_ORIGINAL = _probe_classes().x


def _call(fn: Callable, n: int, k: int, q: int, generator: torch.Generator | None = None,
          keywords: bool = False):
    """Call the sampler on a fresh probe class set; name a change it makes to the set."""
    cs = _probe_classes()
    if keywords:
        out = fn(cs, n_way=n, k_shot=k, q_query=q, generator=generator)
    else:
        out = fn(cs, n, k, q, generator)
    if not isinstance(cs.x, Tensor) or cs.x.shape != _ORIGINAL.shape or not torch.equal(cs.x, _ORIGINAL):
        raise Mistake("your function changed its input `classes` in place (its examples `classes.x` are "
                      "different after the call). Inputs must stay as they were: index the examples "
                      "(`classes.x[c][pick]`) and convert the copy (`.float() / 255`), never assign into "
                      "`classes.x`.")
    return out


def _unpack(out: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if isinstance(out, Episode):
        raise Mistake("your function returned an Episode object; return the four tensors as a tuple "
                      "(support_x, support_y, query_x, query_y).")
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        raise Mistake("return a tuple of four tensors (support_x, support_y, query_x, query_y); your "
                      f"function returned {describe(out)}.")
    for t, name in zip(out, ("support_x", "support_y", "query_x", "query_y")):
        if not isinstance(t, Tensor):
            raise Mistake(f"{name} should be a tensor, but it is {describe(t)}.",
                          "torch.cat a list of tensors; torch.tensor or torch.arange make label tensors.")
    return tuple(out)  # type: ignore[return-value]


def _ids(x: Tensor) -> tuple[list[int], list[int]]:
    v = (x[:, 0, 0, :2].double() * 255).round().long()
    return v[:, 0].tolist(), v[:, 1].tolist()


def _check_images(x: Tensor, name: str, rows: int, cfg: str, k: int, q: int) -> None:
    if tuple(x.shape) != (rows, 1, _H, _W):
        hint = ""
        if x.dim() == 4 and x.shape[0] == rows and tuple(x.shape[1:]) != (1, _H, _W):
            hint = f"Each image keeps the shape (1, H, W) = (1, {_H}, {_W}) of classes.x[c][i]."
        elif name == "query_x" and x.dim() >= 1 and x.shape[0] == rows // q * k and k != q:
            hint = "The query set has N*Q rows: use q_query (not k_shot) for the query set."
        elif name == "support_x" and x.dim() >= 1 and x.shape[0] == rows // k * q and k != q:
            hint = "The support set has N*K rows: use k_shot (not q_query) for the support set."
        raise Mistake(f"with {cfg}, {name} has shape {tuple(x.shape)}, expected "
                      f"({'N*K' if name == 'support_x' else 'N*Q'}, 1, H, W) = {(rows, 1, _H, _W)}.", hint)
    if not x.is_floating_point():
        raise Mistake(f"{name} has dtype {x.dtype}: images should be float tensors in [0, 1].",
                      "Convert the uint8 examples with images.float() / 255.")
    hi, lo = float(x.max()), float(x.min())
    if hi > 1.0 + 1e-6 or lo < 0:
        raise Mistake(f"{name} should hold values in [0, 1], but they run from {lo:g} to {hi:g}.",
                      "Divide the uint8 values (0-255) by 255: images.float() / 255.")


def _check_labels(y: Tensor, name: str, rows: int, n: int, per: int, letter: str, cfg: str,
                  classes: list[int]) -> None:
    if tuple(y.shape) != (rows,):
        raise Mistake(f"with {cfg}, {name} has shape {tuple(y.shape)}, expected (N*{letter},) = ({rows},): "
                      "one label per image.")
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise Mistake(f"{name} has dtype {y.dtype}: labels should be integers (int64, torch.long).",
                      "torch.arange(n_way) already gives int64 labels; do not convert them to float.")
    if y.dtype != torch.int64:
        raise Mistake(f"{name} has dtype {y.dtype}: labels should be int64 (torch.long), the dtype "
                      "cross-entropy and indexing expect.", "torch.arange(n_way) already gives int64.")
    got = y.tolist()
    if any(v < 0 or v >= n for v in got):
        if got == classes:
            raise Mistake(f"{name} holds the global class ids {sorted(set(got))}, not the episode's own "
                          f"labels 0..{n - 1}.", "A learner must not see the global class ids: relabel the "
                          "N chosen classes 0..N-1 (torch.arange(n_way)).")
        raise Mistake(f"{name} must hold the labels 0..{n - 1} (N = {n}); got {sorted(set(got))}.")
    want = [c for c in range(n) for _ in range(per)]
    if got == want:
        return
    if sorted(got) == want:
        if got == [c for _ in range(per) for c in range(n)]:
            raise Mistake(f"{name} is interleaved ({got[:2 * n]} ...): the course's layout is class-major, "
                          f"[0]*{letter} + [1]*{letter} + ... = {want[:2 * per]} ...",
                          "Use labels.repeat_interleave(...), not labels.repeat(...), and keep each class's "
                          "images together.")
        raise Mistake(f"{name} is not class-major: got {got}, expected {want} (all rows of label 0 first, "
                      "then label 1, ...).")
    raise Mistake(f"{name} should hold each label 0..{n - 1} exactly {letter} = {per} times; got {got}.")


def _check_episode(out: Any, n: int, k: int, q: int) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """Everything one episode must satisfy; returns the class behind each label and the example ids
    of the support and query rows of each label."""
    cfg = f"N={n}, K={k}, Q={q}"
    sx, sy, qx, qy = _unpack(out)
    _check_images(sx, "support_x", n * k, cfg, k, q)
    _check_images(qx, "query_x", n * q, cfg, k, q)
    s_cls, s_ex = _ids(sx)
    q_cls, q_ex = _ids(qx)
    for x, cls, ex, name in ((sx, s_cls, s_ex, "support_x"), (qx, q_cls, q_ex, "query_x")):
        for i, (c, e) in enumerate(zip(cls, ex)):
            if not (0 <= c < _C and 0 <= e < _M) or \
                    not torch.allclose(x[i].double(), _ORIGINAL[c, e].double() / 255, atol=1e-6, rtol=0):
                raise Mistake(f"{name}[{i}] is not one of the examples divided by 255 (with {cfg}): each row "
                              "must be an example image classes.x[c][i], unchanged except for .float() / 255.")
    _check_labels(sy, "support_y", n * k, n, k, "K", cfg, s_cls)
    _check_labels(qy, "query_y", n * q, n, q, "Q", cfg, q_cls)
    chosen, sup, qry = [], [], []
    for y in range(n):
        rows_s = [i for i in range(n * k) if sy[i] == y]
        rows_q = [i for i in range(n * q) if qy[i] == y]
        cs = sorted({s_cls[i] for i in rows_s})
        expect(len(cs) == 1, f"the support images labelled {y} come from {len(cs)} different classes {cs} "
               f"(with {cfg}): all K images of one label must be examples of one class.")
        cq = sorted({q_cls[i] for i in rows_q})
        expect(cq == cs, f"the query images labelled {y} come from class(es) {cq}, but the support images "
               f"labelled {y} from class {cs[0]} (with {cfg}): support and query images of one label must "
               "be examples of the same class.")
        chosen.append(cs[0])
        sup.append([s_ex[i] for i in rows_s])
        qry.append([q_ex[i] for i in rows_q])
    twice = sorted({c for c in chosen if chosen.count(c) > 1})
    expect(not twice, f"the episode uses class {twice[0] if twice else ''} for more than one label "
           f"(classes by label: {chosen}, with {cfg}): the N classes must be distinct.",
           "Sample the classes without replacement: torch.randperm(len(classes), generator=generator)[:n_way] "
           "(torch.randint can repeat a class).")
    draw = ("Draw K+Q distinct examples per class with one torch.randperm(M, generator=generator)[:K+Q], "
            "then split them: the first K for the support set, the other Q for the query set.")
    for y in range(n):
        expect(len(set(sup[y])) == k, f"a support example is repeated within the class labelled {y} "
               f"(example ids {sup[y]}, with {cfg}).", draw)
        expect(len(set(qry[y])) == q, f"a query example is repeated within the class labelled {y} "
               f"(example ids {qry[y]}, with {cfg}): a query set of repeated images counts one "
               "mistake several times.", draw)
        both = sorted(set(sup[y]) & set(qry[y]))
        expect(not both, f"with {cfg}, {len(both)} example(s) of the class labelled {y} are in both the support "
               "and the query set: a query the learner has already seen makes the task trivial.", draw)
    return chosen, sup, qry


def _same(a: Any, b: Any) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_unpack(a), _unpack(b)))


def _probe_sample_episode(fn: Callable) -> None:
    n, k, q = 5, 2, 3
    with torch.random.fork_rng(devices=[]):  # the student's notebook keeps its own random state
        torch.manual_seed(1)
        first = _call(fn, n, k, q, torch.Generator().manual_seed(0))
        _check_episode(first, n, k, q)

        # every argument is used: change one at a time
        for name, (n2, k2, q2) in (("n_way", (3, k, q)), ("k_shot", (n, 3, q)), ("q_query", (n, k, 5))):
            out = _call(fn, n2, k2, q2, torch.Generator().manual_seed(0), keywords=name == "q_query")
            sx, _, qx, _ = _unpack(out)
            if name in ("n_way", "k_shot") and sx.shape[0] == n * k:
                raise Mistake(f"with {name}={dict(n_way=n2, k_shot=k2)[name]} instead of "
                              f"{dict(n_way=n, k_shot=k)[name]} (the other arguments unchanged) support_x "
                              f"still has {n * k} rows: your function does not use {name}.")
            if name in ("n_way", "q_query") and qx.shape[0] == n * q:
                raise Mistake(f"with {name}={dict(n_way=n2, q_query=q2)[name]} instead of "
                              f"{dict(n_way=n, q_query=q)[name]} (the other arguments unchanged) query_x "
                              f"still has {n * q} rows: your function does not use {name}.")
            _check_episode(out, n2, k2, q2)

        # the generator
        torch.manual_seed(2)
        again = _call(fn, n, k, q, torch.Generator().manual_seed(0))
        expect(_same(first, again), "two calls with generators seeded alike gave different episodes: some "
               "random call draws from torch's global random state instead of the generator.",
               "Pass generator=generator to every torch.randperm / torch.randint / torch.multinomial call.")
        g = torch.Generator().manual_seed(0)
        one, two = _call(fn, n, k, q, g), _call(fn, n, k, q, g)
        expect(not _same(one, two), "two calls in a row with the same generator gave the same episode: draw "
               "from the generator you were given (it advances with every draw), not from a copy of it or a "
               "new generator of your own.")
        _check_episode(_call(fn, n, k, q), n, k, q)  # generator=None: torch's global random state

        # randomness over seeds
        runs = [_check_episode(_call(fn, n, k, q, torch.Generator().manual_seed(s)), n, k, q)
                for s in range(_SEEDS)]
    chosen = [r[0] for r in runs]
    tell = f"over {_SEEDS} seeds with N={n}, K={k}, Q={q}"
    expect(any(c != list(range(n)) for c in chosen), f"{tell}, the episode is always made of the first N "
           f"classes {list(range(n))}: the classes must be sampled at random.",
           "torch.randperm(len(classes), generator=generator)[:n_way] picks N random classes.")
    expect(len({tuple(sorted(c)) for c in chosen}) > 1, f"{tell}, every episode uses the same classes "
           f"{sorted(chosen[0])}: the classes must be sampled at random, with the generator.")
    never = sorted(set(range(_C)) - {c for r in chosen for c in r})
    expect(not never, f"{tell}, classes {never} of the {_C} were never chosen: sample from all "
           "len(classes) classes.", "torch.randperm(len(classes), ...) covers them all; "
           "torch.randint(len(classes) - 1, ...) or a fixed range does not.")
    expect(any(c != sorted(c) for c in chosen), f"{tell}, the chosen classes always come in increasing order "
           "(label 0 is always the lowest class id): the labels should be assigned to the classes in a "
           "random order.", "Keep the order torch.randperm gives; do not sort the chosen classes.")
    sup = [e for r in runs for e in r[1]]
    qry = [e for r in runs for e in r[2]]
    first_k, next_q = list(range(k)), list(range(k, k + q))
    expect(not all(sorted(s) == first_k and sorted(t) == next_q for s, t in zip(sup, qry)),
           f"{tell}, the support set is always the first K examples of each class and the query set the next "
           "Q: the examples must be sampled at random within each class.",
           "torch.randperm(number of examples, generator=generator)[:K+Q] draws K+Q random, distinct examples.")
    unused = sorted(set(range(_M)) - {e for s in sup for e in s} - {e for t in qry for e in t})
    expect(not unused, f"{tell}, examples {unused} of the {_M} of each class were never used: draw from all of "
           "a class's examples.", "torch.randperm(len(classes.x[c]), generator=generator)[:K+Q]")
    shared = all(len({(tuple(a), tuple(b)) for a, b in zip(r[1], r[2])}) == 1 for r in runs)
    expect(not shared, f"{tell}, all classes of an episode always use the same example positions: draw the "
           "examples of each class separately (one randperm per class).")
    # the edge of what the arguments allow: every class (N = C) and every example (K + Q = M)
    try:
        _check_episode(_call(fn, _C, 1, _M - 1, torch.Generator().manual_seed(0)), _C, 1, _M - 1)
    except Mistake as m:
        raise Mistake(m.reason, f"Here N = {_C} is every class of the probe set and K + Q = {_M} every "
                      "example of a class: an episode may use them all.") from None


def sample_episode(student: Callable) -> Callable:
    """Exercise 0.1."""
    return run_check("0.1", "sample an episode", student, _reference_sample_episode, _probe_sample_episode)


# ----------------------------------------------------------------------------- 0.2

def _nn_inputs(kind: str):
    """Three probes: (support_x, support_y, query_x)."""
    g = torch.Generator().manual_seed({"a": 1, "b": 2, "c": 3}[kind])
    if kind == "a":  # 4-way 2-shot, 6 queries; labels not class-major: an index is not a label
        sx = torch.rand(8, 1, 5, 7, generator=g)
        sy = torch.tensor([2, 0, 3, 1, 2, 0, 1, 3])
        pick = torch.tensor([3, 6, 4, 0, 7, 2])
        qx = (sx[pick] + 0.05 * torch.rand(6, 1, 5, 7, generator=g)).clamp(0, 1)
    elif kind == "b":  # 4-way 2-shot, as many queries as support images, float64 images
        sx = torch.rand(8, 1, 6, 6, generator=g, dtype=torch.float64)
        sy = torch.tensor([1, 3, 0, 2, 2, 0, 3, 1])
        pick = torch.tensor([5, 2, 7, 0, 3, 6, 1, 4])
        qx = (sx[pick] + 0.05 * torch.rand(8, 1, 6, 6, generator=g, dtype=torch.float64)).clamp(0, 1)
    else:  # 5-way 2-shot on random images, where other distances and similarities disagree with L2
        sx = torch.rand(10, 1, 4, 4, generator=g) ** 2
        sy = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
        qx = torch.rand(40, 1, 4, 4, generator=g)
    return sx, sy, qx


def _nn_mistakes(sx: Tensor, sy: Tensor, qx: Tensor) -> dict[str, Tensor]:
    s, q = sx.flatten(1).double(), qx.flatten(1).double()
    d = torch.cdist(q, s)
    n_way = int(sy.max()) + 1
    k = len(sy) // n_way
    cos = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(s, dim=1).T
    candidates: dict[str, Callable[[], Tensor]] = {
        "you returned the index of the nearest support image, not its label: use support_y[index].":
            lambda: d.argmin(1),
        "you picked the FARTHEST support image (argmax of a distance): the nearest has the smallest "
        "distance, use argmin.": lambda: sy[d.argmax(1)],
        "your argmin runs over the queries (dim=0) instead of over the support images (dim=1): the "
        "distance matrix is (queries, support images), and each query needs the support image nearest "
        "to it.": lambda: sy[d.argmin(0)],
        "you measured distances among the support images (support vs support): each support image is "
        "then nearest to itself. Measure the queries against the support images: "
        "torch.cdist(query, support).": lambda: sy[torch.cdist(s, s).argmin(1)],
        "you measured distances among the queries (query vs query): each query is then nearest to itself. "
        "Measure the queries against the support images: torch.cdist(query, support).":
            lambda: sy[torch.cdist(q, q).argmin(1)],
        "you computed the label from the support image's position (index // K), which assumes the support "
        "set is class-major: look the label up instead, support_y[index].": lambda: d.argmin(1) // k,
        "you computed the label from the support image's position (index % N): look the label up "
        "instead, support_y[index].": lambda: d.argmin(1) % n_way,
        "you used the L1 (Manhattan) distance, sum |x - y|; the exercise uses the Euclidean distance "
        "||x - y||_2 (torch.cdist's default, p=2).": lambda: sy[torch.cdist(q, s, p=1).argmin(1)],
        "you used the dot product as a similarity; it favours images with more ink, not images that look "
        "alike. Use the Euclidean distance, torch.cdist.": lambda: sy[(q @ s.T).argmax(1)],
        "you used the cosine similarity; the exercise uses the Euclidean distance ||x - y||_2 "
        "(torch.cdist).": lambda: sy[cos.argmax(1)],
    }
    out = {}
    for explanation, make in candidates.items():
        try:
            out[explanation] = make()
        except IndexError:  # this mistake cannot happen on these inputs (it would raise instead)
            pass
    return out


_FLATTEN = "flatten each image to a vector first: x.flatten(start_dim=1) turns (B, 1, H, W) into (B, H*W)."


def _on_flattened(fn: Callable, sx: Tensor, sy: Tensor, qx: Tensor) -> str:
    """How ``fn`` does when the images come already flattened to (B, H*W) vectors: "right" (then its
    only mistake is that it does not flatten them itself), "runs" (no error, wrong labels) or ""."""
    try:
        out = fn(sx.flatten(1), sy, qx.flatten(1))
    except Exception:  # noqa: BLE001 - it fails for another reason too
        return ""
    right = baselines.pixel_nn(sx, sy, qx)
    ok = isinstance(out, Tensor) and out.shape == right.shape and torch.equal(out.detach().cpu().long(), right)
    return "right" if ok else "runs"


def _probe_nearest_neighbour(fn: Callable) -> None:
    for kind in ("a", "b", "c"):
        sx, sy, qx = _nn_inputs(kind)
        try:
            out = fn(sx, sy, qx)
        except Exception as err:  # noqa: BLE001
            flat = _on_flattened(fn, sx, sy, qx) if getattr(err, "_course_student", False) \
                and not isinstance(err, NotImplementedError) else ""
            if flat:
                then = ("gives the right labels" if flat == "right" else
                        "runs (its labels are still wrong then: the check's next message will say how)")
                raise Mistake(f"your code raised {type(err).__name__} ({err}) on images of shape "
                              f"{tuple(qx.shape)} (queries) and {tuple(sx.shape)} (support), but {then} when "
                              f"the images come already flattened: {_FLATTEN}",
                              "torch.cdist compares the rows of 2-D tensors; given 4-D images it treats the "
                              "leading dimensions as batch dimensions, which do not match.") from None
            raise
        n_q, n_s = len(qx), len(sx)
        if isinstance(out, (list, tuple)) and out and all(isinstance(v, Tensor) for v in out):
            raise Mistake(f"your function returned {describe(out)}: return only the predicted labels, one "
                          f"tensor of shape (NQ,) = ({n_q},).")
        expect_type(out, Tensor, "the predicted labels")
        right = baselines.pixel_nn(sx, sy, qx)
        if out.shape == right.shape and torch.equal(out.detach().cpu().long(), right):
            expect(not out.is_floating_point(), f"the labels are right but have dtype {out.dtype}: labels "
                   "should be integers.", "Return support_y[index] as it is (int64).")
            continue
        for explanation, wrong in _nn_mistakes(sx, sy, qx).items():
            if out.shape == wrong.shape and torch.equal(out.detach().cpu().double(), wrong.double()) \
                    and not torch.equal(wrong.long(), right):
                raise Mistake(f"the predicted labels are wrong. It looks like {explanation}")
        if _on_flattened(fn, sx, sy, qx) == "right":
            raise Mistake(f"the predicted labels have shape {tuple(out.shape)} on images of shape "
                          f"{tuple(qx.shape)}, but are right when the images come already flattened: {_FLATTEN}")
        if tuple(out.shape) != (n_q,):
            hint = ("A result with one entry per support image means the argmin ran over the queries (dim=0) "
                    "instead of over the support images (dim=1)." if tuple(out.shape) == (n_s,) else
                    "One label per query image; the distance matrix is (queries, support images) and its "
                    "argmin over dim=1 picks one support image per query.")
            raise Mistake(f"the predicted labels have shape {tuple(out.shape)}, expected one per query: "
                          f"({n_q},) ({n_q} queries, {n_s} support images here).", hint)
        expect(not out.is_floating_point(), f"labels should be integers, got dtype {out.dtype}.",
               "Look the labels up: support_y[index].")
        bad = (out.detach().cpu().long() != right).nonzero().flatten().tolist()
        raise Mistake(f"the predicted labels are wrong for {len(bad)} of {n_q} queries (first: query {bad[0]}, "
                      f"got {int(out[bad[0]])}, expected {int(right[bad[0]])}).",
                      "Flatten the images, measure Euclidean distances from each query to each support image "
                      "(torch.cdist(query, support)), take argmin over the support images and return "
                      "support_y at that index.")
    expect_device_agnostic(fn, *_nn_inputs("a"), what="your nearest_neighbour")


def nearest_neighbour(student: Callable) -> Callable:
    """Exercise 0.2."""
    return run_check("0.2", "pixel nearest neighbour", student, baselines.pixel_nn, _probe_nearest_neighbour)


# ----------------------------------------------------------------------------- 0.3

def _reference_mean_ci95(accuracies: Tensor) -> tuple[float, float]:
    a = accuracies.double()
    return a.mean().item(), 1.96 * a.std().item() / math.sqrt(a.numel())


def _ci_inputs() -> list[Tensor]:
    """Three probes: 8 accuracies in float64; 30 in float32 (as the notebook passes them); 40 in float64
    so close together that float32 rounding changes their standard deviation."""
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([0.6, 0.8, 0.7, 1.0, 0.95, 0.55, 0.85, 0.75], dtype=torch.float64)
    b = (torch.randint(30, 76, (30,), generator=g) / 75).float()
    c = 0.9 + 3e-5 * torch.randn(40, generator=g, dtype=torch.float64)
    return [a, b, c]


_Z = {"z = 1.96": 1.96, "z = 1.959964": Z95}  # both are right
_Z_WRONG = {
    "z = 2": (2.0, "z = 2 instead of 1.96 (2 rounds 1.96 up, and makes the interval 2% wider)"),
    "z = 1.645": (1.645, "z = 1.645, the factor of a 90% interval; a 95% interval uses 1.96"),
    "z = 1.6449": (1.6448536, "z = 1.645, the factor of a 90% interval; a 95% interval uses 1.96"),
    "z = 2.576": (2.576, "z = 2.576, the factor of a 99% interval; a 95% interval uses 1.96"),
    "z = 2.5758": (2.5758293, "z = 2.576, the factor of a 99% interval; a 95% interval uses 1.96"),
    "no z": (1.0, "s / sqrt(n) without the factor 1.96: that is the standard error, a 68% interval"),
    "full width": (2 * 1.96, "twice the half-width (the full width of the interval): return the half-width "
                             "1.96 * s / sqrt(n)"),
}
_SPREAD = {
    "population std": "the population standard deviation (it divides by n: unbiased=False, correction=0, or "
                      "numpy's np.std, whose default is ddof=0) instead of the sample standard deviation "
                      "(n - 1, Bessel's correction: Tensor.std's default)",
    "sample variance": "the variance instead of the standard deviation (take its square root)",
    "population variance": "the population variance (divides by n) instead of the sample standard deviation "
                           "(the square root of the variance with n - 1)",
}
_DIVISOR = {
    "1": "the standard deviation without the division by sqrt(n): s alone is the spread of single "
         "episodes, not the uncertainty of their mean",
    "n": "a division by n instead of sqrt(n)",
    "sqrt(n - 1)": "a division by sqrt(n - 1) instead of sqrt(n)",
    "sqrt(600)": "a fixed n = 600 instead of the number of values given (accuracies.numel())",
}


def _ci_diagnosis(half: float, a: Tensor) -> str:
    """Name each part of z * spread / divisor that differs from 1.96 * s / sqrt(n), or ''."""
    n = a.numel()
    var_s, var_p = a.var(correction=1).item(), a.var(correction=0).item()
    spreads = {"sample std": math.sqrt(var_s), "population std": math.sqrt(var_p),
               "sample variance": var_s, "population variance": var_p}
    divisors = {"sqrt(n)": math.sqrt(n), "1": 1.0, "n": float(n), "sqrt(n - 1)": math.sqrt(n - 1),
                "sqrt(600)": math.sqrt(600)}
    t = student_t_quantile(0.975, n - 1)
    zs = {**{k: (v, "") for k, v in _Z.items()}, **_Z_WRONG,
          "t": (t, f"Student's t quantile t(0.975, n - 1 = {n - 1}) = {t:.4f} instead of 1.96. That "
                   "interval is exact only for normally distributed values (per-episode accuracies are not: "
                   "they are bounded, multiples of one over the number of queries), and this exercise (like "
                   "the course and the papers) uses the normal quantile 1.96, so that intervals are "
                   "comparable")}
    best = None
    for (zk, (z, z_text)), (sk, s), (dk, dv) in itertools.product(zs.items(), spreads.items(), divisors.items()):
        if abs(half - z * s / dv) <= 1e-6 * abs(z * s / dv) + 1e-15:
            parts = [p for p in (z_text, _SPREAD.get(sk, ""), _DIVISOR.get(dk, "")) if p]
            if parts and (best is None or len(parts) < len(best)):
                best = parts
    return "; and ".join(best) if best else ""


def _number(v: Any, what: str) -> float:
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise Mistake(f"{what} should be one number, but it is {describe(v)}.",
                          "Reduce over all the accuracies (.mean(), .std()) and return .item().")
        return float(v.detach().double())
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
        raise Mistake(f"{what} should be a number (a float), but it is {describe(v)}.")
    return float(v)


def _probe_mean_ci95(fn: Callable) -> None:
    for i, acc in enumerate(_ci_inputs()):
        out = fn(acc)
        a, n = acc.double(), acc.numel()
        mean, s = a.mean().item(), a.std().item()
        half_right = 1.96 * s / math.sqrt(n)
        if isinstance(out, dict):
            raise Mistake(f"your function returned {describe(out)}; return a pair (mean, half_width).")
        if isinstance(out, (tuple, list)) and len(out) == 3:
            vals = [float(torch.as_tensor(v).double()) if isinstance(v, (int, float, Tensor)) else math.nan
                    for v in out]
            if abs(vals[1] - (mean - half_right)) < 1e-4 and abs(vals[2] - (mean + half_right)) < 1e-4:
                raise Mistake("your function returned (mean, lower bound, upper bound); return the pair "
                              "(mean, half_width): the bounds are mean - half_width and mean + half_width.")
        pair = isinstance(out, (tuple, list)) or (isinstance(out, Tensor) and out.dim() == 1)
        if not pair or len(out) != 2:
            raise Mistake(f"return a pair (mean, half_width); your function returned {describe(out)}.")
        m, h = _number(out[0], "the mean"), _number(out[1], "the half-width")
        if abs(m - (mean - half_right)) < 1e-4 and abs(h - (mean + half_right)) < 1e-4:
            raise Mistake("your function returned the interval's bounds (mean - half_width, mean + half_width); "
                          "return the pair (mean, half_width).")
        if abs(m - half_right) < 1e-6 and abs(h - mean) < 1e-6:
            raise Mistake("your function returned (half_width, mean): the pair is (mean, half_width), in that "
                          "order.")
        if abs(m - 100 * mean) < 1e-4:
            raise Mistake(f"the mean is {m:g}: a percentage. Return fractions (as the accuracies are): "
                          f"{mean:.6g}; the notebook multiplies by 100 when it prints.")
        if abs(m - mean) > 1e-6:
            if abs(m - a.median().item()) < 1e-6:
                raise Mistake("the mean: you returned the median; use accuracies.mean().")
            if abs(m - a.sum().item()) < 1e-4:
                raise Mistake("the mean: you returned the sum; divide by n, or use accuracies.mean().")
            raise Mistake(f"the mean is {m:.9g}, expected {mean:.9g} (the average of the {n} accuracies).")
        if abs(h - 100 * half_right) < 1e-4 * half_right * 100:
            raise Mistake("the half-width is a percentage (100 times too large): return fractions, as the "
                          "accuracies are.")
        z = h / (s / math.sqrt(n))
        if Z95 * (1 - 5e-6) <= z <= 1.96 * (1 + 5e-6):
            continue
        named = _ci_diagnosis(h, a)
        if named:
            raise Mistake(f"the half-width is {h:.6g}, expected 1.96 * s / sqrt(n) = {half_right:.6g}. It looks "
                          f"like you used {named}.")
        if i == 2 and abs(z / 1.96 - 1) < 0.05:
            raise Mistake(f"the half-width is {h:.9g}, expected {half_right:.9g}: right for the first two probes "
                          f"but not for {n} accuracies in float64 that lie close together (0.9, give or take "
                          "3e-5). Compute in float64 (the inputs are float64): no .float(), no torch.tensor(...) "
                          "of a list "
                          "(it makes float32), and prefer Tensor.std() to the one-pass formula "
                          "sqrt(mean(a**2) - mean(a)**2), which loses precision.")
        raise Mistake(f"the half-width is {h:.6g}, expected 1.96 * s / sqrt(n) = {half_right:.6g} (with n = {n}, "
                      f"mean {mean:.6g}, sample std s = {s:.6g}).",
                      "s is the sample standard deviation (n - 1; Tensor.std's default), n the number of "
                      "accuracies, 1.96 the 97.5% quantile of the standard normal.")


def mean_ci95(student: Callable) -> Callable:
    """Exercise 0.3."""
    return run_check("0.3", "mean and 95% interval", student, _reference_mean_ci95, _probe_mean_ci95)


EXERCISES = ["0.1", "0.2", "0.3"]
