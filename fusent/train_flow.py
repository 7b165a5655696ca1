"""The training flow: what ``fusent train`` does, as functions: load and split data, encode through the cache, fit a
head, score it. Inference (``predict.py``) sits below this and never imports it."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .calibration import fit_temperature
from .cost import stage
from .data import DatasetBundle, ProblemReport, Sample, load_dataset, split_labelled
from .data.split import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, Split, cv_from_file, cv_splits
from .data.video import VideoSettings, with_video
from .encoders import TextEncoder
from .encoders.base import pick_device
from .encoders.build import build_encoders, feature_dims
from .features import FeatureCache, FeatureTable, build_features
from .fusion import head_uses_states
from .metrics import expected_calibration_error
from .model import FusentModel, ModelConfig, predict_logits, trainable_encoders
from .options import EncoderSettings
from .tasks import get_task
from .training import TrainConfig, TrainResult, train_model

log = logging.getLogger("fusent")


@dataclass
class Prepared:
    """A dataset split and encoded once, ready for any number of heads: train and validation select, the test part
    (possibly empty) is scored once at the end."""

    bundle: DatasetBundle
    train: FeatureTable
    y_train: torch.Tensor
    val: FeatureTable
    y_val: torch.Tensor
    unlabelled: FeatureTable
    dims: dict[str, int]
    settings: EncoderSettings
    split: dict[str, Any]
    encoder_configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # saved in checkpoints, by modality
    text_encoder: TextEncoder | None = None
    encode_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    test: FeatureTable | None = None
    y_test: torch.Tensor | None = None
    parts: Split | None = None  # the samples of each part, for split files

    @property
    def has_test(self) -> bool:
        return self.test is not None and len(self.test) > 0


@stage("load")
def load_splits(
    data: str | Path,
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    split_seed: int = 13,
    limit: int | None = None,
    label_set: str | None = None,
    split_file: str | Path | None = None,
    cv: int | None = None,
    labels: list[str] | None = None,
    allow_outside: bool = False,
) -> tuple[DatasetBundle, list[Split]]:
    """The dataset and its split: one train/val/test split, or ``cv`` cross-validation folds (from ``split_file``
    when given: an ``id,part`` file for one split, an ``id,fold,part`` file for folds). ``labels`` names the classes
    (other labels are reported, not trained on); ``allow_outside`` lets a manifest name files outside its folder."""
    bundle = load_dataset(data, labels=labels, label_set=label_set, allow_outside=allow_outside)
    if cv:
        splits = (
            cv_from_file(bundle, split_file) if split_file else cv_splits(bundle, cv, val_fraction, split_seed, limit)
        )
        if len(splits) != cv:
            raise ValueError(f"{split_file} holds {len(splits)} folds, not --cv {cv}")
    else:
        splits = [split_labelled(bundle, val_fraction, test_fraction, split_seed, limit, split_file)]
    for split in splits:  # what a checkpoint needs to load the same data again (``fusent evaluate``)
        split.info.update({"label_set": label_set} if label_set else {}, **({"limit": limit} if limit else {}))
    return bundle, splits


def prepare(
    data: str | Path,
    settings: EncoderSettings | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    split_seed: int = 13,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = True,
    keep_states: bool = True,
    label_set: str | None = None,
    unlabelled: bool = True,
    *,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    split_file: str | Path | None = None,
    labels: list[str] | None = None,
    allow_outside: bool = False,
) -> Prepared:
    """Load ``data``, split its labelled samples in train / validation / test, encode every part through the cache.

    The split is read from ``split_file``, else the dataset's own when it gives one, else seeded and, for
    classification, stratified (see ``split_labelled``). ``limit`` keeps only the first N labelled and first N
    unlabelled samples (quick experiments and tests). An encoder is built only for modalities the data has: a
    transcript table never loads the image encoder.
    ``keep_states=False`` keeps pooled vectors only: enough for heads without attention, and far less memory.
    ``unlabelled=False`` leaves the samples to predict out (an empty table), for work that never predicts them.
    ``labels`` names the classes (other labels are reported, not trained on); ``allow_outside`` lets a manifest name
    files outside its folder.
    """
    bundle, splits = load_splits(
        data,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        limit=limit,
        label_set=label_set,
        split_file=split_file,
        labels=labels,
        allow_outside=allow_outside,
    )
    return encode_splits(bundle, splits, settings, cache_dir, batch_size, limit, progress, keep_states, unlabelled)[0]


def prepare_folds(
    data: str | Path,
    k: int,
    settings: EncoderSettings | None = None,
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    split_seed: int = 13,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    keep_states: bool = True,
    label_set: str | None = None,
    split_file: str | Path | None = None,
    labels: list[str] | None = None,
    allow_outside: bool = False,
) -> list[Prepared]:
    """``k`` cross-validation folds (fold i = the test part of the i-th ``Prepared``), encoded once: K head
    trainings, one encoding."""
    bundle, splits = load_splits(
        data,
        val_fraction=val_fraction,
        split_seed=split_seed,
        limit=limit,
        label_set=label_set,
        split_file=split_file,
        cv=k,
        labels=labels,
        allow_outside=allow_outside,
    )
    return encode_splits(bundle, splits, settings, cache_dir, 32, limit, progress, keep_states, unlabelled=False)


class _Unlogged(ProblemReport):
    """A problem report that logs nothing (a first pass whose problems are reported by a second)."""

    def add(self, kind: str, sample_id: str, message: str) -> None:
        self.counts[kind] += 1


def encode_splits(
    bundle: DatasetBundle,
    splits: Sequence[Split],
    settings: EncoderSettings | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = True,
    keep_states: bool = True,
    unlabelled: bool = True,
) -> list[Prepared]:
    """Encode every labelled sample the splits use once, then slice one ``Prepared`` per split."""
    to_predict = (bundle.unlabelled[:limit] if limit else bundle.unlabelled) if unlabelled else []
    labelled: dict[str, Sample] = {}
    for split in splits:
        for samples in split.parts().values():
            labelled.update((s.id, s) for s in samples)
    settings = settings or EncoderSettings()
    samples = media_inputs(list(labelled.values()), settings, cache_dir, bundle.report, progress)
    to_predict = media_inputs(to_predict, settings, cache_dir, bundle.report, progress)
    settings = settings.for_dataset([*samples, *to_predict], bundle.report)
    encoders, text_encoder = build_encoders(
        settings.text_config(), settings.image_config(), settings.device, settings.audio_config(), settings.precision
    )
    cache = FeatureCache(cache_dir)
    start = time.perf_counter()
    if distributed.active():  # each rank encodes its share into the cache, then every rank reads all of it from there
        share = distributed.shard([*samples, *to_predict], pad=False)
        scratch = _Unlogged()  # the problems are reported once, from the cache, below
        build_features(share, encoders, cache, scratch, batch_size, progress and distributed.is_main(), keep_states)
        distributed.barrier()
    table = build_features(samples, encoders, cache, bundle.report, batch_size, progress, keep_states)
    predict_table = build_features(to_predict, encoders, cache, bundle.report, batch_size, progress, keep_states)
    seconds = time.perf_counter() - start
    row = {sid: i for i, sid in enumerate(labelled)}
    task = get_task(bundle.task)
    encoder_configs = {
        "text": settings.text_config(),
        "image": settings.image_config(),
        "audio": settings.audio_config(),
        **{m: e.settings() for m, e in encoders.items() if e is not None and e.trainable},
    }
    prepared = []
    for split in splits:
        tables = {part: table.subset([row[s.id] for s in samples]) for part, samples in split.parts().items()}
        targets = {part: task.targets(samples, bundle.labels) for part, samples in split.parts().items()}
        info = {**split.info, **split.sizes()}
        prepared.append(
            Prepared(
                bundle=bundle,
                train=tables["train"],
                y_train=targets["train"],
                val=tables["val"],
                y_val=targets["val"],
                unlabelled=predict_table,
                dims=feature_dims(encoders, text_encoder),
                settings=settings,
                split=info,
                encoder_configs=encoder_configs,
                text_encoder=text_encoder,
                encode_seconds=seconds,
                test=tables["test"],
                y_test=targets["test"],
                parts=split,
            )
        )
    return prepared


def media_inputs(
    samples: Sequence[Sample],
    settings: EncoderSettings,
    cache_dir: str | Path | None,
    report: ProblemReport,
    progress: bool = True,
) -> list[Sample]:
    """Samples with their clips as frames + soundtrack (lazy) and, with ``settings.asr``, their transcripts."""
    samples = with_video(samples, VideoSettings(frames=settings.video_frames), settings.audio_seconds)
    if settings.asr == "off":
        return samples
    from .asr import TranscriptCache, transcribe_samples

    cache = TranscriptCache(FeatureCache(cache_dir).root)
    return transcribe_samples(samples, settings.asr, cache=cache, report=report, progress=progress)


@stage("train")
def fit(
    prepared: Prepared,
    head: str,
    train_config: TrainConfig | None = None,
    head_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    **train_options: Any,
) -> tuple[FusentModel, TrainResult]:
    """Build ``head`` on the prepared features and train it with the one trainer (``train_options``: the
    trainer's ``on_epoch``, ``state_file``, ``resume_from``)."""
    train_config = train_config or TrainConfig()
    if head_uses_states(head) and not prepared.train.has_states:
        raise ValueError(f"head {head!r} attends over token/patch states: prepare the data with keep_states=True")
    torch.manual_seed(train_config.seed)  # head initialisation is part of what the seed fixes
    config = ModelConfig(
        labels=prepared.bundle.labels,
        task=prepared.bundle.task,
        head=head,
        dims=prepared.dims,
        head_kwargs=dict(head_kwargs or {}),
        text_encoder=prepared.encoder_configs["text"] if "text" in prepared.dims else {},
        image_encoder=prepared.encoder_configs.get("image", {}) if "image" in prepared.dims else {},
        audio_encoder=prepared.encoder_configs.get("audio", {}) if "audio" in prepared.dims else {},
        training={**asdict(train_config), "split": prepared.split},
        video=prepared.settings.video_config(),
        asr=prepared.settings.asr,
        precision=prepared.settings.precision,
    )
    # a private copy: fine-tuning changes the encoder in place, and ``prepared`` must stay reusable across heads
    text_encoder = copy.deepcopy(prepared.text_encoder) if prepared.text_encoder is not None else None
    model = FusentModel(config, text_encoder, trainable_encoders(config)).to(pick_device(prepared.settings.device))
    result = train_model(
        model, prepared.train, prepared.y_train, prepared.val, prepared.y_val, train_config, progress, **train_options
    )
    return model, result


@stage("evaluate")
def evaluate_prepared(model: FusentModel, prepared: Prepared, calibrate: bool = True) -> dict[str, Any]:
    """Score the trained ``model`` on validation and, once, on the test part. With ``calibrate`` (classification),
    a temperature is first fitted on the validation logits and stored in ``model.config``; test ECE is reported
    before and after it. Nothing here feeds back into training or selection."""
    task, labels = get_task(prepared.bundle.task), prepared.bundle.labels
    val_out = predict_logits(model, prepared.val)
    temperature = 1.0
    if calibrate and task.name == "classification":
        temperature = fit_temperature(val_out, prepared.y_val)
    model.config.temperature = temperature
    scores: dict[str, Any] = {"validation": task.metrics(prepared.y_val, val_out, labels, temperature)}
    if prepared.has_test:
        assert prepared.test is not None and prepared.y_test is not None
        test_out = predict_logits(model, prepared.test)
        scores["test"] = task.metrics(prepared.y_test, test_out, labels, temperature)
        scores["test_outputs"] = test_out
        if task.name == "classification":
            before = expected_calibration_error(prepared.y_test.tolist(), task.probabilities(test_out).numpy())
            scores["calibration"] = {
                "temperature": temperature,
                "test_ece_before": before,
                "test_ece_after": scores["test"]["ece"],
            }
    return scores


def write_predictions(
    path: str | Path | None,
    ids: Sequence[str],
    labels: Sequence[str | float],
    header: str = "guid,tag",
    transcripts: Sequence[str | None] | None = None,
) -> None:
    """``guid,tag`` rows (the MVSA test file's own format; ``id,score`` with 4-decimal scores for regression) to
    ``path``, or to stdout when path is None/'-'; with ``transcripts`` (``--asr``), a third column of them."""
    from .prediction_file import write_prediction_file

    write_prediction_file(path, ids, labels, header, transcripts=transcripts)
