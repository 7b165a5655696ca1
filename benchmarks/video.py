"""Video and voice posts (issue 16): decode + encode time per clip second, Whisper's real-time factor, and peak
memory on an hour-long clip.

1. Decode + encode, per clip second, on ``--threads`` cores: K frames (``--frames``) sampled from a generated clip
   and encoded by the image encoder (default: the packaged EfficientNet-Lite2), pooled over time; its soundtrack
   (``--audio-seconds``) decoded and encoded by the audio encoder (default: frozen MFCC). Clips: 10 s of 640x360
   and 30 s of 1280x720 at 25 fps (textured, moving frames; AAC stereo 44.1 kHz), and the hour-long clip below.
2. ASR real-time factor: Whisper tiny.en (int8, faster-whisper) on real RAVDESS statements (when the data is
   there) and on a generated soundtrack; transcription seconds / audio seconds, model loading apart.
3. Peak memory: each case decoded in a fresh process (frames + soundtrack, then through the image encoder), peak
   RSS against the same process after its imports; an hour-long clip (32x32 at 1 fps, FLAC soundtrack) against
   the 10-s clip, soundtrack 10 s and "whole clip" (capped at 600 s).

Generated clips go to a temporary folder; nothing is downloaded. Prints the machine load and every figure.

    .venv/bin/python benchmarks/video.py [--threads 2] [--frames 8] [--image-model efficientnet-lite2]
        [--audio-model mfcc] [--audio-seconds 10] [--repeats 3] [--steps 1,2,3] [--ravdess DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's fusent, not whichever one the interpreter has installed
DEFAULT_RAVDESS = ROOT.parent / "shared" / "data" / "ravdess_speech"

from fusent.cost import machine_load  # noqa: E402 - after the path insert above

# ------------------------------------------------------------------------------------------------ clips


def write_clip(
    path: Path, seconds: float, fps: float, size: tuple[int, int], audio: str = "aac", rate: int = 44_100
) -> Path:
    """Textured frames that move (a noise pattern scrolled by time over a gradient: a real encoder's work, unlike a
    flat colour) and a sine + noise soundtrack, generated piece by piece so the generator's memory stays small."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    w, h = size
    pattern = rng.integers(0, 255, (h, w + 256, 3), dtype=np.uint8)
    gradient = np.linspace(0, 120, w, dtype=np.float32)[None, :, None]
    out = av.open(str(path), "w")
    vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.options = {"preset": "veryfast"}
    channels = 1 if audio == "flac" else 2
    aus = out.add_stream(audio, rate=rate)
    aus.layout = "mono" if channels == 1 else "stereo"
    step = aus.codec_context.frame_size or 4096
    sample_fmt = "s16" if audio == "flac" else "fltp"
    n_frames, n_samples, done = int(seconds * fps), int(seconds * rate), 0
    for i in range(n_frames):
        shift = int(i * 4) % 256
        pixels = (pattern[:, shift : shift + w].astype(np.float32) * 0.5 + gradient).clip(0, 255).astype(np.uint8)
        for packet in vs.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
            out.mux(packet)
        until = min(n_samples, int((i + 1) / fps * rate))  # interleave: audio up to this frame's time
        while done < until:
            t = (np.arange(done, min(done + step, n_samples)) / rate).astype(np.float64)
            wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(len(t))
            data = np.repeat(wave[None, :], channels, 0).astype(np.float32)
            if sample_fmt == "s16":
                data = (data * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=sample_fmt, layout=aus.layout.name)
            frame.sample_rate, frame.pts = rate, done
            for packet in aus.encode(frame):
                out.mux(packet)
            done += len(t)
    for stream in (vs, aus):
        for packet in stream.encode():
            out.mux(packet)
    out.close()
    return path


# ------------------------------------------------------------------------------------------------ 1. speed


