"""Chapter 10's checks (few-shot speech): right answers in several styles pass; each named mistake of the
log-mel spectrogram, SNR mixing and the speaker episode gets its own message; stubs are "not attempted".

The mistaken functions are written as a student would write them, independently of the check's variants."""
import math

import pytest
import torch

from course_utils import audio
from course_utils.chapter_checks import ch10
from course_utils.episodes import Episode
from conftest import expect_stub_handling, message, status


# --- 10.1 log-mel --------------------------------------------------------------------------------------

def _mel(f):
    return 2595 * math.log10(1 + f / 700)


def make_log_mel(power=2, log=torch.log, floor=1e-6, spacing="mel", brk=700, inverse=None, transpose=False,
                 window="hann", center=False, fixed=False, n_fixed=None, flatten=True, restore=True,
                 dtype="input"):
    def log_mel(waveform, sample_rate, n_mels):  # dtype="float32": torch.hann_window(n_fft), a float32 filterbank
        n_mels = n_fixed or n_mels
        n_fft, hop = (400, 160) if fixed else (round(0.025 * sample_rate), round(0.010 * sample_rate))
        lead = waveform.shape[:-1]
        x = waveform.reshape(-1, waveform.shape[-1]) if flatten else waveform
        w = {"hann": torch.hann_window(n_fft, dtype=x.dtype if dtype == "input" else torch.float32), "none": None,
             "symmetric": torch.hann_window(n_fft, periodic=False, dtype=x.dtype)}[window]
        X = torch.stft(x, n_fft, hop_length=hop, window=w, center=center, return_complex=True)
        P = X.abs() ** power
        top = sample_rate / 2
        if spacing == "hz":
            e = torch.linspace(0, top, n_mels + 2, dtype=torch.float64)
        else:
            m = torch.linspace(0, 2595 * math.log10(1 + top / brk) if inverse is None else 2595 * math.log(1 + top / brk),
                               n_mels + 2, dtype=torch.float64)
            e = brk * (10 ** (m / 2595) - 1)
        f = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
        H = torch.clamp(torch.minimum((f - e[:-2, None]) / (e[1:-1, None] - e[:-2, None]),
                                      (e[2:, None] - f) / (e[2:, None] - e[1:-1, None])), min=0)
        H = H.to(x.dtype if dtype == "input" else torch.float32)
        L = log(H @ P + floor)
        if restore:
            L = L.reshape(*lead, n_mels, L.shape[-1])
        return L.transpose(-1, -2) if transpose else L
    return log_mel


def log_mel_loop(waveform, sample_rate, n_mels):  # right: frames by hand, a clamp floor
    n_fft, hop = round(0.025 * sample_rate), round(0.010 * sample_rate)
    fb = audio.mel_filterbank(n_mels, n_fft, sample_rate, dtype=waveform.dtype)
    frames = waveform.unfold(-1, n_fft, hop) * torch.hann_window(n_fft, dtype=waveform.dtype)
    P = torch.fft.rfft(frames).abs().pow(2)                       # (..., frames, bins)
    return torch.log(torch.clamp(P @ fb.T, min=1e-6)).transpose(-1, -2)


@pytest.mark.parametrize("fn", [make_log_mel(), log_mel_loop, ch10.reference_log_mel])
def test_log_mel_right(fn):
    ch10.log_mel(fn)
    assert status("10.1") == "right", message("10.1")


