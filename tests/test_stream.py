"""Streaming batch scoring of manifests: bounded lazy batches, the same predictions as the in-memory path, resuming
an interrupted run without writing an id twice, Parquet manifests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import COLOURS, TinyModels, invoke, jpeg_bytes
from test_predict import make_checkpoint

from fusent.data import ProblemReport, load_manifest
from fusent.predict import Predictor
from fusent.stream import SeenIds, StreamReport, count_rows, manifest_batches, predict_manifest

pytestmark = pytest.mark.usefixtures("restore_process_state")  # the CLI changes logging and env

LABELS = ["negative", "neutral", "positive"]
WORDS = {"negative": "bad sad awful", "neutral": "the day news", "positive": "good happy love"}


def manifest_rows(n: int, images: bool = True) -> list[dict[str, str]]:
    """``n`` rows: most to predict, every fifth labelled, some without image, one without id, one duplicate id."""
    rows = []
    for k in range(n):
        label = LABELS[k % 3]
        row = {"id": f"p{k:03d}", "text": f"{WORDS[label]} {k}", "image": "", "label": label if k % 5 == 0 else ""}
        if images and k % 4:
            row["image"] = f"img/{label}.jpg"
        rows.append(row)
    rows.insert(7, {"id": "", "text": "no id", "image": "", "label": ""})
    rows.insert(11, {"id": "p002", "text": "a second p002", "image": "", "label": ""})
    rows.append({"id": "pmissing", "text": "", "image": "img/missing.jpg", "label": ""})
    return rows


def write_csv(root: Path, rows: list[dict[str, str]], name: str = "manifest.csv") -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for label, colour in COLOURS.items():
        (root / "img" / f"{label}.jpg").write_bytes(jpeg_bytes(colour, seed=len(label)))
    path = root / name
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_models: TinyModels) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("stream_ckpt"), tiny_models)  # native_combine, text + image


# ----------------------------------------------------------------------------------------------- the reader


def test_manifest_batches_are_bounded_and_lazy(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    rows = [{"id": f"r{k}", "text": "good day", "label": "positive" if k % 10 == 0 else ""} for k in range(50)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    report = ProblemReport()
    batches = manifest_batches(path, LABELS, report, batch_size=8)
    first = next(batches)
    assert [s.id for s in first.samples] == [f"r{k}" for k in range(1, 9)]  # r0 is labelled: not predicted
    assert first.rows == 9
    assert report.counts["bad_row"] == 0  # the broken last line has not been read yet
    rest = list(batches)
    assert report.counts["bad_row"] == 1
    sizes = [len(b.samples) for b in [first, *rest]]
    assert max(sizes) <= 8 and sum(sizes) == 45
    assert sum(b.rows for b in [first, *rest]) == 50 and count_rows(path) == 51  # the bar's total counts lines
    everything = manifest_batches(path, LABELS, ProblemReport(), batch_size=8, all_rows=True)
    assert sum(len(b.samples) for b in everything) == 50


def test_seen_ids_survive_merging():
    seen = SeenIds(f"id{k}" for k in range(SeenIds.MERGE_AT + 10))
    assert len(seen) == SeenIds.MERGE_AT + 10
    assert "id0" in seen and f"id{SeenIds.MERGE_AT + 9}" in seen and "id5000" in seen
    assert "id-1" not in seen and f"id{SeenIds.MERGE_AT + 10}" not in seen


def test_stream_report_counts_every_problem_but_keeps_a_few_messages():
    report = StreamReport(shown=3)
    for k in range(100):
        report.add("empty_text", f"s{k}", "text is empty")
    report.add("missing_image", "x", "gone")
    assert report.counts == {"empty_text": 100, "missing_image": 1}
    assert len(report.messages) == 4 and "empty_text=100" in report.summary()


# ------------------------------------------------------------------------------------- same as in memory


def test_streamed_predictions_equal_the_in_memory_path(checkpoint: Path, tmp_path: Path):
    manifest = write_csv(tmp_path / "data", manifest_rows(30))
    cache = tmp_path / "cache"
    for extra in ([], ["--all"]):
        folder_out, stream_out = tmp_path / "folder.txt", tmp_path / "stream.txt"
        # a folder holding manifest.csv takes the in-memory path (load_dataset), the file itself the streaming one
        base = ["predict", checkpoint, "--cache-dir", cache, "-q", *extra]
        assert invoke(*base, "--data", manifest.parent, "--out", folder_out).exit_code == 0
        result = invoke(*base, "--data", manifest, "--out", stream_out, "--batch-size", "4")
        assert result.exit_code == 0, result.output
        expected, got = read_rows(folder_out), read_rows(stream_out)
        assert got[0] == ["id", "label"] and len(got) > 20  # the manifest's own columns
        if extra:  # the in-memory path writes the labelled rows first; the stream keeps the file's order
            expected, got = sorted(expected), sorted(got)
        assert got == expected
    # scores too, not only labels: batch by batch equals all at once
    predictor = Predictor.from_pretrained(checkpoint, use_cache=False, device="cpu")
    samples = load_manifest(manifest, labels=LABELS).unlabelled
    whole = predictor.predict_proba_samples(samples, progress=False)
    batches = manifest_batches(manifest, LABELS, ProblemReport(), batch_size=4)
    parts = [predictor.predict_proba_samples(b.samples, progress=False) for b in batches]
    import numpy as np

    assert np.allclose(np.concatenate(parts), whole, atol=1e-5)


def test_resume_after_an_interrupted_run_writes_each_id_once(checkpoint: Path, tmp_path: Path, monkeypatch):
    manifest = write_csv(tmp_path, manifest_rows(40, images=False))
    out = tmp_path / "preds.txt"
    clean = tmp_path / "clean.txt"
    assert invoke("predict", checkpoint, "--data", manifest, "--out", clean, "-q").exit_code == 0

    calls = []
    original = Predictor.predict_samples

    def interrupted(self, samples, *args, **kwargs):
        calls.append(len(samples))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, samples, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_samples", interrupted)
    predictor = Predictor.from_pretrained(checkpoint, use_cache=False, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        predict_manifest(predictor, manifest, out, batch_size=5, progress=False)
    assert len(read_rows(out)) == 1 + 10  # header and two flushed batches
    with out.open("a") as fh:
        fh.write("p099,posi")  # a line cut short by the kill
    monkeypatch.setattr(Predictor, "predict_samples", original)

    result = invoke("predict", checkpoint, "--data", manifest, "--out", out, "--resume", "--batch-size", "5", "-q")
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    ids = [r[0] for r in rows[1:]]
    assert rows[0] == ["id", "label"] and len(ids) == len(set(ids))  # every id exactly once
    assert rows == read_rows(clean)  # and the same rows, in the same order, as an uninterrupted run
    # resuming a finished run writes nothing more
    assert invoke("predict", checkpoint, "--data", manifest, "--out", out, "--resume", "-q").exit_code == 0
    assert read_rows(out) == rows


def test_stream_errors_are_one_line_and_write_nothing(checkpoint: Path, tmp_path: Path):
    manifest = write_csv(tmp_path, manifest_rows(5, images=False))
    no_out = invoke("predict", checkpoint, "--data", manifest, "--resume")
    assert no_out.exit_code != 0 and "--resume needs --out" in no_out.output
    bad = tmp_path / "bad.csv"
    bad.write_text("post,text\n1,good\n")
    out = tmp_path / "out.txt"
    result = invoke("predict", checkpoint, "--data", bad, "--out", out, "-q")
    assert result.exit_code != 0 and "'id' column" in result.output and not out.exists()


def test_parquet_manifest(checkpoint: Path, tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = manifest_rows(20)
    csv_path = write_csv(tmp_path, rows)
    parquet = tmp_path / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=7)
    assert count_rows(parquet) == len(rows)
    assert [s.id for s in load_manifest(parquet).unlabelled] == [s.id for s in load_manifest(csv_path).unlabelled]
    outs = {}
    for path in (csv_path, parquet):
        outs[path.suffix] = tmp_path / f"out{path.suffix}.txt"
        result = invoke("predict", checkpoint, "--data", path, "--out", outs[path.suffix], "--batch-size", "3", "-q")
        assert result.exit_code == 0, result.output
    assert read_rows(outs[".parquet"]) == read_rows(outs[".csv"])


# ---------------------------------------------------------------------------------------- cluster engines


def test_manifest_scorer_on_engine_batches_matches_fusent_predict(checkpoint: Path, tmp_path: Path):
    import importlib.util

    import numpy as np

    from fusent.stream import ManifestScorer

    rows = manifest_rows(12)
    manifest = write_csv(tmp_path, rows)
    reference = tmp_path / "ref.txt"
    assert invoke("predict", checkpoint, "--data", manifest, "--out", reference, "--all", "-q").exit_code == 0
    expected = {r[0]: r[1] for r in read_rows(reference)[1:]}
    scorer = ManifestScorer(checkpoint, base=tmp_path, device="cpu")
    # Ray's numpy batch format: numpy columns; pandas: NaN for empty cells
    batch = {c: np.array([r[c] for r in rows], dtype=object) for c in ("id", "text", "image")}
    batch["text"][3] = float("nan")
    scored = scorer(batch)
    assert set(scored) == {"id", "label", "score"} and "" not in scored["id"]  # the row without an id is left out
    assert len(scored["id"]) == len(rows) - 1 and scorer.report.counts["bad_row"] == 1
    same = [i for i in scored["id"] if i != rows[3]["id"] and i != "p002"]  # p002 twice; row 3 lost its text
    labels = dict(zip(scored["id"], scored["label"], strict=True))
    assert {i: expected[i] for i in same} == {i: labels[i] for i in same}
    assert all(0 < s <= 1 for s in scored["score"])
    # the example script's local engine: chunks of columns through the same scorer
    spec = importlib.util.spec_from_file_location(
        "cluster_scoring", Path(__file__).parents[1] / "examples" / "cluster_scoring.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "example.csv"
    example.main.__globals__["sys"].argv = ["x", str(checkpoint), str(manifest), "--out", str(out), "--batch-size", "5"]
    example.main()
    written = read_rows(out)
    assert written[0] == ["id", "label", "score"] and len(written) == len(rows)  # header + every row with an id
    assert {r[0]: r[1] for r in written[1:] if r[0] in same} == {i: expected[i] for i in same}


def test_a_streamed_csv_row_over_the_field_limit_is_reported_not_raised(checkpoint: Path, tmp_path: Path):
    """Issue 14 item 4 on the streaming path: a cell over the csv module's 128 KB limit is a reported row (file and
    line); the rows around it are predicted."""
    manifest = tmp_path / "long.csv"
    manifest.write_text(f"id,text,label\n1,good day,\n2,{'w' * 200_000},\n3,bad day,\n", encoding="utf-8")
    report = ProblemReport()
    batches = list(manifest_batches(manifest, LABELS, report, batch_size=8))
    assert [s.id for b in batches for s in b.samples] == ["1", "3"] and report.counts["bad_row"] == 1
    assert any("long.csv:3" in m and "131,072" in m for m in report.messages)
    out = tmp_path / "preds.csv"
    result = invoke("predict", checkpoint, "--data", manifest, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert [row[0] for row in read_rows(out)] == ["id", "1", "3"] and "bad_row" in result.output
