"""``npy:PATH``: images stored as NumPy arrays (``.npy`` or ``.npz``) as a dataset.

Arrays are N×H×W (one channel), N×C×H×W or N×H×W×C (C = 1 or 3), of dtype uint8 (levels
0–255), bool, or float in [0, 1]. A ``.npy`` file holds one array, split at random
(``test_fraction``). A ``.npz`` file holds either

- ``train`` and ``test`` (optionally ``valid``), with optional labels ``train_labels``, ... ;
  or the Keras names ``x_train``, ``x_test`` (``y_train``, ``y_test``);
- or one image array (``images`` or ``x``, or the only array in the file), optional labels
  ``labels`` or ``y``, split at random.

Options: the common ``binarize``, ``test_fraction`` and ``split_seed`` (:mod:`~.sources`).
Files are read with ``allow_pickle=False``: no code in them is run.
"""

from __future__ import annotations

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
from latentgap.errors import DataError

SPLIT_KEYS = {
    "train": (("train", "train_labels"), ("x_train", "y_train")),
    "test": (("test", "test_labels"), ("x_test", "y_test")),
    "valid": (("valid", "valid_labels"), ("x_valid", "y_valid")),
}


def as_images(array: np.ndarray, where: str) -> Tensor:
    """``array`` as (N, C, H, W): uint8 stays uint8, bool and float in [0, 1] become float32."""
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if a.shape[1] not in (1, 3) and a.shape[3] in (1, 3):
            a = a.transpose(0, 3, 1, 2)  # N×H×W×C → N×C×H×W
        elif a.shape[1] not in (1, 3):
            raise DataError(
                f"{where} has shape {a.shape}: neither N×C×H×W nor N×H×W×C with C = 1 or 3"
            )
    else:
        raise DataError(f"{where} has shape {a.shape}; expected N×H×W, N×C×H×W or N×H×W×C images")
    if a.shape[0] == 0:
        raise DataError(f"{where} holds no images (shape {a.shape})")
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a))
    if a.dtype == np.bool_:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if np.issubdtype(a.dtype, np.floating):
        lo, hi = float(np.min(a)), float(np.max(a))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
            raise DataError(
                f"{where}: float images must lie in [0, 1], found values in [{lo:g}, {hi:g}]; "
                "divide by 255 or store uint8"
            )
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    raise DataError(f"{where} has dtype {a.dtype}; store uint8 (0–255) or float in [0, 1]")


def as_labels(array: np.ndarray | None, n: int, where: str) -> Tensor | None:
    if array is None:
        return None
    a = np.asarray(array)
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{where}: labels must be {n} integers, got {a.dtype} of shape {a.shape}")
    return torch.from_numpy(a.astype(np.int64))


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``.npy`` (key ``images``) or ``.npz`` file; DataError if unreadable."""
    path = Path(path)
    if path.suffix.lower() not in (".npy", ".npz"):
        raise DataError(f"{path} is not a .npy or .npz file")
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"images": loaded}
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read {path} ({type(err).__name__}: {err})") from None


def image_arrays(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """{split or "all": (images, labels)} found in the file (see the module docstring)."""
    arrays = read_arrays(path)
    found = {}
    for split, layouts in SPLIT_KEYS.items():
        for x_key, y_key in layouts:
            if x_key in arrays:
                found[split] = (arrays[x_key], arrays.get(y_key))
                break
    if found:
        if not {"train", "test"} <= set(found):
            raise DataError(
                f"{path} has {', '.join(sorted(found))} but not both train and test arrays"
            )
        return found
    for x_key, y_key in (("images", "labels"), ("x", "y")):
        if x_key in arrays:
            return {"all": (arrays[x_key], arrays.get(y_key))}
    if len(arrays) == 1:
        return {"all": (next(iter(arrays.values())), None)}
    raise DataError(
        f"{path} holds arrays {', '.join(sorted(arrays)) or '(none)'}; name them train/test "
        "(x_train/x_test), or store one array called images"
    )


def load_npy(
    path: Path,
    *,
    name: str,
    binarize: bool = False,
    test_fraction: float = 0.1,
    split_seed: int = 0,
) -> Splits:
    """The :class:`Splits` of an array file (see the module docstring)."""
    check_common(binarize, test_fraction, split_seed)
    parts = {}
    for split, (x, y) in image_arrays(path).items():
        where = f"{path}" if split == "all" else f"{path}[{split}]"
        images = as_images(x, where)
        parts[split] = (images, as_labels(y, images.shape[0], f"{where} labels"))
    shapes = {s: tuple(images.shape[1:]) for s, (images, _) in parts.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{path}: the splits' images differ in shape: {shapes}")
    if len({images.dtype for images, _ in parts.values()}) > 1:  # one storage type
        parts = {s: (im.float().div_(255) if im.dtype == torch.uint8 else im, y)
                 for s, (im, y) in parts.items()}  # fmt: skip
    spec = spec_for(name, next(iter(shapes.values())), binarize)
    if "all" in parts:
        images, labels = parts["all"]
        return random_split(
            images,
            labels,
            spec,
            test_fraction=test_fraction,
            split_seed=split_seed,
            source=str(path),
        )
    sets = {s: image_set(images, labels, spec) for s, (images, labels) in parts.items()}
    return Splits(spec, sets["train"], sets["test"], sets.get("valid"))


SOURCES.add(
    "npy",
    Source(
        "npy",
        "images in a .npy/.npz file (N×H×W, N×C×H×W or N×H×W×C; uint8 or float in [0, 1]); "
        "options binarize, test_fraction, split_seed",
        load_npy,
        COMMON_OPTIONS,
    ),
)
