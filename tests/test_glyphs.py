"""The built-in glyph set: size, shapes, splits, look-alike removal, determinism and its cache.

The set is built once (about 20-40 s on two cores) into the test run's cache, a fresh
temporary folder that conftest.py sets up; these tests and later ones read that build.
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils import glyphs
from course_utils.episodes import ClassSet, check_disjoint, sample_episode


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The run's COURSE_CACHE (a temporary one if none is set), holding one build of both sizes."""
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("COURSE_CACHE"):
            mp.setenv("COURSE_CACHE", str(tmp_path_factory.mktemp("course_cache")))
        mp.setenv("COURSE_QUIET", "1")
        glyphs.load_glyphs("all", 28)  # builds and caches 28 and 105 px
        yield Path(os.environ["COURSE_CACHE"])


@pytest.fixture(scope="module")
def all28(cache) -> ClassSet:
    return glyphs.load_glyphs("all", 28)


@pytest.fixture(scope="module")
def all105(cache) -> ClassSet:
    return glyphs.load_glyphs("all", 105)


def test_size_of_the_set(all28):
    assert len(set(all28.alphabets)) >= 20
    assert len(all28) >= 1000
    assert all28.min_examples() == glyphs.N_DRAWERS == 20
    assert all28.title == "glyphs all (28px)"
    for name, alphabet in zip(all28.names, all28.alphabets):
        head, code = name.rsplit("/", 1)
        assert head == alphabet and code.startswith("U+")


@pytest.mark.parametrize("size", [28, 105])
def test_shapes_and_dtype(size, all28, all105):
    s = all28 if size == 28 else all105
    assert isinstance(s.x, torch.Tensor) and s.x.dtype == torch.uint8
    assert tuple(s.x.shape) == (len(s), 20, 1, size, size)
    assert s.names == all28.names and s.alphabets == all28.alphabets


def test_ink_is_high_and_present(all105, all28):
    x = all105.x[::4]  # a quarter of the classes keeps this fast
    assert set(torch.unique(x[:50]).tolist()) == {0, 255}  # 105 px is binary
    ink = (x > 127).flatten(2).sum(-1)  # (C, 20) ink pixels per image
    assert ink.min() >= 15, "some drawer drew (next to) nothing"
    frac = ink / 105**2
    assert frac.max() < 0.5 and frac.mean() < 0.15, "ink must be high (255) on a dark background"
    assert all28.x.flatten(2).amax(-1).min() > 100, "every 28 px image shows some ink"
    corners = all28.x[..., [0, -1], :][..., [0, -1]]
    assert (corners == 0).float().mean() > 0.99


def test_background_and_evaluation_split_by_alphabet(cache, all28):
    bg = glyphs.load_glyphs("background", 28)
    ev = glyphs.load_glyphs("evaluation", 28)
    assert bg.title == "glyphs background (28px)" and ev.title == "glyphs evaluation (28px)"
    assert set(bg.alphabets) == set(glyphs.ALPHABETS_BACKGROUND)
    assert set(ev.alphabets) == set(glyphs.ALPHABETS_EVALUATION)
    assert not set(glyphs.ALPHABETS_BACKGROUND) & set(glyphs.ALPHABETS_EVALUATION)
    assert not set(bg.names) & set(ev.names)
    assert sorted(bg.names + ev.names) == sorted(all28.names)
    check_disjoint(bg, ev)
    assert 0.5 <= len(bg) / len(all28) <= 0.7  # roughly 60/40, like Omniglot
    ep = sample_episode(ev, n_way=5, k_shot=1, q_query=5, generator=torch.Generator().manual_seed(0))
    assert ep.support_x.shape == (5, 1, 28, 28)


def test_the_same_class_in_two_scripts_survives_once(all28):
    names = set(all28.names)
    triples = [("Latin/U+0041", "Greek/U+0391", "Cyrillic/U+0410"),   # A, Alpha, A
               ("Latin/U+006F", "Greek/U+03BF", "Cyrillic/U+043E"),   # o, omicron, o
               ("Latin/U+0050", "Greek/U+03A1", "Cyrillic/U+0420")]   # P, Rho, Er
    for triple in triples:
        assert sum(n in names for n in triple) == 1, triple
    assert "Latin/U+0041" in names


