"""Statically binarised MNIST (Larochelle & Murray, 2011), from its ``.amat`` text files.

``binarized_mnist_{train,valid,test}.amat`` hold 50,000 / 10,000 / 10,000 images, one per line
as 784 space-separated ``0``/``1`` values (row-major 28×28). The binarisation was drawn once and
is fixed, so ``x == e`` (kind ``binary``, ``binarize="none"``); it is the "static MNIST" of the
NLL literature and has an official validation split.

Parsing is vectorised: the file is read as bytes and every ``0``/``1`` character is taken with
one boolean mask, after checking that the file contains nothing else, that no two digits touch
(so ``10`` is refused rather than read as two pixels) and that every line has 784 of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentgap.data.base import DATASETS, DatasetInfo, DataSpec, ImageSet, Splits
from latentgap.data.fetch import Attempts, fetch_files
from latentgap.data.root import file_error
from latentgap.errors import DataError

NAME = "static-mnist"
SPLITS = ("train", "valid", "test")
FILES: tuple[str, ...] = tuple(f"binarized_mnist_{split}.amat" for split in SPLITS)
SPEC = DataSpec(NAME, (1, 28, 28), "binary")
PIXELS = 28 * 28

MIRRORS: list[str] = [
    "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
    "https://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",
]

_ZERO, _LF = ord("0"), ord("\n")
_DIGIT = np.zeros(256, bool)
_DIGIT[[ord("0"), ord("1")]] = True
_ALLOWED = _DIGIT.copy()
_ALLOWED[[ord(" "), ord("\t"), ord("\r"), _LF]] = True


class AmatFormatError(ValueError):
    """Text that is not 784 binary values per line."""


def parse_amat(data: bytes) -> np.ndarray:
    """Decode the text of one ``.amat`` file into a (N, 784) uint8 array of 0/1.

    Raises :class:`AmatFormatError` naming the first offending line. Memory stays at a few
    bytes per character: no per-character integer arrays are built.
    """
    chars = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(chars == _LF)

    def line_at(position: int) -> int:  # 1-based line number of a character
        return int(np.searchsorted(newlines, position)) + 1

    bad = ~_ALLOWED[chars]
    if bad.any():
        at = int(np.argmax(bad))
        raise AmatFormatError(
            f"line {line_at(at)}: unexpected character {chr(chars[at])!r} "
            "(expected only 0, 1 and spaces)"
        )
    del bad
    is_digit = _DIGIT[chars]
    touching = is_digit[1:] & is_digit[:-1]
    if touching.any():
        line = line_at(int(np.argmax(touching)))
        raise AmatFormatError(f"line {line}: a value other than 0 or 1")
    del touching
    starts = np.concatenate([[0], newlines + 1])
    starts = starts[starts < len(chars)]
    if len(starts) == 0:
        raise AmatFormatError("no images in the file")
    # Digits per line; uint16 keeps the temporary small, and a line long enough to wrap
    # around is caught by the total count below.
    counts = np.add.reduceat(is_digit.view(np.uint8), starts, dtype=np.uint16)
    wrong = (counts > 0) & (counts != PIXELS)
    if wrong.any():
        line = int(np.argmax(wrong))
        raise AmatFormatError(f"line {line + 1}: {counts[line]} values, expected {PIXELS}")
    values = chars[is_digit] - np.uint8(_ZERO)
    if values.size == 0:
        raise AmatFormatError("no images in the file")
    if values.size != PIXELS * int(np.count_nonzero(counts)):
        raise AmatFormatError(f"a line has far more than {PIXELS} values")
    return values.reshape(-1, PIXELS)


def load_amat_split(folder: Path, file: str) -> np.ndarray:
    """The (N, 1, 28, 28) uint8 {0, 1} images of one ``.amat`` file in ``folder``."""
    path = folder / file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise file_error(NAME, folder, path, f"cannot be read ({exc})") from exc
    try:
        pixels = parse_amat(data)
    except AmatFormatError as exc:
        raise file_error(NAME, folder, path, str(exc)) from exc
    return pixels.reshape(-1, 1, 28, 28)


def load_static_mnist(folder: Path) -> Splits:
    """Static binarised MNIST :class:`Splits` (train, valid and test) from ``folder``.

    The values are already 0/1, stored as uint8 0/1 and served as floats 0.0/1.0 with
    ``x == e``.
    """
    sets = {}
    for split, file in zip(SPLITS, FILES, strict=True):
        # Stored as 0/255 so that ImageSet's uint8 → [0, 1] scaling gives exact 0.0 / 1.0.
        images = torch.from_numpy(load_amat_split(folder, file) * np.uint8(255))
        sets[split] = ImageSet(images, None, spec=SPEC, binarize="none")
    return Splits(SPEC, sets["train"], sets["test"], valid=sets["valid"])


def fetch_static_mnist(folder: Path) -> None:
    """Download the three ``.amat`` files into ``folder`` (no published checksums exist;
    the files are checked by parsing them)."""
    attempts = Attempts()
    failed = fetch_files(folder, FILES, MIRRORS, {}, attempts)
    if failed:
        raise DataError(f"could not download {', '.join(failed)}; tried: {attempts.summary()}")
    for file in FILES:
        load_amat_split(folder, file)


DATASETS.add(
    NAME,
    DatasetInfo(
        name=NAME,
        description="statically binarised MNIST (Larochelle & Murray), 50k/10k/10k 1x28x28 "
        "with a validation split",
        folder=NAME,
        files=FILES,
        load=load_static_mnist,
        md5={},
        fetch=fetch_static_mnist,
        options=(),
    ),
)
