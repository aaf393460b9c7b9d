"""``latentgap list``: what is registered (models, datasets, architectures, presets, ...)."""

from __future__ import annotations

import argparse

KINDS = ("models", "datasets", "archs", "presets", "likelihoods", "posteriors")


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered models, datasets, architectures, presets")
    p.add_argument("kind", nargs="?", choices=KINDS, help="what to list (default: all)")
    p.set_defaults(func=run)


def registries() -> dict[str, list[tuple[str, str]]]:
    from latentgap.data import DATASETS, SOURCES
    from latentgap.likelihoods import LIKELIHOODS
    from latentgap.models import MODELS
    from latentgap.nets import ARCHITECTURES
    from latentgap.posteriors import POSTERIORS
    from latentgap.presets import PRESETS

    def doc(obj) -> str:
        return (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""

    return {
        "models": [(n, doc(c)) for n, c in MODELS.items()],
        "datasets": [(n, d.description) for n, d in DATASETS.items()]
        + [(f"{n}:PATH", src.description) for n, src in SOURCES.items()],
        "archs": [(n, a.description) for n, a in ARCHITECTURES.items()],
        "presets": [(n, p.description) for n, p in PRESETS.items()],
        "likelihoods": [(n, doc(c)) for n, c in LIKELIHOODS.items()],
        "posteriors": [(n, doc(c)) for n, c in POSTERIORS.items()],
    }


def run(args: argparse.Namespace) -> int:
    for kind, rows in registries().items():
        if args.kind and kind != args.kind:
            continue
        print(f"{kind}:")
        width = max((len(n) for n, _ in rows), default=0)
        for name, text in rows:
            print(f"  {name:<{width}}  {text}")
    return 0
