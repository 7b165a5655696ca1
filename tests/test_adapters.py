"""The dataset adapter registry (detect order, the error when nothing matches) and the shape of ``fusent/data``:
dataset modules share ``rows`` / ``tables`` and never import ``adapters``, so the package has no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fusent.data
from fusent.data import adapters
from fusent.data.adapters import ADAPTERS, Adapter, RegressionDataWithLabels, load_dataset
from fusent.data.records import DatasetBundle, ProblemReport

DATA = Path(fusent.data.__file__).parent
#: An import circle this move leaves: audio.load_audio falls back to video.decode_audio_file (PyAV) for m4a / opus
#: voice notes through a function-level import, and video reads soundtracks with audio.load_audio.
KNOWN_CYCLES = {frozenset({"audio", "video"})}


def _sibling_imports(path: Path) -> set[str]:
    """The ``fusent.data`` modules ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:  # from . import x
                names.update(alias.name for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    return {p.stem: _sibling_imports(p) for p in DATA.glob("*.py") if p.stem != "__init__"}


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The modules of each import circle (strongly connected component of more than one module, or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.add(frozenset(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_dataset_module_imports_the_adapters_module():
    graph = _graph()
    assert {"memotion", "mosi", "ravdess", "rows", "tables"} <= set(graph)
    importers = sorted(m for m, imported in graph.items() if "adapters" in imported)
    assert importers == [], f"{importers} import adapters.py (it imports them: share helpers via rows / tables)"
    assert {"memotion", "mosi", "ravdess"} <= graph["adapters"]
    assert graph["rows"] == {"records"} and graph["tables"] <= {"records", "text"}


def test_fusent_data_has_no_import_circle_but_the_known_one():
    assert _cycles(_graph()) <= KNOWN_CYCLES


def test_the_cycle_finder_finds_a_function_level_circle(tmp_path: Path):
    """The check above can fail: a function-level import back into the importer is a circle."""
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import y  # dodged\n")
    graph = {p.stem: _sibling_imports(p) for p in tmp_path.glob("*.py")}
    assert _cycles(graph) == {frozenset({"a", "b"})}


def test_public_names_stay_importable_where_they_were():
    from fusent.data.adapters import (  # noqa: F401  (imported by fusent.stream, fusent.cli, fusent.checkpoint_data)
        MVSA_LABELS,
        check_row,
        is_manifest_file,
        iter_manifest_records,
        load_manifest,
        load_mvsa,
        manifest_sample,
    )

    for name in fusent.data.__all__:
        assert getattr(fusent.data, name) is not None


# ------------------------------------------------------------------------------------------------ the registry


def test_registry_order():
    names = [a.name for a in ADAPTERS]
    assert names == ["ravdess", "mvsa", "mosi", "memotion", "manifest folder", "audio folder", "manifest"]
    assert [a.name for a in ADAPTERS if a.label_sets] == ["ravdess"]
    assert [a.name for a in ADAPTERS if not a.folder] == ["manifest"]


def _detected(path: Path) -> list[str]:
    return [a.name for a in ADAPTERS if a.detect(path)]


def test_detect_order_decides_a_folder_two_adapters_recognise(tmp_path: Path):
    both = tmp_path / "both"
    both.mkdir()
    (both / "label.csv").write_text("id,text,label,mode\nv_1,good film,1.5,train\nv_2,bad film,-2,train\n")
    (both / "labels.csv").write_text("image_name,text_corrected,overall_sentiment\nx.jpg,hi,positive\n")
    (both / "manifest.csv").write_text("id,text,label\n1,hello,pos\n")
    assert _detected(both) == ["mosi", "memotion", "manifest folder"]
    bundle = load_dataset(both)  # MOSI before Memotion before a manifest
    assert bundle.task == "regression" and sorted(s.id for s in bundle.labelled) == ["v_1", "v_2"]

    media = tmp_path / "media"
    media.mkdir()
    (media / "note.wav").write_bytes(b"RIFF")
    assert _detected(media) == ["audio folder"]
    (media / "manifest.jsonl").write_text('{"id": "1", "text": "hi", "label": "pos"}\n')
    assert _detected(media) == ["manifest folder", "audio folder"]
    assert [s.id for s in load_dataset(media).labelled] == ["1"]

    manifest = tmp_path / "posts.csv"
    manifest.write_text("id,text,label\n1,hello,pos\n")
    assert _detected(manifest) == ["manifest"]
    assert _detected(tmp_path / "missing.jsonl") == ["manifest"]  # by suffix: reading it says it is missing


def test_load_dataset_walks_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A new adapter is one entry in ADAPTERS: load_dataset asks it first when it comes first."""
    calls = []

    def load(path: Path, labels: list[str] | None, label_set: str | None, allow_outside: bool) -> DatasetBundle:
        calls.append((path, labels, allow_outside))
        return DatasetBundle(labelled=[], unlabelled=[], labels=labels or [], report=ProblemReport(), name="fake")

    fake = Adapter("fake", "a folder holding fake.txt", lambda p: (p / "fake.txt").is_file(), load)
    monkeypatch.setattr(adapters, "ADAPTERS", [fake, *ADAPTERS])
    (tmp_path / "fake.txt").write_text("")
    (tmp_path / "manifest.csv").write_text("id,text,label\n1,hello,pos\n")
    assert load_dataset(tmp_path, labels=["a"], allow_outside=True).name == "fake"
    assert calls == [(tmp_path, ["a"], True)]
    (tmp_path / "fake.txt").unlink()
    assert load_dataset(tmp_path).name == "manifest"  # falls through to the manifest folder


def test_nothing_matched_lists_what_each_adapter_expects(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError) as folder_error:
        load_dataset(tmp_path)
    message = str(folder_error.value)
    assert message.startswith(f"{tmp_path} is neither a RAVDESS folder")
    assert message.endswith(", nor a folder of audio or video files (to predict)")
    assert all(a.expects in message for a in ADAPTERS if a.folder) and "manifest (" not in message
    for missing in (tmp_path / "nothing", tmp_path / "notes.txt"):
        with pytest.raises(FileNotFoundError) as error:
            load_dataset(missing)
        assert str(error.value).startswith(f"no dataset at {missing}: pass ")
        assert all(a.expects in str(error.value) for a in ADAPTERS)


def test_options_an_adapter_does_not_take_are_refused(tmp_path: Path):
    (tmp_path / "manifest.csv").write_text("id,text,label\n1,hello,pos\n")
    with pytest.raises(ValueError, match=r"--label-set applies to a RAVDESS folder \(Actor_NN.*; .* is not one"):
        load_dataset(tmp_path, label_set="emotion")
    with pytest.raises(ValueError, match="--label-set applies to a RAVDESS folder"):
        load_dataset(tmp_path / "nothing", label_set="emotion")
    mosi = tmp_path / "mosi"
    mosi.mkdir()
    (mosi / "label.csv").write_text("id,text,label\nv_1,good,1\n")
    with pytest.raises(RegressionDataWithLabels, match="--labels applies to classification data"):
        load_dataset(mosi, labels=["negative", "positive"])
