"""Speed options: bf16 autocast keeps every log-density in float32, channels-last and
torch.compile leave the numbers unchanged, and the CLI flags reach config.json.

The project rule under ``precision: bf16``: the networks may run in bf16, but log p(x|z),
log q(z|x), log p(z), log f_λ(z), log|det| and log Z are computed in float32. The unit tests
below run each log-density under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and compare it
with the plain float32 computation on the same values (bf16 inputs: their exact float32
upcast), at float32 tolerance, i.e. far below one bf16 rounding step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math

import pytest
import torch
from torch import nn

from latentgap.cli.main import build_parser, main
from latentgap.cli.train_cmd import config_from_args
from latentgap.config import ExperimentConfig
from latentgap.data.base import Batch, DataSpec, ImageSet
from latentgap.errors import ConfigError
from latentgap.flows import Flow
from latentgap.likelihoods import LIKELIHOODS, build_likelihood
from latentgap.models import build_model
from latentgap.posteriors import POSTERIORS, build_posterior, upcast
from latentgap.priors import PullbackPrior, StandardNormal
from latentgap.train.metrics_log import read_metrics
from latentgap.train.run import train

BF16 = torch.bfloat16
F32 = torch.float32
IMAGE = DataSpec("test", (3, 4, 5), "continuous")
# float32 tolerance: a few ulps of sums of ~60 terms. One bf16 rounding of a value of size 1 is
# 2^-8 ≈ 4e-3, so any bf16 step inside a log-density fails these by orders of magnitude.
TIGHT = {"rtol": 1e-6, "atol": 1e-5}


def autocast() -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=BF16)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest)."""


def test_autocast_is_active_and_upcast_only_raises_low_precision() -> None:
    # The tests below are only meaningful if autocast really lowers the networks to bf16 here.
    with autocast():
        assert nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3)).dtype == BF16
    t32, t64 = torch.randn(3), torch.randn(3, dtype=torch.float64)
    assert upcast(t32) is t32 and upcast(t64) is t64  # no copy, float64 never lowered
    for low in (torch.bfloat16, torch.float16):
        t = t32.to(low)
        assert upcast(t).dtype == F32 and torch.equal(upcast(t), t.float())


