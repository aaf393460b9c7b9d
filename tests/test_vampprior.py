"""The VampPrior and the ``vampprior`` model.

Statistical tests against analytic truth: log p(z) equals the mixture of the component Gaussians
(scipy), the density integrates to one, draws follow the mixture, and the importance-sampled
log p(x) of a linear-Gaussian VampPrior VAE matches its closed form. Contract tests train the
model a few steps, reload it and run the CLI end to end on the toy images.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, truncnorm
from torch import nn

from latentgap.cli.main import main
from latentgap.data import get_dataset
from latentgap.data.base import Batch, DataSpec
from latentgap.errors import ConfigError
from latentgap.models.base import build_model
from latentgap.models.vampprior import VampPriorVAE
from latentgap.posteriors import DiagonalGaussian, TruncatedNormal
from latentgap.priors import VampPrior

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest

F64 = torch.float64


def linear_posterior(data_dim: int, latent_dim: int, seed: int = 0, cls=DiagonalGaussian):
    """A random linear encoder u ↦ q(z|u) with input-dependent locations and log-scales."""
    g = torch.Generator().manual_seed(seed)
    w_loc = 3.0 * torch.randn(data_dim, latent_dim, generator=g, dtype=F64)
    w_scale = 0.8 * torch.randn(data_dim, latent_dim, generator=g, dtype=F64)
    b_scale = -0.5 + 0.3 * torch.randn(latent_dim, generator=g, dtype=F64)

    def posterior(u: torch.Tensor):
        flat = u.reshape(len(u), -1)  # (K, C·H·W)
        return cls(flat @ w_loc - 1.5, flat @ w_scale + b_scale)

    return posterior


def random_prior(k: int, data_dim: int, latent_dim: int, seed: int = 0, cls=DiagonalGaussian):
    g = torch.Generator().manual_seed(seed + 100)
    init = torch.rand(k, 1, 1, data_dim, generator=g, dtype=F64)
    return VampPrior(linear_posterior(data_dim, latent_dim, seed, cls), init)


# --- the prior as a component -----------------------------------------------------------------
def test_log_prob_equals_the_mixture_of_component_gaussians():
    prior = random_prior(k=5, data_dim=4, latent_dim=3)
    q = prior.components()
    mus, sigmas = q.loc.detach().numpy(), q.scale.detach().numpy()  # (K, D)
    z = 2.0 * torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    per_k = np.stack(
        [
            multivariate_normal(mu, np.diag(s**2)).logpdf(z.reshape(-1, 3).numpy())
            for mu, s in zip(mus, sigmas, strict=True)
        ]
    )  # (K, N)
    expected = logsumexp(per_k, axis=0) - math.log(5)
    got = prior.log_prob(z)
    assert got.shape == (2, 6)
    np.testing.assert_allclose(got.reshape(-1).detach().numpy(), expected, rtol=0, atol=1e-9)

    # float32 (the matrix-product form evaluates in float64 and rounds once)
    def posterior32(u):
        p = prior.posterior(u.double())
        return DiagonalGaussian(p.loc.float(), p.log_scale.float())

    prior32 = VampPrior(posterior32, prior.pseudo_inputs().detach().float())
    got32 = prior32.log_prob(z.float())
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.reshape(-1).detach().numpy(), expected, rtol=1e-6, atol=1e-5)


def test_log_prob_of_other_posterior_families_by_broadcasting():
    """A truncated-normal posterior takes the generic path; check it against scipy's truncnorm."""
    prior = random_prior(k=4, data_dim=3, latent_dim=2, cls=TruncatedNormal)
    q = prior.components()
    mus, sigmas = q.loc.detach().numpy(), q.scale.detach().numpy()  # (K, D)
    z = torch.from_numpy(mus[[0, 1, 1, 3]] + 0.5 * sigmas[[0, 1, 2, 3]])  # inside some boxes
    z = torch.cat([z, torch.full((1, 2), 1e3, dtype=F64)])  # outside every box: log p = −inf
    per_k = np.stack(
        [
            truncnorm(-2, 2, loc=mu, scale=s).logpdf(z.numpy()).sum(-1)
            for mu, s in zip(mus, sigmas, strict=True)
        ]
    )  # (K, N)
    expected = logsumexp(per_k, axis=0) - math.log(4)
    got = prior.log_prob(z).detach().numpy()
    np.testing.assert_allclose(got[:-1], expected[:-1], rtol=0, atol=1e-9)
    assert got[-1] == -math.inf


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_density_integrates_to_one(latent_dim):
    prior = random_prior(k=3, data_dim=2, latent_dim=latent_dim, seed=3)
    q = prior.components()
    lo = (q.loc - 9 * q.scale).min().item()
    hi = (q.loc + 9 * q.scale).max().item()
    n = 20_001 if latent_dim == 1 else 1201
    axis = torch.linspace(lo, hi, n, dtype=F64)
    if latent_dim == 1:
        mass = torch.trapezoid(prior.log_prob(axis[:, None]).exp(), axis)
    else:
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1)  # (n, n, 2)
        density = prior.log_prob(grid).exp()  # (n, n)
        mass = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis)
    # trapezoid error on a grid of ≥ 30 points per σ is far below 1e-4
    assert mass.item() == pytest.approx(1.0, abs=1e-4)


