"""``folder:PATH``: a folder of PNG/JPEG images as a dataset (read with Pillow).

Layout, either of:

- ``PATH/train/`` and ``PATH/test/`` (and optionally ``PATH/valid/``): those splits;
- images under ``PATH`` only: a random split, ``test_fraction`` of them for testing.

Inside a split (or ``PATH``), images sit directly in the folder (no labels) or in one level of
class subfolders (``PATH/train/cat/001.png``): the label is the index of the subfolder's name
in the sorted list of all class names. Files of other types are ignored.

Options: ``size`` (an int or ``[H, W]``; default the images' own size, which must then be the
same for all), ``channels`` (1 or 3; default 1 if every image is grayscale, else 3), and the
common ``binarize``, ``test_fraction``, ``split_seed`` (:mod:`~.sources`). Resizing is Pillow's
bilinear filter (antialiased when shrinking). Images are stored as uint8 (N, C, H, W); the
observations are gray levels in [0, 1] or their dynamic binarisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from latentgap.data.base import Splits
from latentgap.data.sources import (
    COMMON_OPTIONS,
    SOURCES,
    Source,
    check_common,
    image_set,
    random_split,
    spec_for,
)
from latentgap.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
SPLITS = ("train", "test", "valid")


def _is_image(path: Path) -> bool:
    return (
        path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (any depth), in sorted order."""
    return sorted(p for p in Path(folder).rglob("*") if _is_image(p))


def labelled_images(folder: Path) -> tuple[list[Path], list[str | None]]:
    """Images directly in ``folder`` (class None) or in its class subfolders (class = name)."""
    direct = sorted(p for p in folder.iterdir() if _is_image(p))
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    nested = [(p, d.name) for d in subdirs for p in sorted(d.iterdir()) if _is_image(p)]
    if direct and nested:
        raise DataError(
            f"{folder} holds images both directly and in subfolders ({subdirs[0].name}/, ...); "
            "put every image in a class subfolder, or none"
        )
    if direct:
        return direct, [None] * len(direct)
    return [p for p, _ in nested], [c for _, c in nested]


def parse_size(size: object) -> tuple[int, int] | None:
    """``size`` option → (H, W), or None to keep the images' own size."""
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if (
        isinstance(size, (list, tuple))
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return int(size[0]), int(size[1])
    raise ConfigError(f"size must be a positive integer or [H, W], got {size!r}")


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(f"cannot read image {path} ({type(err).__name__}: {err})") from None
    return img


def read_images(
    paths: Sequence[Path], *, size: tuple[int, int] | None = None, channels: int | None = None
) -> Tensor:
    """The images at ``paths`` as one uint8 tensor (N, C, H, W).

    Without ``size`` all images must have the same size (else a DataError naming two files of
    different sizes); without ``channels`` they are grayscale (C = 1) if all are, else RGB.
    """
    from PIL import Image

    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    if not paths:
        raise DataError("no images to read")
    images = [_open(p) for p in paths]
    if channels is None:
        channels = 1 if all(img.mode in GRAY_MODES for img in images) else 3
    mode = "L" if channels == 1 else "RGB"
    if size is None:
        first = images[0].size
        for path, img in zip(paths, images, strict=True):
            if img.size != first:
                raise DataError(
                    f"images have different sizes: {paths[0]} is {first[0]}x{first[1]}, "
                    f"{path} is {img.size[0]}x{img.size[1]} (W x H); set "
                    "data.options.size=[H, W] to resize them"
                )
    arrays = []
    for img in images:
        if img.mode in ("I", "I;16", "F"):  # 16-bit / float gray: scale to 8 bits
            arr = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode != "F" or arr.max() > 1 else 1.0
            img = Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8))
        img = img.convert(mode)
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))  # (C, H, W)
    return torch.from_numpy(np.stack(arrays))  # (N, C, H, W) uint8


def load_folder(
    folder: Path,
    *,
    name: str,
    size: object = None,
    channels: int | None = None,
    binarize: bool = False,
    test_fraction: float = 0.1,
    split_seed: int = 0,
) -> Splits:
    """The :class:`Splits` of an image folder (see the module docstring)."""
    check_common(binarize, test_fraction, split_seed)
    hw = parse_size(size)
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of images")
    split_dirs = {s: folder / s for s in SPLITS if (folder / s).is_dir()}
    if split_dirs and not {"train", "test"} <= set(split_dirs):
        missing = "test" if "train" in split_dirs else "train"
        raise DataError(f"{folder} has a {next(iter(split_dirs))}/ subfolder but no {missing}/")
    parts = split_dirs or {"all": folder}
    listed = {s: labelled_images(d) for s, d in parts.items()}
    for s, (paths, _) in listed.items():
        if not paths:
            where = folder if s == "all" else parts[s]
            raise DataError(f"no PNG or JPEG images in {where} (nor in its subfolders)")
    classes = sorted({c for _, cs in listed.values() for c in cs if c is not None})
    every = [p for paths, _ in listed.values() for p in paths]
    images = read_images(every, size=hw, channels=channels)  # (N, C, H, W)
    spec = spec_for(name, tuple(images.shape[1:]), binarize)
    labels = None
    if classes:
        if any(c is None for _, cs in listed.values() for c in cs):
            raise DataError(
                f"{folder}: some splits have class subfolders and some do not; use them in all"
            )
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[c] for _, cs in listed.values() for c in cs])
    if not split_dirs:
        return random_split(
            images,
            labels,
            spec,
            test_fraction=test_fraction,
            split_seed=split_seed,
            source=str(folder),
        )
    sets, start = {}, 0
    for s, (paths, _) in listed.items():
        stop = start + len(paths)
        sets[s] = image_set(
            images[start:stop], None if labels is None else labels[start:stop], spec
        )
        start = stop
    return Splits(spec, sets["train"], sets["test"], sets.get("valid"))


SOURCES.add(
    "folder",
    Source(
        "folder",
        "a folder of PNG/JPEG images: train/ and test/ subfolders or a random split, optional "
        "class subfolders; options size, channels, binarize, test_fraction, split_seed",
        load_folder,
        ("size", "channels", *COMMON_OPTIONS),
    ),
)
