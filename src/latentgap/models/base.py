"""The contract between models and the trainer.

A model is an ``nn.Module`` that

- groups its parameters (:meth:`GenerativeModel.parameter_groups`), one optimiser per group;
- declares its training schedule as data (:meth:`GenerativeModel.phases`): phases of epochs,
  each a list of :class:`Step` (which loss, which group, how many times per iteration);
- computes a named loss in ``forward(step, batch)`` and returns a :class:`ModelOutput`.

Calling the loss through ``forward`` keeps models usable under DistributedDataParallel, whose
gradient hooks only fire for calls through the wrapper. The trainer owns everything else:
optimisers, schedules, devices, logging, checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from latentgap.config import dataclass_from_dict
from latentgap.data.base import Batch, DataSpec, ImageSet
from latentgap.errors import ConfigError
from latentgap.registry import Registry


@dataclass
class ModelOutput:
    """A loss to minimise plus named scalar terms for logging (detached by the trainer)."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One optimiser update inside a training iteration.

    ``loss`` names the loss passed to ``model(loss, batch)``; ``group`` the parameter group
    (and optimiser) it updates; each of the ``repeat`` updates takes a fresh batch, unless
    ``reuse_batch``: then every update of this step reuses the batch of the step before it in
    the iteration (as LDC-VAE's Algorithm 1 runs its encoder and sampler steps on one batch), so
    an epoch counts only the fresh batches.
    """

    loss: str
    group: str
    repeat: int = 1
    reuse_batch: bool = False


@dataclass(frozen=True)
class Phase:
    """A stretch of ``epochs`` epochs (``None``: until the end) running ``steps`` each iteration."""

    name: str
    steps: tuple[Step, ...]
    epochs: int | None = None


@dataclass(frozen=True)
class GroupOptions:
    """Optimiser settings of one parameter group that differ from the run's defaults."""

    betas: tuple[float, float] = (0.9, 0.999)
    lr: float | None = None  # None: the run's --lr
    lr_scale: float = 1.0
    weight_decay: float | None = None  # None: the run's --weight-decay


class GenerativeModel(nn.Module):
    """Base class of every registered model.

    Subclasses set ``config_class`` (a dataclass of the model's options) and implement
    ``forward``, ``sample`` and ``reconstruct``; likelihood models also implement
    ``log_importance_weights`` (used by the NLL evaluator).
    """

    config_class: ClassVar[type]
    has_likelihood: ClassVar[bool] = False
    # why torch.compile cannot run this model's training step (None: it can)
    compile_unsupported: ClassVar[str | None] = None

    def __init__(self, config: Any, spec: DataSpec) -> None:
        super().__init__()
        self.config = config
        self.spec = spec

    def resolved_options(self) -> dict[str, Any]:
        """Every option of the model, defaults included, as a JSON-ready dict: a new run saves
        these in its config.json, so that a later change of a default does not change the model
        its checkpoint is loaded into."""
        return json.loads(json.dumps(dataclasses.asdict(self.config)))

    # --- training contract -------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": [p for p in self.parameters() if p.requires_grad]}

    def group_options(self, group: str) -> GroupOptions:
        return GroupOptions()

    def phases(self, epochs: int) -> list[Phase]:
        return [Phase("train", (Step("loss", "model"),))]

    def forward(self, step: str, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare_training(self, train: ImageSet) -> None:
        """Called once before the first epoch (e.g. to record the training-set size); by
        default it attaches the training set (:meth:`attach_training_set`)."""
        self.attach_training_set(train)

    def attach_training_set(self, train: ImageSet) -> None:
        """The training set of a run being trained or loaded, for densities fitted on demand
        (the RAE family's and LDC-VAE's ex-post GMMs, when a run was interrupted before its
        end-of-training fit)."""

    def end_phase(self, phase: str, train: ImageSet) -> None:
        """Called when a phase ends (e.g. RAE-family models fit their ex-post GMM here)."""

    def end_epoch(self, phase: str, train: ImageSet) -> dict[str, float]:
        """Called after every epoch; what it returns joins the epoch's log record (e.g. VAEPP's
        AIS log Z of the current prior)."""
        return {}

    # --- generation ----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, **options) -> Tensor:
        """``n`` images (n, C, H, W) in [0, 1]."""
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, batch: Batch) -> Tensor:
        """Reconstructions (B, C, H, W) in [0, 1] of ``batch``."""
        raise NotImplementedError

    def samplers(self) -> tuple[str, ...]:
        """Names accepted by ``sample(..., sampler=NAME)``; the first is the default."""
        return ("prior",)

    # --- latent consistency (the LDC-VAE paper's Fig. 2) -------------------------------------
    @torch.no_grad()
    def latent_codes(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        """Codes the encoder gives ``batch`` (one draw per image): (B, D)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose latent codes")

    @torch.no_grad()
    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Latent codes of images (B, C, H, W) in [0, 1] (one draw each, as
        :meth:`latent_codes`): (B, D)."""
        images = images.to(self.device)
        return self.latent_codes(Batch(images, images), generator=generator)

    @torch.no_grad()
    def generation_codes(
        self, n: int, generator: torch.Generator | None = None, sampler: str | None = None
    ) -> Tensor:
        """The codes generation decodes (prior, sampler net, GMM, ...): (n, D)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose generation codes")

    # --- likelihood evaluation -----------------------------------------------------------
    def log_importance_weights(self, batch: Batch, k: int) -> Tensor:
        """log p(x, z_k) − log q(z_k | ·) for k posterior samples per example: (K, B)."""
        raise NotImplementedError(f"{type(self).__name__} has no likelihood")

    def prepare_evaluation(self, train: ImageSet, repeat: int = 0, **options) -> dict[str, float]:
        """Called before each NLL repeat (VAEPP re-estimates log Ẑ here); returns diagnostics."""
        return {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def eval_rows(self) -> int:
        """Latent codes per network call in the importance-sampled sweeps (NLL, log Ẑ). On a CPU
        conv nets run fastest on ~128-code blocks whose feature maps stay in cache (4096-code
        blocks measured 3–4× slower for the VAEPP ResNet); MLPs and GPUs want large blocks."""
        if self.device.type == "cuda":
            return 4096
        has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in self.modules())
        return 128 if has_conv else 4096


def _check_model(obj: object, name: str) -> type[GenerativeModel]:
    if not (isinstance(obj, type) and issubclass(obj, GenerativeModel)):
        raise ConfigError(f"model {name!r} is not a subclass of latentgap.models.GenerativeModel")
    if not hasattr(obj, "config_class"):
        raise ConfigError(f"model {name!r} sets no config_class (a dataclass of its options)")
    return obj


MODELS: Registry[type[GenerativeModel]] = Registry("model", _check_model)


def build_model(name: str, options: dict[str, Any], spec: DataSpec) -> GenerativeModel:
    """Instantiate the registered model ``name`` with its options (a plain dict)."""
    cls = MODELS.get(name)
    config = dataclass_from_dict(cls.config_class, options, where=f"model {name!r}")
    return cls(config, spec)
