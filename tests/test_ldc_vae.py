"""LDC-VAE: the implicit encoder, the Gibbs-posterior scores against closed forms, the gradient
routing of Algorithm 1, and a short training run that saves, reloads and samples."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from latentgap.config import ExperimentConfig
from latentgap.data import DataSpec, get_dataset
from latentgap.errors import ConfigError
from latentgap.models import build_model, ldc_vae  # importing ldc_vae registers it and presets
from latentgap.presets import PRESETS
from latentgap.train import checkpoint as ckpt
from latentgap.train.run import load_run, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


SMALL = {
    "arch": "mlp",
    "latent_dim": 3,
    "arch_options": {"hidden": [32]},
    "feature_dim": 32,
    "noise_dim": 4,
    "n_particles": 4,
    "sampler_net": "mlp",
    "sampler_noise_dim": 4,
    "sampler_hidden": [32],
    "sampler_particles": 16,
}


@pytest.fixture(scope="module")
def toy():
    return get_dataset("toy-images", binarize=False, n_train=128, n_test=32)


def small_model(spec, **overrides):
    torch.manual_seed(0)
    return build_model("ldc-vae", {**SMALL, **overrides}, spec)


def fit_sampler(model, codes, toy, steps: int) -> torch.Tensor:
    """Put ``codes`` in the model's memory, train its sampler alone for ``steps`` updates (Adam,
    3e-3), and return 4,000 of its codes (seed 2)."""
    model._remember(codes)
    opt = torch.optim.Adam(model.sampler.parameters(), lr=3e-3)
    x = toy.train.gray(torch.arange(4))
    for _ in range(steps):
        loss = model.sampler_loss(x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return model.sampler_latents(4000, torch.Generator().manual_seed(2))


def toy_run(tmp_path, name: str, epochs: int, **options) -> ldc_vae.LDCVAE:
    """Train the small model (``options`` over SMALL) on 128 toy images, batch 32, in
    ``tmp_path / name``; return it."""
    config = ExperimentConfig.from_dict(
        {
            "model": "ldc-vae",
            "model_options": {**SMALL, **options},
            "data": {"name": "toy-images", "options": {"binarize": False}, "limit_train": 128},
            "train": {
                "epochs": epochs,
                "batch_size": 32,
                "lr": 3e-3,
                "progress": False,
                "log_every": 1,
                "eval_batches": 1,
            },
        }
    )
    return train(config, tmp_path / name).model


def test_implicit_encoder_noise_determines_the_code(toy):
    model = small_model(toy.spec).eval()
    x = toy.train.gray(torch.arange(6))  # (6, 1, 8, 8)
    a = model.encode(x, 5, generator=torch.Generator().manual_seed(1))  # (6, 5, 3)
    b = model.encode(x, 5, generator=torch.Generator().manual_seed(1))
    c = model.encode(x, 5, generator=torch.Generator().manual_seed(2))
    assert a.shape == (6, 5, 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # same noise and seed: same codes
    assert (a - c).norm(dim=-1).min() > 1e-4  # different noise: different codes
    assert (a[:, 1:] - a[:, :1]).norm(dim=-1).min() > 1e-4  # particles of one image differ
    noise = torch.randn(6, 2, 4)
    torch.testing.assert_close(model.encoder(x, noise), model.encoder(x, noise.clone()))
    with pytest.raises(ValueError, match="noise must be"):
        model.encoder(x, torch.randn(6, 2, 5))


def test_rae_encoder_and_sampler_shapes():
    spec = DataSpec("mnist", (1, 28, 28), "continuous")
    model = build_model(
        "ldc-vae", {"arch": "rae", "arch_options": {"width": 2}, "feature_dim": 8}, spec
    ).eval()
    x = torch.rand(3, 1, 28, 28)
    assert model.encode(x, 4).shape == (3, 4, 16)
    assert model.sample(2).shape == (2, 1, 28, 28)
    assert model.sampler_shape == (1, 28, 28)  # the RAE encoder on image-shaped noise


def linear_decoder_model(spec, **overrides):
    """No hidden layer and identity output: D(z) = Wz + c, so scores have closed forms."""
    opts = {"arch_options": {"hidden": []}, "output": "identity", **overrides}
    return small_model(spec, **opts)


def test_gibbs_score_matches_closed_form(toy):
    """∇_z log p(z|x) = (2/σ²) Wᵀ(x − Wz − c) − w z for p ∝ exp(−‖x − D(z)‖²/σ²) N(z)^w (Eq. 13)."""
    model = linear_decoder_model(toy.spec, prior_weight=0.5)
    x = toy.train.gray(torch.arange(4))  # (4, 1, 8, 8)
    z = torch.randn(4, 3, 3)
    scores, sq_err, sigma2 = model._paired_scores(z, x, None)
    layer = model.decoder.net[0]
    W, c = layer.weight, layer.bias  # (64, 3), (64,)
    resid = x.flatten(1).unsqueeze(1) - (z @ W.T + c)  # (4, 3, 64)
    expected = 2.0 / sigma2 * resid @ W - 0.5 * z
    torch.testing.assert_close(scores, expected.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sigma2, resid.pow(2).mean().detach())  # residual σ² (default)
    model.config.sigma2_estimator = "norm-variance"
    _, _, sigma2 = model._paired_scores(z, x, None)
    norms = resid.pow(2).sum(-1).sqrt()
    torch.testing.assert_close(sigma2, norms.var(correction=0).detach())


def test_residual_sigma2_recovers_the_noise_variance_of_a_linear_decoder(toy):
    """x = Wz* + c + ε, ε ~ N(0, s² I): at the true codes the default σ² estimates s² within 3
    standard errors (s²·√(2/N) for N residual entries); the norm-variance reading does not (it
    is ≈ s²/2 here whatever s², the variance of a χ-distributed norm)."""
    model = linear_decoder_model(toy.spec)
    layer = model.decoder.net[0]
    g = torch.Generator().manual_seed(3)
    b, s2 = 400, 0.02
    z_true = torch.randn(b, 1, 3, generator=g)  # (B, 1, D)
    with torch.no_grad():
        clean = (z_true[:, 0] @ layer.weight.T + layer.bias).reshape(b, 1, 8, 8)
    x = clean + s2**0.5 * torch.randn(clean.shape, generator=g)
    _, _, sigma2 = model._paired_scores(z_true, x, None)
    n = b * toy.spec.dim
    assert abs(float(sigma2) - s2) < 3 * s2 * (2 / n) ** 0.5
    model.config.sigma2_estimator = "norm-variance"
    _, _, norm_var = model._paired_scores(z_true, x, None)
    assert abs(float(norm_var) - s2 / 2) < 0.2 * s2 / 2  # χ_64 variance ≈ s²/2
    assert float(norm_var) < 0.6 * s2


def test_kde_score_matches_autograd():
    """Closed-form ∇ log (1/N) Σ N(z; c_i, h² I) equals autograd of its log density."""
    g = torch.Generator().manual_seed(4)
    z, codes, h2 = torch.randn(7, 3, generator=g), torch.randn(11, 3, generator=g), 0.3
    zg = z.clone().requires_grad_(True)
    log_p = torch.logsumexp(-((zg[:, None] - codes[None]) ** 2).sum(-1) / (2 * h2), dim=-1)
    (expected,) = torch.autograd.grad(log_p.sum(), zg)
    torch.testing.assert_close(ldc_vae.kde_score(z, codes, h2), expected, rtol=1e-4, atol=1e-5)
    # Scott's rule: h = N^(-1/(D+4)) s for unit-variance codes
    many = torch.randn(20000, 3, generator=g)
    assert float(ldc_vae.scott_bandwidth2(many)) == pytest.approx(20000 ** (-2 / 7), rel=0.05)


def test_particle_spread_separates_within_and_between():
    """Codes μ_b + τ ε: within-image spread ≈ τ, between-image spread ≈ the spread of μ_b."""
    g = torch.Generator().manual_seed(5)
    mu = 2.0 * torch.randn(500, 1, 4, generator=g)
    z = mu + 0.1 * torch.randn(500, 50, 4, generator=g)
    within, between = ldc_vae.particle_spread(z)
    assert float(within) == pytest.approx(0.1 * (49 / 50) ** 0.5, rel=0.03)
    assert float(between) == pytest.approx(2.0, rel=0.1)


def test_output_activation_follows_the_data_range(toy):
    """ "auto" gives a sigmoid decoder for [0, 1] data (as RAE's and the VAE's); "tanh" and
    "identity" on request; the activation is the decoder net's, not a model-side link."""
    model = small_model(toy.spec)
    assert model.output == "sigmoid"
    z = 50 * torch.randn(20, 3)
    out = model.decode(z)
    assert out.min() >= 0 and out.max() <= 1 and (out - out.clamp(0.01, 0.99)).abs().max() > 0
    tanh = small_model(toy.spec, output="tanh").decode(z)
    assert tanh.min() < -0.5 and tanh.max() <= 1
    raw = small_model(toy.spec, output="identity").decode(z)
    assert raw.abs().max() > 1
    with pytest.raises(ConfigError, match="not arch_options"):
        small_model(toy.spec, arch_options={"hidden": [32], "output_activation": "tanh"})


