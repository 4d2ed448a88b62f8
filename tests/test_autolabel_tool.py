"""End-to-end tests of ``course-autolabel`` on folders of PNG files written from the glyph set.

A small untrained Conv-4 checkpoint (``save_encoder``) and explicit ``--temperature/--tau/--radius``
keep most runs to a fraction of a second and independent of the course's cached embedding; one
test calibrates on the real meta-val set with a few pools. ``COURSE_CACHE`` points into tmp_path.
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_utils import autolabel_tool as tool
from course_utils.cache import cache_dir
from course_utils.glyphs import load_glyphs
from course_utils.labelling_data import load_encoder, save_encoder
from course_utils.nets import conv4

FIXED = ["--temperature", "1.0", "--tau", "0.5", "--radius", "1e12", "--quiet"]


@pytest.fixture(scope="module")
def glyph_cache() -> Path:
    """The glyph set's cache folder of this test run (built once if missing)."""
    load_glyphs("evaluation")
    return cache_dir("glyphs")


@pytest.fixture(scope="module")
def glyphs(glyph_cache):
    return load_glyphs("evaluation").x[:40, :, 0].numpy()  # (40 classes, 20 drawers, 28, 28) ink high


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "conv4.pt"
    save_encoder(conv4(), path)
    return path


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch, glyph_cache):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))