def speed(clips: dict[str, tuple[Path, float]], args: argparse.Namespace) -> None:
    import torch

    from fusent.data.video import VideoSettings, VideoSource, read_frames, read_soundtrack
    from fusent.encoders import create_audio_encoder, create_image_encoder
    from fusent.features import encode_items

    image = create_image_encoder(args.image_model, device="cpu")
    sound = create_audio_encoder(args.audio_model, device="cpu", max_seconds=args.audio_seconds)
    settings = VideoSettings(frames=args.frames)
    print(f"\n1. decode + encode ({args.frames} frames through {args.image_model}, {args.audio_seconds:g} s of "
          f"soundtrack through {args.audio_model}; {torch.get_num_threads()} torch threads; median of "
          f"{args.repeats})")  # fmt: skip
    head = ("clip", "frames", "sound", "image enc", "audio enc", "total", "per clip s")
    print("{:<26} {:>9} {:>9} {:>10} {:>10} {:>9} {:>11}".format(*head))
    first = read_frames(VideoSource(next(iter(clips.values()))[0]), settings).value
    encode_items(image, [first])  # warm-up: kernel selection and allocator set-up are not per clip
    for name, (path, seconds) in clips.items():
        times: dict[str, list[float]] = {"frames": [], "sound": [], "image": [], "audio": []}
        for _ in range(args.repeats):
            source = VideoSource(path)
            t0 = time.perf_counter()
            frames = read_frames(source, settings).value
            t1 = time.perf_counter()
            wave = read_soundtrack(source, args.audio_seconds).value
            t2 = time.perf_counter()
            encode_items(image, [frames])
            t3 = time.perf_counter()
            sound.encode([wave])
            t4 = time.perf_counter()
            for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[key].append(value)
        med = {k: statistics.median(v) for k, v in times.items()}
        total = sum(med.values())
        cells = " ".join(f"{1000 * med[k]:>8.0f}ms" if k in ("frames", "sound") else f"{1000 * med[k]:>9.0f}ms"
                         for k in times)  # fmt: skip
        print(f"{name:<26} {cells} {1000 * total:>7.0f}ms {1000 * total / seconds:>9.1f}ms")


# ------------------------------------------------------------------------------------------------ 2. ASR


def asr_speed(clip: Path, args: argparse.Namespace) -> None:
    from fusent.asr import Transcriber
    from fusent.data.audio import load_audio
    from fusent.data.video import VideoSource, read_soundtrack

    try:
        transcriber = Transcriber(threads=args.threads)
    except ModuleNotFoundError as exc:
        print(f"\n2. ASR skipped: {exc}")
        return
    t0 = time.perf_counter()
    transcriber.transcribe(read_soundtrack(VideoSource(clip), 1.0).value)  # loads the model (and warms it)
    took = time.perf_counter() - t0
    print(f"\n2. ASR: Whisper tiny.en int8, {args.threads} threads; model load + first call {took:.1f}s")
    inputs = []
    files = sorted(args.ravdess.glob("Actor_01/*.flac"))[:4] if args.ravdess.is_dir() else []
    inputs += [(f.name, load_audio(f).value) for f in files]
    inputs.append((f"{clip.name} (sine+noise, 10 s)", read_soundtrack(VideoSource(clip), 10.0).value))
    speech_audio = speech_time = 0.0
    for name, wave in inputs:
        t0 = time.perf_counter()
        text = transcriber.transcribe(wave)
        took, seconds = time.perf_counter() - t0, len(wave) / 16_000
        if name.endswith(".flac"):
            speech_audio, speech_time = speech_audio + seconds, speech_time + took
        print(f"  {name:<34} {seconds:5.2f}s audio  {took:5.2f}s  RTF {took / seconds:.2f}  {text!r}")
    if speech_audio:
        print(f"  RAVDESS speech: RTF {speech_time / speech_audio:.2f} ({speech_time:.2f}s for {speech_audio:.2f}s)")
    else:
        print(f"  no RAVDESS speech at {args.ravdess}: RTF above is on a generated soundtrack only")


