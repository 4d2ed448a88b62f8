"""The course's few-shot data in one call: real Omniglot when present, else the built-in glyph set.

``few_shot_data()`` returns class-disjoint meta-train / meta-val / meta-test splits with
rotations by 90 degrees as extra classes (Vinyals et al., 2016; Santoro et al., 2016):

- ``omniglot``: the Vinyals split (:func:`omniglot.vinyals_split`: 1,200 characters for
  meta-training of which ``n_val`` are held out for validation, the other 423 for meta-test),
  each rotated 4 ways. Lake's within-alphabet runs use evaluation characters that may fall in
  this meta-train part: score models trained here on ``data.test``, not on Lake's runs.
- ``glyphs``: background alphabets for meta-training (a slice held out for validation),
  evaluation alphabets for meta-test, rotated the same way.

``source="auto"`` (the default) uses Omniglot when ``OMNIGLOT_DIR`` points at its zips and
prints why not otherwise; nothing is ever downloaded here.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import glyphs, omniglot
from .episodes import ClassSet, check_disjoint, split_classes, with_rotations

__all__ = ["FewShotData", "few_shot_data"]

SOURCES = ("auto", "omniglot", "glyphs")


@dataclass
class FewShotData:
    """Meta-train / meta-val / meta-test class sets and where they come from."""

    train: ClassSet
    val: ClassSet
    test: ClassSet
    source: str
    note: str

    def __repr__(self) -> str:
        return (f"FewShotData({self.source}: train {len(self.train)}, val {len(self.val)}, "
                f"test {len(self.test)} classes)")


def _rotated(parts: tuple[ClassSet, ...], titles: tuple[str, ...]) -> list[ClassSet]:
    out = []
    for p, t in zip(parts, titles):
        r = with_rotations(p)
        r.title = t
        out.append(r)
    return out


def few_shot_data(source: str = "auto", size: int = 28, seed: int = 0, n_val: int = 100,
                  rotations: bool = True) -> FewShotData:
    """Meta-train/val/test splits of Omniglot (Vinyals split) or of the glyph set."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
    use_omniglot = source == "omniglot" or (source == "auto" and omniglot.available())
    if source == "omniglot" and not omniglot.available():
        raise FileNotFoundError(omniglot.why_unavailable())
    if use_omniglot:
        train, val, test = omniglot.vinyals_split(size, seed=seed, rotations=False, n_val=n_val)
        name, note = "omniglot", f"Using real Omniglot from {omniglot.omniglot_dir()} (Vinyals split)."
    else:
        bg = glyphs.load_glyphs("background", size)
        test = glyphs.load_glyphs("evaluation", size)
        train, val = split_classes(bg, [len(bg) - n_val, n_val], seed=seed)
        name = "glyphs"
        note = ("Using the built-in glyph set. " + omniglot.why_unavailable()) if source == "auto" \
            else "Using the built-in glyph set."
    titles = tuple(f"{name} meta-{s}" for s in ("train", "val", "test"))
    parts = _rotated((train, val, test), titles) if rotations else list((train, val, test))
    if not rotations:
        for p, t in zip(parts, titles):
            p.title = t
    check_disjoint(*parts)
    return FewShotData(*parts, source=name, note=note)