@pytest.mark.parametrize("normalizer", ["none", "encoder"])
def test_mixture_score_matches_closed_form(toy, normalizer):
    """Score of p̂(z) ∝ Σ_b exp(−E_b(z))/C_b: Σ_b softmax_b(−E_b − log C_b) · (−∇E_b), with
    log C_b = 0 ("none") or −E_b(ẑ_b) at one encoder draw ẑ_b ("encoder")."""
    model = linear_decoder_model(toy.spec, mixture_normalizer=normalizer).eval()
    x = toy.train.gray(torch.arange(5))
    zs = torch.randn(1, 7, 3)
    sigma2 = torch.tensor(2.0)
    torch.manual_seed(6)
    scores = model._mixture_scores(zs, x, sigma2)  # (1, 7, 3)
    layer = model.decoder.net[0]
    W, c = layer.weight.detach(), layer.bias.detach()
    log_c = torch.zeros(5)
    if normalizer == "encoder":
        torch.manual_seed(6)
        z_hat = model.encode(x, 1)[:, 0].detach()  # (5, 3)
        log_c = -(x.flatten(1) - (z_hat @ W.T + c)).pow(2).sum(-1) / sigma2
    resid = x.flatten(1)[None] - (zs[0] @ W.T + c)[:, None]  # (7, 5, 64)
    weights = torch.softmax(-resid.pow(2).sum(-1) / sigma2 - log_c, dim=-1)  # (7, 5)
    expected = torch.einsum("mb,mbp,pd->md", weights, 2.0 / sigma2 * resid, W)
    torch.testing.assert_close(scores[0], expected, rtol=1e-4, atol=1e-5)


