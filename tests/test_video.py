"""Video posts: frames sampled by time and scaled on decode, the soundtrack, the bad-clip corpus (no video / audio
stream, zero-length, corrupt, truncated, variable frame rate, huge resolution, hours long), frames through the
feature cache, the manifest / MOSI Raw / folder adapters, and a tri-modal model trained from clips through the CLI
that then answers for a new clip in ``predict``, the Predictor and the service. Every clip is written here with
PyAV (``tests/clips.py``)."""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")
from clips import brightness, make_clip  # noqa: E402
from conftest import WORDS, TinyModels, invoke  # noqa: E402

from fusent.data import ProblemReport, Sample, load_dataset, load_manifest  # noqa: E402
from fusent.data.audio import load_audio  # noqa: E402
from fusent.data.video import (  # noqa: E402
    VideoFrames,
    VideoLoadError,
    VideoSettings,
    VideoSoundtrack,
    VideoSource,
    probe,
    read_frames,
    read_soundtrack,
    with_video,
)
from fusent.features import FeatureCache, encode_modality  # noqa: E402

SR = 16_000


def levels(frames) -> list[int]:
    return [int(round(np.asarray(f).mean())) for f in frames]


def peak_hz(wave: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(wave))) * SR / len(wave))


# ------------------------------------------------------------------------------------------------ decoding


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mov", ".mkv"])
def test_frames_are_uniform_in_time_and_the_soundtrack_is_mono_16k(tmp_path: Path, suffix: str):
    path = make_clip(tmp_path / f"clip{suffix}", seconds=2.0, fps=10, channels=2, audio_rate=44_100)
    out = read_frames(VideoSource(path), VideoSettings(frames=4))
    assert out.problems == [] and len(out.value) == 4
    assert out.value.times == pytest.approx([0.2, 0.7, 1.2, 1.7], abs=0.01)  # on screen at the 4 slices' centres
    assert levels(out.value) == pytest.approx([brightness(t, 2.0) for t in out.value.times], abs=3)
    sound = read_soundtrack(VideoSource(path), seconds=1.5)
    assert sound.value.dtype == np.float32 and sound.value.shape == (int(1.5 * SR),)  # stopped at 1.5 s
    assert abs(peak_hz(sound.value) - 440) < 3
    whole = read_soundtrack(VideoSource(path), seconds=60).value
    assert 2.0 * SR <= len(whole) < 2.1 * SR  # a shorter clip gives what it has (AAC adds a little priming)
    assert VideoSource(path.read_bytes()).digest() == VideoSource(path).digest()  # bytes and path hash alike


def test_frames_are_scaled_on_decode_and_short_clips_repeat_frames(tmp_path: Path):
    path = make_clip(tmp_path / "wide.mkv", seconds=0.3, fps=10, size=(640, 160), audio=False)
    out = read_frames(VideoSource(path), VideoSettings(frames=5, short_side=32, long_side=96))
    assert [f.size for f in out.value] == [(96, 24)] * 5  # the long side bound wins over the short one
    assert len(set(out.value.times)) == 3  # 3 frames for 5 targets: the nearest are reused
    assert out.value.keyframe() is out.value[2]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_variable_frame_rate_is_sampled_by_time(tmp_path: Path, suffix: str):
    times = [0.0, 0.05, 0.1, 0.15, 2.0, 2.05, 3.9]  # a burst, a 1.85 s freeze, a burst, one late frame
    path = make_clip(tmp_path / f"vfr{suffix}", seconds=4.0, times=times, audio=False)
    out = read_frames(VideoSource(path), VideoSettings(frames=4))  # targets 0.5, 1.5, 2.5, 3.5
    assert out.value.times == pytest.approx([0.15, 0.15, 2.05, 2.05], abs=0.01)  # the frame on screen at each
    assert levels(out.value) == pytest.approx([brightness(t, 4.0) for t in (0.15, 0.15, 2.05, 2.05)], abs=3)


