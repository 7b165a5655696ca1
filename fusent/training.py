"""The one trainer every fusion head goes through: AdamW (or SGD with momentum), an optional warm-up + cosine /
linear learning-rate schedule, early stopping on validation macro-F1 (MAE for regression), best restore."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed, resume
from .accel import MixedPrecision, to_device
from .features import FeatureTable, ModalityBatch
from .losses import info_nce, make_loss
from .model import FusentModel, batch_texts, move_batch, padded_lengths, predict_logits
from .options import ClassWeights, ScheduleName, TrainConfig
from .tasks import get_task


@dataclass
class TrainResult:
    best_epoch: int
    val_metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weight_vector(y: torch.Tensor, num_classes: int, mode: ClassWeights) -> torch.Tensor | None:
    """``balanced`` = n / (C * n_c) as in scikit-learn; ``sqrt`` = its square root (softer on rare classes)."""
    if mode == "none":
        return None
    if y.is_floating_point():
        raise ValueError("class weights need class labels, not regression scores; use class_weights='none'")
    counts = torch.bincount(y, minlength=num_classes).float().clamp(min=1)
    weights = len(y) / (num_classes * counts)
    return weights.sqrt() if mode == "sqrt" else weights


def _drop_modalities(inputs: dict[str, ModalityBatch], p: float, gen: torch.Generator) -> dict[str, ModalityBatch]:
    """Mark a modality absent for a random p of rows, never every modality of one row."""
    if p <= 0 or len(inputs) < 2:
        return inputs
    names = list(inputs)
    rows = next(iter(inputs.values())).present.shape[0]
    drop = torch.rand(rows, len(names), generator=gen) < p
    drop[drop.all(1), 0] = False
    return {
        m: ModalityBatch(b.states, b.mask, b.pooled, b.present & ~drop[:, j]) for j, (m, b) in enumerate(inputs.items())
    }


def _feature_view(batch: ModalityBatch, p: float, gen: torch.Generator) -> ModalityBatch:
    """A view of cached features: token dropout on the states (one real token always kept) and feature dropout
    on the pooled vector, which is all the pooled heads read."""
    device = batch.pooled.device
    keep = (torch.rand(batch.mask.shape, generator=gen) >= p).to(device) & batch.mask
    if keep.shape[1]:  # (pooled-only features have no tokens to drop)
        keep[:, 0] |= ~keep.any(1) & batch.mask[:, 0]
    scale = (torch.rand(batch.pooled.shape, generator=gen) >= p).to(device, batch.pooled.dtype) / (1 - p)
    return ModalityBatch(batch.states, keep, batch.pooled * scale, batch.present)


def joint_loss(
    model: FusentModel,
    inputs: dict[str, ModalityBatch],
    texts: list[str | None],
    target: torch.Tensor,
    loss_fn: nn.Module,
    config: TrainConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """Paper 001 eq. 12: task loss + weight * sum over modalities of InfoNCE between two views of each sample.

    Views: a trainable encoder's own augmentation (random crop, flip, ... of the image), token/feature dropout of
    cached features, and dropout noise inside a fine-tuned text encoder (as SimCSE). The task loss is computed on
    the first view; rows missing a modality are left out of that modality's term.
    """
    views = []
    for _ in range(2):
        view = model.augment(inputs, gen)
        view = {m: b if m in model.encoders else _feature_view(b, config.view_dropout, gen) for m, b in view.items()}
        views.append(model.encode(view, texts))
    loss = model.head.training_loss(views[0], target, loss_fn)
    first, second = model.head.embed(views[0]), model.head.embed(views[1])
    for m in first:
        rows = views[0][m].present
        if int(rows.sum()) >= 2:
            loss = loss + config.contrastive_weight * info_nce(first[m][rows], second[m][rows], config.temperature)
    return loss


def length_buckets(
    order: torch.Tensor, lengths: torch.Tensor, batch_size: int, gen: torch.Generator, span: int = 16
) -> list[torch.Tensor]:
    """Batches of a shuffled ``order`` whose rows have similar sequence lengths: each run of ``span`` batches is
    sorted by length and cut, then the batches are shuffled. Padding a random batch to its longest tweet made the
    attention heads attend over ~3x more positions than real; every sample is still seen once per epoch."""
    batches = []
    for start in range(0, len(order), batch_size * span):
        chunk = order[start : start + batch_size * span]
        chunk = chunk[torch.sort(lengths[chunk], stable=True).indices]
        batches += list(chunk.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def make_optimizer(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (the default) or SGD with momentum over the parameter groups (each with its own lr)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer != "adamw":
        raise ValueError(f"unknown optimizer {config.optimizer!r}; use adamw or sgd")
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def lr_factor(schedule: ScheduleName, warmup_steps: float, total_steps: int) -> Callable[[int], float]:
    """The multiplier of every group's lr at optimizer step ``step``: linear warm-up from 0 over ``warmup_steps``,
    then constant, cosine or linear decay to 0 at ``total_steps`` (the maximum epochs; early stopping may end
    sooner)."""
    if schedule not in ("constant", "cosine", "linear"):
        raise ValueError(f"unknown schedule {schedule!r}; use constant, cosine or linear")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1.0, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress

    return factor


def param_groups(model: FusentModel, config: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the head at ``lr`` (its scaled parameters at their multiple, without weight
    decay), fine-tuned text layers at ``text_lr``, trainable encoders at the rate their ``lr_field`` names (networks
    trained from scratch at the head's, fine-tuned image layers at ``image_lr``)."""
    named, scaled = dict(model.head.named_parameters()), model.head.lr_scale
    groups: list[dict[str, Any]] = [
        {"params": [p for n, p in named.items() if p.requires_grad and n not in scaled], "lr": config.lr}
    ]
    groups += [{"params": [named[n]], "lr": config.lr * k, "weight_decay": 0.0} for n, k in scaled.items()]
    if model.text_encoder is not None:
        text_params = [p for p in model.text_encoder.parameters() if p.requires_grad]
        groups.append({"params": text_params, "lr": config.text_lr})
    for encoder in model.encoders.values():
        params = [p for p in encoder.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": getattr(config, encoder.lr_field)})
    return groups


@dataclass
class Progress:
    """Where early stopping stands after ``epoch``: saved in the resumable state (same keys) and restored from it."""

    best_score: float = -math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    stale: int = 0
    stopped: bool = False
    epoch: int = 0
    seconds: float = 0.0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        return cls(**{k: state[k] for k in cls.__dataclass_fields__})

    def record(self, epoch: int, score: float, metrics: dict[str, Any], model: nn.Module, patience: int) -> None:
        """One epoch's validation result: keep the weights when it is the best so far, else count a stale epoch."""
        self.epoch = epoch
        if score > self.best_score:
            self.best_score, self.best_epoch, self.best_metrics, self.stale = score, epoch, metrics, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.stale += 1
        self.stopped = self.stale >= patience


@dataclass
class Step:
    """What one optimisation step needs, fixed for the whole run."""

    model: FusentModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    amp: MixedPrecision
    loss_fn: Callable[..., torch.Tensor]
    config: TrainConfig
    params: list[nn.Parameter]

    def epoch(self, train: FeatureTable, y_train: torch.Tensor, batches: list[torch.Tensor], gen: torch.Generator):
        """Train on this rank's share of ``batches``; the mean training loss over every rank."""
        model, config, device = self.model, self.config, self.model.device
        model.train()  # includes a fine-tuned text encoder (a submodule)
        total, seen = 0.0, 0
        for index in distributed.shard(batches):
            inputs = move_batch(_drop_modalities(train.batch(index), config.modality_dropout, gen), device)
            texts, target = batch_texts(train, index), to_device(y_train[index], device)
            if config.contrastive_weight > 0:
                loss = self.amp.run(joint_loss, model, inputs, texts, target, self.loss_fn, config, gen)
            else:
                inputs = model.augment(inputs, gen, config.augment)
                loss = self.amp.run(model.loss, inputs, texts, target, self.loss_fn)  # on logits
            self.optimizer.zero_grad(set_to_none=True)
            self.amp.backward(loss)
            distributed.average_gradients(self.params)
            self.amp.step(self.optimizer)
            self.scheduler.step()
            total, seen = total + loss.item() * len(index), seen + len(index)
        total, seen = distributed.sum_over_ranks(total, seen)
        return total / seen


def _resume(state_file: str | Path | None, config: TrainConfig, step: Step, gen, batch_gen) -> Progress:
    """Weights, optimizer, schedule, random streams and early-stopping state of the interrupted run."""
    if state_file is None:
        raise ValueError("resuming needs the state file of the run to continue")
    state = resume.load(Path(state_file), config)
    try:
        step.model.load_state_dict(state["model"])
    except RuntimeError as exc:  # another head, head argument or encoder than the interrupted run
        raise ValueError(f"{state_file} holds another model ({exc}); resume with the same options") from exc
    step.optimizer.load_state_dict(state["optimizer"])
    step.scheduler.load_state_dict(state["scheduler"])
    gen.set_state(state["gen"])
    resume.set_rng_state(state["rng"][distributed.rank()], batch_gen)
    return Progress.from_state(state)


def train_model(
    model: FusentModel,
    train: FeatureTable,
    y_train: torch.Tensor,
    val: FeatureTable,
    y_val: torch.Tensor,
    config: TrainConfig,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    state_file: str | Path | None = None,
    resume_from: bool = False,
) -> TrainResult:
    """Train ``model`` in place and restore its best weights by the task's validation metric.

    ``on_epoch(epoch, validation metrics)`` is called after each epoch (and its state file); it may raise to stop
    training (a tuner pruning a poor trial). With ``state_file`` the resumable state is written
    there after each epoch (see fusent/resume.py); ``resume_from`` continues from it. Under ``torch.distributed``
    each rank trains on its share of every epoch's batches and gradients are averaged (see fusent/distributed.py).
    """
    set_seed(config.seed)
    labels, task = model.config.labels, get_task(model.config.task)
    start_time = time.perf_counter()
    groups = param_groups(model, config)
    optimizer = make_optimizer(groups, config)
    steps_per_epoch = math.ceil(math.ceil(len(train) / config.batch_size) / distributed.world_size())  # per rank
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config.schedule, config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch)
    )
    weights = class_weight_vector(y_train, len(labels), config.class_weights)
    loss_fn = make_loss(
        config.loss, None if weights is None else weights.to(model.device), config.focal_gamma, task.name
    )
    amp = MixedPrecision(model.device, model.config.precision)  # autocast (+ fp16 loss scaling) on a GPU; off on CPU
    step = Step(model, optimizer, scheduler, amp, loss_fn, config, [p for g in groups for p in g["params"]])
    gen = torch.Generator().manual_seed(config.seed)  # the batch order: the same on every rank
    # per-batch randomness (modality dropout, augmentation): one stream per rank, consumed by its own batches
    batch_gen = (
        gen if distributed.world_size() == 1 else torch.Generator().manual_seed(config.seed + distributed.rank())
    )
    distributed.broadcast_parameters(model)
    lengths = padded_lengths(model, train)
    # only models that read token sequences get length-sorted batches: a pooled head trains the same whether or
    # not the table also holds states
    bucketed = (model.head.uses_states and train.has_states) or model.text_encoder is not None

    state = _resume(state_file, config, step, gen, batch_gen) if resume_from else Progress()
    seconds_before = state.seconds
    epochs = range(state.epoch + 1, config.epochs + 1) if not state.stopped else range(0)
    bar = tqdm(epochs, desc=f"training {model.config.head}", unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(len(train), generator=gen)
        batches = length_buckets(order, lengths, config.batch_size, gen) if bucketed else order.split(config.batch_size)
        loss = step.epoch(train, y_train, batches, batch_gen)
        metrics = task.metrics(y_val, predict_logits(model, val), labels)  # the same on every rank: same weights
        state.history.append({"epoch": epoch, "train_loss": loss, **task.headline(metrics)})
        bar.set_postfix(loss=f"{loss:.3f}", **{f"val_{task.monitor}": f"{metrics[task.monitor]:.3f}"})
        state.record(epoch, task.score(metrics), metrics, model, config.patience)
        state.seconds = seconds_before + time.perf_counter() - start_time
        if state_file is not None:
            saved = {"config": asdict(config), "model": model.state_dict(), "optimizer": optimizer.state_dict()}
            saved.update(scheduler=scheduler.state_dict(), gen=gen.get_state(), **vars(state))
            resume.save(Path(state_file), saved, batch_gen)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if state.stopped:
            break
    bar.close()
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    return TrainResult(
        state.best_epoch, state.best_metrics, state.history, seconds_before + time.perf_counter() - start_time
    )
