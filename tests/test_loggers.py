"""The logger interface: what the trainer logs (scalars at optimizer steps, sample grids,
hyperparameters, artifacts), a one-line error for a missing extra, and each optional tracker
read back from what it wrote (skipped when its package is not installed)."""

from __future__ import annotations

import json
import sys

import pytest

from latentgap.cli.main import main
from latentgap.config import ExperimentConfig
from latentgap.errors import ConfigError
from latentgap.train.loggers import LOGGERS, Logger
from latentgap.train.metrics_log import read_metrics

RECORDS: list[tuple] = []


class Recording(Logger):
    def __init__(self, out_dir):
        RECORDS.clear()

    def log_hparams(self, params):
        RECORDS.append(("hparams", params))

    def log_scalars(self, values, step):
        RECORDS.append(("scalars", step, dict(values)))

    def log_image(self, name, path, step):
        RECORDS.append(("image", name, path.name, step))

    def log_artifact(self, path):
        RECORDS.append(("artifact", path.name))

    def close(self):
        RECORDS.append(("close",))


if "recording" not in LOGGERS:
    LOGGERS.add("recording", Recording)


def toy_config(**train) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "model_options": {"latent_dim": 2, "arch_options": {"hidden": [8]}},
            "data": {"name": "toy-images", "limit_train": 80, "limit_test": 16},
            "train": {"epochs": 2, "batch_size": 16, "progress": False, **train},
        }
    )


def test_trainer_logs_optimizer_steps_images_hparams_artifacts(tmp_path):
    """5 batches an epoch, --log-every 2: windows end at steps 2, 4, 5 (the epoch's end) | 6, 8,
    10; the epoch's last window used to count one phantom iteration more (6, then 7, 9, 11)."""
    from latentgap.train.run import train

    train(toy_config(log_every=2, loggers=["recording"]), tmp_path)
    kinds = [r[0] for r in RECORDS]
    assert kinds[0] == "hparams" and kinds[-1] == "close"
    assert RECORDS[0][1]["model"] == "vae" and RECORDS[0][1]["train"]["log_every"] == 2
    train_steps = [r[1] for r in RECORDS if r[0] == "scalars" and "train/loss" in r[2]]
    assert train_steps == [2, 4, 5, 6, 8, 10]
    epoch = [r for r in RECORDS if r[0] == "scalars" and "epoch/test_loss" in r[2]]
    assert [r[1] for r in epoch] == [5, 10] and "epoch/epoch" not in epoch[0][2]
    assert [r[1:] for r in RECORDS if r[0] == "image"] == [
        ("samples", "samples.png", 5),
        ("samples", "samples.png", 10),
    ]
    assert [r[1] for r in RECORDS if r[0] == "artifact"] == ["config.json", "samples.png"]
    jsonl = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("split") == "epoch"]
    assert [(r["iteration"], r["step"]) for r in jsonl] == [(5, 5), (10, 10)]


def test_step_counts_every_update_of_every_group(tmp_path):
    """With two updates per iteration (VAEPP's Algorithm 1: VAE step, critic step) the logged
    step is twice the iteration."""
    from latentgap.train.run import train

    config = toy_config(log_every=1, loggers=["recording"], epochs=1)
    config.model = "vaepp-naive"
    config.model_options.update(
        {"gan_epochs": 0, "logz_normal_samples": 4, "critic_options": {"hidden": [8]}}
    )
    config.data.limit_train = 96  # 6 batches: 3 iterations of 2 updates
    config = ExperimentConfig.from_dict(config.to_dict())
    train(config, tmp_path)
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("split") == "train"]
    assert [(r["iteration"], r["step"]) for r in records] == [(1, 2), (2, 4), (3, 6)]


def test_missing_extra_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    args = ["train", "--out", str(tmp_path), "--dataset", "toy-images", "--epochs", "1"]
    assert main([*args, "--no-progress", "--logger", "mlflow"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'latentgap[mlflow]'" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="unknown logger 'nope'"):
        toy_config(loggers=["nope"])


def test_tensorboard_scalars_images_hparams(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from latentgap.train.run import train

    train(toy_config(log_every=2, loggers=["tensorboard"]), tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 5, 6, 8, 10]
    assert [e.step for e in events.Images("samples")] == [5, 10]
    hparams = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert len(hparams) >= 2  # the hparams summary is written as its own run


def test_mlflow_local_store_and_resume(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from latentgap.train.run import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train(toy_config(log_every=2, loggers=["mlflow"], epochs=1), tmp_path)
    train(toy_config(log_every=2, loggers=["mlflow"], epochs=2), tmp_path, resume=True)
    run_id = json.loads((tmp_path / "loggers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(run_id)  # one run across the resume
    assert run.info.status == "FINISHED" and run.data.params["model"] == "vae"
    steps = [m.step for m in client.get_metric_history(run_id, "train.loss")]
    assert steps == [2, 4, 5, 6, 8, 10]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "samples.png", "images"} <= artifacts
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    assert sum(p.endswith(".png") and "samples" in p for p in images) == 2


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from latentgap.train.run import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(toy_config(log_every=2, loggers=["wandb"], epochs=1), tmp_path)
    run_id = json.loads((tmp_path / "loggers.json").read_text())["wandb"]
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    assert (run_dir / f"run-{run_id}.wandb").stat().st_size > 0
    media = sorted(p.name for p in (run_dir / "files" / "media" / "images").glob("*.png"))
    assert len(media) == 1 and media[0].startswith("samples_5_")
    assert (run_dir / "files" / "samples.png").exists()
