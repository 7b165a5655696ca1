"""Audio loading: any wav/flac/ogg/mp3 to a mono 16 kHz float32 waveform, with bad files reported, never raised past
the sample.

Unusable input (missing, empty, undecodable, zero samples) raises ``AudioLoadError`` so the sample goes on through
its other modalities. Usable but suspicious input (silent, clipped, non-finite samples) is decoded and its problems
travel with the waveform; conversions (stereo mixed down, another rate resampled) are counted as notes.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from .loading import IN_MEMORY, Decoded, LoadError

SAMPLE_RATE = 16_000
#: File suffixes read as audio when a folder of files is given (soundfile reads the first four; mp3 needs libsndfile
#: >= 1.1; m4a / aac / opus voice notes are decoded by PyAV, the video extra).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".oga")
#: A clip whose peak stays below this level (-60 dBFS) is reported as silent.
SILENT_PEAK = 1e-3
#: A clip with more than this fraction of samples at full scale (|x| >= CLIP_LEVEL) is reported as clipped.
CLIP_LEVEL, CLIP_FRACTION = 0.999, 1e-3
#: Decoded past ``max_seconds``, so resampling the crop gives the samples resampling the whole clip would.
RESAMPLE_MARGIN_S = 0.1


class AudioLoadError(LoadError):
    """An audio file that cannot be used (kind missing_audio / corrupt_audio / empty_audio)."""


def _open(source: Path | str | bytes) -> tuple[Path | io.BytesIO, str]:
    """What soundfile reads (the file itself, so only the frames asked for are decoded) and the name messages use."""
    if isinstance(source, bytes):
        if not source:
            raise AudioLoadError("corrupt_audio", "audio file is empty (0 bytes)")
        return io.BytesIO(source), IN_MEMORY
    name = str(source)
    try:
        if Path(source).stat().st_size == 0:
            raise AudioLoadError("corrupt_audio", "audio file is empty (0 bytes)", name)
    except FileNotFoundError:
        raise AudioLoadError("missing_audio", "audio file not found", name) from None
    except OSError as exc:
        raise AudioLoadError("missing_audio", f"audio file unreadable ({exc.strerror})", name) from None
    return Path(source), name


def _decode(source: Path | io.BytesIO, name: str, seconds: float | None) -> tuple[np.ndarray, int]:
    """``[frames, channels]`` float32 and the file's rate: soundfile first, librosa (audioread) for what it can't.

    With ``seconds``, only the first ``seconds`` (plus a margin for the resampler's filter) are decoded: an hour of
    silence compresses to under a megabyte of FLAC, and decoding it whole took 2.4 GB.
    """
    try:
        with sf.SoundFile(source) as fh:
            rate = int(fh.samplerate)
            frames = -1 if seconds is None else math.ceil((seconds + RESAMPLE_MARGIN_S) * rate)
            return fh.read(frames, dtype="float32", always_2d=True), rate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        first = getattr(error, "error_string", None) or error  # libsndfile's reason, without "Error opening <object>"
        try:  # m4a / AAC / opus voice notes: FFmpeg through PyAV (the video extra), when installed
            from .video import decode_audio_file

            raw = source.getvalue() if isinstance(source, io.BytesIO) else Path(source).read_bytes()
            return decode_audio_file(raw, name)[:, None], SAMPLE_RATE
        except (ModuleNotFoundError, LoadError):
            pass
        if name == IN_MEMORY:  # audioread needs a file on disk; bytes soundfile cannot read are not audio we know
            raise AudioLoadError("corrupt_audio", f"not a readable audio file ({first})", name) from None
        try:
            import librosa

            duration = None if seconds is None else seconds + RESAMPLE_MARGIN_S
            with warnings.catch_warnings():  # its "PySoundFile failed, trying audioread" is what we already know
                warnings.simplefilter("ignore")
                data, rate = librosa.load(name, sr=None, mono=False, duration=duration)
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
    source: Path | str | bytes | np.ndarray | tuple[np.ndarray, int],
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
) -> Decoded[np.ndarray]:
    """Decode ``source`` to a mono float32 waveform at ``sample_rate`` (``Decoded.value``, shape ``[samples]``).

    ``source`` is a file path, the file's bytes, a ``(array, rate)`` pair, or an array already at ``sample_rate``
    (``[samples]`` or ``[samples, channels]``, soundfile's layout). Channels are averaged; other rates are resampled
    with librosa (soxr). ``max_seconds`` keeps the first seconds only, and a file is decoded only that far (what an
    encoder reads; its ``max_seconds``). Raises ``AudioLoadError`` (missing_audio / corrupt_audio / empty_audio) for
    unusable input.
    """
    name, rate = "<in-memory array>", sample_rate
    if isinstance(source, tuple):
        array, rate = _as_float(source[0]), int(source[1])
    elif isinstance(source, np.ndarray):
        array = _as_float(source)
    else:
        opened, name = _open(source)
        array, rate = _decode(opened, name, max_seconds)
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
    if max_seconds:
        out.value = out.value[: int(max_seconds * sample_rate)]
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