def test_draws_follow_the_mixture():
    """Three well-separated 2-D components: cluster frequencies, means and scales of draws."""
    means = torch.tensor([[-20.0, 0.0], [0.0, 20.0], [20.0, 0.0]], dtype=F64)
    log_scales = torch.tensor([[0.0, -0.5], [0.5, 0.0], [-1.0, 0.3]], dtype=F64)
    codes = torch.eye(3, dtype=F64).reshape(3, 1, 1, 3)  # pseudo-input k selects component k

    def posterior(u):
        flat = u.reshape(len(u), 3)
        return DiagonalGaussian(flat @ means, flat @ log_scales)

    prior = VampPrior(posterior, codes)
    n = 30_000
    z = prior.sample(n, generator=torch.Generator().manual_seed(0))
    assert z.shape == (n, 2)
    again = prior.sample(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, again)
    cluster = torch.cdist(z, means).argmin(-1)  # (n,) separation ≥ 20σ: no misassignment
    p = 1 / 3
    freq = torch.bincount(cluster, minlength=3).double() / n
    assert (freq - p).abs().max() < 4 * math.sqrt(p * (1 - p) / n), freq
    for k in range(3):
        zk = z[cluster == k]
        sigma = log_scales[k].exp()
        se = sigma / math.sqrt(len(zk))
        assert ((zk.mean(0) - means[k]).abs() < 4 * se).all(), k
        # sd of a sample std ≈ σ/√(2n) ≈ 0.7 % here
        torch.testing.assert_close(zk.std(0), sigma, rtol=0.03, atol=0.0)


def test_pseudo_inputs_stay_in_range_and_receive_gradients():
    prior = random_prior(k=4, data_dim=3, latent_dim=2)
    z = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    prior.log_prob(z).sum().backward()
    assert prior.raw_inputs.grad is not None and prior.raw_inputs.grad.abs().sum() > 0
    with torch.no_grad():
        prior.raw_inputs.add_(torch.linspace(-3, 3, 12, dtype=F64).reshape(4, 1, 1, 3))
    u = prior.pseudo_inputs()
    assert u.min() >= 0 and u.max() <= 1
    init = torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    sig = VampPrior(linear_posterior(4, 2), init.clamp(0.01, 0.99), activation="sigmoid")
    torch.testing.assert_close(sig.pseudo_inputs(), init.clamp(0.01, 0.99))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VampPrior(linear_posterior(4, 2), init + 1.0)
    with pytest.raises(ValueError, match="activation"):
        VampPrior(linear_posterior(4, 2), init, activation="relu")


# --- the model: IS-NLL against a closed form ----------------------------------------------------
D_LATENT, D_DATA, SIGMA = 2, 5, 0.5


