"""Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015): 1,623 handwritten characters from 50 alphabets.

Every character was drawn once by each of 20 people, as a 105x105 black-and-white PNG. The
release has a *background* set (30 alphabets, 964 characters) for learning about characters in
general and an *evaluation* set (20 alphabets, 659 characters) for testing on new ones, plus two
small background subsets (5 alphabets each) and Lake's official one-shot classification runs.

What this module does
---------------------
* :func:`load_omniglot` reads the PNGs straight out of the original zip files (nothing is
  extracted; the data folder may be read-only), turns them into ``uint8`` with **ink high**
  (pen strokes 255, paper 0), optionally shrinks them from 105x105 to 28x28 (area averaging,
  PIL ``BOX``), and returns an :class:`episodes.ClassSet` of shape ``(C, 20, 1, H, W)``. Classes
  are named ``'Alphabet/characterNN'``; example ``j`` of every class is drawer ``j+1``. The decoded
  arrays are cached as ``.npz`` under ``cache_dir('omniglot')``, so only the first load decodes.
* Each zip is checked against a known checksum once; the result is remembered (keyed by file
  size and modification time), so later loads do not hash again. A wrong file gives a
  ``ValueError`` and a missing one a ``FileNotFoundError``, both saying what to do.
* :func:`vinyals_split` builds the split used by Vinyals et al. (2016), Snell et al. (2017) and
  Finn et al. (2017): pool all 1,623 characters, keep 1,200 for meta-training and 423 for
  meta-testing, and only then add the rotations by 90, 180 and 270 degrees as new classes
  (4,800 / 1,692 classes). Those papers used fixed class lists; ours is a seeded random choice
  of the same sizes (see the function), so numbers are comparable in spirit, not digit for digit.
* :func:`lake_runs` gives Lake et al.'s 20 official 20-way 1-shot runs (within one alphabet,
  evaluation characters) as :class:`LakeRun` objects that turn into :class:`episodes.Episode`.

Offline by default
------------------
Nothing here touches the network unless you ask: point ``OMNIGLOT_DIR`` at a folder holding the
zips (``make test`` does so when ``../shared/data/omniglot`` exists). To fetch them on a machine
with internet, run ``course-download-omniglot DEST`` (:func:`main` / :func:`download`), which
downloads from github.com/brendenlake/omniglot and verifies every file.

Which files are accepted
------------------------
The small zips and ``all_runs.zip`` must match the published files byte for byte (sha256). For
``images_background.zip`` and ``images_evaluation.zip`` two versions exist: the archives published
in brendenlake/omniglot (known here only by their published md5) and this project's repacked
copies, which hold the same PNGs (known by sha256; see the data README). Either is accepted:
a file passes if its sha256 is the repack's *or* its md5 is the original's. md5 is not
collision-resistant, but it is only a check against damaged or wrong downloads here.

The data set is MIT-licensed, copyright (c) 2015 Brenden Lake. Cite: Lake, B. M.,
Salakhutdinov, R., & Tenenbaum, J. B. (2015). Human-level concept learning through
probabilistic program induction. Science, 350(6266), 1332-1338.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from .cache import cache_dir
from .episodes import ClassSet, Episode, split_classes, with_rotations

__all__ = ["FILES", "SPLITS", "SIZES", "DEFAULT_URL", "DOWNLOAD_COMMAND", "omniglot_dir", "available",
           "why_unavailable", "verify_file", "load_omniglot", "vinyals_split", "LakeRun", "lake_runs",
           "download", "main"]

ENV_VAR = "OMNIGLOT_DIR"
DOWNLOAD_COMMAND = "course-download-omniglot"
DEFAULT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
SIZES = (28, 105)
DRAWERS = 20
_FORMAT = 1  # bump when the decoded-cache layout or the image pipeline changes


@dataclass(frozen=True)
class KnownFile:
    """A file of the release: the checksums it may have and where it lives under ``DEFAULT_URL``."""

    sha256: tuple[str, ...]
    md5: tuple[str, ...] = ()
    remote: str = ""
    what: str = ""


FILES: dict[str, KnownFile] = {
    "images_background.zip": KnownFile(
        ("7a4cae547f16207901bd3acaabd866c1dbbef4d559dff26d797dbc6423a64a1e",),  # repacked copy
        ("68d2efa1b9178cc56df9314c21c6e718",),  # published original
        "images_background.zip", "background set: 30 alphabets, 964 characters"),
    "images_evaluation.zip": KnownFile(
        ("d84af890b3ea334eca90f1cb04c6111603a1b620d66b82f86414b8707fbd0e8d",),  # repacked copy
        ("6b91aef0f799c5bb55b94e3f2daec811",),  # published original
        "images_evaluation.zip", "evaluation set: 20 alphabets, 659 characters"),
    "images_background_small1.zip": KnownFile(
        ("f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",),
        ("e704a628b5459e08445c13499850abc4",),
        "images_background_small1.zip", "5 background alphabets, 136 characters"),
    "images_background_small2.zip": KnownFile(
        ("3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",),
        ("b75a71a51d3b13f821f212756fe481fd",),
        "images_background_small2.zip", "5 background alphabets, 156 characters"),
    "all_runs.zip": KnownFile(
        ("437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325",), (),
        "one-shot-classification/all_runs.zip", "Lake's 20 one-shot classification runs"),
}

SPLITS: dict[str, str] = {
    "background": "images_background.zip",
    "evaluation": "images_evaluation.zip",
    "background_small1": "images_background_small1.zip",
    "background_small2": "images_background_small2.zip",
}
_MAIN_FILES = ("images_background.zip", "images_evaluation.zip")
_PNG = re.compile(r"^(\d{4})_(\d{2})\.png$")


# --------------------------------------------------------------------------- where the data is

def _quiet() -> bool:
    return os.environ.get("COURSE_QUIET", "") == "1"


def _configured(path: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The folder asked for (existing or not) and where the request came from."""
    if path is not None and str(path) != "":
        return Path(path).expanduser(), "the path argument"
    env = os.environ.get(ENV_VAR, "")
    return (Path(env).expanduser(), ENV_VAR) if env else (None, ENV_VAR)


