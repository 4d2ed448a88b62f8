"""Checks for chapter 10 (few-shot speech: new speakers, noise, keywords).

Exercises and the references' semantics (the references are :mod:`course_utils.audio` and
:mod:`course_utils.speech`, which the tests confirm against hand-computed cases):

- 10.1 ``log_mel(waveform, sample_rate, n_mels) -> (..., n_mels, frames)``: 25 ms periodic Hann frames
  (n_fft = round(0.025 sample_rate)) every 10 ms (hop = round(0.010 sample_rate)), ``center=False``
  (frames = 1 + (T - n_fft) // hop); power |X|²; n_mels HTK triangles (peak 1) with edges equally
  spaced in mel, m = 2595 log10(1 + f/700), from 0 Hz to sample_rate/2; natural log with the floor 1e-6,
  ln(E + 1e-6) (ln(max(E, 1e-6)) is accepted too).
- 10.2 ``mix_at_snr(signal, noise, snr_db) -> mixture``: signal ``(..., T)``, noise ``(..., T_n)`` with
  T_n >= T, cut to ``noise[..., :T]``; P = mean of squares along the last axis (per row);
  ``signal + a * noise`` with a = sqrt(P_s / (P_n 10^(snr_db/10))); not renormalised.
- 10.3 ``speaker_episode(utterances, n_way, k_shot, q_query, generator) -> Episode``: ``utterances
  (S, W, *item)``; N distinct random speakers, support and query words disjoint (no word in both sets),
  K distinct words per class in the support and Q in the query, the same speaker behind a label in
  both sets; class-major labels 0..N-1; ``classes[c]`` the speaker index of label c; all randomness
  from ``generator``.

Named mistakes (each message names it):

- 10.1: magnitude instead of power; log10 (or dB) instead of ln; no floor (log of 0 = -inf on silence);
  filters equally spaced in Hz; the mel break frequency not 700 Hz; a forward/inverse mel mismatch
  (ln forward, 10^ back); (frames, n_mels) transposed; no window (rectangular); a symmetric Hann window;
  center=True (torch's default) frame count; frame sizes fixed at 400/160 (sample rate ignored);
  n_mels ignored; the leading dimensions not flattened for torch.stft (a 3-D input fails or comes back
  with the wrong shape); a window or filterbank made in float32 for a float64 waveform (the dtype error).
- 10.2: the amplitude ratio 20 log10 used for powers (10^(snr/20)); the amplitude formula with 10
  (a = sqrt(P_s/P_n) / 10^(snr/10)); the SNR's sign inverted; the signal scaled instead of the noise;
  the mixture normalised (peak or power); the noise's power measured on the whole noise, not the part
  used; the noise not cut to the signal's length (a size error); energies (sums) of different lengths
  instead of powers; one power over the whole batch instead of per row.
- 10.3: the same word in support and query (leakage); words disjoint within a class only; not
  class-major (labels made with .repeat instead of .repeat_interleave, or rows interleaved); the speakers fixed (generator ignored); the words fixed; the
  global random generator used instead of ``generator``; k and q swapped; support speakers different
  from query speakers; labels not 0..N-1 (speaker indices as labels); repeated speakers; ``classes``
  wrong.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from .. import audio, speech
from ..checks import Mistake, _close, describe, expect, expect_close, run_check

__all__ = ["EXERCISES", "log_mel", "mix_at_snr", "speaker_episode", "reference_log_mel",
           "reference_mix_at_snr", "reference_speaker_episode", "log_mel_variant", "mix_variant"]

EXERCISES = ["10.1", "10.2", "10.3"]
D = torch.float64

reference_log_mel = audio.log_mel
reference_speaker_episode = speech.speaker_episode


def reference_mix_at_snr(signal: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    return audio.mix_at_snr(signal, noise, snr_db)


# ----------------------------------------------------------------------------- 10.1

def log_mel_variant(x: Tensor, sr: int, n_mels: int, mistake: str = "") -> Tensor:
    """The log-mel spectrogram with one named mistake (``''``: the reference)."""
    n_fft, hop = audio.frame_settings(sr)
    if mistake == "fixed_frames":
        n_fft, hop = 400, 160
    if mistake == "n_mels":
        n_mels = 40 if n_mels != 40 else 64
    window = torch.hann_window(n_fft, dtype=x.dtype)
    if mistake == "no_window":
        window = torch.ones(n_fft, dtype=x.dtype)
    if mistake == "symmetric":
        window = torch.hann_window(n_fft, periodic=False, dtype=x.dtype)
    lead = x.shape[:-1]
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop, n_fft, window=window, center=mistake == "center",
                      return_complex=True)
    p = spec.abs() if mistake == "magnitude" else spec.abs() ** 2
    freqs = torch.arange(n_fft // 2 + 1, dtype=D) * sr / n_fft
    top = sr / 2
    if mistake == "hz":
        edges = torch.linspace(0, top, n_mels + 2, dtype=D)
    elif mistake == "break1000":
        edges = 1000 * (10 ** (torch.linspace(0, 2595 * math.log10(1 + top / 1000), n_mels + 2, dtype=D) / 2595) - 1)
    elif mistake == "ln_forward":
        edges = 700 * (10 ** (torch.linspace(0, 2595 * math.log(1 + top / 700), n_mels + 2, dtype=D) / 2595) - 1)
    else:
        edges = audio.mel_to_hz(torch.linspace(0, float(audio.hz_to_mel(top)), n_mels + 2, dtype=D))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = torch.clamp(torch.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), min=0).to(x.dtype)
    e = fb @ p
    if mistake == "no_floor":
        out = torch.log(e)
    elif mistake == "log10":
        out = torch.log10(e + audio.LOG_FLOOR)
    elif mistake == "db":
        out = 10 * torch.log10(e + audio.LOG_FLOOR)
    elif mistake == "clamp":
        out = torch.log(e.clamp_min(audio.LOG_FLOOR))
    else:
        out = torch.log(e + audio.LOG_FLOOR)
    out = out.reshape(*lead, n_mels, out.shape[-1])
    return out.transpose(-1, -2) if mistake == "transposed" else out


RULE_10_1 = ("25 ms periodic Hann frames every 10 ms with center=False, power |X|^2, n_mels triangles with edges "
             "equally spaced in mel (m = 2595 log10(1 + f/700)) from 0 to sample_rate/2, then ln(E + 1e-6).")

MEL_MISTAKES = {
    "magnitude": "the magnitude |X| was used instead of the power |X|^2 (square the STFT's absolute value: "
                 "spec.abs() ** 2, the energy per bin).",
    "log10": "log10 was used, but this chapter's log-mel is the natural log: torch.log(E + 1e-6).",
    "db": "decibels (10 log10) were used, but this chapter's log-mel is the natural log: torch.log(E + 1e-6).",
    "hz": "the filters' edges are equally spaced in Hz, not in mel: space n_mels + 2 points equally in "
          "m = 2595 log10(1 + f/700), then convert them back to Hz with f = 700 (10^(m/2595) - 1).",
    "break1000": "the mel formula's break frequency is wrong (1000 Hz instead of 700): m = 2595 log10(1 + f/700).",
    "ln_forward": "the mel formula and its inverse do not match (the natural log forward, 10^(m/2595) back): "
                  "use m = 2595 log10(1 + f/700) and f = 700 (10^(m/2595) - 1).",
    "no_window": "no window (a rectangular one): multiply each frame by a Hann window, "
                 "torch.stft(..., window=torch.hann_window(n_fft, dtype=waveform.dtype)); without it every frame's edges leak energy "
                 "into all frequencies.",
    "symmetric": "the Hann window is symmetric (periodic=False); the spectral convention is the periodic window "
                 "torch.hann_window(n_fft) (the default).",
    "clamp": "",
}


def _mel_calls() -> list[tuple[Tensor, int, int, str]]:
    g = torch.Generator().manual_seed(101)
    t = torch.arange(4000, dtype=D) / 16000
    tone = torch.sin(2 * math.pi * 1000 * t) + 0.01 * torch.randn(4000, generator=g, dtype=D)
    b = 0.3 * torch.randn(2, 2100, generator=g, dtype=D)
    sil = torch.cat([torch.zeros(1200, dtype=D), 0.5 * torch.randn(1800, generator=g, dtype=D)])
    f32 = (0.2 * torch.randn(3, 3000, generator=g)).float()
    b3 = 0.3 * torch.randn(2, 3, 2500, generator=g, dtype=D)
    return [(tone, 16000, 40, "a 1 kHz tone, 4000 samples at 16 kHz, n_mels = 40"),
            (b, 8000, 23, "a batch (2, 2100) at 8 kHz, n_mels = 23"),
            (sil, 16000, 32, "3000 samples at 16 kHz starting with 1200 of silence, n_mels = 32"),
            (f32, 22050, 64, "float32 (3, 3000) at 22.05 kHz, n_mels = 64"),
            (b3, 16000, 24, "three dimensions (2, 3, 2500) at 16 kHz, n_mels = 24")]


def _probe_log_mel(fn: Callable) -> None:
    for x, sr, n_mels, desc in _mel_calls():
        what = f"log_mel ({desc})"
        try:
            out = fn(x, sr, n_mels)
        except RuntimeError as e:
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not getattr(e, "_course_student", False):
                raise
            if x.dim() > 2 and "1D or 2D" in text:
                raise Mistake(f"{what}: your code raised RuntimeError ({text}): the leading dimensions were not "
                              "flattened. torch.stft takes (batch, T) only: flatten to (batch, T) with "
                              "waveform.reshape(-1, waveform.shape[-1]) and restore the leading dimensions at the "
                              "end, L.reshape(*waveform.shape[:-1], n_mels, frames).") from None
            if "double" in text.lower() and "float" in text.lower():
                raise Mistake(f"{what}: your code raised RuntimeError ({text}): a dtype mismatch. The window or the "
                              f"filterbank was made in float32 for a {x.dtype} waveform: pass dtype=waveform.dtype "
                              "(torch.hann_window(n_fft, dtype=waveform.dtype, device=waveform.device), and build "
                              "the filterbank in the same dtype).") from None
            raise
        if not isinstance(out, Tensor):
            raise Mistake(f"{what} should be a torch.Tensor (..., n_mels, frames); your function returned "
                          f"{describe(out)}.")
        ref = reference_log_mel(x, sr, n_mels)
        want = tuple(ref.shape)
        shape = tuple(out.shape)
        if shape != want:
            n_fft, hop = audio.frame_settings(sr)
            frames = want[-1]
            if len(shape) >= 2 and shape[-2:] == want[-2:] and math.prod(shape[:-2]) == math.prod(want[:-2]):
                raise Mistake(f"{what} has shape {shape}, expected {want}: the leading dimensions were flattened but "
                              "not restored. Flatten to (batch, T) for torch.stft and restore the leading dimensions "
                              "at the end, L.reshape(*waveform.shape[:-1], n_mels, frames).")
            if shape == want[:-2] + (frames, n_mels):
                raise Mistake(f"{what} has shape {shape}, expected {want}: frames and mels are transposed. Put the "
                              "n_mels mel bands first and time last, (..., n_mels, frames), like an image (rows = "
                              "frequency).")
            if shape[-1] == 1 + x.shape[-1] // hop:
                raise Mistake(f"{what} has {shape[-1]} frames, expected {frames}: that is torch.stft's default "
                              "center=True (it pads n_fft/2 on both sides). Use center=False: frames = 1 + (T - "
                              "n_fft) // hop.")
            if shape[-1] in (1 + (x.shape[-1] - 400) // 160, 1 + x.shape[-1] // 160) and sr != 16000:
                raise Mistake(f"{what} has {shape[-1]} frames, expected {frames}: the frame sizes 400 and 160 are "
                              f"fixed, but they are 25 ms and 10 ms at 16 kHz only. At {sr} Hz: n_fft = "
                              f"round(0.025 * sample_rate) = {n_fft}, hop = round(0.010 * sample_rate) = {hop}.")
            if shape[-2] != n_mels and shape[-1] == frames:
                raise Mistake(f"{what} has {shape[-2]} mel bands, expected n_mels = {n_mels}: n_mels is ignored or "
                              "fixed; build the filterbank with the argument.")
            raise Mistake(f"{what} has shape {shape}, expected {want}. " + RULE_10_1)
        if out.dtype != x.dtype:
            raise Mistake(f"{what} has dtype {out.dtype} for a {x.dtype} waveform: keep the input's dtype (make the "
                          "window and filterbank with dtype=waveform.dtype).")
        if not torch.isfinite(out).all():
            raise Mistake(f"{what} contains -inf or NaN: the log of zero energy (silent frames). Add the floor: "
                          "torch.log(E + 1e-6).")
        tol = dict(atol=2e-4, rtol=1e-4) if x.dtype == D else dict(atol=2e-3, rtol=1e-3)
        if _close(out.detach(), ref, **tol) or _close(out.detach(), log_mel_variant(x, sr, n_mels, "clamp"), **tol):
            continue
        for key, msg in MEL_MISTAKES.items():
            if msg and _close(out.detach(), log_mel_variant(x, sr, n_mels, key), **tol):
                raise Mistake(f"{what}: wrong. It looks like {msg}")
        expect_close(out.detach(), ref, what, hint=RULE_10_1, **tol)


def log_mel(student: Callable) -> Callable:
    """Exercise 10.1: the log-mel spectrogram of a waveform."""
    return run_check("10.1", "log-mel spectrogram", student, reference_log_mel, _probe_log_mel)


# ----------------------------------------------------------------------------- 10.2

RULE_10_2 = ("n = noise[..., :T]; P = mean of squares along the last axis; a = sqrt(P_s / (P_n * 10 ** (snr_db / "
             "10))); return signal + a * n.")


def mix_variant(s: Tensor, noise: Tensor, snr: float, mistake: str = "") -> Tensor:
    """The mixture with one named mistake (``''``: the reference)."""
    T = s.shape[-1]
    n = noise[..., :T]
    ps, pn = s.pow(2).mean(-1, keepdim=True), n.pow(2).mean(-1, keepdim=True)
    if mistake == "whole_noise":
        pn = noise.pow(2).mean(-1, keepdim=True)
    if mistake == "energy":
        ps, pn = s.pow(2).sum(-1, keepdim=True), noise.pow(2).sum(-1, keepdim=True)
    if mistake == "batch_power":
        ps, pn = s.pow(2).mean(), n.pow(2).mean()
    r = 10 ** (snr / 10)
    if mistake == "amp20":
        r = 10 ** (snr / 20)
    if mistake == "sign":
        r = 10 ** (-snr / 10)
    if mistake == "amp_formula":
        return s + torch.sqrt(ps / pn) / 10 ** (snr / 10) * n
    if mistake == "scale_signal":
        return s * torch.sqrt(pn * r / ps) + n
    y = s + torch.sqrt(ps / (pn * r)) * n
    if mistake == "peak":
        return y / y.abs().amax(-1, keepdim=True)
    if mistake == "unit_power":
        return y / y.pow(2).mean(-1, keepdim=True).sqrt()
    if mistake == "rms_signal":
        return y * torch.sqrt(ps / y.pow(2).mean(-1, keepdim=True))
    return y


MIX_MISTAKES = {
    "amp20": "the SNR is read as an amplitude ratio (10 ** (snr_db / 20)) but used with powers: powers take "
             "10 ** (snr_db / 10) (SNR_dB = 10 log10 of a power ratio, 20 log10 of an amplitude ratio).",
    "amp_formula": "the amplitude formula is mixed with the power one: a = sqrt(P_s / P_n) / 10 ** (snr_db / 10) "
                   "divides an amplitude by a power ratio. a = sqrt(P_s / (P_n * 10 ** (snr_db / 10))).",
    "sign": "the SNR's sign is inverted: a higher snr_db must mean *less* noise, a = sqrt(P_s / (P_n * 10 ** "
            "(+snr_db / 10))).",
    "scale_signal": "the signal was scaled instead of the noise: the SNR is right, but the speech's loudness now "
                    "depends on the noise. Keep the signal as it is and scale the noise: " + RULE_10_2,
    "peak": "the mixture was normalised (divided by its peak): return signal + a * noise as it is; the SNR is a "
            "ratio of the two parts and needs no renormalising (it would only change the loudness).",
    "unit_power": "the mixture was normalised to unit power: return signal + a * noise as it is.",
    "rms_signal": "the mixture was rescaled to the signal's power: return signal + a * noise as it is.",
    "whole_noise": "the noise's power is measured on the whole noise, but only its first T samples are added: "
                   "measure P_n on the part you use, n = noise[..., :T].",
    "energy": "energies (sums of squares) of different lengths were compared instead of powers (means): with a "
              "noise longer than the signal the sums differ by the length ratio. P = (x ** 2).mean(-1) on "
              "n = noise[..., :T].",
    "batch_power": "one power over the whole batch: each row (utterance) has its own power and gets its own "
                   "noise scale: mean over the last axis only, (x ** 2).mean(-1, keepdim=True).",
}


def _mix_calls() -> list[tuple[Tensor, Tensor, float, str]]:
    g = torch.Generator().manual_seed(102)
    s1 = torch.sin(torch.arange(800, dtype=D) / 5) * 0.4
    n1 = torch.randn(1200, generator=g, dtype=D)
    s2 = torch.randn(3, 500, generator=g, dtype=D) * torch.tensor([[0.1], [1.0], [3.0]], dtype=D)
    n2 = torch.randn(3, 500, generator=g, dtype=D) * 2
    s3 = (0.3 * torch.randn(2, 400, generator=g)).float()
    n3 = torch.randn(2, 700, generator=g).float()
    return [(s1, n1, 10.0, "a tone of 800 samples, white noise of 1200, snr_db = 10"),
            (s1, n1, -5.0, "the same, snr_db = -5"),
            (s2, n2, 0.0, "a batch (3, 500) of rows with different powers, noise (3, 500), snr_db = 0"),
            (s2, n2, 20.0, "the same batch, snr_db = 20"),
            (s3, n3, 5.0, "float32 (2, 400), noise (2, 700), snr_db = 5")]


def _probe_mix(fn: Callable) -> None:
    for s, n, snr, desc in _mix_calls():
        what = f"the mixture ({desc})"
        try:
            out = fn(s, n, snr)
        except RuntimeError as e:
            if getattr(e, "_course_student", False) and "size" in str(e):
                raise Mistake(f"{what}: your code raised RuntimeError ({str(e).splitlines()[0]}): the noise is "
                              f"longer than the signal ({n.shape[-1]} vs {s.shape[-1]} samples) and was not cut to "
                              "its length. Use n = noise[..., :signal.shape[-1]].") from None
            raise
        if not isinstance(out, Tensor):
            raise Mistake(f"{what} should be a torch.Tensor shaped like the signal; your function returned "
                          f"{describe(out)}.")
        if tuple(out.shape) != tuple(s.shape):
            if out.shape[-1] == n.shape[-1]:
                raise Mistake(f"{what} has shape {tuple(out.shape)}, the noise's length: the noise was not cut to the "
                              "signal's length. Use n = noise[..., :signal.shape[-1]].")
            raise Mistake(f"{what} has shape {tuple(out.shape)}, expected the signal's {tuple(s.shape)}.")
        if out.dtype != s.dtype:
            raise Mistake(f"{what} has dtype {out.dtype}; keep the signal's dtype {s.dtype}.")
        ref = reference_mix_at_snr(s, n, snr)
        tol = dict(atol=1e-9, rtol=1e-7) if s.dtype == D else dict(atol=1e-5, rtol=1e-4)
        if _close(out.detach(), ref, **tol):
            got = audio.snr_db(s, out.detach() - s)
            expect(bool(((got - snr).abs() < 0.1).all()), f"{what}: the SNR is {got.tolist()} dB, not {snr}.")
            continue
        for key, msg in MIX_MISTAKES.items():
            if _close(out.detach(), mix_variant(s, n, snr, key), **tol):
                raise Mistake(f"{what}: wrong. It looks like {msg}")
        got = audio.snr_db(s, out.detach() - s)
        raise Mistake(f"{what} is not signal + a * noise at {snr} dB: measured as mixture - signal, its SNR is "
                      f"{[round(v, 3) for v in got.reshape(-1).tolist()]} dB.", RULE_10_2)


def mix_at_snr(student: Callable) -> Callable:
    """Exercise 10.2: add noise at a given signal-to-noise ratio."""
    return run_check("10.2", "mixing at an SNR", student, reference_mix_at_snr, _probe_mix)


# ----------------------------------------------------------------------------- 10.3

RULE_10_3 = ("spk = torch.randperm(S, generator=generator)[:n_way]; words = torch.randperm(W, generator=generator)"
             "[:k_shot + q_query]; support = utterances[spk][:, words[:k_shot]] and query = utterances[spk][:, "
             "words[k_shot:]], each reshaped to (N*K, *item) / (N*Q, *item); labels arange(N).repeat_interleave(K) "
             "(and Q); classes = spk.tolist().")


def _coded(S: int, W: int, extra: tuple[int, ...] = ()) -> Tensor:
    """utterances[s, w] = an item whose first two entries are (s, w) (so that a row tells who said what)."""
    x = torch.zeros(S, W, 3, *extra, dtype=D)
    x[:, :, 0] = torch.arange(S, dtype=D)[:, None].reshape(S, 1, *([1] * len(extra)))
    x[:, :, 1] = torch.arange(W, dtype=D)[None, :].reshape(1, W, *([1] * len(extra)))
    x[:, :, 2] = 0.5
    return x


def _who(rows: Tensor) -> tuple[list[int], list[int]]:
    flat = rows
    if rows.dim() > 2:  # (rows, 3, *extra): the codes are constant over the extra dims
        flat = rows.reshape(rows.shape[0], 3, -1)[:, :, 0]
    return [int(round(v)) for v in flat[:, 0].tolist()], [int(round(v)) for v in flat[:, 1].tolist()]


def _episode(fn: Callable, x: Tensor, n: int, k: int, q: int, seed: int) -> Any:
    return fn(x, n, k, q, torch.Generator().manual_seed(seed))


def _check_one(ep: Any, x: Tensor, n: int, k: int, q: int, desc: str) -> tuple[list[int], list[int], list[int]]:
    what = f"the episode ({desc})"
    for attr in ("support_x", "support_y", "query_x", "query_y"):
        if not isinstance(getattr(ep, attr, None), Tensor):
            raise Mistake(f"{what}: return an Episode(support_x, support_y, query_x, query_y, n_way, k_shot, "
                          f"q_query, classes); your function returned {describe(ep)}.")
    item = tuple(x.shape[2:])
    ss, qs = tuple(ep.support_x.shape), tuple(ep.query_x.shape)
    if ss == (n * q, *item) and qs == (n * k, *item) and k != q:
        raise Mistake(f"{what}: k and q are swapped: the support has {n * q} rows (N*Q) and the query {n * k} (N*K). "
                      f"The support holds k_shot = {k} utterances per speaker, the query q_query = {q}.")
    expect(ss == (n * k, *item), f"{what}: support_x has shape {ss}, expected (N*K, *item) = {(n * k, *item)}.",
           RULE_10_3)
    expect(qs == (n * q, *item), f"{what}: query_x has shape {qs}, expected (N*Q, *item) = {(n * q, *item)}.",
           RULE_10_3)
    sy, qy = ep.support_y.reshape(-1).long().tolist(), ep.query_y.reshape(-1).long().tolist()
    want_s = torch.arange(n).repeat_interleave(k).tolist()
    want_q = torch.arange(n).repeat_interleave(q).tolist()
    if sorted(set(sy)) != list(range(n)) or sorted(set(qy)) != list(range(n)):
        raise Mistake(f"{what}: the labels are {sorted(set(sy))[:8]}, not 0..N-1 = 0..{n - 1}: label an episode's "
                      "speakers 0..N-1 in the order they were drawn (their speaker indices go in `classes`), so "
                      "the classifier's outputs line up with the labels.")
    if sy != want_s or qy != want_q:
        name, got, want = ("support_y", sy, want_s) if sy != want_s else ("query_y", qy, want_q)
        cause = ""
        if got == torch.arange(n).repeat(len(got) // n).tolist():
            cause = (" The labels were made with .repeat (0,1,2,0,1,2) instead of .repeat_interleave (0,0,1,1,2,2): "
                     "torch.arange(n_way).repeat_interleave(k_shot), likewise with q_query.")
        raise Mistake(f"{what}: not class-major: {name} is {got[:12]}, expected {want[:12]} (all rows of label 0, "
                      "then those of label 1, ...; the same for the query). ProtoNet's prototypes average rows "
                      f"c*K .. c*K+K-1, so the rows must be grouped by class.{cause}")
    s_spk, s_wrd = _who(ep.support_x.detach())
    q_spk, q_wrd = _who(ep.query_x.detach())
    per_s = [set(s_spk[c * k:(c + 1) * k]) for c in range(n)]
    per_q = [set(q_spk[c * q:(c + 1) * q]) for c in range(n)]
    if any(len(p) != 1 for p in per_s + per_q):
        raise Mistake(f"{what}: the rows of one label come from several speakers: a class is one speaker, so all "
                      "its support and query utterances must be that speaker's.")
    spk_s, spk_q = [p.pop() for p in per_s], [p.pop() for p in per_q]
    if spk_s != spk_q:
        raise Mistake(f"{what}: the support speakers differ from the query speakers (label c is speaker {spk_s} in "
                      f"the support but {spk_q} in the query). Draw the N speakers once and take both sets from them.")
    if len(set(spk_s)) != n:
        raise Mistake(f"{what}: a speaker appears under two labels ({spk_s}): draw N distinct speakers "
                      "(torch.randperm(S)[:n_way]).")
    for c in range(n):
        ws, wq = s_wrd[c * k:(c + 1) * k], q_wrd[c * q:(c + 1) * q]
        if set(ws) & set(wq):
            raise Mistake(f"{what}: the same word in support and query (speaker {spk_s[c]} says word "
                          f"{sorted(set(ws) & set(wq))[0]} in both): a model can then match the word instead of "
                          "the voice. Draw K + Q distinct words and use the first K for the support, the rest for "
                          "the query.")
        if len(set(ws)) != k or len(set(wq)) != q:
            raise Mistake(f"{what}: a speaker says the same word twice in one set: draw K + Q *distinct* words "
                          "(torch.randperm(W)[:k_shot + q_query]).")
    if set(s_wrd) & set(q_wrd):
        raise Mistake(f"{what}: words are disjoint within each class but not across classes: word "
                      f"{sorted(set(s_wrd) & set(q_wrd))[0]} is in one speaker's support and another's query, so "
                      "a query can match a prototype by its word. Draw the K + Q words once for the whole episode.")
    try:
        got = [int(c) for c in getattr(ep, "classes", None)]
    except (TypeError, ValueError):
        got = None
    if got != spk_s:
        raise Mistake(f"{what}: classes is {getattr(ep, 'classes', None)!r}, expected the speaker index behind each "
                      f"label, {spk_s} (classes = spk.tolist()).")
    return spk_s, s_wrd, q_wrd


def _probe_episode(fn: Callable) -> None:
    x = _coded(12, 9)
    calls = [(x, 3, 2, 3, "12 speakers x 9 words, 3-way 2-shot, 3 queries"),  # K >= 2: .repeat shows in support_y
             (x, 5, 1, 3, "the same utterances, 5-way 1-shot, 3 queries"),
             (x, 4, 3, 2, "the same utterances, 4-way 3-shot, 2 queries"),
             (_coded(7, 6, (2,)), 3, 2, 4, "7 speakers x 6 words with items (3, 2), 3-way 2-shot, 4 queries"),
             (_coded(5, 8), 5, 4, 4, "5 speakers x 8 words, 5-way 4-shot, 4 queries")]
    for xs, n, k, q, desc in calls:
        _check_one(_episode(fn, xs, n, k, q, 0), xs, n, k, q, desc)
    xs, n, k, q, desc = calls[1]
    a = _episode(fn, xs, n, k, q, 3)
    torch.manual_seed(12345)
    torch.rand(7)
    b = _episode(fn, xs, n, k, q, 3)
    if not (torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)):
        raise Mistake("two calls with generators seeded alike gave different episodes: the function draws from "
                      "torch's global random generator. Pass generator=generator to every torch.randperm / "
                      "torch.randint, so a seed gives a repeatable stream of episodes.")
    spk_sets, word_sets = set(), set()
    for seed in range(10):
        ep = _episode(fn, xs, n, k, q, seed)
        spk, sw, qw = _check_one(ep, xs, n, k, q, f"{desc}, seed {seed}")
        spk_sets.add(tuple(sorted(spk)))
        word_sets.add((tuple(sorted(set(sw))), tuple(sorted(set(qw)))))
    if len(spk_sets) == 1:
        raise Mistake(f"10 episodes with 10 different seeds all have the speakers {sorted(spk_sets.pop())}: the "
                      "speakers are fixed (the generator is ignored). Draw them with torch.randperm(S, "
                      "generator=generator)[:n_way].")
    if len(word_sets) == 1:
        raise Mistake("10 episodes with 10 different seeds all use the same words: draw them with "
                      "torch.randperm(W, generator=generator)[:k_shot + q_query].")


def speaker_episode(student: Callable) -> Callable:
    """Exercise 10.3: an N-way K-shot speaker episode with disjoint support and query words."""
    return run_check("10.3", "the speaker episode", student, reference_speaker_episode, _probe_episode)
