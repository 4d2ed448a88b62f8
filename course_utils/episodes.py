"""Few-shot tasks: class sets, class-disjoint splits and N-way K-shot episodes.

An *episode* (Vinyals et al., 2016) is a small classification task: pick N
classes, give the learner K labelled examples of each (the *support set*
S = {(x_i, y_i)}, |S| = N*K) and ask it to label Q further examples of each
(the *query set*, |Q| = N*Q). Labels are 0..N-1 in a random order, so a
learner cannot memorise classes; it must learn how to learn from S.

Data is held as a :class:`ClassSet`: examples grouped by class. The examples are tensors
(images, vectors), or any items (sentences, waveforms of different lengths) together with a
*feature function* that turns a list of items into a tensor batch: episodes then featurise only
the items they draw, so text, audio and images go through the same sampler. Splits are
made by *class* (never by example), so meta-test classes are unseen during
meta-training. Support and query tensors are class-major: rows ``c*K .. c*K+K-1``
of the support set are class ``c``.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

__all__ = ["ClassSet", "Episode", "sample_episode", "sample_meta_batch", "EpisodeSampler",
           "with_rotations", "split_classes", "split_by_alphabet", "check_disjoint", "base_name"]

_ROT = re.compile(r"/rot\d+$")


def base_name(name: str) -> str:
    """The class name without its rotation suffix: ``'Latin/a/rot90'`` -> ``'Latin/a'``."""
    return _ROT.sub("", name)


@dataclass
class ClassSet:
    """Examples grouped by class.

    Attributes:
        x: ``(C, M, *item_shape)`` tensor (every class has M examples) or a list of C tensors
            ``(M_c, *item_shape)``. Images are ``(1, H, W)`` items, uint8 (0-255, ink high) or float.
            With ``features``: a list of C sequences of raw items (strings, 1-D waveforms, ...).
        names: C unique class names, e.g. ``'Greek/alpha'``; rotated copies end in ``/rot90``.
        alphabets: the group (alphabet, script, language family, voice...) of each class.
        title: what the set is, for plots and messages.
        features: ``features(list_of_items) -> Tensor (len, *item_shape)``; ``None`` when the
            examples are tensors already.
        source: what made the examples, for cache keys (``featurised()`` records its feature function).
    """

    x: Tensor | list[Tensor] | list[Sequence[Any]]
    names: list[str]
    alphabets: list[str]
    title: str = "class set"
    features: Callable[[Sequence[Any]], Tensor] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.features is not None and not callable(self.features):
            raise ValueError(f"{self.title}: features must be a function list_of_items -> Tensor, got "
                             f"{type(self.features).__name__}.")
        n = len(self.x)
        if len(self.names) != n or len(self.alphabets) != n:
            raise ValueError(f"{self.title}: {n} classes of examples but {len(self.names)} names and "
                             f"{len(self.alphabets)} alphabets; give one name and one alphabet per class.")
        if len(set(self.names)) != n:
            dup = sorted({s for s in self.names if self.names.count(s) > 1})[:3]
            raise ValueError(f"{self.title}: class names must be unique; repeated: {dup}")

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        shape = tuple(self.x[0].shape[1:]) if len(self) else ()
        return (f"ClassSet({self.title!r}: {len(self)} classes, {len(set(self.alphabets))} alphabets, "
                f"{self.min_examples()}+ examples of shape {shape})")

    def items(self, c: int) -> Tensor | Sequence[Any]:
        """The stored examples of class ``c``: a tensor, or the raw items when there is a feature function."""
        return self.x[c]

    def n_examples(self, c: int) -> int:
        """How many examples class ``c`` has."""
        return len(self.x[c])

    def take(self, c: int, idx: Sequence[int] | Tensor) -> Tensor:
        """Examples ``idx`` of class ``c`` as a tensor ``(len(idx), *item_shape)`` (featurised if need be)."""
        ex = self.x[c]
        if self.features is None:
            return ex[torch.as_tensor(idx, dtype=torch.long)]
        return _featurise(self, [ex[int(i)] for i in idx])

    def examples(self, c: int) -> Tensor:
        """All examples of class ``c`` as a tensor, shape ``(M_c, *item_shape)``."""
        if self.features is None:
            return self.x[c]
        return _featurise(self, list(self.x[c]))

    def min_examples(self) -> int:
        """The fewest examples any class has (0 for an empty set)."""
        if len(self) == 0:
            return 0
        if isinstance(self.x, Tensor):
            return int(self.x.shape[1])
        return min(len(t) for t in self.x)

    @property
    def item_shape(self) -> tuple[int, ...]:
        if self.features is None:
            return tuple(self.x[0].shape[1:])
        return tuple(self.take(0, [0]).shape[1:])

    def subset(self, idx: Sequence[int], title: str | None = None) -> "ClassSet":
        """The classes at positions ``idx``, in that order."""
        idx = [int(i) for i in idx]
        x = self.x[torch.as_tensor(idx, dtype=torch.long)] if isinstance(self.x, Tensor) and idx \
            else [self.x[i] for i in idx]
        return ClassSet(x, [self.names[i] for i in idx], [self.alphabets[i] for i in idx],
                        title or self.title, self.features, self.source)

    def featurised(self, title: str | None = None) -> "ClassSet":
        """The same classes with every item featurised once: a ClassSet of tensors (faster to sample)."""
        if self.features is None:
            return self
        from .training import code_fingerprint  # a cache key of the result must see the feature function
        xs = [self.examples(c) for c in range(len(self))]
        same = len({tuple(t.shape) for t in xs}) == 1
        made = json.dumps(code_fingerprint(self.features), sort_keys=True, default=str)
        return ClassSet(torch.stack(xs) if same and xs else xs, list(self.names), list(self.alphabets),
                        title or self.title, None,
                        f"{self.source} features {hashlib.sha256(made.encode()).hexdigest()[:16]}".strip())

    def alphabet_names(self) -> list[str]:
        """Distinct alphabets in order of first appearance."""
        return list(dict.fromkeys(self.alphabets))


@dataclass
class Episode:
    """One N-way K-shot task, or a meta-batch of B of them (a leading task dimension).

    ``support_x``: ``(N*K, *item)`` or ``(B, N*K, *item)``; ``support_y`` in ``0..N-1``;
    ``query_x``/``query_y`` likewise with N*Q rows. ``classes[b][y]`` names the class behind label y.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    n_way: int
    k_shot: int
    q_query: int
    classes: list = field(default_factory=list)

    @property
    def batched(self) -> bool:
        return self.support_y.dim() == 2

    def to(self, device: torch.device | str) -> "Episode":
        """The same episode with its tensors on ``device``."""
        return Episode(self.support_x.to(device), self.support_y.to(device), self.query_x.to(device),
                       self.query_y.to(device), self.n_way, self.k_shot, self.q_query, self.classes)

    def task(self, b: int) -> "Episode":
        """Task ``b`` of a meta-batch as a single episode."""
        if not self.batched:
            raise ValueError("task(b) needs a meta-batch (from sample_meta_batch); this is one episode.")
        return Episode(self.support_x[b], self.support_y[b], self.query_x[b], self.query_y[b],
                       self.n_way, self.k_shot, self.q_query, self.classes[b])


