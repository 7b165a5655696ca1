"""``fusent`` command line: train, compare, evaluate, predict, serve. Logs and progress go to stderr, results to
stdout."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .data.split import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION
from .pipeline import EncoderSettings
from .training import TrainConfig

#: compare's early-stopping patience: the attention heads peak within a few epochs. On MVSA (13 heads x 5 seeds)
#: 5 stale epochs instead of 8 changed the selected epoch of 11 of 65 runs, the best head's mean macro-F1 by 0.0005
#: (native_combine's by 0.006) and took 26% less time (7.5 instead of 10.1-10.8 minutes on 2 cores).
COMPARE_PATIENCE = 5

app = typer.Typer(
    help="fusent: multimodal (text + image + audio) sentiment analysis. Train a fusion head on frozen pretrained "
    "encoders, evaluate it, and predict labels for new posts. Runs offline with the packaged default encoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("fusent")

DataOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        help="An MVSA-layout folder (data/{guid}.txt + .jpg, train.txt, test_without_label.txt), a Memotion 7k "
        "folder (labels.csv, test_without_label.csv, images/), a CMU-MOSI style regression folder (label.csv with "
        "id,text,label in [-3,3],mode; test_without_label.csv), a RAVDESS speech folder (Actor_NN/*.flac; split by "
        "actor), a CSV/JSONL manifest with columns id,text,image,audio,label (empty label = to predict), or (to "
        "predict) a folder of audio files.",
    ),
]
CacheOpt = Annotated[
    Path | None, typer.Option(help="Feature cache folder (default: $FUSENT_CACHE or ~/.cache/fusent).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; problems still reported.")]
QuantizeOpt = Annotated[
    bool, typer.Option(help="CPU speed option: int8 dynamic quantisation of the (frozen) text encoder.")
]
OnnxOpt = Annotated[bool, typer.Option(help="CPU speed option: EfficientNet-Lite image encoder in ONNX Runtime.")]
TtaOpt = Annotated[
    bool, typer.Option(help="Test-time augmentation: average each post's logits with those of its mirrored image.")
]


def _setup() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr, force=True)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _parse_head_args(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--head-arg expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


# Options shared by `train` and `compare`, declared once; defaults come from the dataclasses that own them.
_TC, _ES = TrainConfig(), EncoderSettings()


def _opt(name: str, kind: Any, default: Any, help: str) -> inspect.Parameter:
    annotation = Annotated[kind, typer.Option(help=help)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


_SHARED_OPTIONS = [
    _opt(
        "text_model", str, _ES.text_model, "HF id or folder; the default MiniLM resolves offline to its PyPI package."
    ),
    _opt("text_pooling", str, _ES.text_pooling, "cls | mean | last4 (mean of last four layers, paper 003)."),
    _opt("max_length", int, _ES.max_length, "Max text tokens."),
    _opt(
        "image_model",
        str,
        _ES.image_model,
        "efficientnet-lite2 | efficientnet-lite0 (packaged) | inception-sa (paper 001's 2D-Inception + self-attention,"
        " trained here from scratch) | HF id or folder | none.",
    ),
    _opt(
        "audio_model",
        str,
        _ES.audio_model,
        "auto (= lstm-cnn when the dataset has audio, else none) | lstm-cnn (paper 003) | stft-cnn (paper 001), both "
        "trained here from scratch | mfcc | logmel | stft (frozen features) | HF id or folder (wav2vec2, HuBERT, "
        "Whisper encoder) | none.",
    ),
    _opt("audio_seconds", float, _ES.audio_seconds, "Crop audio clips to this many seconds (0 = whole clip)."),
    _opt(
        "label_set",
        str | None,
        None,
        "For datasets with several label sets: RAVDESS sentiment (3 classes, surprised left out; default) | emotion.",
    ),
    _opt("finetune_text_layers", int, 0, "Fine-tune the last k text layers (0 = frozen and cached)."),
    _opt("text_lr", float, _TC.text_lr, "Learning rate of fine-tuned text layers."),
    _opt(
        "finetune_image_layers",
        int,
        0,
        "Fine-tune the last k blocks of the pretrained image model (EfficientNet-Lite or HF) with their own "
        "--image-lr; pixels are cached instead of features and training images augmented (0 = frozen and cached).",
    ),
    _opt("image_lr", float, _TC.image_lr, "Learning rate of fine-tuned image layers."),
    _opt(
        "val_fraction",
        float,
        DEFAULT_VAL_FRACTION,
        "Validation fraction (stratified): it alone selects epochs and settings; unused when the data gives its own "
        "split.",
    ),
    _opt(
        "test_fraction",
        float,
        DEFAULT_TEST_FRACTION,
        "Test fraction (stratified), scored once at the end and never used to select; 0 = no test part. Data with "
        "its own split keeps it.",
    ),
    _opt("split_seed", int, 13, "Seed of the train/validation/test split (and of the CV folds)."),
    _opt(
        "split_file",
        Path | None,
        None,
        "Reuse a split: an id,part file (the split.csv a run writes), or with --cv an id,fold,part file.",
    ),
    _opt(
        "cv",
        int | None,
        None,
        "k-fold cross-validation: each fold is the test part once (stratified; grouped by speaker / video); reports "
        "mean ± std over folds and writes out-of-fold predictions.",
    ),
    _opt(
        "calibrate",
        bool,
        True,
        "Fit a softmax temperature on validation (temperature scaling), stored in the checkpoint.",
    ),
    _opt("epochs", int, _TC.epochs, "Maximum epochs."),
    _opt("batch_size", int, _TC.batch_size, "Batch size."),
    _opt("lr", float, _TC.lr, "Learning rate of the head."),
    _opt("weight_decay", float, _TC.weight_decay, "Weight decay."),
    _opt("optimizer", str, _TC.optimizer, "adamw | sgd (with --momentum)."),
    _opt("momentum", float, _TC.momentum, "SGD momentum."),
    _opt("schedule", str, _TC.schedule, "Learning rate after warm-up: constant | cosine | linear (decay to 0)."),
    _opt("warmup_epochs", float, _TC.warmup_epochs, "Linear learning-rate warm-up over this many epochs."),
    _opt("dropout", float | None, None, "Dropout inside the head (default: the head's own)."),
    _opt("hidden", int | None, None, "Hidden width of the head's classifier (default: the head's own)."),
    _opt(
        "patience",
        int | None,
        None,
        f"Early-stop after this many epochs without better val macro-F1 (MAE) (default: {_TC.patience}; compare: "
        f"{COMPARE_PATIENCE}).",
    ),
    _opt("class_weights", str, _TC.class_weights, "none | balanced | sqrt (square root of balanced)."),
    _opt(
        "loss",
        str,
        _TC.loss,
        "auto (ce, or l1 for regression) | ce (cross-entropy) | focal (paper 002) | l1 | mse (regression).",
    ),
    _opt("focal_gamma", float, _TC.focal_gamma, "Focal loss gamma (0 = cross-entropy)."),
    _opt("modality_dropout", float, _TC.modality_dropout, "Probability of hiding one modality of a training sample."),
    _opt(
        "augment",
        bool | None,
        _TC.augment,
        "Augment training inputs of encoders trained here: images (crop, flip, rotation / colour; inception-sa, "
        "fine-tuned image layers), audio (lstm-cnn, stft-cnn). Default: on for fine-tuned image layers only.",
    ),
    _opt(
        "contrastive_weight",
        float,
        _TC.contrastive_weight,
        "Weight of paper 001's InfoNCE term between two augmented views per modality (0 = off).",
    ),
    _opt("temperature", float, _TC.temperature, "InfoNCE temperature tau."),
    _opt("head_arg", list[str] | None, None, "Extra head argument key=value, e.g. d_model=128 (repeatable)."),
    _opt("limit", int | None, None, "Use only the first N labelled and N unlabelled samples."),
    _opt("cache_dir", Path | None, None, "Feature cache folder (default: $FUSENT_CACHE or ~/.cache/fusent)."),
    _opt("device", str | None, None, "cpu / cuda (default: cuda if available)."),
]


def with_shared_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the encoder and training options above; it receives them collected in ``options``."""
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.name != "options"
    ]
    params = own + _SHARED_OPTIONS

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        options = {p.name: kwargs.pop(p.name) for p in _SHARED_OPTIONS}
        command(options=options, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def _configs(options: dict[str, Any], **extra: Any) -> tuple[EncoderSettings, TrainConfig, dict[str, Any]]:
    """Encoder settings, training config and head kwargs from the shared options (plus e.g. ``seed``)."""
    o = {**options, **extra}
    settings = EncoderSettings(
        o["text_model"],
        o["text_pooling"],
        o["max_length"],
        o["finetune_text_layers"],
        o["image_model"],
        o["device"],
        o["audio_model"],
        o["audio_seconds"] or None,
        finetune_image_layers=o["finetune_image_layers"],
    )
    fields = TrainConfig.__dataclass_fields__
    config = TrainConfig(**{k: v for k, v in o.items() if k in fields and v is not None})
    head_kwargs = {k: o[k] for k in ("hidden", "dropout") if o[k] is not None}
    head_kwargs.update(_parse_head_args(o["head_arg"] or []))
    return settings, config, head_kwargs


def _prepare(
    data: Path,
    options: dict[str, Any],
    settings: EncoderSettings,
    quiet: bool,
    keep_states: bool,
    unlabelled: bool = True,
):
    from .pipeline import prepare

    o = options
    return prepare(
        data,
        settings,
        o["val_fraction"],
        o["split_seed"],
        o["cache_dir"],
        limit=o["limit"],
        progress=not quiet,
        keep_states=keep_states,
        label_set=o["label_set"],
        unlabelled=unlabelled,
        test_fraction=o["test_fraction"],
        split_file=o["split_file"],
    )


def _prepare_folds(data: Path, options: dict[str, Any], settings: EncoderSettings, quiet: bool, keep_states: bool):
    from .pipeline import prepare_folds

    o = options
    return prepare_folds(
        data,
        o["cv"],
        settings,
        val_fraction=o["val_fraction"],
        split_seed=o["split_seed"],
        cache_dir=o["cache_dir"],
        limit=o["limit"],
        progress=not quiet,
        keep_states=keep_states,
        label_set=o["label_set"],
        split_file=o["split_file"],
    )


@app.command()
@with_shared_options
def train(
    data: DataOpt,
    options: dict[str, Any],
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<data>-<head>).")] = None,
    head: Annotated[str, typer.Option(help="Fusion head (see `fusent heads`).")] = "native_combine",
    seed: Annotated[int, typer.Option(help="Seed of initialisation and batch order.")] = _TC.seed,
    quiet: QuietOpt = False,
) -> None:
    """Train a fusion head: split the labelled data in train / validation / test (stratified 80/10/10, or the
    dataset's own split), encode through the feature cache, train with early stopping on validation macro-F1 (MAE for
    regression data), fit a softmax temperature on validation, then score the test part once. Prints validation and
    test metrics; writes the checkpoint, split.csv, metrics.json, ROC / PR / reliability plots and predictions.
    With --cv K: K folds, each the test part once; per-fold and mean ± std metrics, out-of-fold predictions."""
    _setup()
    from .fusion import head_uses_states
    from .runs import cv_run, format_cv, train_run
    from .tasks import get_task

    _check_heads([head])
    settings, config, head_kwargs = _configs(options, seed=seed)
    out = out or Path("runs") / f"{data.stem}-{head}"
    keep_states = head_uses_states(head)
    if options["cv"]:
        folds = _prepare_folds(data, options, settings, quiet, keep_states)
        run = cv_run(folds, head, config, head_kwargs, out, calibrate=options["calibrate"], progress=not quiet)
        typer.echo(format_cv(run, folds[0].bundle.task))
        typer.echo(folds[0].bundle.report.summary())
        typer.echo("wrote: " + ", ".join(str(p) for p in run.files))
        return
    prepared = _prepare(data, options, settings, quiet, keep_states=keep_states)
    run = train_run(prepared, head, config, head_kwargs, out, calibrate=options["calibrate"], progress=not quiet)
    task = get_task(prepared.bundle.task)
    sizes = prepared.split
    typer.echo(
        task.format(
            run.scores["validation"],
            f"{head}: validation, n={sizes['n_val']} (selected the epoch: best {run.best_epoch}; "
            f"{run.train_seconds:.1f}s training, {prepared.encode_seconds:.1f}s encoding)",
        )
    )
    if "test" in run.scores:
        typer.echo("")
        typer.echo(task.format(run.scores["test"], f"{head}: TEST, n={sizes['n_test']} (held out, scored once)"))
        if "calibration" in run.scores:
            c = run.scores["calibration"]
            typer.echo(
                f"calibration: temperature {c['temperature']:.3f} (fitted on validation); test ECE "
                f"{c['test_ece_before']:.4f} -> {c['test_ece_after']:.4f}"
            )
    else:
        typer.echo("no test part (--test-fraction 0): the figures above are validation figures", err=True)
    if run.learned:
        typer.echo(f"learned: {json.dumps(run.learned)}")
    typer.echo(prepared.bundle.report.summary())
    typer.echo("saved: " + ", ".join(str(p) for p in run.files))


