"""An independent check of a VAEPP run's log Z: importance sampling with a Gaussian-mixture proposal.

    python scripts/independent_log_z.py RUN [--samples 200000] [--components 10]

Fits a full-covariance Gaussian mixture (scikit-learn) to approximate samples of p_λ (AIS end
states, resampled by their weights), widens it (covariances × 1.5²) so its tails cover p_λ's, and
estimates Z = E_r[f_λ(z)/r(z)] with fresh draws z ~ r. This estimator is unbiased for Z whatever r
is, as long as r covers f_λ; it shares no code with AIS beyond producing r's training points, so an
agreement with `latentgap evaluate RUN --nll` is evidence that both are right. Prints JSON.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--widen", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ais-chains", type=int, default=512)
    p.add_argument("--ais-temps", type=int, default=300)
    args = p.parse_args()

    from sklearn.mixture import GaussianMixture

    from latentgap.priors import LogZEstimate
    from latentgap.train.run import load_run

    model, _, _ = load_run(args.run, "cpu", None, load_data=False)
    model.eval()
    # AIS only to find p_λ's mass (the proposal's training points); a short schedule suffices
    ais = model.estimate_log_z_ais(args.ais_chains, args.ais_temps, 3, seed=args.seed + 1)
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.multinomial(torch.softmax(ais.log_weights, 0), len(ais.samples), True, generator=g)
    points = ais.samples[pick].double().numpy()
    gmm = GaussianMixture(args.components, covariance_type="full", random_state=args.seed)
    gmm.fit(points + 1e-3 * np.random.default_rng(args.seed).standard_normal(points.shape))
    gmm.covariances_ = gmm.covariances_ * args.widen**2
    gmm.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(gmm.covariances_))
    z, _ = gmm.sample(args.samples)
    log_r = torch.from_numpy(gmm.score_samples(z))
    zt = torch.from_numpy(z).float()
    with torch.no_grad():
        log_f = torch.cat(
            [
                model.pullback.log_unnormalized(b, model.critic_values(model.generate(b)))
                for b in zt.split(4096)
            ]
        ).double()
    est = LogZEstimate.from_log_weights(log_f - log_r, "gmm-proposal")
    print(
        json.dumps(
            {
                "run": args.run,
                "log_z_gmm_is": est.log_z,
                "std_err": est.std_err,
                "ess": est.ess,
                "samples": est.n_samples,
                "ais_for_proposal": f"{args.ais_chains} chains x {args.ais_temps} temperatures",
                "proposal": f"{args.components}-component GMM on AIS end states, covariances x {args.widen}^2",
            }
        )
    )


if __name__ == "__main__":
    main()
