"""``course-autolabel``: label a folder of images with the course's meta-trained ProtoNet (chapter 07).

Papers: Prototypical Networks (Snell, Swersky & Zemel, 2017) for the embedding and the classifier;
temperature scaling (Guo et al., 2017) for calibration; selective classification (Geifman &
El-Yaniv, 2017) for the accept/reject threshold; the "none of these" radius follows the masked
soft k-means idea of Ren et al. (2018) (a distance beyond which an item belongs to no class).

The folder::

    FOLDER/labelled/<class name>/*.png|jpg|jpeg   K or more examples per class (sub-folders allowed)
    FOLDER/unlabelled/**/*.png|jpg|jpeg           the pool to label (nested folders allowed)
    FOLDER/labels.csv                             written by the tool (or ``--out``)

Images are converted as the course's data are: grey (transparent pixels count as white paper),
ink high. Omniglot's PNGs are black ink on white, so an image is inverted unless its *border* is
dark (median of the outermost pixels < 128: a light-on-dark image, kept as it is). It is then
*padded* (not cropped, so no ink is lost) to a square with its background value, centred, and
area-averaged (``Image.BOX``) to 28x28, exactly like ``omniglot._decode_png``. Names starting
with "." are skipped; files with other extensions are ignored (with a warning).

The decision rule, with z = f_theta(x) and the chapter's symbols::

    c_n  = mean of the support embeddings of class n  (labelled/<n>/ plus human rows labelled n)
    d_jn = ||z_j - c_n||^2,      p_jn = softmax_n(-d_jn / kappa)   (kappa: the temperature)
    source_j = none-of-these  if min_n d_jn > r
               auto           elif min_n d_jn <= r_a and max_n p_jn >= tau   (label argmax_n p_jn)
               needs-review   otherwise                                      (label = the best guess)

kappa, r, r_a and tau are never fitted on the user's labelled images (at K = 1 a support sits on its
own prototype and is always "right"). They are fitted on meta-val pools (``labelling_data(...).val``,
whole background alphabets held out of the embedding's training), sampled with ``sample_pool`` at the user's N (number
of classes) and K (the smallest per-class support count), plus ceil(S * N) *distractor* classes in
no support set (S = ``--distractor-share``, default 0.25), since a real pool holds images of none of
the classes too. T minimises the NLL of the true-class items; r is the 99% quantile of their squared
distance to their own prototype (so about 1% of true members end as none-of-these); tau is the
smallest threshold whose accepted set has precision >= ``--precision`` on meta-val, distractors
counting as wrong (tau = inf, nothing automatic, if none reaches it). The acceptance radius r_a <= r
is chosen with tau, among quantiles of the true-class distances, for the largest coverage at that
precision: softmax confidence only compares the classes there are, so a distractor can be "sure";
at K = 1 with distractors a tau alone (r_a = r) reaches 99% only at a coverage near zero. The result
is cached under ``cache_dir("autolabel")`` per (embedding weights, meta-val set, N, K, target, S,
pools, code), so a rerun costs only reading and embedding the images.

labels.csv has the columns ``path,label,confidence,source``; ``path`` is relative to FOLDER
(``unlabelled/...``, "/" separators). ``source`` is one of

- ``auto``: accepted automatically; ``label`` a class, ``confidence`` its calibrated probability;
- ``needs-review``: not accepted (below tau or beyond r_a); ``label`` is the model's best guess,
  for a person to confirm;
- ``none-of-these``: farther than r from every prototype; ``label`` empty;
- ``human``: typed by a person. Never changed: the row is written back as it was read. A class
  label (a folder name, or a NEW name, which becomes a new class) makes the image an extra support;
  an empty label or "none" means "none of these classes". Labels are matched to class names after
  stripping spaces, case-sensitively ("Alpha" and "alpha" are two classes).

On a rerun every other row is proposed again, rows for new files are added (sorted, after the old
rows, whose order is kept) and rows of machine sources for files that no longer exist are dropped
(human rows are kept, with a warning). To correct a label, set its ``source`` to ``human``. The
tool never writes a machine row with a label that is not a class, an ``auto``/``needs-review`` row
without a label or a ``none-of-these`` row with one: such a row was edited by a person, so the tool
stops and asks for ``human`` instead of overwriting it. The CSV is replaced atomically (temporary
file in the same folder, fsync, ``os.replace``): an interrupted run leaves the old file intact.

Unreadable images: in ``labelled/`` they are an error; in ``unlabelled/`` they are reported,
skipped and get no row (a human row for one is kept). Exit status: 0 done, 2 bad input (a message
naming the file and what to do, no traceback), 1 the CSV could not be written, 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import inspect
import io
import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import cache_dir, config_key
from .episodes import ClassSet
from .episodic import class_set_fingerprint
from .protonet import protonet_logits, prototypes, squared_distances

__all__ = ["main", "read_image", "to_course_image", "scan_folder", "read_labels", "write_labels",
           "calibrate", "cached_calibration", "Calibration", "Rule", "propose", "COLUMNS", "SOURCES",
           "InputError"]

PROG = "course-autolabel"
COLUMNS = ("path", "label", "confidence", "source")
SOURCES = ("auto", "human", "needs-review", "none-of-these")
NONE_WORDS = {"", "none", "none-of-these", "none of these"}  # a human "none of these" label
IMAGE_EXTS = {".png", ".jpg", ".jpeg"}
SIZE = 28                   # the course's image side
DISTRACTOR_SHARE = 0.25     # meta-val pools get ceil(0.25 N) classes that are in no support set
ACCEPT_QUANTILES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # candidate r_a (true-class distances)
M_VAL = 10                  # unlabelled items per class in a meta-val pool
RADIUS_QUANTILE = 0.99      # r: this quantile of true-class squared distances on meta-val
POOLS = 200                 # meta-val pools per calibration (--calibration-pools)


class InputError(Exception):
    """Bad input: the message names the file and says what to do (exit status 2)."""


# --------------------------------------------------------------------------- calibration helpers

from .confidence import fit_temperature, probabilities  # noqa: E402  (chapter 07's calibration)
from .selective import threshold_for_precision  # noqa: E402


# --------------------------------------------------------------------------- images

def _grey(img) -> np.ndarray:
    """8-bit grey pixels; transparent pixels become white paper, 16-bit grey is scaled (not clipped)."""
    from PIL import Image
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(paper, rgba).convert("L"), dtype=np.uint8)
    if img.mode.startswith("I"):               # 16-bit PNGs open as I;16 or I
        a = np.asarray(img, dtype=np.float64)
        scale = 257.0 if img.mode.startswith("I;16") or a.max() > 255 else 1.0
        return np.clip(np.rint(a / scale), 0, 255).astype(np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def to_course_image(img) -> np.ndarray:
    """A Pillow image -> ``(28, 28)`` uint8, ink high (see the module docstring for the rules)."""
    from PIL import Image, ImageOps
    a = _grey(ImageOps.exif_transpose(img))
    if np.median(_border(a)) >= 128:          # dark ink on light paper (Omniglot): invert
        a = 255 - a
    h, w = a.shape
    side = max(h, w)
    if h != w:                                # pad to a square with the background, centred
        square = np.full((side, side), int(np.median(_border(a))), dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        square[top:top + h, left:left + w] = a
        a = square
    out = Image.fromarray(a)
    if side != SIZE:
        out = out.resize((SIZE, SIZE), getattr(Image, "Resampling", Image).BOX)
    return np.asarray(out, dtype=np.uint8)


def read_image(path: str | os.PathLike, shown: str | None = None) -> np.ndarray:
    """Read one image file as the course's ``(28, 28)`` ink-high uint8; ``InputError`` if unreadable."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.load()
            return to_course_image(img)
    except Exception as err:  # PIL raises many kinds (UnidentifiedImageError, OSError, SyntaxError...)
        raise InputError(f"{shown or path}: not a readable image ({type(err).__name__}: {err}). "
                         "Replace it with a valid PNG or JPEG, or remove it.") from None