def omniglot_dir(path: str | os.PathLike | None = None) -> Path | None:
    """The Omniglot folder: ``path`` if given, else ``$OMNIGLOT_DIR`` (an empty value counts as unset).

    ``None`` when neither is set or the folder does not exist.
    """
    folder, _ = _configured(path)
    return folder if folder is not None and folder.is_dir() else None


def _fix_hint(folder: Path | str = "DIR") -> str:
    return (f"get the zips with `{DOWNLOAD_COMMAND} {folder}` on a machine with internet, or download "
            f"them into any folder and set {ENV_VAR} to it (see the README)")


def _folder_problem(path: str | os.PathLike | None, files: Sequence[str]) -> str:
    """Why the folder itself is unusable (not set / does not exist), or ``''``."""
    folder, source = _configured(path)
    if folder is None:
        return f"{ENV_VAR} is not set. Set {ENV_VAR} to a folder with {' and '.join(files)}: {_fix_hint()}."
    if not folder.is_dir():
        return f"The Omniglot folder {folder} (from {source}) does not exist. To fix it, {_fix_hint(folder)}."
    return ""


def why_unavailable(path: str | os.PathLike | None = None,
                    files: Sequence[str] = _MAIN_FILES) -> str:
    """One line saying why real Omniglot cannot be used, or ``''`` when it can.

    Checks that the folder exists and that ``files`` (by default the background and evaluation
    zips) are there with the right checksums (hashed once, then remembered).
    """
    problem = _folder_problem(path, files)
    if not problem:
        folder = omniglot_dir(path)
        for name in files:
            try:
                verify_file(folder / name)
            except (FileNotFoundError, ValueError) as err:
                problem = str(err)
                break
    if not problem:
        return ""
    first, _, rest = problem.partition(". ")
    return f"{first}; using the built-in glyph set instead. {rest}"


def available(path: str | os.PathLike | None = None, files: Sequence[str] = _MAIN_FILES) -> bool:
    """True when the Omniglot zips ``files`` are in the folder and verified (see :func:`why_unavailable`)."""
    return why_unavailable(path, files) == ""


def _require_dir(path: str | os.PathLike | None, needs: str) -> Path:
    problem = _folder_problem(path, (needs,))
    if problem:
        raise FileNotFoundError(problem)
    return omniglot_dir(path)


# --------------------------------------------------------------------------- checksums