@pytest.mark.parametrize("fn, phrase", [
    (make_log_mel(power=1), "magnitude |X| was used instead of the power"),
    (make_log_mel(log=torch.log10), "log10 was used"),
    (make_log_mel(log=lambda e: 10 * torch.log10(e)), "decibels"),
    (make_log_mel(floor=0.0), "log of zero"),
    (make_log_mel(spacing="hz"), "equally spaced in Hz, not in mel"),
    (make_log_mel(brk=1000), "break frequency is wrong"),
    (make_log_mel(inverse="ln"), "do not match"),
    (make_log_mel(transpose=True), "frames and mels are transposed"),
    (make_log_mel(window="none"), "no window"),
    (make_log_mel(window="symmetric"), "symmetric"),
    (make_log_mel(center=True), "center=True"),
    (make_log_mel(fixed=True), "fixed"),
    (make_log_mel(n_fixed=40), "n_mels is ignored"),
    (make_log_mel(flatten=False), "leading dimensions were not flattened"),
    (make_log_mel(restore=False), "flattened but not restored"),
    (make_log_mel(dtype="float32"), "made in float32 for a torch.float64 waveform"),
])
def test_log_mel_mistakes(fn, phrase):
    ch10.log_mel(fn)
    assert status("10.1") == "wrong"
    assert phrase in message("10.1"), message("10.1")


def test_log_mel_stub(monkeypatch):
    expect_stub_handling(ch10.log_mel, "10.1", ch10.reference_log_mel, make_log_mel(power=1), monkeypatch)


# --- 10.2 mixing -----------------------------------------------------------------------------------------

def mix_right(signal, noise, snr_db):
    n = noise[..., :signal.shape[-1]]
    ps, pn = (signal ** 2).mean(-1, keepdim=True), (n ** 2).mean(-1, keepdim=True)
    return signal + n * (ps / pn / 10 ** (snr_db / 10)) ** 0.5


def mix_right_db(signal, noise, snr_db):  # right: via decibels
    n = noise[..., :signal.shape[-1]]
    gap_db = 10 * torch.log10(signal.pow(2).mean(-1) / n.pow(2).mean(-1)) - snr_db
    return signal + (10 ** (gap_db / 20)).unsqueeze(-1) * n


def mix_amp20(s, noise, snr):
    n = noise[..., :s.shape[-1]]
    return s + torch.sqrt(s.pow(2).mean(-1, keepdim=True) / (n.pow(2).mean(-1, keepdim=True) * 10 ** (snr / 20))) * n


def mix_amp_formula(s, noise, snr):
    n = noise[..., :s.shape[-1]]
    return s + torch.sqrt(s.pow(2).mean(-1, keepdim=True) / n.pow(2).mean(-1, keepdim=True)) / 10 ** (snr / 10) * n


def mix_sign(s, noise, snr):
    return mix_right(s, noise, -snr)


def mix_scale_signal(s, noise, snr):
    n = noise[..., :s.shape[-1]]
    g = torch.sqrt(n.pow(2).mean(-1, keepdim=True) * 10 ** (snr / 10) / s.pow(2).mean(-1, keepdim=True))
    return g * s + n


def mix_peak(s, noise, snr):
    y = mix_right(s, noise, snr)
    return y / y.abs().max(dim=-1, keepdim=True).values


def mix_unit(s, noise, snr):
    y = mix_right(s, noise, snr)
    return y / y.pow(2).mean(-1, keepdim=True).sqrt()


def mix_whole_noise(s, noise, snr):
    a = torch.sqrt(s.pow(2).mean(-1, keepdim=True) / (noise.pow(2).mean(-1, keepdim=True) * 10 ** (snr / 10)))
    return s + a * noise[..., :s.shape[-1]]


def mix_no_cut(s, noise, snr):
    a = torch.sqrt(s.pow(2).mean(-1, keepdim=True) / (noise.pow(2).mean(-1, keepdim=True) * 10 ** (snr / 10)))
    return s + a * noise


def mix_energy(s, noise, snr):
    a = torch.sqrt(s.pow(2).sum(-1, keepdim=True) / (noise.pow(2).sum(-1, keepdim=True) * 10 ** (snr / 10)))
    return s + a * noise[..., :s.shape[-1]]


def mix_batch(s, noise, snr):
    n = noise[..., :s.shape[-1]]
    return s + torch.sqrt(s.pow(2).mean() / (n.pow(2).mean() * 10 ** (snr / 10))) * n


