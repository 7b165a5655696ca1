"""Data adapters: text decoding, the MVSA folder layout with broken samples, manifests, the split, and the
problem report that encoding writes (corrupt/truncated images), including through the feature cache."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import MvsaSpec, corrupt_bytes, jpeg_bytes

from fusent.data import (
    MVSA_LABELS,
    ImageLoadError,
    ProblemReport,
    Sample,
    decode_text,
    load_dataset,
    load_image,
    load_manifest,
    load_mvsa,
    stratified_split,
)
from fusent.features import FeatureCache, build_features

# ----------------------------------------------------------------------------------------------- decode_text


@pytest.mark.parametrize(
    ("raw", "text", "fallback"),
    [
        ("café ☕ naïve".encode(), "café ☕ naïve", False),
        (b"caf\xe9 \x93quoted\x94", 'café "quoted"', True),  # cp1252: e-acute and curly quotes (ftfy straightens)
        (b"\xef\xbb\xbfhello world", "hello world", False),  # UTF-8 BOM is dropped
        (b"", "", False),
        (b"  many \n\t spaces  ", "many spaces", False),  # whitespace collapsed
        (b"\x81ok", "\x81ok", True),  # invalid in UTF-8 and cp1252 (0x81 unmapped): latin-1 never fails
    ],
)
def test_decode_text(raw: bytes, text: str, fallback: bool):
    assert decode_text(raw) == (text, fallback)


def test_decode_text_invalid_utf8_never_raises():
    # a UTF-8 lead byte followed by ASCII is invalid UTF-8; cp1252 decodes it
    text, fallback = decode_text(b"good \xc3 day")
    assert fallback is True
    assert text.startswith("good ") and text.endswith(" day") and len(text) == len("good x day")


# -------------------------------------------------------------------------------------------- MVSA adapter


def test_load_mvsa_ids_and_labels(tiny_mvsa: MvsaSpec):
    bundle = load_mvsa(tiny_mvsa.root)
    assert bundle.labels == MVSA_LABELS
    assert {s.id: s.label for s in bundle.labelled} == tiny_mvsa.labels
    assert len(bundle.labelled) == len(tiny_mvsa.labels)  # the duplicate row is not kept twice
    assert [s.id for s in bundle.unlabelled] == tiny_mvsa.unlabelled
    assert all(s.label is None for s in bundle.unlabelled)
    ids = {s.id for s in bundle.labelled + bundle.unlabelled}
    assert tiny_mvsa.unknown_label not in ids
    # the duplicate keeps its first row (positive), not the later "negative" row
    assert next(s for s in bundle.labelled if s.id == tiny_mvsa.duplicate).label == "positive"


def test_load_mvsa_problem_counts_and_messages(tiny_mvsa: MvsaSpec):
    report = load_mvsa(tiny_mvsa.root).report
    assert dict(report.counts) == tiny_mvsa.counts
    assert len(report.messages) == sum(tiny_mvsa.counts.values())
    # each message names the sample and, for file problems, the file
    for guid in tiny_mvsa.missing_image:
        assert any(f"sample {guid}:" in m and f"{guid}.jpg" in m for m in report.messages if "[missing_image]" in m)
    for guid in tiny_mvsa.empty_text:
        assert any(f"sample {guid}:" in m and f"{guid}.txt" in m for m in report.messages if "[empty_text]" in m)
    assert any(tiny_mvsa.unknown_label in m and "'angry'" in m for m in report.messages)
    assert any(tiny_mvsa.duplicate in m for m in report.messages if "[duplicate_id]" in m)
    summary = report.summary()
    assert "missing_image=3" in summary and "unknown_label=1" in summary


def test_load_mvsa_broken_samples_keep_their_other_modality(tiny_mvsa: MvsaSpec):
    bundle = load_mvsa(tiny_mvsa.root)
    by_id = {s.id: s for s in bundle.labelled + bundle.unlabelled}
    assert by_id["noimg01"].image is None and by_id["noimg01"].text
    assert by_id["empty01"].text is None and Path(by_id["empty01"].image).name == "empty01.jpg"
    assert by_id["tnothing01"].text is None and by_id["tnothing01"].image is None
    # corrupt / truncated files exist, so the adapter keeps the path; encoding finds out they are broken
    assert Path(by_id["corrupt01"].image).name == "corrupt01.jpg"
    assert by_id[tiny_mvsa.latin].text == 'café good "quoted"'


def test_load_mvsa_notes_fallback_decoded_texts(tiny_mvsa: MvsaSpec):
    report = load_mvsa(tiny_mvsa.root).report
    assert report.notes["text_decoded_by_fallback"] == 1  # only the latin-1 text
    assert "text_decoded_by_fallback=1" in report.summary()


def _two_pair_mvsa(root: Path, train: bytes, test: bytes) -> Path:
    """Pairs 1 and 2 with the given raw train.txt / test_without_label.txt bytes."""
    (root / "data").mkdir()
    for guid, text in (("1", b"good day"), ("2", b"bad day")):
        (root / "data" / f"{guid}.txt").write_bytes(text)
        (root / "data" / f"{guid}.jpg").write_bytes(jpeg_bytes((9, 9, 9)))
    (root / "train.txt").write_bytes(train)
    (root / "test_without_label.txt").write_bytes(test)
    return root


def test_load_mvsa_windows_line_endings_and_blank_lines(tmp_path: Path):
    bundle = load_mvsa(_two_pair_mvsa(tmp_path, b"guid,tag\r\n1,Positive\r\n\r\n", b"guid,tag\r\n2,null\r\n"))
    assert [(s.id, s.label) for s in bundle.labelled] == [("1", "positive")]  # tags are case-folded
    assert [s.id for s in bundle.unlabelled] == ["2"]
    assert not bundle.report.counts


def test_load_mvsa_guid_files_with_bom(tmp_path: Path):
    bom = b"\xef\xbb\xbf"
    bundle = load_mvsa(_two_pair_mvsa(tmp_path, bom + b"guid,tag\n1,positive\n", bom + b"guid,tag\n2,null\n"))
    assert [s.id for s in bundle.labelled] == ["1"]
    assert [s.id for s in bundle.unlabelled] == ["2"]
    assert dict(bundle.report.counts) == {}


def test_load_dataset_dispatch_and_errors(tiny_mvsa: MvsaSpec, tmp_path: Path):
    assert {s.id for s in load_dataset(tiny_mvsa.root).labelled} == set(tiny_mvsa.labels)
    with pytest.raises(FileNotFoundError, match="is neither a RAVDESS folder .*, an MVSA folder"):
        load_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="no dataset"):
        load_dataset(tmp_path / "nothing.txt")


# ---------------------------------------------------------------------------------------------- load_image


def test_load_image_kinds(tmp_path: Path, tiny_mvsa: MvsaSpec):
    good = load_image(tiny_mvsa.root / "data" / "pos00.jpg")
    assert good.mode == "RGB" and good.size == (40, 36)
    cases = {
        "missing_image": tmp_path / "absent.jpg",
        "corrupt_image": tiny_mvsa.root / "data" / "corrupt01.jpg",
        "truncated_image": tiny_mvsa.root / "data" / "trunc01.jpg",
    }
    for kind, path in cases.items():
        with pytest.raises(ImageLoadError) as info:
            load_image(path)
        assert info.value.kind == kind
        assert path.name in str(info.value)
    with pytest.raises(ImageLoadError) as info:
        load_image(b"")
    assert info.value.kind == "corrupt_image"


# ------------------------------------------------------------------------------ encoding reports + feature cache


class CountingEncoder:
    """Wraps an encoder's ``encode`` to count how many items it really encodes."""

    def __init__(self, encoder, monkeypatch: pytest.MonkeyPatch):
        self.items = 0
        original = encoder.encode

        def encode(items):
            self.items += len(items)
            return original(items)

        monkeypatch.setattr(encoder, "encode", encode)


