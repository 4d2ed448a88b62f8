"""Few-shot speech: synthesised speakers (espeak-ng), speaker and keyword episodes, and models.

**Data.** Utterances are synthesised offline by espeak-ng (formant synthesis; the library and its
voice data ship in the ``espeakng-loader`` wheel and are driven here through ctypes). A *speaker* is
one setting of voice (a language's voice: its phonology and accent) x variant (voice quality: male
m1-m7, female f1-f5, named ones) x pitch (0-99) x rate (words per minute) x pitch range (0-99).
Every speaker says the same list of words, so that an episode can take its support and query
utterances from *different* words: speaker identity, not word identity, must be what is matched.
Speakers are split by *voice* (language): meta-test speakers speak with voices (languages) never
heard in meta-training; a third group of voices only provides babble noise.

**Episodes.** ``utterances`` is a tensor ``(S, W, *item)``: speaker s saying word w.

- :func:`speaker_episode` (N-way K-shot speaker identification): N speakers, K + Q distinct words;
  every class's support says the first K words, its queries the other Q (support and query words
  disjoint). Class-major, labels 0..N-1 (Snell et al., 2017, prototypes per speaker).
- :func:`keyword_episode` (few-shot keyword spotting): N words, support from K speakers, queries
  from Q *other* speakers, so a new word is learned from a few utterances and recognised in
  another voice.

**Models.** The no-learning baseline embeds an utterance as the mean and standard deviation over
time of its log-mel spectrogram. The meta-learned encoder is a small 1-D convolutional net over
time (mel channels as input channels, dilated convolutions, then mean + std pooling over time as in
x-vectors, Snyder et al., 2018), trained with ProtoNet's episodic loss (:mod:`course_utils.protonet`)
on the training speakers, optionally on noise-augmented episodes (each utterance mixed with white
or babble noise at a random SNR).

If the espeak-ng library cannot be loaded, :func:`available` is False and
:func:`unavailable_reason` says what to install; nothing else in the course depends on this module.
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import audio, evaluation
from .cache import cache_dir, config_key
from .episodes import Episode
from .evaluation import Accuracy, episode_accuracy, mean_ci95
from .progress import progress
from .protonet import ProtoNet, protonet_loss
from .training import History, code_fingerprint, load_or_train, train_loop

__all__ = ["available", "unavailable_reason", "INSTALL", "SAMPLE_RATE", "VOICES", "VARIANTS", "WORDS",
           "Speaker", "synthesize", "all_variants", "resample", "make_speakers", "SpeechData", "load_speech", "speaker_episode",
           "keyword_episode", "episode_accuracies", "evaluate_episodes", "NoiseBank", "featurise",
           "mean_std_embedding", "SpeakerEncoder", "train_speaker_encoder", "train_keyword_encoder",
           "prototype_classifier", "embed_all", "snr_sweep"]

SAMPLE_RATE = 16000
INSTALL = "pip install espeakng-loader==0.2.4"

# Latin-script voices (they read the course's word list with their own rules: an accent).
VOICES = {
    "train": ["en", "en-us", "de", "nl", "af", "da", "sv", "nb", "fr", "es", "it", "pt", "ca", "ro", "pl", "cs",
              "hr", "fi", "tr", "id", "sw", "cy", "eo", "la"],
    "test": ["is", "sk", "sl", "hu", "et", "lt", "lv", "ms", "ga", "eu", "vi", "sq"],
    "babble": ["mt", "az", "gd", "lb"],
}
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "adam", "david", "linda", "steph", "max", "quincy"]
WORDS = ["apple", "river", "seven", "yellow", "window", "garden", "music", "table", "orange", "mountain",
         "coffee", "pencil", "rabbit", "silver", "summer", "tiger",
         # the keyword-spotting test words: never used as classes in meta-training
         "violin", "ocean", "butter", "candle", "dragon", "forest", "lemon", "marble"]
N_TRAIN_WORDS = 16

# ----------------------------------------------------------------------------- the espeak-ng library

_ENGINE: "_Espeak | None" = None
_REASON: str | None = None


class _Espeak:
    """espeak-ng in synchronous mode: ``espeak_Synth`` returns when done; a callback collects int16 samples."""

    AUDIO_OUTPUT_SYNCHRONOUS, POS_CHARACTER, CHARS_UTF8 = 2, 1, 1
    RATE, PITCH, RANGE = 1, 3, 4

    def __init__(self) -> None:
        import espeakng_loader  # noqa: PLC0415 (optional dependency)

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = Path(espeakng_loader.get_data_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.rate = self.lib.espeak_Initialize(self.AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data.parent).encode(), 0)
        if self.rate <= 0:
            raise OSError(f"espeak_Initialize failed (returned {self.rate}) with data at {data}")
        self._chunks: list[np.ndarray] = []
        self.calls = 0  # utterances synthesised so far in this process
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(wav, n, events):  # called by espeak with each block of samples
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
            return 0  # 0 = continue

        self._callback = proto(collect)  # keep a reference: espeak calls it later
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    def say(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}. Use a language code from speech.VOICES (e.g. 'en', "
                             f"'de') optionally with '+variant' from speech.VARIANTS (e.g. 'en+f3').")
        for p, v in ((self.RATE, rate), (self.PITCH, pitch), (self.RANGE, pitch_range)):
            self.lib.espeak_SetParameter(p, int(v), 0)
        self._chunks = []
        self.calls += 1
        # The breathy variants (f2, f3, f5, ...) add noise from espeak-ng's random generator, which is otherwise
        # seeded differently in every process: seed it from the utterance's settings, so it is reproducible.
        self.lib.espeak_ng_SetRandSeed(zlib.crc32(f"{voice}|{rate}|{pitch}|{pitch_range}|{text}".encode()))
        b = text.encode("utf-8") + b"\0"
        err = self.lib.espeak_Synth(b, len(b), 0, self.POS_CHARACTER, 0, self.CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err} for {text!r} in voice {voice!r}.")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def _engine() -> _Espeak:
    global _ENGINE, _REASON
    if _ENGINE is None:
        if _REASON is not None:
            raise RuntimeError(_REASON)
        try:
            if os.environ.get("COURSE_NO_SPEECH", "") in {"1", "true"}:  # to test the chapter without espeak-ng
                raise ImportError("disabled by COURSE_NO_SPEECH=1")
            _ENGINE = _Espeak()
        except Exception as e:  # ImportError, OSError (no wheel / no .so for this platform), ...
            _REASON = (f"The speech chapter needs the espeak-ng speech synthesiser, which could not be loaded "
                       f"({type(e).__name__}: {e}); install it with `{INSTALL}`.")
            raise RuntimeError(_REASON) from None
    return _ENGINE


def available() -> bool:
    """True if espeak-ng loads (so the speech data can be synthesised)."""
    try:
        _engine()
        return True
    except RuntimeError:
        return False


def unavailable_reason() -> str:
    """'' if espeak-ng loads, else one line saying what failed and what to install."""
    return "" if available() else str(_REASON)


_VARIANTS_FOUND: list[str] | None = None


def all_variants() -> list[str]:
    """Every voice variant the installed espeak-ng data has (the files of its ``voices/!v`` folder)."""
    global _VARIANTS_FOUND
    if _VARIANTS_FOUND is None:
        import espeakng_loader

        _VARIANTS_FOUND = sorted(p.name for p in (Path(espeakng_loader.get_data_path()) / "voices" / "!v").iterdir())
    return _VARIANTS_FOUND


def resample(x: np.ndarray | Tensor, sr_in: int, sr_out: int) -> Tensor:
    """Band-limited resampling by the FFT: keep the spectrum below both Nyquist frequencies.

    rfft of the T samples, cut (or zero-pad) to the bins of T' = round(T sr_out / sr_in) samples, irfft,
    times T' / T (so amplitudes are kept). Cutting the spectrum *is* the anti-aliasing low-pass filter;
    dropping every k-th sample instead would fold high frequencies down (aliasing). Float64 inside.
    """
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if sr_in == sr_out:
        return x.float()
    n_in = x.shape[-1]
    n_out = int(round(n_in * sr_out / sr_in))
    spec = torch.fft.rfft(x)
    keep = min(spec.shape[-1], n_out // 2 + 1)
    out = torch.zeros(*x.shape[:-1], n_out // 2 + 1, dtype=spec.dtype)
    out[..., :keep] = spec[..., :keep]
    return (torch.fft.irfft(out, n=n_out) * (n_out / n_in)).float()


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: a voice (language) x variant x pitch x rate x pitch range."""

    voice: str
    variant: str
    pitch: int
    rate: int
    pitch_range: int

    @property
    def name(self) -> str:
        return f"{self.voice}+{self.variant}/p{self.pitch}/r{self.rate}/g{self.pitch_range}"