def _hash_file(file: Path) -> tuple[str, str]:
    """(sha256, md5) of a file, read in 1 MiB blocks."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _atomic_write_bytes(final: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _digests(file: Path) -> tuple[str, str]:
    """(sha256, md5) of ``file``, from the cache when its size and mtime are unchanged."""
    st = file.stat()
    book = cache_dir("omniglot") / "checksums.json"
    key = str(file.resolve())
    try:
        known = json.loads(book.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(key)
    if isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns \
            and isinstance(entry.get("sha256"), str) and isinstance(entry.get("md5"), str):
        return entry["sha256"], entry["md5"]
    sha, md5 = _hash_file(file)
    known[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha, "md5": md5}
    try:
        _atomic_write_bytes(book, json.dumps(known, indent=1, sort_keys=True).encode())
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return sha, md5


def _check_digests(name: str, sha: str, md5: str) -> bool:
    info = FILES[name]
    return sha in info.sha256 or md5 in info.md5


def _mismatch_message(file: Path, sha: str, md5: str) -> str:
    info = FILES[file.name]
    expected = f"sha256 {info.sha256[0]}"
    if info.md5:
        expected += f" (or md5 {info.md5[0]}, the published original)"
    return (f"{file.name} in {file.parent} is not the expected file: expected {expected}, got sha256 "
            f"{sha} (md5 {md5}). It is damaged or a different version. Delete it and download it "
            f"again with `{DOWNLOAD_COMMAND} {file.parent}` (or into another folder, then set "
            f"{ENV_VAR} to it).")


def verify_file(file: str | os.PathLike) -> str:
    """Check one release file against its known checksum; return its sha256.

    The hash is computed once and remembered in ``cache_dir('omniglot')/checksums.json`` (keyed by
    path, size and modification time). Raises ``FileNotFoundError`` if the file is missing and
    ``ValueError`` if it is not the published file.
    """
    file = Path(file)
    if file.name not in FILES:
        raise ValueError(f"{file.name} is not an Omniglot release file; known files: {sorted(FILES)}.")
    if not file.is_file():
        raise FileNotFoundError(f"{file.name} is missing from {file.parent}. To fix it, "
                                f"{_fix_hint(file.parent)}.")
    sha, md5 = _digests(file)
    if not _check_digests(file.name, sha, md5):
        raise ValueError(_mismatch_message(file, sha, md5))
    return sha


# --------------------------------------------------------------------------- decoding

def _check_size(size: int) -> None:
    if isinstance(size, bool) or size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)} (pixels per side: 28 is the usual "
                         f"few-shot size, 105 the original), got {size!r}.")


def _decode_png(data: bytes, size: int) -> np.ndarray:
    """One Omniglot PNG (1-bit, black ink on white) -> ``(size, size)`` uint8 with ink high."""
    from PIL import Image, ImageOps

    img = ImageOps.invert(Image.open(io.BytesIO(data)).convert("L"))  # paper 0, ink 255
    if img.size != (size, size):
        box = getattr(Image, "Resampling", Image).BOX  # area average: no ringing, keeps ink mass
        img = img.resize((size, size), box)
    return np.asarray(img, dtype=np.uint8)


def _index_zip(zf: zipfile.ZipFile, label: str) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """[(alphabet, character)] in sorted order and, for each, its 20 PNG members by drawer."""
    found: dict[tuple[str, str], dict[int, str]] = {}
    for member in zf.namelist():
        parts = member.split("/")
        if len(parts) < 3 or "__MACOSX" in parts or parts[-1].startswith("."):
            continue
        m = _PNG.match(parts[-1])
        if not m:
            continue
        found.setdefault((parts[-3], parts[-2]), {})[int(m.group(2))] = member
    if not found:
        raise ValueError(f"{label} holds no Omniglot PNGs (expected <Alphabet>/characterNN/IIII_DD.png).")
    keys = sorted(found)
    members = []
    for key in keys:
        drawers = found[key]
        if sorted(drawers) != list(range(1, DRAWERS + 1)):
            raise ValueError(f"{label}: {key[0]}/{key[1]} has drawers {sorted(drawers)}; expected "
                             f"01..{DRAWERS}. The zip is incomplete; download it again.")
        members.append([drawers[d] for d in range(1, DRAWERS + 1)])
    return keys, members


def _decode_split(zip_path: Path, split: str, size: int) -> tuple[np.ndarray, list[str], list[str]]:
    from tqdm.auto import tqdm

    with zipfile.ZipFile(zip_path) as zf:
        keys, members = _index_zip(zf, zip_path.name)
        x = np.empty((len(keys), DRAWERS, size, size), dtype=np.uint8)
        with tqdm(total=len(keys) * DRAWERS, desc=f"Decoding Omniglot {split} ({size}px)", unit="img",
                  disable=_quiet(), mininterval=0.5) as bar:
            for c, row in enumerate(members):
                for j, member in enumerate(row):
                    x[c, j] = _decode_png(zf.read(member), size)
                bar.update(len(row))
    return x, [f"{a}/{ch}" for a, ch in keys], [a for a, _ in keys]


def _array_sha(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).data).hexdigest()


def _read_cache(file: Path, size: int) -> tuple[np.ndarray, list[str], list[str]]:
    with np.load(file, allow_pickle=False) as d:
        if int(d["format"]) != _FORMAT:
            raise ValueError(f"cache format {int(d['format'])}, expected {_FORMAT}")
        x, names, alphabets = d["x"], [str(s) for s in d["names"]], [str(s) for s in d["alphabets"]]
        want = str(d["x_sha256"])
    if x.dtype != np.uint8 or x.shape != (len(names), DRAWERS, size, size) or len(alphabets) != len(names):
        raise ValueError(f"unexpected contents: x {x.dtype} {x.shape}, {len(names)} names")
    if _array_sha(x) != want:
        raise ValueError("image checksum mismatch")
    return x, names, alphabets


def _write_cache(file: Path, x: np.ndarray, names: list[str], alphabets: list[str]) -> None:
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, x=x, names=np.array(names), alphabets=np.array(alphabets),
                                x_sha256=np.array(_array_sha(x)), format=np.array(_FORMAT))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_omniglot(split: str = "background", size: int = 28,
                  path: str | os.PathLike | None = None) -> ClassSet:
    """One Omniglot set as a :class:`ClassSet` of ``uint8`` images ``(C, 20, 1, size, size)``, ink high.

    Args:
        split: ``'background'`` (964 characters), ``'evaluation'`` (659), ``'background_small1'``
            (136) or ``'background_small2'`` (156).
        size: 28 (area-averaged from 105, the usual few-shot size) or 105 (the original binary
            images, values 0 and 255).
        path: folder with the zips; default ``$OMNIGLOT_DIR``.

    Classes are sorted by alphabet, then character; names are ``'Alphabet/characterNN'`` and
    example ``j`` is drawer ``j+1``. The first call decodes the zip (a few seconds for the full
    background set) and caches the result; later calls read the cache.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown Omniglot split {split!r}; choose one of {list(SPLITS)}.")
    _check_size(size)
    folder = _require_dir(path, SPLITS[split])
    zip_path = folder / SPLITS[split]
    sha = verify_file(zip_path)
    cached = cache_dir("omniglot") / f"{split}_{size}px_{sha[:16]}_v{_FORMAT}.npz"
    x = None
    if cached.exists():
        try:
            x, names, alphabets = _read_cache(cached, size)
        except Exception as err:  # any damage: rebuild
            warnings.warn(f"The decoded Omniglot cache {cached} is damaged ({err}); decoding the zip "
                          "again.", RuntimeWarning, stacklevel=2)
            cached.unlink(missing_ok=True)
            x = None
    if x is None:
        x, names, alphabets = _decode_split(zip_path, split, size)
        try:
            _write_cache(cached, x, names, alphabets)
        except OSError as err:
            warnings.warn(f"Could not cache decoded Omniglot in {cached.parent} ({err}); the next "
                          "load will decode again.", RuntimeWarning, stacklevel=2)
    return ClassSet(torch.from_numpy(x).unsqueeze(2), names, alphabets, f"Omniglot {split} ({size}px)")


