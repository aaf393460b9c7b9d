"""Metrics of ``eval.json`` grouped for a reader: likelihood, sample quality, latent consistency,
VAEPP diagnostics, training; each with its unit, the sample sizes behind it and a caveat when
those are too small to compare.

Bookkeeping entries (``run``, ``dataset``, ``per_repeat``, the sample sizes themselves) are not
rows: they are folded into the "based on" column. ``nll_std`` is shown only with more than one
repeat (a single repeat has no spread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# sample sizes below which numbers are not comparable across runs (see README, "Metrics")
FID_COMPARABLE = 10_000
FID_MEANINGFUL = 2_048  # fewer images than Inception features: a singular covariance
NLL_COMPARABLE = 10_000  # the full MNIST test set
CONSISTENCY_COMPARABLE = 1_000

BOOKKEEPING = {
    "run",
    "model",
    "dataset",
    "per_repeat",
    "n_examples",
    "iw_samples",
    "repeats",
    "fid_samples",
    "fid_reference",
    "fid_reference_size",
    "fid_recon_images",
    "fid_extractor",
    "pr_k",
    "consistency_n",
    "world_size",
}


@dataclass
class MetricRow:
    key: str
    label: str
    value: str
    unit: str
    basis: str
    raw: Any = None


@dataclass
class MetricGroup:
    title: str
    rows: list[MetricRow] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _nll_basis(m: dict[str, Any]) -> str:
    if "n_examples" not in m:
        return ""
    text = f"{m['n_examples']:,} test images × {m.get('iw_samples', '?')} importance samples"
    reps = m.get("repeats", 1)
    return text + (f" × {reps} repeats" if reps and reps > 1 else "")


def _fid_basis(m: dict[str, Any], images_key: str = "fid_samples") -> str:
    n = m.get(images_key)
    if n is None:
        return ""
    ref = m.get("fid_reference_size")
    split = m.get("fid_reference", "train")
    text = f"{n:,} images vs {ref:,} {split} images" if ref else f"{n:,} images"
    return text + f" ({m.get('fid_extractor', 'inception')} features)"


# key → (group, label, unit, basis)
KNOWN: dict[str, tuple[str, str, str, Any]] = {
    "nll_nats": ("Likelihood", "test NLL", "nats", _nll_basis),
    "nll_std": ("Likelihood", "NLL std over repeats", "nats", _nll_basis),
    "nll_nats_conservative": ("Likelihood", "test NLL with the p_N log Ẑ", "nats", _nll_basis),
    "bits_per_dim": ("Likelihood", "test NLL", "bits/dim", _nll_basis),
    "elbo": ("Likelihood", "test ELBO", "nats", _nll_basis),
    "log_z": ("Likelihood", "log Ẑ (Eq. 8)", "nats", lambda m: ""),
    "log_z_normal": ("Likelihood", "log Ẑ (p_N proposal)", "nats", lambda m: ""),
    "log_z_gap": ("Likelihood", "log Ẑ gap (p_N − Eq. 8)", "nats", lambda m: ""),
    "log_z_std_err": ("Likelihood", "log Ẑ standard error (Eq. 8)", "nats", lambda m: ""),
    "log_z_normal_std_err": ("Likelihood", "log Ẑ standard error (p_N)", "nats", lambda m: ""),
    "log_z_normal_ess": (
        "Likelihood",
        "p_N proposal: effective sample size",
        "samples",
        lambda m: "",
    ),
    "beta": ("VAEPP diagnostics", "β (pull-back strength)", "", lambda m: ""),
    "fid_sample": ("Sample quality", "FID of samples", "", _fid_basis),
    "fid_recon": (
        "Sample quality",
        "FID of test reconstructions",
        "",
        lambda m: _fid_basis(m, "fid_recon_images"),
    ),
    "precision": (
        "Sample quality",
        "precision",
        "fraction",
        lambda m: f"k = {m.get('pr_k', 3)}, {fmt(m.get('fid_samples'))} samples",
    ),
    "recall": (
        "Sample quality",
        "recall",
        "fraction",
        lambda m: f"k = {m.get('pr_k', 3)}, {fmt(m.get('fid_samples'))} samples",
    ),
    "consistency_mmd2": (
        "Latent consistency",
        "MMD² encoder vs generation codes",
        "",
        lambda m: f"{fmt(m.get('consistency_n'))} codes each",
    ),
    "consistency_mmd_p": (
        "Latent consistency",
        "MMD permutation p-value",
        "",
        lambda m: f"{fmt(m.get('consistency_n'))} codes each",
    ),
    "consistency_c2st": (
        "Latent consistency",
        "classifier two-sample accuracy (0.5 = same)",
        "fraction",
        lambda m: f"{fmt(m.get('consistency_n'))} codes each",
    ),
}
ORDER = ["Likelihood", "Sample quality", "Latent consistency", "VAEPP diagnostics", "Training"]


def _caveats(m: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    n = m.get("fid_samples")
    if "fid_sample" in m and isinstance(n, int):
        if m.get("fid_extractor") not in (None, "inception") and "inception" not in str(
            m.get("fid_extractor")
        ):
            out.setdefault("Sample quality", []).append(
                f"FID with {m.get('fid_extractor')} features: not comparable to published FIDs."
            )
        if n < FID_MEANINGFUL:
            out.setdefault("Sample quality", []).append(
                f"FID of {n:,} images (fewer than the 2,048 Inception features): strongly "
                "biased upward; compare only with runs at exactly this size."
            )
        elif n < FID_COMPARABLE:
            out.setdefault("Sample quality", []).append(
                f"FID of {n:,} images: biased upward at this size; published FIDs use "
                "10,000–50,000; compare runs at equal sizes."
            )
    ne = m.get("n_examples")
    if "nll_nats" in m and isinstance(ne, int) and ne < NLL_COMPARABLE:
        out.setdefault("Likelihood", []).append(
            f"NLL on {ne:,} test images (under {NLL_COMPARABLE:,}): a wide standard error; "
            "compare only with runs scored on the same images."
        )
    nc = m.get("consistency_n")
    if "consistency_mmd2" in m and isinstance(nc, (int, float)) and nc < CONSISTENCY_COMPARABLE:
        out.setdefault("Latent consistency", []).append(
            f"Consistency from {int(nc):,} codes per set: a weak test."
        )
    return out


def group_metrics(
    metrics: dict[str, Any],
    training: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> list[MetricGroup]:
    """Rows of ``metrics`` (eval.json) and ``training`` (the last epoch record of
    metrics.jsonl; ``config`` says on how many test images its test terms are) in reader's
    groups, in a fixed order; empty groups are left out."""
    groups: dict[str, MetricGroup] = {t: MetricGroup(t) for t in ORDER}
    other = MetricGroup("Other")
    for key, value in metrics.items():
        if key in BOOKKEEPING or isinstance(value, (list, dict)):
            continue
        if key == "nll_std" and int(metrics.get("repeats", 1) or 1) <= 1:
            continue
        if key in KNOWN:
            title, label, unit, basis = KNOWN[key]
            row = MetricRow(key, label, fmt(value), unit, basis(metrics), value)
            groups[title].rows.append(row)
        elif key.startswith("diag_"):
            groups["VAEPP diagnostics"].rows.append(
                MetricRow(key, key[5:].replace("_", " "), fmt(value), "", "", value)
            )
        else:
            other.rows.append(MetricRow(key, key.replace("_", " "), fmt(value), "", "", value))
    for title in ("Likelihood", "Sample quality", "Latent consistency"):
        keys = [k for k in KNOWN if KNOWN[k][0] == title]
        groups[title].rows.sort(key=lambda r, keys=keys: keys.index(r.key))
    for title, notes in _caveats(metrics).items():
        groups[title].caveats += notes
    if training:
        rows = groups["Training"].rows
        for key, label, unit in (
            ("epoch", "epochs", ""),
            ("iteration", "iterations", ""),
            ("step", "optimizer steps", ""),
            ("test_loss", "test loss (last epoch)", ""),
            ("test_elbo", "test ELBO (last epoch)", "nats"),
            ("images_per_s", "training throughput", "images/s"),
            ("epoch_seconds", "last epoch time", "s"),
        ):
            if training.get(key) is not None:
                basis = ""
                if key.startswith("test_"):
                    tc = (config or {}).get("train", {})
                    basis = "the first test batches"
                    if tc.get("eval_batches") and tc.get("batch_size"):
                        n = tc["eval_batches"] * tc["batch_size"]
                        basis = f"at most {n:,} test images (eval_batches × batch_size), 1 draw"
                rows.append(MetricRow(key, label, fmt(training[key]), unit, basis, training[key]))
    out = [g for g in groups.values() if g.rows]
    return out + ([other] if other.rows else [])