# --------------------------------------------------------------------------- the folder

@dataclass
class Folder:
    """What is in FOLDER: class name -> its labelled image paths, and the unlabelled paths (relative)."""

    root: Path
    classes: dict[str, list[str]]
    unlabelled: list[str]
    ignored: list[str] = field(default_factory=list)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _images_under(folder: Path, root: Path, ignored: list[str]) -> list[str]:
    """Image files under ``folder`` (recursively, sorted), skipping hidden names; others -> ``ignored``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = _rel(Path(dirpath, name), root)
            (found if Path(name).suffix.lower() in IMAGE_EXTS else ignored).append(rel)
    return sorted(found)


def _need_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise InputError(f"{path}: {what}")


def scan_folder(root: str | os.PathLike) -> Folder:
    """Check the layout of FOLDER and list its images (``InputError`` naming what is wrong)."""
    root = Path(root)
    _need_dir(root, "no such folder. Give the folder that holds labelled/ and unlabelled/.")
    layout = "Make FOLDER/labelled/<class name>/ (a few images per class) and FOLDER/unlabelled/."
    _need_dir(root / "labelled", f"missing (or not a folder). {layout}")
    _need_dir(root / "unlabelled", f"missing (or not a folder). {layout}")
    ignored: list[str] = []
    classes: dict[str, list[str]] = {}
    for entry in sorted((root / "labelled").iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            raise InputError(f"{entry}: a file where a class folder belongs (a class name that is not a "
                             "folder). Every entry of labelled/ must be a folder named after its class; "
                             "move the file into labelled/<class name>/ or delete it.")
        if entry.name.strip().lower() in NONE_WORDS:
            raise InputError(f"{entry}: '{entry.name}' means 'none of these' in labels.csv and cannot be "
                             "a class name. Rename the folder.")
        classes[entry.name] = _images_under(entry, root, ignored)
        if not classes[entry.name]:
            raise InputError(f"{entry}: class folder with no image (.png, .jpg or .jpeg). Put at least "
                             "one labelled image of the class in it, or delete the folder.")
    unlabelled = _images_under(root / "unlabelled", root, ignored)
    if not unlabelled:
        raise InputError(f"{root / 'unlabelled'}: no image (.png, .jpg or .jpeg) in it or its sub-folders. "
                         "Put the images to label there.")
    return Folder(root, classes, unlabelled, ignored)


# --------------------------------------------------------------------------- labels.csv

@dataclass
class Row:
    """One line of labels.csv: the fields as written, the normalised path and the line number."""

    path: str
    label: str
    confidence: str
    source: str
    line: int = 0

    @property
    def key(self) -> str:
        return PurePosixPath(self.path.strip().replace("\\", "/")).as_posix()

    @property
    def is_none(self) -> bool:
        return self.label.strip().lower() in NONE_WORDS

    def fields(self) -> list[str]:
        return [self.path, self.label, self.confidence, self.source]


def _check_header(header: list[str] | None, csv_path: Path) -> dict[str, int]:
    """Column name -> index; ``InputError`` unless the header holds exactly the four columns."""
    want = ", ".join(COLUMNS)
    fix = f"Restore the first line to: {','.join(COLUMNS)} (or delete the file to start again)."
    if not header:
        raise InputError(f"{csv_path} line 1: the header is missing (the file is empty). {fix}")
    names = [h.strip().lower() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    extra = [h for h in names if h not in COLUMNS]
    if missing or extra or len(names) != len(set(names)):
        what = (f"missing column(s) {', '.join(missing)}" if missing else
                f"unknown column(s) {', '.join(repr(e) for e in extra)}" if extra else "a repeated column")
        raise InputError(f"{csv_path} line 1: the header must name the columns {want}, but it has "
                         f"{what} (found: {','.join(header)}). {fix}")
    return {c: names.index(c) for c in COLUMNS}


def _check_row_shape(fields: list[str], line: int, csv_path: Path) -> None:
    if len(fields) != len(COLUMNS):
        raise InputError(f"{csv_path} line {line}: {len(fields)} fields, but every row needs "
                         f"{len(COLUMNS)} ({','.join(COLUMNS)}); a label with a comma must be in double "
                         "quotes. Fix the line or delete it.")


def _check_source(row: Row, csv_path: Path) -> None:
    source = row.source.strip().lower()
    if source not in SOURCES:
        raise InputError(f"{csv_path} line {row.line}: unknown source {row.source!r}. Use one of "
                         f"{', '.join(SOURCES)} (human for a label you typed yourself).")
    row.source = source


def _check_path(row: Row, csv_path: Path) -> None:
    p = PurePosixPath(row.key)
    if not row.path.strip():
        raise InputError(f"{csv_path} line {row.line}: the path is empty. Every row names an image "
                         "as unlabelled/...; fill it in or delete the line.")
    if p.is_absolute() or ".." in p.parts or p.parts[0] != "unlabelled" or len(p.parts) < 2:
        raise InputError(f"{csv_path} line {row.line}: path {row.path!r} is not an image inside "
                         "unlabelled/ (paths are relative to the folder, e.g. unlabelled/a.png; "
                         "labelled/ images take their class from their folder). Fix the path or "
                         "delete the line.")


def read_labels(csv_path: str | os.PathLike) -> list[Row]:
    """Parse labels.csv; ``InputError`` naming the line for anything the tool cannot trust."""
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{csv_path}: cannot be read as UTF-8 text ({err}). Save it as UTF-8 CSV, "
                         "or move it away to start again.") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _parse(reader, csv_path)
    except csv.Error as err:
        raise InputError(f"{csv_path} line {reader.line_num}: not valid CSV ({err}); most likely an "
                         "unclosed double quote. Fix the line or delete it.") from None


def _parse(reader, csv_path: Path) -> list[Row]:
    idx = _check_header(next(reader, None), csv_path)
    rows, seen = [], {}
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue  # a blank line
        _check_row_shape(fields, reader.line_num, csv_path)
        row = Row(*(fields[idx[c]] for c in COLUMNS), line=reader.line_num)
        _check_source(row, csv_path)
        _check_path(row, csv_path)
        if row.key in seen:
            raise InputError(f"{csv_path} line {row.line}: {row.path} already has a row (line "
                             f"{seen[row.key]}). Keep one of the two lines.")
        seen[row.key] = row.line
        rows.append(row)
    return rows


def check_machine_rows(rows: Sequence[Row], classes: Sequence[str], csv_path: Path) -> None:
    """A machine row in a state the tool never writes was edited by a person: stop, do not overwrite."""
    known = {c.strip() for c in classes}
    for row in rows:
        if row.source == "human":
            continue
        label = row.label.strip()
        if row.source == "none-of-these":
            bad = bool(label) and f"has the label {row.label!r}, but the tool leaves none-of-these rows empty"
        elif not label:
            bad = "has an empty label, but the tool always proposes a class there"
        else:
            bad = label not in known and f"has the label {row.label!r}, which is not a class"
        if bad:
            raise InputError(f"{csv_path} line {row.line}: the {row.source} row for {row.path} {bad}, so a "
                             "person seems to have edited it. To keep what was typed, set the source to "
                             "human (a new name becomes a new class; empty or 'none' means none of these); "
                             "to let the tool propose again, delete the line.")


def _format(row: Row) -> list[str]:
    return row.fields()


def write_labels(csv_path: str | os.PathLike, rows: Sequence[Row]) -> None:
    """Write labels.csv atomically: a temporary file in the same folder, fsync, ``os.replace``.

    The old file is untouched until the new one is complete on disk; on any failure (or Ctrl-C)
    the temporary file is removed and the old file stays as it was.
    """
    csv_path = Path(csv_path)
    fd, tmp = tempfile.mkstemp(dir=csv_path.parent, prefix=f".{csv_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow(_format(row))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, csv_path.stat().st_mode & 0o777 if csv_path.exists() else 0o644)
        os.replace(tmp, csv_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(csv_path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not possible on every OS / file system
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- calibration

@dataclass
class Rule:
    """The decision rule's numbers: temperature κ, threshold tau, radius r, acceptance radius r_a <= r."""

    temperature: float
    tau: float
    radius: float
    accept_radius: float


