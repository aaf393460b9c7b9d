"""Trainer contract: exact resume, atomic checkpoints, NaN stops, run-directory safety, export."""

from __future__ import annotations

import json
import math

import pytest
import torch

from latentgap.config import ExperimentConfig
from latentgap.errors import CheckpointError, ConfigError, TrainingDiverged
from latentgap.models.vae import VAE
from latentgap.train import checkpoint as ckpt
from latentgap.train.metrics_log import read_metrics
from latentgap.train.run import load_run, prepare_run_dir, train


def tiny_config(epochs: int = 4, **train_overrides) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "model": "vae",
            "model_options": {"arch": "mlp", "latent_dim": 4, "arch_options": {"hidden": [32]}},
            "data": {"name": "toy-images", "limit_train": 256, "limit_test": 64},
            "train": {
                "epochs": epochs,
                "batch_size": 32,
                "lr": 3e-3,
                "progress": False,
                "log_every": 3,
                "eval_batches": 2,
                **train_overrides,
            },
        }
    )


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_kill_matches_uninterrupted(tmp_path, monkeypatch):
    full = train(tiny_config(4), tmp_path / "full")

    # a run killed in the middle of epoch 3: the epoch-2 checkpoint is what survives
    calls = {"n": 0}
    real_forward = VAE.forward

    def dying_forward(self, step, batch):
        calls["n"] += 1
        if calls["n"] == 2 * (8 + 2) + 3:  # 8 train + 2 test batches an epoch; die in epoch 3
            raise KeyboardInterrupt
        return real_forward(self, step, batch)

    monkeypatch.setattr(VAE, "forward", dying_forward)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(4), tmp_path / "killed")
    monkeypatch.setattr(VAE, "forward", real_forward)
    assert ckpt.load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 2

    resumed = train(tiny_config(4), tmp_path / "killed", resume=True)
    assert states_equal(full.model.state_dict(), resumed.model.state_dict())
    events = [r.get("event") for r in read_metrics(tmp_path / "killed" / "metrics.jsonl")]
    assert "resume" in events


def test_resume_can_extend_training(tmp_path):
    four = train(tiny_config(4), tmp_path / "a")
    train(tiny_config(2), tmp_path / "b")
    extended = train(tiny_config(4), tmp_path / "b", resume=True)
    assert states_equal(four.model.state_dict(), extended.model.state_dict())


def test_run_directory_outputs_and_lr_schedule(tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(2, lr_halve_every=1), out)
    for name in ("config.json", "checkpoint.pt", "metrics.jsonl", "samples.png"):
        assert (out / name).exists(), name
    saved = ExperimentConfig.load(out / "config.json").to_dict()
    given = tiny_config(2, lr_halve_every=1).to_dict()
    # the model options are saved resolved (defaults included), the rest as given
    assert saved.pop("model_options") == result.model.resolved_options()
    assert given.pop("model_options").items() <= result.model.resolved_options().items()
    assert saved == given
    records = read_metrics(out / "metrics.jsonl")
    epochs = [r for r in records if r.get("split") == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[0]["lr_model"] == pytest.approx(3e-3)
    assert epochs[1]["lr_model"] == pytest.approx(1.5e-3)
    assert all(math.isfinite(r["test_elbo"]) for r in epochs)
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    assert state["optimizers"]["model"]["param_groups"][0]["lr"] == pytest.approx(0.75e-3)
    # training improved the test ELBO
    assert epochs[1]["test_elbo"] > epochs[0]["test_elbo"]
    assert result.record["epoch"] == 2


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"epoch": 1, "weights": torch.ones(3)})

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"epoch": 2, "weights": torch.zeros(3)})
    monkeypatch.undo()
    state = ckpt.load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left


def test_corrupt_or_pickled_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        ckpt.load_checkpoint(bad)

    class Evil:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"format": 1, "evil": Evil()}, bad)
    with pytest.raises(CheckpointError):
        ckpt.load_checkpoint(bad)


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real_forward = VAE.forward
    calls = {"n": 0}

    def nan_forward(self, step, batch):
        out = real_forward(self, step, batch)
        calls["n"] += 1
        if calls["n"] > (8 + 2) + 4:  # 8 train + 2 test batches an epoch: the 5th of epoch 2
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(VAE, "forward", nan_forward)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(tiny_config(3), out)
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert read_metrics(out / "metrics.jsonl")[-1]["event"] == "diverged"


