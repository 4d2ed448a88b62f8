"""course_utils.speech: espeak-ng synthesis, the corpus and its splits, speaker and keyword episodes, training.

Skipped, with the library's own reason, where espeak-ng cannot be loaded."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_utils import speech

needs_espeak = pytest.mark.skipif(not speech.available(), reason=speech.unavailable_reason() or "espeak-ng")

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(per_voice=2, words=["apple", "river", "seven", "yellow", "window", "garden", "music", "table"],
            voices={"train": ["en", "de", "fr", "es", "it", "pl"], "test": ["sk", "hu", "vi"], "babble": ["mt"]})


@pytest.fixture(scope="module")
def tiny():
    return speech.load_speech(**TINY)


@needs_espeak
def test_synthesis_is_speech_at_16k():
    x = speech.synthesize("garden", speech.Speaker("en", "f2", 50, 170, 50))
    assert x.dtype == torch.float32 and 0.2 * 16000 < len(x) < 1.5 * 16000
    assert 0.05 < x.abs().max() <= 1.0


@needs_espeak
def test_bad_voice_and_settings():
    with pytest.raises(ValueError, match="no voice 'xx-nope'"):
        speech.synthesize("hi", speech.Speaker("xx-nope", "", 50, 170, 50))
    with pytest.raises(ValueError, match="no variant 'zzz'"):
        speech.synthesize("hi", speech.Speaker("en", "zzz", 50, 170, 50))
    assert set(speech.VARIANTS) <= set(speech.all_variants()) and len(speech.all_variants()) > 100
    with pytest.raises(ValueError, match="pitch must be an integer"):
        speech.synthesize("hi", speech.Speaker("en", "", 150, 170, 50))


@needs_espeak
def test_deterministic_across_processes():
    code = ("import hashlib, torch; torch.set_num_threads(1); from course_utils import speech; "
            "xs = [speech.synthesize(w, speech.Speaker(v, var, 40, 180, 60)) for w, v, var in "
            "[('apple', 'en', 'm3'), ('river', 'de', 'f1'), ('apple', 'en', 'm3'), ('seven', 'sk', 'f2'), "
            "('garden', 'fr', 'f5'), ('seven', 'sk', 'f2'), ('music', 'vi', 'f3')]]; "
            "print(hashlib.sha256(b''.join(x.numpy().tobytes() for x in xs)).hexdigest())")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
            for _ in range(2)]
    assert outs[0] == outs[1] and len(outs[0].strip()) == 64


def test_resample_keeps_a_tone():
    sr_in = 22050
    t = torch.arange(sr_in // 2, dtype=torch.float64) / sr_in
    y = speech.resample(torch.sin(2 * math.pi * 440 * t), sr_in, 16000)
    assert len(y) == 8000
    spec = torch.fft.rfft(y.double()).abs()
    assert abs(int(spec.argmax()) * 16000 / 8000 - 440) <= 2
    assert float(y.pow(2).mean()) == pytest.approx(0.5, rel=0.02)  # amplitude kept
    hi = torch.sin(2 * math.pi * 10000 * t)  # above 8 kHz: removed, not aliased down to 6 kHz
    assert float(speech.resample(hi, sr_in, 16000).pow(2).mean()) < 1e-3


@needs_espeak
def test_corpus_splits_disjoint_by_voice(tiny):
    assert tiny.clips.shape == (20, 8, 12800) and tiny.clips.dtype == torch.int16
    voices = {p: {tiny.speakers[i].voice for i in idx} for p, idx in tiny.split.items()}
    assert not (voices["train"] & voices["test"]) and not (voices["babble"] & (voices["train"] | voices["test"]))
    assert len({s.name for s in tiny.speakers}) == len(tiny.speakers)
    assert (tiny.clips.abs().amax(-1) > 1000).all()  # every utterance is audible
    again = speech.load_speech(**TINY)  # from the cache
    assert torch.equal(again.clips, tiny.clips)
    default = set(speech.VOICES["train"]), set(speech.VOICES["test"]), set(speech.VOICES["babble"])
    assert not (default[0] & default[1]) and not (default[2] & (default[0] | default[1]))


def test_corpus_rejects_overlapping_voices():
    with pytest.raises(ValueError, match="split by voice"):
        speech.load_speech(per_voice=1, words=["a"], voices={"train": ["en"], "test": ["en"]})


def _coded(S, W):
    x = torch.zeros(S, W, 2)
    x[..., 0] = torch.arange(S)[:, None]
    x[..., 1] = torch.arange(W)[None]
    return x


def test_speaker_episode_disjoint_words():
    x = _coded(10, 8)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        ep = speech.speaker_episode(x, 5, 2, 3, g)
        assert ep.support_x.shape == (10, 2) and ep.query_x.shape == (15, 2)
        assert ep.support_y.tolist() == torch.arange(5).repeat_interleave(2).tolist()
        assert set(ep.support_x[:, 1].tolist()).isdisjoint(ep.query_x[:, 1].tolist())
        assert ep.support_x[::2, 0].tolist() == ep.query_x[::3, 0].tolist() == [float(c) for c in ep.classes]


def test_keyword_episode_disjoint_speakers():
    x = _coded(10, 8)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        ep = speech.keyword_episode(x, 4, 2, 3, g)
        assert ep.support_x.shape == (8, 2) and ep.query_x.shape == (12, 2)
        assert set(ep.support_x[:, 0].tolist()).isdisjoint(ep.query_x[:, 0].tolist())
        assert ep.support_x[::2, 1].tolist() == ep.query_x[::3, 1].tolist() == [float(c) for c in ep.classes]


@pytest.mark.parametrize("fn, args, match", [
    (speech.speaker_episode, (_coded(10, 4), 5, 2, 3), "different words per speaker"),
    (speech.speaker_episode, (_coded(4, 8), 5, 1, 1), "needs 5 speakers"),
    (speech.keyword_episode, (_coded(4, 8), 3, 2, 3), "different speakers per word"),
    (speech.speaker_episode, (_coded(10, 8), 5, 0, 3), "k_shot must be an integer"),
])
def test_episode_bad_input(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


@needs_espeak
def test_featurise_and_bad_noise(tiny):
    w = tiny.waveforms("test")[:2, :3]
    f = speech.featurise(w)
    assert f.shape == (2, 3, 40, 1 + (12800 - 400) // 160) and torch.isfinite(f).all()
    bank = speech.NoiseBank(tiny.waveforms("babble"))
    assert not torch.equal(speech.featurise(w, 5, "babble", bank), f)
    with pytest.raises(ValueError, match="snr_db must be a number"):
        speech.featurise(w, "loud")
    with pytest.raises(ValueError, match="Unknown noise kind"):
        speech.featurise(w, 5, "pink", bank)


@needs_espeak
def test_tiny_training_beats_chance(tiny):
    train = tiny.waveforms("train")
    bank = speech.NoiseBank(tiny.waveforms("babble"))
    enc, hist = speech.train_speaker_encoder(train, bank, steps=40, noise=True, n_way=5, k_shot=1, q_query=3)
    feats = speech.featurise(tiny.waveforms("test"))
    acc = speech.evaluate_episodes(speech.prototype_classifier, speech.embed_all(enc, feats), 5, 1, 3, n_episodes=100)
    assert acc.mean > 0.35  # chance is 0.2
    base = speech.evaluate_episodes(speech.prototype_classifier, speech.mean_std_embedding(feats), 5, 1, 3,
                                    n_episodes=100)
    assert base.mean > 0.35
    with pytest.raises(ValueError, match="NoiseBank"):
        speech.train_speaker_encoder(train, None, steps=2, noise=True)


@needs_espeak
def test_benchmark_toy_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speech_fewshot.py"), "--toy", "--out",
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    md = (tmp_path / "speech_fewshot.md").read_text()
    assert "clean" in md and "babble" in md and "keyword" in md.lower()
    assert (tmp_path / "speech_fewshot.json").exists()


def test_unavailable_says_what_to_install(monkeypatch):
    """Without the library: available() is False, the reason names the package, and the corpus refuses clearly."""
    import builtins
    real_import = builtins.__import__

    def no_espeak(name, *args, **kwargs):
        if name == "espeakng_loader":
            raise ImportError("No module named 'espeakng_loader'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_espeak)
    monkeypatch.setattr(speech, "_ENGINE", None)
    monkeypatch.setattr(speech, "_REASON", None)
    assert not speech.available()
    assert speech.INSTALL in speech.unavailable_reason() and "espeak-ng" in speech.unavailable_reason()
    with pytest.raises(RuntimeError, match="pip install espeakng-loader"):
        speech.load_speech()


@needs_espeak
def test_corpus_cache_key_covers_every_setting_and_the_code(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.delenv("COURSE_RETRAIN", raising=False)
    base = dict(per_voice=1, words=["apple", "river"], clip_seconds=0.3,
                voices={"train": ["en"], "test": ["sk"], "babble": ["mt"]}, seed=0)
    files = lambda: sorted(p.name for p in (tmp_path / "speech").glob("corpus-*.pt"))
    speech.load_speech(**base)
    assert len(files()) == 1
    speech.load_speech(**base)                                   # the same settings: loaded, not rebuilt
    assert len(files()) == 1
    changes = [("per_voice", 2), ("words", ["apple", "seven"]), ("clip_seconds", 0.4),
               ("voices", {"train": ["de"], "test": ["sk"], "babble": ["mt"]}), ("seed", 1)]
    for n, (name, value) in enumerate(changes, start=2):
        speech.load_speech(**{**base, name: value})
        assert len(files()) == n, f"changing {name} did not rebuild the corpus"
    monkeypatch.setattr(speech, "_source_hash", lambda: "changed-code")
    monkeypatch.setattr(speech, "_in_child", lambda: True)      # build here: a child would hash the real code
    speech.load_speech(**base)
    assert len(files()) == len(changes) + 2, "a change in speech.py or audio.py did not rebuild the corpus"