# ------------------------------------------------------------------------------------------------ 3. memory


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> None:
    """Start the peak RSS (VmHWM) afresh, so imports and model loading do not count (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """One memory case, in its own process: RSS after imports and model load, then the peak while decoding (and
    encoding, with --encode)."""
    import torch

    from fusent.data.video import VideoSettings, VideoSource, read_frames, read_soundtrack

    torch.set_num_threads(args.threads)
    image = None
    if args.encode:
        from fusent.encoders import create_image_encoder
        from fusent.features import encode_items

        image = create_image_encoder(args.image_model, device="cpu")
    base = rss_mb()
    reset_peak()
    t0 = time.perf_counter()
    source = VideoSource(args.child)
    frames = read_frames(source, VideoSettings(frames=args.frames))
    wave = read_soundtrack(source, args.audio_seconds or 600.0).value
    if image is not None:
        encode_items(image, [frames.value])
    seconds = time.perf_counter() - t0
    peak = peak_mb()
    result = {"base_mb": base, "peak_mb": peak, "seconds": seconds, "sound_s": len(wave) / 16_000}
    result["notes"] = frames.notes
    print(json.dumps(result))


def memory(clips: dict[str, tuple[Path, float]], args: argparse.Namespace) -> None:
    print(f"\n3. peak RSS, one fresh process per case ({args.frames} frames; 'base' = after imports / model load)")
    print("{:<26} {:>10} {:>7} {:>8} {:>8} {:>10} {:>7}".format("clip", "soundtrack", "encode", "base", "peak",
                                                                  "peak-base", "time"))  # fmt: skip
    for name, (path, _) in clips.items():
        for audio_seconds, encode in ((args.audio_seconds, False), (0.0, False), (args.audio_seconds, True)):
            cmd = [sys.executable, __file__, "--child", str(path), "--frames", str(args.frames)]
            cmd += ["--threads", str(args.threads), "--audio-seconds", str(audio_seconds)]
            cmd += ["--image-model", args.image_model] + (["--encode"] if encode else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            track = f"{r['sound_s']:.0f}s" + (" (whole)" if not audio_seconds else "")
            mb = f"{r['base_mb']:>6.0f}MB {r['peak_mb']:>6.0f}MB {r['peak_mb'] - r['base_mb']:>8.0f}MB"
            print(f"{name:<26} {track:>10} {'yes' if encode else 'no':>7} {mb} {r['seconds']:>6.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch / Whisper threads (the target: 2 cores)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-model", default="efficientnet-lite2")
    parser.add_argument("--audio-model", default="mfcc")
    parser.add_argument("--audio-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hour-seconds", type=float, default=3600.0, help="length of the long generated clip")
    parser.add_argument("--steps", default="1,2,3", help="which of the three parts to run")
    parser.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS)
    parser.add_argument("--keep", type=Path, default=None, help="write the generated clips here (reused if there)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--encode", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.child:
        return child(args)
    import torch

    torch.set_num_threads(args.threads)
    print(machine_load())
    folder = args.keep or Path(tempfile.mkdtemp(prefix="fusent-video-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    specs = {
        "10 s 640x360 25 fps": ("c10.mp4", dict(seconds=10, fps=25, size=(640, 360))),
        "30 s 1280x720 25 fps": ("c30.mp4", dict(seconds=30, fps=25, size=(1280, 720))),
        f"{args.hour_seconds / 3600:g} h 32x32 1 fps": (
            "hour.mkv",
            dict(seconds=args.hour_seconds, fps=1, size=(32, 32), audio="flac", rate=16_000),
        ),
    }
    clips = {}
    for name, (file, spec) in specs.items():
        path = folder / file
        if not path.exists():
            t0 = time.perf_counter()
            write_clip(path, **spec)
            print(f"generated {name}: {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s")
        clips[name] = (path, float(spec["seconds"]))
    steps = {int(s) for s in args.steps.split(",")}
    if 1 in steps:
        speed(clips, args)
    if 2 in steps:
        asr_speed(clips["10 s 640x360 25 fps"][0], args)
    if 3 in steps:
        memory({k: v for k, v in clips.items() if not k.startswith("30 s")}, args)
    print("\n" + machine_load())


if __name__ == "__main__":
    main()
