"""The convergence stopping rule (train.stop_metric): when it fires, what it cuts, resume."""

from __future__ import annotations

import pytest

from latentgap.config import ExperimentConfig
from latentgap.errors import ConfigError
from latentgap.train import checkpoint as ckpt
from latentgap.train.convergence import ConvergenceCheck
from latentgap.train.metrics_log import read_metrics
from latentgap.train.run import train


def feed(check: ConvergenceCheck, values: list[float]) -> int | None:
    """Epoch (1-based count of completed epochs) at which the rule fires, or None."""
    for epoch, value in enumerate(values, start=1):
        if check.update(epoch, {"test_loss": value}):
            return epoch
    return None


def test_fires_window_epochs_after_the_last_real_improvement():
    # improves by 10 % an epoch until epoch 6, then by 0.01 % an epoch (below the 0.1 % tolerance)
    values = [100 * 0.9**t for t in range(6)] + [59.049 * (1 - 1e-4) ** t for t in range(1, 10)]
    assert feed(ConvergenceCheck("test_loss", window=3, tolerance=1e-3), values) == 9
    # with a zero tolerance any improvement counts: it never fires on a strictly falling loss
    assert feed(ConvergenceCheck("test_loss", window=3, tolerance=0.0), values) is None


def test_needs_more_than_a_window_and_ignores_one_bad_epoch():
    check = ConvergenceCheck("test_loss", window=2, tolerance=0.01)
    assert feed(check, [10.0, 10.0]) is None  # only `window` epochs: nothing to compare with
    # a noisy epoch (12) inside the window does not fire it while another epoch improved
    check = ConvergenceCheck("test_loss", window=2, tolerance=0.01)
    assert feed(check, [10.0, 9.0, 12.0, 8.0, 12.0, 12.0]) == 6
    assert check.converged_at == 6
    assert not check.update(7, {"test_loss": 1.0})  # fires once


def test_relative_tolerance_on_negative_losses():
    # −ELBO-like losses can be negative (continuous densities): |best| scales the tolerance
    check = ConvergenceCheck("test_loss", window=1, tolerance=0.01)
    assert feed(check, [-100.0, -100.5]) == 2  # 0.5 % better: below 1 %
    check = ConvergenceCheck("test_loss", window=1, tolerance=0.01)
    assert feed(check, [-100.0, -102.0, -102.5]) == 3


def test_max_mode_for_a_log_likelihood():
    # a reconstruction log-likelihood rising by 1 % then 0.01 % an epoch: mode "max" stops it;
    # read as a loss (mode "min") the rising values never improve and it stops at once
    values = [-100 * 0.99**t for t in range(4)] + [-97.0299 * 0.9999**t for t in range(1, 8)]
    check = ConvergenceCheck("test_rec", window=2, tolerance=1e-3, mode="max")
    assert [check.update(e, {"test_rec": v}) for e, v in enumerate(values, 1)].index(True) + 1 == 6
    assert check.best == max(check.history)
    check = ConvergenceCheck("test_rec", window=2, tolerance=1e-3)
    assert [check.update(e, {"test_rec": v}) for e, v in enumerate(values, 1)].index(True) + 1 == 3
    other_mode = ConvergenceCheck("test_rec", window=2, tolerance=1e-3, mode="max")
    other_mode.load_state_dict(check.state_dict())
    assert other_mode.history == []


def test_missing_metric_names_the_available_keys():
    check = ConvergenceCheck("test_elbo", window=1, tolerance=0.0)
    with pytest.raises(ConfigError, match="test_elbo.*test_loss"):
        check.update(1, {"test_loss": 1.0, "phase": "vae"})


def test_state_round_trip_and_other_metric_starts_afresh():
    check = ConvergenceCheck("test_loss", window=2, tolerance=0.0)
    feed(check, [3.0, 2.0, 2.5, 2.5])
    state = check.state_dict()
    same = ConvergenceCheck("test_loss", window=2, tolerance=0.0)
    same.load_state_dict(state)
    assert same.history == check.history and same.converged_at == check.converged_at == 4
    other = ConvergenceCheck("test_rec", window=2, tolerance=0.0)
    other.load_state_dict(state)
    assert other.history == [] and other.converged_at is None


@pytest.mark.parametrize(
    "train_options, message",
    [
        ({"stop_window": 0}, "stop_window"),
        ({"stop_tolerance": -0.1}, "stop_tolerance"),
        ({"stop_tolerance": float("nan")}, "stop_tolerance"),
        ({"stop_metric": "test_loss", "eval_batches": 0}, "eval_batches"),
        ({"stop_metric": ""}, "stop_metric"),
        ({"stop_mode": "up"}, "stop_mode"),
    ],
)
def test_bad_settings_are_config_errors(train_options, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict({"train": train_options})


def _vae(epochs: int, **train) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "model": "vae",
            "model_options": {"arch": "mlp", "latent_dim": 4, "arch_options": {"hidden": [32]}},
            "data": {"name": "toy-images", "limit_train": 128, "limit_test": 64},
            "train": {
                "epochs": epochs,
                "batch_size": 32,
                "progress": False,
                "eval_batches": 2,
                **train,
            },
        }
    )


def test_single_phase_run_stops_and_resume_does_not_train_on(tmp_path):
    # a tolerance of 100 %: no epoch can improve enough, so the rule fires after window + 1
    stop = {"stop_metric": "test_loss", "stop_window": 2, "stop_tolerance": 1.0}
    out = tmp_path / "run"
    train(_vae(20, **stop), out)
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 3 and state["epochs_cut"] == 17
    records = read_metrics(out / "metrics.jsonl")
    events = [r for r in records if r.get("event") == "converged"]
    assert len(events) == 1 and events[0]["epoch"] == 3 and events[0]["metric"] == "test_loss"
    assert [r["epoch"] for r in records if r.get("split") == "epoch"] == [1, 2, 3]
    assert (out / "samples.png").exists()  # the last epoch's outputs are written
    train(_vae(20, **stop), out, resume=True)
    assert ckpt.load_checkpoint(out / "checkpoint.pt")["epoch"] == 3


def test_without_a_stop_metric_every_epoch_runs(tmp_path):
    train(_vae(3), tmp_path / "run")
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["epoch"] == 3 and state["epochs_cut"] == 0 and state["convergence"] is None


def test_two_phase_model_keeps_its_later_phase(tmp_path):
    """VAEPP: the rule ends the VAE phase; the latent GAN still gets its planned epochs."""
    values = {
        "model": "vaepp",
        "model_options": {
            "arch": "mlp",
            "latent_dim": 4,
            "arch_options": {"hidden": [16]},
            "critic_options": {"hidden": [16]},
            "gan_hidden": 8,
            "gan_epochs": 2,
            "logz_normal_samples": 16,
            "train_logz": "paper",
            "epoch_ais_chains": 0,
        },
        "data": {"name": "toy-images", "limit_train": 64, "limit_test": 32},
        "train": {
            "epochs": 12,
            "batch_size": 32,
            "progress": False,
            "eval_batches": 1,
            "stop_metric": "test_loss",
            "stop_window": 1,
            "stop_tolerance": 1.0,
        },
    }
    out = tmp_path / "run"
    train(ExperimentConfig.from_dict(values), out)
    phases = [r["phase"] for r in read_metrics(out / "metrics.jsonl") if r.get("split") == "epoch"]
    assert phases == ["vae", "vae", "latent-gan", "latent-gan"]
    state = ckpt.load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 4 and state["phases"][0] == ["vae", 2]
