"""course_utils.omniglot: the loader, checksums, caches, splits, Lake's runs and the download command.

Tests marked ``omniglot`` need the real zips in ``$OMNIGLOT_DIR`` and skip without them; the rest
run anywhere, on a small synthetic zip built here. Nothing touches the real network: downloads
are served by an HTTP server on 127.0.0.1.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import shutil
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from course_utils import episodes as E
from course_utils import omniglot as O

SKIP_REASON = ("OMNIGLOT_DIR not set: real Omniglot tests skipped "
               "(make test sets it when ../shared/data/omniglot exists)")
omniglot = pytest.mark.omniglot


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, tmp_path):
    """Each test gets an empty cache; tests that decode the full sets use the session cache instead."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_QUIET", "1")
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def omniglot_path() -> Path:
    value = os.environ.get("OMNIGLOT_DIR", "")
    if not value:
        pytest.skip(SKIP_REASON)
    if not Path(value).is_dir():
        pytest.skip(f"OMNIGLOT_DIR={value} is not a folder: real Omniglot tests skipped")
    return Path(value)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("omniglot_cache")


@pytest.fixture(scope="session")
def sets28(omniglot_path, session_cache) -> dict[str, E.ClassSet]:
    """All four splits at 28px, decoded once per session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_CACHE", str(session_cache))
        mp.setenv("COURSE_QUIET", "1")
        return {s: O.load_omniglot(s, 28, omniglot_path) for s in O.SPLITS}


@pytest.fixture
def shared_cache(monkeypatch, session_cache, sets28) -> Path:
    """Use the session cache, where the 28px sets are already decoded."""
    monkeypatch.setenv("COURSE_CACHE", str(session_cache))
    return session_cache


# --------------------------------------------------------------------------- a synthetic release

N_ALPHA, N_CHARS = ("Beta", "Alpha"), 3


def _ink_box(c: int, d: int) -> tuple[int, int]:
    """Width and height of the black box drawn for character c, drawer d (identifies both)."""
    return 3 * d + 1, 5 * c + 11


def _fake_zip(path: Path) -> Path:
    """A tiny Omniglot-like zip: 1-bit PNGs, white paper, black ink, members in shuffled order."""
    members = []
    for a in N_ALPHA:
        for c in range(1, N_CHARS + 1):
            for d in range(1, 21):
                img = Image.new("1", (105, 105), 1)
                w, h = _ink_box(c, d)
                ImageDraw.Draw(img).rectangle([10, 10, 10 + w - 1, 10 + h - 1], fill=0)
                buf = io.BytesIO()
                img.save(buf, "PNG")
                members.append((f"images_fake/{a}/character{c:02d}/{c:04d}_{d:02d}.png", buf.getvalue()))
    order = np.random.default_rng(0).permutation(len(members))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("images_fake/", b"")
        zf.writestr("__MACOSX/images_fake/._junk.png", b"junk")
        for i in order:
            zf.writestr(*members[i])
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_release(tmp_path, monkeypatch) -> Path:
    """A folder with 'fake.zip', registered as split 'fake'."""
    folder = tmp_path / "data"
    folder.mkdir()
    z = _fake_zip(folder / "fake.zip")
    monkeypatch.setitem(O.FILES, "fake.zip", O.KnownFile((_sha(z),), (), "sub/fake.zip"))
    monkeypatch.setitem(O.SPLITS, "fake", "fake.zip")
    return folder


# --------------------------------------------------------------------------- arguments and messages

def test_bad_split_and_size_list_the_valid_options(tmp_path):
    with pytest.raises(ValueError, match="background.*evaluation.*background_small1"):
        O.load_omniglot("train", path=tmp_path)
    for bad in (32, 64, True, "28"):
        with pytest.raises(ValueError, match=r"\[28, 105\]"):
            O.load_omniglot("background", size=bad, path=tmp_path)
    with pytest.raises(ValueError, match=r"\[28, 105\]"):
        O.lake_runs(tmp_path, size=84)
    with pytest.raises(ValueError, match="n_val"):
        O.vinyals_split(path=tmp_path, n_val=1200)


def test_folder_from_argument_or_env(monkeypatch, tmp_path):
    monkeypatch.delenv("OMNIGLOT_DIR", raising=False)
    assert O.omniglot_dir() is None
    monkeypatch.setenv("OMNIGLOT_DIR", "")  # empty counts as unset
    assert O.omniglot_dir() is None and not O.available()
    reason = O.why_unavailable()
    assert reason.startswith("OMNIGLOT_DIR is not set; using the built-in glyph set instead.")
    assert "course-download-omniglot" in reason and "\n" not in reason
    monkeypatch.setenv("OMNIGLOT_DIR", str(tmp_path / "nowhere"))
    assert O.omniglot_dir() is None and "does not exist" in O.why_unavailable()
    monkeypatch.setenv("OMNIGLOT_DIR", str(tmp_path))
    assert O.omniglot_dir() == tmp_path
    assert O.omniglot_dir(tmp_path / "x") is None  # the argument wins over the variable
    assert "images_background.zip is missing" in O.why_unavailable()
    monkeypatch.delenv("OMNIGLOT_DIR")
    with pytest.raises(FileNotFoundError, match="OMNIGLOT_DIR is not set"):
        O.load_omniglot()


def test_missing_file_names_file_folder_and_command(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        O.load_omniglot("evaluation", path=tmp_path)
    msg = str(err.value)
    assert "images_evaluation.zip" in msg and str(tmp_path) in msg and "course-download-omniglot" in msg
    with pytest.raises(FileNotFoundError, match="all_runs.zip"):
        O.lake_runs(tmp_path)


def test_wrong_checksum_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "all_runs.zip").write_bytes(b"not the runs")
    with pytest.raises(ValueError) as err:
        O.lake_runs(tmp_path)
    msg = str(err.value)
    assert "all_runs.zip" in msg and O.FILES["all_runs.zip"].sha256[0] in msg
    assert hashlib.sha256(b"not the runs").hexdigest() in msg and "course-download-omniglot" in msg
    assert not O.available(tmp_path, files=["all_runs.zip"])
    assert "not the expected file" in O.why_unavailable(tmp_path, files=["all_runs.zip"])


def test_original_archives_accepted_by_md5(tmp_path, monkeypatch):
    f = tmp_path / "images_background.zip"
    f.write_bytes(b"pretend original")
    monkeypatch.setitem(O.FILES, "images_background.zip", O.KnownFile(
        O.FILES["images_background.zip"].sha256, (hashlib.md5(b"pretend original").hexdigest(),)))
    assert O.verify_file(f) == hashlib.sha256(b"pretend original").hexdigest()


def test_checksum_is_remembered_until_the_file_changes(fake_release, monkeypatch):
    z = fake_release / "fake.zip"
    assert O.verify_file(z) == _sha(z)

    def no_hashing(path):
        raise AssertionError("hashed again")

    monkeypatch.setattr(O, "_hash_file", no_hashing)
    assert O.verify_file(z) == _sha(z)  # from checksums.json, no re-hash
    st = z.stat()
    os.utime(z, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="hashed again"):
        O.verify_file(z)


# --------------------------------------------------------------------------- decoding (synthetic)

def test_decoding_order_ink_high_and_sizes(fake_release):
    cs = O.load_omniglot("fake", 105, fake_release)
    assert cs.x.shape == (6, 20, 1, 105, 105) and cs.x.dtype == torch.uint8
    assert cs.names == [f"{a}/character{c:02d}" for a in sorted(N_ALPHA) for c in range(1, 4)]
    assert cs.alphabets == ["Alpha"] * 3 + ["Beta"] * 3
    assert set(cs.x.unique().tolist()) == {0, 255}
    for i, name in enumerate(cs.names):
        c = int(name[-2:])
        for j in range(20):
            w, h = _ink_box(c, j + 1)  # example j is drawer j+1; ink is 255
            assert int((cs.x[i, j] == 255).sum()) == w * h
    small = O.load_omniglot("fake", 28, fake_release)
    assert small.x.shape == (6, 20, 1, 28, 28) and small.names == cs.names
    ink105 = cs.x.float().mean() / 255
    assert abs(small.x.float().mean() / 255 - ink105) < 0.01 * ink105 + 1e-3  # area averaging keeps ink


def test_decoded_cache_is_used_and_corrupt_cache_rebuilt(fake_release, monkeypatch, tmp_path):
    first = O.load_omniglot("fake", 28, fake_release)
    (cached,) = (tmp_path / "cache" / "omniglot").glob("fake_28px_*.npz")
    assert O.FILES["fake.zip"].sha256[0][:16] in cached.name
    with monkeypatch.context() as m:
        m.setattr(O, "_decode_split", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
        assert torch.equal(O.load_omniglot("fake", 28, fake_release).x, first.x)  # from the cache

    for damage in (lambda b: b[: len(b) // 2], lambda b: b"garbage"):
        cached.write_bytes(damage(cached.read_bytes()))
        with pytest.warns(RuntimeWarning, match="damaged"):
            again = O.load_omniglot("fake", 28, fake_release)
        assert torch.equal(again.x, first.x) and again.names == first.names
        O._read_cache(cached, 28)  # rewritten and valid

    # a readable cache whose pixels no longer match their recorded checksum is rebuilt too
    with np.load(cached) as d:
        parts = {k: d[k] for k in d.files}
    parts["x"] = parts["x"].copy()
    parts["x"][0, 0, 0, 0] ^= 1
    np.savez(cached, **parts)
    with pytest.warns(RuntimeWarning, match="checksum"):
        assert torch.equal(O.load_omniglot("fake", 28, fake_release).x, first.x)
    assert not list(cached.parent.glob("*.tmp"))


def test_incomplete_character_is_reported(tmp_path, monkeypatch):
    z = tmp_path / "fake.zip"
    with zipfile.ZipFile(z, "w") as zf:
        buf = io.BytesIO()
        Image.new("1", (105, 105), 1).save(buf, "PNG")
        for d in range(1, 20):  # drawer 20 missing
            zf.writestr(f"images_fake/Alpha/character01/0001_{d:02d}.png", buf.getvalue())
    monkeypatch.setitem(O.FILES, "fake.zip", O.KnownFile((_sha(z),)))
    monkeypatch.setitem(O.SPLITS, "fake", "fake.zip")
    with pytest.raises(ValueError, match="Alpha/character01 has drawers"):
        O.load_omniglot("fake", 28, tmp_path)


# --------------------------------------------------------------------------- downloading (loopback)

@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served, recording the paths asked for."""
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield SimpleNamespace(root=root, url=f"http://127.0.0.1:{httpd.server_address[1]}/", requests=requests)
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _serve_fake(server, fake_release) -> bytes:
    (server.root / "sub").mkdir(exist_ok=True)
    shutil.copy(fake_release / "fake.zip", server.root / "sub" / "fake.zip")
    return (fake_release / "fake.zip").read_bytes()