def test_no_near_identical_classes_across_alphabets(all28):
    cps = [int(n.rsplit("U+", 1)[1], 16) for n in all28.names]
    refs = np.stack([glyphs._reference(cp) for cp in cps])
    iou = glyphs._iou_matrix(refs)
    alpha = np.array(all28.alphabets)
    cross = alpha[:, None] != alpha[None, :]
    assert iou[cross].max() <= glyphs._LOOKALIKE_IOU
    np.fill_diagonal(iou, 0)
    assert iou.max() <= glyphs._SAME_ALPHABET_IOU


def test_only_letters_from_real_fonts():
    for alphabet, cp, fonts in glyphs._classes():
        ch = chr(cp)
        assert unicodedata.decomposition(ch) == ""
        cat = unicodedata.category(ch)
        assert cat == "So" if alphabet == "Braille" else cat in ("Lu", "Ll", "Lt", "Lo")
        assert fonts and not any("LastResort" in f for f in fonts)
        assert ch.isascii() or not any(f.startswith("cm") for f in fonts)
    assert sum(len(f) >= 2 for _, _, f in glyphs._classes()) == len(glyphs._classes())


def test_drawers_of_a_class_differ(all105):
    x = all105.x[::37, :, 0].flatten(2)  # every 37th class
    for c in range(x.shape[0]):
        assert len({bytes(im.numpy()) for im in x[c]}) == 20
        ink = (x[c] > 0).float()
        inter = ink @ ink.T
        area = ink.sum(1)
        iou = inter / (area[:, None] + area[None, :] - inter)
        off = iou[~torch.eye(20, dtype=torch.bool)]
        assert off.mean() < 0.8, "drawers should vary in pose, shape and pen"


def test_deterministic(all105):
    classes = glyphs._classes()
    for c in (0, 500, len(classes) - 1):
        _, cp, fonts = classes[c]
        again = glyphs._draw_class(cp, fonts, seed=0)
        assert np.array_equal(again, all105.x[c, :, 0].numpy())
        assert not np.array_equal(glyphs._draw_class(cp, fonts, seed=1), again)


def test_corrupt_cache_file_is_rebuilt(cache, all28):
    path = glyphs._cache_path(28)
    assert path.exists()
    path.write_bytes(b"this is not an npz file")
    again = glyphs.load_glyphs("all", 28)  # derived again from the valid 105 px file
    assert again.names == all28.names
    assert torch.equal(again.x, all28.x)
    assert glyphs._load(path, glyphs.config_key(glyphs._config(28, 0)), 28) is not None
    assert not [p for p in os.listdir(cache / "glyphs") if p.endswith(".tmp")]


def test_cache_rejects_stale_or_tampered_files(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    path = tmp_path / "g.npz"
    x = np.zeros((3, 20, 1, 28, 28), np.uint8)
    x[:, :, :, 10:18, 10:18] = 255
    names, alphabets = ["A/U+0041", "A/U+0042", "B/U+0043"], ["A", "A", "B"]
    glyphs._save(path, x, names, alphabets, "key1")
    assert glyphs._load(path, "key1", 28) is not None
    assert glyphs._load(path, "key2", 28) is None              # stale configuration
    assert glyphs._load(path, "key1", 105) is None             # wrong shape
    with np.load(path) as z:
        parts = {k: z[k] for k in z.files}
    parts["x"] = parts["x"].copy()
    parts["x"][0, 0, 0, 0, 0] = 1                              # checksum no longer matches
    np.savez_compressed(path, **parts)
    assert glyphs._load(path, "key1", 28) is None
    path.write_bytes(path.read_bytes()[:100])                  # truncated
    assert glyphs._load(path, "key1", 28) is None


def test_bad_split_or_size_raise_helpful_errors():
    with pytest.raises(ValueError, match="background"):
        glyphs.load_glyphs("train")
    with pytest.raises(ValueError, match="use 28 or 105"):
        glyphs.load_glyphs("background", 32)
    with pytest.raises(ValueError, match="use 28 or 105"):
        glyphs.build_glyphs(64)


def test_describe_mentions_every_alphabet(all28):
    text = glyphs.describe()
    assert f"{len(all28)} character classes" in text
    for a in glyphs.ALPHABETS_BACKGROUND + glyphs.ALPHABETS_EVALUATION:
        assert a in text


def test_build_glyphs_matches_the_cache(all28, monkeypatch):
    few = glyphs._classes()[:3]
    monkeypatch.setattr(glyphs, "_classes", lambda: few)  # build just three classes
    built = glyphs.build_glyphs(28, seed=0, progress=False)
    assert built.title == "glyphs all (28px)"
    assert built.names == all28.names[:3]
    assert torch.equal(built.x, all28.x[:3])