# --------------------------------------------------------------------------- splits

def vinyals_split(size: int = 28, seed: int = 0, rotations: bool = True,
                  path: str | os.PathLike | None = None,
                  n_val: int | None = None) -> tuple[ClassSet, ...]:
    """The Vinyals et al. (2016) style split: 1,200 meta-train and 423 meta-test characters.

    Background and evaluation are pooled (1,623 characters); ``seed`` picks 1,200 of them for
    meta-training and the other 423 are meta-test. Then, and only then, each part gets its
    rotations by 90, 180 and 270 degrees as new classes (:func:`episodes.with_rotations`), giving
    4,800 and 1,692 classes; a rotated character never crosses the split.

    With ``n_val`` (Snell et al. used 172) the 1,200 meta-train characters are split again into
    ``1200 - n_val`` train and ``n_val`` validation characters, and three parts are returned
    (train, val, test); the meta-test part is the same as without ``n_val``.

    Vinyals et al. and later papers used fixed class lists (Snell et al. publish theirs); this
    function does not reproduce those lists but a seeded random choice of the same sizes, so the
    meta-test characters come from many alphabets that meta-training has also seen. Deterministic
    for a given ``seed`` (and torch version). Lake's runs (:func:`lake_runs`) use evaluation
    characters, which may lie in this meta-train part: do not score a model trained here on them.
    """
    if n_val is not None and (isinstance(n_val, bool) or not isinstance(n_val, int) or not 1 <= n_val < 1200):
        raise ValueError(f"n_val must be None or an integer in 1..1199 (validation characters taken "
                         f"from the 1,200 meta-train ones; Snell et al. used 172), got {n_val!r}.")
    bg = load_omniglot("background", size, path)
    ev = load_omniglot("evaluation", size, path)
    pool = ClassSet(torch.cat([bg.x, ev.x]), bg.names + ev.names, bg.alphabets + ev.alphabets,
                    f"Omniglot, all 1,623 characters ({size}px)")
    del bg, ev
    train, test = split_classes(pool, [1200, len(pool) - 1200], seed=seed,
                                titles=[f"Omniglot meta-train ({size}px)", f"Omniglot meta-test ({size}px)"])
    parts = [train, test]
    if n_val is not None:
        tr, val = split_classes(train, [1200 - n_val, n_val], seed=seed + 1,
                                titles=[f"Omniglot meta-train ({size}px)", f"Omniglot meta-val ({size}px)"])
        parts = [tr, val, test]
    if rotations:
        parts = [with_rotations(p) for p in parts]
    return tuple(parts)


