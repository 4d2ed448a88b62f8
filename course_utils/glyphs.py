"""The glyph set: a built-in, offline few-shot image data set (an Omniglot stand-in).

What it is
    About 1,200 letters from 21 real scripts (Latin, Greek, Cyrillic, Armenian, Hebrew,
    Arabic, N'Ko, Lao, three Georgian scripts, Tifinagh, Ogham, Old Italic, Coptic, Lisu,
    Canadian Syllabics, Braille, IPA...), each "drawn" by 20 *drawers*, as
    ``(C, 20, 1, H, W)`` uint8 images with ink high (255 = ink) at Omniglot's native 105 px
    or its usual 28 px downsample. Alphabets are split into a fixed *background*
    (meta-train) and *evaluation* (meta-test) part, as in Omniglot (Lake et al., 2015).
    ``describe()`` lists what is in it.

Why
    Omniglot needs a download; a course should also run offline, behind a proxy, or in
    CI. Every matplotlib install ships TrueType fonts with thousands of letters (DejaVu,
    STIX, Computer Modern), so the set is rendered from those, once (about 20-30 s of
    CPU), and cached under ``cache_dir('glyphs')``.

How a drawer is made
    From a seed per class: a font that really has the glyph (the class's fonts are dealt
    out evenly, so all are used), rendered with PIL; a random affine map (rotation,
    shear, per-axis scale, translation) composed with a smooth elastic warp, applied in
    one bilinear resampling to 105 x 105; the stroke width measured and moved towards a
    random pen width (3-7 px) by erosion or dilation, as pens differ more than fonts;
    then a light blur and a random threshold give a binary, slightly rounded stroke.
    Erosion and thresholding back off where they would erase a hairline or a dot. The
    28 px images are the 105 px ones resized with Lanczos filtering (grey edges).

What was excluded, and why
    Everything but letters (Braille: the 63 six-dot cells): no digits, punctuation or
    symbols, which are not alphabets. Combining marks, and characters with a Unicode
    decomposition (accented letters: a base letter plus a small mark); for the same
    reason the Canadian Syllabics W-syllables and long vowels (a syllable plus a dot),
    and their finals.
    Characters that render empty or tiny. Look-alikes: each candidate is rendered once in
    DejaVu Sans, scaled to fit and binarised at 28 x 28, and dropped if its IoU with an
    already kept character (alphabets in the order of ``_ALPHABETS``; rotations by
    90/180/270 degrees count, as chapters add rotated classes) exceeds 0.9 across
    alphabets, 0.97 within one (Arabic letters may differ by a dot only), or 0.6 when the
    letters' Unicode names agree apart from script and case. So Latin A, Greek Alpha,
    Cyrillic A and Lisu A are one class (Latin), as are Latin o/Greek omicron/Cyrillic o,
    and c/C, s/S, x/X... Fonts: matplotlib's LastResort font claims every code point with a
    placeholder box and is never used; the STIX size variants and non-Unicode fonts hold
    no letters; the Computer Modern fonts only draw ASCII letters. A character that the
    reference font lacks cannot be checked for look-alikes and is dropped.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import unicodedata
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cache import cache_dir, config_key
from .episodes import ClassSet

__all__ = ["load_glyphs", "build_glyphs", "describe", "ALPHABETS_BACKGROUND", "ALPHABETS_EVALUATION",
           "SIZES", "N_DRAWERS"]

FORMAT_VERSION = 1      # of the cache file layout (the file's name also hashes this module's code)
SIZES = (28, 105)
N_DRAWERS = 20
_NATIVE = 105          # rendered at this size; 28 px is derived from it
_FONT_PX = 64          # PIL font size of the clean render
_CANVAS = 160          # side of the clean render's canvas
_REF_PX = 28           # side of the reference renders used to find look-alikes
_LOOKALIKE_IOU = 0.9   # reference renders this alike (IoU) are one class across alphabets,
_SAME_ALPHABET_IOU = 0.97  # within one alphabet (Arabic letters may differ by a dot only),
_SAME_NAME_IOU = 0.6   # and when the Unicode names agree apart from script and case
_MIN_EXTENT = 12       # a glyph whose ink box is under this many px (at 64 px) is "tiny"

# Alphabet -> (inclusive code point ranges, words that exclude a character by its Unicode name).
# Order matters: a look-alike is kept in the first alphabet that has it.
_ALPHABETS: dict[str, tuple[tuple[tuple[int, int], ...], tuple[str, ...]]] = {
    "Latin": (((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xFF), (0x100, 0x17F)), ()),
    "Greek": (((0x370, 0x3E1), (0x3F0, 0x3FF)), ()),
    "Cyrillic": (((0x400, 0x4FF),), ()),
    "Armenian": (((0x530, 0x58F),), ()),
    "Hebrew": (((0x590, 0x5FF),), ()),
    "Arabic": (((0x600, 0x6FF),), ()),
    "N'Ko": (((0x7C0, 0x7FF),), ()),
    "Lao": (((0xE80, 0xEFF),), ()),
    "Mkhedruli (Georgian)": (((0x10D0, 0x10FF),), ()),
    "Asomtavruli (Georgian)": (((0x10A0, 0x10CF),), ()),
    "Nuskhuri (Georgian)": (((0x2D00, 0x2D2F),), ()),
    "Tifinagh": (((0x2D30, 0x2D7F),), ()),
    "Ogham": (((0x1680, 0x169F),), ()),
    "Old Italic": (((0x10300, 0x1032F),), ()),
    "Coptic": (((0x3E2, 0x3EF), (0x2C80, 0x2CFF)), ()),
    "Lisu": (((0xA4D0, 0xA4FF),), ()),
    "Cyrillic Extended": (((0x500, 0x52F), (0xA640, 0xA69F)), ()),
    "IPA": (((0x250, 0x2AF),), ()),
    "Latin Extended": (((0x180, 0x24F), (0xA720, 0xA7FF)), ()),
    "Canadian Syllabics": (((0x1401, 0x167F),), ("CARRIER", "BLACKFOOT", "FINAL", "MEDIAL")),
    "Braille": (((0x2801, 0x283F),), ()),
}
# Background: 13 of 21 alphabets, ~60% of the classes; related scripts may sit on both sides,
# as Cyrillic and Old Church Slavonic do in Omniglot.
ALPHABETS_BACKGROUND: tuple[str, ...] = (
    "Latin", "Greek", "Cyrillic", "Armenian", "Hebrew", "N'Ko", "Mkhedruli (Georgian)",
    "Asomtavruli (Georgian)", "Tifinagh", "Canadian Syllabics", "Braille", "Coptic", "Lisu")
ALPHABETS_EVALUATION: tuple[str, ...] = (
    "Arabic", "IPA", "Lao", "Nuskhuri (Georgian)", "Ogham", "Old Italic", "Cyrillic Extended",
    "Latin Extended")

_GENERAL_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf")
_ASCII_FONTS = ("cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf", "cmmi10.ttf")
_REFERENCE_FONT = "DejaVuSans.ttf"
_BRAILLE_FRAME = 0x283F  # all six dots: Braille cells are placed and sized by the full cell


def _font_dir() -> Path:
    import matplotlib
    return Path(matplotlib.get_data_path(), "fonts", "ttf")


@lru_cache(maxsize=None)
def _font(name: str):
    """A PIL font at the clean-render size (basic layout: one code point, one glyph)."""
    from PIL import ImageFont
    return ImageFont.truetype(str(_font_dir() / name), _FONT_PX, layout_engine=ImageFont.Layout.BASIC)


@lru_cache(maxsize=None)
def _charmap(name: str) -> frozenset[int]:
    """Code points the font really maps (matplotlib's FT2Font, no extra dependency)."""
    from matplotlib.ft2font import FT2Font
    cmap = FT2Font(str(_font_dir() / name)).get_charmap()
    return frozenset(cp for cp, glyph in cmap.items() if glyph)  # glyph 0 is the "missing" box


def _fonts_for(cp: int) -> list[str]:
    fonts = [f for f in _GENERAL_FONTS if cp in _charmap(f)]
    if chr(cp).isascii():
        fonts += [f for f in _ASCII_FONTS if cp in _charmap(f)]
    return fonts


def _is_candidate(ch: str, alphabet: str) -> bool:
    """Letters only (Braille: symbols), so no marks or digits; nothing decomposable; name filters."""
    excluded = _ALPHABETS[alphabet][1]
    cat, name = unicodedata.category(ch), unicodedata.name(ch, "")
    wanted = ("So",) if alphabet == "Braille" else ("Lu", "Ll", "Lo", "Lt")
    return (cat in wanted and not unicodedata.decomposition(ch)
            and not any(w in name for w in excluded) and not _dotted_syllable(name))


def _dotted_syllable(name: str) -> bool:
    """A Canadian Syllabics W-syllable or long vowel: a base syllable plus a dot, like an accent."""
    syllable = name.split()[-1]
    return name.startswith("CANADIAN SYLLABICS") and any(s in syllable for s in ("W", "AA", "II", "OO"))


def _frame(cp: int) -> int:
    """The code point whose ink box places and sizes ``cp`` (Braille: the full cell)."""
    return _BRAILLE_FRAME if 0x2800 <= cp <= 0x28FF else cp


def _draw_text(font: str, cp: int) -> np.ndarray | None:
    """``cp`` drawn on a ``_CANVAS`` square, float in [0, 1], placed by its frame's layout box.

    ``None`` if it does not fit the canvas.
    """
    from PIL import Image, ImageDraw
    f = _font(font)
    box = f.getbbox(chr(_frame(cp)))  # layout box (from the pen origin), not the ink box
    if max(box[2] - box[0], box[3] - box[1]) > _CANVAS - 8:
        return None
    img = Image.new("L", (_CANVAS, _CANVAS), 0)
    xy = (round(_CANVAS / 2 - (box[0] + box[2]) / 2), round(_CANVAS / 2 - (box[1] + box[3]) / 2))
    ImageDraw.Draw(img).text(xy, chr(cp), font=f, fill=255)
    a = np.asarray(img, dtype=np.float32) / 255.0
    return None if a[[0, -1], :].any() or a[:, [0, -1]].any() else a


def _ink_box(a: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box ``(x0, y0, x1, y1)`` (end-exclusive) around the ink of a render, or ``None``."""
    ys, xs = np.nonzero(a > 0.2)
    return None if len(xs) == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


@lru_cache(maxsize=None)
def _braille_cell(font: str) -> tuple[int, int, int, int] | None:
    """Ink box of the full six-dot cell: it places and sizes every Braille pattern in ``font``."""
    a = _draw_text(font, _BRAILLE_FRAME)
    return None if a is None else _ink_box(a)


def _render(font: str, cp: int) -> tuple[np.ndarray, tuple[float, float], float] | None:
    """Clean render of ``cp``; the centre and longest side of its frame's ink box (canvas px).

    ``None`` if the glyph is empty, tiny or clipped.
    """
    a = _draw_text(font, cp)
    if a is None or a.sum() < 10:
        return None
    box = _ink_box(a) if _frame(cp) == cp else _braille_cell(font)
    if box is None or max(box[2] - box[0], box[3] - box[1]) < _MIN_EXTENT:
        return None
    return a, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), float(max(box[2] - box[0], box[3] - box[1]))


def _reference(cp: int) -> np.ndarray | None:
    """Binarised ``_REF_PX`` square render in the reference font, its ink box scaled to fit."""
    from PIL import Image
    r = _render(_REFERENCE_FONT, cp) if cp in _charmap(_REFERENCE_FONT) else None
    if r is None:
        return None
    a, (cx, cy), side = r
    h = side / 2 + 1
    img = Image.fromarray((a * 255).astype(np.uint8))
    small = img.resize((_REF_PX, _REF_PX), Image.Resampling.BOX, box=(cx - h, cy - h, cx + h, cy + h))
    return np.asarray(small) >= 128


def _name_key(cp: int) -> str:
    """The letter's own name, without script and case: 'OLD ITALIC LETTER O' -> 'O'.

    'LATIN LETTER SMALL CAPITAL A' -> 'A'; names without 'LETTER' (syllables, Braille) stay whole.
    """
    words = unicodedata.name(chr(cp), "").split()
    if "LETTER" in words:
        words = words[len(words) - words[::-1].index("LETTER"):]
    return " ".join(w for w in words if w not in ("CAPITAL", "SMALL"))


def _candidates() -> list[tuple[str, int]]:
    """(alphabet, code point) for every letter some usable font draws, in priority order."""
    out = []
    for alphabet, (ranges, _) in _ALPHABETS.items():
        for lo, hi in ranges:
            for cp in range(lo, hi + 1):
                if _is_candidate(chr(cp), alphabet) and _fonts_for(cp):
                    out.append((alphabet, cp))
    return out


def _iou_matrix(masks: np.ndarray) -> np.ndarray:
    """IoU of square binary masks ``(n, s, s)``: entry ``[i, j]`` is the best over rotations of j.

    Rotations count because chapters add rotated copies of classes (``episodes.with_rotations``).
    """
    m = masks.reshape(len(masks), -1).astype(np.float64)  # exact counts, exact ratios
    area = m.sum(1)
    best = np.zeros((len(m), len(m)))
    for k in range(4):
        r = np.rot90(masks, k, axes=(1, 2)).reshape(len(masks), -1).astype(np.float64)
        inter = m @ r.T
        best = np.maximum(best, inter / np.maximum(area[:, None] + area[None, :] - inter, 1.0))
    return best


@lru_cache(maxsize=1)
def _classes() -> tuple[tuple[str, int, tuple[str, ...]], ...]:
    """The classes, as (alphabet, code point, fonts that draw it), look-alikes removed.

    Greedy in priority order: a candidate is kept unless it looks like one already kept.
    """
    cands, refs = [], []
    for alphabet, cp in _candidates():
        ref = _reference(cp)
        if ref is not None:                                         # no reference render: not checkable
            cands.append((alphabet, cp))
            refs.append(ref)
    iou = _iou_matrix(np.stack(refs))
    alpha = np.array([a for a, _ in cands])
    names = np.array([_name_key(cp) for _, cp in cands])
    limit = np.where(alpha[:, None] == alpha[None, :], _SAME_ALPHABET_IOU, _LOOKALIKE_IOU)
    limit = np.where(names[:, None] == names[None, :], np.minimum(limit, _SAME_NAME_IOU), limit)
    kept: list[int] = []
    for i in range(len(cands)):
        if not (iou[i, kept] > limit[i, kept]).any():
            kept.append(i)
    out = []
    for alphabet, cp in (cands[i] for i in kept):
        fonts = tuple(f for f in _fonts_for(cp) if _fits(f, cp))
        if fonts:
            out.append((alphabet, cp, fonts))
    return tuple(out)


def _fits(font: str, cp: int) -> bool:
    """The font draws ``cp`` (and, for Braille, the full cell) visibly and within the canvas."""
    return _frame(cp) in _charmap(font) and _render(font, cp) is not None


# ----------------------------------------------------------------------------- drawers

def _deal_fonts(fonts: tuple[str, ...], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` fonts dealt from shuffled decks of ``fonts``, so each font is used about equally."""
    decks = -(-n // len(fonts))
    return [fonts[i] for _ in range(decks) for i in rng.permutation(len(fonts))][:n]


@lru_cache(maxsize=4)
def _upsampler(size: int, coarse: int = 4) -> np.ndarray:
    """``(size, coarse)`` matrix that bicubically interpolates ``coarse`` knots to ``size`` points."""
    eye = torch.eye(coarse)[:, None, :, None].expand(coarse, 1, coarse, 1)
    up = F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=True)
    return up[:, 0, :, 0].T.numpy().astype(np.float32)


def _warp_grid(centres: np.ndarray, sides: np.ndarray, rng: np.random.Generator, size: int) -> torch.Tensor:
    """Sampling grids ``(n, size, size, 2)``: random affine map + smooth elastic warp per drawer.

    Drawer i's ink box (centre ``centres[i]``, longest side ``sides[i]``, canvas px) lands near the
    middle of the output, its longest side about 60% of the frame.
    """
    n = len(sides)
    rot = np.deg2rad(rng.uniform(-12, 12, n))
    shear = rng.uniform(-0.25, 0.25, n)
    aspect = np.exp(rng.uniform(-0.12, 0.12, n))
    scale = 0.6 * size * rng.uniform(0.8, 1.05, n) / sides        # longest side -> 48-63% of the frame
    shift = rng.uniform(-0.06, 0.06, (n, 2, 1, 1)) * size
    amp = rng.uniform(0.01, 0.03, (n, 1, 1, 1)) * size
    coarse = rng.standard_normal((n, 2, 4, 4))
    c, s = np.cos(rot), np.sin(rot)
    rot_m = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    shear_m = np.zeros((n, 2, 2))
    shear_m[:, 0, 0], shear_m[:, 0, 1], shear_m[:, 1, 1] = 1, shear, 1
    stretch = np.zeros((n, 2, 2))
    stretch[:, 0, 0], stretch[:, 1, 1] = aspect, 1 / aspect
    inv = np.linalg.inv(scale[:, None, None] * rot_m @ shear_m @ stretch)  # output -> source
    up = _upsampler(size)
    elastic = up @ coarse.astype(np.float32) @ up.T * amp          # (n, 2, size, size) in px
    axis = np.arange(size, dtype=np.float32) + 0.5 - size / 2
    p = np.stack(np.meshgrid(axis, axis, indexing="xy"))[None] + elastic - shift  # (x, y) about the centre
    q = np.einsum("nij,njhw->nhwi", inv.astype(np.float32), p.astype(np.float32))
    q = q + centres[:, None, None, :].astype(np.float32)           # canvas px
    return torch.from_numpy(q / (_CANVAS / 2) - 1)  # grid_sample's [-1, 1] coordinates (align_corners=False)


def _shift_max(x: np.ndarray, cross: bool) -> np.ndarray:
    """3 x 3 (square) or plus-shaped (cross) maximum filter over the last two axes, zero-padded."""
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)])
    if cross:
        return np.maximum.reduce([x, p[..., :-2, 1:-1], p[..., 2:, 1:-1],
                                  p[..., 1:-1, :-2], p[..., 1:-1, 2:]])
    rows = np.maximum(np.maximum(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])
    return np.maximum(np.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def _morph(x: np.ndarray, steps: int) -> list[np.ndarray]:
    """``x`` dilated (``steps`` > 0) or eroded (< 0) by 1..|steps| px, alternating square and cross."""
    out, y = [], x
    for k in range(abs(steps)):
        cross = k % 2 == 1
        y = _shift_max(y, cross) if steps > 0 else 1 - _shift_max(1 - y, cross)
        out.append(y)
    return out


def _stroke_width(ink: np.ndarray) -> np.ndarray:
    """Mean stroke width in px of boolean images ``(n, H, W)``: 2 * area / boundary length."""
    inner = ~_shift_max(~ink, cross=True)
    boundary = (ink & ~inner).sum((1, 2))
    return 2 * ink.sum((1, 2)) / np.maximum(boundary, 1)


def _box_blur(x: np.ndarray) -> np.ndarray:
    """3 x 3 mean filter over the last two axes, zero-padded."""
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)])
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]
    return (rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]) / 9.0


