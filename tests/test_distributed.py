"""Data parallel training and sharded evaluation under torchrun, with 2 CPU processes (gloo).

One torchrun launch trains every model family (all their phases) and the resume cases; the
tests then compare the ranks' parameters, a single-process run with the same global batch, and
checkpoints moved between process counts. CLI launches check rank-0-only output and that sharded
evaluation gives the single-process numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentgap.config import ExperimentConfig
from latentgap.train.metrics_log import read_metrics
from latentgap.train.run import train

HERE = Path(__file__).resolve().parent
MLP = {"arch": "mlp", "latent_dim": 4, "arch_options": {"hidden": [32]}}


def config(
    model: str,
    options: dict | None = None,
    *,
    epochs: int = 2,
    batch: int = 16,
    binarize: bool = True,
) -> dict:
    return {
        "model": model,
        "model_options": {**MLP, **(options or {})},
        "data": {
            "name": "toy-images",
            "limit_train": 128,
            "limit_test": 32,
            "options": {"binarize": binarize},
        },
        "train": {
            "epochs": epochs,
            "batch_size": batch,
            "lr": 3e-3,
            "progress": False,
            "log_every": 2,
            "eval_batches": 1,
            "sample_every": 0,
        },
    }


# every model family with all of its phases (VAEPP: Algorithm 2 / Algorithm 1, then latent GAN)
MODELS = {
    "vae": config("vae"),
    "vaepp": config("vaepp", {"gan_epochs": 1}),
    "vaepp-naive": config("vaepp-naive", {"gan_epochs": 1}),
    "ldc-vae": config(
        "ldc-vae", {"feature_dim": 32, "n_particles": 4, "sampler_particles": 16}, binarize=False
    ),
    "two-stage-vae": config("two-stage-vae"),
    "wae-mmd": config("wae-mmd", binarize=False),
    "cv-vae": config("cv-vae", binarize=False),
    "rae-sn": config("rae-sn", binarize=False),
    # its penalty differentiates a gradient through the decoder inside the forward pass
    "rae-gp": config("rae-gp", binarize=False),
    # deterministic given the batch: comparable with one process and the same global batch
    "rae-l2": config("rae-l2", binarize=False),
}


RENDEZVOUS_FAILURES = ("RendezvousConnectionError", "Address already in use", "EADDRINUSE")


def torchrun(nproc: int, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 and any(m in proc.stderr for m in RENDEZVOUS_FAILURES):
        # the standalone rendezvous picked a port another process took meanwhile: once more
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def load_params(run: Path, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(run / f"params-rank{rank}.pt", weights_only=True)


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    # a 1-process checkpoint that the 2-process job resumes
    train(ExperimentConfig.from_dict(config("vae", epochs=1)), root / "resume-1-to-2")
    jobs = [{"config": cfg, "out": str(root / name)} for name, cfg in MODELS.items()]
    jobs.append(
        {"config": config("vae", epochs=2), "out": str(root / "resume-1-to-2"), "resume": True}
    )
    jobs.append({"config": config("vae", epochs=1), "out": str(root / "resume-2-to-1")})
    jobs_file = root / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    torchrun(2, str(HERE / "ddp_worker.py"), str(jobs_file))
    return root


@pytest.mark.parametrize("name", list(MODELS))
def test_ranks_hold_equal_parameters_after_training(ddp_runs, name):
    run = ddp_runs / name
    a, b = load_params(run, 0), load_params(run, 1)
    assert a.keys() == b.keys()
    for key in a:  # ranks saw disjoint data: only synchronised gradients keep them equal
        assert torch.equal(a[key], b[key]), key
    # rank 0 alone wrote the log: one record per epoch, not one per rank
    epochs = [r for r in read_metrics(run / "metrics.jsonl") if r.get("split") == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    # the checkpoint holds the trained parameters
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2
    for key, value in a.items():
        assert torch.equal(state["model"][key], value), key


def test_two_processes_match_one_with_the_same_global_batch(ddp_runs, tmp_path):
    single = config("rae-l2", binarize=False, batch=32)  # 2 ranks × 16
    one = train(ExperimentConfig.from_dict(single), tmp_path / "one").model
    two = load_params(ddp_runs / "rae-l2", 0)
    diffs, norms = [], []
    for key, p in one.named_parameters():
        diffs.append((p.detach() - two[key]).flatten())
        norms.append(p.detach().flatten())
    diff, norm = torch.cat(diffs), torch.cat(norms)
    # same batches, same mean loss: only float summation order differs (≈1e-7 relative per
    # step, amplified a little by Adam's normalisation over 8 steps)
    assert diff.norm() / norm.norm() < 1e-4, (diff.norm() / norm.norm()).item()
    assert diff.abs().max() < 1e-3


def test_checkpoint_from_one_process_resumes_with_two(ddp_runs):
    run = ddp_runs / "resume-1-to-2"
    records = read_metrics(run / "metrics.jsonl")
    changed = [r for r in records if r.get("event") == "world_size_changed"]
    assert changed and changed[0]["from"] == 1 and changed[0]["to"] == 2
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2
    a, b = load_params(run, 0), load_params(run, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_from_two_processes_resumes_with_one(ddp_runs):
    run = ddp_runs / "resume-2-to-1"
    assert torch.load(run / "checkpoint.pt", weights_only=True)["world_size"] == 2
    result = train(ExperimentConfig.from_dict(config("vae", epochs=2)), run, resume=True)
    assert result.record["epoch"] == 2
    changed = [
        r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "world_size_changed"
    ]
    assert changed and changed[0]["from"] == 2 and changed[0]["to"] == 1


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_cli_train_and_sharded_evaluate_under_torchrun(tmp_path, capsys):
    from latentgap.cli.main import main

    run = tmp_path / "vaepp"
    train_args = [
        "-m", "latentgap", "train", "--out", str(run), "--model", "vaepp",
        "--dataset", "toy-images", "--arch", "mlp", "--latent-dim", "4",
        "--set", 'model_options.arch_options={"hidden": [32]}', "--set", "model_options.gan_epochs=1",
        "--epochs", "2", "--batch-size", "16", "--limit-train", "128", "--limit-test", "64",
        "--sample-every", "0", "--no-progress",
    ]  # fmt: skip
    proc = torchrun(2, *train_args)
    assert len(json_lines(proc.stdout)) == 1  # rank 0 alone reports
    epochs = [r for r in read_metrics(run / "metrics.jsonl") if r.get("split") == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert (run / "samples.png").exists() and (run / "checkpoint.pt").exists()

    # 63 test images: uneven shards (32 + 31) must still cover every image once
    eval_args = [
        "evaluate", str(run), "--nll", "--iw-samples", "64", "--limit", "63",
        "--logz-samples", "8", "--logz-normal-samples", "20000",
        "--ais-chains", "128", "--ais-temps", "50", "--ais-leapfrog", "2",
        "--fid", "--fid-extractor", "pixels", "--fid-samples", "64",
        "--fid-cache-dir", str(tmp_path / "fid"), "--no-progress",
    ]  # fmt: skip
    assert main([*eval_args, "--repeats", "4"]) == 0
    one = json_lines(capsys.readouterr().out)[-1]
    # its own (empty) cache: the reference statistics are computed sharded, not read
    two_cache = ["--fid-cache-dir", str(tmp_path / "fid-2")]
    two = json_lines(torchrun(2, "-m", "latentgap", *eval_args, *two_cache).stdout)
    assert len(two) == 1
    two = two[0]
    assert two["world_size"] == 2 and two["n_examples"] == one["n_examples"] == 63

    # NLL: one 2-process repeat against the mean of 4 one-process repeats, whose spread (fresh
    # binarisations, importance samples and log Ẑ per repeat) is the estimator's error
    spread = one["nll_std"] * (1 + 1 / 4) ** 0.5
    assert spread > 0
    assert abs(two["nll_nats"] - one["nll_nats"]) < 4 * spread
    # log Ẑ of both proposals: the same total number of samples, split across ranks, agree
    # within their reported standard errors (one-process: the last repeat's estimate)
    for key in ("log_z", "log_z_paper", "log_z_normal"):
        se = (one[f"{key}_std_err"] ** 2 + two[f"{key}_std_err"] ** 2) ** 0.5
        assert abs(two[key] - one[key]) < 5 * se, (key, one[key], two[key], se)
    # reconstructions are deterministic and the reference statistics are exact sums:
    # sharding changes only the float64 summation order
    assert two["fid_recon"] == pytest.approx(one["fid_recon"], rel=1e-6)
    assert two["fid_reference_size"] == one["fid_reference_size"]
    assert 0 < two["fid_sample"] < 10 * one["fid_sample"]


def test_reproduce_smoke_under_torchrun(tmp_path, data_root):
    out = tmp_path / "t1"
    args = [
        "-m", "latentgap", "reproduce", "vaepp-table1", "--budget", "smoke", "--column", "mnist",
        "--only", "vaepp", "--out", str(out), "--data-dir", str(data_root), "--no-progress",
    ]  # fmt: skip
    proc = torchrun(2, *args)
    assert len(json_lines(proc.stdout)) == 1  # rank 0 alone reports
    results = json.loads((out / "results.json").read_text())
    cell = results["cells"]["vaepp/mnist"]
    assert cell["status"] == "done" and cell["value"] > 0, cell
    run = out / cell["run"]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["world_size"] == 2
    epochs = [r for r in read_metrics(run / "metrics.jsonl") if r.get("split") == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert json.loads((run / "eval.json").read_text())["n_examples"] == 64  # every test image