# --------------------------------------------------------------------------- Lake's runs

@dataclass
class LakeRun:
    """One of Lake et al.'s 20-way 1-shot runs: 20 characters of one evaluation alphabet.

    ``support_x`` ``(20, 1, H, W)``: one drawing of each of the 20 characters (training/classNN.png,
    label NN-1); ``query_x`` ``(20, 1, H, W)``: a drawing by someone else of each character, in the
    run's order (test/itemNN.png); ``query_y`` ``(20,)``: the label of each query. Images are float
    in [0, 1], ink high. The score is the fraction of queries labelled correctly.
    """

    run: int
    support_x: Tensor
    query_x: Tensor
    query_y: Tensor
    support_files: list[str] = field(default_factory=list)
    query_files: list[str] = field(default_factory=list)

    def episode(self) -> Episode:
        """The run as an :class:`Episode` (20-way, 1-shot, 1 query per class, class-major queries)."""
        order = torch.argsort(self.query_y, stable=True)
        n = int(self.support_x.shape[0])
        return Episode(self.support_x, torch.arange(n), self.query_x[order], self.query_y[order],
                       n, 1, 1, [f"run{self.run:02d}/class{c + 1:02d}" for c in range(n)])


def lake_runs(path: str | os.PathLike | None = None, size: int = 105) -> list[LakeRun]:
    """Lake et al.'s 20 official one-shot runs (``all_runs.zip``), as :class:`LakeRun` objects.

    ``size`` 105 (the original images) or 28 (area-averaged as in :func:`load_omniglot`). The runs
    use evaluation characters: train on the background set only before scoring on them.
    """
    _check_size(size)
    folder = _require_dir(path, "all_runs.zip")
    zip_path = folder / "all_runs.zip"
    verify_file(zip_path)
    runs = []
    with zipfile.ZipFile(zip_path) as zf:
        members = set(zf.namelist())
        run_names = sorted({m.split("/")[0] for m in members if re.match(r"^run\d+/", m)})
        for run_name in run_names:
            support = sorted(m for m in members if re.match(rf"^{run_name}/training/class\d+\.png$", m))
            queries = sorted(m for m in members if re.match(rf"^{run_name}/test/item\d+\.png$", m))
            label_of = {s: i for i, s in enumerate(support)}
            pairs = dict(line.split() for line in
                         zf.read(f"{run_name}/class_labels.txt").decode().splitlines() if line.strip())
            if set(pairs) != set(queries) or not set(pairs.values()) <= set(label_of):
                raise ValueError(f"all_runs.zip: {run_name}/class_labels.txt does not match the run's "
                                 "images; download all_runs.zip again.")

            def load(names: Iterable[str]) -> Tensor:
                arr = np.stack([_decode_png(zf.read(n), size) for n in names])
                return torch.from_numpy(arr).unsqueeze(1).float() / 255.0

            runs.append(LakeRun(int(run_name[3:]), load(support), load(queries),
                                torch.tensor([label_of[pairs[q]] for q in queries], dtype=torch.long),
                                support, queries))
    if len(runs) != 20:
        raise ValueError(f"all_runs.zip holds {len(runs)} runs, expected 20; download it again.")
    return runs