def _check_heads(heads: list[str]) -> None:
    from .fusion import available_heads

    unknown = [h for h in heads if h not in available_heads()]
    if unknown:
        raise typer.BadParameter(
            f"unknown head(s) {', '.join(unknown)}; available: {', '.join(available_heads())}", param_hint="--head"
        )


@app.command()
@with_shared_options
def compare(
    data: DataOpt,
    options: dict[str, Any],
    out: Annotated[Path | None, typer.Option(help="Report folder (default runs/<data>-compare).")] = None,
    heads: Annotated[
        str, typer.Option(help="Comma-separated heads, or 'all' (every registered head, aliases left out).")
    ] = "all",
    seeds: Annotated[int, typer.Option(help="Seeds per head (initialisation and batch order; one split).")] = 5,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Runs trained at once in forked processes (default: one per core up to 4; 1 on a GPU)."
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run every head (or --heads) with several seeds on the same split and cached features; write a Markdown and
    CSV table (mean ± std, per-class F1, train time, paired t-test and McNemar against the best head, one-way
    ANOVA) and plots (bars with error bars, confusion matrix and per-class F1 per epoch of the best head)."""
    _setup()
    from .compare import default_workers, pool_image_patches, run_compare, summarise, write_report
    from .fusion import available_heads, head_fits, head_uses_states
    from .fusion.tokens import DEFAULT_PATCH_GRID

    names = available_heads(aliases=False) if heads == "all" else [h.strip() for h in heads.split(",") if h.strip()]
    _check_heads(names)
    patience = COMPARE_PATIENCE if options["patience"] is None else options["patience"]
    settings, config, head_kwargs = _configs(options, patience=patience)
    out = out or Path("runs") / f"{data.stem}-compare"
    pooled = _prepare(data, options, settings, quiet, keep_states=False, unlabelled=False)
    if pooled.bundle.task != "classification":
        raise typer.BadParameter(
            f"{data} is a {pooled.bundle.task} dataset; compare's table and significance tests are for "
            "classification (run `fusent train --head ...` per head for MAE / Corr / Acc-2)",
            param_hint="--data",
        )
    if heads == "all":  # e.g. audio_only on text+image data: every head that can read these modalities
        names = [h for h in names if head_fits(h, pooled.dims)]
    needs_states = any(head_uses_states(h) for h in names)
    with_states = _prepare(data, options, settings, quiet, True, unlabelled=False) if needs_states else None
    if with_states is not None:  # pooled here, so the full patch maps are freed before training starts
        with_states = pool_image_patches(with_states, head_kwargs.get("patch_grid", DEFAULT_PATCH_GRID))
    workers = workers or default_workers(settings.device)
    typer.echo(
        f"comparing {len(names)} heads x {seeds} seeds on {len(pooled.train)} train / {len(pooled.val)} "
        f"validation samples, {workers} runs at a time",
        err=True,
    )
    runs = run_compare(
        pooled, with_states, names, list(range(seeds)), config, head_kwargs, progress=not quiet, workers=workers
    )
    summary = summarise(runs, pooled.bundle.labels, pooled.y_val.tolist())
    paths = write_report(summary, runs, out)
    typer.echo(paths[0].read_text())
    typer.echo(pooled.bundle.report.summary())
    typer.echo("wrote: " + ", ".join(str(p) for p in paths))


def _load_for(data: Path, model_config: Any) -> Any:
    """The dataset at ``data``, checked to be of the checkpoint's task (a score model cannot label, nor vice versa)."""
    from .data import load_dataset

    label_set = model_config.training.get("split", {}).get("label_set")
    bundle = load_dataset(data, labels=model_config.labels or None, label_set=label_set)
    if bundle.task != model_config.task:
        raise typer.BadParameter(
            f"{data} is a {bundle.task} dataset but the checkpoint is a {model_config.task} model", param_hint="--data"
        )
    return bundle


def _load_bundle_samples(
    data: Path, split: str, model_config: Any, checkpoint: Path
) -> tuple[list[Any], list[str], Any]:
    """The labelled samples of ``split``: the parts the checkpoint was trained with (its split.csv, else the split
    recomputed from its recorded settings), or every labelled row."""
    from .data.split import split_labelled

    bundle = _load_for(data, model_config)
    if split == "all":
        return bundle.labelled, bundle.labels, bundle
    if split not in ("val", "test"):
        raise typer.BadParameter("--split must be test, val or all", param_hint="--split")
    info = model_config.training.get("split", {})
    split_file = checkpoint / "split.csv"
    if not getattr(model_config, "shared_split", True):  # an ensemble whose members saw different training data
        raise typer.BadParameter(
            "the ensemble's members were trained on different splits, so no part is unseen by all of them: use "
            "--split all on other data (or ensemble runs trained with one --split-file)",
            param_hint="--split",
        )
    if split_file.is_file():
        parts = split_labelled(bundle, split_file=split_file)
    else:  # a checkpoint from before split files: the same seeded draw again
        parts = split_labelled(
            bundle,
            info.get("val_fraction", 0.2),
            info.get("test_fraction", 0.0),
            info.get("seed", 13),
            info.get("limit"),
        )
    chosen = parts.test if split == "test" else parts.val
    if split == "test" and not chosen:
        raise typer.BadParameter(
            "this checkpoint was trained without a test part (--test-fraction 0); use --split val (optimistic: it "
            "selected the epoch) or --split all on other data",
            param_hint="--split",
        )
    return chosen, bundle.labels, bundle


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `fusent train`.")],
    data: DataOpt,
    split: Annotated[
        str,
        typer.Option(
            help="test = the held-out test part of the checkpoint's split (never used to select); val = the "
            "validation part that selected the epoch (optimistic); all = every labelled row (for other data)."
        ),
    ] = "test",
    out: Annotated[Path | None, typer.Option(help="Also write the metrics as JSON here.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Write ROC, PR and reliability plots into this folder.")] = None,
    cache_dir: CacheOpt = None,
    quantize_text: QuantizeOpt = False,
    onnx: OnnxOpt = False,
    tta: TtaOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a checkpoint on labelled data: accuracy, P/R/F1 macro and weighted, per-class F1 and ROC-AUC,
    PR-AUC, ECE (with the checkpoint's calibration temperature), confusion; for a regression checkpoint MAE, Corr,
    Acc-7, Acc-2 and F1 (has-0 and non-0)."""
    _setup()
    from .predict import Predictor

    predictor = Predictor.from_pretrained(checkpoint, cache_dir, quantize_text=quantize_text, onnx=onnx, tta=tta)
    samples, labels, bundle = _load_bundle_samples(data, split, predictor.model.config, checkpoint)
    if not samples:
        raise typer.BadParameter(f"{data} has no labelled samples in split {split!r}", param_hint="--split")
    task, temperature = predictor.task, predictor.model.config.temperature
    outputs = predictor.outputs(samples, bundle.report, progress=not quiet)
    y = task.targets(samples, labels)
    metrics = task.metrics(y, outputs, labels, temperature)
    typer.echo(task.format(metrics, f"{predictor.model.config.head} on {data} ({split}, n={len(samples)})"))
    typer.echo(bundle.report.summary())
    if plots and task.name == "classification":
        from .plots import curve_plots

        probs = task.probabilities(outputs, temperature).numpy()
        curve_plots(y.tolist(), probs, labels, plots, f"{predictor.model.config.head}, {split}")
    if out:
        _write_json(out, metrics)


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `fusent train`.")],
    data: DataOpt,
    out: Annotated[
        Path | None, typer.Option(help="Write the predictions here (default: stdout), in the dataset's format.")
    ] = None,
    all_rows: Annotated[
        bool, typer.Option("--all", help="Predict every sample, not only the unlabelled ones.")
    ] = False,
    cache_dir: CacheOpt = None,
    tta: TtaOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write ``guid,tag`` predictions (``id,score`` for a regression checkpoint; the dataset's own format) for every
    id of test_without_label (or manifest rows without a label). Samples with a broken or missing modality are
    still predicted from what they have."""
    _setup()
    from .pipeline import write_predictions
    from .predict import Predictor

    predictor = Predictor.from_pretrained(checkpoint, cache_dir, tta=tta)
    bundle = _load_for(data, predictor.model.config)
    samples = bundle.labelled + bundle.unlabelled if all_rows else bundle.unlabelled
    if not samples:
        raise typer.BadParameter(f"{data} has no samples to predict (use --all to predict labelled rows)")
    labels = predictor.predict_samples(samples, bundle.report, progress=not quiet)
    write_predictions(out, [s.id for s in samples], labels, bundle.prediction_header)
    log.warning(bundle.report.summary()) if bundle.report.counts else None
    if out:
        typer.echo(f"wrote {len(samples)} predictions to {out}", err=True)


@app.command()
def serve(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `fusent train`.")],
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1 = this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Model calls running at once (a bounded thread pool).")] = 1,
    threads: Annotated[int | None, typer.Option(help="Torch intra-op threads (default: torch's choice).")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body, in MB.")] = 10.0,
    max_image_pixels: Annotated[int, typer.Option(help="Largest image (width x height), from its header.")] = (
        40_000_000
    ),
    max_text_chars: Annotated[int, typer.Option(help="Longest text, in characters.")] = 10_000,
    max_batch: Annotated[int, typer.Option(help="Most posts in one /predict/batch request.")] = 64,
    timeout: Annotated[float, typer.Option(help="Seconds a request may wait and run before a 503.")] = 30.0,
    max_queue: Annotated[int, typer.Option(help="Requests waiting for a worker before new ones get a 503.")] = 512,
    quantize_text: QuantizeOpt = False,
    onnx: OnnxOpt = False,
    tta: TtaOpt = False,
    device: Annotated[str | None, typer.Option(help="cpu / cuda (default: cuda if available).")] = None,
) -> None:
    """Serve a checkpoint over HTTP: POST /predict (multipart or JSON), POST /predict/batch, GET /health,
    GET /metadata, a web page at /, OpenAPI docs at /docs. Needs the serve extra: pip install 'fusent[serve]'."""
    _setup()
    try:
        from .serve import ServeSettings
        from .serve import serve as run_server
    except ModuleNotFoundError as exc:
        typer.echo(f"fusent serve needs {exc.name}, from the serve extra: pip install 'fusent[serve]'", err=True)
        raise typer.Exit(2) from None
    import torch

    if threads:
        torch.set_num_threads(threads)
    settings = ServeSettings(
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_image_pixels=max_image_pixels,
        max_text_chars=max_text_chars,
        max_batch=max_batch,
        timeout_s=timeout,
        workers=workers,
        max_queue=max_queue,
    )
    options = {"device": device, "quantize_text": quantize_text, "onnx": onnx, "tta": tta}
    run_server(str(checkpoint), host, port, settings, options)


@app.command()
def ensemble(
    runs: Annotated[
        list[Path], typer.Argument(help="Two or more run folders (holding checkpoint/) or checkpoint folders.")
    ],
    out: Annotated[Path, typer.Option(help="The ensemble checkpoint folder to write.")],
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Combine checkpoints (seeds, heads or encoders; same task and labels) into one ensemble checkpoint that averages
    their calibrated probabilities (mean scores for regression). predict, evaluate and serve load it like any
    checkpoint; members trained on one split keep its split.csv, so `fusent evaluate OUT` scores the test part none
    of them saw."""
    from .ensemble import EnsembleError, build_ensemble

    try:
        path, config = build_ensemble(runs, out, force=force)
    except EnsembleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for member in config.members:
        typer.echo(
            f"member: {member['source']} ({member['head']}, seed {member['seed']}, T={member['temperature']:.3f})"
        )
    if config.shared_split:
        typer.echo("the members share one split: `fusent evaluate` scores its test part, unseen by all of them")
    else:
        typer.echo(
            "warning: the members were trained on different splits: evaluate the ensemble on other data only "
            "(--split all)",
            err=True,
        )
    typer.echo(f"saved: {path} ({config.combine} of {len(config.ensemble)} checkpoints)")


@app.command()
def heads() -> None:
    """List the registered fusion heads."""
    from .fusion import available_heads

    typer.echo("\n".join(available_heads()))


if __name__ == "__main__":  # pragma: no cover
    app()
