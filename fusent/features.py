"""On-disk cache of frozen-encoder outputs, keyed by encoder + preprocessing + sample content.

A second run over the same data re-encodes nothing; a changed text, image, audio or encoder setting re-encodes only
what changed. Failures (a corrupt image) are cached too, and so are tolerated problems (a silent clip), so the second
run reports the same problems.
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from .accel import encode_frozen
from .atomic import atomic_target, atomic_write
from .cost import stage
from .data.audio import load_audio
from .data.images import load_image
from .data.loading import Decoded, LoadError, decoded
from .data.records import ProblemReport, Sample
from .data.video import Frames, VideoFrames, VideoSoundtrack
from .encoders.base import Encoder, ModalityBatch

DEFAULT_CACHE_DIR = Path(os.environ.get("FUSENT_CACHE", Path.home() / ".cache" / "fusent"))


class Cached(NamedTuple):
    """A cache hit: the features, and the problems / notes its input had when it was decoded."""

    states: torch.Tensor | None
    pooled: torch.Tensor
    problems: list[tuple[str, str]]
    notes: list[str]


class FeatureCache:
    """One small safetensors file per (encoder key, content hash); an ``.err`` JSON file for failures."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else DEFAULT_CACHE_DIR

    def _path(self, key: str, digest: str, suffix: str) -> Path:
        return self.root / key / digest[:2] / f"{digest}{suffix}"

    def get(self, key: str, digest: str, states: bool = True) -> Cached | LoadError | None:
        """The cached features (states None unless asked: they are most of the bytes), the cached failure, or None
        when absent."""
        path = self._path(key, digest, ".safetensors")
        if path.exists():
            try:
                with safe_open(path, framework="pt") as fh:
                    meta = fh.metadata() or {}
                    pooled = fh.get_tensor("pooled")
                problems = [tuple(p) for p in json.loads(meta.get("problems", "[]"))]
                notes = json.loads(meta.get("notes", "[]"))
                return Cached(load_file(path)["states"] if states else None, pooled, problems, notes)
            except Exception:  # a half-written file from an interrupted run: re-encode it
                return None
        err = self._path(key, digest, ".err")
        if err.exists():
            try:
                info = json.loads(err.read_text())
                return LoadError(info["kind"], info.get("reason", "unreadable input"))
            except (ValueError, KeyError, TypeError, OSError):  # written by a version that could leave half a file
                return None
        return None

    def put(
        self,
        key: str,
        digest: str,
        states: torch.Tensor,
        pooled: torch.Tensor,
        problems: Sequence[tuple[str, str]] = (),
        notes: Sequence[str] = (),
    ) -> None:
        tensors = {"states": compact(states).contiguous(), "pooled": pooled.float().contiguous()}
        metadata = {"problems": json.dumps(list(problems)), "notes": json.dumps(list(notes))}
        with atomic_target(self._path(key, digest, ".safetensors")) as tmp:
            save_file(tensors, tmp, metadata=metadata)

    def put_error(self, key: str, digest: str, error: LoadError) -> None:
        info = {"kind": error.kind, "reason": error.reason}  # no file name: content-keyed
        atomic_write(self._path(key, digest, ".err"), json.dumps(info))


#: Decoder of each modality's raw item, given the encoder it is for; every one returns ``Decoded`` or raises
#: ``LoadError``. Audio is decoded only as far as the encoder reads (its ``max_seconds``).
_LOADERS: dict[str, Callable[[Any, Encoder], Decoded[Any]]] = {
    "text": lambda item, encoder: decoded(item),
    "image": lambda item, encoder: decoded(load_image(item)),
    "audio": lambda item, encoder: load_audio(item, max_seconds=getattr(encoder, "max_seconds", None)),
}


def load_item(modality: str, item: Any, encoder: Any = None) -> Decoded[Any]:
    """Decode one raw item: a clip's frames or soundtrack decode themselves (``data/video.py``), anything else goes
    through the modality's loader (audio only as far as ``encoder``, or a transcriber, reads: its ``max_seconds``)."""
    if isinstance(item, VideoFrames | VideoSoundtrack):
        return item.decode()
    return _LOADERS[modality](item, encoder)


