"""Audio features and noise: the log-mel spectrogram in plain torch, mixing noise at a chosen SNR.

**Log-mel spectrogram** (the front end of most speech models since Davis & Mermelstein, 1980, who
showed mel-spaced filterbank features beat linear ones for word recognition). For a waveform x[t]
sampled at ``sample_rate`` Hz:

1. Short-time Fourier transform, frames of ``n_fft`` samples (25 ms) every ``hop`` samples (10 ms),
   each multiplied by a periodic Hann window w (which keeps a frame's edges from leaking energy into
   every frequency bin)::

       X[f, τ] = Σ_n x[τ·hop + n] · w[n] · exp(-2πi f n / n_fft),     f = 0 .. n_fft/2

   ``center=False``: frame τ starts at sample τ·hop, so a clip of T samples gives
   ``frames = 1 + (T - n_fft) // hop``.
2. Power spectrum P[f, τ] = |X[f, τ]|² (power, not magnitude |X|).
3. Mel scale (Stevens, Volkmann & Newman, 1937; the HTK constants): m(f) = 2595 log10(1 + f / 700),
   f(m) = 700 (10^(m / 2595) - 1): equal steps in m sound like equal steps in pitch.
4. ``n_mels`` triangular filters H_j whose edges are ``n_mels + 2`` points equally spaced in *mel*
   from 0 Hz to ``sample_rate / 2``: filter j rises from edge j to 1 at edge j + 1 and falls to 0 at
   edge j + 2 (peak height 1, no area normalisation; torchaudio's ``melscale_fbanks`` with
   ``mel_scale='htk', norm=None``). E[j, τ] = Σ_f H_j[f] P[f, τ].
5. Natural log with a floor: L[j, τ] = ln(E[j, τ] + 1e-6). The floor keeps silent frames (E = 0,
   e.g. zero padding) at ln(1e-6) ≈ -13.8 instead of -inf.

The result has shape ``(..., n_mels, frames)``: mels as rows, time as columns, like an image
``(1, n_mels, frames)`` for a conv net.

**Signal-to-noise ratio**: SNR_dB = 10 log10(P_signal / P_noise), P the mean power (mean of the squared
samples) of each. To mix at a chosen SNR, scale the *noise* (never the signal) by
``a = sqrt(P_signal / (P_noise · 10^(SNR_dB / 10)))`` and add: ``y = s + a·n``. The noise is first cut
(or repeated) to the signal's length, and its power is measured on the part that is used.

**Babble**: the sum of a few other talkers' utterances, each scaled to unit power (the hardest
everyday noise for speaker recognition, because it is itself speech).
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["LOG_FLOOR", "hz_to_mel", "mel_to_hz", "mel_filterbank", "frame_settings", "log_mel", "power",
           "snr_db", "mix_at_snr", "white_noise", "babble_noise", "match_length"]

LOG_FLOOR = 1e-6
WINDOW_S = 0.025  # 25 ms frames
HOP_S = 0.010     # every 10 ms


def hz_to_mel(f: Tensor | float) -> Tensor:
    """m = 2595 log10(1 + f / 700) (HTK)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor | float) -> Tensor:
    """f = 700 (10^(m / 2595) - 1), the inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> Tensor:
    """Triangular mel filters ``H`` of shape ``(n_mels, n_fft // 2 + 1)`` (peak 1, edges equally spaced in mel).

    Bin f of an ``n_fft``-point FFT is at f·sample_rate/n_fft Hz. Filter j is
    ``max(0, min((f - e_j) / (e_{j+1} - e_j), (e_{j+2} - f) / (e_{j+2} - e_{j+1})))`` with the edges
    e = mel_to_hz(linspace(m(f_min), m(f_max), n_mels + 2)).
    """
    _check_int("n_mels", n_mels, 1)
    _check_int("n_fft", n_fft, 2)
    _check_int("sample_rate", sample_rate, 1)
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"Need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}, got f_min={f_min}, "
                         f"f_max={f_max}.")
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                     dtype=torch.float64))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0).to(dtype=dtype, device=device)


def frame_settings(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)``: 25 ms frames every 10 ms, in samples (400 and 160 at 16 kHz)."""
    _check_int("sample_rate", sample_rate, 1)
    return int(round(WINDOW_S * sample_rate)), int(round(HOP_S * sample_rate))


def log_mel(waveform: Tensor, sample_rate: int = 16000, n_mels: int = 40) -> Tensor:
    """ln(mel power + 1e-6): ``(..., T)`` waveform -> ``(..., n_mels, frames)``, frames = 1 + (T - n_fft) // hop.

    25 ms periodic Hann frames every 10 ms (``n_fft`` = the window length, ``center=False``), power
    |X|², HTK mel triangles from 0 Hz to the Nyquist frequency, natural log with the floor 1e-6.
    """
    if not isinstance(waveform, Tensor) or waveform.dim() < 1:
        raise ValueError(f"waveform must be a tensor (..., T), got {type(waveform).__name__}.")
    n_fft, hop = frame_settings(sample_rate)
    if waveform.shape[-1] < n_fft:
        raise ValueError(f"The waveform has {waveform.shape[-1]} samples, fewer than one {n_fft}-sample frame "
                         f"(25 ms at {sample_rate} Hz); pad it or use a longer clip.")
    x = waveform.float() if not waveform.is_floating_point() else waveform
    lead = x.shape[:-1]
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop_length=hop, win_length=n_fft,
                      window=torch.hann_window(n_fft, dtype=x.dtype, device=x.device), center=False,
                      return_complex=True)
    p = spec.real ** 2 + spec.imag ** 2  # (B, n_fft//2+1, frames)
    fb = mel_filterbank(n_mels, n_fft, sample_rate, dtype=x.dtype, device=x.device)
    e = fb @ p
    return torch.log(e + LOG_FLOOR).reshape(*lead, n_mels, e.shape[-1])


