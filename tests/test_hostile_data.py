"""The bad-input corpus (tests/badinputs.py) against the data layer: images, audio and manifests that used to crash,
eat memory or read outside the dataset each end in a per-sample problem or a one-line error naming the fix."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import badinputs as bad
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from fusent.data import ImageLoadError, load_audio, load_dataset, load_image, load_manifest, split_labelled
from fusent.data.audio import SAMPLE_RATE
from fusent.encoders.image import resize_center_crop

# ------------------------------------------------------------------------------------------- item 2: images


@pytest.mark.parametrize("make", [bad.tall_png, bad.very_tall_png, bad.wide_png])
def test_elongated_images_are_refused_per_sample(make):
    with pytest.raises(ImageLoadError) as info:
        load_image(make())
    assert info.value.kind == "elongated_image"
    assert "aspect ratio" in str(info.value) and "<bytes>" not in str(info.value)


def test_elongated_in_memory_image_is_refused_too():
    with pytest.raises(ImageLoadError, match="aspect ratio"):
        load_image(Image.new("RGB", (1, 8000)))


def test_resize_center_crop_work_is_bounded_by_the_output(monkeypatch):
    """A long strip within the aspect limit is cropped as it is resized: no image bigger than the output is built
    (resizing the whole 20 x 900 strip first built 260 x 11700 pixels)."""
    built: list[tuple[int, int]] = []
    real_resize = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        built.append(tuple(size))
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    out = resize_center_crop(Image.new("RGB", (20, 900), (10, 200, 30)), 260)
    assert out.size == (260, 260)
    assert max(w * h for w, h in built) <= 260 * 260, built


def test_resize_center_crop_gives_the_pixels_it_gave_before():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    for size in (16, 64, 260):
        scale = size / min(img.size)
        w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        full = img.resize((w, h), Image.Resampling.BILINEAR)
        left, top = (w - size) // 2, (h - size) // 2
        old = np.asarray(full.crop((left, top, left + size, top + size)), dtype=int)
        assert np.abs(np.asarray(resize_center_crop(img, size), dtype=int) - old).max() <= 1


# -------------------------------------------------------------------------------------------- item 3: audio


def test_long_flac_reads_only_the_frames_it_needs(tmp_path: Path):
    path = bad.write_long_flac(tmp_path / "long.flac", 180)  # three minutes; the was an hour
    assert path.stat().st_size < 2_000_000
    frames_read: list[int] = []
    real_read = sf.SoundFile.read

    def counting_read(self, frames=-1, *args, **kwargs):
        out = real_read(self, frames, *args, **kwargs)
        frames_read.append(len(out))
        return out

    with mock.patch.object(sf.SoundFile, "read", counting_read):
        wave = load_audio(path, max_seconds=2.0).value
    assert wave.shape == (2 * SAMPLE_RATE,)
    assert sum(frames_read) <= 3 * SAMPLE_RATE, frames_read  # 2 s and a margin, not 180 s


def test_cropped_read_matches_decoding_everything(tmp_path: Path):
    wave = bad.tone(3.0, sr=44_100) + 0.05 * np.random.default_rng(0).standard_normal(3 * 44_100).astype(np.float32)
    path = tmp_path / "a.flac"
    sf.write(path, np.stack([wave, -wave], 1), 44_100, format="FLAC")
    whole = load_audio(path).value[:SAMPLE_RATE]
    cropped = load_audio(path, max_seconds=1.0)
    assert cropped.value.shape == (SAMPLE_RATE,)
    assert cropped.notes == ["audio_downmixed_to_mono", "audio_resampled"]
    np.testing.assert_allclose(cropped.value, whole, atol=1e-4)
    from_bytes = load_audio(path.read_bytes(), max_seconds=1.0).value
    np.testing.assert_array_equal(from_bytes, cropped.value)


def test_silent_and_clipped_corpus_audio_is_decoded_with_its_problems():
    assert [k for k, _ in load_audio(bad.silent_wav()).problems] == ["silent_audio"]
    assert [k for k, _ in load_audio(bad.clipped_wav()).problems] == ["clipped_audio"]


# ---------------------------------------------------------------------------------------- item 4: manifests


def test_csv_field_over_128kb_is_a_reported_row(tmp_path: Path):
    bundle = load_manifest(bad.long_field_csv(tmp_path))
    assert sorted(s.id for s in bundle.labelled) == ["1", "3"]
    assert bundle.report.counts["bad_row"] == 1
    (message,) = [m for m in bundle.report.messages if "bad_row" in m]
    assert "long_field.csv:3" in message and "131,072" in message


def test_cp1252_csv_falls_back_per_line(tmp_path: Path):
    bundle = load_manifest(bad.cp1252_csv(tmp_path))
    by_id = {s.id: s for s in bundle.labelled}
    assert by_id["1"].text == "café \u201cgood\u201d"  # decoded by fallback
    assert bundle.report.notes["csv_line_decoded_by_fallback"] == 1
    assert not bundle.report.counts


def test_jsonl_lines_that_are_not_objects_are_reported(tmp_path: Path):
    bundle = load_manifest(bad.non_object_jsonl(tmp_path))
    assert sorted(s.id for s in bundle.labelled) == ["1", "3"]
    assert bundle.report.counts["bad_row"] == 3
    assert any("mixed.jsonl:2" in m and "not a JSON object" in m for m in bundle.report.messages)
    first = load_manifest(bad.first_line_not_object_jsonl(tmp_path))
    assert [s.id for s in first.labelled] == ["1"] and first.report.counts["bad_row"] == 1


def test_cp1252_jsonl_and_a_json_array(tmp_path: Path):
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_bytes('{"id": "1", "text": "café", "label": "positive"}\n'.encode("cp1252"))
    assert load_manifest(jsonl).labelled[0].text == "café"
    array = tmp_path / "m.json"
    array.write_text(json.dumps([{"id": "1", "text": "good", "label": "positive"}], indent=2))
    assert [s.id for s in load_dataset(array).labelled] == ["1"]
    (tmp_path / "obj.json").write_text('{"id": "1"}')
    with pytest.raises(ValueError, match=r"obj\.json.*list of objects"):
        load_dataset(tmp_path / "obj.json")


# ------------------------------------------------------------------------------------------- item 5: labels


def test_labels_are_normalised_for_case_and_whitespace(tmp_path: Path):
    bundle = load_manifest(bad.cased_labels_csv(tmp_path))
    assert bundle.labels == ["angry", "negative", "neutral", "positive"]  # one class per label, however spelled
    assert {s.label for s in bundle.labelled} == set(bundle.labels)


def test_given_labels_keep_their_order_and_report_the_rest(tmp_path: Path):
    bundle = load_manifest(bad.cased_labels_csv(tmp_path), labels=["Positive", "Negative", "Neutral"])
    assert bundle.labels == ["Positive", "Negative", "Neutral"]  # as given, spelling included
    assert len(bundle.labelled) == 12 and {s.label for s in bundle.labelled} == set(bundle.labels)
    assert bundle.report.counts == {"unknown_label": 1}
    assert any("'angry'" in m for m in bundle.report.messages)


def test_labels_that_clash_after_normalising_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="positive"):
        load_manifest(bad.cased_labels_csv(tmp_path), labels=["positive", "Positive "])


def test_a_one_row_class_is_a_clear_error_not_a_sklearn_traceback(tmp_path: Path):
    bundle = load_manifest(bad.cased_labels_csv(tmp_path))
    with pytest.raises(ValueError, match=r"'angry' has 1 labelled row.*--labels"):
        split_labelled(bundle)


def test_labels_on_a_regression_table_are_refused(tiny_mosi):
    with pytest.raises(ValueError, match="--labels"):
        load_dataset(tiny_mosi.root, labels=["a", "b"])


# --------------------------------------------------------------------------------------- item 10: confinement


def test_manifest_paths_stay_inside_its_folder(tmp_path: Path):
    path = bad.traversal_manifest(tmp_path / "data")
    outside = tmp_path / "outside.png"
    outside.write_bytes(bad.png_bytes(4, 4))
    bundle = load_manifest(path)
    by_id = {s.id: s for s in bundle.labelled}
    assert by_id["1"].image == path.parent / "images" / "ok.png"
    assert all(by_id[i].image is None for i in ("2", "3", "4"))
    assert bundle.report.counts["outside_data_folder"] == 3
    assert any("--allow-outside" in m and "etc/passwd" in m for m in bundle.report.messages)
    allowed = {s.id: s for s in load_manifest(path, allow_outside=True).labelled}
    assert allowed["4"].image is not None and allowed["3"].image == Path("/etc/passwd")
    assert load_dataset(path.parent, allow_outside=True).report.counts.get("outside_data_folder") is None


def test_mvsa_guids_cannot_name_files_outside_data(tmp_path: Path):
    root = tmp_path / "mvsa"
    (root / "data").mkdir(parents=True)
    (root / "data" / "1.txt").write_text("good")
    (tmp_path / "secret.txt").write_text("do not read")
    (root / "train.txt").write_text("guid,tag\n1,positive\n../../secret,negative\n")
    bundle = load_dataset(root)
    assert [s.id for s in bundle.labelled] == ["1"]
    assert bundle.report.counts["outside_data_folder"] == 1
