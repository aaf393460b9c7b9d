"""CUDA checks (issue 14): device placement, bf16 numerics, data parallelism through NCCL, and
AIS on the GPU against closed forms.

Each check is written for a device and runs twice: on the CPU everywhere (so the helpers and
the code paths they drive are exercised on machines without a GPU) and on CUDA where there is
one. The CUDA instances carry the ``cuda`` marker (``pytest -m cuda`` selects them; that is what
``scripts/gpu-check.sh`` runs) and are skipped with a reason when CUDA is unavailable.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tests.test_ais import BIAS, D, check_sandwich
from tests.test_precision import MLP, TOY_SPEC, VAEPP_MLP, toy_config

from latentgap.data.base import Batch, DataSpec, ImageSet
from latentgap.distributed import DistContext
from latentgap.models import build_model
from latentgap.priors.ais import ais_log_z
from latentgap.train.checkpoint import load_model_state
from latentgap.train.run import load_splits, train
from latentgap.train.trainer import CHECKPOINT, Trainer

NO_CUDA = "needs a CUDA device: torch.cuda.is_available() is false"
needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]
ON_CUDA = pytest.param("cuda", id="cuda", marks=needs_cuda)
DEVICES = ["cpu", ON_CUDA]
BF16, F32 = torch.bfloat16, torch.float32
VAEPP_TINY = {**VAEPP_MLP, "mala_steps": 5, "pcd_chains": 16, "epoch_ais_chains": 16}


def as_device(name: str) -> torch.device:
    """cuda:0 rather than bare "cuda": DDP needs the index (the CLI resolves it the same way)."""
    return torch.device("cuda", 0) if name == "cuda" else torch.device(name)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest)."""


def tensors_off(module: torch.nn.Module, device: torch.device) -> list[str]:
    """Names of the parameters and buffers of ``module`` not on ``device``'s type."""
    named = itertools.chain(module.named_parameters(), module.named_buffers())
    return [name for name, t in named if t.device.type != device.type]


# --- device placement --------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("model", "options"), [("vae", MLP), ("vaepp", VAEPP_TINY)])
def test_training_on_the_device_and_the_checkpoint_loads_on_cpu(tmp_path, device, model, options):
    """Two training steps through the trainer on ``device``: every parameter and buffer is
    there before and after (VAEPP's persistent chains and log Ẑ are buffers), and the checkpoint
    loads on the CPU with weights_only=True into a CPU-built model with the same weights."""
    dev = as_device(device)
    assert not tensors_off(build_model(model, options, TOY_SPEC).to(dev), dev)
    config = toy_config(model, options, limit=64, device=device)  # 64 images, batch 32
    result = train(config, tmp_path / "run")
    assert result.record["iteration"] == 2
    assert not tensors_off(result.model, dev)
    state = torch.load(tmp_path / "run" / CHECKPOINT, map_location="cpu", weights_only=True)
    reloaded = build_model(model, options, TOY_SPEC)
    load_model_state(reloaded, state["model"], tmp_path / "run" / CHECKPOINT)
    for (name, p), q in zip(result.model.named_parameters(), reloaded.parameters(), strict=True):
        assert torch.equal(p.detach().cpu(), q.detach()), name
    images = reloaded.sample(4, generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, *TOY_SPEC.shape) and torch.isfinite(images).all()


# --- bf16 numerics -----------------------------------------------------------------------------
# bf16 keeps 8 significant bits: every network output is rounded with relative error at most
# u = 2^-8. The ELBO is E log p(x|z) − KL; if every rounding error of the decoder, encoder and
# critic pushed the same way, each part would move by at most ≈ u × its size, so the ELBO by at
# most u × (|E log p(x|z)| + |KL|). Independent errors average out far below that (test_precision
# measured ~1e-4 relative over a training epoch); a bf16 step inside a log-density (which must not
# happen) would not be caught by this bound, which is what the dtype checks below are for.
BF16_RTOL = 2.0**-8
RESNET_SPEC = DataSpec("mnist-like", (1, 28, 28), "binary")
NETS = {
    "mlp": (TOY_SPEC, {}),
    # the vaepp-mnist preset's nets: pre-activation ResNet 16-32-64 (cuDNN convolutions on CUDA)
    "resnet": (RESNET_SPEC, {"arch": "resnet", "latent_dim": 13, "arch_options": {}}),
}