@dataclass
class Calibration:
    """A :class:`Rule` chosen on meta-val, what it was chosen on, and what it reached there."""

    rule: Rule
    n_way: int
    k_shot: int
    n_distractors: int
    pools: int
    target: float
    val_precision: float     # precision of the automatic labels on meta-val (nan if none)
    val_coverage: float      # automatic labels / pool items on meta-val


def _val_pools(val_z: ClassSet, n_way: int, k_shot: int, n_distractors: int, m: int, pools: int,
               seed: int) -> tuple[Tensor, Tensor]:
    """Stacked logits ``-d`` (sum P, N; float64) and true labels (-1 = distractor) of meta-val pools."""
    from .labelling_data import sample_pool
    g = torch.Generator().manual_seed(seed)
    logits, ys = [], []
    for _ in range(pools):
        pool = sample_pool(val_z, n_way, k_shot, m, n_distractors, generator=g)
        c = prototypes(pool.support_z.double(), n_way, k_shot)
        logits.append(protonet_logits(pool.pool_z.double(), c))
        ys.append(pool.pool_y)
    return torch.cat(logits), torch.cat(ys)


def calibration_shape(val_z: ClassSet, n_way: int, k_shot: int,
                      share: float = DISTRACTOR_SHARE) -> tuple[int, int, int, int]:
    """(N, K, H, M) of the meta-val pools: the user's N and K, clipped to what meta-val can give."""
    n = max(2, min(n_way, len(val_z) - 1))
    h = min(math.ceil(share * n), len(val_z) - n)
    k = max(1, min(k_shot, val_z.min_examples() - 1))
    return n, k, h, max(1, min(M_VAL, val_z.min_examples() - k))


