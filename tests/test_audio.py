"""course_utils.audio: the mel filterbank, log-mel and SNR mixing against hand-computed cases."""
import math

import pytest
import torch

from course_utils import audio


def test_mel_scale_constants_and_inverse():
    assert float(audio.hz_to_mel(700.0)) == pytest.approx(2595 * math.log10(2))
    assert float(audio.hz_to_mel(1000.0)) == pytest.approx(999.99, abs=0.5)  # 1000 Hz ~ 1000 mel by design
    f = torch.tensor([0.0, 123.0, 4000.0, 7999.0], dtype=torch.float64)
    assert torch.allclose(audio.mel_to_hz(audio.hz_to_mel(f)), f)


def test_filterbank_triangles_and_edges():
    n_mels, n_fft, sr = 10, 400, 16000
    fb = audio.mel_filterbank(n_mels, n_fft, sr, dtype=torch.float64)
    assert fb.shape == (n_mels, n_fft // 2 + 1)
    assert (fb >= 0).all() and fb.max() <= 1 + 1e-12
    edges = audio.mel_to_hz(torch.linspace(0, float(audio.hz_to_mel(sr / 2)), n_mels + 2, dtype=torch.float64))
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sr / n_fft
    for j in range(n_mels):  # zero outside (e_j, e_{j+2}), rising then falling, peak near e_{j+1}
        outside = (freqs <= edges[j]) | (freqs >= edges[j + 2])
        assert (fb[j][outside] == 0).all()
        peak = int(fb[j].argmax())
        assert abs(freqs[peak] - edges[j + 1]) <= sr / n_fft
    # hand-computed value: bin 10 (400 Hz) in the filter whose rising edge contains it
    j = int(((edges[:-2] < 400) & (edges[1:-1] >= 400)).nonzero()[0])
    assert float(fb[j, 10]) == pytest.approx(float((400 - edges[j]) / (edges[j + 1] - edges[j])))
    # neighbouring triangles overlap so that they sum to 1 between the first and last peaks
    inner = (freqs > edges[1]) & (freqs < edges[-2])
    assert torch.allclose(fb.sum(0)[inner], torch.ones(int(inner.sum()), dtype=torch.float64))


def test_log_mel_frames_and_tone_band():
    sr = 16000
    t = torch.arange(8000, dtype=torch.float64) / sr
    x = torch.sin(2 * math.pi * 1000 * t)
    L = audio.log_mel(x, sr, 40)
    n_fft, hop = audio.frame_settings(sr)
    assert (n_fft, hop) == (400, 160)
    assert L.shape == (40, 1 + (8000 - 400) // 160)
    band = int(L.mean(-1).argmax())
    edges = audio.mel_to_hz(torch.linspace(0, float(audio.hz_to_mel(sr / 2)), 42, dtype=torch.float64))
    assert edges[band] < 1000 < edges[band + 2]  # the band whose triangle covers 1 kHz
    assert audio.log_mel(torch.randn(2, 3, 1000), 8000, 23).shape == (2, 3, 23, 1 + (1000 - 200) // 80)


def test_log_mel_floor_and_power():
    L = audio.log_mel(torch.zeros(800), 16000, 8)
    assert torch.allclose(L, torch.full_like(L, math.log(audio.LOG_FLOOR)))
    x = torch.randn(1600, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # power: doubling the amplitude adds ln 4 (where the floor is negligible)
    assert torch.allclose(audio.log_mel(2 * x, 16000, 20) - audio.log_mel(x, 16000, 20), torch.tensor(math.log(4.0),
                          dtype=torch.float64), atol=1e-4)
    with pytest.raises(ValueError, match="fewer than one"):
        audio.log_mel(torch.zeros(100), 16000, 8)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 5.0, 20.0, 37.5])
def test_mix_hits_the_snr(snr):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(3, 4000, generator=g, dtype=torch.float64) * torch.tensor([[0.1], [1.0], [5.0]], dtype=torch.float64)
    n = torch.randn(3, 6000, generator=g, dtype=torch.float64) * 3
    y = audio.mix_at_snr(s, n, snr)
    assert y.shape == s.shape
    got = audio.snr_db(s, y - s)
    assert ((got - snr).abs() < 0.1).all()
    assert ((got - snr).abs() < 1e-9).all()  # exact, in fact


def test_mix_short_noise_repeats_and_clean():
    s = torch.randn(1000, dtype=torch.float64)
    n = torch.randn(300, dtype=torch.float64)
    y = audio.mix_at_snr(s, n, 10)
    assert y.shape == s.shape and abs(float(audio.snr_db(s, y - s)) - 10) < 0.1
    assert torch.equal(audio.mix_at_snr(s, n, float("inf")), s)


@pytest.mark.parametrize("bad", ["10", None, float("nan"), -math.inf, [10], True])
def test_mix_rejects_bad_snr(bad):
    with pytest.raises(ValueError, match="snr_db must be a number"):
        audio.mix_at_snr(torch.randn(100), torch.randn(100), bad)


def test_mix_rejects_silent_noise():
    with pytest.raises(ValueError, match="silent"):
        audio.mix_at_snr(torch.randn(100), torch.zeros(100), 5)


def test_white_and_babble_noise_unit_power():
    g = torch.Generator().manual_seed(2)
    w = audio.white_noise((4, 20000), g)
    assert torch.allclose(audio.power(w), torch.ones(4), atol=0.05)
    utt = torch.randn(10, 500, generator=g) * torch.linspace(0.1, 2, 10)[:, None]
    b = audio.babble_noise(utt, 3, 800, n_talkers=4, generator=g)
    assert b.shape == (3, 800) and torch.allclose(audio.power(b), torch.ones(3), atol=1e-4)
    with pytest.raises(ValueError, match="n_talkers"):
        audio.babble_noise(utt[:2], 3, 800, n_talkers=4)
