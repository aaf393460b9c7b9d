"""Training and NLL throughput of the MLP VAE on MNIST, against the machine's matmul peak and,
optionally, Pythae 0.1.2 on the same job in the same run.

The job (issue 2, REFERENCE.md): VAE with an MLP 784-500-500 encoder/decoder, z = 40, Bernoulli
likelihood, batch 100, dynamically binarised MNIST; NLL with K = 1000 importance samples.

    python bench/throughput.py --pythae            # writes bench/results/throughput-<host>.json

Numbers are reported absolute and as fractions of the fp32 matmul peak measured in the same run,
so a noisy machine still gives honest ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from latentgap.reproduce.harness import machine_info

REPO = Path(__file__).resolve().parents[1]
HIDDEN = (500, 500)
LATENT = 40
BATCH = 100
D = 784


def mlp_macs_per_image() -> tuple[int, int]:
    """Multiply-accumulates of one encoder pass and one decoder pass."""
    enc = D * HIDDEN[0] + HIDDEN[0] * HIDDEN[1] + HIDDEN[1] * 2 * LATENT
    dec = LATENT * HIDDEN[1] + HIDDEN[1] * HIDDEN[0] + HIDDEN[0] * D
    return enc, dec


def matmul_peak(
    device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 3.0
) -> float:
    """Best n×n×n matmul rate (TFLOP/s) over about ``seconds`` of repeats (CUDA: event-timed)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.mm(a, b)
            stop.record()
            stop.synchronize()
            elapsed = start.elapsed_time(stop) / 1e3
        else:
            t0 = time.perf_counter()
            torch.mm(a, b)
            elapsed = time.perf_counter() - t0
        best = max(best, 2 * n**3 / elapsed / 1e12)
    return best


def matmul_peak_gflops(n: int = 2048, seconds: float = 3.0) -> float:
    """Best fp32 matmul rate of this process on the CPU (GFLOP/s), over ~``seconds`` of trials."""
    return matmul_peak(torch.device("cpu"), torch.float32, n, seconds) * 1e3


def bench_latentgap(
    splits,
    train_images: int,
    nll_images: int,
    k: int,
    compile_mode: str | None = None,
    precision: str = "fp32",
) -> dict:
    from latentgap.config import ExperimentConfig
    from latentgap.metrics.nll import evaluate_nll
    from trainer_timing import QUIET, bench_trainer

    config = ExperimentConfig.from_dict(
        {
            "model": "vae",
            "model_options": {
                "arch": "mlp",
                "latent_dim": LATENT,
                "arch_options": {"hidden": list(HIDDEN)},
            },
            "data": {"name": "mnist"},
            "train": {
                "epochs": 1,
                "batch_size": BATCH,
                "lr": 1e-3,
                **QUIET,
                "compile": compile_mode,
                "precision": precision,
            },
        }
    )
    with bench_trainer(config, splits, train_images) as trainer:
        full = trainer.train_set
        trainer.train_set = full.subset(1000)  # warm-up (compilation with --compile)
        t0 = time.perf_counter()
        trainer._run_epoch(trainer.phases[0])
        warmup_s = time.perf_counter() - t0
        trainer.train_set = full
        record = trainer._run_epoch(trainer.phases[0])  # timed inside: the epoch alone
        model = trainer.model
    out = {"train_images_per_s": record["images_per_s"], "warmup_epoch_1000_images_s": warmup_s}
    if nll_images:  # the NLL does not use the training options
        test = splits.test.subset(nll_images)
        t0 = time.perf_counter()
        res = evaluate_nll(model, test, k=k)
        nll_s = time.perf_counter() - t0
        out.update(nll_images_per_s=nll_images / nll_s, nll_nats_untrained_1_epoch=res.nll_nats)
    return out


