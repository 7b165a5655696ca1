"""What every fusion head shares: the registry, the forward signature, and missing-modality handling."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..data.records import MODALITIES
from ..features import ModalityBatch

Inputs = dict[str, ModalityBatch]
_REGISTRY: dict[str, tuple[type[FusionHead], dict[str, Any]]] = {}
_ALIASES: set[str] = set()


def register_head(
    name: str, aliases: Sequence[str] = (), **preset: Any
) -> Callable[[type[FusionHead]], type[FusionHead]]:
    """Class decorator: ``@register_head("ote")``. ``preset`` kwargs let one class serve several names;
    ``aliases`` are other names for exactly the same head (left out of ``available_heads(aliases=False)``)."""

    def wrap(cls: type[FusionHead]) -> type[FusionHead]:
        for key in (name, *aliases):
            if key in _REGISTRY:
                raise ValueError(f"fusion head {key!r} registered twice")
            _REGISTRY[key] = (cls, preset)
            if key != name:
                _ALIASES.add(key)
        return cls

    return wrap


def available_heads(aliases: bool = True) -> list[str]:
    return sorted(name for name in _REGISTRY if aliases or name not in _ALIASES)


def head_uses_states(name: str) -> bool:
    """Whether head ``name`` attends over token/patch states (else pooled vectors are all it reads)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown fusion head {name!r}; available: {', '.join(available_heads())}")
    return _REGISTRY[name][0].uses_states


def head_arguments(name: str) -> dict[str, Any]:
    """The keyword arguments head ``name`` takes (``--head-arg``), with their defaults, read from the ``__init__``
    signatures along its class hierarchy (a ``**kwargs`` passes on to the parent) without building the head. The
    registry's preset arguments and the class's ``fixed_arguments`` are left out: the name already fixes them."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown fusion head {name!r}; available: {', '.join(available_heads())}")
    cls, preset = _REGISTRY[name]
    arguments: dict[str, Any] = {}
    for klass in cls.__mro__:
        if not (isinstance(klass, type) and issubclass(klass, FusionHead)) or "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]  # without self
        for p in params:
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                arguments.setdefault(p.name, p.default)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    for key in ("dims", "num_classes", *preset, *cls.fixed_arguments):
        arguments.pop(key, None)
    return arguments


def head_accepts(name: str) -> set[str]:
    """The names ``--head-arg`` may set for head ``name``."""
    return set(head_arguments(name))


def head_fits(name: str, dims: dict[str, int]) -> bool:
    """Whether head ``name`` can be built on features with these modalities (``audio_only`` needs audio...)."""
    try:
        create_head(name, dims, 2)
    except ValueError:
        return False
    return True


def create_head(name: str, dims: dict[str, int], num_classes: int, **kwargs: Any) -> FusionHead:
    """Build a registered head for the given modality widths, e.g. ``{"text": 384, "image": 1280}``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown fusion head {name!r}; available: {', '.join(available_heads())}")
    cls, preset = _REGISTRY[name]
    head = cls(dims, num_classes, **{**preset, **kwargs})
    head.registry_name = name
    return head


def classifier(in_dim: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """The small MLP every head ends with; it returns logits (losses apply log-softmax themselves)."""
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
    )


class FusionHead(nn.Module):
    """``forward(inputs) -> logits [B, C]`` where ``inputs`` maps modality name to a ``ModalityBatch``.

    A head declares the modalities it ``uses``; it owns parameters for those only, and never reads the others
    (so the text-only ablation really is text-only). A missing modality is replaced by a learned embedding.
    """

    registry_name = ""
    uses_states = False  # True for heads that attend over token/patch states
    #: base-class arguments a subclass sets itself, so a user may not (``Unimodal`` fixes ``uses``)
    fixed_arguments: tuple[str, ...] = ()
    #: parameter name -> learning-rate multiplier; such parameters also get no weight decay (e.g. mixing weights)
    lr_scale: dict[str, float] = {}

    def __init__(
        self,
        dims: dict[str, int],
        num_classes: int,
        uses: Sequence[str] | None = None,
        hidden: int = 256,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.uses = [m for m in MODALITIES if m in (uses or dims)]
        missing = [m for m in self.uses if m not in dims]
        if missing or not self.uses:
            raise ValueError(f"head needs modalities {self.uses or list(uses or [])}; features have {sorted(dims)}")
        self.dims = {m: dims[m] for m in self.uses}
        self.num_classes, self.hidden, self.dropout = num_classes, hidden, dropout
        self.norm = nn.ModuleDict({m: nn.LayerNorm(d) for m, d in self.dims.items()})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m, d in self.dims.items()})

    def pooled(self, inputs: Inputs, modality: str) -> torch.Tensor:
        """``F_m``: the normalised pooled vector, or the learned missing embedding where the modality is absent."""
        batch = inputs[modality]
        vec = torch.where(batch.present[:, None], batch.pooled, self.missing[modality].to(batch.pooled.dtype))
        return self.norm[modality](vec)

    def forward(self, inputs: Inputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        """One vector per sample and modality, the representation the contrastive term aligns across views.
        Heads with per-modality projections return those; by default the normalised pooled vector ``F_m``."""
        return {m: self.pooled(inputs, m) for m in self.uses}

    def training_loss(self, inputs: Inputs, target: torch.Tensor, loss_fn: nn.Module) -> torch.Tensor:
        """The loss the trainer minimises; a head whose parts train separately (late fusion) overrides it."""
        return loss_fn(self(inputs), target)

    def report(self) -> dict[str, Any]:
        """Learned quantities worth printing after training (e.g. modality weights); empty by default."""
        return {}