def _acceptance(conf: Tensor, correct: Tensor, d_min: Tensor, d_true: Tensor, radius: float,
                target: float) -> tuple[float, float]:
    """(r_a, tau) with the largest coverage of {d_min <= r_a, conf >= tau} at precision >= target.

    r_a runs over quantiles of the true-class distances (capped at r); for each, tau is the smallest
    threshold reaching the target. Softmax confidence alone cannot tell a distractor (a class in no
    support set) from a member, since it only compares the classes there are; the distance can.
    """
    best = (0.0, radius, math.inf)
    for q in ACCEPT_QUANTILES:
        r_a = min(radius, float(torch.quantile(d_true, q)))
        inside = d_min <= r_a
        if not bool(inside.any()):
            continue
        tau = float(threshold_for_precision(conf[inside], correct[inside], target))
        coverage = float((inside & (conf >= tau)).double().mean())
        if coverage > best[0]:
            best = (coverage, r_a, tau)
    return best[1], best[2]


def calibrate(val_z: ClassSet, n_way: int, k_shot: int, target: float = 0.99, pools: int = POOLS,
              share: float = DISTRACTOR_SHARE, seed: int = 0) -> Calibration:
    """Fit T (NLL), r (quantile of true-class distances), then r_a and tau (precision >= target) on meta-val."""
    n, k, h, m = calibration_shape(val_z, n_way, k_shot, share)
    logits, y = _val_pools(val_z, n, k, h, m, pools, seed)
    known = y >= 0
    temperature = float(fit_temperature(logits[known], y[known]))
    d_true = -logits[known].gather(1, y[known, None]).squeeze(1)
    radius = float(torch.quantile(d_true, RADIUS_QUANTILE))
    conf, pred = probabilities(logits, temperature).max(dim=1)
    correct = known & (pred == y)
    d_min = (-logits).min(dim=1).values
    accept_radius, tau = _acceptance(conf, correct, d_min, d_true, radius, target)
    accepted = (d_min <= accept_radius) & (conf >= tau)
    precision = float(correct[accepted].double().mean()) if bool(accepted.any()) else math.nan
    return Calibration(Rule(temperature, tau, radius, accept_radius), n, k, h, pools, target, precision,
                       float(accepted.double().mean()))