def test_build_features_reports_broken_images_and_keeps_samples(
    tiny_mvsa: MvsaSpec, tiny_text_encoder, tiny_image_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    bundle = load_mvsa(tiny_mvsa.root)
    samples = bundle.labelled + bundle.unlabelled
    encoders = {"text": tiny_text_encoder, "image": tiny_image_encoder}
    cache = FeatureCache(tmp_path / "cache")
    text_calls = CountingEncoder(tiny_text_encoder, monkeypatch)
    image_calls = CountingEncoder(tiny_image_encoder, monkeypatch)

    first = ProblemReport()
    table = build_features(samples, encoders, cache, first, batch_size=8, progress=False)

    assert table.ids == [s.id for s in samples]  # nothing dropped
    broken = tiny_mvsa.corrupt_image + tiny_mvsa.truncated_image
    assert dict(first.counts) == {"corrupt_image": 2, "truncated_image": 2}
    for kind in ("corrupt_image", "truncated_image"):
        for guid in getattr(tiny_mvsa, kind):
            assert any(m.startswith(f"[{kind}] sample {guid}:") and f"{guid}.jpg" in m for m in first.messages)

    index = {guid: i for i, guid in enumerate(table.ids)}
    image_present = table.modalities["image"].present
    text_present = table.modalities["text"].present
    for guid in broken + tiny_mvsa.missing_image:
        assert not image_present[index[guid]], guid
    for guid in tiny_mvsa.empty_text:
        assert not text_present[index[guid]], guid
    assert text_present[index["corrupt01"]]  # the broken image does not take the text with it
    n_images = sum(s.image is not None for s in samples) - len(broken)
    assert int(image_present.sum()) == n_images
    assert int(text_present.sum()) == sum(s.text is not None for s in samples)
    n_texts = len({s.text for s in samples if s.text is not None})  # a repeated text is encoded once
    assert image_calls.items == n_images and text_calls.items == n_texts < int(text_present.sum())

    # absent rows carry zero features and an all-False mask; present rows are non-zero
    batch = table.batch(torch.arange(len(table)))
    img = batch["image"]
    assert torch.equal(img.present, image_present)
    assert not img.mask[index["corrupt01"]].any() and float(img.pooled[index["corrupt01"]].abs().sum()) == 0.0
    assert int(img.mask[index["pos00"]].sum()) == 17  # tiny ViT: 16 patches + CLS
    assert float(img.pooled[index["pos00"]].abs().sum()) > 0

    # second run through the same cache: nothing re-encoded, the same problems reported again
    second = ProblemReport()
    again = build_features(samples, encoders, cache, second, batch_size=8, progress=False)
    assert image_calls.items == n_images and text_calls.items == n_texts
    assert dict(second.counts) == dict(first.counts)
    assert Counter(m.split(":")[0] for m in second.messages) == Counter(m.split(":")[0] for m in first.messages)
    for name in ("image", "text"):
        a, b = table.modalities[name], again.modalities[name]
        assert torch.equal(a.present, b.present)
        assert torch.equal(a.pooled, b.pooled)
        full = torch.arange(len(table))
        assert torch.equal(a.batch(full).states, b.batch(full).states)


def test_cache_reencodes_only_changed_content(
    tiny_mvsa: MvsaSpec, tiny_text_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = CountingEncoder(tiny_text_encoder, monkeypatch)
    cache = FeatureCache(tmp_path / "cache")
    samples = [Sample(id="a", text="good day"), Sample(id="b", text="bad day")]
    build_features(samples, {"text": tiny_text_encoder}, cache, ProblemReport(), progress=False)
    assert calls.items == 2
    samples[1] = Sample(id="b", text="bad news")
    build_features(samples, {"text": tiny_text_encoder}, cache, ProblemReport(), progress=False)
    assert calls.items == 3


def test_cached_error_names_the_right_file(tiny_image_encoder, tmp_path: Path):
    data = tmp_path / "imgs"
    data.mkdir()
    broken = corrupt_bytes(99)
    (data / "first.jpg").write_bytes(broken)
    (data / "second.jpg").write_bytes(broken)
    report = ProblemReport()
    samples = [Sample(id="one", image=data / "first.jpg"), Sample(id="two", image=data / "second.jpg")]
    cache = FeatureCache(tmp_path / "cache")
    build_features(samples[:1], {"image": tiny_image_encoder}, cache, ProblemReport(), progress=False)
    build_features(samples[1:], {"image": tiny_image_encoder}, cache, report, progress=False)
    assert report.counts["corrupt_image"] == 1
    assert "second.jpg" in report.messages[0]


# ---------------------------------------------------------------------------------------------- manifests


def _write_manifest_images(root: Path) -> None:
    (root / "img").mkdir(parents=True)
    for name, colour in (("a.jpg", (200, 30, 30)), ("b.jpg", (30, 30, 200)), ("d.jpg", (90, 90, 90))):
        (root / "img" / name).write_bytes(jpeg_bytes(colour))


MANIFEST_ROWS = [
    {"id": "a", "text": "good  day", "image": "img/a.jpg", "label": "positive"},
    {"id": "b", "text": "bad day", "image": "img/b.jpg", "label": "negative"},
    {"id": "c", "text": "", "image": "img/missing.jpg", "label": "negative"},
    {"id": "d", "text": "the news", "image": "img/d.jpg", "label": ""},
    {"id": "e", "text": "no image here", "image": "", "label": "neutral"},
]


def _check_manifest_bundle(bundle, root: Path) -> None:
    assert bundle.labels == ["negative", "neutral", "positive"]  # sorted label set of the labelled rows
    assert [s.id for s in bundle.labelled] == ["a", "b", "c", "e"]
    assert [s.id for s in bundle.unlabelled] == ["d"]
    by_id = {s.id: s for s in bundle.labelled + bundle.unlabelled}
    assert by_id["a"].text == "good day" and by_id["a"].label == "positive"
    assert Path(by_id["a"].image) == root / "img" / "a.jpg"  # relative to the manifest's folder
    assert load_image(by_id["a"].image).size == (48, 40)
    assert by_id["c"].text is None and by_id["c"].image is None
    assert by_id["e"].image is None
    assert by_id["d"].label is None
    assert dict(bundle.report.counts) == {"empty_text": 1, "missing_image": 1, "no_modality": 1}
    assert any("missing.jpg" in m for m in bundle.report.messages)


def test_manifest_csv(tmp_path: Path):
    import csv

    _write_manifest_images(tmp_path)
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text", "image", "label"])
        writer.writeheader()
        writer.writerows(MANIFEST_ROWS)
    _check_manifest_bundle(load_manifest(path), tmp_path)
    _check_manifest_bundle(load_dataset(tmp_path), tmp_path)  # folder holding manifest.csv


def test_manifest_jsonl(tmp_path: Path):
    _write_manifest_images(tmp_path)
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in MANIFEST_ROWS) + "\n\n", encoding="utf-8")
    _check_manifest_bundle(load_dataset(path), tmp_path)