def test_an_hours_long_clip_is_sampled_by_seeking(tmp_path: Path):
    """One hour at one frame every 5 s (720 frames, keyframe every 10): 8 frames spread over the hour, found by
    seeking, in well under a second; nothing in between is converted."""
    times = [5.0 * i for i in range(720)]
    path = make_clip(tmp_path / "hour.mkv", seconds=3600, times=times, size=(16, 16), audio=False, keyframe_every=10)
    start = time.perf_counter()
    out = read_frames(VideoSource(path), VideoSettings(frames=8))
    assert time.perf_counter() - start < 2.0
    expected = [(i + 0.5) * 450 for i in range(8)]
    assert out.value.times == pytest.approx(expected, abs=5.0)
    capped = read_frames(VideoSource(path), VideoSettings(frames=4, max_seconds=600))
    assert capped.notes == ["video_truncated"] and max(capped.value.times) < 600


def test_a_clip_without_a_stated_duration_is_scanned(tmp_path: Path, monkeypatch):
    """Some streamed .webm state no duration: the packets are read (not decoded) to find the end."""
    import fusent.data.video as video

    path = make_clip(tmp_path / "live.webm", seconds=2.0, fps=10, audio=False)
    monkeypatch.setattr(video, "_duration", lambda container, stream: None)
    out = read_frames(VideoSource(path), VideoSettings(frames=4))
    assert out.notes == ["video_duration_scanned"]
    assert out.value.times == pytest.approx([0.2, 0.7, 1.1, 1.6], abs=0.01)  # slices of [0, 1.9]: the last packet


# ------------------------------------------------------------------------------------------------ bad clips