def test_sinkhorn_responsibilities_are_balanced():
    """Rows sum to 1 (each particle), columns to M/B (each component); a per-column constant
    (an unknown log C_b) does not change the result."""
    log_terms = 3 * torch.randn(12, 4, dtype=torch.float64)
    w = ldc_vae.sinkhorn_responsibilities(log_terms, 200)
    torch.testing.assert_close(w.sum(1), torch.ones(12, dtype=torch.float64))
    torch.testing.assert_close(w.sum(0), torch.full((4,), 3.0, dtype=torch.float64))
    shifted = ldc_vae.sinkhorn_responsibilities(
        log_terms + torch.randn(4, dtype=torch.float64), 200
    )
    torch.testing.assert_close(shifted, w)


def test_balanced_sinkhorn_columns_follow_the_given_masses():
    log_terms = 3 * torch.randn(40, 3, dtype=torch.float64)
    mass = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    w = ldc_vae.sinkhorn_responsibilities(log_terms, 300, mass)
    torch.testing.assert_close(w.sum(1), torch.ones(40, dtype=torch.float64))
    torch.testing.assert_close(w.sum(0), 40 * mass)


def test_mixture_score_is_the_gradient_of_the_mixture_log_density():
    """Unbalanced, mixture_score is ∇_z log Σ_k w_k N(z; μ_k, C_k) (autograd of the GMM's log
    density, float64); balanced, each component's share of the points is M·w_k."""
    from latentgap.samplers.gmm import GaussianMixture

    g = torch.Generator().manual_seed(4)
    gmm = GaussianMixture(3, 4).double()
    a = torch.randn(3, 4, 4, generator=g, dtype=torch.float64)
    gmm.scale_tril.copy_(torch.linalg.cholesky(a @ a.transpose(1, 2) + torch.eye(4)))
    gmm.means.copy_(3 * torch.randn(3, 4, generator=g, dtype=torch.float64))
    gmm.weights.copy_(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    z = (2 * torch.randn(30, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    (expected,) = torch.autograd.grad(gmm.log_prob(z).sum(), z)
    got = ldc_vae.mixture_score(z.detach(), gmm.means, gmm.covariances, gmm.weights)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    equal = ldc_vae.mixture_score(z.detach(), gmm.means, gmm.covariances)  # weights 1/3
    gmm.weights.fill_(1 / 3)
    (expected,) = torch.autograd.grad(gmm.log_prob(z).sum(), z)
    torch.testing.assert_close(equal, expected, rtol=1e-10, atol=1e-10)


def three_clusters() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centres (3, 4) of three clusters 6 apart, their weights 0.5 / 0.3 / 0.2 and 1,000 codes
    drawn from them with std 0.7 (seed 1)."""
    g = torch.Generator().manual_seed(1)
    means = torch.zeros(3, 4)
    means[0, 0], means[1, 1], means[2, 0] = 6.0, 6.0, -6.0
    weights = torch.tensor([0.5, 0.3, 0.2])
    k = torch.multinomial(weights, 1000, True, generator=g)
    return means, weights, means[k] + 0.7 * torch.randn(1000, 4, generator=g)


def cluster_shares(toy, **options) -> tuple[ldc_vae.LDCVAE, torch.Tensor]:
    """A sampler (gmm target, 3 components, 200 particles) trained for 800 updates on
    :func:`three_clusters`' codes, and the share of its 4,000 codes nearest each centre (3,)."""
    means, _, codes = three_clusters()
    model = small_model(
        toy.spec,
        latent_dim=4,
        sampler_noise_dim=8,
        sampler_hidden=[64, 64],
        sampler_particles=200,
        sampler_target="gmm",
        target_components=3,
        kde_memory=1000,
        **options,
    )
    z = fit_sampler(model, codes, toy, 800)
    return model, torch.bincount(torch.cdist(z, means).argmin(1), minlength=3) / 4000


def test_balanced_gmm_target_covers_separated_modes_in_their_proportions(toy):
    """Three clusters 6 apart (std 0.7, weights 0.5 / 0.3 / 0.2) in 4-D: the plain score of a
    GMM fitted to them drives the SVGD-trained sampler onto one cluster (SVGD does not move
    mass between separated modes); with the responsibilities balanced to the weights the
    sampler's codes fall near each cluster in its proportion (±0.06 after 800 updates; the
    binomial s.e. of a share of 4,000 draws is < 0.01, the rest is training noise: measured
    0.50 / 0.30 / 0.20)."""
    weights = three_clusters()[1]
    shares = {}
    for balance in (0, 20):
        model, shares[balance] = cluster_shares(toy, target_balance_iters=balance)
    assert shares[0].max() > 0.95, shares  # collapsed onto one mode
    assert (shares[20] - weights).abs().max() < 0.06, shares
    assert int(model.target_fitted_at) == 700  # fitted at updates 0, 100, …, 700 (target_refit)
    assert "target_density.means" in model.state_dict()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"sampler_target": "gmm"},
        {"sampler_target": "gmm", "sampler_objective": "svgd+mmd"},
        {"sampler_target": "kde", "sampler_objective": "mmd"},
        {"sampler_target": "paired"},
        {"sampler_target": "mixture", "mixture_normalizer": "sinkhorn"},
        {"sampler_target": "mixture", "sampler_anneal": 4.0, "sampler_anneal_iters": 10},
    ],
)
def test_steps_update_only_their_group(toy, options):
    model = small_model(toy.spec, **options)
    batch = toy.train.make_batch(torch.arange(8))
    groups = model.parameter_groups()
    for step in ("autoencoder", "sampler"):
        model.zero_grad(set_to_none=True)
        out = model(step, batch)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        for name, params in groups.items():
            touched = [p.grad is not None and p.grad.abs().sum() > 0 for p in params]
            assert all(touched) if name == step else not any(touched), (step, name)
    assert torch.isfinite(model.last_sigma2)