def synthesize(text: str, speaker: Speaker, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """The utterance of ``text`` by ``speaker``: a float32 waveform in [-1, 1] at ``sample_rate`` Hz.

    The same sequence of calls gives the same samples in every process (espeak-ng's random generator, used by
    the breathy variants, is seeded per utterance; its other state drifts very slightly between repeated calls
    within one process, so a dataset is built in one fixed order in a fresh process).
    """
    for name, v, lo, hi in (("pitch", speaker.pitch, 0, 99), ("pitch_range", speaker.pitch_range, 0, 99),
                            ("rate", speaker.rate, 80, 450)):
        if not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {v!r}.")
    eng = _engine()
    if speaker.variant and speaker.variant not in all_variants():
        raise ValueError(f"espeak-ng has no variant {speaker.variant!r} (it would silently use the default voice "
                         f"quality); use one of speech.VARIANTS, e.g. 'f3', or any of speech.all_variants().")
    voice = speaker.voice if not speaker.variant else f"{speaker.voice}+{speaker.variant}"
    raw = eng.say(text, voice, speaker.rate, speaker.pitch, speaker.pitch_range)
    return resample(raw.astype(np.float64) / 32768.0, eng.rate, sample_rate)


def make_speakers(voices: Sequence[str], per_voice: int, seed: int = 0) -> list[Speaker]:
    """``per_voice`` speakers for each voice: a random variant, pitch 20-80, rate 140-230, range 10-90."""
    rng = random.Random(seed)
    out = []
    for v in voices:
        variants = rng.sample(VARIANTS, per_voice) if per_voice <= len(VARIANTS) else \
            [rng.choice(VARIANTS) for _ in range(per_voice)]
        for var in variants:
            out.append(Speaker(v, var, rng.randint(20, 80), rng.randint(140, 230), rng.randint(10, 90)))
    return out


def _trim_and_fit(x: Tensor, length: int, threshold: float = 0.01) -> Tensor:
    """Cut leading and trailing silence, then centre the word in ``length`` samples (zero-padded or cropped)."""
    loud = (x.abs() > threshold).nonzero()
    if len(loud):
        x = x[int(loud[0]): int(loud[-1]) + 1]
    if len(x) >= length:
        start = (len(x) - length) // 2
        return x[start:start + length]
    left = (length - len(x)) // 2
    return F.pad(x, (left, length - len(x) - left))


@dataclass
class SpeechData:
    """The synthesised corpus: ``clips[s, w]`` is speaker s saying ``words[w]``, int16 at 16 kHz.

    ``split[name]`` lists the speaker indices of ``'train'``, ``'test'`` (held-out voices) and ``'babble'``.
    """

    clips: Tensor  # (S, W, L) int16
    speakers: list[Speaker]
    words: list[str]
    split: dict[str, list[int]]
    sample_rate: int = SAMPLE_RATE

    def waveforms(self, part: str, words: slice | Sequence[int] | None = None) -> Tensor:
        """Float waveforms ``(S_part, W', L)`` in [-1, 1] of one split's speakers."""
        idx = self.split[part]
        x = self.clips[idx]
        if words is not None:
            x = x[:, words]
        return x.float() / 32768.0

    def speaker_names(self, part: str) -> list[str]:
        return [self.speakers[i].name for i in self.split[part]]

    def voices(self, part: str) -> list[str]:
        return sorted({self.speakers[i].voice for i in self.split[part]})


def _source_hash() -> str:
    h = hashlib.sha256()
    for mod in ("speech.py", "audio.py"):
        h.update(Path(__file__).with_name(mod).read_bytes())
    return h.hexdigest()[:16]


def load_speech(per_voice: int = 4, words: Sequence[str] | None = None, clip_seconds: float = 0.8,
                voices: dict[str, list[str]] | None = None, seed: int = 0, rebuild: bool = False) -> SpeechData:
    """The corpus, synthesised once (a few seconds, with a progress bar) and cached under :func:`cache_dir`.

    The cache key covers every setting, the code of this module and :mod:`audio`, and the espeak-ng
    version; the file lives in the course's cache folder, never beside the library's data.
    """
    words = list(WORDS if words is None else words)
    voices = {k: list(v) for k, v in (VOICES if voices is None else voices).items()}
    if not isinstance(per_voice, int) or per_voice < 1:
        raise ValueError(f"per_voice must be an integer >= 1, got {per_voice!r}.")
    if len(set(words)) != len(words) or not words:
        raise ValueError("words must be a non-empty list of distinct words.")
    seen: dict[str, str] = {}
    for part, vs in voices.items():
        for v in vs:
            if v in seen:
                raise ValueError(f"Voice {v!r} is in both the {seen[v]!r} and {part!r} splits; split by voice.")
            seen[v] = part
    if not available():
        raise RuntimeError(unavailable_reason())
    import espeakng_loader

    cfg = {"per_voice": per_voice, "words": words, "clip_seconds": clip_seconds, "voices": voices, "seed": seed,
           "sr": SAMPLE_RATE, "code": _source_hash(), "espeak": getattr(espeakng_loader, "__version__", "0.2.4")}
    path = cache_dir("speech") / f"corpus-{config_key(cfg)}.pt"
    if path.exists() and not rebuild and os.environ.get("COURSE_RETRAIN", "") not in {"1", "true"}:
        try:
            stored = torch.load(path, weights_only=False)
            if stored["config"] == cfg:
                return stored["data"]
        except Exception:
            pass
    if _engine().calls and not _in_child():
        # espeak-ng's output depends slightly on what this process synthesised before, so that the corpus
        # is the same for everyone it is built in a fresh process (same calls in the same order).
        _build_in_subprocess(dict(per_voice=per_voice, words=words, clip_seconds=clip_seconds, voices=voices,
                                  seed=seed, rebuild=True))
        stored = torch.load(path, weights_only=False)
        return stored["data"]
    speakers, split = [], {}
    for i, (part, vs) in enumerate(voices.items()):
        start = len(speakers)
        speakers += make_speakers(vs, per_voice, seed=seed + 1000 * i)
        split[part] = list(range(start, len(speakers)))
    length = int(round(clip_seconds * SAMPLE_RATE))
    clips = torch.zeros(len(speakers), len(words), length, dtype=torch.int16)
    for s in progress(range(len(speakers)), desc=f"synthesising {len(speakers) * len(words)} utterances"):
        for w, word in enumerate(words):
            x = _trim_and_fit(synthesize(word, speakers[s]), length)
            clips[s, w] = (x.clamp(-1, 32767 / 32768) * 32768).round().to(torch.int16)
    data = SpeechData(clips, speakers, words, split)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"config": cfg, "data": data}, tmp)
    os.replace(tmp, path)
    return data


