"""Speech features and waveform augmentation in torch (paper 003 §2.1.3, paper 001 §3.3), batched and masked.

Features: STFT magnitude, a 128-bin log-mel spectrogram and 40 MFCCs, all with 25 ms Hann windows and 10 ms hops at
16 kHz (``n_fft`` = window = 400 samples, centred frames, so a clip of N samples has ``1 + N // 160`` frames). The
mel filterbank and MFCC follow ``librosa.feature.mfcc`` exactly (Slaney mel, power_to_db with an 80 dB floor below
the clip's peak, orthonormal DCT-II); the tests hold them to librosa on a tone. They are torch, not librosa, so the
trainable encoders compute them per batch from cached waveforms, after training-time augmentation.

Normalisation (paper: "normalized before feeding into the LSTM-CNN", unspecified): per utterance, each feature
dimension to zero mean and unit variance over the clip's real frames (cepstral mean/variance normalisation), which
removes channel and loudness offsets that differ between speakers and recordings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.nn import functional as F

from ..tensor_ops import masked_mean

SAMPLE_RATE = 16_000
N_FFT = WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS, N_MFCC = 128, 40
TOP_DB, AMIN = 80.0, 1e-10
N_FREQS = N_FFT // 2 + 1


def frame_count(samples: torch.Tensor | int) -> torch.Tensor | int:
    """Frames of a centred STFT over ``samples`` samples."""
    return 1 + samples // HOP_LENGTH


@lru_cache(maxsize=4)
def _window(device: str) -> torch.Tensor:
    return torch.hann_window(WIN_LENGTH, periodic=True, device=device)


@lru_cache(maxsize=4)
def mel_filterbank(device: str = "cpu") -> torch.Tensor:
    """``[N_FREQS, N_MELS]`` Slaney-normalised mel filters, the ones librosa's mfcc uses."""
    import librosa

    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)
    return torch.from_numpy(basis).float().T.contiguous().to(device)


@lru_cache(maxsize=4)
def dct_matrix(device: str = "cpu") -> torch.Tensor:
    """``[N_MELS, N_MFCC]`` orthonormal DCT-II (scipy's ``dct(type=2, norm='ortho')``)."""
    n = torch.arange(N_MELS, dtype=torch.float64)
    k = torch.arange(N_MFCC, dtype=torch.float64)
    basis = torch.cos(math.pi / N_MELS * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / N_MELS)
    basis[:, 0] /= math.sqrt(2.0)
    return basis.float().to(device)