def encoder_identity(encoder: nn.Module) -> str:
    """A hash of the embedding's weights and buffers (its identity for the calibration cache)."""
    h = hashlib.sha256()
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _calibration_code() -> str:
    parts = [calibrate, calibration_shape, _acceptance, _val_pools, fit_temperature, probabilities,
             threshold_for_precision]
    return hashlib.sha256("".join(inspect.getsource(f) for f in parts).encode()).hexdigest()[:16]


_CALIBRATION_CODE = _calibration_code()  # the code the calibration cache depends on (taken at import)


def cached_calibration(encoder: nn.Module, val: ClassSet, n_way: int, k_shot: int, target: float,
                       pools: int = POOLS, share: float = DISTRACTOR_SHARE,
                       say: Callable[[str], None] = print) -> tuple[Calibration, bool]:
    """:func:`calibrate` on the embedded meta-val set, from the cache if done before; (result, cached)."""
    key = {"encoder": encoder_identity(encoder), "val": class_set_fingerprint(val), "n_way": n_way,
           "k_shot": k_shot, "target": target, "pools": pools, "share": share, "m": M_VAL,
           "quantile": RADIUS_QUANTILE, "accept": ACCEPT_QUANTILES, "code": _CALIBRATION_CODE}
    path = cache_dir("autolabel") / f"calibration-{config_key(key)}.json"
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        stored = json.loads(path.read_text())
        if stored["key"] == json.loads(json.dumps(key)):
            result = stored["result"]
            return Calibration(**{**result, "rule": Rule(**result["rule"])}), True
    from .labelling_data import embed_classes
    say(f"Calibrating on meta-val ({val.title}, {pools} pools); cached for the next run.")
    result = calibrate(embed_classes(encoder, val), n_way, k_shot, target, pools, share)
    with contextlib.suppress(OSError):  # a read-only cache only costs calibrating again
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "result": asdict(result)}, indent=1))
        os.replace(tmp, path)
    return result, False


# --------------------------------------------------------------------------- proposing

@dataclass
class Proposal:
    """Per pool item: class index (-1 for none of these), calibrated max probability and source."""

    label: Tensor
    confidence: Tensor
    source: list[str]


def class_means(support_z: Tensor, support_y: Tensor, n_way: int) -> Tensor:
    """c_n = mean of the supports labelled n (classes may have different counts): ``(N, D)``."""
    counts = torch.bincount(support_y, minlength=n_way)
    if bool((counts == 0).any()):
        raise ValueError(f"class {int((counts == 0).nonzero()[0])} has no support; give every class one.")
    sums = torch.zeros(n_way, support_z.shape[1], dtype=support_z.dtype, device=support_z.device)
    sums.index_add_(0, support_y.to(support_z.device), support_z)
    return sums / counts.to(support_z.device, support_z.dtype)[:, None]


def propose(support_z: Tensor, support_y: Tensor, n_way: int, pool_z: Tensor, rule: Rule) -> Proposal:
    """The decision rule of the module docstring for every pool item (computed in float64)."""
    d = squared_distances(pool_z.double(), class_means(support_z.double(), support_y, n_way))
    conf, best = probabilities(-d, rule.temperature).max(dim=1)
    d_min = d.min(dim=1).values
    outside = d_min > rule.radius
    auto = (d_min <= rule.accept_radius) & (conf >= rule.tau)
    source = ["none-of-these" if o else "auto" if a else "needs-review"
              for o, a in zip(outside.tolist(), auto.tolist())]
    return Proposal(torch.where(outside, torch.full_like(best, -1), best), conf, source)


# --------------------------------------------------------------------------- the run

@dataclass
class Plan:
    """Classes, support images (path, class index) and pool images to propose for."""

    classes: list[str]
    supports: list[tuple[str, int]]
    pool: list[str]
    new_classes: list[str]
    human: int


def _human_classes(rows: Sequence[Row], folder_classes: Sequence[str], present: set[str]) -> list[str]:
    """New class names from human rows whose image exists, in order of first appearance."""
    names = {c.strip() for c in folder_classes}
    new: list[str] = []
    for row in rows:
        label = row.label.strip()
        if row.source == "human" and not row.is_none and row.key in present and label not in names \
                and label not in new:
            new.append(label)
    return new