# --- log-densities under autocast ------------------------------------------------------------
def _likelihood_inputs(name: str, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameters (B, k·C, H, W) and data (B, C, H, W) of the right kind, float32."""
    b, (c, h, w) = 4, IMAGE.shape
    if name == "discretized-logistic":
        loc = torch.rand(b, c, h, w, generator=g)
        log_scale = -3.0 + 0.5 * torch.randn(b, c, h, w, generator=g)
        x = torch.randint(0, 256, (b, c, h, w), generator=g).float() / 255
        return torch.cat([loc, log_scale], dim=1), x
    params = 3.0 * torch.randn(b, c, h, w, generator=g)
    return params, torch.rand(b, c, h, w, generator=g)  # soft targets for the Bernoulli


@pytest.mark.parametrize("low_inputs", [False, True], ids=["fp32-inputs", "bf16-inputs"])
@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_likelihood_log_prob_is_float32_under_autocast(name: str, low_inputs: bool) -> None:
    options = {"log_gamma": -1.3} if name == "gaussian" else {}
    lik = build_likelihood(name, IMAGE, **options)
    params, x = _likelihood_inputs(name, torch.Generator().manual_seed(0))
    if low_inputs:  # what a bf16 decoder hands over (data stay float32 in a Batch, but check)
        params, x = params.to(BF16).requires_grad_(), x.to(BF16)
    with autocast():
        got = lik.log_prob(params, x)
    ref = lik.log_prob(params.detach().float(), x.float())  # float32, no autocast
    assert got.dtype == F32 and got.shape == (4,)
    torch.testing.assert_close(got, ref, **TIGHT)
    if low_inputs:  # the upcast is differentiable: the bf16 decoder output gets its gradient
        got.sum().backward()
        assert params.grad.dtype == BF16 and torch.isfinite(params.grad).all()
        assert params.grad.abs().sum() > 0


@pytest.mark.parametrize("low_inputs", [False, True], ids=["fp32-inputs", "bf16-inputs"])
@pytest.mark.parametrize("name", POSTERIORS.names())
def test_posterior_densities_are_float32_under_autocast(name: str, low_inputs: bool) -> None:
    h = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))  # (B, 2D), D = 3
    if low_inputs:
        h = h.to(BF16).requires_grad_()
    with autocast():
        q = build_posterior(name, h)
        z = q.rsample(4, generator=torch.Generator().manual_seed(2))  # (K, B, D)
        log_q = q.log_prob(z)
        log_q_low = q.log_prob(z.to(BF16))  # a latent that went through a bf16 network
        entropy, kl = q.entropy(), q.kl_standard_normal()
    for t in (q.loc, q.log_scale, z, log_q, log_q_low, entropy, kl):
        assert t.dtype == F32
    ref = build_posterior(name, h.detach().float())
    z_ref = ref.rsample(4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(z, z_ref, **TIGHT)
    torch.testing.assert_close(log_q, ref.log_prob(z_ref), **TIGHT)
    torch.testing.assert_close(log_q_low, ref.log_prob(z.to(BF16).float()), **TIGHT)
    torch.testing.assert_close(entropy, ref.entropy(), **TIGHT)
    torch.testing.assert_close(kl, ref.kl_standard_normal(), **TIGHT)
    if low_inputs:
        (log_q.sum() + kl.sum()).backward()
        assert h.grad.dtype == BF16 and torch.isfinite(h.grad).all()


def test_flow_log_det_is_float32_on_bf16_conditioner_outputs() -> None:
    """Under autocast the coupling MLPs run in bf16; the affine maps and log|det| must equal
    the float32 computation with the conditioners' outputs replaced by their bf16 values."""
    torch.manual_seed(0)
    flow = Flow(6, n_layers=3, hidden=16)
    with torch.no_grad():
        for p in flow.parameters():  # a fresh flow is the identity: randomise it
            p.normal_(0.0, 0.3)
    z0 = torch.randn(5, 6, generator=torch.Generator().manual_seed(3))
    outputs: dict[nn.Module, list[torch.Tensor]] = {}

    def record(module, inputs, output):
        outputs.setdefault(module, []).append(output.detach())

    hooks = [layer.net.register_forward_hook(record) for layer in flow.layers]
    with autocast():
        z, log_det = flow(z0)
        back, log_det_inv = flow.inverse(z)
    for hook in hooks:
        hook.remove()
    assert all(o.dtype == BF16 for outs in outputs.values() for o in outs)  # nets ran in bf16
    assert z.dtype == log_det.dtype == back.dtype == log_det_inv.dtype == F32
    assert log_det.abs().min() > 1e-2  # a non-trivial Jacobian

    replay = {m: iter(outs) for m, outs in outputs.items()}  # forward calls, then inverse calls
    hooks = [
        layer.net.register_forward_hook(lambda m, i, o: next(replay[m]).float())
        for layer in flow.layers
    ]
    try:
        z_ref, log_det_ref = flow(z0)  # float32 throughout, bf16-rounded conditioner outputs
        back_ref, log_det_inv_ref = flow.inverse(z_ref)
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(z, z_ref, **TIGHT)
    torch.testing.assert_close(log_det, log_det_ref, **TIGHT)
    torch.testing.assert_close(back, back_ref, **TIGHT)
    torch.testing.assert_close(log_det_inv, log_det_inv_ref, **TIGHT)
    # and the map is still inverted exactly (the net inputs m⊙z are the same both ways)
    torch.testing.assert_close(back, z0, rtol=0, atol=1e-5)
    torch.testing.assert_close(log_det_inv, -log_det, rtol=0, atol=1e-5)


@pytest.mark.parametrize("low_inputs", [False, True], ids=["fp32-inputs", "bf16-inputs"])
def test_priors_are_float32_under_autocast(low_inputs: bool) -> None:
    g = torch.Generator().manual_seed(4)
    z, d = torch.randn(6, 4, generator=g), 3.0 * torch.randn(6, generator=g)
    log_z = torch.tensor(1.7)
    if low_inputs:
        z, d, log_z = z.to(BF16), d.to(BF16), log_z.to(BF16)
    # ξ = 0.3: β = 10·sigmoid(0.3) ≈ 5.744 is not a bf16 number, so casting β down would show
    prior = PullbackPrior(dim=4, beta_bound=10.0, init_logit=0.3)
    normal = StandardNormal(4)
    with autocast():
        got = {
            "log_f": prior.log_unnormalized(z, d),
            "energy": prior.energy(z, d),
            "log_weight": prior.log_weight(d),
            "log_prob": prior.log_prob(z, d, log_z),
            "beta_gradient": prior.beta_gradient(d[:3], d[3:]),
            "normal": normal.log_prob(z),
        }
    z32, d32, log_z32 = z.float(), d.float(), log_z.float()
    ref = {
        "log_f": prior.log_unnormalized(z32, d32),
        "energy": prior.energy(z32, d32),
        "log_weight": prior.log_weight(d32),
        "log_prob": prior.log_prob(z32, d32, log_z32),
        "beta_gradient": prior.beta_gradient(d32[:3], d32[3:]),
        "normal": normal.log_prob(z32),
    }
    for key, value in got.items():
        assert value.dtype == F32, key
        torch.testing.assert_close(value, ref[key], **TIGHT, msg=key)
    # the closed form, independently of the code under test
    beta = 10.0 / (1.0 + math.exp(-0.3))
    expected = -0.5 * z32.square().sum(-1) - beta * d32 - 2.0 * math.log(2 * math.pi)
    torch.testing.assert_close(got["log_f"], expected, **TIGHT)


def test_pullback_with_a_bf16_critic_callable() -> None:
    """A critic called on z inside autocast returns bf16; log f_λ and the energy are float32 on
    those values (the critic may round, the combination may not)."""
    torch.manual_seed(5)
    critic = nn.Linear(4, 1)
    prior = PullbackPrior(dim=4, beta_bound=10.0, init_logit=0.3)

    def d_of_g(z: torch.Tensor) -> torch.Tensor:
        return critic(z).squeeze(-1)

    z = torch.randn(6, 4, requires_grad=True)
    with autocast():
        d_low = d_of_g(z)
        log_f = prior.log_f_fn(d_of_g)(z)
        energy = prior.energy_fn(d_of_g)(z)
        log_w = prior.log_weight_fn(d_of_g)(z)
    assert d_low.dtype == BF16
    assert log_f.dtype == energy.dtype == log_w.dtype == F32
    d32 = d_low.detach().float()
    torch.testing.assert_close(log_f, prior.log_unnormalized(z.detach(), d32), **TIGHT)
    torch.testing.assert_close(energy, prior.energy(z.detach(), d32), **TIGHT)
    torch.testing.assert_close(log_w, prior.log_weight(d32), **TIGHT)
    (grad,) = torch.autograd.grad(energy.sum(), z)  # MALA's gradient still flows
    assert grad.dtype == F32 and torch.isfinite(grad).all()


# --- models under autocast ---------------------------------------------------------------------
TOY_SPEC = DataSpec("toy", (1, 8, 8), "binary")
MLP = {"arch": "mlp", "latent_dim": 4, "arch_options": {"hidden": [32]}}
VAEPP_MLP = {
    **MLP,
    "critic_options": {"hidden": [32]},
    "gan_epochs": 1,
    "gan_hidden": 8,
    "logz_normal_samples": 16,
}


def _toy_batch(n: int = 8) -> Batch:
    g = torch.Generator().manual_seed(6)
    e = torch.rand(n, *TOY_SPEC.shape, generator=g)
    return Batch(torch.bernoulli(e, generator=g), e)


def _toy_batch_set() -> ImageSet:
    return ImageSet(torch.rand(32, *TOY_SPEC.shape), spec=TOY_SPEC)


def _decoder_dtypes(
    model: nn.Module,
) -> tuple[list[torch.dtype], torch.utils.hooks.RemovableHandle]:
    seen: list[torch.dtype] = []
    handle = model.decoder.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    return seen, handle


def test_vae_loss_terms_are_float32_under_autocast() -> None:
    torch.manual_seed(0)
    model = build_model("vae", MLP, TOY_SPEC)
    seen, handle = _decoder_dtypes(model)
    torch.manual_seed(1)
    with autocast():
        out = model("loss", _toy_batch())
    handle.remove()
    assert seen == [BF16]  # the decoder ran in bf16 ...
    for key in ("rec", "kl", "elbo"):  # ... and p(x|z), q(z|x), KL are float32
        assert out.terms[key].dtype == F32, key
    assert out.loss.dtype == F32


def test_vaepp_log_densities_are_float32_under_autocast() -> None:
    torch.manual_seed(0)
    model = build_model("vaepp", VAEPP_MLP, TOY_SPEC)
    model.prepare_training(_toy_batch_set())
    seen, handle = _decoder_dtypes(model)
    torch.manual_seed(1)
    with autocast():
        out = model("vaepp", _toy_batch())
        d = model.critic_values(torch.rand(3, *TOY_SPEC.shape))
        z = torch.randn(3, 4)
        log_f = model.pullback.log_unnormalized(z, model.critic_values(model.generate(z)))
    handle.remove()
    assert seen and set(seen) == {BF16} and d.dtype == BF16  # networks in bf16
    assert log_f.dtype == F32
    for key in ("rec", "kl", "elbo"):
        assert out.terms[key].dtype == F32, key


def test_vaepp_training_log_z_is_float32_under_autocast() -> None:
    torch.manual_seed(0)
    model = build_model("vaepp", VAEPP_MLP, TOY_SPEC)
    model.prepare_training(_toy_batch_set())
    torch.manual_seed(1)
    with autocast():
        out = model("vaepp", _toy_batch())
    assert out.terms["log_z"].dtype == F32


# --- training runs -------------------------------------------------------------------------------
def toy_config(
    model: str,
    options: dict,
    epochs: int = 1,
    limit: int = 256,
    binarize: bool = True,
    **train_overrides,
) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "model": model,
            "model_options": options,
            "data": {
                "name": "toy-images",
                "limit_train": limit,
                "limit_test": 64,
                "options": {"binarize": binarize},
            },
            "train": {
                "epochs": epochs,
                "batch_size": 32,
                "lr": 3e-3,
                "progress": False,
                "log_every": 3,
                "eval_batches": 2,
                "sample_every": 0,
                **train_overrides,
            },
        }
    )


