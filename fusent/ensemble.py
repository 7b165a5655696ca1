"""Ensembles of trained checkpoints (``fusent ensemble RUN1 RUN2 ... --out ENS``): the mean of the members' calibrated
probabilities, softmax(logits / the member's temperature); the mean score for regression checkpoints.

An ensemble is a checkpoint folder like any other, so ``predict``, ``evaluate``, ``serve`` and
``Predictor.from_pretrained`` load it: its ``config.json`` names the member folders (``{"ensemble": ["members/0",
...], ...}``), each a full copy of its checkpoint, so the folder stands alone. Members may differ in seed, head or
encoders, but must share the task and label list. When they were all trained on one split, that ``split.csv`` sits
beside the config, so ``fusent evaluate ENS`` scores the test part none of them saw; otherwise only other data can
evaluate the ensemble fairly.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .data.images import MAX_IMAGE_PIXELS
from .data.records import MODALITIES, Sample
from .encoders.base import Encoder
from .features import FeatureCache
from .model import CONFIG_NAME, WEIGHTS_NAME, FusentModel, ModelConfig
from .predict import Decision, FeatureMemo, Predictor
from .tasks import get_task

SPLIT_NAME = "split.csv"
MEMBERS_DIR = "members"


class EnsembleError(ValueError):
    """Checkpoints that cannot be combined, or a folder that cannot be written; the message says what to do."""


@dataclass
class EnsembleConfig:
    """What ``config.json`` of an ensemble holds. ``temperature`` is 1: the averaged probabilities are calibrated
    already (each member's own temperature is applied before the mean)."""

    ensemble: list[str]  # member checkpoint folders, relative to the ensemble folder
    labels: list[str]
    task: str
    members: list[dict[str, Any]] = field(default_factory=list)  # provenance: source, head, seed, temperature, ...
    shared_split: bool = True  # every member trained on the same split (its split.csv is beside this file)
    training: dict[str, Any] = field(default_factory=dict)  # the shared split's settings (label set, fractions)
    combine: str = "mean of calibrated probabilities"
    temperature: float = 1.0
    fusent_version: str = __version__

    @property
    def head(self) -> str:
        return f"ensemble of {len(self.ensemble)} ({', '.join(m['head'] for m in self.members)})"

    @property
    def head_kwargs(self) -> dict[str, Any]:
        return {}

    def encoder_settings(self, modality: str) -> dict[str, Any]:
        """The members' encoder of ``modality``: the one config when they agree, else each member's."""
        configs = [m["encoders"][modality] for m in self.members if m["encoders"].get(modality)]
        if not configs or all(c == configs[0] for c in configs):
            return configs[0] if configs else {}
        return {"members": configs}

    @property
    def text_encoder(self) -> dict[str, Any]:
        return self.encoder_settings("text")

    @property
    def image_encoder(self) -> dict[str, Any]:
        return self.encoder_settings("image")

    @property
    def audio_encoder(self) -> dict[str, Any]:
        return self.encoder_settings("audio")


def is_ensemble(directory: str | Path) -> bool:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        return False
    try:
        return "ensemble" in json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the ``checkpoint/`` folder of a run folder."""
    path = Path(path)
    for candidate in (path, path / "checkpoint"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise EnsembleError(
        f"{path} is neither a checkpoint folder nor a run folder holding checkpoint/ (no {CONFIG_NAME})"
    )


def _member_config(checkpoint: Path) -> ModelConfig:
    try:
        saved = json.loads((checkpoint / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EnsembleError(f"{checkpoint / CONFIG_NAME} is not readable JSON ({exc})") from None
    if "ensemble" in saved:
        raise EnsembleError(f"{checkpoint} is an ensemble itself: give the runs it was made of instead")
    if not (checkpoint / WEIGHTS_NAME).is_file():
        raise EnsembleError(f"{checkpoint} has no {WEIGHTS_NAME}: not a complete fusent checkpoint")
    try:
        return ModelConfig(**saved)
    except TypeError as exc:
        raise EnsembleError(f"{checkpoint / CONFIG_NAME} is not a fusent checkpoint config ({exc})") from None


def build_ensemble(sources: list[str | Path], out: str | Path, *, force: bool = False) -> tuple[Path, EnsembleConfig]:
    """Check that ``sources`` (run or checkpoint folders) can be averaged and write the ensemble folder ``out``
    (written aside and moved into place: a failure never leaves half a folder). ``force`` replaces an existing
    ``out``."""
    out = Path(out)
    checkpoints = _checkpoints(sources, out)
    configs = [_member_config(c) for c in checkpoints]
    first = configs[0]
    for source, config in zip(sources[1:], configs[1:], strict=True):
        if config.task != first.task:
            raise EnsembleError(
                f"{source} is a {config.task} model but {sources[0]} is a {first.task} one: members share the task"
            )
        if config.labels != first.labels:
            raise EnsembleError(
                f"{source} predicts labels {config.labels} but {sources[0]} predicts {first.labels}: members share the "
                "label list (train them on the same data and label set)"
            )
    shared = _shared_split(checkpoints, configs)
    if out.exists() and any(out.iterdir()) and not force:
        raise EnsembleError(f"{out} exists and is not empty: choose another --out, or pass --force to replace it")
    config = EnsembleConfig(
        ensemble=[f"{MEMBERS_DIR}/{k}" for k in range(len(checkpoints))],
        labels=first.labels,
        task=first.task,
        members=[
            {
                "source": str(source),
                "head": c.head,
                "seed": c.training.get("seed"),
                "temperature": c.temperature,
                "encoders": {m: c.encoder_settings(m) for m in MODALITIES if m in c.dims},
            }
            for source, c in zip(sources, configs, strict=True)
        ],
        shared_split=shared,
        training={"split": first.training.get("split", {})} if shared else {},
        combine="mean of scores" if first.task == "regression" else "mean of calibrated probabilities",
    )
    _write(out, config, checkpoints)
    return out, config


def _checkpoints(sources: list[str | Path], out: Path) -> list[Path]:
    """The members' checkpoint folders: at least two, each once, none inside ``out``."""
    if len(sources) < 2:
        raise EnsembleError("an ensemble needs at least two checkpoints")
    checkpoints = [resolve_checkpoint(s) for s in sources]
    seen: dict[Path, Path] = {}
    for source, checkpoint in zip(sources, checkpoints, strict=True):
        real = checkpoint.resolve()
        if real in seen:
            raise EnsembleError(f"{source} is the same checkpoint as {seen[real]}: give each member once")
        seen[real] = Path(source)
        if out.resolve() == real or out.resolve() in real.parents:
            raise EnsembleError(f"--out {out} would hold or replace the member {source}: write the ensemble elsewhere")
    return checkpoints


def _shared_split(checkpoints: list[Path], configs: list[ModelConfig]) -> bool:
    """Whether every member was trained on one split: the same split.csv, or (checkpoints from before split files)
    the same recorded seeded draw."""
    splits = [c / SPLIT_NAME for c in checkpoints]
    if all(p.is_file() for p in splits):
        return all(p.read_bytes() == splits[0].read_bytes() for p in splits[1:])
    first = configs[0].training.get("split")
    return not any(p.is_file() for p in splits) and all(c.training.get("split") == first for c in configs[1:])


def _write(out: Path, config: EnsembleConfig, checkpoints: list[Path]) -> None:
    """The folder: each member copied under ``members/k``, the shared split beside the config; written aside and
    renamed into place."""
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name, checkpoint in zip(config.ensemble, checkpoints, strict=True):
            (tmp / name).mkdir(parents=True)
            for file in (CONFIG_NAME, WEIGHTS_NAME, SPLIT_NAME):
                if (checkpoint / file).is_file():
                    shutil.copy2(checkpoint / file, tmp / name / file)
        if config.shared_split and (checkpoints[0] / SPLIT_NAME).is_file():
            shutil.copy2(checkpoints[0] / SPLIT_NAME, tmp / SPLIT_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(asdict(config), indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_config(directory: str | Path) -> EnsembleConfig:
    return EnsembleConfig(**json.loads((Path(directory) / CONFIG_NAME).read_text()))


class EnsembleModel(nn.Module):
    """The members' models, and the ensemble's config where a Predictor's model has its own."""

    def __init__(self, members: list[FusentModel], config: EnsembleConfig):
        super().__init__()
        self.members, self.config = nn.ModuleList(members), config


class EnsemblePredictor(Predictor):
    """A Predictor over several: each member answers from its own features (an encoder that several members share is
    built and run once), and the answer is the mean of their calibrated probabilities (scores), in the same shape as
    one checkpoint's, with the mean of the members' modality contributions (a member that does not read a modality
    adds 0 for it)."""

    def __init__(self, members: list[Predictor], config: EnsembleConfig, cache: FeatureCache | None = None):
        # no Predictor.__init__: there is no single model to build encoders for
        self.members, self.config = members, config
        self.model = EnsembleModel([p.model for p in members], config)  # type: ignore[assignment]
        self.modalities = [m for m in MODALITIES if any(m in p.modalities for p in members)]
        self.encoders: dict[str, Encoder | None] = {}
        self.labels, self.task = config.labels, get_task(config.task)
        self.cache, self.tta = cache, any(p.tta for p in members)
        self.cache_posts = False
        self.max_image_pixels = MAX_IMAGE_PIXELS
        # clips and transcripts are prepared once, as the first member was trained with them
        self.video, self.asr, self.max_video_seconds = members[0].video, members[0].asr, None
        self.learned_weights = None
        self.runtime = {k: any(p.runtime.get(k) for p in members) for k in members[0].runtime}

    @classmethod
    def load(
        cls,
        directory: str | Path,
        cache: FeatureCache | None = None,
        device: str | None = None,
        quantize_text: bool = False,
        onnx: bool = False,
        asr: str | None = None,
        precision: str | None = None,
        *,
        tta: bool = False,
    ) -> EnsemblePredictor:
        directory = Path(directory)
        config = read_config(directory)
        shared: dict[str, Encoder] = {}
        members = [
            Predictor(
                FusentModel.from_pretrained(directory / name, device=device),
                cache,
                device,
                quantize_text,
                onnx,
                asr,
                precision,
                tta=tta,
                shared_encoders=shared,
            )
            for name in config.ensemble
        ]
        return cls(members, config, cache)

    def prepare_samples(self, *args: Any, **kwargs: Any) -> list[Sample]:
        """Clips and transcripts as the first member reads them (members of one ensemble share these settings)."""
        return self.members[0].prepare_samples(*args, **kwargs)

    def features(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("an ensemble's members read features of their own: use outputs(), or a member's features()")

    def memo_outputs(self, memo: FeatureMemo) -> torch.Tensor:
        """Log of the mean calibrated probabilities (the mean score for regression): with the ensemble's temperature
        of 1, their softmax gives back the mean probabilities, so every metric and decoder reads them unchanged."""
        outputs = [p.memo_outputs(memo) for p in self.members]
        return self.task.combine(outputs, [p.model.config.temperature for p in self.members])

    def decide(self, memo: FeatureMemo) -> Decision:
        decisions = [p.decide(memo) for p in self.members]
        zeros = torch.zeros(len(memo.ids))
        contributions = {
            m: torch.stack([d.contributions.get(m, zeros) for d in decisions]).mean(0) for m in self.modalities
        }
        present = {m: next(d.present[m] for d in decisions if m in d.present) for m in self.modalities}
        methods = sorted({d.method for d in decisions})
        values = torch.stack([d.values for d in decisions]).mean(0)
        return Decision(values, contributions, present, methods[0] if len(methods) == 1 else "+".join(methods))
