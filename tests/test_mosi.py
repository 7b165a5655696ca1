"""The CMU-MOSI style regression adapter: good rows, each bad-row kind, the dataset's own split, dispatch, and a
slice of the real table."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REAL_MOSI, MosiSpec

from fusent.data import load_dataset, load_mosi, split_labelled
from fusent.data.mosi import MOSI_PREDICTION_HEADER


def test_good_rows_become_scored_samples(tiny_mosi: MosiSpec):
    bundle = load_mosi(tiny_mosi.root)
    assert bundle.task == "regression" and bundle.labels == []
    assert bundle.prediction_header == MOSI_PREDICTION_HEADER == "id,score"
    assert {s.id: s.score for s in bundle.labelled} == tiny_mosi.scores
    assert all(s.label is None and s.image is None and s.text for s in bundle.labelled)
    assert bundle.modalities() == ["text"]
    # every id to predict is kept, in file order, the one without text included
    assert [s.id for s in bundle.unlabelled] == tiny_mosi.unlabelled
    assert all(s.score is None for s in bundle.unlabelled)
    assert next(s for s in bundle.unlabelled if s.id == "tnotext01").text is None


def test_each_bad_row_is_reported_once_and_not_trained_on(tiny_mosi: MosiSpec):
    bundle = load_mosi(tiny_mosi.root)
    report = bundle.report
    trained = {s.id for s in bundle.labelled}
    for kind, ids in tiny_mosi.bad.items():
        assert report.counts[kind] == len(ids), (kind, report.counts)
        for sid in ids:
            assert any(f"[{kind}] sample {sid}:" in m for m in report.messages), (kind, sid)
            if sid != "train_00":  # the duplicate's first row is kept
                assert sid not in trained
    # a row without text has no modality at all in this text-only table
    assert report.counts["no_modality"] == 2
    assert set(report.counts) == {*tiny_mosi.bad, "no_modality"}
    messages = "\n".join(report.messages)
    assert "'very good' is not a number" in messages and "outside [-3, 3]" in messages
    assert "'holdout'" in messages and "has 5 fields, not 4" in messages
    # the kept row of the duplicated id is its first one (train, positive), not the later dev row
    first = next(s for s in bundle.labelled if s.id == "train_00")
    assert first.score == tiny_mosi.scores["train_00"] and bundle.given_split["train_00"] == "train"


def test_the_dataset_split_is_used_as_given(tiny_mosi: MosiSpec):
    bundle = load_mosi(tiny_mosi.root)
    assert bundle.given_split == tiny_mosi.split
    parts = split_labelled(bundle, val_fraction=0.5, seed=99)  # fraction and seed do not matter: it has test rows
    for part in ("train", "val", "test"):
        assert [s.id for s in getattr(parts, part)] == [i for i, m in tiny_mosi.split.items() if m == part]
    # a limit keeps the first N of each part, so a table sorted by split still has validation rows
    three = split_labelled(bundle, limit=3)
    assert [s.id for s in three.train] == [s.id for s in parts.train[:3]]
    assert [s.id for s in three.val] == [s.id for s in parts.val[:3]]


def test_without_mode_column_the_split_is_seeded_and_random(tmp_path: Path):
    rows = ["id,text,label"] + [f"r{k:02d},good day {k},{(k % 7) - 3}" for k in range(20)]
    (tmp_path / "label.csv").write_text("\n".join(rows) + "\n")
    bundle = load_mosi(tmp_path)
    assert bundle.given_split is None and len(bundle.labelled) == 20
    two = split_labelled(bundle, 0.25, test_fraction=0, seed=3)
    assert len(two.val) == 5 and not two.test
    assert {s.id for s in two.train} | {s.id for s in two.val} == {f"r{k:02d}" for k in range(20)}
    three, again = split_labelled(bundle, seed=3), split_labelled(bundle, seed=3)
    assert [s.id for s in three.test] == [s.id for s in again.test] and len(three.test) == 2
    assert len({s.id for s in three.train + three.val + three.test}) == 20


def test_mmsa_video_and_clip_columns_make_the_id(tmp_path: Path):
    (tmp_path / "label.csv").write_text(
        "video_id,clip_id,text,label,mode\nabc,1,good day,1.5,train\nabc,2,bad day,-1.0,valid\n"
    )
    bundle = load_mosi(tmp_path)
    assert [s.id for s in bundle.labelled] == ["abc_1", "abc_2"]
    assert bundle.given_split == {"abc_1": "train", "abc_2": "val"}


def test_missing_columns_raise_a_clear_error(tmp_path: Path):
    (tmp_path / "label.csv").write_text("id,text\na,good\n")
    with pytest.raises(ValueError, match="needs columns id, text, label"):
        load_mosi(tmp_path)


def test_load_dataset_dispatches_mosi_and_still_memotion(tiny_mosi: MosiSpec, tmp_path: Path):
    assert load_dataset(tiny_mosi.root).task == "regression"
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    (only_test / "test_without_label.csv").write_text("id,text\na,good day\n")
    assert load_dataset(only_test).task == "regression"
    memotion = tmp_path / "memotion"
    memotion.mkdir()
    (memotion / "test_without_label.csv").write_text("image_name,text_ocr,text_corrected\nimage_1.jpg,hi,hi\n")
    assert load_dataset(memotion).task == "classification"


@pytest.fixture
def real_mosi() -> Path:
    if not (REAL_MOSI / "label.csv").exists():
        pytest.skip(f"real CMU-MOSI table not found at {REAL_MOSI}")
    return REAL_MOSI


def test_real_mosi_table_loads(real_mosi: Path):
    bundle = load_dataset(real_mosi)
    assert bundle.task == "regression" and bundle.report.counts == {}
    # the README's counts: 1,281 train and 229 dev segments, 685 test segments to predict
    # its test labels are kept elsewhere: the 229 dev rows are held out as the test part, validation is drawn from
    # the training rows by whole videos
    parts = split_labelled(bundle)
    assert (len(parts.train) + len(parts.val), len(parts.test), len(bundle.unlabelled)) == (1281, 229, 685)
    assert all(bundle.given_split[s.id] == "val" for s in parts.test)
    assert not {s.group for s in parts.train} & {s.group for s in parts.val}
    assert 0.08 < len(parts.val) / 1510 < 0.15
    scores = [s.score for s in bundle.labelled]
    assert min(scores) >= -3 and max(scores) <= 3 and len({round(s, 3) for s in scores}) > 20
    assert all(s.text for s in bundle.labelled + bundle.unlabelled)
    assert not {s.id for s in bundle.labelled} & {s.id for s in bundle.unlabelled}
