"""Memotion 7k adapter: a tiny generated folder with every kind of broken row, dispatch from load_dataset, the
prediction format, and (when the real dataset is next to the repo) the real files."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from fusent.data import (
    MEMOTION_LABELS,
    ImageLoadError,
    load_dataset,
    load_image,
    load_memotion,
)
from fusent.data.memotion import MEMOTION_PREDICTION_HEADER, MEMOTION_SENTIMENTS
from fusent.train_flow import write_predictions

REAL_MEMOTION = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "memotion_7k"
HEADER = "image_name,text_ocr,text_corrected,humour,sarcasm,offensive,motivational,overall_sentiment"
TAGS = "funny,general,not_offensive,not_motivational"  # the four Task B/C columns, unused here
# PIL warns (UserWarning) when converting a palette PNG whose tRNS chunk holds per-entry alpha; the RGB result is fine
PALETTE_WARNING = "ignore:Palette images with Transparency:UserWarning"


def _save(path: Path, img: Image.Image, fmt: str, **kw) -> None:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    path.write_bytes(buf.getvalue())


@pytest.fixture
def tiny_memotion(tmp_path: Path) -> Path:
    root = tmp_path / "memotion_tiny"
    images = root / "images"
    images.mkdir(parents=True)
    rgb = Image.new("RGB", (12, 10), (200, 30, 30))
    _save(images / "image_1.jpg", rgb, "JPEG")
    palette = Image.new("P", (12, 10), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    palette.putpixel((3, 3), 1)
    _save(images / "image_2.png", palette, "PNG", transparency=bytes([0, 128, 255]))  # per-entry alpha (tRNS)
    _save(images / "image_3.PNG", Image.new("RGBA", (12, 10), (10, 200, 10, 0)), "PNG")
    _save(images / "image_4.bmp", rgb, "BMP")
    for name in ("image_5.jpg", "image_6.jpeg", "image_7.jpg", "image_9.jpg", "image_10.jpg"):
        _save(images / name, rgb, "JPEG")
    for name in ("image_11.jpg", "image_12.jpg", "image_14.jpg"):  # image_12.JPG in the CSV: case differs
        _save(images / name, rgb, "JPEG")
    # image_8.jpg and image_13.jpg are missing on purpose

    labelled = [
        HEADER,
        f"image_1.jpg,ocr one,corrected one,{TAGS},very_positive",
        f"image_2.png,ocr two,corrected two,{TAGS},positive",
        f"image_3.PNG,ocr three,corrected three,{TAGS},neutral",
        f"image_4.bmp,ocr four,corrected four,{TAGS},negative",
        f'image_5.jpg,"ocr, five","five, with a comma\nand a “quoted” line break",{TAGS},very_negative',
        f"image_6.jpeg,only the ocr text,,{TAGS},Very_Positive",  # empty text_corrected -> text_ocr
        f"image_7.jpg,,,{TAGS},neutral",  # no text at all
        f"image_8.jpg,ocr eight,corrected eight,{TAGS},negative",  # image file missing
        f"image_9.jpg,ocr nine,corrected nine,{TAGS},hilarious",  # not a sentiment
        f"image_1.jpg,again,duplicate of image_1,{TAGS},negative",  # duplicate id: the first row is kept
        f"image_10.jpg,ocr ten,nan,{TAGS},neutral",  # pandas NaN written as 'nan' -> text_ocr
    ]
    raw = "\n".join(labelled).encode() + f"\nimage_11.jpg,ocr,caf\xe9,{TAGS},positive\n".encode("latin-1")
    (root / "labels.csv").write_bytes(b"\xef\xbb\xbf" + raw)  # a BOM, and one latin-1 line
    unlabelled = [
        "image_name,text_ocr,text_corrected",
        "image_12.JPG,ocr twelve,corrected twelve",
        "image_13.jpg,ocr thirteen,corrected thirteen",  # image missing: still predicted, from its text
        "image_14.jpg,ocr,fourteen,an,unquoted,comma",  # too many fields: kept (image only)
        ",orphan text,no image name",  # no id: reported, skipped
        "image_11.jpg,ocr eleven,corrected eleven",  # an id may be both labelled and asked
    ]
    (root / "test_without_label.csv").write_text("\r\n".join(unlabelled) + "\r\n")
    return root


def test_memotion_labelled_rows(tiny_memotion: Path):
    bundle = load_memotion(tiny_memotion)
    assert bundle.labels == MEMOTION_LABELS == ["negative", "neutral", "positive"]
    assert bundle.name == "memotion_tiny"
    assert {s.id: s.label for s in bundle.labelled} == {
        "image_1.jpg": "positive",  # very_positive
        "image_2.png": "positive",
        "image_3.PNG": "neutral",
        "image_4.bmp": "negative",
        "image_5.jpg": "negative",  # very_negative
        "image_6.jpeg": "positive",  # Very_Positive: case does not matter
        "image_7.jpg": "neutral",
        "image_8.jpg": "negative",
        "image_10.jpg": "neutral",
        "image_11.jpg": "positive",
    }
    by_id = {s.id: s for s in bundle.labelled}
    assert [s.id for s in bundle.labelled][:2] == ["image_1.jpg", "image_2.png"]  # file order kept
    assert by_id["image_1.jpg"].text == "corrected one"  # the first of the duplicate rows
    assert by_id["image_5.jpg"].text == 'five, with a comma and a "quoted" line break'
    assert by_id["image_6.jpeg"].text == "only the ocr text"
    assert by_id["image_10.jpg"].text == "ocr ten"
    assert by_id["image_11.jpg"].text == "café"  # the latin-1 line
    assert by_id["image_7.jpg"].text is None
    assert by_id["image_8.jpg"].image is None
    assert by_id["image_3.PNG"].image == tiny_memotion / "images" / "image_3.PNG"


def test_memotion_unlabelled_rows(tiny_memotion: Path):
    bundle = load_memotion(tiny_memotion)
    assert [s.id for s in bundle.unlabelled] == ["image_12.JPG", "image_13.jpg", "image_14.jpg", "image_11.jpg"]
    by_id = {s.id: s for s in bundle.unlabelled}
    assert all(s.label is None for s in bundle.unlabelled)
    assert by_id["image_12.JPG"].image == tiny_memotion / "images" / "image_12.jpg"  # found case-insensitively
    assert by_id["image_13.jpg"].image is None and by_id["image_13.jpg"].text == "corrected thirteen"
    assert by_id["image_14.jpg"].text is None and by_id["image_14.jpg"].image is not None


def test_memotion_problem_report(tiny_memotion: Path):
    report = load_memotion(tiny_memotion).report
    assert report.counts == Counter(
        duplicate_id=1,  # image_1.jpg
        unknown_label=1,  # hilarious
        missing_image=2,  # image_8.jpg, image_13.jpg
        empty_text=2,  # image_7.jpg, the malformed image_14.jpg
        bad_row=2,  # too many fields, no image_name
    )
    assert report.notes == Counter(text_from_ocr=2, csv_line_decoded_by_fallback=1, image_name_case_mismatch=1)
    assert any("hilarious" in m for m in report.messages)


def test_memotion_five_class_labels_kept_when_asked(tiny_memotion: Path):
    bundle = load_memotion(tiny_memotion, labels=MEMOTION_SENTIMENTS)
    labels = {s.id: s.label for s in bundle.labelled}
    assert labels["image_1.jpg"] == "very_positive" and labels["image_5.jpg"] == "very_negative"
    assert labels["image_2.png"] == "positive"


def test_load_dataset_dispatches_to_memotion(tiny_memotion: Path, tmp_path: Path):
    bundle = load_dataset(tiny_memotion)
    direct = load_memotion(tiny_memotion)
    assert [s.id for s in bundle.labelled] == [s.id for s in direct.labelled]
    assert [s.id for s in bundle.unlabelled] == [s.id for s in direct.unlabelled]
    assert bundle.prediction_header == MEMOTION_PREDICTION_HEADER == "image_name,overall_sentiment"
    # a predict-only copy (no labels.csv) is still recognised
    (tiny_memotion / "labels.csv").unlink()
    only_test = load_dataset(tiny_memotion, labels=MEMOTION_LABELS)
    assert not only_test.labelled and len(only_test.unlabelled) == 4


def test_memotion_predictions_use_the_readme_format(tiny_memotion: Path, tmp_path: Path):
    bundle = load_memotion(tiny_memotion)
    out = tmp_path / "pred.csv"
    ids = [s.id for s in bundle.unlabelled]
    write_predictions(out, ids, ["neutral"] * len(ids), header=bundle.prediction_header)
    rows = list(csv.reader(out.open(newline="")))
    assert rows[0] == ["image_name", "overall_sentiment"]
    assert [r[0] for r in rows[1:]] == ["image_12.JPG", "image_13.jpg", "image_14.jpg", "image_11.jpg"]


@pytest.mark.filterwarnings(PALETTE_WARNING)
def test_memotion_images_decode_to_rgb(tiny_memotion: Path):
    bundle = load_memotion(tiny_memotion)
    images = [s.image for s in bundle.labelled + bundle.unlabelled if s.image is not None]
    assert {p.suffix for p in images} >= {".png", ".PNG", ".bmp", ".jpg", ".jpeg"}
    with Image.open(tiny_memotion / "images" / "image_2.png") as img:
        assert img.mode == "P" and "transparency" in img.info  # the palette PNG really is one
    for path in images:
        img = load_image(path)
        assert img.mode == "RGB" and img.size == (12, 10)


def test_memotion_bad_header_is_an_error(tmp_path: Path):
    (tmp_path / "labels.csv").write_text("name,text\nimage_1.jpg,hello\n")
    with pytest.raises(ValueError, match="image_name, overall_sentiment"):
        load_memotion(tmp_path)


def test_memotion_empty_files(tmp_path: Path):
    (tmp_path / "labels.csv").write_bytes(b"")
    (tmp_path / "test_without_label.csv").write_bytes(b"image_name,text_ocr,text_corrected\n\n")
    bundle = load_dataset(tmp_path)
    assert not bundle.labelled and not bundle.unlabelled and not bundle.report.counts


# ------------------------------------------------------------------------------------------------- real data

needs_real = pytest.mark.skipif(not REAL_MEMOTION.is_dir(), reason=f"real Memotion 7k not found at {REAL_MEMOTION}")


@pytest.fixture(scope="module")
def real_bundle():
    return load_dataset(REAL_MEMOTION)


@needs_real
def test_real_memotion_counts(real_bundle):
    b = real_bundle
    assert b.labels == MEMOTION_LABELS
    assert b.prediction_header == "image_name,overall_sentiment"
    assert len(b.labelled) == 5594  # README: labels.csv has 5,594 labelled memes
    assert len(b.unlabelled) == 1398  # README: test_without_label.csv has 1,398
    dist = Counter(s.label for s in b.labelled)
    assert set(dist) == set(MEMOTION_LABELS)
    assert dist["positive"] > dist["neutral"] > dist["negative"] > 0
    assert dist["negative"] / len(b.labelled) < 0.10  # README: negative is under 10%
    # the data is clean apart from a handful of memes without any text
    assert set(b.report.counts) <= {"empty_text"} and b.report.counts["empty_text"] < 20
    assert all(s.image is not None for s in b.labelled + b.unlabelled)


@needs_real
def test_real_memotion_every_test_id_kept(real_bundle):
    with (REAL_MEMOTION / "test_without_label.csv").open(encoding="utf-8-sig", newline="") as fh:
        expected = [row["image_name"] for row in csv.DictReader(fh)]
    assert [s.id for s in real_bundle.unlabelled] == expected


@needs_real
@pytest.mark.filterwarnings(PALETTE_WARNING)
def test_real_memotion_images_decode(real_bundle):
    samples = real_bundle.labelled + real_bundle.unlabelled
    # the first 50, every file whose extension is not plain jpg/jpeg/png (bmp, jpe, upper case), and every
    # palette PNG with transparency (2 in the real set; header reads only)
    chosen = samples[:50] + [s for s in samples[50:] if s.image.suffix not in {".jpg", ".jpeg", ".png"}]
    transparent = []
    for s in samples[50:]:
        if s.image.suffix.lower() == ".png":
            with Image.open(s.image) as img:
                if img.mode == "P" and "transparency" in img.info:
                    transparent.append(s)
    assert transparent
    chosen += transparent
    failed = []
    for s in chosen:
        try:
            assert load_image(s.image).mode == "RGB"
        except ImageLoadError as exc:  # reported, never raised out of the adapter's consumers
            failed.append(str(exc))
    assert not failed, failed