def stft_power(wave: torch.Tensor) -> torch.Tensor:
    """``[B, T, N_FREQS]`` power spectrogram of ``[B, N]`` waveforms (zero-padded centred frames, as librosa)."""
    spec = torch.stft(
        wave,
        N_FFT,
        HOP_LENGTH,
        WIN_LENGTH,
        window=_window(str(wave.device)),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spec.abs().pow(2).transpose(1, 2)


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``[B, frames]`` True where a frame belongs to the clip (``lengths`` in samples)."""
    return torch.arange(frames, device=lengths.device)[None, :] < frame_count(lengths)[:, None]


def power_to_db(power: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``10 log10(power)``, floored at 80 dB below the clip's peak over its real frames (librosa's ``top_db``)."""
    db = 10.0 * torch.log10(power.clamp(min=AMIN))
    peak = db.masked_fill(~mask[..., None], -torch.inf).amax(dim=(1, 2), keepdim=True)
    return torch.maximum(db, peak - TOP_DB)


def log_mel(power: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, 128]`` log-mel (dB) from a power spectrogram."""
    return power_to_db(power @ mel_filterbank(str(power.device)), mask)


def mfcc(log_mel_db: torch.Tensor) -> torch.Tensor:
    """``[B, T, 40]`` MFCCs from a log-mel spectrogram in dB."""
    return log_mel_db @ dct_matrix(str(log_mel_db.device))


def log_stft(power: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, 201]`` log STFT magnitude in dB (the magnitude spectrogram of paper 001, log-compressed)."""
    return power_to_db(power, mask)


def normalise(frames: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance mean/variance normalisation of each feature over real frames; padded frames become 0."""
    mean = masked_mean(frames, mask)[:, None]
    var = masked_mean((frames - mean).pow(2), mask)[:, None]
    return (frames - mean) / (var + eps).sqrt() * mask[..., None].to(frames.dtype)


def mean_std(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, 2F]``: mean and standard deviation of each feature over the real frames."""
    mean = masked_mean(frames, mask)
    var = masked_mean((frames - mean[:, None]).pow(2), mask)
    return torch.cat([mean, var.sqrt()], dim=-1)


def deltas(frames: torch.Tensor, width: int = 2) -> torch.Tensor:
    """First-order regression deltas over time (HTK formula, edges repeated): ``[B, T, F]``."""
    padded = F.pad(frames.transpose(1, 2), (width, width), mode="replicate")
    length = frames.shape[1]
    out = sum(
        k * (padded[..., width + k : width + k + length] - padded[..., width - k : width - k + length])
        for k in range(1, width + 1)
    )
    return (out / (2 * sum(k * k for k in range(1, width + 1)))).transpose(1, 2)


# ------------------------------------------------------------------------------------------------- augmentation


def add_noise(wave: torch.Tensor, snr_db: float, generator: torch.Generator) -> torch.Tensor:
    """White noise at ``snr_db`` below the clip's RMS (a silent clip gets a faint floor, not nothing)."""
    rms = wave.pow(2).mean().sqrt().clamp(min=1e-4)
    noise = torch.randn(wave.shape, generator=generator, dtype=wave.dtype)
    return wave + noise * rms / 10.0 ** (snr_db / 20.0)


def time_stretch(wave: torch.Tensor, rate: float, n_fft: int = 512, hop: int = 128) -> torch.Tensor:
    """Phase-vocoder time stretch: ``rate`` > 1 is faster (shorter), pitch unchanged (librosa's algorithm)."""
    window = torch.hann_window(n_fft, dtype=wave.dtype)
    length = wave.shape[0]
    if length < n_fft:
        return wave
    spec = torch.stft(wave, n_fft, hop, window=window, return_complex=True)  # [F, T]
    steps = torch.arange(0, spec.shape[1], rate, dtype=wave.dtype)
    spec = F.pad(spec, (0, 2))
    index = steps.long()
    alpha = (steps - index)[None, :]
    left, right = spec[:, index], spec[:, index + 1]
    magnitude = (1 - alpha) * left.abs() + alpha * right.abs()
    advance = torch.linspace(0, math.pi * hop, spec.shape[0], dtype=wave.dtype)[:, None]
    dphase = right.angle() - left.angle() - advance
    dphase = dphase - 2 * math.pi * torch.round(dphase / (2 * math.pi))
    phase = torch.cat([spec[:, :1].angle(), (dphase + advance)[:, :-1]], dim=1).cumsum(1)
    out = torch.polar(magnitude, phase)
    return torch.istft(out, n_fft, hop, window=window, length=max(int(round(length / rate)), n_fft))


def resample_linear(wave: torch.Tensor, length: int) -> torch.Tensor:
    return F.interpolate(wave[None, None], size=length, mode="linear", align_corners=False)[0, 0]


def pitch_shift(wave: torch.Tensor, semitones: float) -> torch.Tensor:
    """Shift pitch by ``semitones`` keeping the duration: time-stretch by 2^(-n/12), then resample back (librosa's
    recipe; linear resampling, adequate for a few semitones of augmentation)."""
    if wave.shape[0] < 512:
        return wave
    stretched = time_stretch(wave, 2.0 ** (-semitones / 12.0))
    return resample_linear(stretched, wave.shape[0])


@dataclass
class AudioAugment:
    """Training-time waveform perturbation, each applied to a clip with its probability: pitch shift (uniform in
    ±``semitones``), time stretch (rate uniform in 1 ± ``stretch``), additive white noise (SNR uniform in
    ``snr_db``). Paper 003 names pitch shifting; stretch and noise are the issue's additions."""

    p_pitch: float = 0.5
    semitones: float = 2.0
    p_stretch: float = 0.5
    stretch: float = 0.15
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (10.0, 30.0)

    def __call__(self, wave: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One clip ``[N]`` (its real samples only) -> the perturbed clip (its length may change)."""
        u = torch.rand(6, generator=generator).tolist()
        if u[0] < self.p_pitch:
            wave = pitch_shift(wave, (2 * u[1] - 1) * self.semitones)
        if u[2] < self.p_stretch:
            wave = time_stretch(wave, 1.0 + (2 * u[3] - 1) * self.stretch)
        if u[4] < self.p_noise:
            low, high = self.snr_db
            wave = add_noise(wave, low + u[5] * (high - low), generator)
        return wave