def test_kde_memory_is_first_in_first_out_and_annealing_decays(toy):
    model = small_model(
        toy.spec, sampler_target="kde", kde_memory=5, sampler_anneal=3.0, sampler_anneal_iters=4
    )
    model._remember(torch.arange(12.0).reshape(4, 3))
    model._remember(torch.arange(12.0, 24.0).reshape(4, 3))  # 8 codes into 5 slots
    assert int(model.memory_count) == 8
    kept = {tuple(r) for r in model.code_memory.tolist()}
    assert kept == {tuple(float(v) for v in range(3 * i, 3 * i + 3)) for i in range(3, 8)}
    factors = []
    for _ in range(6):
        factors.append(model._anneal())
        model.sampler_updates += 1
    assert factors == pytest.approx([3.0, 2.5, 2.0, 1.5, 1.0, 1.0])
    assert "code_memory" in model.state_dict() and "sampler_updates" in model.state_dict()


def test_encoder_gradient_is_the_chain_rule_of_phi(toy):
    """Eq. (16): the encoder gradient equals −(1/Bn) Σ Φ* ∂z/∂θ for the head's bias (∂z/∂b = I)."""
    model = small_model(toy.spec)
    batch = toy.train.make_batch(torch.arange(8))
    torch.manual_seed(5)
    model("autoencoder", batch).loss.backward()
    torch.manual_seed(5)
    z = model.encode(batch.x)
    scores, _, _ = model._paired_scores(z, batch.x, None)
    phi = ldc_vae.svgd_direction(z.detach(), scores, model.kernel)
    bias = model.encoder.head[1].bias
    torch.testing.assert_close(bias.grad, -phi.sum((0, 1)) / phi.shape[:2].numel())


def test_config_errors(toy):
    for bad in (
        {"n_particles": 1},
        {"kernel": "rbf"},
        {"sampler_target": "encoder"},
        {"target_balance_iters": -1},
        {"target_components": 0},
        {"target_metric": "mahalanobis"},
        {"kde_metric": "whiten"},
        {"prior_weight": -1.0},
        {"sampler_objective": "adversarial"},
        {"sampler_objective": "mmd", "sampler_target": "mixture"},
        {"sampler_objective": "svgd+mmd", "sampler_target": "paired"},
        {"sampler_objective": "mmd", "prior_weight": 1.0},
        {"sampler_mmd_kernel": "gauss"},
        {"sampler_mmd_weight": 0.0},
        {"sampler_mixture": True},  # needs the mmd objective on the gmm target
        {"sampler_mixture": True, "sampler_objective": "mmd", "sampler_target": "kde"},
        {"sampler_mixture": True, "sampler_objective": "mmd", "sampler_net": "encoder"},
        {"sampler_mixture": 1, "sampler_objective": "mmd"},
        {"nope": 1},
    ):
        with pytest.raises(ConfigError):
            build_model("ldc-vae", {**SMALL, **bad}, toy.spec)
    with pytest.raises(ConfigError, match="unknown sampler"):
        small_model(toy.spec).sample(2, sampler="prior")


def test_presets_are_valid():
    for name in ("ldc-vae-mnist", "ldc-vae-mnist-small", "ldc-vae-mnist-mlp"):
        config = ExperimentConfig.from_dict(PRESETS.get(name).values)
        assert config.model == "ldc-vae"
        ldc_vae.LDCVAEConfig(**config.model_options)