def test_run_directory_is_never_overwritten_unasked(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(1), out)
    with pytest.raises(ConfigError, match="--resume .* or --force"):
        prepare_run_dir(out, resume=False, force=False)
    with pytest.raises(ConfigError, match="contradict"):
        prepare_run_dir(out, resume=True, force=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        prepare_run_dir(tmp_path / "empty", resume=True, force=False)
    prepare_run_dir(out, resume=False, force=True)
    assert not (out / "checkpoint.pt").exists() and not (out / "samples").exists()


def test_checkpoint_mismatch_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(1), out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["model_options"]["latent_dim"] = 5
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match"):
        load_run(out)


def test_export_safetensors_round_trip(tmp_path):
    from latentgap.models import build_model

    out = tmp_path / "run"
    result = train(tiny_config(1), out)
    weights = ckpt.export_safetensors(result.model, result.config.to_dict(), out / "export")
    fresh = build_model("vae", result.config.model_options, result.model.spec)
    ckpt.load_safetensors(fresh, weights)
    assert states_equal(fresh.state_dict(), result.model.state_dict())
    assert json.loads((out / "export" / "config.json").read_text())["model"] == "vae"


def test_resume_with_more_epochs_extends_the_last_phase(tmp_path):
    """VAEPP's default plan gives half the epochs to the latent GAN; extending a finished run
    must continue that phase, not move the boundary under the epochs already trained."""
    values = {
        "model": "vaepp",
        "model_options": {
            "arch": "mlp",
            "latent_dim": 4,
            "arch_options": {"hidden": [16]},
            "critic_options": {"hidden": [16]},
            "gan_hidden": 8,
            "logz_normal_samples": 16,
        },
        "data": {"name": "toy-images", "limit_train": 64, "limit_test": 32},
        "train": {"epochs": 2, "batch_size": 32, "progress": False, "eval_batches": 1},
    }
    out = tmp_path / "run"
    train(ExperimentConfig.from_dict(values), out)
    values["train"]["epochs"] = 4
    train(ExperimentConfig.from_dict(values), out, resume=True)
    phases = [r["phase"] for r in read_metrics(out / "metrics.jsonl") if r.get("split") == "epoch"]
    assert phases == ["vae", "latent-gan", "latent-gan", "latent-gan"]


def test_logged_terms_of_repeated_steps_are_means_over_updates(tmp_path):
    """A step repeated 3 times per iteration logs the index of its update (0, 1, 2): the logged
    mean must be 1, the mean over its updates (it was their sum, 3, before)."""
    from latentgap.data import get_dataset
    from latentgap.models.base import GenerativeModel, ModelOutput, Phase, Step
    from latentgap.train.trainer import Trainer

    class Repeated(GenerativeModel):
        def __init__(self, spec):
            super().__init__(None, spec)
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.calls = 0

        def parameter_groups(self):
            return {"model": [self.w]}

        def phases(self, epochs):
            return [Phase("p", (Step("a", "model", 3), Step("b", "model")))]

        def forward(self, step, batch):
            if step == "a":
                self.calls += 1
                index = torch.tensor(float((self.calls - 1) % 3))
                return ModelOutput((self.w**2).sum(), {"index": index})
            return ModelOutput((self.w**2).sum(), {"other": torch.tensor(5.0)})

        def sample(self, n, generator=None, **options):
            return torch.zeros(n, *self.spec.shape)

    splits = get_dataset("toy-images").limit(64, 16)
    config = tiny_config(1, batch_size=4, log_every=2, eval_batches=0)  # 16 batches: 4 iterations
    trainer = Trainer(Repeated(splits.spec), config, splits, tmp_path, torch.device("cpu"))
    record = trainer.fit()
    assert record["index"] == pytest.approx(1.0) and record["other"] == pytest.approx(5.0)
    windows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("split") == "train"]
    assert windows and all(r["index"] == pytest.approx(1.0) for r in windows)


def test_reuse_batch_steps_see_the_previous_steps_batch(tmp_path):
    """Step(reuse_batch=True), repeated twice, gets the batch the step before it got (LDC-VAE's
    one batch per iteration); an epoch of 16 batches is then 16 iterations, not 8."""
    from latentgap.data import get_dataset
    from latentgap.models.base import GenerativeModel, ModelOutput, Phase, Step
    from latentgap.train.trainer import Trainer

    class Shared(GenerativeModel):
        def __init__(self, spec):
            super().__init__(None, spec)
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[tuple[str, bytes]] = []

        def parameter_groups(self):
            return {"a": [self.w]}

        def phases(self, epochs):
            return [Phase("p", (Step("a", "a"), Step("b", "a", 2, reuse_batch=True)))]

        def forward(self, step, batch):
            self.seen.append((step, batch.x.numpy().tobytes()))
            return ModelOutput((self.w**2).sum())

        def sample(self, n, generator=None, **options):
            return torch.zeros(n, *self.spec.shape)

    splits = get_dataset("toy-images").limit(64, 16)
    config = tiny_config(1, batch_size=4, log_every=100, eval_batches=0)  # 16 batches
    model = Shared(splits.spec)
    trainer = Trainer(model, config, splits, tmp_path, torch.device("cpu"))
    trainer.fit()
    steps = [s for s, _ in model.seen]
    assert steps == ["a", "b", "b"] * 16
    data = [v for _, v in model.seen]
    for i in range(16):
        a, b1, b2 = data[3 * i : 3 * i + 3]
        assert a == b1 == b2  # one batch per iteration
    assert len({data[3 * i] for i in range(16)}) == 16  # a fresh batch every iteration