def test_manifest_bad_json_line_is_reported(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "text": "good", "label": "positive"}\n{not json\n')
    bundle = load_manifest(path)
    assert [s.id for s in bundle.labelled] == ["a"]
    assert bundle.report.counts["bad_row"] == 1
    assert any("m.jsonl:2" in m for m in bundle.report.messages)


def test_manifest_jsonl_with_bom(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    rows = [{"id": "a", "text": "good", "label": "positive"}, {"id": "b", "text": "bad", "label": "negative"}]
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in rows).encode())
    bundle = load_manifest(path)
    assert [s.id for s in bundle.labelled] == ["a", "b"]
    assert not bundle.report.counts


def test_manifest_without_id_column_raises(tmp_path: Path):
    path = tmp_path / "m.csv"
    path.write_text("post,text,label\n1,good day,positive\n")
    with pytest.raises(ValueError, match="'id' column"):
        load_manifest(path)
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"post": 1, "text": "good day"}\n')
    with pytest.raises(ValueError, match="'id' column"):
        load_manifest(jsonl)


def test_manifest_jsonl_integer_zero_label_and_id(tmp_path: Path):
    rows = [
        {"id": 0, "text": "bad day", "label": 0},
        {"id": 1, "text": "the news", "label": 1},
        {"id": 2, "text": "good day", "label": 2},
        {"id": 3, "text": "awful", "label": 0},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    bundle = load_manifest(path)
    assert bundle.labels == ["0", "1", "2"]
    assert sorted(s.id for s in bundle.labelled) == ["0", "1", "2", "3"]
    assert bundle.unlabelled == []


# ------------------------------------------------------------------------------------------------- the split


def _samples(counts: dict[str, int]) -> list[Sample]:
    return [Sample(id=f"{label}{i}", text="x", label=label) for label, n in counts.items() for i in range(n)]


def test_stratified_split_is_seeded_and_keeps_proportions():
    samples = _samples({"positive": 60, "negative": 30, "neutral": 10})
    train, val = stratified_split(samples, 0.2, seed=5)
    train2, val2 = stratified_split(samples, 0.2, seed=5)
    assert [s.id for s in val] == [s.id for s in val2] and [s.id for s in train] == [s.id for s in train2]
    assert len(val) == 20 and len(train) == 80
    assert {s.id for s in train} | {s.id for s in val} == {s.id for s in samples}
    assert not {s.id for s in train} & {s.id for s in val}
    # 20% of each class: 12 / 6 / 2
    assert Counter(s.label for s in val) == {"positive": 12, "negative": 6, "neutral": 2}
    _, val_other = stratified_split(samples, 0.2, seed=6)
    assert {s.id for s in val_other} != {s.id for s in val}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_rejects_bad_fraction(fraction: float):
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(_samples({"a": 5, "b": 5}), fraction)


# ---------------------------------------------------------------------------------------------- real data


def test_real_mvsa_loads(real_mvsa: Path):
    bundle = load_dataset(real_mvsa)
    assert len(bundle.labelled) == 3199
    assert len(bundle.unlabelled) == 1312
    assert bundle.labels == MVSA_LABELS
    assert Counter(s.label for s in bundle.labelled) == {"positive": 1910, "negative": 954, "neutral": 335}
    assert all(isinstance(s.text, str) and s.text.strip() for s in bundle.labelled)
    assert all(s.image is not None and Path(s.image).suffix == ".jpg" for s in bundle.labelled)
    assert bundle.report.notes["text_decoded_by_fallback"] > 0
    assert len({s.id for s in bundle.labelled + bundle.unlabelled}) == 3199 + 1312