def test_trains_saves_reloads_and_samples_identically(tmp_path, toy):
    model = toy_run(tmp_path, "run", 2)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    train_records = [r for r in records if r.get("split") == "train"]
    # 4 batches an epoch, each one iteration of (autoencoder, sampler) on that batch: 2 × 4
    assert len(train_records) == 8
    for r in records:
        for key in ("autoencoder_loss", "sampler_loss", "rec_mse", "sigma2", "test_loss"):
            if key in r:
                assert math.isfinite(r[key]), (key, r)
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    fresh = build_model("ldc-vae", SMALL, model.spec)
    fresh.load_state_dict(state)
    fresh.eval()
    model.eval()
    for sampler in fresh.samplers():
        a = model.sample(6, torch.Generator().manual_seed(9), sampler=sampler)
        b = fresh.sample(6, torch.Generator().manual_seed(9), sampler=sampler)
        assert a.shape == (6, 1, 8, 8) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    batch = toy.test.make_batch(torch.arange(4))
    assert fresh.reconstruct(batch).shape == (4, 1, 8, 8)
    # the run pinned every option, defaults included: a later default change cannot alter it
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model_options"]
    assert saved == model.resolved_options()
    assert set(saved) == {f.name for f in dataclasses.fields(ldc_vae.LDCVAEConfig)}
    assert saved["sampler_target"] == "gmm" and saved["kde_memory"] == 5000
    # a run loaded with its data fits the encoder-gmm on demand where it is missing (a run
    # interrupted before the end-of-training fit): here, forgotten on purpose
    loaded, _, _ = load_run(tmp_path / "run")
    loaded.reference_density.fitted.fill_(False)
    assert loaded.sample(3, sampler="encoder-gmm").shape == (3, 1, 8, 8)
    assert loaded.reference_density.is_fitted


def test_checkpoints_of_older_defaults_load(toy):
    """A checkpoint of a kde-target model with a smaller code memory (the defaults before the gmm
    target) loads into today's default model: the gmm target's buffers start unfitted, the memory
    keeps the most recent codes oldest first, and the sampler net is the trained one; a larger
    memory keeps only its most recent codes."""
    old = small_model(toy.spec, sampler_target="kde", kde_memory=6)
    old._remember(torch.arange(30.0).reshape(10, 3))  # 10 codes through 6 slots: 4 … 9 remain
    new = small_model(toy.spec, kde_memory=8)
    new.load_state_dict(old.state_dict())
    assert not new.target_density.is_fitted and int(new.target_fitted_at) == -1
    assert int(new.memory_count) == 6
    torch.testing.assert_close(new.code_memory[:6], torch.arange(12.0, 30.0).reshape(6, 3))
    assert new.code_memory[6:].abs().sum() == 0
    eps = torch.randn(5, *new.sampler_shape)
    torch.testing.assert_close(new.sampler(eps), old.sampler(eps))
    small = small_model(toy.spec, kde_memory=4)
    small.load_state_dict(old.state_dict())
    assert int(small.memory_count) == 4
    torch.testing.assert_close(small.code_memory, torch.arange(18.0, 30.0).reshape(4, 3))


@pytest.mark.parametrize("metric", ["whitened", "isotropic"])
def test_kde_target_sampler_matches_the_codes_only_with_leave_one_out(toy, metric):
    """The kde sampler step (KDE target of encoder codes, SVGD without its j = i term) trains
    a sampler net whose codes have the target's per-dimension std (within 20 %) in 8-D with 100
    particles after 1,200 updates (after 400 the whitened one is still at 0.68–0.93): √(s_d² + h²) for the isotropic kernel h²I, s_d·√(1 + h_w²) for the whitened one
    h_w²Σ; with the j = i self-attraction the net under-disperses (in every dimension, by more
    than 15 % on average)."""
    d, scale = 8, torch.linspace(0.5, 2.0, 8)
    codes = 1.0 + scale * torch.randn(1000, d, generator=torch.Generator().manual_seed(1))
    ratios = {}
    for loo in (True, False):
        model = small_model(
            toy.spec,
            latent_dim=d,
            sampler_noise_dim=8,
            sampler_hidden=[64, 64],
            sampler_particles=100,
            sampler_leave_one_out=loo,
            sampler_target="kde",
            kde_metric=metric,
        )
        z = fit_sampler(model, codes, toy, 1200)
        s_d = codes.std(0)
        if metric == "isotropic":
            target = (s_d**2 + ldc_vae.scott_bandwidth2(codes)).sqrt()
        else:
            target = s_d * (1 + len(codes) ** (-2 / (d + 4))) ** 0.5
        ratios[loo] = z.std(0) / target
        assert (z.mean(0) - 1.0).abs().max() < 0.5
    assert ((ratios[True] > 0.8) & (ratios[True] < 1.2)).all(), ratios[True]
    assert (ratios[False] < ratios[True]).all(), ratios
    assert ratios[False].mean() < 0.85 * ratios[True].mean(), ratios


