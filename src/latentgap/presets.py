"""Named experiment presets: the paper experiments and small CPU versions of them.

A preset is a partial :class:`~latentgap.config.ExperimentConfig` as plain data; command-line
flags given explicitly override it. Model modules register their presets here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from latentgap.errors import ConfigError
from latentgap.registry import Registry


@dataclass(frozen=True)
class Preset:
    description: str
    values: dict[str, Any] = field(default_factory=dict)


PRESETS: Registry[Preset] = Registry("preset")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base`` (nested dicts merged, other values replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_path(values: dict[str, Any], key: str, value: Any) -> None:
    """``values[a][b]…[leaf] = value`` for ``key`` "a.b.leaf", creating missing sections;
    a :class:`ConfigError` names the part of ``key`` that holds a value, not a section."""
    node = values
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
        node = child
    node[leaf] = value


PRESETS.add(
    "vae-mnist-small",
    Preset(
        "VAE, MLP 784-500-500, z = 40, Bernoulli, dynamically binarised MNIST; minutes on 2 CPU cores",
        {
            "model": "vae",
            "model_options": {"arch": "mlp", "latent_dim": 40},
            "data": {"name": "mnist"},
            "train": {"epochs": 10, "batch_size": 100, "lr": 1e-3},
        },
    ),
)
PRESETS.add(
    "vae-mnist",
    Preset(
        "VAE with the VAEPP paper's ResNet nets, z = 13, q(z|e) on dynamically binarised MNIST",
        {
            "model": "vae",
            "model_options": {"arch": "resnet", "latent_dim": 13, "condition_on": "e"},
            "data": {"name": "mnist"},
            "train": {
                "epochs": 1000,
                "batch_size": 128,
                "lr": 1e-4,
                "lr_halve_every": 200,
                "weight_decay": 2e-4,
            },
        },
    ),
)