def make_plan(folder: Folder, rows: Sequence[Row], csv_path: Path, warn: Callable[[str], None]) -> Plan:
    """Merge the folder with the human rows of the old CSV into classes, supports and the pool."""
    present = set(folder.unlabelled)
    new = _human_classes(rows, list(folder.classes), present)
    classes = list(folder.classes) + new
    if len(classes) < 2:
        raise InputError(f"{folder.root / 'labelled'}: {len(classes)} class(es) "
                         f"({', '.join(classes) or 'none'}), but labelling needs at least 2. Add a folder "
                         "labelled/<class name>/ with an image of another class.")
    check_machine_rows(rows, classes + [r.label for r in rows if r.source == "human"], csv_path)
    index = {c.strip(): n for n, c in enumerate(classes)}
    supports = [(p, n) for n, c in enumerate(folder.classes) for p in folder.classes[c]]
    human_keys = set()
    for row in (r for r in rows if r.source == "human"):
        human_keys.add(row.key)
        if row.key not in present:
            warn(f"{csv_path} line {row.line}: {row.path} no longer exists; its human label "
                 f"{row.label!r} is kept in the CSV but not used.")
        elif not row.is_none:
            supports.append((row.key, index[row.label.strip()]))
    pool = [p for p in folder.unlabelled if p not in human_keys]
    return Plan(classes, supports, pool, new, len(human_keys))


def _load_images(root: Path, paths: Sequence[str], warn: Callable[[str], None] | None = None,
                 skipped: str = "") -> tuple[Tensor, list[str]]:
    """``(M, 1, 28, 28)`` uint8 of the readable ``paths`` and those paths.

    Unreadable files raise ``InputError``, or, given ``warn``, are reported (with ``skipped``) and left out.
    """
    images, kept = [], []
    for rel in paths:
        try:
            images.append(read_image(root / rel, shown=str(root / rel)))
            kept.append(rel)
        except InputError as err:
            if warn is None:
                raise
            warn(f"{err} {skipped}")
    x = torch.from_numpy(np.stack(images)) if images else torch.zeros(0, SIZE, SIZE, dtype=torch.uint8)
    return x[:, None], kept


def merge_rows(old: Sequence[Row], pool: Sequence[str], proposal: Proposal, classes: Sequence[str],
               unlabelled: Sequence[str]) -> list[Row]:
    """Human rows as read; machine rows re-proposed (dropped if their file is gone); new files appended."""
    by_path = {}
    for rel, n, c, s in zip(pool, proposal.label.tolist(), proposal.confidence.tolist(), proposal.source):
        by_path[rel] = (classes[n] if n >= 0 else "", f"{c:.4f}", s)
    out, done, present = [], set(), set(unlabelled)
    for row in old:
        done.add(row.key)
        if row.source == "human":
            out.append(row)
        elif row.key in by_path:
            out.append(Row(row.path, *by_path[row.key]))
    out += [Row(p, *by_path[p]) for p in pool if p not in done and p in present]
    return out


def _resolve_device(name: str | None) -> torch.device:
    from .devices import pick_device
    try:
        return pick_device(name)
    except (RuntimeError, ValueError) as err:
        raise InputError(f"--device {name}: {err}".replace("\n", " ")) from None


def _encoder(args: argparse.Namespace, device: torch.device, say: Callable[[str], None]) -> nn.Module:
    from .labelling_data import labelling_data, load_encoder, pretrained_encoder
    if args.checkpoint:
        try:
            return load_encoder(args.checkpoint, device)
        except (FileNotFoundError, ValueError) as err:
            raise InputError(f"--checkpoint: {err}") from None
    say("Loading the course's meta-trained ProtoNet embedding (trained now on first use, then cached).")
    with contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext():
        return pretrained_encoder(labelling_data(args.data), device)


def _given_rule(args: argparse.Namespace, fitted: Rule | None) -> Rule:
    """The options given on the command line over the fitted rule.

    A given --tau keeps the acceptance radius only if --accept-radius is given too (else r_a = r: tau
    and r_a were chosen together); r_a never exceeds r.
    """
    pick = lambda given, name: getattr(fitted, name) if given is None else given  # noqa: E731
    t, tau, r = pick(args.temperature, "temperature"), pick(args.tau, "tau"), pick(args.radius, "radius")
    r_a = args.accept_radius if args.accept_radius is not None else \
        r if args.tau is not None or fitted is None else fitted.accept_radius
    return Rule(t, tau, r, min(r_a, r))


def _parameters(args: argparse.Namespace, encoder: nn.Module, n_way: int, k_shot: int,
                say: Callable[[str], None]) -> tuple[Rule, Calibration | None, bool]:
    """The rule, the meta-val calibration behind it (None if T, tau and r are all given), whether cached."""
    if args.temperature is not None and args.tau is not None and args.radius is not None:
        return _given_rule(args, None), None, False
    from .labelling_data import labelling_data
    val = labelling_data(args.data).val
    cal, cached = cached_calibration(encoder, val, n_way, k_shot, args.precision, args.calibration_pools,
                                     args.distractor_share, say)
    return _given_rule(args, cal.rule), cal, cached


