"""Own networks, models and datasets: factory paths and --import modules recorded in
config.json and found again by every command, entry points, the Python API."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

import latentgap
from latentgap.cli.main import main
from latentgap.errors import ConfigError

NETS = """
from torch import nn
from latentgap.nets import Architecture

def encoder(shape, out_features, hidden=8):
    c, h, w = shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.Tanh(),
                         nn.Linear(hidden, out_features))

def decoder(latent_dim, shape, param_channels, hidden=8):
    c, h, w = shape
    return nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(),
                         nn.Linear(hidden, param_channels * c * h * w),
                         nn.Unflatten(1, (param_channels * c, h, w)))

def critic(shape, hidden=8):
    c, h, w = shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.LeakyReLU(0.2),
                         nn.Linear(hidden, 1), nn.Flatten(0))

tiny = Architecture("tiny", "one hidden layer", encoder, decoder, critic)
not_an_arch = 3
"""

MODELS = '''
import torch
from dataclasses import dataclass
from latentgap.data import Splits, DataSpec, ImageSet
from latentgap.models import MODELS
from latentgap.models.vae import VAE, VAEConfig

@dataclass
class HalfKLConfig(VAEConfig):
    kl_weight: float = 0.5

@MODELS.register("half-kl-vae")
class HalfKLVAE(VAE):
    """A VAE with another default: registered by importing this module."""
    config_class = HalfKLConfig

def blobs(n: int = 40, seed: int = 0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    spec = DataSpec("blobs", (1, 3, 3), "continuous")
    images = torch.rand(n, 1, 3, 3, generator=g)
    return Splits(spec, ImageSet(images[8:], spec=spec), ImageSet(images[:8], spec=spec))
'''


@pytest.fixture
def own_code(tmp_path, monkeypatch):
    """Modules ``mynets`` and ``mymodels`` in the current directory (not installed)."""
    (tmp_path / "mynets.py").write_text(textwrap.dedent(NETS))
    (tmp_path / "mymodels.py").write_text(textwrap.dedent(MODELS))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    np.save(tmp_path / "data.npy", np.random.default_rng(0).random((40, 4, 4)).astype("f4"))
    return tmp_path


BASE = ["--latent-dim", "2", "--epochs", "1", "--batch-size", "16", "--no-progress"]


def test_factory_path_and_import_are_recorded_and_reloaded(own_code, capsys):
    out = own_code / "run"
    args = ["train", "--out", out, "--dataset", "mymodels:blobs", "--arch", "mynets:tiny"]
    args += ["--import", "mymodels", "--model", "half-kl-vae", *BASE]
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["imports"] == ["mymodels"] and config["model"] == "half-kl-vae"
    assert config["model_options"]["arch"] == "mynets:tiny"
    assert config["data"]["name"] == "mymodels:blobs"
    capsys.readouterr()
    assert main(["sample", str(out), "--num", "4", "--out", str(own_code / "g.png")]) == 0
    model = latentgap.load(out)
    assert type(model).__name__ == "HalfKLVAE" and model.config.kl_weight == 0.5
    assert model.encode(torch.rand(3, 1, 3, 3)).shape == (3, 2)
    assert model.experiment.imports == ("mymodels",)


def test_vaepp_with_own_critic_and_npy_data(own_code, capsys):
    out = own_code / "vaepp"
    args = ["train", "--out", out, "--model", "vaepp", "--arch", "mynets:tiny", *BASE]
    args += ["--dataset", f"npy:{own_code / 'data.npy'}", "--epochs", "2"]
    args += ["--set", "model_options.gan_epochs=1", "--set", "model_options.mala_steps=2"]
    args += ["--set", "model_options.logz_normal_samples=8"]
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    model = latentgap.load(out)
    assert model.sample(3, sampler="gan+mala").shape == (3, 1, 4, 4)


def test_python_api_mirrors_the_cli(own_code):
    result = latentgap.train(
        {
            "model_options": {"arch": "mynets:tiny", "latent_dim": 2},
            "data": {"name": "npy:data.npy"},
            "train": {"epochs": 1, "batch_size": 16, "progress": False},
        },
        out=own_code / "api-run",
    )
    assert result.record["epoch"] == 1
    assert result.config.data.name == f"npy:{own_code / 'data.npy'}"
    model = latentgap.load(own_code / "api-run")
    ref = result.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    assert not model.training and model.sample(2).shape == (2, 1, 4, 4)
    with pytest.raises(ConfigError, match="already holds a run"):
        latentgap.train({"data": {"name": "npy:data.npy"}}, own_code / "api-run")


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--arch", "mynets:not_an_arch", "is a int, not a latentgap.nets.Architecture"),
        ("--arch", "mynets:missing", "has no attribute 'missing'"),
        ("--arch", "nosuchmodule:tiny", "cannot import module 'nosuchmodule'"),
        ("--model", "mynets:tiny", "not a subclass of latentgap.models.GenerativeModel"),
        ("--import", "no_such_plugin", "cannot import module 'no_such_plugin'"),
        ("--logger", "nope", "unknown logger 'nope'"),
    ],
)
def test_bad_own_code_is_one_line(own_code, capsys, flag, value, message):
    args = ["train", "--out", str(own_code / "r"), "--dataset", "npy:data.npy", *BASE]
    assert main([*args, flag, value]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_entry_points_are_loaded(monkeypatch, own_code):
    """An installed package's ``latentgap.plugins`` entry point is imported by every command."""
    from importlib import metadata

    from latentgap import plugins
    from latentgap.nets import ARCHITECTURES

    class EntryPoint:
        name, value = "mine", "mynets_ep"

        def load(self):
            import mynets

            if "ep-tiny" not in ARCHITECTURES:
                ARCHITECTURES.add("ep-tiny", mynets.tiny)
            return mynets

    monkeypatch.setattr(plugins, "_loaded_entry_points", False)
    monkeypatch.setattr(
        metadata,
        "entry_points",
        lambda group: [EntryPoint()] if group == "latentgap.plugins" else [],
    )
    out = own_code / "ep"
    args = ["train", "--out", str(out), "--arch", "ep-tiny", "--dataset", "npy:data.npy", *BASE]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["model_options"]["arch"] == "ep-tiny"