def test_whitened_kde_score_is_the_full_bandwidth_kde_score_in_whitened_coordinates():
    """whiten() gives codes of identity covariance, and the isotropic KDE score of whitened
    codes at u = L⁻¹(z − μ) equals Lᵀ ∇_z log Σ_i N(z; c_i, h²Σ), the full-bandwidth KDE's
    score by its closed form Σ_i w_i Σ⁻¹(c_i − z)/h², computed here in float64."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(5, 5, generator=g, dtype=torch.float64)
    codes = torch.randn(300, 5, generator=g, dtype=torch.float64) @ a.T * 2 + 1
    mean, chol = ldc_vae.whitening(codes)
    u_codes = ldc_vae.whiten(codes, mean, chol)
    cov_u = torch.cov(u_codes.T)  # I − jitter·Σ⁻¹: off by 1e-6 × mean variance / λ_min
    assert torch.allclose(cov_u, torch.eye(5, dtype=torch.float64), atol=1e-3)
    z = torch.randn(7, 5, generator=g, dtype=torch.float64) * 3
    h2 = 0.4
    got = ldc_vae.kde_score(ldc_vae.whiten(z, mean, chol), u_codes, h2)
    sigma = chol @ chol.T
    prec = torch.linalg.inv(sigma)
    diff = codes[None] - z[:, None]  # (M, N, D)
    logk = -0.5 * torch.einsum("mnd,de,mne->mn", diff, prec, diff) / h2
    w = torch.softmax(logk, dim=1)
    grad_z = torch.einsum("mn,mnd->md", w, diff) @ prec / h2
    assert torch.allclose(got, grad_z @ chol, atol=1e-8)


def test_whitened_sampler_step_moves_the_whitened_particles_along_svgd(toy):
    """With the whitened kernel, a gradient step on the sampler loss moves the particles' whitened
    coordinates u = L⁻¹(z − μ) along SVGD's φ_u (computed here independently), not along Σ⁻¹φ_u,
    which is what backpropagating φ_u through the whitening would give."""
    d = 4
    g = torch.Generator().manual_seed(5)
    codes = torch.randn(500, d, generator=g) * torch.tensor([0.3, 1.0, 3.0, 10.0])
    model = small_model(
        toy.spec, latent_dim=d, sampler_particles=50, sampler_target="kde", kde_metric="whitened"
    )
    model._remember(codes)
    z = (torch.randn(50, d, generator=g) * 2).requires_grad_(True)
    model.sampler_latents = lambda n, generator=None: z
    model.sampler_loss(toy.train.gray(torch.arange(4))).loss.backward()
    mean, chol = ldc_vae.whitening(codes)
    u, cu = ldc_vae.whiten(z.detach(), mean, chol), ldc_vae.whiten(codes, mean, chol)
    score = ldc_vae.kde_score(u, cu, ldc_vae.scott_bandwidth2(cu))
    phi_u = ldc_vae.svgd_direction(u[None], score[None], model.kernel, True)[0]
    step_u = torch.linalg.solve_triangular(chol, -z.grad.T, upper=False).T  # L⁻¹ δz
    scale = (step_u * phi_u).sum() / phi_u.pow(2).sum()
    assert scale > 0
    torch.testing.assert_close(step_u, scale * phi_u, rtol=1e-4, atol=1e-6 * float(scale))


@pytest.mark.parametrize("metric", ["isotropic", "whitened"])
def test_gmm_target_sampler_step_follows_svgd_in_its_coordinates(toy, metric):
    """``target_metric`` sets where the "gmm" target's SVGD runs: a gradient step on the sampler
    loss moves z along φ of the raw codes (isotropic) or u = L⁻¹(z − μ) along φ_u (whitened),
    φ computed here independently from the fitted mixture's closed-form balanced score."""
    d = 4
    g = torch.Generator().manual_seed(6)
    codes = torch.randn(400, d, generator=g) * torch.tensor([0.3, 1.0, 3.0, 10.0])
    model = small_model(
        toy.spec,
        latent_dim=d,
        sampler_particles=60,
        sampler_target="gmm",
        target_components=2,
        target_metric=metric,
        kde_memory=400,
    )
    model._remember(codes)
    z = (torch.randn(60, d, generator=g) * 2).requires_grad_(True)
    model.sampler_latents = lambda n, generator=None: z
    model.sampler_loss(toy.train.gray(torch.arange(4))).loss.backward()
    density = model.target_density
    assert density.is_fitted
    score = ldc_vae.mixture_score(
        z.detach(), density.means, density.covariances, density.weights, 20
    )
    step = -z.grad
    if metric == "whitened":
        mean, chol = ldc_vae.whitening(codes)
        u = ldc_vae.whiten(z.detach(), mean, chol)
        phi = ldc_vae.svgd_direction(u[None], (score @ chol)[None], model.kernel, True)[0]
        step = torch.linalg.solve_triangular(chol, step.T, upper=False).T  # L⁻¹ δz
    else:
        phi = ldc_vae.svgd_direction(z.detach()[None], score[None], model.kernel, True)[0]
    scale = (step * phi).sum() / phi.pow(2).sum()
    assert scale > 0
    torch.testing.assert_close(step, scale * phi, rtol=1e-4, atol=1e-6 * float(scale))


