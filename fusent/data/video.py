"""Video clips (.mp4, .webm, .mov, .mkv) as posts: K frames for the image encoder and the soundtrack for the audio
encoder, decoded with PyAV (the ``video`` extra; its wheels bundle FFmpeg) and bounded in time and memory.

A sample's ``video`` becomes two lazy inputs (``with_video``): ``VideoFrames`` on the image side and
``VideoSoundtrack`` on the audio side. Nothing is opened until the feature cache misses, so a cached dataset of
clips costs one hash per file. Decoding reads only what it keeps:

- frames: the frame on screen at K times spread uniformly over the clip (the centres of K equal slices, so a
  variable frame rate is sampled by time, not by frame count); far targets are reached by seeking, near ones by
  decoding on; each kept
  frame is scaled down while it is converted to RGB, so no full-size RGB frame exists; a stream over
  ``max_pixels`` is refused from its header, before any frame is decoded;
- soundtrack: mono 16 kHz, decoded from the start and stopped after ``seconds``.

Unusable clips raise ``VideoLoadError`` (a ``LoadError``: the sample goes on without that side): corrupt_video,
empty_video, no_video_stream, no_audio_stream, too_large_video, missing_video.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..options import DEFAULT_VIDEO_FRAMES
from .audio import SAMPLE_RATE, load_audio
from .images import MAX_IMAGE_PIXELS
from .loading import Decoded, LoadError
from .records import ProblemReport, Sample

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".m4v")
#: Frames are scaled on decode so the shorter side is at most this (image encoders read 224-260 px squares).
FRAME_SHORT_SIDE = 320
#: ... and the longer side at most this (a 10000 x 100 banner must not survive as a 32000 x 320 frame).
FRAME_LONG_SIDE = 1280
#: Frames are sampled from the first this many seconds of a clip; longer clips are noted ``video_truncated``.
MAX_VIDEO_SECONDS = 4 * 3600.0
#: A soundtrack asked for "whole clip" (``--audio-seconds 0``) still stops here: 10 minutes are 38 MB of float32.
MAX_SOUNDTRACK_SECONDS = 600.0
#: Seek to a target further ahead than this many seconds; decode on to nearer ones (a seek costs a GOP decode).
SEEK_AHEAD_SECONDS = 2.0
#: Decoder threads per clip (each holds frames in flight: more threads, more memory for little gain at K frames).
DECODE_THREADS = 2
_HASH_CHUNK = 1 << 20


class VideoLoadError(LoadError):
    """A clip that cannot give frames or a soundtrack (kind corrupt_video / empty_video / no_video_stream /
    no_audio_stream / too_large_video / missing_video)."""


def _av() -> Any:
    try:
        import av
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "video clips need PyAV, from the video extra: pip install 'fusent[video]'", name="av"
        ) from None
    return av


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoSettings:
    """How a clip becomes inputs; saved in checkpoints so prediction samples clips as training did."""

    frames: int = DEFAULT_VIDEO_FRAMES
    short_side: int = FRAME_SHORT_SIDE
    long_side: int = FRAME_LONG_SIDE
    max_pixels: int = MAX_IMAGE_PIXELS
    max_seconds: float = MAX_VIDEO_SECONDS

    def __post_init__(self) -> None:
        if not 1 <= self.frames <= 256:
            raise ValueError(f"video frames must be between 1 and 256, got {self.frames}")
        if self.short_side < 16 or self.long_side < self.short_side:
            raise ValueError(f"frame sides must satisfy 16 <= short_side <= long_side, got {self}")

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> VideoSettings:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (config or {}).items() if k in fields})


class VideoSource:
    """A clip on disk or in memory, hashed once (streamed in 1 MB pieces: a clip is never read whole to hash it)."""

    def __init__(self, source: str | Path | bytes | bytearray | memoryview):
        if isinstance(source, bytearray | memoryview):
            source = bytes(source)
        self.source: Path | bytes = source if isinstance(source, bytes) else Path(source)
        self.name = "<bytes>" if isinstance(source, bytes) else str(source)
        self._digest: str | None = None

    def digest(self) -> str:
        """sha256 of the file's bytes; OSError when it cannot be read."""
        if self._digest is None:
            h = hashlib.sha256()
            if isinstance(self.source, bytes):
                h.update(self.source)
            else:
                with self.source.open("rb") as fh:
                    while piece := fh.read(_HASH_CHUNK):
                        h.update(piece)
            self._digest = h.hexdigest()
        return self._digest

    def open(self) -> Any:
        """The PyAV input container; VideoLoadError (missing / empty / corrupt) when it cannot be opened."""
        av = _av()
        if isinstance(self.source, Path):
            try:
                size = self.source.stat().st_size
            except FileNotFoundError:
                raise VideoLoadError("missing_video", "video file not found", self.name) from None
            except OSError as exc:
                raise VideoLoadError("missing_video", f"video file unreadable ({exc.strerror})", self.name) from None
            if size == 0:
                raise VideoLoadError("corrupt_video", "video file is empty (0 bytes)", self.name)
            target: Any = str(self.source)
        else:
            if not self.source:
                raise VideoLoadError("corrupt_video", "video is empty (0 bytes)", self.name)
            target = io.BytesIO(self.source)
        try:
            return av.open(target, "r", metadata_errors="ignore")
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise VideoLoadError(
                "corrupt_video", f"not a readable video container ({_reason(exc)})", self.name
            ) from None

    def __str__(self) -> str:
        return self.name


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class Frames(list):
    """The frames kept from one clip (RGB PIL images) and their times in seconds. The feature cache encodes each
    frame and pools over time (see ``features.encode_items``)."""

    def __init__(self, images: Sequence[Image.Image], times: Sequence[float]):
        super().__init__(images)
        self.times = list(times)

    def keyframe(self) -> Image.Image:
        """The middle frame: what an encoder that reads one image per sample (trained here) gets."""
        return self[len(self) // 2]


@dataclass(frozen=True, eq=False)
class VideoFrames:
    """The image-side input of a clip: decoded (``decode``) only when the feature cache misses."""

    source: VideoSource
    settings: VideoSettings = VideoSettings()

    def content_key(self) -> bytes:
        """What the features depend on: the clip's bytes and how frames are sampled."""
        return f"video-frames:{self.source.digest()}:{dataclasses.astuple(self.settings)}".encode()

    def decode(self) -> Decoded[Frames]:
        return read_frames(self.source, self.settings)

    def __str__(self) -> str:
        return self.source.name


@dataclass(frozen=True, eq=False)
class VideoSoundtrack:
    """The audio-side input of a clip: its first ``seconds`` (None: up to ``MAX_SOUNDTRACK_SECONDS``)."""

    source: VideoSource
    seconds: float | None = None

    def content_key(self) -> bytes:
        return f"video-soundtrack:{self.source.digest()}:{self.limit()}".encode()

    def limit(self) -> float:
        return min(self.seconds or MAX_SOUNDTRACK_SECONDS, MAX_SOUNDTRACK_SECONDS)

    def decode(self) -> Decoded[np.ndarray]:
        return read_soundtrack(self.source, self.limit())

    def __str__(self) -> str:
        return self.source.name


#: The lazy inputs a clip gives; the feature cache decodes them with ``.decode()`` and keys them by ``content_key``.
VideoPart = VideoFrames | VideoSoundtrack


# ------------------------------------------------------------------------------------------------ probing


@dataclass
class VideoInfo:
    """What a container's header says, read without decoding a frame."""

    duration: float | None  # seconds; None when the container does not say
    width: int
    height: int
    has_video: bool
    has_audio: bool


def _duration(container: Any, stream: Any | None) -> float | None:
    if stream is not None and stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def probe(source: VideoSource) -> VideoInfo:
    """Streams, size and duration from the header; VideoLoadError when the container cannot be opened."""
    with source.open() as container:
        video = container.streams.video[0] if container.streams.video else None
        width = video.codec_context.width if video is not None else 0
        height = video.codec_context.height if video is not None else 0
        return VideoInfo(_duration(container, video), width, height, video is not None, bool(container.streams.audio))


# ------------------------------------------------------------------------------------------------ frames


def frame_size(width: int, height: int, short_side: int, long_side: int) -> tuple[int, int]:
    """The decoded frame's size: scaled down (never up) so both sides fit, the aspect ratio kept, at least 1 px."""
    scale = min(1.0, short_side / max(min(width, height), 1), long_side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def frame_targets(duration: float, frames: int) -> list[float]:
    """The centres of ``frames`` equal slices of ``[0, duration]``: uniform, and never the very first / last frame
    (often black or a fade)."""
    return [(i + 0.5) * duration / frames for i in range(frames)]


def _decoded(container: Any, stream: Any, start: float) -> Iterator[tuple[float, Any]]:
    """``(time from the stream start, frame)`` from the container's current position. A decode error after some
    frames ends the stream (a truncated file); frames without a timestamp are timed by the nominal rate."""
    av = _av()
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    count = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                t = frame.time - start if frame.time is not None else count / rate
                count += 1
                yield t, frame
    except av.FFmpegError as exc:
        raise _Truncated(_reason(exc)) from None


class _Truncated(Exception):
    """The stream broke off mid-way (decoding stopped with frames possibly kept)."""


def _last_time(container: Any, stream: Any, limit: float) -> float | None:
    """The time of the last video packet (up to ``limit`` s), by demuxing without decoding: for containers that do
    not state a duration (some streamed .webm)."""
    av = _av()
    last = None
    try:
        for packet in container.demux(stream):
            if packet.pts is not None and packet.time_base is not None:
                last = float(packet.pts * packet.time_base)
                if last > limit:
                    break
    except av.FFmpegError:
        pass
    return last


def read_frames(source: VideoSource, settings: VideoSettings = VideoSettings()) -> Decoded[Frames]:
    """``settings.frames`` RGB frames spread uniformly in time over the clip (its first ``max_seconds``), each
    scaled on decode. Fewer distinct frames than asked (a 3-frame clip asked for 8) repeat the nearest ones, so
    every clip gives exactly K frames."""
    av = _av()
    out: Decoded[Frames] = Decoded(Frames([], []))
    with source.open() as container:
        stream, start, duration = _video_span(container, settings, source.name, out.notes)
        tb = stream.time_base
        targets = frame_targets(max(duration, 0.0), settings.frames)
        images: list[Image.Image] = []
        times: list[float] = []
        frames = _decoded(container, stream, start)
        current: tuple[float, Any] | None = None  # (time, frame) on screen at the target: the last one not after it
        ahead: tuple[float, Any] | None = None  # the first frame decoded past the target, kept for the next one
        kept: Any = None  # the frame converted last (a frame on screen at several targets is converted once)
        ended = False
        try:
            for target in targets:
                if ahead is not None and ahead[0] <= target:
                    current, ahead = ahead, None
                if ahead is None and not ended:
                    if target - (current[0] if current else 0.0) > SEEK_AHEAD_SECONDS and tb:
                        frames.close()
                        container.seek(int((target + start) / tb), stream=stream, backward=True, any_frame=False)
                        frames = _decoded(container, stream, start)
                    for item in frames:
                        if item[0] > target:
                            ahead = item
                            break
                        current = item
                    else:
                        ended = True  # later targets are past the end: the last frame stays on screen
                chosen = current if current is not None else ahead  # ahead: a clip whose first frame starts late
                if chosen is None:
                    break
                if chosen[1] is not kept:
                    kept = chosen[1]
                    images.append(_to_image(kept, settings, source.name))
                else:
                    images.append(images[-1])
                times.append(chosen[0])
        except _Truncated as exc:
            if not images:
                raise VideoLoadError("corrupt_video", f"cannot decode the video stream ({exc})", source.name) from None
            out.problems.append(("truncated_video", f"decoding stopped after {len(images)} frames ({exc})"))
        except av.FFmpegError as exc:  # a seek or conversion the file refuses
            if not images:
                raise VideoLoadError(
                    "corrupt_video", f"cannot decode the video stream ({_reason(exc)})", source.name
                ) from None
            out.problems.append(("truncated_video", f"decoding stopped after {len(images)} frames ({_reason(exc)})"))
        finally:
            frames.close()
    if not images:
        raise VideoLoadError("empty_video", "the video stream has no frames", source.name)
    while len(images) < settings.frames:  # the stream ended early: repeat the last frame kept
        images.append(images[-1])
        times.append(times[-1])
    out.value = Frames(images, times)
    return out


def _video_span(container: Any, settings: VideoSettings, name: str, notes: list[str]) -> tuple[Any, float, float]:
    """The clip's video stream (checked against the frame-size limit, decoding threads set), its start time and the
    seconds to sample from (its duration, scanned when the header lacks it, capped at ``max_seconds``)."""
    if not container.streams.video:
        raise VideoLoadError("no_video_stream", "the file has no video stream", name)
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx.width * ctx.height > settings.max_pixels:
        raise VideoLoadError(
            "too_large_video", f"video is {ctx.width}x{ctx.height} pixels (limit {settings.max_pixels:,} a frame)", name
        )
    stream.thread_type = "AUTO"  # frame + slice threads; FFmpeg's frames in flight grow with their number
    stream.codec_context.thread_count = min(DECODE_THREADS, os.cpu_count() or 1)
    tb = stream.time_base
    start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
    duration = _duration(container, stream)
    if duration is None:
        duration = _last_time(container, stream, settings.max_seconds)
        container.seek(0)
        if duration is None:
            raise VideoLoadError("empty_video", "the video stream has no frames", name)
        notes.append("video_duration_scanned")
    if duration > settings.max_seconds:
        notes.append("video_truncated")
        duration = settings.max_seconds
    return stream, start, duration


def _to_image(frame: Any, settings: VideoSettings, name: str) -> Image.Image:
    if frame.width * frame.height > settings.max_pixels:  # a stream whose frames grew past the header's size
        raise VideoLoadError("too_large_video", f"a frame is {frame.width}x{frame.height} pixels", name)
    width, height = frame_size(frame.width, frame.height, settings.short_side, settings.long_side)
    return frame.to_image(width=width, height=height)


# ------------------------------------------------------------------------------------------------ soundtrack


def read_soundtrack(source: VideoSource, seconds: float = MAX_SOUNDTRACK_SECONDS) -> Decoded[np.ndarray]:
    """The first ``seconds`` of the clip's first audio stream as mono 16 kHz float32, with the audio loader's
    checks (silent, clipped, non-finite). A stream that breaks off keeps what was decoded (``truncated_audio``)."""
    wave, problems = _soundtrack(source, seconds)
    decoded = load_audio(wave)  # already mono 16 kHz: only the checks run
    decoded.problems = problems + decoded.problems
    return decoded


def decode_audio_file(raw: bytes, name: str) -> np.ndarray:
    """A voice note libsndfile cannot read (m4a / AAC, opus in webm or mp4, ...) as mono 16 kHz float32 (its first
    ``MAX_SOUNDTRACK_SECONDS``); ``VideoLoadError`` (or ModuleNotFoundError without PyAV) otherwise."""
    source = VideoSource(raw)
    source.name = name
    return _soundtrack(source, MAX_SOUNDTRACK_SECONDS)[0]


def _soundtrack(source: VideoSource, seconds: float) -> tuple[np.ndarray, list[tuple[str, str]]]:
    av = _av()
    limit = max(1, int(seconds * SAMPLE_RATE))
    # filled in place: a large buffer's untouched pages cost no memory, and no list of pieces is concatenated
    wave = np.empty(limit, dtype=np.float32)
    have = 0
    problems: list[tuple[str, str]] = []
    with source.open() as container:
        if not container.streams.audio:
            raise VideoLoadError("no_audio_stream", "the file has no audio stream", source.name)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

        def take(frames: Sequence[Any]) -> None:
            nonlocal have
            for f in frames:
                piece = f.to_ndarray().reshape(-1)[: limit - have]
                wave[have : have + piece.shape[0]] = piece
                have += piece.shape[0]

        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    take(resampler.resample(frame))
                if have >= limit:
                    break
            else:
                take(resampler.resample(None))  # the resampler's buffered tail
        except av.FFmpegError as exc:
            if not have:
                raise VideoLoadError(
                    "corrupt_video", f"cannot decode the audio stream ({_reason(exc)})", source.name
                ) from None
            problems.append(("truncated_audio", f"audio decoding stopped after {have / SAMPLE_RATE:.1f}s"))
    if not have:
        raise VideoLoadError("empty_audio", "the audio stream has no samples", source.name)
    return wave[:have], problems


# ------------------------------------------------------------------------------------------------ samples


def with_video(
    samples: Sequence[Sample], settings: VideoSettings | None = None, audio_seconds: float | None = None
) -> list[Sample]:
    """Samples whose ``video`` fills the image side (K frames) and the audio side (the soundtrack) where those are
    empty; lazy: nothing is opened here. A sample without a video is returned as it is."""
    settings = settings or VideoSettings()
    out = []
    for s in samples:
        if s.video is None or isinstance(s.image, VideoFrames) or isinstance(s.audio, VideoSoundtrack):
            out.append(s)
            continue
        source = VideoSource(s.video)
        image = s.image if s.image is not None else VideoFrames(source, settings)
        audio = s.audio if s.audio is not None else VideoSoundtrack(source, audio_seconds)
        out.append(dataclasses.replace(s, image=image, audio=audio))
    return out


def soundtrack_of(sample: Sample, seconds: float | None) -> Any:
    """What a transcript is made from: the sample's audio (a voice note), else its clip's soundtrack (``seconds``
    long), else None."""
    if isinstance(sample.audio, VideoSoundtrack):
        return dataclasses.replace(sample.audio, seconds=seconds)
    if sample.audio is not None:
        return sample.audio
    if sample.video is not None:
        return VideoSoundtrack(VideoSource(sample.video), seconds)
    return None


def resolve_video(cell: Any, base: Path, sample_id: str, report: ProblemReport, confine: bool = True) -> Path | None:
    """A manifest's ``video`` cell as a path inside ``base`` (relative ones from the manifest's folder). A path that
    leaves the folder (``../``, an absolute path elsewhere, a symlink out) or a missing file is reported and the
    sample goes on without it."""
    if cell is None or not str(cell).strip():
        return None
    path = Path(str(cell).strip())
    path = path if path.is_absolute() else base / path
    if confine and not path.resolve().is_relative_to(base.resolve()):
        message = f"video path {cell} leaves the manifest's folder {base}; not read (--allow-outside reads anywhere)"
        report.add("outside_data_folder", sample_id, message)
        return None
    if not path.is_file():
        report.add("missing_video", sample_id, f"video file not found: {path}")
        return None
    return path


def describe_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown length"
    return f"{seconds:,.1f}s"
