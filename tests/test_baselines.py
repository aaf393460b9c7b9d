"""LDC-VAE Table 1 baselines: CV-VAE, WAE-MMD, two-stage VAE and the RAE family with ex-post GMM.

Contract tests run every baseline on tiny continuous images (the toy shapes upsampled to
32×32 so the RAE nets apply); statistical tests check the MMD estimator, the GMM fit and its
torch sampler against hand computations and known mixtures; unit tests check the RAE decoder
regularisers against hand-computed values.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import latentgap.models.cv_vae  # noqa: F401  (registration)
import latentgap.models.rae  # noqa: F401
import latentgap.models.two_stage  # noqa: F401
import latentgap.models.wae  # noqa: F401
from latentgap.config import ExperimentConfig, dataclass_from_dict
from latentgap.data import get_dataset
from latentgap.data.base import Batch, DataSpec, ImageSet, Splits
from latentgap.errors import ConfigError
from latentgap.mmd import IMQKernel, RBFKernel, mmd_squared
from latentgap.models.base import MODELS, build_model
from latentgap.models.rae import decoder_gradient_penalty
from latentgap.presets import PRESETS
from latentgap.samplers.gmm import GaussianMixture
from latentgap.train.checkpoint import load_checkpoint
from latentgap.train.trainer import Trainer

SPEC = DataSpec("toy32", (1, 32, 32), "continuous")
NETS = {"arch": "rae", "latent_dim": 4, "arch_options": {"width": 4}}
BASELINES = {
    "cv-vae": {},
    "wae-mmd": {},
    "two-stage-vae": {"stage2_hidden": [32]},
    "rae": {},
    "rae-l2": {},
    "rae-gp": {},
    "rae-sn": {},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


@pytest.fixture(scope="module")
def splits() -> Splits:
    """Gray toy shapes (8×8) upsampled ×4 to 32×32: 128 training and 32 test images."""
    toy = get_dataset("toy-images", binarize=False, n_train=128, n_test=32)

    def up(images: ImageSet) -> ImageSet:
        big = images.images.repeat_interleave(4, -1).repeat_interleave(4, -2)
        return ImageSet(big, images.labels, spec=SPEC)

    return Splits(SPEC, up(toy.train), up(toy.test))


def build(name: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_model(name, {**NETS, **BASELINES[name], **options}, SPEC)


def batch_at(images: ImageSet, i: int, size: int = 32) -> Batch:
    index = torch.arange(i * size, (i + 1) * size) % len(images)
    return images.make_batch(index)


def train_steps(model, images: ImageSet, loss: str, group: str, steps: int) -> list[float]:
    opt = torch.optim.Adam(model.parameter_groups()[group], lr=3e-3)
    model.train()
    losses = []
    for i in range(steps):
        out = model(loss, batch_at(images, i))
        assert torch.isfinite(out.loss), (loss, i)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return losses


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# --- contract ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_trains_saves_reloads_and_samples(name, splits):
    model = build(name)
    assert name in MODELS
    phases = model.phases(4)
    model.prepare_training(splits.train)
    for phase in phases:
        for step in phase.steps:
            losses = train_steps(model, splits.train, step.loss, step.group, 30)
            assert sum(losses[-5:]) < sum(losses[:5]), (phase.name, losses)
        model.end_phase(phase.name, splits.train)

    model.eval()
    for sampler in model.samplers():
        images = model.sample(6, generator=torch.Generator().manual_seed(1), sampler=sampler)
        assert images.shape == (6, 1, 32, 32)
        assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert model.reconstruct(batch_at(splits.test, 0, 5)).shape == (5, 1, 32, 32)

    fresh = build(name, seed=123)
    fresh.load_state_dict(roundtrip(model.state_dict()))
    fresh.eval()
    for sampler in model.samplers():
        a = model.sample(8, generator=torch.Generator().manual_seed(7), sampler=sampler)
        b = fresh.sample(8, generator=torch.Generator().manual_seed(7), sampler=sampler)
        assert torch.equal(a, b), sampler


@pytest.mark.parametrize("name", ["rae-l2", "two-stage-vae"])
def test_trainer_runs_phases_and_checkpoint_carries_state(name, splits, tmp_path: Path):
    config = ExperimentConfig.from_dict(
        {
            "model": name,
            "model_options": {**NETS, **BASELINES[name]},
            "train": {"epochs": 2, "batch_size": 32, "progress": False, "eval_batches": 1},
        }
    )
    model = build(name)
    Trainer(model, config, splits, tmp_path, torch.device("cpu")).fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt")  # weights_only=True
    fresh = build(name, seed=5)
    fresh.load_state_dict(state["model"])
    if name == "rae-l2":
        assert fresh.density.is_fitted  # fitted by end_phase
        assert torch.equal(fresh.density.means, model.density.means)
    else:
        assert bool(fresh.stage2_trained)  # one epoch of each stage ran
    model.eval(), fresh.eval()
    g = [torch.Generator().manual_seed(3) for _ in range(2)]
    assert torch.equal(model.sample(4, generator=g[0]), fresh.sample(4, generator=g[1]))


def test_two_stage_samples_through_both_stages(splits):
    model = build("two-stage-vae")
    assert model.phases(10)[0].epochs == 5 and model.stage_epochs(10) == (5, 5)
    assert build("two-stage-vae", stage2_epochs=3).stage_epochs(10) == (7, 3)
    calls: list[str] = []
    model.stage1.decoder.register_forward_hook(lambda *_: calls.append("stage1"))
    model.stage2.decoder.register_forward_hook(lambda *_: calls.append("stage2"))
    model.eval()
    g = torch.Generator().manual_seed(0)
    assert model.sample(3, generator=g).shape == (3, 1, 32, 32)
    assert calls == ["stage1"]  # before any stage-2 step the default is the N(0, I) prior
    train_steps(model, splits.train, "stage2", "stage2", 1)
    model.eval()
    calls.clear()
    two_stage = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert calls == ["stage2", "stage1"]
    prior = model.sample(3, generator=torch.Generator().manual_seed(0), sampler="prior")
    assert not torch.allclose(two_stage, prior)


def test_two_stage_freezes_stage1_in_stage2(splits):
    model = build("two-stage-vae")
    before = {k: v.clone() for k, v in model.stage1.state_dict().items()}
    train_steps(model, splits.train, "stage2", "stage2", 3)
    after = model.stage1.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. batch-norm statistics


def test_cv_vae_posterior_variance_is_one_shared_scalar(splits):
    model = build("cv-vae", posterior_scale=0.7, learn_scale=False)
    q = model.posterior(batch_at(splits.train, 0, 5).x)
    assert torch.allclose(q.scale, torch.full((5, 4), 0.7))
    assert not any(p is model.log_scale for p in model.parameters())
    learnt = build("cv-vae")
    assert isinstance(learnt.log_scale, nn.Parameter) and learnt.log_scale.ndim == 0
    train_steps(learnt, splits.train, "loss", "model", 3)
    assert learnt.log_scale.item() != 0.0


# --- WAE: the MMD estimator -------------------------------------------------------------------
def hand_mmd(x: list, y: list, k) -> float:
    def sq(a, b):
        return sum((ai - bi) ** 2 for ai, bi in zip(a, b, strict=True))

    n, m = len(x), len(y)
    xx = sum(k(sq(x[i], x[j])) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(sq(y[i], y[j])) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(sq(a, b)) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_matches_hand_computation():
    x = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]
    y = [[1.0, 1.0], [2.0, 0.0], [-1.0, 0.5], [0.5, 0.5]]
    base, scales = 4.0, (0.5, 1.0, 3.0)  # C = 2·D·σ_z² = 4 for D = 2

    def imq(d2):
        return sum(s * base / (s * base + d2) for s in scales)

    def rbf(d2):
        return sum(math.exp(-d2 / (s * base)) for s in scales)

    tx, ty = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    got = mmd_squared(tx, ty, IMQKernel(base, scales)).item()
    assert got == pytest.approx(hand_mmd(x, y, imq), rel=1e-12)
    got = mmd_squared(tx, ty, RBFKernel(base, scales)).item()
    assert got == pytest.approx(hand_mmd(x, y, rbf), rel=1e-12)


@pytest.mark.parametrize("kernel", [IMQKernel(8.0), RBFKernel(8.0)])
def test_mmd_is_zero_for_one_distribution_and_positive_for_a_shift(kernel):
    # Under the null the estimator's standard deviation is about 0.006 at n = 300 (measured
    # over 50 repeats for both kernels); the shifted pair gives about 0.25.
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g)
    assert abs(mmd_squared(a, b, kernel).item()) < 0.03
    assert mmd_squared(a + 0.5, b, kernel).item() > 0.1


def test_wae_config_validation():
    with pytest.raises(ConfigError, match="kernel"):
        build("wae-mmd", kernel="laplace")
    with pytest.raises(ConfigError, match="scales"):
        build("wae-mmd", scales=[1.0, -2.0])


# --- RAE: decoder regularisers ----------------------------------------------------------------
def test_gradient_penalty_on_a_linear_decoder():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 3, generator=g, dtype=torch.float64)  # 4×4 pixels, D = 3
    c = torch.randn(16, generator=g, dtype=torch.float64)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    x_hat = (z @ w.T + c).reshape(5, 1, 4, 4)

    expected = (2 * (z @ w.T + c) @ w).square().mean()  # mean_{b,d} (2 Wᵀ x̂_b)_d²
    got = decoder_gradient_penalty(x_hat, z, "reference")
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    assert got.requires_grad  # differentiable (double backprop)

    probe = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=z.dtype)
    expected = (probe.reshape(5, 16) @ w).square().sum(-1).mean()  # mean_b ‖Wᵀ v_b‖²
    got = decoder_gradient_penalty(x_hat, z, "jacobian", torch.Generator().manual_seed(1))
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)

    # Hutchinson is unbiased for ‖W‖²_F: average over 4000 probes (relative SE ≈ 0.01)
    zs = torch.zeros(4000, 3, dtype=torch.float64, requires_grad=True)
    estimate = decoder_gradient_penalty((zs @ w.T).reshape(-1, 1, 4, 4), zs, "jacobian", g)
    assert estimate.item() == pytest.approx(w.square().sum().item(), rel=0.05)


def test_rae_gp_model_penalty_matches_hand_value_with_single_layer_nets():
    spec = DataSpec("tiny", (1, 4, 4), "continuous")
    torch.manual_seed(0)
    model = build_model(
        "rae-gp", {"arch": "mlp", "latent_dim": 3, "arch_options": {"hidden": []}}, spec
    )
    x = torch.rand(6, 1, 4, 4)
    out = model("loss", Batch(x, x))
    enc = model.encoder[1][0]  # Flatten, then one Linear
    dec = model.decoder.net[0]
    z = enc(x.reshape(6, 16))
    m = torch.sigmoid(dec(z))  # (B, 16)
    # ∂ Σ_i m_i² / ∂z = Σ_i 2 m_i · m_i (1 − m_i) · W_i
    expected = (2 * m * m * (1 - m) @ dec.weight).square().mean()
    assert out.terms["gradient_penalty"].item() == pytest.approx(expected.item(), rel=1e-5)
    weights = model.config
    assert out.loss.item() == pytest.approx(
        out.terms["rec"].item()
        + weights.embedding_weight * z.square().mean().item()
        + weights.decoder_weight * expected.item(),
        rel=1e-5,
    )
    with torch.no_grad():  # the trainer's test-loss evaluation
        assert torch.isfinite(model("loss", Batch(x, x)).terms["gradient_penalty"])


def test_rae_l2_penalty_is_sum_of_squared_decoder_weights():
    model = build("rae-l2")
    x = torch.rand(2, 1, 32, 32)
    got = model("loss", Batch(x, x)).terms["decoder_l2"]
    kernels = [
        p for n, p in model.decoder.named_parameters() if n.endswith("weight") and p.ndim > 1
    ]
    assert got.item() == pytest.approx(sum(k.square().sum().item() for k in kernels), rel=1e-5)


def test_rae_sn_decoder_weights_have_unit_spectral_norm(splits):
    model = build("rae-sn")
    train_steps(model, splits.train, "loss", "model", 5)
    with torch.no_grad():  # one power iteration per training-mode forward: let them converge
        for _ in range(100):
            model.decoder(torch.randn(2, 4))
    model.eval()
    layers = [
        m
        for m in model.decoder.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
    ]
    assert len(layers) == 4 and all(hasattr(m, "parametrizations") for m in layers)
    for layer in layers:
        w = layer.weight  # (out, in) or conv kernels; ConvTranspose2d is normalised along dim 1
        dim = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
        matrix = w.transpose(0, dim).reshape(w.shape[dim], -1)
        assert torch.linalg.matrix_norm(matrix, ord=2).item() == pytest.approx(1.0, abs=0.01)


def test_rae_sn_warns_when_no_normalisation_layer_rescales_the_decoder():
    """Spectral norm on a decoder without normalisation layers makes it 1-Lipschitz (the MLP
    RAE-SN decoded the mean image); the RAE conv nets' batch norms keep it trainable."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build("rae-sn")  # arch "rae": batch norm after every layer, no warning
    with pytest.warns(UserWarning, match="no normalisation layer"):
        build("rae-sn", arch="mlp", arch_options={"hidden": [16]})


