"""Tiny video clips written with PyAV for the tests and benchmarks/video.py: synthetic frames whose brightness
encodes their time (so a test can tell which frames were sampled) and a sine soundtrack, in any container."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

#: video codec and audio codec per container (what the FFmpeg in PyAV's wheels can write)
CODECS = {
    ".mp4": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("libx264", "libopus"),
    ".webm": ("libvpx", "libopus"),
    ".m4a": (None, "aac"),
}


def brightness(t: float, seconds: float) -> int:
    """The grey level of the frame shown at time ``t`` of a ``seconds``-long clip: 0 at the start, 250 at the end."""
    return int(round(250 * t / max(seconds, 1e-9)))


def make_clip(
    path: Path,
    seconds: float = 2.0,
    fps: float = 10,
    size: tuple[int, int] = (64, 48),
    *,
    video: bool = True,
    audio: bool = True,
    freq: float = 440.0,
    audio_rate: int = 16_000,
    audio_seconds: float | None = None,
    channels: int = 1,
    colour: tuple[int, int, int] | None = None,
    times: list[float] | None = None,
    keyframe_every: int | None = None,
    wave: np.ndarray | None = None,
) -> Path:
    """Write a clip: frames at ``fps`` (or at the given ``times``: variable frame rate), grey by time unless a
    ``colour`` is given (then that colour, with the time in the blue channel); a ``freq`` Hz sine soundtrack of
    ``audio_seconds`` (default: the clip's length), or the given mono ``wave`` at ``audio_rate``."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vcodec, acodec = CODECS[path.suffix.lower()]
    out = av.open(str(path), "w")
    try:
        if video:
            vs = out.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1000))
            vs.width, vs.height = size
            vs.pix_fmt = "yuv420p"
            vs.time_base = Fraction(1, 1000)
            vs.codec_context.time_base = Fraction(1, 1000)  # millisecond timestamps survive (variable frame rate)
            if vcodec == "libx264":
                vs.options = {"preset": "ultrafast", **({"g": str(keyframe_every)} if keyframe_every else {})}
        if audio:
            rate = 48_000 if acodec == "libopus" and wave is None else audio_rate
            aus = out.add_stream(acodec, rate=rate)
            aus.layout = "stereo" if channels == 2 else "mono"
        out.start_encoding()  # the header is written even when no frame follows (a zero-length clip)
        if video:
            stamps = times if times is not None else [i / fps for i in range(int(round(seconds * fps)))]
            for t in stamps:
                level = brightness(t, seconds)
                if colour is None:
                    pixels = np.full((size[1], size[0], 3), level, np.uint8)
                else:
                    pixels = np.empty((size[1], size[0], 3), np.uint8)
                    pixels[...] = (colour[0], colour[1], level)
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
                for packet in vs.encode(frame):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
        if audio:
            if wave is None:
                n = int((seconds if audio_seconds is None else audio_seconds) * rate)
                wave = (0.3 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)
            n = len(wave)
            step = aus.codec_context.frame_size or 1024
            for start in range(0, n, step):
                piece = wave[start : start + step]
                data = np.repeat(piece[None, :], channels, 0) if channels > 1 else piece[None, :]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=aus.layout.name)
                frame.sample_rate, frame.pts = rate, start
                for packet in aus.encode(frame):
                    out.mux(packet)
            for packet in aus.encode():
                out.mux(packet)
    finally:
        out.close()
    return path