def _covers(kept: np.ndarray, ink: np.ndarray, grow: int) -> bool:
    """``kept`` grown by ``grow`` px still covers 99.5% of ``ink``: no stroke, dot or hairline was lost."""
    for k in range(grow):
        kept = _shift_max(kept, cross=k % 2 == 1)
    return (kept & ink).sum() >= 0.995 * ink.sum()


def _restroke(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move each stroke width towards a random pen width (3-7 px at 105), then blur and threshold.

    Erosion and thresholding back off where they would erase a hairline (serif fonts) or a small
    dot (Arabic, Braille).
    """
    n, size = img.shape[0], img.shape[-1]
    pen = rng.uniform(3.0, 7.0, n) * size / _NATIVE
    thresh = rng.uniform(0.4, 0.6, n)
    ink = img > 0.5
    steps = np.clip(np.round((pen - _stroke_width(ink)) / 2), -3, 2).astype(int)
    thin = [img] + _morph(img, -3)
    thick = [img] + _morph(img, 2)
    out = np.empty(img.shape, dtype=bool)
    for i, k in enumerate(steps):
        while k < 0 and not _covers(thin[-k][i] > 0.5, ink[i], -k + 1):
            k += 1
        stroked = thin[-k][i] if k < 0 else thick[k][i]
        blurred = _box_blur(stroked)
        for t in (thresh[i], 0.3, 0.15):
            out[i] = blurred > t
            if _covers(out[i], stroked > 0.5, 1):
                break
    return out


def _draw_class(cp: int, fonts: tuple[str, ...], seed: int, n: int = N_DRAWERS,
                size: int = _NATIVE) -> np.ndarray:
    """``n`` drawers of one character as binary uint8 images ``(n, size, size)``, 255 = ink."""
    rng = np.random.default_rng([seed, cp])
    renders = {f: _render(f, cp) for f in fonts}
    good = tuple(f for f in fonts if renders[f] is not None)
    if not good:
        raise RuntimeError(f"No font renders U+{cp:04X}; the glyph set's font check is out of date.")
    dealt = _deal_fonts(good, n, rng)
    src = torch.from_numpy(np.stack([renders[f][0] for f in dealt]))[:, None]
    grid = _warp_grid(np.array([renders[f][1] for f in dealt]), np.array([renders[f][2] for f in dealt]),
                      rng, size)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _restroke(warped[:, 0].numpy(), rng).astype(np.uint8) * 255


def _downsample(x105: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(..., 105, 105)`` uint8 images to ``size`` with Lanczos filtering (grey edges)."""
    from PIL import Image
    flat = x105.reshape(-1, _NATIVE, _NATIVE)
    out = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.LANCZOS))
                    for im in flat])
    return out.reshape(*x105.shape[:-2], size, size)