def bench_pythae(splits, train_images: int, nll_images: int, k: int) -> dict:
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from torch import nn

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Flatten(),
                nn.Linear(D, HIDDEN[0]),
                nn.ReLU(),
                nn.Linear(HIDDEN[0], HIDDEN[1]),
                nn.ReLU(),
            )
            self.mu, self.logvar = nn.Linear(HIDDEN[1], LATENT), nn.Linear(HIDDEN[1], LATENT)

        def forward(self, x):
            h = self.body(x)
            return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(LATENT, HIDDEN[1]),
                nn.ReLU(),
                nn.Linear(HIDDEN[1], HIDDEN[0]),
                nn.ReLU(),
                nn.Linear(HIDDEN[0], D),
                nn.Sigmoid(),
            )

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).reshape(-1, 1, 28, 28))

    torch.manual_seed(0)
    cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=LATENT, reconstruction_loss="bce")
    model = VAE(cfg, encoder=Encoder(), decoder=Decoder())
    x = torch.bernoulli(splits.train.gray(torch.arange(train_images)))
    with tempfile.TemporaryDirectory() as tmp:
        tcfg = BaseTrainerConfig(
            output_dir=tmp,
            per_device_train_batch_size=BATCH,
            num_epochs=1,
            learning_rate=1e-3,
            no_cuda=True,
        )
        from pythae.data.datasets import BaseDataset

        dataset = BaseDataset(x, torch.zeros(len(x)))
        trainer = BaseTrainer(model, train_dataset=dataset, training_config=tcfg)
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
    xt = torch.bernoulli(splits.test.gray(torch.arange(nll_images)))
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        model.get_nll(xt, n_samples=k, batch_size=k)
    nll_s = time.perf_counter() - t0
    return {"train_images_per_s": train_images / train_s, "nll_images_per_s": nll_images / nll_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data-dir", default=os.environ.get("LATENTGAP_DATA", str(REPO.parent / "shared" / "data"))
    )
    p.add_argument("--train-images", type=int, default=30000)
    p.add_argument("--nll-images", type=int, default=500)
    p.add_argument("--pythae-nll-images", type=int, default=100)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--pythae", action="store_true", help="also run Pythae 0.1.2 on the same job")
    p.add_argument(
        "--compile", action="store_true", help="also train with --compile (torch.compile)"
    )
    p.add_argument("--bf16", action="store_true", help="also train with --precision bf16")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (medians)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    from latentgap.data import get_dataset

    splits = get_dataset("mnist", data_dir=args.data_dir)
    peak = matmul_peak_gflops()
    enc, dec = mlp_macs_per_image()
    train_flops = 6 * (enc + dec)  # forward + backward ≈ 3 × forward, 2 flops per MAC
    nll_flops = 2 * (enc + args.k * dec)

    def fractions(r: dict) -> dict:
        out = {**r, "train_fraction_of_peak": r["train_images_per_s"] * train_flops / (peak * 1e9)}
        if "nll_images_per_s" in r:
            out["nll_fraction_of_peak"] = r["nll_images_per_s"] * nll_flops / (peak * 1e9)
        return out

    result = {
        "benchmark": "mlp-vae-mnist-throughput",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "job": {
            "net": "784-500-500",
            "latent_dim": LATENT,
            "batch_size": BATCH,
            "likelihood": "bernoulli",
            "iw_samples": args.k,
            "train_images": args.train_images,
            "nll_images": args.nll_images,
        },
        "matmul_peak_gflops": peak,
        "repeats": args.repeats,
    }
    # interleaved repeats: every configuration sees the same drifts of a shared machine; the
    # medians (and ratios of medians) are reported, all values kept under "runs"
    configs = {
        "latentgap": lambda: bench_latentgap(splits, args.train_images, args.nll_images, args.k)
    }
    if args.compile:
        configs["latentgap_compiled"] = lambda: bench_latentgap(
            splits, args.train_images, 0, args.k, "default"
        )
    if args.bf16:
        configs["latentgap_bf16"] = lambda: bench_latentgap(
            splits, args.train_images, 0, args.k, precision="bf16"
        )
    if args.pythae:
        configs["pythae"] = lambda: bench_pythae(
            splits, args.train_images, args.pythae_nll_images, args.k
        )
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, fn in configs.items():
            runs[name].append(fn())
    for name, values in runs.items():
        keys = [k for k in values[0] if k.endswith("_per_s")]
        medians = {k: statistics.median(v[k] for v in values) for k in keys}
        result[name] = {**fractions(medians), "runs": values}
    if args.pythae:
        py = result["pythae"]
        result["ratio_vs_pythae"] = {
            "train": result["latentgap"]["train_images_per_s"] / py["train_images_per_s"],
            "nll": result["latentgap"]["nll_images_per_s"] / py["nll_images_per_s"],
        }
        if args.compile:
            result["ratio_vs_pythae"]["train_compiled"] = (
                result["latentgap_compiled"]["train_images_per_s"] / py["train_images_per_s"]
            )
    out = args.out or REPO / "bench" / "results" / f"throughput-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