def _in_child() -> bool:
    return os.environ.get("COURSE_SPEECH_CHILD") == "1"


def _build_in_subprocess(kwargs: dict) -> None:
    import json
    import subprocess
    import sys

    code = ("import json, sys, torch; torch.set_num_threads(1); from course_utils.speech import load_speech; "
            "load_speech(**json.loads(sys.argv[1]))")
    env = {**os.environ, "COURSE_SPEECH_CHILD": "1"}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"Building the speech corpus failed:\n{done.stderr[-2000:]}")


# ----------------------------------------------------------------------------- episodes

def _check_episode_request(utterances: Tensor, n_way: int, k_shot: int, q_query: int, what: str) -> None:
    for name, v in (("n_way", n_way), ("k_shot", k_shot), ("q_query", q_query)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")
    if not isinstance(utterances, Tensor) or utterances.dim() < 2:
        raise ValueError("utterances must be a tensor (S speakers, W words, *item).")
    s, w = utterances.shape[:2]
    if what == "speaker":
        if n_way > s:
            raise ValueError(f"A {n_way}-way speaker episode needs {n_way} speakers, but there are {s}; lower n_way.")
        if k_shot + q_query > w:
            raise ValueError(f"A speaker episode takes k_shot + q_query = {k_shot} + {q_query} = {k_shot + q_query} "
                             f"different words per speaker, but each speaker has only {w} utterances; lower "
                             "k_shot or q_query, or synthesise more words.")
    else:
        if n_way > w:
            raise ValueError(f"A {n_way}-way keyword episode needs {n_way} words, but there are {w}; lower n_way.")
        if k_shot + q_query > s:
            raise ValueError(f"A keyword episode takes k_shot + q_query = {k_shot} + {q_query} = {k_shot + q_query} "
                             f"different speakers per word, but there are only {s}; lower k_shot or q_query.")


def speaker_episode(utterances: Tensor, n_way: int, k_shot: int, q_query: int,
                    generator: torch.Generator | None = None) -> Episode:
    """N-way K-shot speaker identification with disjoint support and query *words*.

    ``utterances (S, W, *item)``: N random speakers; K + Q random distinct words; support = each
    speaker saying words[:K], query = each saying words[K:]. Class-major (rows c*K .. c*K+K-1 are
    class c), labels 0..N-1; ``classes`` holds the speakers' indices.
    """
    _check_episode_request(utterances, n_way, k_shot, q_query, "speaker")
    spk = torch.randperm(utterances.shape[0], generator=generator)[:n_way]
    wrd = torch.randperm(utterances.shape[1], generator=generator)[:k_shot + q_query]
    x = utterances[spk][:, wrd]  # (N, K + Q, *item)
    item = x.shape[2:]
    labels = torch.arange(n_way)
    return Episode(x[:, :k_shot].reshape(n_way * k_shot, *item).float(), labels.repeat_interleave(k_shot),
                   x[:, k_shot:].reshape(n_way * q_query, *item).float(), labels.repeat_interleave(q_query),
                   n_way, k_shot, q_query, spk.tolist())


def keyword_episode(utterances: Tensor, n_way: int, k_shot: int, q_query: int,
                    generator: torch.Generator | None = None) -> Episode:
    """N-way K-shot keyword spotting: N words; support said by K speakers, queries by Q *other* speakers.

    ``utterances (S, W, *item)``; class-major, labels 0..N-1, ``classes`` = the words' indices.
    """
    _check_episode_request(utterances, n_way, k_shot, q_query, "keyword")
    wrd = torch.randperm(utterances.shape[1], generator=generator)[:n_way]
    spk = torch.randperm(utterances.shape[0], generator=generator)[:k_shot + q_query]
    x = utterances[spk][:, wrd].transpose(0, 1)  # (N words, K + Q speakers, *item)
    item = x.shape[2:]
    labels = torch.arange(n_way)
    return Episode(x[:, :k_shot].reshape(n_way * k_shot, *item).float(), labels.repeat_interleave(k_shot),
                   x[:, k_shot:].reshape(n_way * q_query, *item).float(), labels.repeat_interleave(q_query),
                   n_way, k_shot, q_query, wrd.tolist())


EpisodeFn = Callable[..., Episode]


def episode_accuracies(classify: Callable[[Episode], Tensor], utterances: Tensor, n_way: int, k_shot: int,
                       q_query: int = 5, n_episodes: int = 600, seed: int = 0,
                       episode_fn: EpisodeFn = speaker_episode, desc: str = "") -> Tensor:
    """Query accuracy of ``classify`` on ``n_episodes`` seeded episodes (the same seed, the same episodes):
    the course's :func:`evaluation.episode_accuracies` with ``episode_fn`` as its sampler."""
    return evaluation.episode_accuracies(classify, utterances, n_way, k_shot, q_query, n_episodes, seed,
                                         desc=desc or f"{n_way}-way {k_shot}-shot", sampler=episode_fn)


def evaluate_episodes(*args, **kwargs) -> Accuracy:
    """Mean accuracy and 95% interval of :func:`episode_accuracies`."""
    return mean_ci95(episode_accuracies(*args, **kwargs))


def prototype_classifier(episode: Episode) -> Tensor:
    """Nearest class mean (squared Euclidean) for episodes whose items are embeddings ``(rows, D)``."""
    from .protonet import classify_embedded
    return classify_embedded(episode)


# ----------------------------------------------------------------------------- noise and features

class NoiseBank:
    """Noise for mixing: ``kind`` 'white' or 'babble' (sums of utterances of the babble voices)."""

    def __init__(self, babble_source: Tensor, n_talkers: int = 6):
        self.source = babble_source.reshape(-1, babble_source.shape[-1]).float()
        self.n_talkers = n_talkers

    def noise(self, kind: str, n: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        if kind == "white":
            return audio.white_noise((n, length), generator)
        if kind == "babble":
            return audio.babble_noise(self.source, n, length, self.n_talkers, generator)
        raise ValueError(f"Unknown noise kind {kind!r}; use 'white' or 'babble'.")


def featurise(waves: Tensor, snr_db: float = math.inf, kind: str = "white", bank: NoiseBank | None = None,
              seed: int = 0, n_mels: int = 40, log_mel_fn: Callable = audio.log_mel,
              mix_fn: Callable = audio.mix_at_snr) -> Tensor:
    """Log-mel features ``(*lead, n_mels, frames)`` of waveforms ``(*lead, L)``, mixed with noise first.

    Each utterance gets its own noise clip (seeded), at ``snr_db`` (``inf``: clean). ``log_mel_fn`` and
    ``mix_fn`` default to :func:`audio.log_mel` and :func:`audio.mix_at_snr` (the chapter passes its own).
    """
    snr = audio._snr_value(snr_db)
    lead, length = waves.shape[:-1], waves.shape[-1]
    flat = waves.reshape(-1, length).float()
    if not math.isinf(snr):
        if kind == "babble" and bank is None:
            raise ValueError("babble noise needs a NoiseBank of other speakers' utterances (bank=...).")
        g = torch.Generator().manual_seed(seed)
        noise = (bank or NoiseBank(torch.zeros(1, 1))).noise(kind, flat.shape[0], length, g)
        flat = mix_fn(flat, noise, snr)
    out = torch.cat([log_mel_fn(flat[i:i + 512], SAMPLE_RATE, n_mels) for i in range(0, flat.shape[0], 512)])
    return out.reshape(*lead, *out.shape[1:])


def mean_std_embedding(features: Tensor) -> Tensor:
    """The baseline: each mel band's mean and standard deviation over time, ``(..., n_mels, frames) -> (..., 2 n_mels)``."""
    return torch.cat([features.mean(-1), features.std(-1)], dim=-1)


class SpeakerEncoder(nn.Module):
    """Log-mel ``(B, n_mels, frames)`` -> embedding ``(B, dim)``: dilated 1-D convs, mean + std pooling, linear."""

    def __init__(self, n_mels: int = 40, hidden: int = 64, dim: int = 64):
        super().__init__()
        self.norm = nn.BatchNorm1d(n_mels)
        layers, c = [], n_mels
        for k, d in ((5, 1), (3, 2), (3, 3)):
            layers += [nn.Conv1d(c, hidden, k, dilation=d, padding=d * (k // 2)), nn.BatchNorm1d(hidden), nn.ReLU()]
            c = hidden
        self.convs = nn.Sequential(*layers)
        self.out = nn.Linear(2 * hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.convs(self.norm(x))
        return self.out(torch.cat([h.mean(-1), h.std(-1)], dim=-1))


def embed_all(encoder: nn.Module, features: Tensor, batch: int = 512) -> Tensor:
    """``(S, W, n_mels, frames)`` -> ``(S, W, D)`` embeddings (eval mode, no gradients)."""
    lead = features.shape[:2]
    flat = features.reshape(-1, *features.shape[2:])
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        z = torch.cat([encoder(flat[i:i + batch]) for i in range(0, flat.shape[0], batch)])
    encoder.train(was)
    return z.reshape(*lead, -1)


def _train(name: str, episode_fn: EpisodeFn, waves: Tensor, bank: NoiseBank | None, steps: int,
           n_way: int, k_shot: int, q_query: int, noise: bool, snr_range: tuple[float, float], seed: int,
           n_mels: int, lr: float, max_seconds: float | None,
           log_mel_fn: Callable = audio.log_mel) -> tuple[SpeakerEncoder, History]:
    cfg = {"episodes": repr(code_fingerprint(episode_fn)), "log_mel": repr(code_fingerprint(log_mel_fn)),
           "shape": list(waves.shape), "data": hashlib.sha256(
        waves[:, :, ::97].numpy().tobytes()).hexdigest()[:16], "steps": steps, "n_way": n_way, "k_shot": k_shot,
        "q_query": q_query, "noise": noise, "snr": list(snr_range), "seed": seed, "n_mels": n_mels, "lr": lr,
        "max_seconds": max_seconds,
        "bank": None if bank is None else hashlib.sha256(bank.source[:, ::97].numpy().tobytes()).hexdigest()[:16]}

    def fit() -> dict:
        torch.manual_seed(seed)
        model = ProtoNet(SpeakerEncoder(n_mels))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)

        def step(i: int) -> dict[str, float]:
            ep = episode_fn(waves, n_way, k_shot, q_query, g)
            x = torch.cat([ep.support_x, ep.query_x])
            if noise:  # each utterance: clean, or white/babble noise at an SNR drawn uniformly
                n = x.shape[0]
                snr = torch.empty(n).uniform_(*snr_range, generator=g)
                babble = torch.rand(n, generator=g) < 0.5
                clean = torch.rand(n, generator=g) < 0.2
                nz = torch.where(babble[:, None], bank.noise("babble", n, x.shape[-1], g),
                                 audio.white_noise((n, x.shape[-1]), g))
                a = torch.sqrt(audio.power(x) / (audio.power(nz) * 10 ** (snr / 10)))  # mix_at_snr, one SNR per row
                noisy = x + a[:, None] * nz
                x = torch.where(clean[:, None], x, noisy)
            f = log_mel_fn(x, SAMPLE_RATE, n_mels)
            ns = ep.support_x.shape[0]
            ep = Episode(f[:ns], ep.support_y, f[ns:], ep.query_y, n_way, k_shot, q_query, ep.classes)
            loss, logits = protonet_loss(model, ep)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": loss.item(), "acc": episode_accuracy(logits.detach(), ep.query_y)}

        hist = train_loop(step, steps, desc=name, max_seconds=max_seconds)
        return {"state": {k: v.detach().clone() for k, v in model.encoder.state_dict().items()},
                "history": hist.as_dict()}

    result = load_or_train(name, cfg, fit)
    enc = SpeakerEncoder(n_mels)
    enc.load_state_dict(result["state"])
    enc.eval()
    return enc, History.from_dict(result["history"])


def train_speaker_encoder(waves: Tensor, bank: NoiseBank | None = None, steps: int = 600, noise: bool = False,
                          n_way: int = 10, k_shot: int = 1, q_query: int = 4,
                          snr_range: tuple[float, float] = (0.0, 20.0), seed: int = 0, n_mels: int = 40,
                          lr: float = 2e-3, max_seconds: float | None = None, episode_fn: EpisodeFn = speaker_episode,
                          log_mel_fn: Callable = audio.log_mel) -> tuple[SpeakerEncoder, History]:
    """ProtoNet on speaker episodes of the training speakers' waveforms ``(S, W, L)`` (cached).

    With ``noise=True`` every utterance of a training episode is, with probability 0.8, mixed with white
    or babble noise (from ``bank``) at an SNR drawn uniformly from ``snr_range``.
    """
    if noise and bank is None:
        raise ValueError("Noise-augmented training needs a NoiseBank (bank=...) for the babble noise.")
    name = "speech-speaker-noisy" if noise else "speech-speaker-clean"
    return _train(name, episode_fn, waves, bank, steps, n_way, k_shot, q_query, noise, snr_range, seed, n_mels,
                  lr, max_seconds, log_mel_fn)


def train_keyword_encoder(waves: Tensor, steps: int = 600, n_way: int = 8, k_shot: int = 1, q_query: int = 4,
                          seed: int = 0, n_mels: int = 40, lr: float = 2e-3,
                          max_seconds: float | None = None, log_mel_fn: Callable = audio.log_mel,
                          noise: bool = False, bank: NoiseBank | None = None,
                          snr_range: tuple[float, float] = (0.0, 20.0)) -> tuple[SpeakerEncoder, History]:
    """ProtoNet on keyword episodes (training speakers x training words) (cached); ``noise`` as in
    :func:`train_speaker_encoder`."""
    if noise and bank is None:
        raise ValueError("Noise-augmented training needs a NoiseBank (bank=...) for the babble noise.")
    return _train("speech-keyword-noisy" if noise else "speech-keyword", keyword_episode, waves, bank, steps, n_way,
                  k_shot, q_query, noise, snr_range, seed, n_mels, lr, max_seconds, log_mel_fn)


def snr_sweep(embedders: dict[str, Callable[[Tensor], Tensor]], waves: Tensor, bank: NoiseBank,
              conditions: Sequence[tuple[str, float]], n_way: int = 5, k_shot: int = 1, q_query: int = 5,
              n_episodes: int = 600, seed: int = 0, episode_fn: EpisodeFn = speaker_episode,
              noise_seed: int = 1, log_mel_fn: Callable = audio.log_mel,
              mix_fn: Callable = audio.mix_at_snr) -> dict[tuple[str, float], dict[str, Accuracy]]:
    """Accuracy of each embedding (features ``(S, W, n_mels, frames)`` -> ``(S, W, D)``) under each noise condition.

    ``conditions``: ``(kind, snr_db)`` pairs, e.g. ``("white", 10)``; ``inf`` is clean. Every utterance is
    mixed with its own seeded noise once, then embedded once; every model sees the *same* episodes
    (the same seed), so differences between models are paired.
    """
    out: dict[tuple[str, float], dict[str, Accuracy]] = {}
    for kind, snr in conditions:
        feats = featurise(waves, snr, kind, bank, seed=noise_seed, log_mel_fn=log_mel_fn, mix_fn=mix_fn)
        out[(kind, snr)] = {name: evaluate_episodes(prototype_classifier, emb(feats), n_way, k_shot, q_query,
                                                    n_episodes, seed, episode_fn=episode_fn,
                                                    desc=f"{name}, {kind} {snr} dB")
                            for name, emb in embedders.items()}
    return out