@pytest.mark.parametrize(
    ("target", "metric"), [("gmm", "isotropic"), ("kde", "isotropic"), ("kde", "whitened")]
)
def test_target_draws_have_the_target_densitys_moments(toy, target, metric):
    """The MMD objective's draws come from the target density itself: the fitted mixture (its
    mean and covariance), or the KDE (mean of the codes; covariance of the codes plus the
    kernel's, h²·I isotropic or h²·Σ whitened, h² Scott's factor of the coordinates), here with
    annealing factor 2 (the kernel's h² doubles; the mixture's components gain (f − 1)·h²Σ).
    Tolerance: 6 standard errors of a covariance entry of 40,000 draws."""
    d, n = 3, 40_000
    g = torch.Generator().manual_seed(8)
    codes = torch.randn(500, d, generator=g) @ torch.tensor(
        [[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 4.0]]
    )
    model = small_model(
        toy.spec,
        latent_dim=d,
        sampler_target=target,
        kde_metric=metric,
        target_components=2,
        kde_memory=500,
    )
    model._remember(codes)
    torch.manual_seed(9)
    draws = model._target_draws(codes, n, 2.0)  # (n, D)
    cov_codes = torch.cov(codes.T, correction=0)
    scott = 500 ** (-2.0 / (d + 4))  # h² of unit-variance coordinates
    if target == "gmm":
        density = model.target_density
        blur = scott * torch.cov(codes.T)  # (f − 1) h² Σ with Σ the codes' covariance (n − 1)
        mean, cov = density.mean, density.covariance + blur
    elif metric == "whitened":
        mean, cov = codes.mean(0), cov_codes + 2.0 * scott * torch.cov(codes.T)
    else:
        h2 = ldc_vae.scott_bandwidth2(codes)
        mean, cov = codes.mean(0), cov_codes + 2.0 * h2 * torch.eye(d)
    se = (cov.diagonal()[:, None] * cov.diagonal()[None] / n).sqrt()
    assert (draws.mean(0) - mean).abs().max() < 6 * (cov.diagonal() / n).sqrt().max()
    assert ((torch.cov(draws.T) - cov).abs() / se).max() < 6 * math.sqrt(2)


def test_mmd_objective_gradients_add_to_the_svgd_surrogate(toy):
    """``sampler_objective``: "mmd" is the gradient of the unbiased MMD² (the model's IMQ kernel
    at base 2·D·s²) between the sampler's particles and as many target draws; "svgd+mmd" is
    the SVGD surrogate's gradient plus ``sampler_mmd_weight`` times it (same particles and
    draws under one seed)."""
    from latentgap.mmd import IMQKernel, mmd_squared

    d = 4
    g = torch.Generator().manual_seed(6)
    codes = torch.randn(400, d, generator=g) * torch.tensor([0.3, 1.0, 3.0, 10.0])
    z0 = torch.randn(60, d, generator=g) * 2
    x = toy.train.gray(torch.arange(4))
    grads = {}
    for objective in ("svgd", "mmd", "svgd+mmd"):
        model = small_model(
            toy.spec,
            latent_dim=d,
            sampler_particles=60,
            sampler_target="gmm",
            target_components=2,
            kde_memory=400,
            sampler_objective=objective,
            sampler_mmd_weight=2.5,
        )
        model._remember(codes)
        z = z0.clone().requires_grad_(True)
        model.sampler_latents = lambda n, generator=None, z=z: z
        torch.manual_seed(3)
        out = model.sampler_loss(x)
        out.loss.backward()
        grads[objective] = z.grad
        if objective == "mmd":
            assert "sampler_phi_norm" not in out.terms
            torch.manual_seed(3)
            draws = model._target_draws(codes, 60, 1.0)
            kernel = IMQKernel(2.0 * d * float(codes.var(0).mean()))
            zz = z0.clone().requires_grad_(True)
            mmd2 = mmd_squared(zz, draws, kernel)
            (expected,) = torch.autograd.grad(mmd2, zz)
            torch.testing.assert_close(out.terms["sampler_mmd2"], mmd2.detach())
            torch.testing.assert_close(z.grad, expected)
    torch.testing.assert_close(grads["svgd+mmd"], grads["svgd"] + 2.5 * grads["mmd"])


def test_mmd_objective_covers_separated_modes_in_their_proportions(toy):
    """The sample-based objective needs no balancing: trained on the MMD² to draws of a GMM of
    three clusters 6 apart (weights 0.5 / 0.3 / 0.2, the balanced-SVGD test's), the sampler's
    codes fall near each cluster in its proportion (±0.06 after 800 updates, as that test;
    measured 0.48 / 0.31 / 0.22)."""
    weights = three_clusters()[1]
    _, shares = cluster_shares(toy, sampler_objective="mmd")
    assert (shares - weights).abs().max() < 0.06, shares


def test_mixture_sampler_puts_no_mass_between_separated_modes(toy):
    """A net on Gaussian noise is continuous, so an MMD-trained sampler of three clusters 6
    apart (std 0.7 in 4-D) leaves a trail between them: 17.5 % of its codes lie farther than 3
    from every centre (a draw of the mixture: 0.1 %). With the target's component as input
    (``sampler_mixture``) 1.0 % do, its per-axis spread across the clusters' thin axes is
    their 0.7 (plain: 0.47–0.53), and the shares stay the weights (measured 0.49 / 0.29 /
    0.22; tolerances: 3× and ⅓ of the measured gap, the shares' ±0.06 of the other tests)."""
    means, weights, _ = three_clusters()
    far = {}
    for mixture in (False, True):
        model, shares = cluster_shares(toy, sampler_objective="mmd", sampler_mixture=mixture)
        z = model.sampler_latents(4000, torch.Generator().manual_seed(2)).detach()
        far[mixture] = float((torch.cdist(z, means).min(1).values > 3).float().mean())
    assert far[False] > 0.1 and far[True] < 0.03, far
    assert (shares - weights).abs().max() < 0.06, shares
    assert ((z.std(0)[2:] - 0.7).abs() < 0.1).all(), z.std(0)
    first = model.sampler_latents(8, torch.Generator().manual_seed(4))
    again = model.sampler_latents(8, torch.Generator().manual_seed(4))
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # the generator fixes c and ε