@pytest.mark.parametrize("fn", [mix_right, mix_right_db, ch10.reference_mix_at_snr])
def test_mix_right(fn):
    ch10.mix_at_snr(fn)
    assert status("10.2") == "right", message("10.2")


@pytest.mark.parametrize("fn, phrase", [
    (mix_amp20, "amplitude ratio"), (mix_amp_formula, "amplitude formula"), (mix_sign, "sign is inverted"),
    (mix_scale_signal, "signal was scaled instead of the noise"), (mix_peak, "normalised (divided by its peak)"),
    (mix_unit, "normalised to unit power"), (mix_whole_noise, "measured on the whole noise"),
    (mix_no_cut, "not cut to its length"), (mix_energy, "energies (sums of squares)"),
    (mix_batch, "one power over the whole batch"),
])
def test_mix_mistakes(fn, phrase):
    ch10.mix_at_snr(fn)
    assert status("10.2") == "wrong"
    assert phrase in message("10.2"), message("10.2")


def test_mix_stub(monkeypatch):
    expect_stub_handling(ch10.mix_at_snr, "10.2", ch10.reference_mix_at_snr, mix_sign, monkeypatch)


# --- 10.3 the speaker episode --------------------------------------------------------------------------

def _ep(xs, xq, n, k, q, classes, ys=None, yq=None):
    lab = torch.arange(n)
    return Episode(xs.float(), lab.repeat_interleave(k) if ys is None else ys, xq.float(),
                   lab.repeat_interleave(q) if yq is None else yq, n, k, q, classes)


def episode_loop(utterances, n_way, k_shot, q_query, generator=None):  # right: loops, words drawn first
    words = torch.randperm(utterances.shape[1], generator=generator)[:k_shot + q_query].tolist()
    spk = torch.randperm(utterances.shape[0], generator=generator)[:n_way].tolist()
    xs = torch.stack([utterances[s, w] for s in spk for w in words[:k_shot]])
    xq = torch.stack([utterances[s, w] for s in spk for w in words[k_shot:]])
    return _ep(xs, xq, n_way, k_shot, q_query, spk)


def episode_same_word(u, n, k, q, generator=None):
    spk = torch.randperm(u.shape[0], generator=generator)[:n]
    wk = torch.randperm(u.shape[1], generator=generator)[:k]
    wq = torch.randperm(u.shape[1], generator=generator)[:q]
    return _ep(u[spk][:, wk].flatten(0, 1), u[spk][:, wq].flatten(0, 1), n, k, q, spk.tolist())


def episode_overlap(u, n, k, q, generator=None):  # words rotated so that every query word is some support word
    spk = torch.randperm(u.shape[0], generator=generator)[:n]
    base = torch.randperm(u.shape[1], generator=generator)[:k + q]
    xs, xq = [], []
    for c, s in enumerate(spk):
        w = base.roll(c)
        xs.append(u[s, w[:k]])
        xq.append(u[s, w[k:]])
    return _ep(torch.cat(xs), torch.cat(xq), n, k, q, spk.tolist())


def episode_interleaved(u, n, k, q, generator=None):
    ep = ch10.reference_speaker_episode(u, n, k, q, generator)
    xs = ep.support_x.reshape(n, k, *ep.support_x.shape[1:]).transpose(0, 1).flatten(0, 1)
    return _ep(xs, ep.query_x, n, k, q, ep.classes, ys=torch.arange(n).repeat(k))


def episode_repeat(u, n, k, q, generator=None):  # rows class-major, labels with .repeat
    ep = ch10.reference_speaker_episode(u, n, k, q, generator)
    lab = torch.arange(n)
    return _ep(ep.support_x, ep.query_x, n, k, q, ep.classes, ys=lab.repeat(k), yq=lab.repeat(q))