def linear_gaussian_vampprior():
    """x|z ~ N(Wz + b, σ²I), linear encoder with constant scales, K = 2 pseudo-inputs: the prior
    is a mixture of two Gaussians N(m_k, S), so p(x) = ½ Σ_k N(x; W m_k + b, W S Wᵀ + σ²I)."""
    torch.manual_seed(0)
    spec = DataSpec("linear", (1, 1, D_DATA), "continuous")
    options = {
        "arch": "mlp",
        "latent_dim": D_LATENT,
        "likelihood": "gaussian",
        "min_log_scale": -20.0,
        "n_pseudo": 2,
        "pseudo_init": "normal",
        "likelihood_options": {
            "mean_activation": "identity",
            "learn_gamma": False,
            "log_gamma": math.log(SIGMA**2),
        },
    }
    model = build_model("vampprior", options, spec).double()
    g = torch.Generator().manual_seed(4)
    w = 0.5 * torch.randn(D_DATA, D_LATENT, generator=g, dtype=F64)
    b = torch.randn(D_DATA, generator=g, dtype=F64)
    model.decoder = nn.Sequential(nn.Linear(D_LATENT, D_DATA), nn.Unflatten(1, (1, 1, D_DATA)))
    model.decoder[0].weight.data, model.decoder[0].bias.data = w, b
    model.decoder.double()
    # an encoder near the posterior for data, with a constant scale s wider than the posterior's:
    # q(z|x) = N(A(x − b), s²), A the ridge inverse of W. Its codes of the pseudo-inputs are the
    # prior's components N(A(u_k − b), s²).
    s = 0.5
    a = torch.linalg.solve(w.T @ w + (SIGMA / s) ** 2 * torch.eye(D_LATENT, dtype=F64), w.T)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(D_DATA, 2 * D_LATENT)).double()
    weight = torch.zeros(2 * D_LATENT, D_DATA, dtype=F64)
    weight[:D_LATENT] = a
    bias = torch.zeros(2 * D_LATENT, dtype=F64)
    bias[:D_LATENT] = -a @ b
    bias[D_LATENT:] = math.log(s)
    enc[1].weight.data, enc[1].bias.data = weight, bias
    model.encoder = enc  # the prior's posterior callable is model.posterior: it uses this too
    u = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.5], [0.8, 0.3, 0.9, 0.1, 0.4]], dtype=F64)
    model.prior.set_pseudo_inputs(u.reshape(2, 1, 1, D_DATA))
    return model, w, b


def exact_log_px(model, x, w, b) -> np.ndarray:
    q = model.prior.components()
    cov_z = torch.diag(q.variance[0]).detach()  # the same S for both components
    cov = (w @ cov_z @ w.T + SIGMA**2 * torch.eye(D_DATA, dtype=F64)).numpy()
    flat = x.reshape(len(x), -1).numpy()
    per_k = [multivariate_normal((w @ m + b).detach().numpy(), cov).logpdf(flat) for m in q.loc]
    return logsumexp(np.stack(per_k), axis=0) - math.log(2)


def test_importance_sampled_log_likelihood_matches_closed_form():
    model, w, b = linear_gaussian_vampprior()
    model.eval()
    with torch.no_grad():
        z = model.sample_latents(16, generator=torch.Generator().manual_seed(5))  # (16, D)
        eps = torch.randn(16, D_DATA, generator=torch.Generator().manual_seed(6), dtype=F64)
        x = (z @ w.T + b + SIGMA * eps).reshape(16, 1, 1, D_DATA)
        k = 4000
        torch.manual_seed(7)
        log_w = model.log_importance_weights(Batch(x, x), k)  # (K, B)
    estimate = torch.logsumexp(log_w, 0) - math.log(k)
    wts = torch.exp(log_w - log_w.max(0).values)
    se = wts.std(0) / (wts.mean(0) * math.sqrt(k))  # delta-method standard error of log p̂
    exact = torch.from_numpy(exact_log_px(model, x, w, b))
    err = estimate - exact
    assert torch.all(err.abs() < 5 * se + 1e-6), (err, se)
    assert se.max() < 0.05  # the test has power: the proposal is good enough
    assert torch.all(log_w.mean(0) < exact)  # the ELBO is a lower bound