# --------------------------------------------------------------------------- downloading

def _url(base_url: str, name: str) -> str:
    return base_url.rstrip("/") + "/" + FILES[name].remote


def _fetch(url: str, dest_file: Path, progress: bool) -> tuple[str, str]:
    """Stream ``url`` into a hidden temporary file beside ``dest_file``; return its path's digests."""
    from tqdm.auto import tqdm

    sha, md5 = hashlib.sha256(), hashlib.md5()
    fd, tmp = tempfile.mkstemp(dir=dest_file.parent, prefix=f".{dest_file.name}.", suffix=".part")
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=60)
        except urllib.error.URLError as err:  # HTTPError (404...) is a URLError too
            why = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else err.reason
            raise OSError(f"Could not download {dest_file.name} from {url}: {why}. "
                          "Check the internet connection and --base-url; nothing was saved.") from err
        with os.fdopen(fd, "wb") as out, resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest_file.name,
                      disable=not progress or _quiet()) as bar:
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    sha.update(block)
                    md5.update(block)
                    bar.update(len(block))
        got = sha.hexdigest(), md5.hexdigest()
        if not _check_digests(dest_file.name, *got):
            info = FILES[dest_file.name]
            raise ValueError(f"Downloaded {dest_file.name} from {url}, but it is not the expected file: "
                             f"expected sha256 {info.sha256[0]}"
                             + (f" (or md5 {info.md5[0]})" if info.md5 else "")
                             + f", got sha256 {got[0]} (md5 {got[1]}). Nothing was saved. Try again "
                             "later, or check --base-url.")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest_file)
        return got
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download(dest: str | os.PathLike, base_url: str = DEFAULT_URL,
             files: Sequence[str] = tuple(FILES), progress: bool = True,
             log=print) -> list[Path]:
    """Download the Omniglot zips into ``dest`` and verify them (the only code here that uses the network).

    Each file streams from ``base_url`` into a temporary file beside its destination, is checked
    against its known checksum and only then renamed into place, so a failed or wrong download
    leaves nothing behind. Files already present with the right checksum are skipped. ``log``
    receives one line per step. Returns the paths of all ``files`` in ``dest``.

    Raises ``OSError`` when a file cannot be fetched and ``ValueError`` when what arrived is not
    the published file.
    """
    unknown = [f for f in files if f not in FILES]
    if unknown:
        raise ValueError(f"Unknown Omniglot files {unknown}; choose from {list(FILES)}.")
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in files:
        target = dest / name
        if target.is_file():
            try:
                verify_file(target)
                log(f"{name}: already in {dest} and verified; skipping.")
                paths.append(target)
                continue
            except ValueError:
                log(f"{name}: present in {dest} but its checksum is wrong; downloading it again.")
        url = _url(base_url, name)
        log(f"{name}: downloading {url}")
        sha, _ = _fetch(url, target, progress)
        verify_file(target)  # records the checksum, so the first load does not hash again
        log(f"{name}: saved to {target} (sha256 {sha[:16]}..., verified).")
        paths.append(target)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``course-download-omniglot DEST [--base-url URL] [--files ...] [--quiet]``."""
    parser = argparse.ArgumentParser(
        prog=DOWNLOAD_COMMAND,
        description="Download the Omniglot zips (Lake et al., 2015; MIT license) from "
                    "github.com/brendenlake/omniglot into DEST and verify their checksums. "
                    f"Then set {ENV_VAR}=DEST.")
    parser.add_argument("dest", help="folder to put the zips in (created if needed)")
    parser.add_argument("--base-url", default=DEFAULT_URL, help=f"where to download from (default {DEFAULT_URL})")
    parser.add_argument("--files", nargs="+", default=list(FILES), choices=list(FILES), metavar="FILE",
                        help=f"which files (default all: {', '.join(FILES)})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    print(f"Downloading {len(args.files)} Omniglot file(s) into {args.dest} from {args.base_url}")
    try:
        download(args.dest, args.base_url, args.files, progress=not args.quiet)
    except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Done. Use the data with:  export {ENV_VAR}={Path(args.dest).expanduser().resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