def epoch_records(run_dir) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("split") == "epoch"]


# bf16 keeps an 8-bit significand (7 stored bits), unit roundoff u = 2^-8 ≈ 3.9e-3: every
# matmul input of the networks is rounded with relative error ≤ u. The loss (−ELBO ≈ 38 nats
# here) is a sum of per-pixel log-likelihood terms of one sign plus a small KL, so even if every
# rounding error pushed the same way the first-epoch mean loss would move by at most ≈ u·|loss|
# (≈ 0.15 nats); 8 Adam steps at lr 3e-3 add only a second-order drift. Observed: |Δ| ≈ 1e-4
# for both models (independent rounding errors average out), 1000× inside the bound.
BF16_LOSS_RTOL = 2.0**-8


@pytest.mark.parametrize(
    ("model", "options", "epochs", "loss_key"),
    [("vae", MLP, 1, "loss"), ("vaepp", VAEPP_MLP, 2, "vaepp_loss")],
    ids=["vae", "vaepp"],
)
def test_bf16_training_matches_fp32(tmp_path, model, options, epochs, loss_key) -> None:
    fp32 = train(toy_config(model, options, epochs), tmp_path / "fp32")
    bf16 = train(toy_config(model, options, epochs, precision="bf16"), tmp_path / "bf16")
    assert bf16.config.train.precision == "bf16"
    records = {"fp32": epoch_records(fp32.out_dir), "bf16": epoch_records(bf16.out_dir)}
    assert len(records["bf16"]) == epochs  # vaepp: the VAE epoch and the latent-GAN epoch
    for record in records["bf16"]:
        for key, value in record.items():
            if key.endswith("loss") or key in ("elbo", "rec", "kl"):
                assert math.isfinite(value), (key, value)
    a, b = records["fp32"][0][loss_key], records["bf16"][0][loss_key]
    assert a != b  # autocast was in effect (bitwise-equal losses would mean it was not)
    assert abs(a - b) <= BF16_LOSS_RTOL * abs(a), (a, b)