def _check_args(args: argparse.Namespace) -> None:
    checks = [("--precision", args.precision, 0 < args.precision <= 1, "in (0, 1], e.g. 0.99"),
              ("--tau", args.tau, args.tau is None or 0 <= args.tau <= 1, "in [0, 1]"),
              ("--radius", args.radius, args.radius is None or args.radius >= 0, ">= 0 (a squared distance)"),
              ("--accept-radius", args.accept_radius, args.accept_radius is None or args.accept_radius >= 0,
               ">= 0 (a squared distance)"),
              ("--distractor-share", args.distractor_share, 0 <= args.distractor_share <= 10, "in [0, 10]"),
              ("--temperature", args.temperature, args.temperature is None or args.temperature > 0, "> 0"),
              ("--calibration-pools", args.calibration_pools, args.calibration_pools >= 1, ">= 1")]
    for name, value, ok, want in checks:
        if not ok:
            raise InputError(f"{name} {value}: must be {want}.")
    if args.out is not None and not Path(args.out).parent.is_dir():
        raise InputError(f"--out {args.out}: the folder {Path(args.out).parent} does not exist; create it "
                         "or write labels.csv elsewhere.")


def _summary(rows: Sequence[Row], plan: Plan, csv_path: Path, params: tuple, skipped: int, k: Tensor,
             args: argparse.Namespace) -> str:
    rule, cal, cached = params
    count = {s: sum(r.source == s for r in rows) for s in SOURCES}
    auto_conf = [float(r.confidence) for r in rows if r.source == "auto"]
    estimate = f"estimated precision {np.mean(auto_conf):.3f} (mean calibrated confidence)" if auto_conf \
        else "none accepted"
    lines = [f"{PROG}: wrote {csv_path} ({len(rows)} rows; {len(plan.classes)} classes, "
             + (f"{int(k.min())} support{'s' if int(k.min()) > 1 else ''} per class" if int(k.min()) == int(k.max())
                else f"{int(k.min())} to {int(k.max())} supports per class")
             + (f", new from human rows: {', '.join(plan.new_classes)}" if plan.new_classes else "") + ")",
             f"  auto           {count['auto']:5d}  {estimate}",
             f"  needs-review   {count['needs-review']:5d}",
             f"  none-of-these  {count['none-of-these']:5d}",
             f"  human          {count['human']:5d}  (kept as typed)"]
    if skipped:
        lines.append(f"  unreadable     {skipped:5d}  (skipped, see the warnings)")
    lines.append("  " + _where(rule, cal, cached, args))
    return "\n".join(lines)


def _where(rule: Rule, cal: Calibration | None, cached: bool, args: argparse.Namespace) -> str:
    """Where tau, r_a, r and T came from, in two lines."""
    numbers = (f"tau = {rule.tau:.4f}, acceptance radius r_a = {rule.accept_radius:.4g}, radius r = "
               f"{rule.radius:.4g}, temperature κ = {rule.temperature:.4g}")
    if cal is None:
        return f"{numbers}: given on the command line"
    given = [o for o, v in [("--tau", args.tau), ("--accept-radius", args.accept_radius),
                            ("--radius", args.radius), ("--temperature", args.temperature)] if v is not None]
    origin = (f"meta-val ({args.data} data, {cal.pools} pools of {cal.n_way}-way {cal.k_shot}-shot with "
              f"{cal.n_distractors} distractor classes{', from the cache' if cached else ''})")
    if math.isinf(cal.rule.tau):
        reach = f"no threshold reaches precision {cal.target} there: nothing is accepted automatically"
    else:
        reach = (f"target precision {cal.target}: {cal.val_precision:.3f} at coverage {cal.val_coverage:.2f} "
                 "there")
    return (f"{numbers}\n  from {origin}, {reach}" + (f"; given: {', '.join(given)}" if given else ""))


def run(args: argparse.Namespace) -> int:
    """The whole tool; raises InputError for bad input."""
    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    def warn(msg: str) -> None:
        print(f"warning: {msg}", file=sys.stderr)

    _check_args(args)
    folder = scan_folder(args.folder)
    csv_path = Path(args.out) if args.out else folder.root / "labels.csv"
    if folder.ignored:
        warn(f"ignored {len(folder.ignored)} file(s) that are not .png/.jpg/.jpeg, e.g. {folder.ignored[0]}")
    old = read_labels(csv_path) if csv_path.exists() else []
    plan = make_plan(folder, old, csv_path, warn)
    supports_x, support_y, skipped_human = _supports(folder.root, plan, csv_path, warn)
    pool_x, pool = _load_images(folder.root, plan.pool, warn, "Skipped: it gets no row in labels.csv.")
    with _quiet_bars(args.quiet):
        encoder = _encoder(args, _resolve_device(args.device), say)
        if args.save_checkpoint:
            from .labelling_data import save_encoder
            save_encoder(encoder, args.save_checkpoint)
            say(f"Saved the embedding to {args.save_checkpoint} (use it with --checkpoint).")
        from .labelling_data import embed
        support_z, pool_z = embed(encoder, supports_x), embed(encoder, pool_x)
        params = _parameters(args, encoder, len(plan.classes), int(torch.bincount(support_y).min()), say)
    proposal = propose(support_z, support_y, len(plan.classes), pool_z, params[0]) if pool else \
        Proposal(torch.zeros(0, dtype=torch.long), torch.zeros(0), [])
    rows = merge_rows(old, pool, proposal, plan.classes, folder.unlabelled)
    try:
        write_labels(csv_path, rows)
    except OSError as err:
        print(f"{PROG}: error: could not write {csv_path} ({err}); the old file, if any, is unchanged.",
              file=sys.stderr)
        return 1
    counts = torch.bincount(support_y, minlength=len(plan.classes))
    print(_summary(rows, plan, csv_path, params, len(plan.pool) - len(pool) + skipped_human, counts, args))
    return 0