def episode_repeat_query(u, n, k, q, generator=None):  # only the query labels made with .repeat
    ep = ch10.reference_speaker_episode(u, n, k, q, generator)
    return _ep(ep.support_x, ep.query_x, n, k, q, ep.classes, yq=torch.arange(n).repeat(q))


def episode_fixed_speakers(u, n, k, q, generator=None):
    spk = torch.arange(n)
    w = torch.randperm(u.shape[1], generator=generator)[:k + q]
    return _ep(u[spk][:, w[:k]].flatten(0, 1), u[spk][:, w[k:]].flatten(0, 1), n, k, q, spk.tolist())


def episode_global_rng(u, n, k, q, generator=None):
    return ch10.reference_speaker_episode(u, n, k, q, None)


def episode_swapped(u, n, k, q, generator=None):
    return ch10.reference_speaker_episode(u, n, q, k, generator)


def episode_other_speakers(u, n, k, q, generator=None):
    spk = torch.randperm(u.shape[0], generator=generator)
    w = torch.randperm(u.shape[1], generator=generator)[:k + q]
    return _ep(u[spk[:n]][:, w[:k]].flatten(0, 1), u[spk[n:2 * n]][:, w[k:]].flatten(0, 1), n, k, q,
               spk[:n].tolist())


def episode_speaker_labels(u, n, k, q, generator=None):
    ep = ch10.reference_speaker_episode(u, n, k, q, generator)
    c = torch.tensor(ep.classes)
    return _ep(ep.support_x, ep.query_x, n, k, q, ep.classes, ys=c.repeat_interleave(k), yq=c.repeat_interleave(q))


def episode_fixed_words(u, n, k, q, generator=None):
    spk = torch.randperm(u.shape[0], generator=generator)[:n]
    w = torch.arange(k + q)
    return _ep(u[spk][:, w[:k]].flatten(0, 1), u[spk][:, w[k:]].flatten(0, 1), n, k, q, spk.tolist())


@pytest.mark.parametrize("fn", [episode_loop, ch10.reference_speaker_episode])
def test_episode_right(fn):
    ch10.speaker_episode(fn)
    assert status("10.3") == "right", message("10.3")


@pytest.mark.parametrize("fn, phrase", [
    (episode_same_word, "the same word in support and query"),
    (episode_overlap, "not across classes"),
    (episode_interleaved, "not class-major"),
    (episode_repeat, "made with .repeat (0,1,2,0,1,2) instead of .repeat_interleave (0,0,1,1,2,2)"),
    (episode_repeat, "support_y is [0, 1, 2, 0, 1, 2]"),
    (episode_repeat_query, "query_y is [0, 1, 2, 0, 1, 2, 0, 1, 2]"),
    (episode_repeat_query, "instead of .repeat_interleave"),
    (episode_fixed_speakers, "the speakers are fixed"),
    (episode_global_rng, "global random generator"),
    (episode_swapped, "k and q are swapped"),
    (episode_other_speakers, "support speakers differ from the query speakers"),
    (episode_speaker_labels, "not 0..N-1"),
    (episode_fixed_words, "use the same words"),
])
def test_episode_mistakes(fn, phrase):
    ch10.speaker_episode(fn)
    assert status("10.3") == "wrong"
    assert phrase in message("10.3"), message("10.3")


def test_episode_stub(monkeypatch):
    expect_stub_handling(ch10.speaker_episode, "10.3", ch10.reference_speaker_episode, episode_swapped, monkeypatch)


def test_variants_are_the_references_without_a_mistake():
    x = torch.randn(2, 3000, dtype=torch.float64)
    assert torch.allclose(ch10.log_mel_variant(x, 16000, 30), audio.log_mel(x, 16000, 30))
    n = torch.randn(2, 3500, dtype=torch.float64)
    assert torch.allclose(ch10.mix_variant(x, n, 7.0), audio.mix_at_snr(x, n, 7.0))
