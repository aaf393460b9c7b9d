"""CelebA, aligned and cropped faces, centre-cropped to 140×140 and resized to 64×64.

Expected layout under ``<root>/celeba/``::

    img_align_celeba/000001.jpg ... 202599.jpg   (178×218 JPEGs)
    list_eval_partition.txt                      (lines "000001.jpg 0": 0 train, 1 valid, 2 test)

Preprocessing (the RAE / WAE protocol): the central 140×140 square is cropped (offsets
``((W-140)//2, (H-140)//2)``, i.e. (19, 39) for 178×218) and resized to ``size``×``size``
(default 64) with Pillow's ``Image.resize(..., Resampling.BILINEAR)``, which, when shrinking,
widens the bilinear kernel to the whole source footprint, i.e. it is antialiased (unlike
``torch.nn.functional.interpolate`` without ``antialias=True``). Images are 8-bit levels (kind
``discrete8``).

Cache: decoding 200k JPEGs takes minutes, so the decoded uint8 arrays are saved once per split
as ``<root>/celeba/cache-<size>-<split>.npy`` (written to a temporary file and renamed into
place, so an interrupted run never leaves a half-written cache) and loaded from there next time.
A cache whose shape does not match the partition list is rebuilt; delete the files to force it.
If the folder is read-only the images are decoded every time, with a warning.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from latentgap.data.base import DATASETS, DatasetInfo, DataSpec, ImageSet, Splits
from latentgap.data.fetch import MANUAL_DOWNLOAD
from latentgap.data.root import atomic_output, file_error
from latentgap.errors import ConfigError

NAME = "celeba"
IMAGE_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
FILES: tuple[str, ...] = (IMAGE_DIR, PARTITION_FILE)
CROP = 140
DEFAULT_SIZE = 64
SPLIT_CODES = {"0": "train", "1": "valid", "2": "test"}

MANUAL_DOWNLOAD[NAME] = (
    "CelebA's licence requires downloading it by hand: from "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive) get "
    "Img/img_align_celeba.zip and Eval/list_eval_partition.txt, and unzip so that "
    "{folder}/img_align_celeba/000001.jpg and {folder}/list_eval_partition.txt exist"
)


def read_partition(folder: Path) -> dict[str, list[str]]:
    """The image file names of each split, in file order, from ``list_eval_partition.txt``."""
    path = folder / PARTITION_FILE
    splits: dict[str, list[str]] = {split: [] for split in SPLIT_CODES.values()}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise file_error(NAME, folder, path, f"cannot be read ({exc})") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in SPLIT_CODES or "/" in fields[0]:
            raise file_error(
                NAME, folder, path, f"line {number} is {line!r}, expected '<name>.jpg <0|1|2>'"
            )
        splits[SPLIT_CODES[fields[1]]].append(fields[0])
    if not any(splits.values()):
        raise file_error(NAME, folder, path, "lists no images")
    return splits


def preprocess(image: Image.Image, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Centre-crop ``image`` to 140×140 and resize it (antialiased bilinear) to
    ``size``×``size``; returns (3, size, size) uint8."""
    image = image.convert("RGB")
    width, height = image.size
    if width < CROP or height < CROP:
        raise ValueError(f"{width}x{height} is smaller than the {CROP}x{CROP} crop")
    left, top = (width - CROP) // 2, (height - CROP) // 2
    image = image.crop((left, top, left + CROP, top + CROP))
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def _decode_one(folder: Path, size: int, name: str) -> np.ndarray:
    path = folder / IMAGE_DIR / name
    try:
        with Image.open(path) as image:
            return preprocess(image, size)
    except FileNotFoundError:
        raise file_error(NAME, folder, path, "listed in the partition file but missing") from None
    except Image.DecompressionBombError as exc:  # more pixels than Pillow's guard allows
        raise file_error(NAME, folder, path, f"too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise file_error(NAME, folder, path, f"not a usable image ({exc})") from exc


def decode_images(folder: Path, names: list[str], size: int) -> np.ndarray:
    """Decode and preprocess ``names`` (Pillow releases the GIL, so threads run in parallel):
    (N, 3, size, size) uint8."""
    out = np.empty((len(names), 3, size, size), np.uint8)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, image in enumerate(pool.map(partial(_decode_one, folder, size), names)):
            out[i] = image
    return out


def cached_split(folder: Path, split: str, names: list[str], size: int) -> np.ndarray:
    """The decoded images of one split, from ``cache-<size>-<split>.npy`` when it is valid,
    else decoded and then cached (atomically)."""
    cache = folder / f"cache-{size}-{split}.npy"
    expected = (len(names), 3, size, size)
    if cache.exists():
        try:
            images = np.load(cache, allow_pickle=False)
            if images.shape == expected and images.dtype == np.uint8:
                return images
        except (OSError, ValueError, EOFError):
            pass  # damaged cache: rebuild it below
    images = decode_images(folder, names, size)
    try:
        with atomic_output(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, images)
    except OSError as exc:
        warnings.warn(
            f"could not write the CelebA cache {cache} ({exc}); the images will be decoded "
            "again next time",
            stacklevel=2,
        )
    return images


def load_celeba(folder: Path, *, size: int = DEFAULT_SIZE) -> Splits:
    """CelebA :class:`Splits` (162,770 train / 19,867 valid / 19,962 test in the official
    partition), 3×``size``×``size`` 8-bit images (kind ``discrete8``)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= CROP:
        raise ConfigError(f"option size must be an integer in [1, {CROP}], got {size!r}")
    spec = DataSpec(NAME, (3, size, size), "discrete8")
    partition = read_partition(folder)
    sets = {
        split: ImageSet(torch.from_numpy(cached_split(folder, split, names, size)), spec=spec)
        for split, names in partition.items()
    }
    return Splits(spec, sets["train"], sets["test"], valid=sets["valid"])


DATASETS.add(
    NAME,
    DatasetInfo(
        name=NAME,
        description="CelebA aligned faces, 140x140 centre crop resized to 3x64x64 "
        "(option size), 8-bit levels; download by hand",
        folder=NAME,
        files=FILES,
        load=load_celeba,
        md5={},
        fetch=None,
        options=("size",),
    ),
)
