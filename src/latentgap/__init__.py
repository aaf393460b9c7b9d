"""latentgap: VAEs that close the gap between the prior and the aggregate posterior.

Implements VAEPP (VAE with a Pull-back Prior), LDC-VAE (latent distribution consistency VAE)
and the baselines they are measured against. :func:`latentgap.train` and
:func:`latentgap.load` mirror the command line (:mod:`latentgap.api`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # lazy: ``import latentgap`` does not import torch
    if name == "train":  # the subpackage, whose module object is callable (api.train)
        import importlib

        return importlib.import_module("latentgap.train")
    if name == "load":
        from latentgap.api import load

        return load
    raise AttributeError(f"module 'latentgap' has no attribute {name!r}")


__all__ = ["__version__", "load", "train"]