def png(path: Path, ink_high: np.ndarray, light_on_dark: bool = False) -> Path:
    """Write a glyph as the user would have it: black ink on white (or white ink on black)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ink_high if light_on_dark else 255 - ink_high).save(path)
    return path


def make_folder(root: Path, glyphs: np.ndarray, n_classes: int = 4, k: int = 1, m: int = 3,
                distractors: int = 0) -> dict[str, str]:
    """FOLDER with c0..c{N-1} (k labelled, m unlabelled each) and distractor images; path -> true class."""
    truth = {}
    for n in range(n_classes):
        for i in range(k):
            png(root / "labelled" / f"c{n}" / f"{i}.png", glyphs[n, i])
        for i in range(m):
            rel = f"unlabelled/c{n}_{i}.png"
            png(root / rel, glyphs[n, k + i])
            truth[rel] = f"c{n}"
    for h in range(distractors):
        rel = f"unlabelled/extra/d{h}.png"
        png(root / rel, glyphs[30 + h, 0])
        truth[rel] = ""
    return truth


def run(root: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = tool.main([str(root), *args])
    out, err = capsys.readouterr()
    return code, out, err


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=tool.COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


# --------------------------------------------------------------------------- the CSV and the rule

def test_csv_format_and_sources(tmp_path, glyphs, checkpoint, capsys):
    truth = make_folder(tmp_path, glyphs, distractors=2)
    code, out, err = run(tmp_path, "--checkpoint", str(checkpoint), *FIXED, capsys=capsys)
    assert code == 0, err
    text = (tmp_path / "labels.csv").read_text()
    assert text.splitlines()[0] == "path,label,confidence,source"
    rows = read_csv(tmp_path / "labels.csv")
    assert [r["path"] for r in rows] == sorted(truth)           # relative, "/" separators, sorted
    for r in rows:
        assert r["source"] in {"auto", "needs-review"}          # radius 1e12: nothing is too far
        assert r["label"] in {"c0", "c1", "c2", "c3"}
        conf = float(r["confidence"])
        assert 0.25 <= conf <= 1.0                                # max of 4 probabilities
        assert (r["source"] == "auto") == (conf >= 0.5)
    n_auto = sum(r["source"] == "auto" for r in rows)
    assert f"auto           {n_auto:5d}" in out and "given on the command line" in out
    assert not list(tmp_path.glob(".labels.csv*"))                # no temporary file left


def test_the_decision_rule_by_hand(tmp_path, glyphs, checkpoint, capsys):
    """Probabilities softmax(-d / T) over prototypes (class means), recomputed here from the images."""
    make_folder(tmp_path, glyphs, n_classes=3, k=2, m=2)
    code, _, err = run(tmp_path, "--checkpoint", str(checkpoint), "--temperature", "7.5", "--tau", "0.6",
                       "--radius", "1e12", capsys=capsys)
    assert code == 0, err
    enc = load_encoder(checkpoint)

    @torch.no_grad()
    def z(path):
        x = torch.from_numpy(np.array(tool.read_image(path))).float()[None, None] / 255
        return enc(x).flatten(1)[0]
    c = torch.stack([torch.stack([z(tmp_path / f"labelled/c{n}/{i}.png") for i in range(2)]).mean(0)
                         for n in range(3)])
    for r in read_csv(tmp_path / "labels.csv"):
        p = torch.softmax(-((z(tmp_path / r["path"]) - c) ** 2).sum(1) / 7.5, 0)
        assert r["label"] == f"c{int(p.argmax())}"
        assert float(r["confidence"]) == pytest.approx(float(p.max()), abs=1e-4)
        assert r["source"] == ("auto" if p.max() >= 0.6 else "needs-review")


@pytest.mark.parametrize("flags, source", [(["--radius", "0"], "none-of-these"),
                                           (["--tau", "1.0", "--temperature", "1e6"], "needs-review"),
                                           (["--tau", "0"], "auto"),
                                           (["--tau", "0", "--accept-radius", "0"], "needs-review")])
def test_tau_and_radius_decide_the_source(tmp_path, glyphs, checkpoint, capsys, flags, source):
    make_folder(tmp_path, glyphs)
    args = ["--temperature", "1.0", "--tau", "0.5", "--radius", "1e12"]
    for flag, value in zip(flags[::2], flags[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    code, out, err = run(tmp_path, "--checkpoint", str(checkpoint), *args, capsys=capsys)
    assert code == 0, err
    rows = read_csv(tmp_path / "labels.csv")
    assert {r["source"] for r in rows} == {source}
    assert all((r["label"] == "") == (source == "none-of-these") for r in rows)


def test_copies_in_any_format_find_their_class(tmp_path, glyphs, checkpoint, capsys):
    """Light-on-dark, upscaled, RGB and transparent copies of a support convert to the same image."""
    make_folder(tmp_path, glyphs, n_classes=4, k=1, m=0)
    for n in range(4):
        a = glyphs[n, 0]
        png(tmp_path / f"unlabelled/dark/c{n}.png", a, light_on_dark=True)
        Image.fromarray(255 - a).resize((84, 84), Image.NEAREST).save(tmp_path / f"unlabelled/big{n}.png")
        Image.fromarray(255 - a).convert("RGB").save(tmp_path / f"unlabelled/rgb{n}.png")
        rgba = np.zeros((28, 28, 4), np.uint8)
        rgba[..., 3] = a                                           # black ink, transparent paper
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"unlabelled/alpha{n}.png")
        assert (tool.read_image(tmp_path / f"unlabelled/alpha{n}.png") == a).all()
    code, _, err = run(tmp_path, "--checkpoint", str(checkpoint), "--temperature", "1e-9", "--tau", "0.99",
                       "--radius", "1e-6", capsys=capsys)
    assert code == 0, err
    rows = read_csv(tmp_path / "labels.csv")
    assert len(rows) == 16
    for r in rows:
        assert r["source"] == "auto" and float(r["confidence"]) == pytest.approx(1.0)
        assert r["label"] == "c" + r["path"][-5]


def test_image_conversion_rules(tmp_path):
    """Omniglot-style PNGs decode as omniglot._decode_png; non-square images are padded, centred."""
    from course_utils.omniglot import _decode_png
    rng = np.random.default_rng(0)
    omni = np.where(rng.random((105, 105)) < 0.1, 0, 255).astype(np.uint8)   # black ink on white
    omni[0, :] = omni[-1, :] = omni[:, 0] = omni[:, -1] = 255
    Image.fromarray(omni).convert("1").save(tmp_path / "omni.png")
    got = tool.read_image(tmp_path / "omni.png")
    assert got.shape == (28, 28) and got.dtype == np.uint8
    assert (got == _decode_png((tmp_path / "omni.png").read_bytes(), 28)).all()
    deep = ((255 - np.asarray(Image.open(tmp_path / "omni.png").convert("L"), np.uint16)) * 257)
    Image.fromarray(deep.astype(np.uint16)).save(tmp_path / "deep.png")      # 16-bit, light on dark
    assert (tool.read_image(tmp_path / "deep.png") == got).all()
    wide = np.full((28, 84), 255, np.uint8)
    wide[10:18, 0:84] = 0                                          # a black bar across a wide image
    Image.fromarray(wide).save(tmp_path / "wide.png")
    a = tool.read_image(tmp_path / "wide.png")
    rows = np.nonzero(a.sum(1))[0]
    assert a[:, 0].max() > 0 and rows.min() >= 10 and rows.max() <= 17    # padded above and below, centred
    assert a.sum() == pytest.approx(255 * 28 * 8 / 3, rel=0.01)    # area averaging keeps the ink mass


# --------------------------------------------------------------------------- reruns

def test_rerun_keeps_human_rows_and_uses_them_as_supports(tmp_path, glyphs, checkpoint, capsys, monkeypatch):
    make_folder(tmp_path, glyphs, n_classes=4, k=1, m=3)
    assert run(tmp_path, "--checkpoint", str(checkpoint), *FIXED, capsys=capsys)[0] == 0
    rows = read_csv(tmp_path / "labels.csv")
    rows[0].update(label="c2", source="human", confidence="")              # an existing class
    rows[4].update(label="  Zeta (new) ", source="human", confidence="me")  # a new class, typed oddly
    rows[7].update(label="none", source="human")                            # none of these
    human = [dict(rows[i]) for i in (0, 4, 7)]
    write_csv(tmp_path / "labels.csv", rows)
    (tmp_path / "unlabelled/zz").mkdir()
    shutil.copy(tmp_path / rows[4]["path"], tmp_path / "unlabelled/zz/copy_of_zeta.png")  # a new file
    seen = {}
    real = tool.propose

    def spy(support_z, support_y, n_way, *args):
        seen.update(y=support_y.tolist(), n_way=n_way)
        return real(support_z, support_y, n_way, *args)
    monkeypatch.setattr(tool, "propose", spy)
    code, out, err = run(tmp_path, "--checkpoint", str(checkpoint), "--temperature", "1e-3", "--tau", "0.5",
                         "--radius", "1e12", "--quiet", capsys=capsys)
    assert code == 0, err
    again = read_csv(tmp_path / "labels.csv")
    assert [again[i] for i in (0, 4, 7)] == human                           # verbatim, same places
    assert again[-1]["path"] == "unlabelled/zz/copy_of_zeta.png"            # a new file: appended
    assert again[-1]["label"] == "Zeta (new)" and again[-1]["source"] == "auto"
    assert seen["n_way"] == 5 and seen["y"] == [0, 1, 2, 3, 2, 4]           # folder supports, then human
    assert "new from human rows: Zeta (new)" in out and "human              3" in out


def test_missing_files_keep_human_rows_with_a_warning(tmp_path, glyphs, checkpoint, capsys):
    make_folder(tmp_path, glyphs)
    args = ["--checkpoint", str(checkpoint), "--temperature", "1e-6", "--tau", "0.5", "--radius", "1e12"]
    assert run(tmp_path, *args, capsys=capsys)[0] == 0
    rows = read_csv(tmp_path / "labels.csv")
    rows[1].update(label="c0", source="human")
    rows[5].update(label="Gone", source="human")                          # a new class ...
    write_csv(tmp_path / "labels.csv", rows)
    shutil.copy(tmp_path / rows[5]["path"], tmp_path / "unlabelled/twin.png")
    assert run(tmp_path, *args, capsys=capsys)[0] == 0
    assert read_csv(tmp_path / "labels.csv")[-1] == {"path": "unlabelled/twin.png", "label": "Gone",
                                                     "confidence": "1.0000", "source": "auto"}
    for i in (1, 2, 5):                                                   # ... whose only image goes
        (tmp_path / rows[i]["path"]).unlink()
    code, out, err = run(tmp_path, *args, capsys=capsys)
    assert code == 0, err
    again = read_csv(tmp_path / "labels.csv")
    assert again[1] == rows[1] and again[4] == rows[5]                    # human rows kept as they were
    assert rows[2]["path"] not in {r["path"] for r in again}              # a machine row's file: dropped
    assert again[-1]["path"] == "unlabelled/twin.png" and again[-1]["label"] in {"c0", "c1", "c2", "c3"}
    for i in (1, 5):
        assert f"{rows[i]['path']} no longer exists; its human label {rows[i]['label']!r} is kept" in err
    assert "4 classes" in out


def test_corrupt_unlabelled_image_is_reported_and_skipped(tmp_path, glyphs, checkpoint, capsys):
    make_folder(tmp_path, glyphs)
    (tmp_path / "unlabelled/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "unlabelled/notes.txt").write_text("ignored")
    code, out, err = run(tmp_path, "--checkpoint", str(checkpoint), *FIXED, capsys=capsys)
    assert code == 0 and "broken.png" in err and "Skipped" in err and "notes.txt" in err
    assert "unlabelled/broken.png" not in {r["path"] for r in read_csv(tmp_path / "labels.csv")}
    assert "unreadable         1" in out


@pytest.mark.parametrize("where", ["rows", "replace"])
def test_interrupted_write_leaves_the_old_csv_intact(tmp_path, glyphs, checkpoint, capsys, monkeypatch, where):
    make_folder(tmp_path, glyphs)
    assert run(tmp_path, "--checkpoint", str(checkpoint), *FIXED, capsys=capsys)[0] == 0
    rows = read_csv(tmp_path / "labels.csv")
    rows[3].update(label="typed by hand", source="human")
    write_csv(tmp_path / "labels.csv", rows)
    before = (tmp_path / "labels.csv").read_bytes()
    if where == "rows":                                  # Ctrl-C after a few rows were written
        calls = []

        def format_then_stop(row):
            calls.append(row)
            if len(calls) == 4:
                raise KeyboardInterrupt
            return row.fields()
        monkeypatch.setattr(tool, "_format", format_then_stop)
        expected = 130
    else:                                                # the rename fails (disk full, ...)
        def no_replace(src, dst):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(os, "replace", no_replace)
        expected = 1
    code, _, err = run(tmp_path, "--checkpoint", str(checkpoint), *FIXED, capsys=capsys)
    assert code == expected and "Traceback" not in err
    assert (tmp_path / "labels.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temporary file left


# --------------------------------------------------------------------------- bad input

def _no_labelled(root):
    shutil.rmtree(root / "labelled")


def _no_unlabelled(root):
    shutil.rmtree(root / "unlabelled")


def _empty_class(root):
    (root / "labelled/empty").mkdir()


def _file_as_class(root):
    shutil.copy(root / "labelled/c0/0.png", root / "labelled/stray.png")


def _corrupt_labelled(root):
    (root / "labelled/c1/bad.png").write_bytes(b"garbage")


def _empty_unlabelled(root):
    shutil.rmtree(root / "unlabelled")
    (root / "unlabelled/sub").mkdir(parents=True)


def _one_class(root):
    for n in (1, 2, 3):
        shutil.rmtree(root / f"labelled/c{n}")


def _csv(text):
    def edit(root):
        (root / "labels.csv").write_text(text)
    return edit


OK = "unlabelled/c0_0.png,c0,0.9,auto\n"
BAD_INPUTS = {
    "missing folder": (lambda root: shutil.rmtree(root), "no such folder"),
    "no labelled": (_no_labelled, "labelled: missing"),
    "no unlabelled": (_no_unlabelled, "unlabelled: missing"),
    "empty class": (_empty_class, "labelled/empty: class folder with no image"),
    "file as class": (_file_as_class, "labelled/stray.png: a file where a class folder belongs"),
    "corrupt labelled": (_corrupt_labelled, "labelled/c1/bad.png: not a readable image"),
    "empty unlabelled": (_empty_unlabelled, "unlabelled: no image"),
    "one class": (_one_class, "needs at least 2"),
    "no header": (_csv(OK), "labels.csv line 1: the header must name"),
    "empty csv": (_csv(""), "labels.csv line 1: the header is missing"),
    "missing column": (_csv("path,label,source\n"), "missing column(s) confidence"),
    "extra column": (_csv("path,label,confidence,source,notes\n"), "unknown column(s) 'notes'"),
    "unknown source": (_csv("path,label,confidence,source\n" + OK + "unlabelled/c1_0.png,c1,,Human!\n"),
                       "labels.csv line 3: unknown source 'Human!'"),
    "fields": (_csv("path,label,confidence,source\n" + "unlabelled/c1_0.png,c1,0.5\n"),
               "labels.csv line 2: 3 fields"),
    "empty path": (_csv("path,label,confidence,source\n,c1,,human\n"), "line 2: the path is empty"),
    "outside": (_csv("path,label,confidence,source\nlabelled/c0/0.png,c1,,human\n"),
                "line 2: path 'labelled/c0/0.png' is not an image inside unlabelled/"),
    "duplicate": (_csv("path,label,confidence,source\n" + OK + OK), "line 3: unlabelled/c0_0.png already"),
    "edited machine row": (_csv("path,label,confidence,source\n" + OK + "unlabelled/c1_0.png,Eta,0.4,auto\n"),
                           "line 3: the auto row for unlabelled/c1_0.png has the label 'Eta', which is not a"),
    "cleared machine row": (_csv("path,label,confidence,source\nunlabelled/c1_0.png,,0.4,needs-review\n"),
                            "line 2: the needs-review row for unlabelled/c1_0.png has an empty label"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_naming_the_file(tmp_path, glyphs, checkpoint, capsys, case):
    root = tmp_path / "data"
    make_folder(root, glyphs)
    breaker, message = BAD_INPUTS[case]
    breaker(root)
    before = (root / "labels.csv").read_bytes() if (root / "labels.csv").exists() else None
    code, out, err = run(root, "--checkpoint", str(checkpoint), *FIXED, capsys=capsys)
    assert code == 2
    assert message in err and str(root) in err, err                       # names the file
    assert "Traceback" not in err and out == ""
    if before is not None:
        assert (root / "labels.csv").read_bytes() == before                # a broken CSV is left alone


@pytest.mark.parametrize("flags, message", [(["--tau", "1.5"], "--tau 1.5: must be in [0, 1]"),
                                            (["--precision", "0"], "--precision 0.0: must be in (0, 1]"),
                                            (["--checkpoint", "nope.pt"], "No checkpoint at nope.pt"),
                                            (["--checkpoint", "{garbage}"], "is not a readable torch checkpoint"),
                                            (["--out", "no/such/dir/l.csv"], "does not exist"),
                                            (["--device", "banana"], "--device banana:")])
def test_bad_options_exit_2(tmp_path, glyphs, checkpoint, capsys, flags, message):
    make_folder(tmp_path / "data", glyphs)
    (tmp_path / "garbage.pt").write_bytes(b"not torch")
    flags = [f.replace("{garbage}", str(tmp_path / "garbage.pt")) for f in flags]
    ckpt = [] if "--checkpoint" in flags else ["--checkpoint", str(checkpoint)]
    code, _, err = run(tmp_path / "data", *ckpt, *FIXED, *flags, capsys=capsys)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_console_script_exits_2_without_traceback(tmp_path):
    script = Path(sys.executable).with_name("course-autolabel")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "course_utils.autolabel_tool"]
    proc = subprocess.run([*cmd, str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "nowhere: no such folder" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- calibration

def test_threshold_and_temperature_the_tool_uses_by_hand():
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = torch.tensor([True, True, False, True, False])
    # precision of {conf >= tau}: tau .9 -> 1, .8 -> 1, .7 -> 2/3, .6 -> 3/4, .5 -> 3/5
    for target, tau in [(0.75, 0.6), (0.7, 0.6), (0.8, 0.8), (1.0, 0.8), (0.6, 0.5)]:
        assert tool.threshold_for_precision(conf, correct, target) == pytest.approx(tau)
    assert math.isinf(tool.threshold_for_precision(conf, torch.zeros(5, dtype=torch.bool), 0.5))
    tied = torch.tensor([0.9, 0.8, 0.8, 0.7])          # tau = .8 accepts both .8s: 2/3, not 1
    assert tool.threshold_for_precision(tied, torch.tensor([True, True, False, True]), 0.9) == \
        pytest.approx(0.9)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 1, 1, 1])  # 3 of 4 right: the best T makes p(top) = 3/4, i.e. 2 / T = log 3
    assert tool.fit_temperature(logits, y) == pytest.approx(2 / math.log(3), rel=1e-4)


def test_calibrate_on_separated_clusters_reaches_the_target():
    from course_utils.episodes import ClassSet
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 8, generator=g) * 3
    x = centres[:, None] + torch.randn(30, 20, 8, generator=g)
    classes = ClassSet(x, [f"k{i}" for i in range(30)], ["a"] * 30)
    cal = tool.calibrate(classes, n_way=5, k_shot=1, target=0.95, pools=20)
    assert (cal.n_way, cal.k_shot, cal.n_distractors) == (5, 1, 2)
    rule = cal.rule
    assert rule.temperature > 0 and 0 < rule.accept_radius <= rule.radius < 100
    assert rule.tau <= 1 and cal.val_precision >= 0.95 and cal.val_coverage > 0.5
    assert tool.calibrate(classes, n_way=5, k_shot=1, target=0.95, pools=20, share=0).n_distractors == 0
    assert tool.calibration_shape(classes, 40, 25) == (29, 19, 1, 1)  # (N, K, H, M) clipped to meta-val


def test_the_acceptance_radius_keeps_out_a_confident_distractor():
    conf = torch.tensor([0.99, 0.9, 0.8], dtype=torch.double)   # a far distractor is the most "sure"
    correct = torch.tensor([False, True, True])
    d_min = torch.tensor([10.0, 1.0, 2.0], dtype=torch.double)
    d_true = torch.tensor([1.0, 2.0], dtype=torch.double)
    assert math.isinf(tool.threshold_for_precision(conf, correct, 0.99))   # tau alone: accept nothing
    r_a, tau = tool._acceptance(conf, correct, d_min, d_true, radius=20.0, target=0.99)
    assert r_a == pytest.approx(1.3) and tau == pytest.approx(0.9)          # first quantile (0.3) of 1, 2


def test_calibration_on_meta_val_is_cached(tmp_path, glyphs, checkpoint, capsys, monkeypatch, glyph_cache):
    shutil.copytree(glyph_cache, tmp_path / "cache" / "glyphs")   # the glyph set, not rebuilt
    make_folder(tmp_path / "data", glyphs, distractors=2)
    args = ["--checkpoint", str(checkpoint), "--data", "glyphs", "--calibration-pools", "4"]
    code, out, err = run(tmp_path / "data", *args, capsys=capsys)
    assert code == 0, err
    assert "from meta-val (glyphs data, 4 pools of 4-way 1-shot with 1 distractor classes" in out
    assert "Calibrating on meta-val" in err
    files = list((tmp_path / "cache" / "autolabel").glob("calibration-*.json"))
    assert len(files) == 1
    monkeypatch.setattr(tool, "calibrate", lambda *a, **k: pytest.fail("calibrated again"))
    code, out2, _ = run(tmp_path / "data", *args, "--quiet", capsys=capsys)
    assert code == 0 and "from the cache" in out2
    code, out3, _ = run(tmp_path / "data", *args, "--tau", "0.3", capsys=capsys)   # override one of three
    assert code == 0 and "tau = 0.3000" in out3 and "given: --tau" in out3 and "from the cache" in out3
    rule = [line for line in out3.splitlines() if "tau = 0.3000" in line][0]
    assert rule.split("r_a = ")[1].split(",")[0] == rule.split("radius r = ")[1].split(",")[0]  # r_a = r


def test_default_embedding_and_save_checkpoint(tmp_path, glyphs, checkpoint, capsys, monkeypatch):
    import course_utils.labelling_data as ld
    calls = []
    monkeypatch.setattr(ld, "pretrained_encoder", lambda data, device: calls.append(data.source) or
                        load_encoder(checkpoint, device))
    monkeypatch.setattr(ld, "labelling_data", lambda source: type("D", (), {"source": source})())
    make_folder(tmp_path / "data", glyphs)
    code, _, err = run(tmp_path / "data", *FIXED, "--data", "glyphs", "--save-checkpoint",
                       str(tmp_path / "saved.pt"), capsys=capsys)
    assert code == 0, err
    assert calls == ["glyphs"]
    assert tool.encoder_identity(load_encoder(tmp_path / "saved.pt")) == \
        tool.encoder_identity(load_encoder(checkpoint))
