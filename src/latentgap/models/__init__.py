"""Registered models; importing this package registers them all."""

from latentgap.models import (  # noqa: F401  (registration)
    cv_vae,
    ldc_table_presets,
    ldc_vae,
    rae,
    two_stage,
    vae,
    vaepp,
    vampprior,
    wae,
)
from latentgap.models.base import (
    MODELS,
    GenerativeModel,
    GroupOptions,
    ModelOutput,
    Phase,
    Step,
    build_model,
)

__all__ = [
    "MODELS",
    "GenerativeModel",
    "GroupOptions",
    "ModelOutput",
    "Phase",
    "Step",
    "build_model",
]