def test_mixture_sampler_target_keeps_its_components_through_drifting_refits(toy):
    """With ``sampler_mixture`` the gmm target's component k must stay on one mode across
    refits to drifting codes, and no component may die: three clusters refitted after their
    codes moved by 0.5 keep all three components (weights 0.5 / 0.3 / 0.2 ± 0.05, each mean
    0.5 from its previous place), whatever order the fresh k-means start gives them."""
    means, weights, codes = three_clusters()
    model = small_model(
        toy.spec,
        latent_dim=4,
        sampler_target="gmm",
        target_components=3,
        kde_memory=1000,
        sampler_objective="mmd",
        sampler_mixture=True,
    )
    model._remember(codes)
    first = model._gmm_target(codes, 1.0)[0].clone()  # (3, D)
    shift = torch.tensor([0.5, 0.0, 0.0, 0.0])
    for step in range(1, 4):
        model.sampler_updates.fill_(100 * step)  # a refit is due every target_refit updates
        moved = codes[torch.randperm(len(codes), generator=torch.Generator().manual_seed(step))]
        got, _, w = model._gmm_target(moved + step * shift, 1.0)
        assert int(model.target_fitted_at) == 100 * step
        torch.testing.assert_close(got, first + step * shift, atol=0.1, rtol=0)
    nearest = torch.cdist(got - 3 * shift, means).argmin(1)
    assert (w - weights[nearest]).abs().max() < 0.05, w


@pytest.mark.parametrize(
    "options", [{}, {"sampler_objective": "mmd", "sampler_mixture": True}], ids=["svgd", "mixture"]
)
def test_sampler_final_epochs_train_the_sampler_alone_on_a_frozen_target(tmp_path, toy, options):
    """``sampler_final_epochs`` k: after the joint epochs, k epochs of sampler updates alone. The
    autoencoder and the encoder-gmm reference are bit for bit those of a run that stops after the
    joint epochs; the sampler trains on (4 updates an epoch, one per batch); the gmm target is
    fitted once to one code per training image (not the code memory) and stays put although a
    refit falls due every 2 updates; a reloaded run keeps it frozen."""
    options = {**options, "target_refit": 2, "target_components": 3}
    joint = toy_run(tmp_path, "joint", 2, **options)
    both = toy_run(tmp_path, "both", 4, sampler_final_epochs=2, **options)
    ours, theirs = both.state_dict(), joint.state_dict()
    for name in ours:
        if name.startswith(("encoder.", "decoder.", "reference_density.", "code_memory")):
            assert torch.equal(ours[name], theirs[name]), name
    sampler = [name for name in ours if name.startswith("sampler.")]
    assert sampler and not all(torch.equal(ours[n], theirs[n]) for n in sampler)
    records = [json.loads(line) for line in (tmp_path / "both" / "metrics.jsonl").open()]
    phases = [(r["epoch"], r["phase"]) for r in records if r.get("split") == "train"]
    assert [p for e, p in phases if e <= 2] == ["ldc"] * 8
    assert [p for e, p in phases if e > 2] == ["sampler"] * 8
    assert int(both.sampler_updates) == 8 + 8 and bool(both.target_frozen)
    loaded, _, splits = load_run(tmp_path / "both")
    refit = ldc_vae.GaussianMixture(3, SMALL["latent_dim"])
    codes = both.training_codes(splits.train)
    refit.fit(codes, seed=0, reg_covar=1e-4 * float(codes.var(0).mean()))
    refit.reorder(ldc_vae.matching_order(both.target_density.means, refit.means))
    torch.testing.assert_close(both.target_density.means, refit.means)
    before = both.target_density.means.clone()
    loaded.train()
    loaded.sampler_updates.fill_(1000)
    loaded.sampler_loss(toy.train.gray(torch.arange(4)))
    assert torch.equal(loaded.target_density.means, before)


def test_sampler_final_epochs_need_a_joint_epoch(tmp_path, toy):
    """Too few epochs for the plan: a config error before the run directory is made."""
    model = small_model(toy.spec, sampler_final_epochs=3)
    assert [p.epochs for p in model.phases(5)] == [2, None]
    with pytest.raises(ConfigError, match="leaves no joint epoch"):
        model.phases(3)
    with pytest.raises(ConfigError, match="leaves no joint epoch"):
        toy_run(tmp_path, "short", 3, sampler_final_epochs=3)
    assert not (tmp_path / "short").exists()
    with pytest.raises(ConfigError, match="sampler_final_epochs"):
        small_model(toy.spec, sampler_final_epochs=-1)
