import os

import pytest

from course_utils import datasets, omniglot
from course_utils.episodes import base_name, check_disjoint


def _bases(cs):
    return {base_name(n) for n in cs.names}


def test_glyph_splits_are_disjoint_rotated_and_complete():
    d = datasets.few_shot_data("glyphs", n_val=50)
    assert d.source == "glyphs" and "glyph set" in d.note
    check_disjoint(d.train, d.val, d.test)
    assert len(d.val) == 4 * 50 and len(d.train) % 4 == 0
    assert any(n.endswith("/rot90") for n in d.train.names)
    assert set(d.test.alphabets).isdisjoint(d.train.alphabets)  # evaluation alphabets are unseen
    assert d.train.item_shape == (1, 28, 28)
    plain = datasets.few_shot_data("glyphs", rotations=False, n_val=50)
    assert len(plain.test) * 4 == len(d.test) and _bases(plain.test) == _bases(d.test)


def test_auto_without_omniglot_falls_back_and_says_why(monkeypatch):
    monkeypatch.setenv("OMNIGLOT_DIR", "")
    d = datasets.few_shot_data()
    assert d.source == "glyphs" and "OMNIGLOT_DIR" in d.note
    with pytest.raises(FileNotFoundError, match="OMNIGLOT_DIR"):
        datasets.few_shot_data("omniglot")


def test_bad_source():
    with pytest.raises(ValueError, match="source must be one of"):
        datasets.few_shot_data("mnist")


@pytest.mark.omniglot
@pytest.mark.skipif(not os.environ.get("OMNIGLOT_DIR"), reason="OMNIGLOT_DIR not set: real Omniglot tests "
                    "skipped (make test sets it when ../shared/data/omniglot exists)")
def test_omniglot_vinyals_split_sizes():
    assert omniglot.available(), omniglot.why_unavailable()
    d = datasets.few_shot_data("auto", n_val=100)
    assert d.source == "omniglot"
    assert (len(d.train), len(d.val), len(d.test)) == (4 * 1100, 4 * 100, 4 * 423)
    check_disjoint(d.train, d.val, d.test)