def power(x: Tensor) -> Tensor:
    """Mean power along the last axis, mean(x²)."""
    return x.pow(2).mean(dim=-1)


def snr_db(signal: Tensor, noise: Tensor) -> Tensor:
    """10 log10(P_signal / P_noise) along the last axis."""
    return 10 * torch.log10(power(signal) / power(noise))


def match_length(noise: Tensor, length: int) -> Tensor:
    """The first ``length`` samples of ``noise``, repeated end to end first if it is shorter."""
    n = noise.shape[-1]
    if n == 0:
        raise ValueError("The noise is empty (0 samples); give at least one sample of noise.")
    if n < length:
        noise = noise.repeat(*([1] * (noise.dim() - 1)), math.ceil(length / n))
    return noise[..., :length]


def _snr_value(snr: object) -> float:
    if isinstance(snr, Tensor) and snr.numel() == 1:
        snr = snr.item()
    if isinstance(snr, bool) or not isinstance(snr, Real) or math.isnan(float(snr)) or float(snr) == -math.inf:
        raise ValueError(f"snr_db must be a number in dB (e.g. 10, or float('inf') for no noise), got {snr!r}.")
    return float(snr)


def mix_at_snr(signal: Tensor, noise: Tensor, snr_db: float) -> Tensor:
    """``signal + a * noise`` with ``a`` chosen so that 10 log10(P_signal / P(a * noise)) = ``snr_db``.

    ``signal (..., T)``; ``noise (..., T_n)`` broadcastable to it: cut (or repeated) to T samples, its
    power measured on those T samples. ``snr_db = inf`` returns the signal unchanged. The mixture is
    not renormalised (its loudness is the signal's plus the noise's).
    """
    snr = _snr_value(snr_db)
    if not isinstance(signal, Tensor) or not isinstance(noise, Tensor):
        raise ValueError("signal and noise must be tensors (..., T).")
    n = match_length(noise.to(signal.dtype), signal.shape[-1])
    if math.isinf(snr) and snr > 0:
        return signal.clone()
    p_n = power(n)
    if bool((p_n == 0).any()):
        raise ValueError("The noise is silent (zero power), so no scale can reach the SNR; use real noise.")
    a = torch.sqrt(power(signal) / (p_n * 10 ** (snr / 10)))
    return signal + a.unsqueeze(-1) * n


def white_noise(shape: Sequence[int] | int, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """Gaussian white noise (flat spectrum), unit power."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return torch.randn(*shape, generator=generator, dtype=dtype)


def babble_noise(utterances: Tensor, n_out: int, length: int, n_talkers: int = 6,
                 generator: torch.Generator | None = None) -> Tensor:
    """``n_out`` babble clips ``(n_out, length)``: each the sum of ``n_talkers`` utterances of ``utterances``
    (rows of a ``(U, T)`` tensor, other speakers than the ones it will be mixed with), each utterance at
    unit power and circularly shifted by a random offset so that the talkers overlap. Unit power overall."""
    if not isinstance(utterances, Tensor) or utterances.dim() != 2 or utterances.shape[0] < n_talkers:
        raise ValueError(f"babble needs a (U, T) tensor of at least n_talkers={n_talkers} utterances.")
    u = utterances.float()
    u = u / power(u).clamp_min(1e-12).sqrt().unsqueeze(-1)
    u = match_length(u, length)
    pick = torch.randint(0, u.shape[0], (n_out, n_talkers), generator=generator)
    shift = torch.randint(0, length, (n_out, n_talkers), generator=generator)
    b = torch.zeros(n_out, length, dtype=u.dtype)
    base = torch.arange(length)[None]
    for t in range(n_talkers):  # one talker at a time (memory: n_out x length)
        b += torch.gather(u[pick[:, t]], 1, (base + shift[:, t:t + 1]) % length)
    return b / power(b).clamp_min(1e-12).sqrt().unsqueeze(-1)


def _check_int(name: str, v: object, low: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}.")