@pytest.fixture(scope="module")
def bad_clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_clips")
    good = make_clip(root / "good.mkv", seconds=2.0, fps=10)
    data = good.read_bytes()
    mp4 = make_clip(root / "good.mp4", seconds=2.0, fps=10).read_bytes()
    clips = {
        "no_video": make_clip(root / "voice.m4a", seconds=1.0, video=False),
        "no_audio": make_clip(root / "silent_film.mp4", seconds=1.0, audio=False),
        "zero_bytes": root / "zero.mp4",
        "no_frames": make_clip(root / "noframes.mkv", seconds=0.0, audio=False),  # a header and nothing else
        "no_frames_mp4": make_clip(root / "noframes.mp4", seconds=0.0, audio_seconds=0.5),  # sound, zero frames
        "garbage": root / "garbage.mp4",
        "truncated_mp4": root / "truncated.mp4",  # index (moov) at the end: cut off, nothing is readable
        "truncated_mkv": root / "truncated.mkv",  # streamable: the first part still decodes
        "huge": make_clip(root / "huge.mkv", seconds=0.2, fps=5, size=(3840, 2160), audio=False),
        "missing": root / "nowhere.mp4",
    }
    clips["zero_bytes"].write_bytes(b"")
    clips["garbage"].write_bytes(b"\x00\x00\x00\x18ftypmp42" + random.Random(3).randbytes(2000))
    clips["truncated_mp4"].write_bytes(mp4[: len(mp4) // 3])
    clips["truncated_mkv"].write_bytes(data[: int(len(data) * 0.6)])
    return clips


@pytest.mark.parametrize(
    "name, frames_kind, sound_kind",
    [
        ("no_video", "no_video_stream", None),
        ("no_audio", None, "no_audio_stream"),
        ("zero_bytes", "corrupt_video", "corrupt_video"),
        ("no_frames", "corrupt_video", "corrupt_video"),
        ("no_frames_mp4", "no_video_stream", None),
        ("garbage", "corrupt_video", "corrupt_video"),
        ("truncated_mp4", "corrupt_video", "corrupt_video"),
        ("missing", "missing_video", "missing_video"),
    ],
)
def test_bad_clips_raise_a_per_clip_error(bad_clips, name: str, frames_kind: str | None, sound_kind: str | None):
    source = VideoSource(bad_clips[name])
    for kind, read in ((frames_kind, lambda: read_frames(source)), (sound_kind, lambda: read_soundtrack(source))):
        if kind is None:
            assert read().value is not None
        else:
            with pytest.raises(VideoLoadError) as info:
                read()
            assert info.value.kind == kind and str(bad_clips[name]) in str(info.value)


def test_a_truncated_stream_keeps_what_decodes(bad_clips):
    out = read_frames(VideoSource(bad_clips["truncated_mkv"]), VideoSettings(frames=4))
    assert len(out.value) == 4 and out.value.times[0] < 0.5  # the start is there; later targets reuse frames
    assert read_soundtrack(VideoSource(bad_clips["truncated_mkv"])).value.size > 0


def test_huge_resolution_is_refused_from_the_header_or_scaled_on_decode(bad_clips):
    source = VideoSource(bad_clips["huge"])
    assert (probe(source).width, probe(source).height) == (3840, 2160)
    with pytest.raises(VideoLoadError, match="3840x2160") as info:
        read_frames(source, VideoSettings(max_pixels=4_000_000))
    assert info.value.kind == "too_large_video"
    out = read_frames(source, VideoSettings(frames=2))
    assert [f.size for f in out.value] == [(569, 320)] * 2  # never a full-size RGB frame


def test_bad_clips_are_reported_per_sample_and_cached(bad_clips, tiny_image_encoder, tmp_path: Path):
    """Through the feature cache a broken clip is one reported problem; the clip with no audio still gives frames,
    the voice note (no video stream) still gives sound; a second run reports the same from the cache."""
    names = ["no_video", "no_audio", "zero_bytes", "garbage", "truncated_mkv"]
    samples = with_video([Sample(id=n, video=bad_clips[n]) for n in names], VideoSettings(frames=3), 1.0)
    assert all(isinstance(s.image, VideoFrames) and isinstance(s.audio, VideoSoundtrack) for s in samples)
    cache = FeatureCache(tmp_path / "cache")
    runs = []
    for _ in range(2):
        report = ProblemReport()
        feats = encode_modality(samples, tiny_image_encoder, cache, report, progress=False)
        runs.append((feats.present.tolist(), dict(report.counts)))
    assert runs[0] == runs[1]
    present, counts = runs[0]
    assert present == [False, True, False, False, True]
    assert counts == {"no_video_stream": 1, "corrupt_video": 2}


# ------------------------------------------------------------------------------------------------ features


def test_frames_are_encoded_per_frame_and_pooled_over_time(tmp_path: Path, tiny_image_encoder, monkeypatch):
    path = make_clip(tmp_path / "a.mp4", seconds=2.0, fps=10)
    image = make_clip(tmp_path / "b.mkv", seconds=0.1, fps=10, audio=False)
    samples = with_video([Sample(id="clip", video=path)], VideoSettings(frames=4))
    samples.append(Sample(id="still", image=read_frames(VideoSource(image)).value[0]))  # a plain image beside
    cache = FeatureCache(tmp_path / "cache")
    feats = encode_modality(samples, tiny_image_encoder, cache, ProblemReport(), progress=False)
    frames = read_frames(VideoSource(path), VideoSettings(frames=4)).value
    _, per_frame = tiny_image_encoder.encode(list(frames))
    clip_states = feats.states[0].float()
    assert clip_states.shape == (4, tiny_image_encoder.dim)  # one state per frame: heads attend over time
    torch.testing.assert_close(clip_states, per_frame.half().float(), atol=2e-3, rtol=0)
    torch.testing.assert_close(feats.pooled[0], per_frame.mean(0), atol=1e-5, rtol=0)
    assert feats.states[1].shape[0] > 1  # the image keeps its patch states

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(VideoFrames, "decode", no_decoding)
    again = encode_modality(samples, tiny_image_encoder, cache, ProblemReport(), progress=False)
    torch.testing.assert_close(again.pooled, feats.pooled)
    other_k = with_video([Sample(id="clip", video=path)], VideoSettings(frames=2))  # another setting, another key
    with pytest.raises(AssertionError, match="decoded although cached"):
        encode_modality(other_k, tiny_image_encoder, cache, ProblemReport(), progress=False)


def test_an_encoder_trained_here_reads_the_middle_frame(tmp_path: Path):
    from fusent.encoders import create_image_encoder
    from fusent.features import encode_items

    encoder = create_image_encoder("inception-sa", device="cpu")
    frames = read_frames(VideoSource(make_clip(tmp_path / "a.mkv", audio=False)), VideoSettings(frames=3)).value
    states, _ = encode_items(encoder, [frames])
    expected, _ = encoder.encode([frames[1]])
    torch.testing.assert_close(states[0], expected[0])


def test_voice_notes_libsndfile_cannot_read_decode_through_pyav(tmp_path: Path):
    note = make_clip(tmp_path / "note.m4a", seconds=1.0, video=False, freq=330)
    for source in (note, note.read_bytes()):
        out = load_audio(source)
        assert abs(len(out.value) - SR) < 0.1 * SR and abs(peak_hz(out.value) - 330) < 3


# ------------------------------------------------------------------------------------------------ adapters


def test_manifest_video_column_is_confined_to_its_folder(tmp_path: Path):
    root = tmp_path / "posts"
    (root / "clips").mkdir(parents=True)
    make_clip(root / "clips" / "a.mp4", seconds=0.5)
    make_clip(tmp_path / "outside.mp4", seconds=0.5)
    (root / "link.mp4").symlink_to(tmp_path / "outside.mp4")
    rows = [
        "id,text,video,label",
        "a,good day,clips/a.mp4,positive",
        f"abs,good day,{root / 'clips' / 'a.mp4'},positive",
        "up,bad day,../outside.mp4,negative",
        f"abs_out,bad day,{tmp_path / 'outside.mp4'},negative",
        "link,bad day,link.mp4,negative",
        "gone,bad day,clips/gone.mp4,negative",
        "only,,clips/a.mp4,",
    ]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    bundle = load_dataset(root)
    videos = {s.id: s.video for s in bundle.labelled + bundle.unlabelled}
    assert videos == {
        "a": root / "clips" / "a.mp4",
        "abs": root / "clips" / "a.mp4",
        "up": None,
        "abs_out": None,
        "link": None,
        "gone": None,
        "only": root / "clips" / "a.mp4",
    }
    assert bundle.report.counts["outside_data_folder"] == 3 and bundle.report.counts["missing_video"] == 1
    assert "no_modality" not in bundle.report.counts  # a clip alone is a post
    assert [s.id for s in bundle.unlabelled] == ["only"]
    jsonl = root / "m.jsonl"
    jsonl.write_text(json.dumps({"id": "j", "video": "clips/a.mp4", "label": "positive"}) + "\n")
    assert load_manifest(jsonl).labelled[0].video == root / "clips" / "a.mp4"


def test_mosi_raw_clips_are_read_with_the_label_table(tmp_path: Path):
    root = tmp_path / "mosi"
    for vid, clip in (("vidA", "1"), ("vidA", "2"), ("vidB", "1")):
        make_clip(root / "Raw" / vid / f"{clip}.mp4", seconds=0.3, fps=5)
    rows = [
        "video_id,clip_id,text,label,mode",
        "vidA,1,good day,2.0,train",
        "vidA,2,,-1.5,train",  # no text: the clip carries the segment
        "vidB,1,bad day,-2.0,valid",
        "vidC,1,bad,-1.0,test",  # no clip: text only, reported
    ]
    (root / "label.csv").write_text("\n".join(rows) + "\n")
    bundle = load_dataset(root)
    assert bundle.task == "regression"
    got = {s.id: (s.video, s.group, s.score) for s in bundle.labelled}
    assert got == {
        "vidA_1": (root / "Raw" / "vidA" / "1.mp4", "vidA", 2.0),
        "vidA_2": (root / "Raw" / "vidA" / "2.mp4", "vidA", -1.5),
        "vidB_1": (root / "Raw" / "vidB" / "1.mp4", "vidB", -2.0),
        "vidC_1": (None, "vidC", -1.0),
    }
    assert dict(bundle.report.counts) == {"missing_video": 1}
    assert bundle.given_split == {"vidA_1": "train", "vidA_2": "train", "vidB_1": "val", "vidC_1": "test"}


# ------------------------------------------------------------------------------------------------ end to end

LABEL_LOOK = {"positive": ((220, 60), 660.0), "negative": ((30, 40), 220.0), "neutral": ((128, 128), 440.0)}


def clip_for(path: Path, label: str, seed: int) -> Path:
    (red, green), freq = LABEL_LOOK[label]
    rng = random.Random(seed)
    return make_clip(path, seconds=1.0, fps=4, size=(32, 32), colour=(red, green), freq=freq * rng.uniform(0.95, 1.05))


@pytest.fixture(scope="module")
def video_run(tmp_path_factory, tiny_models: TinyModels):
    """A manifest of generated clips (frames coloured, soundtrack pitched and captions worded by label; a third
    without captions) trained through the CLI on tiny models: text + frames + soundtrack."""
    root = tmp_path_factory.mktemp("video_posts")
    (root / "clips").mkdir()
    rows = ["id,text,video,label"]
    rng = random.Random(5)
    for k in range(27):
        label = ("positive", "negative", "neutral")[k % 3]
        clip_for(root / "clips" / f"c{k:02d}.mp4", label, k)
        text = " ".join(rng.choice(WORDS[label]) for _ in range(3)) if (k // 3) % 3 != 2 else ""
        rows.append(f"c{k:02d},{text},clips/c{k:02d}.mp4,{label}")
    for k, label in enumerate(("positive", "negative")):
        clip_for(root / "clips" / f"new{k}.webm", label, 100 + k)
        rows.append(f"new{k},,clips/new{k}.webm,")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = root / "run"
    args = [
        "train", "--data", root, "--out", out, "--cache-dir", root / "cache", "--head", "native_combine",
        "--text-model", tiny_models.bert, "--image-model", tiny_models.vit, "--audio-model", "mfcc",
        "--audio-seconds", "1", "--video-frames", "3", "--val-fraction", "0.3",
        "--epochs", "30", "--batch-size", "8", "--lr", "3e-3", "-q",
    ]  # fmt: skip
    root_logger = logging.getLogger()
    handlers, level, env = root_logger.handlers[:], root_logger.level, os.environ.get("TQDM_DISABLE")
    try:
        result = invoke(*args)
    finally:  # the CLI reconfigures logging and sets TQDM_DISABLE with -q (as restore_process_state undoes)
        root_logger.handlers[:], root_logger.level = handlers, level
        os.environ.pop("TQDM_DISABLE", None) if env is None else os.environ.update(TQDM_DISABLE=env)
    assert result.exit_code == 0, result.output
    return root, out, result.output


def test_clips_train_a_trimodal_head_through_the_cli(video_run, restore_process_state):
    root, out, output = video_run
    config = json.loads((out / "checkpoint" / "config.json").read_text())
    assert set(config["dims"]) == {"text", "image", "audio"}
    assert config["video"]["frames"] == 3 and config["asr"] == "off"
    assert config["audio_encoder"]["name"] == "mfcc"
    assert "data problems: empty_text=11\n" in output  # the posts without a caption; every clip decoded
    assert "TEST, n=3" in output
    rows = list(csv.reader((out / "predictions.txt").open()))
    assert rows[1:] == [["new0", "positive"], ["new1", "negative"]]  # no caption: frames and soundtrack alone


def test_the_checkpoint_answers_for_a_new_clip(video_run, tmp_path: Path, restore_process_state):
    """The CLI over a plain folder of clips, the Predictor with a path or bytes, and the service with an upload
    agree; the clip's frames and soundtrack both count."""
    from fusent.predict import Predictor

    root, out, _ = video_run
    folder = tmp_path / "incoming"
    folder.mkdir()
    new = clip_for(folder / "fresh.mov", "negative", 7)
    (folder / "broken.mp4").write_bytes(b"not a clip")
    result = invoke("predict", out / "checkpoint", "--data", folder, "--cache-dir", tmp_path / "c", "-q")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(result.stdout.splitlines()))
    assert rows[0] == ["id", "label"] and sorted(r[0] for r in rows[1:]) == ["broken", "fresh"]

    predictor = Predictor.from_pretrained(out / "checkpoint", use_cache=False, device="cpu")
    by_path = predictor.predict(video=new)
    by_bytes = predictor.predict(video=new.read_bytes())
    assert [r["label"] for r in by_path] == [r["label"] for r in by_bytes]
    assert [r["score"] for r in by_path] == pytest.approx([r["score"] for r in by_bytes], abs=1e-6)
    assert set(by_path.contributions) == {"image", "audio"} and by_path.transcript is None
    assert dict(rows[1:])["fresh"] == by_path.label == "negative"
    with_caption = predictor.predict(text="bad sad", video=new)
    assert set(with_caption.contributions) == {"text", "image", "audio"}

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fusent.serve import ServeSettings, create_app

    settings = ServeSettings(max_upload_bytes=300_000, max_video_seconds=30)
    with TestClient(create_app(predictor, settings)) as client:
        answer = client.post("/predict", files={"video": ("fresh.mov", new.read_bytes(), "video/quicktime")})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["label"] == by_path.label and body["transcript"] is None
        assert body["score"] == pytest.approx(by_path.score, abs=1e-5)


def test_service_refuses_bad_clips_with_clear_errors(video_run, tmp_path: Path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fusent.predict import Predictor
    from fusent.serve import ServeSettings, create_app

    _, out, _ = video_run
    predictor = Predictor.from_pretrained(out / "checkpoint", use_cache=False, device="cpu")
    long_clip = make_clip(tmp_path / "long.mkv", seconds=40, fps=0.5, size=(16, 16), audio=False).read_bytes()
    big = make_clip(tmp_path / "big.mkv", seconds=0.2, fps=5, size=(1280, 720), audio=False).read_bytes()
    small = clip_for(tmp_path / "ok.mp4", "neutral", 1).read_bytes()
    settings = ServeSettings(max_upload_bytes=200_000, max_video_seconds=30, max_image_pixels=500_000)
    cases = [
        ({"video": ("long.mkv", long_clip, "video/x-matroska")}, 413, "too_long_video", "limit 30s"),
        ({"video": ("big.mkv", big, "video/x-matroska")}, 413, "too_large_video", "1280x720"),
        ({"video": ("x.avi", small, "video/x-msvideo")}, 415, "unsupported_media_type", "video/x-msvideo"),
        ({"video": ("bad.mp4", b"\x00" * 500, "video/mp4")}, 422, "corrupt_video", "not a readable video"),
        ({"video": ("huge.mp4", b"\x00" * 300_000, "video/mp4")}, 413, "payload_too_large", "byte limit"),
    ]
    with TestClient(create_app(predictor, settings)) as client:
        for files, status, kind, detail in cases:
            answer = client.post("/predict", files=files)
            assert answer.status_code == status, answer.text
            body = answer.json()
            assert body["error"] == kind and detail in body["detail"], body
        import base64

        ok = client.post("/predict", json={"video": base64.b64encode(small).decode()})
        assert ok.status_code == 200, ok.text
        meta = client.get("/metadata").json()
        assert meta["asr"] == "off" and meta["limits"]["max_video_seconds"] == 30


def test_an_attention_head_attends_over_frames(video_run, tiny_models: TinyModels, tmp_path: Path):
    from fusent.train_flow import EncoderSettings, fit, prepare
    from fusent.training import TrainConfig

    root, _, _ = video_run
    settings = EncoderSettings(
        text_model=str(tiny_models.bert),
        image_model=str(tiny_models.vit),
        audio_model="mfcc",
        audio_seconds=1.0,
        video_frames=3,
        device="cpu",
    )
    prepared = prepare(root, settings, cache_dir=root / "cache", progress=False)  # cached by the CLI run
    assert {s.shape[0] for s in prepared.train.modalities["image"].states} == {3}
    model, result = fit(prepared, "ote", TrainConfig(epochs=2, batch_size=8), progress=False)
    assert result.best_epoch >= 1