def bf16_and_fp32_forward(model_name: str, nets: str, device: torch.device):
    """The same forward (same weights, batch and posterior noise) in fp32 and under bf16
    autocast; returns both outputs and the dtypes the decoder produced under autocast."""
    spec, net_options = NETS[nets]
    options = {**(VAEPP_TINY if model_name == "vaepp" else MLP), **net_options}
    if nets == "resnet":
        options.pop("critic_options", None)
    torch.manual_seed(0)
    model = build_model(model_name, options, spec).to(device)
    g = torch.Generator().manual_seed(3)
    e = torch.rand(16, *spec.shape, generator=g)
    batch = Batch((torch.rand(e.shape, generator=g) < e).float(), e).to(device)
    if model_name == "vaepp":
        model.prepare_training(ImageSet(e, spec=spec))
    step = "vaepp" if model_name == "vaepp" else "loss"
    low = copy.deepcopy(model)  # the persistent chains move in a step: each call its own copy
    seen: list[torch.dtype] = []
    low.decoder.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    torch.manual_seed(1)
    ref = model(step, batch)
    torch.manual_seed(1)
    with torch.autocast(device.type, dtype=BF16):
        out = low(step, batch)
        if model_name == "vaepp":  # the prior's pieces, on codes, under autocast
            z = torch.randn(8, options["latent_dim"], device=device)
            d = low.critic_values(low.generate(z))
            out.terms["log_f"] = low.pullback.log_unnormalized(z, d)
            out.terms["critic_dtype_is_bf16"] = torch.tensor(d.dtype == BF16)
    return ref, out, seen


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("nets", list(NETS))
@pytest.mark.parametrize("model_name", ["vae", "vaepp"])
def test_bf16_elbo_agrees_with_fp32_and_log_densities_stay_fp32(device, nets, model_name):
    dev = as_device(device)
    ref, out, seen = bf16_and_fp32_forward(model_name, nets, dev)
    assert seen and set(seen) == {BF16}  # the decoder really ran in bf16 ...
    for key in ("rec", "kl", "elbo"):  # ... while p(x|z), q(z|x), log p(z), KL stay fp32
        assert out.terms[key].dtype == F32, key
    assert out.loss.dtype == F32
    if model_name == "vaepp":
        assert out.terms["log_z"].dtype == F32 and out.terms["log_f"].dtype == F32
        assert bool(out.terms["critic_dtype_is_bf16"])
    a, b = ref.terms["elbo"].item(), out.terms["elbo"].item()
    assert math.isfinite(a) and math.isfinite(b) and a != b  # autocast changed the numbers
    bound = BF16_RTOL * (abs(ref.terms["rec"].item()) + abs(ref.terms["kl"].item()))
    assert abs(a - b) <= bound, (a, b, bound)


# --- data parallel on one GPU --------------------------------------------------------------------
@dataclass(frozen=True)
class OneRankGroup(DistContext):
    """A one-process group driven through the data-parallel code path (DDP wrapper, all-reduces
    of the logged terms, the ranks' parameter check), which the trainer skips for a plain
    single-process context."""

    @property
    def enabled(self) -> bool:
        return True


@contextmanager
def one_process_group(device: torch.device, store: Path) -> Iterator[OneRankGroup]:
    """A real process group of world size 1 (NCCL on CUDA, gloo on CPU), no torchrun needed."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    try:
        yield OneRankGroup()
    finally:
        dist.destroy_process_group()


def fit(config, device: torch.device, out: Path, ctx: DistContext | None = None) -> Trainer:
    """Train as ``latentgap.train`` does, but with the given (possibly forced) context."""
    splits = load_splits(config)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, config.model_options, splits.spec)
    out.mkdir(parents=True)
    trainer = Trainer(model, config, splits, out, device, ctx)
    trainer.fit()
    return trainer


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("model", "options", "epochs"), [("vae", MLP, 1), ("vaepp", VAEPP_TINY, 2)]
)
def test_one_rank_data_parallel_matches_single_process(tmp_path, device, model, options, epochs):
    """VAEPP: both phases, several parameter groups (DDP searches for unused parameters)."""
    dev = as_device(device)
    config = toy_config(model, options, epochs, limit=128, device=device)
    single = fit(config, dev, tmp_path / "single")
    with one_process_group(dev, tmp_path / "store") as ctx:
        ddp = fit(config, dev, tmp_path / "ddp", ctx)
        assert isinstance(ddp.wrapped, torch.nn.parallel.DistributedDataParallel)
    state = torch.load(tmp_path / "ddp" / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["world_size"] == 1 and state["epoch"] == epochs
    for (name, p), q in zip(single.model.named_parameters(), ddp.model.parameters(), strict=True):
        if dev.type == "cpu":  # the all-reduce over one rank and the division by 1 are exact
            assert torch.equal(p, q), name
        else:  # the same kernels on the same GPU; allow for a nondeterministic reduction
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


# --- AIS on the device -----------------------------------------------------------------------
def _linear(device: torch.device):
    """f = N(z)·exp(aᵀz): log Z = ‖a‖²/2 (test_ais's first case)."""
    a = torch.randn(D, generator=torch.Generator().manual_seed(0))
    return (lambda z: z @ a.to(device)), 0.5 * a.square().sum().item(), 256, 200


def _quadratic(device: torch.device):
    """ℓ = −½ zᵀAz with A indefinite (eigenvalues −0.8 … 30): log Z = −½ Σ log(1 + λ)."""
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    eig = torch.linspace(-0.8, 30.0, D)
    a = (q @ torch.diag(eig) @ q.T).to(device)
    return (lambda z: -0.5 * ((z @ a) * z).sum(1)), -0.5 * torch.log1p(eig).sum().item(), 512, 400


ENERGIES = {"linear": _linear, "quadratic": _quadratic}


def ais_on(device: torch.device, energy: str, seed: int = 1):
    log_weight, exact, chains, temps = ENERGIES[energy](device)
    r = ais_log_z(
        log_weight, D, n_chains=chains, n_temps=temps, n_leapfrog=3, seed=seed, device=device
    )
    return r, exact


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("energy", list(ENERGIES))
def test_ais_matches_the_closed_form_on_device(device, energy):
    """Tolerances as in test_ais: 4 standard errors plus the bias a finite schedule may have."""
    dev = as_device(device)
    r, exact = ais_on(dev, energy)
    assert r.samples.device.type == dev.type
    check_sandwich(r, exact)


@pytest.mark.parametrize("energy", list(ENERGIES))
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_ais_on_cuda_agrees_with_cpu(energy):
    """Different random streams, the same estimator: the two estimates differ by at most both
    runs' schedule bias plus 4 standard errors of their difference."""
    gpu, exact = ais_on(torch.device("cuda", 0), energy)
    cpu, _ = ais_on(torch.device("cpu"), energy)
    se = math.hypot(gpu.std_err, cpu.std_err)
    assert abs(gpu.log_z - cpu.log_z) < 2 * BIAS + 4 * se, (gpu.log_z, cpu.log_z, exact)
