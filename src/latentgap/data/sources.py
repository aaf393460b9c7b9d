"""A researcher's own data: ``folder:PATH`` (image files) and ``npy:PATH`` (arrays) datasets.

A dataset name with a scheme prefix names files anywhere on disk instead of a registered
dataset; the name (with the path made absolute) is what ``config.json`` records, so a run reloads
wherever the files are. The loaders live in :mod:`~.image_folder` and :mod:`~.npy`; this module holds
what both share: the scheme registry, path resolution and the train/test split.

Options (``--set data.options.KEY=VALUE``), common to both:

- ``binarize`` (default false): dynamically binarised observations (a fresh Bernoulli draw from
  the gray levels each time an image is served, as for MNIST); false gives continuous values in
  [0, 1];
- ``test_fraction`` (default 0.1): the share of the images held out as the test split when the
  files carry no split of their own; ``split_seed`` (default 0) fixes the random split.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from latentgap.data.base import DataSpec, ImageSet, Splits
from latentgap.errors import ConfigError, DataError
from latentgap.registry import Registry

COMMON_OPTIONS = ("binarize", "test_fraction", "split_seed")


@dataclass(frozen=True)
class Source:
    """A scheme of own-data datasets: ``load(path, **options) -> Splits``."""

    scheme: str
    description: str
    load: Callable[..., Splits]
    options: tuple[str, ...]


SOURCES: Registry[Source] = Registry("dataset scheme")


def split_scheme(name: str) -> tuple[Source, str] | None:
    """(source, path) for a name ``SCHEME:PATH`` of a registered scheme, else None."""
    scheme, sep, rest = name.partition(":")
    if not sep or scheme not in SOURCES:
        return None
    if not rest:
        raise ConfigError(f"dataset {name!r} names no path; write {scheme}:PATH")
    return SOURCES.get(scheme), rest


def absolute_dataset_name(name: str) -> str:
    """``SCHEME:PATH`` with PATH made absolute (``~`` expanded); other names unchanged."""
    found = split_scheme(name)
    if found is None:
        return name
    source, path = found
    return f"{source.scheme}:{Path(path).expanduser().resolve()}"


def resolve_source_path(path: str, data_dir: str | os.PathLike[str] | None) -> Path:
    """The files of an own-data dataset: ``path`` itself, else (when it is missing and
    ``data_dir`` is given) ``data_dir/<its last component>``, for a run moved to another
    machine. Raises DataError naming both places."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    if data_dir is not None:
        moved = Path(data_dir).expanduser() / p.name
        if moved.exists():
            return moved
        raise DataError(f"dataset files {p} not found, nor {moved}; pass --data-dir where they are")
    raise DataError(
        f"dataset files {p} not found; pass --data-dir FOLDER holding {p.name!r} if they moved"
    )


def load_source(
    name: str, data_dir: str | os.PathLike[str] | None = None, **options
) -> Splits | None:
    """Load ``SCHEME:PATH`` with ``options``; None when ``name`` has no registered scheme."""
    found = split_scheme(name)
    if found is None:
        return None
    source, path = found
    unknown = sorted(set(options) - set(source.options))
    if unknown:
        raise ConfigError(
            f"{source.scheme}: datasets have no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(source.options)}"
        )
    return source.load(resolve_source_path(path, data_dir), name=name, **options)


def check_common(binarize: object, test_fraction: object, split_seed: object) -> None:
    if not isinstance(binarize, bool):
        raise ConfigError(f"binarize must be true or false, got {binarize!r}")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0 < test_fraction < 1
    ):
        raise ConfigError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise ConfigError(f"split_seed must be an integer, got {split_seed!r}")


def spec_for(name: str, shape: tuple[int, int, int], binarize: bool) -> DataSpec:
    return DataSpec(name, shape, "binary" if binarize else "continuous")


def image_set(images: Tensor, labels: Tensor | None, spec: DataSpec) -> ImageSet:
    mode = "dynamic" if spec.kind == "binary" else "none"
    return ImageSet(images, labels, spec=spec, binarize=mode)


def random_split(
    images: Tensor,
    labels: Tensor | None,
    spec: DataSpec,
    *,
    test_fraction: float,
    split_seed: int,
    source: str,
) -> Splits:
    """Train/test splits of one set: a random permutation (``split_seed``), the first
    round(test_fraction·N) images (at least one) for the test split."""
    n = images.shape[0]
    n_test = max(1, round(test_fraction * n))
    if n - n_test < 1:
        raise DataError(
            f"{source} holds {n} image(s): too few to split into train and test; add images"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))  # (N,)
    test, train = order[:n_test], order[n_test:]

    def pick(index: Tensor) -> ImageSet:
        return image_set(images[index], None if labels is None else labels[index], spec)

    return Splits(spec, pick(train), pick(test))