@contextlib.contextmanager
def _quiet_bars(quiet: bool):
    """``COURSE_QUIET=1`` (no progress bars) for the duration, when asked to be quiet."""
    before = os.environ.get("COURSE_QUIET")
    if quiet:
        os.environ["COURSE_QUIET"] = "1"
    try:
        yield
    finally:
        if quiet and before is None:
            os.environ.pop("COURSE_QUIET", None)
        elif quiet:
            os.environ["COURSE_QUIET"] = before


def _supports(root: Path, plan: Plan, csv_path: Path,
              warn: Callable[[str], None]) -> tuple[Tensor, Tensor, int]:
    """Support images and labels: every labelled/ image (must be readable), then the human rows' images."""
    folder_sup = [(p, n) for p, n in plan.supports if p.startswith("labelled/")]
    human = [(p, n) for p, n in plan.supports if not p.startswith("labelled/")]
    x, _ = _load_images(root, [p for p, _ in folder_sup])
    hx, kept = _load_images(root, [p for p, _ in human], warn,
                            "Its human row is kept in labels.csv but it is not used as an example.")
    kept_set = set(kept)
    y = torch.tensor([n for _, n in folder_sup] + [n for p, n in human if p in kept_set], dtype=torch.long)
    missing = sorted(set(range(len(plan.classes))) - set(y.tolist()))
    if missing:
        raise InputError(f"{csv_path}: class {plan.classes[missing[0]]!r} has no readable image (its human "
                         "rows name unreadable files). Fix those images or rows.")
    return torch.cat([x, hx]), y, len(human) - len(kept)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Label FOLDER/unlabelled/ from a few examples per class in FOLDER/labelled/<class>/ "
                    "with the course's meta-trained ProtoNet; writes FOLDER/labels.csv "
                    "(path,label,confidence,source; source auto, needs-review, none-of-these or human). "
                    "Rows you set to source 'human' are kept exactly and used as extra examples on the "
                    "next run (a new name becomes a new class; empty or 'none' means none of these).",
        epilog="Thresholds are chosen on meta-validation characters, never on your labelled images.")
    parser.add_argument("folder", help="folder with labelled/<class name>/ and unlabelled/")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="embedding written by labelling_data.save_encoder (default: the course's "
                             "meta-trained ProtoNet, trained on first use and cached)")
    parser.add_argument("--precision", type=float, default=0.99, metavar="P",
                        help="target precision of the automatic labels, on meta-val (default 0.99)")
    parser.add_argument("--tau", type=float, metavar="TAU", help="acceptance threshold on the calibrated probability "
                                                  "(default: chosen on meta-val for --precision)")
    parser.add_argument("--radius", type=float, metavar="R", help="none-of-these beyond this squared distance to the "
                                                     "nearest prototype (default: chosen on meta-val)")
    parser.add_argument("--accept-radius", type=float, metavar="R_A",
                        help="accept automatically only within this squared distance of a prototype "
                             "(default: chosen on meta-val with tau; equal to --radius when --tau is given)")
    parser.add_argument("--temperature", type=float, metavar="T",
                        help="softmax temperature κ (default: fitted on meta-val)")
    parser.add_argument("--distractor-share", type=float, default=DISTRACTOR_SHARE, metavar="S",
                        help="meta-val pools get ceil(S * N) classes that are in no labelled folder, as "
                             f"unknown images in unlabelled/ would be (default {DISTRACTOR_SHARE}; 0 if "
                             "every unlabelled image belongs to one of your classes)")
    parser.add_argument("--calibration-pools", type=int, default=POOLS, metavar="N",
                        help=f"meta-val pools to calibrate on (default {POOLS})")
    parser.add_argument("--data", choices=("auto", "omniglot", "glyphs"), default="auto",
                        help="course data behind the default embedding and meta-val (default auto: "
                             "Omniglot if OMNIGLOT_DIR is set, else the glyph set)")
    parser.add_argument("--out", metavar="CSV", help="where to read and write the labels "
                                                     "(default FOLDER/labels.csv)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: COURSE_DEVICE, else the best)")
    parser.add_argument("--save-checkpoint", metavar="PATH", help="also save the embedding used to PATH")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or notes; summary and warnings only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``course-autolabel``; returns the exit status (0 done, 2 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except InputError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; labels.csv is unchanged or complete (never half written).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