# --- the model: contract ---------------------------------------------------------------------------
TOY_OPTIONS = {"arch": "mlp", "latent_dim": 4, "n_pseudo": 16, "arch_options": {"hidden": [32]}}


@pytest.fixture(scope="module")
def toy():
    return get_dataset("toy-images", n_train=128, n_test=32)


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_model_initialises_from_data_trains_and_reloads(toy):
    torch.manual_seed(0)
    model = build_model("vampprior", TOY_OPTIONS, toy.spec)
    assert isinstance(model, VampPriorVAE) and not bool(model.pseudo_ready)
    model.prepare_training(toy.train)
    u = model.prior.pseudo_inputs().detach()  # (16, 1, 8, 8)
    gray = toy.train.gray(torch.arange(len(toy.train)))  # (128, 1, 8, 8)
    nearest = torch.cdist(u.reshape(16, -1), gray.reshape(128, -1)).min(-1).values
    assert nearest.max() < 0.01 * 8 * 4  # each is a training image plus N(0, 0.01²) noise
    model.prepare_training(toy.train)  # once only (a resumed run keeps its pseudo-inputs)
    assert torch.equal(model.prior.pseudo_inputs(), u)

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for i in range(30):
        batch = toy.train.make_batch(torch.arange(32 * i, 32 * (i + 1)) % 128)
        out = model("loss", batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert sum(losses[-5:]) < sum(losses[:5])
    assert set(out.terms) == {"elbo", "rec", "kl", "bpd"}
    assert not torch.equal(model.prior.pseudo_inputs().detach(), u)  # the pseudo-inputs learn

    model.eval()
    images = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert images.shape == (6, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    torch.manual_seed(9)
    fresh = build_model("vampprior", TOY_OPTIONS, toy.spec)
    fresh.load_state_dict(roundtrip(model.state_dict()))
    fresh.eval()
    assert bool(fresh.pseudo_ready)
    fresh.prepare_training(toy.train)  # no re-initialisation after a reload
    a = model.sample(8, generator=torch.Generator().manual_seed(7))
    b = fresh.sample(8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_config_validation(toy):
    for options, message in [
        ({"n_pseudo": 0}, "n_pseudo"),
        ({"pseudo_init": "zeros"}, "pseudo_init"),
        ({"pseudo_init_std": -1.0}, "pseudo_init_std"),
        ({"pseudo_activation": "relu"}, "pseudo_activation"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_model("vampprior", {**TOY_OPTIONS, **options}, toy.spec)


def test_cli_trains_evaluates_and_samples_on_toy_images(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train", "--model", "vampprior", "--dataset", "toy-images", "--out", str(out),
            "--arch", "mlp", "--latent-dim", "4", "--epochs", "1", "--batch-size", "32",
            "--no-progress", "--set", "model_options.arch_options.hidden=[16]",
            "--set", "model_options.n_pseudo=8",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(["evaluate", str(out), "--nll", "--iw-samples", "20", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert math.isfinite(result["nll_nats"]) and result["iw_samples"] == 20
    assert -result["elbo"] >= result["nll_nats"] > 0
    png = tmp_path / "grid.png"
    assert main(["sample", str(out), "--num", "4", "--out", str(png)]) == 0
    assert png.exists()


def test_small_preset_uses_the_vae_small_nets_and_schedule():
    from latentgap.presets import PRESETS

    vae, vamp = PRESETS.get("vae-mnist-small").values, PRESETS.get("vampprior-mnist-small").values
    assert vamp["model"] == "vampprior" and vamp["model_options"]["n_pseudo"] == 500
    assert {k: v for k, v in vamp["model_options"].items() if k != "n_pseudo"} == vae[
        "model_options"
    ]
    assert vamp["data"] == vae["data"] and vamp["train"] == vae["train"]