def test_rae_gmm_sampling_needs_a_fit_or_a_training_set(splits):
    model = build("rae")
    model.eval()
    with pytest.raises(ConfigError, match="not been fitted"):
        model.sample(2)
    assert model.sample(2, sampler="prior").shape == (2, 1, 32, 32)
    model.prepare_training(splits.train)  # the trainer hands the training set over
    assert model.sample(2).shape == (2, 1, 32, 32) and model.density.is_fitted
    with pytest.raises(ConfigError, match="no sampler"):
        model.sample(2, sampler="mala")


def test_rae_config_validation():
    with pytest.raises(ConfigError, match="rae-sn"):
        build("rae", arch_options={"width": 4, "spectral_norm": True})
    with pytest.raises(ConfigError, match="penalty_form"):
        build("rae-gp", penalty_form="hessian")
    with pytest.raises(ConfigError, match="decoder_weight"):
        build("rae-l2", decoder_weight=-1.0)
    with pytest.raises(ConfigError, match="unknown option"):
        build("rae", decoder_weight=1e-7)  # plain RAE has no decoder regulariser


def test_two_stage_config_validation():
    with pytest.raises(ConfigError, match="gaussian"):
        build("two-stage-vae", likelihood="bernoulli")
    with pytest.raises(ConfigError, match="one epoch per stage"):
        build("two-stage-vae").phases(1)