def test_download_verifies_then_skips(server, fake_release, tmp_path):
    data = _serve_fake(server, fake_release)
    dest = tmp_path / "dest"
    paths = O.download(dest, server.url, ["fake.zip"], progress=False, log=lambda s: None)
    assert paths == [dest / "fake.zip"] and (dest / "fake.zip").read_bytes() == data
    assert server.requests == ["/sub/fake.zip"]
    assert sorted(p.name for p in dest.iterdir()) == ["fake.zip"]  # no temporary files left
    O.download(dest, server.url, ["fake.zip"], progress=False, log=lambda s: None)
    assert server.requests == ["/sub/fake.zip"], "a present, correct file must not be fetched again"


def test_download_of_a_tampered_file_fails_and_leaves_nothing(server, fake_release, tmp_path):
    _serve_fake(server, fake_release)
    served = server.root / "sub" / "fake.zip"
    served.write_bytes(served.read_bytes()[:-1] + b"!")
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="Downloaded fake.zip from .* not the expected file"):
        O.download(dest, server.url, ["fake.zip"], progress=False, log=lambda s: None)
    assert list(dest.iterdir()) == []


def test_download_replaces_a_wrong_local_file(server, fake_release, tmp_path):
    data = _serve_fake(server, fake_release)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "fake.zip").write_bytes(b"half a download")
    O.download(dest, server.url, ["fake.zip"], progress=False, log=lambda s: None)
    assert (dest / "fake.zip").read_bytes() == data and len(server.requests) == 1


