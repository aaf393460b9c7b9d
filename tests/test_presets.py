"""Every registered preset is a valid experiment: its config and its model's options parse."""

from __future__ import annotations

import pytest

from latentgap.config import ExperimentConfig, dataclass_from_dict
from latentgap.data import DATASETS
from latentgap.models import MODELS
from latentgap.nets import ARCHITECTURES
from latentgap.presets import PRESETS, deep_merge


@pytest.mark.parametrize("name", PRESETS.names())
def test_preset_is_valid(name):
    values = deep_merge(ExperimentConfig().to_dict(), PRESETS.get(name).values)
    config = ExperimentConfig.from_dict(values)
    model_cls = MODELS.get(config.model)
    dataclass_from_dict(model_cls.config_class, config.model_options)
    assert config.data.name in DATASETS
    assert config.model_options.get("arch", "mlp") in ARCHITECTURES