def _featurise(classes: ClassSet, items: list) -> Tensor:
    out = classes.features(items)
    if not isinstance(out, Tensor) or out.dim() < 1 or out.shape[0] != len(items):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{classes.title}: the feature function must return a tensor with one row per "
                         f"item ({len(items)} items), got {got}.")
    return out


def _as_float(x: Tensor) -> Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def _check_request(classes: ClassSet, n_way: int, k_shot: int, q_query: int) -> None:
    for name, v, low in (("n_way", n_way, 1), ("k_shot", k_shot, 1), ("q_query", q_query, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")
    if not isinstance(classes, ClassSet):
        raise ValueError(f"Episodes are sampled from a ClassSet, got {type(classes).__name__}; "
                         "load one with course_utils.glyphs or course_utils.omniglot.")
    if len(classes) == 0:
        raise ValueError(f"{classes.title} is empty: it has no classes to sample an episode from. "
                         "Check the split that produced it.")
    if n_way > len(classes):
        raise ValueError(f"A {n_way}-way episode needs {n_way} classes, but {classes.title} has only "
                         f"{len(classes)}. Lower n_way, or use a larger split (rotations add classes).")
    m = classes.min_examples()
    if k_shot + q_query > m:
        raise ValueError(f"Each class must give k_shot + q_query = {k_shot} + {q_query} = "
                         f"{k_shot + q_query} distinct examples, but {classes.title} has classes "
                         f"with only {m}. Lower k_shot or q_query.")


def sample_episode(classes: ClassSet, n_way: int, k_shot: int, q_query: int = 15,
                   generator: torch.Generator | None = None) -> Episode:
    """Sample one N-way K-shot episode with Q queries per class (class-major order, float images).

    Pass a seeded ``torch.Generator`` for a repeatable stream of episodes.
    """
    _check_request(classes, n_way, k_shot, q_query)
    chosen = torch.randperm(len(classes), generator=generator)[:n_way].tolist()
    xs, xq = [], []
    for c in chosen:
        pick = torch.randperm(classes.n_examples(c), generator=generator)[: k_shot + q_query]
        chosen_ex = classes.take(c, pick)
        xs.append(chosen_ex[:k_shot])
        xq.append(chosen_ex[k_shot:])
    labels = torch.arange(n_way)
    return Episode(_as_float(torch.cat(xs)), labels.repeat_interleave(k_shot),
                   _as_float(torch.cat(xq)), labels.repeat_interleave(q_query),
                   n_way, k_shot, q_query, [classes.names[c] for c in chosen])


def sample_meta_batch(classes: ClassSet, batch_size: int, n_way: int, k_shot: int, q_query: int = 15,
                      generator: torch.Generator | None = None) -> Episode:
    """``batch_size`` independent episodes stacked along a leading task dimension B."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    eps = [sample_episode(classes, n_way, k_shot, q_query, generator) for _ in range(batch_size)]
    return Episode(torch.stack([e.support_x for e in eps]), torch.stack([e.support_y for e in eps]),
                   torch.stack([e.query_x for e in eps]), torch.stack([e.query_y for e in eps]),
                   n_way, k_shot, q_query, [e.classes for e in eps])


class EpisodeSampler:
    """An endless, seeded stream of episodes (or meta-batches when ``batch_size`` is given)."""

    def __init__(self, classes: ClassSet, n_way: int, k_shot: int, q_query: int = 15,
                 batch_size: int | None = None, seed: int = 0):
        _check_request(classes, n_way, k_shot, q_query)
        self.classes, self.n_way, self.k_shot, self.q_query = classes, n_way, k_shot, q_query
        self.batch_size, self.generator = batch_size, torch.Generator().manual_seed(seed)

    def __iter__(self):
        return self

    def __next__(self) -> Episode:
        if self.batch_size is None:
            return sample_episode(self.classes, self.n_way, self.k_shot, self.q_query, self.generator)
        return sample_meta_batch(self.classes, self.batch_size, self.n_way, self.k_shot, self.q_query,
                                 self.generator)


def with_rotations(classes: ClassSet, angles: Sequence[int] = (0, 90, 180, 270)) -> ClassSet:
    """Each class rotated by each angle becomes a class of its own (the Omniglot convention).

    Rotate *after* splitting, so the rotations of a test class never reach training.
    """
    if not angles or any(a % 90 for a in angles):
        raise ValueError(f"angles must be multiples of 90 degrees, got {list(angles)}.")
    if classes.features is not None or len(classes.item_shape) < 2:
        raise ValueError("with_rotations needs image items (..., H, W) stored as tensors.")
    xs, names, alphabets = [], [], []
    for a in angles:
        k = (a // 90) % 4
        rot = [torch.rot90(classes.examples(c), k, dims=(-2, -1)) for c in range(len(classes))]
        xs.extend(rot)
        names.extend(n if a == 0 else f"{n}/rot{a}" for n in classes.names)
        alphabets.extend(classes.alphabets)
    x = torch.stack(xs) if isinstance(classes.x, Tensor) else xs
    return ClassSet(x, names, alphabets, f"{classes.title} + rotations")


def check_disjoint(*splits: ClassSet) -> None:
    """Raise ``ValueError`` if two splits share a class (rotations of one character count as one)."""
    seen: dict[str, str] = {}
    for s in splits:
        for n in {base_name(n) for n in s.names}:
            if n in seen and seen[n] != s.title:
                raise ValueError(f"Splits overlap: class {n!r} is in both {seen[n]!r} and {s.title!r}. "
                                 "Meta-test classes must be unseen in meta-training; split by class.")
            seen[n] = s.title


def split_classes(classes: ClassSet, sizes: Sequence[int | float], seed: int = 0,
                  titles: Sequence[str] | None = None) -> tuple[ClassSet, ...]:
    """Randomly split the classes into disjoint parts of the given sizes (counts, or fractions summing to 1)."""
    c = len(classes)
    if c == 0:
        raise ValueError(f"{classes.title} is empty; there are no classes to split.")
    if all(isinstance(s, float) for s in sizes):
        if abs(sum(sizes) - 1) > 1e-6:
            raise ValueError(f"Fractions must sum to 1, got {list(sizes)} (sum {sum(sizes):g}).")
        counts = [int(round(s * c)) for s in sizes]
        counts[-1] = c - sum(counts[:-1])
    else:
        counts = [int(s) for s in sizes]
    if any(n < 1 for n in counts):
        raise ValueError(f"Every split needs at least one class; sizes {list(sizes)} of {c} classes "
                         f"give {counts}. An empty split cannot give episodes.")
    if sum(counts) > c:
        raise ValueError(f"Split sizes {counts} need {sum(counts)} classes but {classes.title} has {c}.")
    order = torch.randperm(c, generator=torch.Generator().manual_seed(seed)).tolist()
    titles = list(titles) if titles else [f"{classes.title} split {i}" for i in range(len(counts))]
    parts, start = [], 0
    for n, t in zip(counts, titles):
        parts.append(classes.subset(sorted(order[start:start + n]), t))
        start += n
    check_disjoint(*parts)
    return tuple(parts)


def split_by_alphabet(classes: ClassSet, groups: Sequence[Sequence[str]],
                      titles: Sequence[str] | None = None) -> tuple[ClassSet, ...]:
    """Split by alphabet: part i holds every class whose alphabet is in ``groups[i]``."""
    known = set(classes.alphabets)
    flat = [a for g in groups for a in g]
    missing = sorted(set(flat) - known)
    if missing:
        raise ValueError(f"Unknown alphabets {missing}; {classes.title} has {sorted(known)}.")
    if len(flat) != len(set(flat)):
        raise ValueError("An alphabet appears in two groups; alphabet splits must be disjoint.")
    titles = list(titles) if titles else [f"{classes.title} part {i}" for i in range(len(groups))]
    parts = []
    for g, t in zip(groups, titles):
        idx = [i for i, a in enumerate(classes.alphabets) if a in set(g)]
        if not idx:
            raise ValueError(f"Split {t!r} is empty: no classes in alphabets {list(g)}.")
        parts.append(classes.subset(idx, t))
    check_disjoint(*parts)
    return tuple(parts)