def test_cli_reports_success_and_failure(server, fake_release, tmp_path, capsys):
    _serve_fake(server, fake_release)
    dest = tmp_path / "dest"
    assert O.main([str(dest), "--base-url", server.url, "--files", "fake.zip", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Downloading 1 Omniglot file(s)" in out and "verified" in out and "export OMNIGLOT_DIR=" in out
    assert O.main([str(tmp_path / "other"), "--base-url", server.url + "missing/", "--files", "fake.zip",
                   "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "error: Could not download fake.zip" in err and "404" in err
    assert not list((tmp_path / "other").iterdir())
    with pytest.raises(SystemExit):
        O.main([str(dest), "--files", "not_a_file.zip"])


def test_default_url_points_at_the_published_release():
    assert O.DEFAULT_URL == "https://github.com/brendenlake/omniglot/raw/master/python/"
    assert O._url(O.DEFAULT_URL, "all_runs.zip").endswith("/python/one-shot-classification/all_runs.zip")
    assert O._url(O.DEFAULT_URL, "images_evaluation.zip").endswith("/python/images_evaluation.zip")


# --------------------------------------------------------------------------- the real data

@omniglot
def test_real_counts_shapes_and_names(sets28):
    expected = {"background": (964, 30), "evaluation": (659, 20),
                "background_small1": (136, 5), "background_small2": (156, 5)}
    for split, (n_chars, n_alpha) in expected.items():
        cs = sets28[split]
        assert len(cs) == n_chars and len(set(cs.alphabets)) == n_alpha, split
        assert cs.x.shape == (n_chars, 20, 1, 28, 28) and cs.x.dtype == torch.uint8
        assert all(re.fullmatch(r"[^/]+/character\d\d", n) for n in cs.names)
        assert all(n.split("/")[0] == a for n, a in zip(cs.names, cs.alphabets))
    assert not set(sets28["background"].alphabets) & set(sets28["evaluation"].alphabets)


@omniglot
def test_real_images_are_ink_high(sets28):
    for cs in sets28.values():
        x = cs.x.float() / 255
        assert 0.03 < x.mean() < 0.2, "ink should cover a small part of the image, paper is 0"
        border = torch.cat([x[..., 0, :].flatten(), x[..., -1, :].flatten()])
        assert border.mean() < 0.02
        assert x.amax(dim=(-1, -2)).min() > 0.5, "every image has some ink"


@omniglot
def test_small_sets_match_the_background_images(sets28):
    bg = sets28["background"]
    index = {n: i for i, n in enumerate(bg.names)}
    for split in ("background_small1", "background_small2"):
        cs = sets28[split]
        assert torch.equal(cs.x, bg.x[[index[n] for n in cs.names]]), split


@omniglot
def test_real_105px_is_binary(omniglot_path, sets28):
    big = O.load_omniglot("background_small1", 105, omniglot_path)
    assert big.x.shape == (136, 20, 1, 105, 105) and set(big.x.unique().tolist()) == {0, 255}
    small = sets28["background_small1"]
    assert abs(big.x.float().mean() - small.x.float().mean()) / big.x.float().mean() < 0.01


@omniglot
def test_vinyals_split_sizes_disjoint_and_deterministic(omniglot_path, shared_cache):
    train, test = O.vinyals_split(path=omniglot_path)
    assert (len(train), len(test)) == (4800, 1692)
    assert train.x.shape[1:] == (20, 1, 28, 28) and train.x.dtype == torch.uint8
    E.check_disjoint(train, test)
    base_tr, base_te = {E.base_name(n) for n in train.names}, {E.base_name(n) for n in test.names}
    assert (len(base_tr), len(base_te)) == (1200, 423) and len(base_tr | base_te) == 1623
    assert sum(n.endswith("/rot90") for n in train.names) == 1200
    again = O.vinyals_split(path=omniglot_path)
    assert again[0].names == train.names and again[1].names == test.names
    assert torch.equal(again[1].x, test.x)
    other = O.vinyals_split(path=omniglot_path, seed=1, rotations=False)
    assert (len(other[0]), len(other[1])) == (1200, 423) and set(other[1].names) != base_te
    tr, val, te = O.vinyals_split(path=omniglot_path, n_val=172)
    assert (len(tr), len(val), len(te)) == (4112, 688, 1692) and te.names == test.names
    E.check_disjoint(tr, val, te)


@omniglot
def test_lake_runs(omniglot_path, sets28):
    runs = O.lake_runs(omniglot_path)
    assert [r.run for r in runs] == list(range(1, 21))
    for r in runs:
        assert r.support_x.shape == (20, 1, 105, 105) and r.query_x.shape == (20, 1, 105, 105)
        assert r.support_x.dtype == torch.float32 and 0 <= r.support_x.min() and r.support_x.max() == 1
        assert r.support_x.mean() < 0.2  # ink high
        assert sorted(r.query_y.tolist()) == list(range(20)) and r.query_y.dtype == torch.long
        ep = r.episode()
        assert (ep.n_way, ep.k_shot, ep.q_query) == (20, 1, 1)
        assert ep.support_y.tolist() == list(range(20)) and ep.query_y.tolist() == list(range(20))
        assert torch.equal(ep.query_x[r.query_y[0]], r.query_x[0])
    # Each run is 20 characters of one evaluation alphabet; every image is an evaluation image,
    # and each query shows the same character as its labelled support image.
    ev = sets28["evaluation"]
    where = {ev.x[c, j].numpy().tobytes(): c for c in range(len(ev)) for j in range(20)}
    for r in O.lake_runs(omniglot_path, size=28):
        as_u8 = (r.support_x * 255).round().to(torch.uint8)
        sup = [where[as_u8[i].numpy().tobytes()] for i in range(20)]
        qry = [where[(r.query_x[i] * 255).round().to(torch.uint8).numpy().tobytes()] for i in range(20)]
        assert len(set(sup)) == 20 and len({ev.alphabets[c] for c in sup}) == 1, r.run
        assert [sup[y] for y in r.query_y.tolist()] == qry, r.run


@omniglot
def test_real_checksum_mismatch_and_remembered_checksums(omniglot_path, tmp_path, monkeypatch):
    good = tmp_path / "good"
    bad = tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    shutil.copy(omniglot_path / "images_background_small1.zip", good)
    data = bytearray((omniglot_path / "images_background_small1.zip").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "images_background_small1.zip").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"images_background_small1.zip in .*bad is not the expected"):
        O.load_omniglot("background_small1", path=bad)
    assert len(O.load_omniglot("background_small1", path=good)) == 136
    monkeypatch.setattr(O, "_hash_file", lambda p: (_ for _ in ()).throw(AssertionError("hashed again")))
    assert len(O.load_omniglot("background_small1", path=good)) == 136


@omniglot
def test_real_corrupt_cache_rebuilt(omniglot_path, tmp_path):
    first = O.load_omniglot("background_small2", 28, omniglot_path)
    (cached,) = (tmp_path / "cache" / "omniglot").glob("background_small2_28px_*.npz")
    cached.write_bytes(cached.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="damaged"):
        again = O.load_omniglot("background_small2", 28, omniglot_path)
    assert torch.equal(again.x, first.x) and again.names == first.names


@omniglot
def test_real_download_from_loopback(omniglot_path, server, tmp_path):
    (server.root / "one-shot-classification").mkdir()
    shutil.copy(omniglot_path / "all_runs.zip", server.root / "one-shot-classification")
    shutil.copy(omniglot_path / "images_background_small1.zip", server.root)
    files = ["all_runs.zip", "images_background_small1.zip"]
    dest = tmp_path / "dest"
    O.download(dest, server.url, files, progress=False, log=lambda s: None)
    assert sorted(server.requests) == ["/images_background_small1.zip", "/one-shot-classification/all_runs.zip"]
    for f in files:
        assert (dest / f).read_bytes() == (omniglot_path / f).read_bytes()
    assert len(O.lake_runs(dest)) == 20
    O.download(dest, server.url, files, progress=False, log=lambda s: None)
    assert len(server.requests) == 2, "present, verified files are skipped"

    served = server.root / "images_background_small1.zip"
    data = bytearray(served.read_bytes())
    data[1000] ^= 0xFF
    served.write_bytes(bytes(data))
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match="images_background_small1.zip"):
        O.download(fresh, server.url, ["images_background_small1.zip"], progress=False, log=lambda s: None)
    assert list(fresh.iterdir()) == []
