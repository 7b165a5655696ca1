"""Audio loading: any wav/flac/ogg/mp3 to a mono 16 kHz float32 waveform, with bad files reported, never raised past
the sample.

Unusable input (missing, empty, undecodable, zero samples) raises ``AudioLoadError`` so the sample goes on through
its other modalities. Usable but suspicious input (silent, clipped, non-finite samples) is decoded and its problems
travel with the waveform; conversions (stereo mixed down, another rate resampled) are counted as notes.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from .loading import Decoded, LoadError

SAMPLE_RATE = 16_000
#: File suffixes read as audio when a folder of files is given (soundfile reads the first four; mp3 needs libsndfile
#: >= 1.1; m4a / aac / opus voice notes are decoded by PyAV, the video extra).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".oga")
#: A clip whose peak stays below this level (-60 dBFS) is reported as silent.
SILENT_PEAK = 1e-3
#: A clip with more than this fraction of samples at full scale (|x| >= CLIP_LEVEL) is reported as clipped.
CLIP_LEVEL, CLIP_FRACTION = 0.999, 1e-3


class AudioLoadError(LoadError):
    """An audio file that cannot be used (kind missing_audio / corrupt_audio / empty_audio)."""


def _read_bytes(source: Path | str | bytes) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, "<bytes>"
    name = str(source)
    try:
        return Path(source).read_bytes(), name
    except FileNotFoundError:
        raise AudioLoadError("missing_audio", "audio file not found", name) from None
    except OSError as exc:
        raise AudioLoadError("missing_audio", f"audio file unreadable ({exc.strerror})", name) from None


def _decode(raw: bytes, name: str) -> tuple[np.ndarray, int]:
    """``[frames, channels]`` float32 and the file's rate: soundfile first, librosa (audioread) for what it can't."""
    try:
        data, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
        return data, int(rate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as first:
        try:  # m4a / AAC / opus voice notes: FFmpeg through PyAV (the video extra), when installed
            from .video import decode_audio_file

            return decode_audio_file(raw, name)[:, None], SAMPLE_RATE
        except (ModuleNotFoundError, LoadError):
            pass
        if name == "<bytes>":  # audioread needs a file on disk; bytes soundfile cannot read are not audio we know
            raise AudioLoadError("corrupt_audio", f"not a readable audio file ({first})", name) from None
        try:
            import librosa

            with warnings.catch_warnings():  # its "PySoundFile failed, trying audioread" is what we already know
                warnings.simplefilter("ignore")
                data, rate = librosa.load(name, sr=None, mono=False)
        except Exception as exc:  # audioread raises its own zoo (NoBackendError, DecodeError, EOFError, ...)
            raise AudioLoadError(
                "corrupt_audio", f"not a readable audio file ({first}; librosa: {type(exc).__name__})", name
            ) from None
        return np.atleast_2d(data).T.astype(np.float32), int(rate)


def _as_float(array: np.ndarray) -> np.ndarray:
    """Integer PCM scaled to [-1, 1]; ``[frames]`` or ``[frames, channels]`` kept as ``[frames, channels]``."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    array = array.astype(np.float32, copy=False)
    return array[:, None] if array.ndim == 1 else array


def load_audio(
    source: Path | str | bytes | np.ndarray | tuple[np.ndarray, int], sample_rate: int = SAMPLE_RATE
) -> Decoded[np.ndarray]:
    """Decode ``source`` to a mono float32 waveform at ``sample_rate`` (``Decoded.value``, shape ``[samples]``).

    ``source`` is a file path, the file's bytes, a ``(array, rate)`` pair, or an array already at ``sample_rate``
    (``[samples]`` or ``[samples, channels]``, soundfile's layout). Channels are averaged; other rates are resampled
    with librosa (soxr). Raises ``AudioLoadError`` (missing_audio / corrupt_audio / empty_audio) for unusable input.
    """
    name, rate = "<in-memory array>", sample_rate
    if isinstance(source, tuple):
        array, rate = _as_float(source[0]), int(source[1])
    elif isinstance(source, np.ndarray):
        array = _as_float(source)
    else:
        raw, name = _read_bytes(source)
        if not raw:
            raise AudioLoadError("corrupt_audio", "audio file is empty (0 bytes)", name)
        array, rate = _decode(raw, name)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise AudioLoadError("empty_audio", "audio has no samples", name)
    out: Decoded[np.ndarray] = Decoded(array[:, 0])
    if array.shape[1] > 1:
        out.value = array.mean(axis=1)
        out.notes.append("audio_downmixed_to_mono")
    if not np.isfinite(out.value).all():
        bad = int((~np.isfinite(out.value)).sum())
        out.value = np.nan_to_num(out.value, nan=0.0, posinf=1.0, neginf=-1.0)
        out.problems.append(("nonfinite_audio", f"{bad} NaN/inf samples set to 0/±1"))
    if rate != sample_rate:
        if rate <= 0:
            raise AudioLoadError("corrupt_audio", f"invalid sample rate {rate}", name)
        import librosa

        out.value = librosa.resample(out.value, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
        out.notes.append("audio_resampled")
        if out.value.size == 0:
            raise AudioLoadError("empty_audio", f"audio too short to resample from {rate} Hz", name)
    out.value = np.ascontiguousarray(out.value, dtype=np.float32)
    peak = float(np.abs(out.value).max())
    if peak < SILENT_PEAK:
        level = "digital silence" if peak == 0 else f"peak {20 * np.log10(peak):.0f} dBFS"
        out.problems.append(("silent_audio", f"audio is silent ({level}); used as is"))
    clipped = float((np.abs(out.value) >= CLIP_LEVEL).mean())
    if clipped > CLIP_FRACTION:
        out.problems.append(("clipped_audio", f"{clipped:.1%} of samples at full scale; used as is"))
    return out


def fit_length(wave: np.ndarray, samples: int, pad: bool = False) -> np.ndarray:
    """Crop to the first ``samples`` samples; with ``pad``, zero-pad shorter clips to exactly that length."""
    if wave.shape[0] >= samples:
        return wave[:samples]
    return np.pad(wave, (0, samples - wave.shape[0])) if pad else wave


def chunk(wave: np.ndarray, samples: int) -> list[np.ndarray]:
    """Consecutive pieces of at most ``samples`` samples (the last may be shorter; a short clip is one piece)."""
    return [wave[i : i + samples] for i in range(0, max(wave.shape[0], 1), samples)]


def is_audio_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES
