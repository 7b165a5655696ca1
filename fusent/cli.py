"""``fusent`` command line: train, compare, evaluate, predict. Logs and progress go to stderr, results to stdout."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .pipeline import EncoderSettings
from .training import TrainConfig

app = typer.Typer(
    help="fusent: multimodal (text + image) sentiment analysis. Train a fusion head on frozen pretrained "
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
        help="An MVSA-layout folder (data/{guid}.txt + .jpg, train.txt, test_without_label.txt) or a CSV/JSONL "
        "manifest with columns id,text,image,label (empty label = to predict).",
    ),
]
CacheOpt = Annotated[
    Path | None, typer.Option(help="Feature cache folder (default: $FUSENT_CACHE or ~/.cache/fusent).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; problems still reported.")]


def _setup(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr, force=True)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if quiet:
        import os

        os.environ["TQDM_DISABLE"] = "1"


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


# Options shared by `train` and `compare`; defaults come from the dataclasses that own them.
HeadArgOpt = Annotated[
    list[str] | None, typer.Option(help="Extra head argument key=value, e.g. d_model=128 (repeatable).")
]
TextModelOpt = Annotated[
    str, typer.Option(help="HF id or folder; the default MiniLM resolves offline to its PyPI package.")
]
TextPoolingOpt = Annotated[str, typer.Option(help="cls | mean | last4 (mean of last four layers, paper 003).")]
ImageModelOpt = Annotated[
    str, typer.Option(help="efficientnet-lite2 | efficientnet-lite0 (packaged) | HF id or folder | none.")
]
FinetuneOpt = Annotated[int, typer.Option(help="Fine-tune the last k text layers (0 = frozen and cached).")]
ClassWeightsOpt = Annotated[str, typer.Option(help="none | balanced | sqrt (square root of balanced).")]
LossOpt = Annotated[str, typer.Option(help="ce (cross-entropy) | focal (paper 002).")]
LimitOpt = Annotated[int | None, typer.Option(help="Use only the first N labelled and N unlabelled samples.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu / cuda (default: cuda if available).")]
DropoutOpt = Annotated[float | None, typer.Option(help="Dropout inside the head (default: the head's own).")]
HiddenOpt = Annotated[int | None, typer.Option(help="Hidden width of the head's classifier (default: the head's own).")]
PatienceOpt = Annotated[int, typer.Option(help="Early-stop after this many epochs without better val macro-F1.")]
ModalityDropoutOpt = Annotated[float, typer.Option(help="Probability of hiding one modality of a training sample.")]
_TC, _ES = TrainConfig(), EncoderSettings()


def _configs(**o: Any) -> tuple[EncoderSettings, TrainConfig, dict[str, Any]]:
    """Encoder settings, training config and head kwargs from the shared options."""
    settings = EncoderSettings(
        o["text_model"], o["text_pooling"], o["max_length"], o["finetune_text_layers"], o["image_model"], o["device"]
    )
    fields = TrainConfig.__dataclass_fields__
    config = TrainConfig(**{k: v for k, v in o.items() if k in fields})
    head_kwargs = {k: o[k] for k in ("hidden", "dropout") if o[k] is not None}
    head_kwargs.update(_parse_head_args(o["head_arg"] or []))
    return settings, config, head_kwargs


@app.command()
def train(
    data: DataOpt,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<data>-<head>).")] = None,
    head: Annotated[str, typer.Option(help="Fusion head (see `fusent heads`).")] = "native_combine",
    text_model: TextModelOpt = _ES.text_model,
    text_pooling: TextPoolingOpt = _ES.text_pooling,
    max_length: Annotated[int, typer.Option(help="Max text tokens.")] = _ES.max_length,
    image_model: ImageModelOpt = _ES.image_model,
    finetune_text_layers: FinetuneOpt = _ES.finetune_text_layers,
    text_lr: Annotated[float, typer.Option(help="Learning rate of fine-tuned text layers.")] = _TC.text_lr,
    val_fraction: Annotated[float, typer.Option(help="Stratified validation fraction.")] = 0.2,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/validation split.")] = 13,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and batch order.")] = _TC.seed,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = _TC.epochs,
    batch_size: int = _TC.batch_size,
    lr: float = _TC.lr,
    weight_decay: float = _TC.weight_decay,
    dropout: DropoutOpt = None,
    hidden: HiddenOpt = None,
    patience: PatienceOpt = _TC.patience,
    class_weights: ClassWeightsOpt = _TC.class_weights,
    loss: LossOpt = _TC.loss,
    focal_gamma: Annotated[float, typer.Option(help="Focal loss gamma (0 = cross-entropy).")] = _TC.focal_gamma,
    modality_dropout: ModalityDropoutOpt = _TC.modality_dropout,
    head_arg: HeadArgOpt = None,
    limit: LimitOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a fusion head: split the labelled data (stratified), encode through the feature cache, train with
    early stopping on validation macro-F1, print validation metrics, save the checkpoint and predictions."""
    _setup(quiet)
    from .fusion import head_uses_states
    from .metrics import format_metrics
    from .pipeline import fit, prepare, write_predictions
    from .training import predict_logits

    _check_heads([head])
    settings, config, head_kwargs = _configs(**locals())
    out = out or Path("runs") / f"{data.stem}-{head}"
    prepared = prepare(
        data,
        settings,
        val_fraction,
        split_seed,
        cache_dir,
        limit=limit,
        progress=not quiet,
        keep_states=head_uses_states(head),
    )
    if limit:
        prepared.split["limit"] = limit
    model, result = fit(prepared, head, config, head_kwargs, progress=not quiet)
    model.save_pretrained(out / "checkpoint")
    report = prepared.bundle.report
    _write_json(
        out / "metrics.json",
        {
            "head": head,
            "best_epoch": result.best_epoch,
            "train_seconds": result.seconds,
            "encode_seconds": prepared.encode_seconds,
            "validation": result.val_metrics,
            "history": result.history,
            "head_report": model.head.report(),
            "data_problems": dict(report.counts),
            "data_notes": dict(report.notes),
        },
    )
    (out / "problems.txt").write_text("\n".join(report.messages) + ("\n" if report.messages else ""))
    if len(prepared.unlabelled):
        pred = predict_logits(model, prepared.unlabelled).argmax(1).tolist()
        write_predictions(out / "predictions.txt", prepared.unlabelled.ids, [prepared.bundle.labels[i] for i in pred])
    typer.echo(
        format_metrics(
            result.val_metrics,
            f"{head}: validation (best epoch {result.best_epoch}, "
            f"{result.seconds:.1f}s training, {prepared.encode_seconds:.1f}s encoding)",
        )
    )
    if model.head.report():
        typer.echo(f"learned: {json.dumps(model.head.report())}")
    typer.echo(report.summary())
    typer.echo(
        f"saved: {out / 'checkpoint'}, {out / 'metrics.json'}"
        + (f", {len(prepared.unlabelled)} predictions in {out / 'predictions.txt'}" if len(prepared.unlabelled) else "")
    )


def _check_heads(heads: list[str]) -> None:
    from .fusion import available_heads

    unknown = [h for h in heads if h not in available_heads()]
    if unknown:
        raise typer.BadParameter(
            f"unknown head(s) {', '.join(unknown)}; available: {', '.join(available_heads())}", param_hint="--head"
        )


@app.command()
def compare(
    data: DataOpt,
    out: Annotated[Path | None, typer.Option(help="Report folder (default runs/<data>-compare).")] = None,
    heads: Annotated[
        str, typer.Option(help="Comma-separated heads, or 'all' (every registered head, aliases left out).")
    ] = "all",
    seeds: Annotated[int, typer.Option(help="Seeds per head (initialisation and batch order; one split).")] = 5,
    text_model: TextModelOpt = _ES.text_model,
    text_pooling: TextPoolingOpt = _ES.text_pooling,
    max_length: Annotated[int, typer.Option(help="Max text tokens.")] = _ES.max_length,
    image_model: ImageModelOpt = _ES.image_model,
    finetune_text_layers: FinetuneOpt = _ES.finetune_text_layers,
    text_lr: Annotated[float, typer.Option(help="Learning rate of fine-tuned text layers.")] = _TC.text_lr,
    val_fraction: Annotated[float, typer.Option(help="Stratified validation fraction.")] = 0.2,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/validation split.")] = 13,
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = _TC.epochs,
    batch_size: int = _TC.batch_size,
    lr: float = _TC.lr,
    weight_decay: float = _TC.weight_decay,
    dropout: DropoutOpt = None,
    hidden: HiddenOpt = None,
    patience: PatienceOpt = _TC.patience,
    class_weights: ClassWeightsOpt = _TC.class_weights,
    loss: LossOpt = _TC.loss,
    focal_gamma: Annotated[float, typer.Option(help="Focal loss gamma (0 = cross-entropy).")] = _TC.focal_gamma,
    modality_dropout: ModalityDropoutOpt = _TC.modality_dropout,
    head_arg: HeadArgOpt = None,
    limit: LimitOpt = None,
    cache_dir: CacheOpt = None,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run every head (or --heads) with several seeds on the same split and cached features; write a Markdown and
    CSV table (mean ± std, per-class F1, train time, paired t-test and McNemar against the best head, one-way
    ANOVA) and plots (bars with error bars, confusion matrix and per-class F1 per epoch of the best head)."""
    _setup(quiet)
    from .compare import run_compare, summarise, write_report
    from .fusion import available_heads, head_uses_states
    from .pipeline import prepare

    names = available_heads(aliases=False) if heads == "all" else [h.strip() for h in heads.split(",") if h.strip()]
    _check_heads(names)
    settings, config, head_kwargs = _configs(**locals())
    out = out or Path("runs") / f"{data.stem}-compare"

    def features(keep_states: bool):
        return prepare(
            data,
            settings,
            val_fraction,
            split_seed,
            cache_dir,
            limit=limit,
            progress=not quiet,
            keep_states=keep_states,
        )

    pooled = features(False)
    with_states = features(True) if any(head_uses_states(h) for h in names) else None
    typer.echo(
        f"comparing {len(names)} heads x {seeds} seeds on {len(pooled.train)} train / {len(pooled.val)} "
        f"validation samples",
        err=True,
    )
    runs = run_compare(pooled, with_states, names, list(range(seeds)), config, head_kwargs, progress=not quiet)
    summary = summarise(runs, pooled.bundle.labels, pooled.y_val.tolist())
    paths = write_report(summary, runs, out)
    typer.echo(paths[0].read_text())
    typer.echo(pooled.bundle.report.summary())
    typer.echo("wrote: " + ", ".join(str(p) for p in paths))


def _load_bundle_samples(data: Path, split: str, model_config: Any) -> tuple[list[Any], list[str], Any]:
    from .data import load_dataset, stratified_split

    bundle = load_dataset(data, labels=model_config.labels)
    if split == "all":
        return bundle.labelled, bundle.labels, bundle
    if split != "val":
        raise typer.BadParameter("--split must be val or all", param_hint="--split")
    info = model_config.training.get("split", {})
    labelled = bundle.labelled[: info["limit"]] if info.get("limit") else bundle.labelled
    _, val = stratified_split(labelled, info.get("val_fraction", 0.2), info.get("seed", 13))
    return val, bundle.labels, bundle


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `fusent train`.")],
    data: DataOpt,
    split: Annotated[
        str, typer.Option(help="val = the validation split the checkpoint was selected on; all = every labelled row.")
    ] = "val",
    out: Annotated[Path | None, typer.Option(help="Also write the metrics as JSON here.")] = None,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a checkpoint on labelled data: accuracy, P/R/F1 macro and weighted, per-class F1, confusion."""
    _setup(quiet)
    from .metrics import classification_metrics, format_metrics
    from .predict import Predictor

    predictor = Predictor.from_pretrained(checkpoint, cache_dir)
    samples, labels, bundle = _load_bundle_samples(data, split, predictor.model.config)
    proba = predictor.predict_proba_samples(samples, bundle.report, progress=not quiet)
    index = {label: i for i, label in enumerate(labels)}
    metrics = classification_metrics([index[s.label] for s in samples], proba.argmax(1).tolist(), labels)
    typer.echo(format_metrics(metrics, f"{predictor.model.config.head} on {data} ({split}, n={len(samples)})"))
    typer.echo(bundle.report.summary())
    if out:
        _write_json(out, metrics)


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `fusent train`.")],
    data: DataOpt,
    out: Annotated[Path | None, typer.Option(help="Write guid,tag rows here (default: stdout).")] = None,
    all_rows: Annotated[
        bool, typer.Option("--all", help="Predict every sample, not only the unlabelled ones.")
    ] = False,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write ``guid,tag`` predictions for every id of test_without_label.txt (or manifest rows without a label).
    Samples with a broken or missing modality are still predicted from what they have."""
    _setup(quiet)
    from .data import load_dataset
    from .pipeline import write_predictions
    from .predict import Predictor

    predictor = Predictor.from_pretrained(checkpoint, cache_dir)
    bundle = load_dataset(data, labels=predictor.labels)
    samples = bundle.labelled + bundle.unlabelled if all_rows else bundle.unlabelled
    if not samples:
        raise typer.BadParameter(f"{data} has no samples to predict (use --all to predict labelled rows)")
    labels = predictor.predict_samples(samples, bundle.report)
    write_predictions(out, [s.id for s in samples], labels)
    log.warning(bundle.report.summary()) if bundle.report.counts else None
    if out:
        typer.echo(f"wrote {len(samples)} predictions to {out}", err=True)


@app.command()
def heads() -> None:
    """List the registered fusion heads."""
    from .fusion import available_heads

    typer.echo("\n".join(available_heads()))


if __name__ == "__main__":  # pragma: no cover
    app()