#: Frames of clips encoded per network call (K frames of 32 clips would otherwise be one 256-image batch).
FRAME_BATCH = 32


def encode_items(encoder: Encoder, items: list[Any]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``encoder.encode`` for a batch in which some items are clips (``Frames``): each frame is encoded as an image
    and pooled over time, so a clip's states are its per-frame pooled vectors ``[K, D]`` (attention heads attend
    over frames) and its pooled vector their mean. An encoder trained here reads one image per sample: a clip gives
    it its middle frame."""
    if not any(isinstance(item, Frames) for item in items):
        return encoder.encode(items)
    if encoder.trainable:
        return encoder.encode([item.keyframe() if isinstance(item, Frames) else item for item in items])
    flat = [frame for item in items for frame in (item if isinstance(item, Frames) else [item])]
    runs = [encoder.encode(flat[i : i + FRAME_BATCH]) for i in range(0, len(flat), FRAME_BATCH)]
    flat_states = [s for run_states, _ in runs for s in run_states]
    flat_pooled = torch.cat([p for _, p in runs])
    states, pooled, at = [], [], 0
    for item in items:
        if isinstance(item, Frames):
            frames = flat_pooled[at : at + len(item)]
            states.append(frames.clone())
            pooled.append(frames.mean(0))
            at += len(item)
        else:
            states.append(flat_states[at])
            pooled.append(flat_pooled[at])
            at += 1
    return states, torch.stack(pooled)


def compact(states: torch.Tensor) -> torch.Tensor:
    """States as stored and kept in memory: float16, except uint8 (an image encoder's decoded pixels), kept as is at
    half the bytes (MVSA at Lite2's 260 px: 0.9 GB of pixels instead of 1.8 GB)."""
    return states if states.dtype == torch.uint8 else states.to(torch.float16)


def _load_libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl): nothing to trim
        return None


_LIBC = _load_libc()


def release_freed_memory() -> None:
    """Hand memory freed by the last encoder batch back to the OS. Batches of varying shapes otherwise fragment
    glibc's heap until peak RSS is several times the live data (seen: 2.9 GB encoding MVSA with Lite2)."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def _report_findings(report: ProblemReport, sample_id: str, problems: Sequence[tuple[str, str]], notes: Sequence[str]):
    for kind, message in problems:
        report.add(kind, sample_id, message)
    for kind in notes:
        report.note(kind)


def _describe(item: Any) -> str:
    if isinstance(item, VideoFrames | VideoSoundtrack):
        return str(item)
    return str(item) if isinstance(item, str | Path) else f"<in-memory {type(item).__name__}>"


def content_digest(modality: str, item: Any) -> str:
    """The cache's key for an input's content; a file is hashed as it streams in, never read whole into memory."""
    if isinstance(item, str | Path) and not (modality == "text" and isinstance(item, str)):
        with open(item, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    return hashlib.sha256(_content_bytes(modality, item)).hexdigest()


def _content_bytes(modality: str, item: Any) -> bytes:
    if isinstance(item, VideoFrames | VideoSoundtrack):  # the clip's hash (streamed) and how it is sampled
        return item.content_key()
    if isinstance(item, str) and modality == "text":
        return item.encode("utf-8")
    if isinstance(item, bytes):
        return item
    if isinstance(item, np.ndarray):  # an in-memory waveform; shape and dtype are part of its content
        return item.tobytes() + repr((item.shape, str(item.dtype))).encode()
    if isinstance(item, tuple):  # (waveform, sample rate)
        return b"".join(
            _content_bytes(modality, part) if isinstance(part, np.ndarray) else repr(part).encode() for part in item
        )
    return item.tobytes() + repr((item.size, item.mode)).encode()  # an in-memory PIL image


class ModalityFeatures:
    """Features of one modality for N samples: pooled vectors always; token/patch states (fp16, per sample, padded
    per batch) only when kept. Without states a batch has a zero-length sequence, never a fake one."""

    def __init__(self, states: list[torch.Tensor | None] | None, pooled: list[torch.Tensor | None], dim: int):
        self.dim = dim
        self.present = torch.tensor([p is not None for p in pooled], dtype=torch.bool)
        self.pooled = (
            torch.stack([torch.zeros(dim) if p is None else p.float() for p in pooled])
            if pooled
            else (torch.zeros(0, dim))
        )
        self.states = None
        # per-position shape: (dim,) for encoder states; e.g. (H, W) for a trainable encoder's [3, H, W] pixels
        self.position_shape = next((tuple(s.shape[1:]) for s in states or [] if s is not None), (dim,))
        if states is not None:
            dtype = next((compact(s).dtype for s in states if s is not None), torch.float16)
            empty = torch.zeros(0, *self.position_shape, dtype=dtype)
            self.states = [empty if s is None else compact(s) for s in states]
        self.lengths = torch.tensor([s.shape[0] for s in self.states]) if self.states else self.present.long()

    def with_states(self, states: list[torch.Tensor]) -> ModalityFeatures:
        """The same samples with other per-sample states, e.g. patch maps pooled once rather than every batch."""
        other = copy.copy(self)
        other.states = [compact(s) for s in states]
        other.lengths = torch.tensor([s.shape[0] for s in other.states])
        return other

    def pooled_only(self) -> ModalityFeatures:
        """The same samples without their states (what a head that reads pooled vectors only is given)."""
        other = copy.copy(self)
        other.states, other.lengths = None, self.present.long()
        return other

    def subset(self, index: Sequence[int]) -> ModalityFeatures:
        """The features of the samples at ``index`` (states shared, not copied): one encoding, many splits."""
        other, rows = copy.copy(self), torch.as_tensor(list(index), dtype=torch.long)
        other.present, other.pooled, other.lengths = self.present[rows], self.pooled[rows], self.lengths[rows]
        other.states = None if self.states is None else [self.states[i] for i in rows.tolist()]
        return other

    def batch(self, index: torch.Tensor) -> ModalityBatch:
        if self.states is None:
            states = torch.zeros(len(index), 0, self.dim)
        elif self.states and self.states[0].dtype == torch.uint8:
            states = pad_sequence([self.states[i] for i in index.tolist()], batch_first=True).float()
        else:
            # padded as int16 bit patterns (0 is +0.0 in fp16), then converted at once: this CPU build's
            # pad/stack kernels for float16 are ~15x slower and were most of an attention head's epoch
            bits = pad_sequence([self.states[i].view(torch.int16) for i in index.tolist()], batch_first=True)
            states = bits.view(torch.float16).float()
            if states.shape[1] == 0:  # every row lacks this modality: keep one (masked) position
                states = torch.zeros(len(index), 1, *self.position_shape)
        return ModalityBatch(
            states=states,
            mask=torch.arange(states.shape[1])[None, :] < self.lengths[index][:, None],
            pooled=self.pooled[index],
            present=self.present[index],
        )


@dataclass
class FeatureTable:
    """Per-sample features of every modality, aligned with ``ids`` (and ``labels`` where known)."""

    ids: list[str]
    modalities: dict[str, ModalityFeatures]
    texts: list[str | None]  # raw texts, needed when the text encoder is fine-tuned instead of cached

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_states(self) -> bool:
        return all(f.states is not None for f in self.modalities.values())

    def dims(self) -> dict[str, int]:
        return {m: f.dim for m, f in self.modalities.items()}

    def batch(self, index: torch.Tensor) -> dict[str, ModalityBatch]:
        return {m: f.batch(index) for m, f in self.modalities.items()}

    def subset(self, index: Sequence[int]) -> FeatureTable:
        """The rows at ``index``, in that order."""
        index = list(index)
        return FeatureTable(
            ids=[self.ids[i] for i in index],
            modalities={m: f.subset(index) for m, f in self.modalities.items()},
            texts=[self.texts[i] for i in index],
        )

    def sequence_lengths(self) -> torch.Tensor:
        """Per sample, the positions a batch pads it to, summed over modalities (without states: the number of
        modalities present)."""
        return sum((f.lengths for f in self.modalities.values()), torch.zeros(len(self), dtype=torch.long))


def encode_modality(
    samples: Sequence[Sample],
    encoder: Encoder,
    cache: FeatureCache | None,
    report: ProblemReport,
    batch_size: int = 32,
    progress: bool = True,
    keep_states: bool = True,
) -> ModalityFeatures:
    """Encode one modality of ``samples`` (through the cache unless it is None); failures are reported and the
    sample keeps going with that modality marked missing."""
    modality = encoder.modality
    key = encoder.cache_key() if cache is not None else ""
    states: list[torch.Tensor | None] = [None] * len(samples)
    pooled: list[torch.Tensor | None] = [None] * len(samples)
    todo: list[tuple[int, str, Any]] = []
    repeats: dict[str, list[int]] = {}  # same content again: encoded once (and identical, whatever its batch)

    def take(i: int, hit: Cached | LoadError | None) -> bool:
        """Use a cache hit (features, or a failure to report) for sample ``i``; False when there is none."""
        if isinstance(hit, LoadError):
            report.add(hit.kind, samples[i].id, str(hit.for_file(_describe(getattr(samples[i], modality)))))
        elif hit is not None:
            states[i], pooled[i] = hit.states, hit.pooled
            _report_findings(report, samples[i].id, hit.problems, hit.notes)
        return hit is not None

    for i, sample in enumerate(samples):
        item = getattr(sample, modality)
        if item is None:
            continue
        digest = ""
        if cache is not None:
            try:
                digest = content_digest(modality, item)
            except OSError as exc:
                report.add(f"missing_{modality}", sample.id, f"cannot read {item}: {exc}")
                continue
            if take(i, cache.get(key, digest, states=keep_states)):
                continue
            if digest in repeats:
                repeats[digest].append(i)
                continue
            repeats[digest] = []
        todo.append((i, digest, item))
    bar = tqdm(total=len(todo), desc=f"encoding {modality}", unit="sample", disable=not (todo and progress))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        loaded = _decode_chunk(chunk, samples, encoder, cache, key, report)
        if loaded:
            out_states, out_pooled = encode_frozen(encoder, encode_items, [found.value for _, _, found in loaded])
            for (i, digest, found), s, p in zip(loaded, out_states, out_pooled, strict=True):
                if cache is not None:
                    cache.put(key, digest, s, p, found.problems, found.notes)
                states[i], pooled[i] = (compact(s) if keep_states else None), p.clone()
        bar.update(len(chunk))
        if len(todo) > batch_size:  # fragmentation builds up over many batches; a trim costs a request ms
            release_freed_memory()
    bar.close()
    for digest, rows in repeats.items():  # now in the cache, as encoded (or failed) once
        for i in rows:
            take(i, cache.get(key, digest, states=keep_states) if cache is not None else None)
    return ModalityFeatures(states if keep_states else None, pooled, encoder.dim)


def _decode_chunk(
    chunk: list[tuple[int, str, Any]],
    samples: Sequence[Sample],
    encoder: Encoder,
    cache: FeatureCache | None,
    key: str,
    report: ProblemReport,
) -> list[tuple[int, str, Decoded[Any]]]:
    """Decode the raw items of ``chunk`` (sample index, content digest, item); a failure is reported and cached, so
    the same broken file is not decoded again."""
    loaded = []
    for i, digest, item in chunk:
        try:
            with stage("decode"):
                found = load_item(encoder.modality, item, encoder)
        except LoadError as exc:
            report.add(exc.kind, samples[i].id, str(exc))
            if cache is not None:
                cache.put_error(key, digest, exc)
            continue
        _report_findings(report, samples[i].id, found.problems, found.notes)
        loaded.append((i, digest, found))
    return loaded


@stage("encode")
def build_features(
    samples: Sequence[Sample],
    encoders: dict[str, Encoder | None],
    cache: FeatureCache | None,
    report: ProblemReport,
    batch_size: int = 32,
    progress: bool = True,
    keep_states: bool = True,
) -> FeatureTable:
    """Features for every modality with a frozen encoder; ``None`` marks a modality encoded inside the model.
    ``keep_states=False`` keeps pooled vectors only (enough for heads without attention; a fraction of the memory)."""
    modalities = {  # a trainable encoder's states are its input: always kept
        m: encode_modality(samples, enc, cache, report, batch_size, progress, keep_states or enc.trainable)
        for m, enc in encoders.items()
        if enc is not None
    }
    return FeatureTable(ids=[s.id for s in samples], modalities=modalities, texts=[s.text for s in samples])