# --- channels-last ----------------------------------------------------------------------------
# width ≥ 8: oneDNN's AVX2 1×1 stride-2 weight-gradient kernel in NHWC (the residual blocks'
# strided shortcuts) corrupts the heap for fewer than 8 input channels on one thread and returns
# wrong gradients on two (uxlfoundation/oneDNN#6035; seen here with torch 2.13 CPU, width 4).
RESNET = {"arch": "resnet", "latent_dim": 4, "arch_options": {"width": 8}}


def test_channels_last_forward_matches_contiguous() -> None:
    """One forward and backward of a conv VAE (3 channels, so NHWC is a different layout; the
    discretised logistic splits its 2·C parameter channels) in both formats."""
    spec = DataSpec("rgb", (3, 8, 8), "discrete8")
    torch.manual_seed(0)
    model = build_model("vae", RESNET, spec)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (6, 3, 8, 8), generator=torch.Generator().manual_seed(7)) / 255.0
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert not x_cl.is_contiguous()  # really another layout
    conv = next(m for m in model_cl.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    layouts: list[bool] = []
    handle = model_cl.decoder.register_forward_hook(
        lambda m, i, o: layouts.append(o.is_contiguous(memory_format=torch.channels_last))
    )
    losses = []
    for net, inp in ((model, x), (model_cl, x_cl)):
        torch.manual_seed(8)  # the same posterior draw
        out = net("loss", Batch(inp, inp))
        out.loss.backward()
        losses.append(out.loss.detach())
    handle.remove()
    assert layouts == [True]  # the decoder's convolutions produced NHWC maps
    # float32: the NHWC convolutions sum in another order, a few ulps of a ~400-nat loss
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-4)
    for (name, p), p_cl in zip(model.named_parameters(), model_cl.parameters(), strict=True):
        torch.testing.assert_close(p_cl.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_channels_last_is_refused_on_cpu() -> None:
    """oneDNN's CPU kernels return wrong weight gradients (or corrupt the heap) for strided 1x1
    convolutions with few input channels in NHWC (the resnet shortcut at width < 8), and the
    layout does not speed up CPU training: the option is for CUDA devices only."""
    with pytest.raises(ConfigError, match="channels-last is for CUDA"):
        toy_config("vae", RESNET, channels_last=True)


def _inductor_or_skip() -> None:
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(3))
    except Exception as err:  # no C++ compiler, or inductor cannot build here
        pytest.skip(f"torch.compile (inductor) does not work on this machine: {err}")


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path) -> None:
    """4 Adam steps of a tiny MLP VAE, eager and through torch.compile: the same parameters up
    to float32 reordering. Inductor draws its own random numbers unless ``fallback_random``
    (then it calls torch's generator like eager), so compiled runs are not noise-identical to
    eager ones by default; here they are made so to compare."""
    _inductor_or_skip()
    import torch._dynamo
    import torch._inductor.config

    mlp = {"arch": "mlp", "latent_dim": 4, "arch_options": {"hidden": [16]}}
    eager = _params(train(toy_config("vae", mlp, limit=128), tmp_path / "eager").model)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._inductor.config.patch(fallback_random=True):
        run = train(toy_config("vae", mlp, compile="default", limit=128), tmp_path / "compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # really compiled
    compiled = _params(run.model)
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, rtol=1e-5, atol=1e-5, msg=key)