# ----------------------------------------------------------------------------- building and caching

def _quiet() -> bool:
    return os.environ.get("COURSE_QUIET", "") == "1"


def _draw_all(seed: int, progress: bool) -> tuple[np.ndarray, list[str], list[str]]:
    """Every class at 105 px: images ``(C, 20, 1, 105, 105)``, class names and alphabets."""
    from tqdm.auto import tqdm
    classes = _classes()
    x = np.empty((len(classes), N_DRAWERS, 1, _NATIVE, _NATIVE), dtype=np.uint8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only add overhead (and contend on shared CPUs)
    try:
        bar = tqdm(classes, desc="rendering glyphs", unit="class", disable=not progress or _quiet())
        for c, (_, cp, fonts) in enumerate(bar):
            x[c, :, 0] = _draw_class(cp, fonts, seed)
    finally:
        torch.set_num_threads(threads)
    return x, [f"{a}/U+{cp:04X}" for a, cp, _ in classes], [a for a, _, _ in classes]


def _check_size(size: int) -> None:
    if size not in SIZES:
        raise ValueError(f"Glyph images come in sizes {SIZES[0]} and {SIZES[1]} px "
                         f"(28 = the usual Omniglot downsample, 105 = Omniglot's native); got {size!r}: "
                         "use 28 or 105.")


def _as_classset(x: np.ndarray, names: list[str], alphabets: list[str], title: str) -> ClassSet:
    return ClassSet(torch.from_numpy(x), list(names), list(alphabets), title)


def build_glyphs(size: int = 28, seed: int = 0, progress: bool = True) -> ClassSet:
    """Render the whole glyph set (all alphabets) at ``size`` px, without the cache.

    Deterministic: the same seed (and the same fonts, Pillow and FreeType) gives identical arrays.
    """
    _check_size(size)
    x, names, alphabets = _draw_all(seed, progress)
    if size != _NATIVE:
        x = _downsample(x, size)
    return _as_classset(x, names, alphabets, f"glyphs all ({size}px)")


def _config(size: int, seed: int) -> dict:
    """Everything the arrays depend on; its hash names the cache file."""
    import PIL
    from PIL import features
    fonts = sorted(set(_GENERAL_FONTS + _ASCII_FONTS))
    return {"format": FORMAT_VERSION, "size": size, "seed": seed, "drawers": N_DRAWERS,
            "alphabets": {a: [[list(r) for r in ranges], list(words)]
                          for a, (ranges, words) in _ALPHABETS.items()},
            "fonts": {f: (_font_dir() / f).stat().st_size for f in fonts},
            "thresholds": [_LOOKALIKE_IOU, _SAME_ALPHABET_IOU, _SAME_NAME_IOU, _MIN_EXTENT],
            "render": [_FONT_PX, _CANVAS, _REF_PX, _NATIVE],
            "pillow": PIL.__version__, "freetype": features.version("freetype2"),
            "unicode": unicodedata.unidata_version,
            "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]}  # any edit rebuilds


def _cache_path(size: int, seed: int = 0) -> Path:
    return cache_dir("glyphs") / f"glyphs-v{FORMAT_VERSION}-{size}px-{config_key(_config(size, seed))}.npz"


def _digest(x: np.ndarray, names: np.ndarray, alphabets: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(repr((x.shape, str(x.dtype))).encode())
    h.update(np.ascontiguousarray(x).data)
    h.update("\n".join(names.tolist()).encode())
    h.update("\n".join(alphabets.tolist()).encode())
    return h.hexdigest()


def _save(path: Path, x: np.ndarray, names: list[str], alphabets: list[str], key: str) -> None:
    """Write the cache file atomically: a temporary file in the same folder, then ``os.replace``."""
    n, a = np.array(names), np.array(alphabets)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, x=x, names=n, alphabets=a, key=np.array(key),
                                sha256=np.array(_digest(x, n, a)))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load(path: Path, key: str, size: int) -> tuple[np.ndarray, list[str], list[str]] | None:
    """The cached arrays, or ``None`` if the file is missing, unreadable, stale or corrupt."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            x, names, alphabets = z["x"], z["names"], z["alphabets"]
            ok = (x.dtype == np.uint8 and x.ndim == 5 and x.shape[1:] == (N_DRAWERS, 1, size, size)
                  and len(names) == len(alphabets) == x.shape[0]
                  and str(z["sha256"]) == _digest(x, names, alphabets))
    except Exception:  # truncated zip, garbage, missing member...: rebuild
        return None
    return (x, names.tolist(), alphabets.tolist()) if ok else None


def _store(size: int, seed: int, x: np.ndarray, names: list[str], alphabets: list[str]) -> None:
    """Cache one size; a read-only or full disk only costs a rebuild next time."""
    try:
        _save(_cache_path(size, seed), x, names, alphabets, config_key(_config(size, seed)))
    except OSError as e:
        warnings.warn(f"Could not cache the glyph set in {cache_dir('glyphs')}: {e}. "
                      "Set COURSE_CACHE to a writable folder to skip rebuilding it.", stacklevel=3)


def _load_all(size: int, rebuild: bool, seed: int = 0) -> tuple[np.ndarray, list[str], list[str]]:
    """All classes at ``size``, from the cache or built (both sizes are built and cached together)."""
    if not rebuild:
        cached = _load(_cache_path(size, seed), config_key(_config(size, seed)), size)
        if cached is not None:
            return cached
        native = None if size == _NATIVE else _load(
            _cache_path(_NATIVE, seed), config_key(_config(_NATIVE, seed)), _NATIVE)
        if native is not None:                                      # derive from 105 px, do not redraw
            x, names, alphabets = _downsample(native[0], size), native[1], native[2]
            _store(size, seed, x, names, alphabets)
            return x, names, alphabets
    x105, names, alphabets = _draw_all(seed, progress=True)
    by_size = {s: x105 if s == _NATIVE else _downsample(x105, s) for s in SIZES}
    for s, x in by_size.items():
        _store(s, seed, x, names, alphabets)
    return by_size[size], names, alphabets


def load_glyphs(split: str = "background", size: int = 28, rebuild: bool = False) -> ClassSet:
    """The glyph set's ``split`` ("background", "evaluation" or "all") at ``size`` (28 or 105) px.

    Built on first use (well under a minute) and cached under ``cache_dir('glyphs')``; a stale or
    corrupt cache file is rebuilt. ``rebuild=True`` forces a rebuild.
    """
    splits = {"background": ALPHABETS_BACKGROUND, "evaluation": ALPHABETS_EVALUATION, "all": None}
    if split not in splits:
        raise ValueError(f"Unknown split {split!r}; use 'background' (meta-training alphabets), "
                         "'evaluation' (meta-test alphabets) or 'all'.")
    _check_size(size)
    x, names, alphabets = _load_all(size, rebuild)
    title = f"glyphs {split} ({size}px)"
    if splits[split] is None:
        return _as_classset(x, names, alphabets, title)
    keep = set(splits[split])
    idx = [i for i, a in enumerate(alphabets) if a in keep]
    return _as_classset(x[idx], [names[i] for i in idx], [alphabets[i] for i in idx], title)


def describe() -> str:
    """One paragraph on the glyph set: alphabets, classes per alphabet, fonts (from the class table)."""
    classes = _classes()
    counts: dict[str, int] = {}
    fonts: set[str] = set()
    for a, _, fs in classes:
        counts[a] = counts.get(a, 0) + 1
        fonts.update(f.rsplit(".", 1)[0] for f in fs)

    def listing(names: tuple[str, ...]) -> str:
        return ", ".join(f"{a} {counts.get(a, 0)}" for a in names)

    n_bg = sum(counts.get(a, 0) for a in ALPHABETS_BACKGROUND)
    return (f"The glyph set has {len(classes)} character classes from {len(counts)} alphabets, each drawn "
            f"by {N_DRAWERS} drawers (a font x a random affine map, elastic warp and pen width), at "
            f"{SIZES[1]} px and {SIZES[0]} px. Background ({len(ALPHABETS_BACKGROUND)} alphabets, {n_bg} "
            f"classes): {listing(ALPHABETS_BACKGROUND)}. Evaluation ({len(ALPHABETS_EVALUATION)} "
            f"alphabets, {len(classes) - n_bg} classes): {listing(ALPHABETS_EVALUATION)}. Rendered from "
            f"{len(fonts)} fonts shipped with matplotlib: {', '.join(sorted(fonts))}.")