# --- ex-post GMM --------------------------------------------------------------------------------
TRUE_MEANS = torch.tensor([[-3.0, 0.0], [3.0, 1.0]], dtype=torch.float64)
TRUE_TRIL = torch.tensor([[[1.0, 0.0], [0.5, 0.6]], [[0.4, 0.0], [-0.2, 1.2]]], dtype=torch.float64)
TRUE_WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)


def known_mixture_samples(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(TRUE_WEIGHTS, n, replacement=True, generator=g)
    eps = torch.randn(n, 2, 1, generator=g, dtype=torch.float64)
    return TRUE_MEANS[k] + (TRUE_TRIL[k] @ eps).squeeze(-1)


@pytest.fixture(scope="module")
def fitted_gmm() -> GaussianMixture:
    gmm = GaussianMixture(2, 2).double()
    info = gmm.fit(known_mixture_samples(4000))
    assert info["gmm_converged"]
    return gmm


def test_gmm_fit_recovers_a_known_mixture(fitted_gmm):
    order = fitted_gmm.means[:, 0].argsort()
    # standard errors: σ/√(n w) ≤ 1.2/√1200 ≈ 0.035 for the means; ≈ 0.007 for the weights
    assert torch.allclose(fitted_gmm.means[order], TRUE_MEANS, atol=0.15)
    assert torch.allclose(fitted_gmm.weights[order], TRUE_WEIGHTS, atol=0.04)
    true_cov = TRUE_TRIL @ TRUE_TRIL.transpose(-1, -2)
    assert torch.allclose(fitted_gmm.covariances[order], true_cov, atol=0.15)


def test_gmm_log_prob_matches_the_mixture_density(fitted_gmm):
    from scipy.stats import multivariate_normal

    z = known_mixture_samples(5, seed=9)
    dens = sum(
        w.item() * multivariate_normal(mu.numpy(), cov.numpy()).pdf(z.numpy())
        for w, mu, cov in zip(
            fitted_gmm.weights, fitted_gmm.means, fitted_gmm.covariances, strict=True
        )
    )
    assert torch.allclose(fitted_gmm.log_prob(z), torch.tensor(dens).log(), rtol=1e-10)


def test_gmm_torch_sampling_matches_the_fitted_moments(fitted_gmm):
    n = 40_000
    draws = fitted_gmm.sample(n, generator=torch.Generator().manual_seed(2))  # (n, 2)
    cov = fitted_gmm.covariance
    se_mean = (cov.diagonal() / n).sqrt()
    assert ((draws.mean(0) - fitted_gmm.mean).abs() < 5 * se_mean).all()
    # var of a sample covariance entry ≤ E[x⁴]-ish; a 5 % relative band is > 5 SE here
    assert torch.allclose(draws.T.cov(), cov, rtol=0.05, atol=0.05)


def test_gmm_state_survives_a_checkpoint_round_trip(fitted_gmm):
    fresh = GaussianMixture(2, 2).double()
    assert not fresh.is_fitted
    fresh.load_state_dict(roundtrip(fitted_gmm.state_dict()))
    assert fresh.is_fitted
    for key, value in fitted_gmm.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    a = fitted_gmm.sample(5, generator=torch.Generator().manual_seed(4))
    b = fresh.sample(5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_gmm_refit_matched_to_the_previous_fit_keeps_each_component_on_its_mode(fitted_gmm):
    """A refit's components renumbered by ``matching_order`` to the previous means land where
    the previous ones were: a copy with its components swapped (as a fresh k-means start may
    number them) and its means moved by 0.3 is matched back, and renumbering leaves the
    density unchanged."""
    from latentgap.samplers.gmm import matching_order

    swap = [1, 0]
    state = fitted_gmm.state_dict()
    for key in ("weights", "means", "scale_tril"):
        state[key] = state[key][swap].clone()
    state["means"] += 0.3
    copy = GaussianMixture(2, 2).double()
    copy.load_state_dict(state)
    z = known_mixture_samples(50, seed=3)
    before = copy.log_prob(z)
    order = matching_order(fitted_gmm.means, copy.means)
    assert order.tolist() == swap
    copy.reorder(order)
    torch.testing.assert_close(copy.means, fitted_gmm.means + 0.3)
    torch.testing.assert_close(copy.weights, fitted_gmm.weights)
    torch.testing.assert_close(copy.log_prob(z), before)
    with pytest.raises(ValueError, match="permute"):
        copy.reorder(torch.tensor([0, 0]))


def test_gmm_rejects_too_few_codes():
    with pytest.raises(ConfigError, match="10-component"):
        GaussianMixture(10, 2).fit(torch.randn(5, 2))


# --- presets ----------------------------------------------------------------------------------
MY_PRESETS = [
    f"{m}-mnist{s}"
    for m in ("rae", "rae-l2", "rae-gp", "rae-sn", "wae-mmd", "cv-vae", "two-stage-vae")
    for s in ("", "-small")
] + ["vae-rae-mnist", "vae-rae-mnist-small"]


@pytest.mark.parametrize("name", MY_PRESETS)
def test_presets_are_valid_configs(name):
    values = PRESETS.get(name).values
    config = ExperimentConfig.from_dict(values)
    assert config.data.options == {"binarize": False}
    options = dataclass_from_dict(MODELS.get(config.model).config_class, config.model_options)
    assert options.latent_dim == 16 and options.arch == "rae"
    if name.endswith("-small"):  # small nets build quickly
        model = build_model(
            config.model, config.model_options, DataSpec("mnist", (1, 28, 28), "continuous")
        )
        assert model.phases(config.train.epochs)