@pytest.mark.slow
def test_compiled_vaepp_trains_both_phases(tmp_path) -> None:
    """Algorithm 2's gradient penalty differentiates a gradient (double backward), which
    AOTAutograd cannot compile: it runs eagerly inside the compiled step."""
    _inductor_or_skip()
    import torch._dynamo

    torch._dynamo.reset()
    run = train(toy_config("vaepp", VAEPP_MLP, epochs=2, compile="default", limit=64), tmp_path)
    phases = [r["phase"] for r in epoch_records(run.out_dir)]
    assert phases == ["vae", "latent-gan"]
    assert all(math.isfinite(r["loss"]) for r in epoch_records(run.out_dir) if "loss" in r)


def test_compile_is_refused_for_double_backward_models(tmp_path) -> None:
    options = {"arch": "mlp", "latent_dim": 4, "arch_options": {"hidden": [16]}}
    cfg = toy_config("rae-gp", options, compile="default", limit=64, binarize=False)
    with pytest.raises(ConfigError, match="double backward"):
        train(cfg, tmp_path / "run")


TOY_CLI = [
    "--model",
    "vae",
    "--dataset",
    "toy-images",
    "--arch",
    "mlp",
    "--latent-dim",
    "4",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--limit-train",
    "64",
    "--limit-test",
    "32",
    "--no-progress",
    "--set",
    "model_options.arch_options.hidden=[16]",
]


def test_cli_speed_flags_reach_config_json(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), *TOY_CLI, "--precision", "bf16"])
    err = capsys.readouterr().err
    assert code == 0, err
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["precision"] == "bf16" and saved["channels_last"] is False
    assert saved["compile"] is None
    # --compile without a mode means "default" (parsed only: compiling here takes seconds)
    args = build_parser().parse_args(["train", "--out", str(out), *TOY_CLI, "--compile"])
    assert config_from_args(args).train.compile == "default"
    args = build_parser().parse_args(["train", "--out", str(out), "--compile", "max-autotune"])
    assert config_from_args(args).train.compile == "max-autotune"
    defaults = config_from_args(build_parser().parse_args(["train", "--out", str(out)])).train
    assert (defaults.precision, defaults.compile, defaults.channels_last) == ("fp32", None, False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "fp16"], "invalid choice: 'fp16'"),
        (["--set", "train.precision=fp16"], "unknown precision 'fp16'"),
        (["--compile", "fast"], "unknown compile mode 'fast'"),
        (["--channels-last"], "channels-last is for CUDA devices"),
    ],
)
def test_cli_rejects_unknown_precision_and_compile_mode(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), *TOY_CLI, *args])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (out / "config.json").exists()
