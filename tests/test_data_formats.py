"""The other formats, on small files written here in the real layout, and the generated sets."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentgap.data import ImageSet, celeba, cifar, get_dataset
from latentgap.data.amat import AmatFormatError, parse_amat
from latentgap.data.base import DataSpec
from latentgap.data.fetch import fetch_dataset
from latentgap.data.synthetic import MIXTURE_STD, mixture_2d_log_prob, mixture_2d_means
from latentgap.errors import ConfigError, DataError

# --- static MNIST (.amat) ---------------------------------------------------------------------


def write_amat(path: Path, images: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(str(v) for v in row) for row in images.reshape(len(images), -1)]
    path.write_text("\n".join(lines) + "\n")


def test_static_mnist(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "static-mnist"
    sizes = {"train": 5, "valid": 3, "test": 2}
    images = {s: rng.integers(0, 2, (n, 28, 28)) for s, n in sizes.items()}
    for split, array in images.items():
        write_amat(folder / f"binarized_mnist_{split}.amat", array)
    data = get_dataset("static-mnist", tmp_path)
    assert data.spec.kind == "binary" and data.spec.shape == (1, 28, 28)
    assert (len(data.train), len(data.valid), len(data.test)) == (5, 3, 2)
    batch = next(data.valid.batches(3))
    assert torch.equal(batch.x, batch.e)
    assert torch.equal(batch.x[:, 0], torch.from_numpy(images["valid"]).float())


def test_amat_errors():
    row = " ".join(["0", "1"] * 392)
    assert parse_amat(f"{row}\r\n{row}\r\n\n".encode()).shape == (2, 784)
    with pytest.raises(AmatFormatError, match="line 2: 783 values"):
        parse_amat(f"{row}\n{row[:-2]}\n".encode())
    with pytest.raises(AmatFormatError, match="line 1: unexpected character '2'"):
        parse_amat(("2" + row[1:]).encode())
    with pytest.raises(AmatFormatError, match="line 2: a value other than 0 or 1"):
        parse_amat(f"{row}\n10{row[1:]}\n".encode())
    with pytest.raises(AmatFormatError, match="no images"):
        parse_amat(b"\n\n")


def test_amat_error_names_file(tmp_path):
    folder = tmp_path / "static-mnist"
    for split in ("train", "valid", "test"):
        write_amat(folder / f"binarized_mnist_{split}.amat", np.zeros((1, 784), int))
    (folder / "binarized_mnist_valid.amat").write_text("0.5 " * 784)
    with pytest.raises(DataError, match=r"binarized_mnist_valid\.amat is unusable.*'\.'"):
        get_dataset("static-mnist", tmp_path)


# --- Omniglot (chardata.mat) ------------------------------------------------------------------


def test_omniglot(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    train = rng.uniform(size=(6, 28, 28))
    train[0] = 0
    train[0, 2, 7] = 1.0  # row 2, column 7: tells row- from column-major
    test = rng.uniform(size=(4, 28, 28))
    columns = {  # MATLAB stores each image column-major, one image per column
        "data": train.reshape(6, -1, order="F").T,
        "testdata": test.reshape(4, -1, order="F").T,
        "target": np.eye(50)[:, [3, 1, 4, 1, 5, 9]],
    }
    (tmp_path / "omniglot").mkdir()
    scipy_io.savemat(tmp_path / "omniglot" / "chardata.mat", columns)
    data = get_dataset("omniglot", tmp_path)
    assert data.spec.kind == "binary" and data.train.binarize == "dynamic"
    assert (len(data.train), len(data.test)) == (6, 4)
    assert data.train.images[0, 0, 2, 7] == 1 and data.train.images[0].sum() == 1
    assert np.allclose(data.test.images[:, 0].numpy(), test)
    assert data.train.labels.tolist() == [3, 1, 4, 1, 5, 9] and data.test.labels is None
    batch = next(data.train.batches(6, seed=1))
    assert set(batch.x.unique().tolist()) <= {0.0, 1.0}


def test_omniglot_bad_file_and_missing_scipy(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    (tmp_path / "omniglot").mkdir()
    path = tmp_path / "omniglot" / "chardata.mat"
    scipy_io.savemat(path, {"data": np.zeros((784, 2)), "test": np.zeros((784, 2))})
    with pytest.raises(DataError, match="no variable 'testdata'"):
        get_dataset("omniglot", tmp_path)
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable MATLAB file"):
        get_dataset("omniglot", tmp_path)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(ConfigError, match="pip install scipy"):
        get_dataset("omniglot", tmp_path)


# --- CIFAR-10 (python pickles) ----------------------------------------------------------------


def write_cifar(folder: Path, n: int = 4, protocol: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    batches = folder / "cifar10" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        entry = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        with open(batches / name, "wb") as f:
            pickle.dump(entry, f, protocol=protocol)
        written[name] = data
    return written


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10(tmp_path, protocol):
    written = write_cifar(tmp_path, protocol=protocol)
    data = get_dataset("cifar10", tmp_path)
    assert data.spec.kind == "discrete8" and data.spec.shape == (3, 32, 32)
    assert (len(data.train), len(data.test)) == (20, 4)
    first = written["data_batch_1"][0]
    # rows are the R, G and B planes in turn
    assert np.array_equal(data.train.images[0, 1].numpy(), first[1024:2048].reshape(32, 32))
    assert np.array_equal(data.test.images.numpy().reshape(4, -1), written["test_batch"])
    batch = next(data.test.batches(4))
    assert torch.allclose(batch.x * 255, batch.x.mul(255).round())


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_refuses_malicious_pickle(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [Payload(marker)]}
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(pickle.dumps(evil))
    with pytest.raises(DataError, match=r"data_batch_3.*refusing to load global .*system"):
        get_dataset("cifar10", tmp_path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        cifar.safe_unpickle(pickle.dumps(eval))


def test_cifar10_wrong_content_is_clear(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"test_batch.*expected uint8 \(N, 3072\)"):
        get_dataset("cifar10", tmp_path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:-20])
    with pytest.raises(DataError, match="test_batch.*corrupt pickle"):
        get_dataset("cifar10", tmp_path)


def test_cifar10_fetch_from_archive(tmp_path, monkeypatch):
    write_cifar(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar10" / "cifar-10-batches-py", "cifar-10-batches-py")
        evil = tarfile.TarInfo("../escaped")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    md5s = {
        f"cifar-10-batches-py/{p.name}": hashlib.md5(p.read_bytes()).hexdigest()
        for p in (tmp_path / "src" / "cifar10" / "cifar-10-batches-py").iterdir()
    }
    monkeypatch.setattr(cifar, "ARCHIVE_URLS", [archive.as_uri()])
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    for name, md5 in md5s.items():
        monkeypatch.setitem(cifar.MD5, name, md5)
    folder = fetch_dataset("cifar10", tmp_path / "root")
    assert len(get_dataset("cifar10", tmp_path / "root").train) == 20
    assert not (folder.parent / "escaped").exists() and not (tmp_path / "escaped").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["cifar-10-batches-py"]
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", "0" * 32)
    with pytest.raises(DataError, match="could not download CIFAR-10.*wrong content"):
        fetch_dataset("cifar10", tmp_path / "other")


# --- CelebA (JPEGs) ---------------------------------------------------------------------------


def write_celeba(root: Path, splits: list[int]) -> Path:
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    lines = []
    for i, split in enumerate(splits, start=1):
        image = Image.new("RGB", (178, 218), (255, 0, 0))  # red outside the crop ...
        image.paste((0, 0, 255), (19, 39, 159, 179))  # ... blue inside the 140x140 centre
        image.save(folder / "img_align_celeba" / f"{i:06d}.jpg", quality=95)
        lines.append(f"{i:06d}.jpg {split}")
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_celeba_crop_resize_and_cache(tmp_path, monkeypatch):
    folder = write_celeba(tmp_path, [0, 0, 0, 1, 2, 2])
    data = get_dataset("celeba", tmp_path)
    assert data.spec.kind == "discrete8" and data.spec.shape == (3, 64, 64)
    assert (len(data.train), len(data.valid), len(data.test)) == (3, 1, 2)
    images = data.train.images.float()
    assert images[:, 2].mean() > 240 and images[:, 0].mean() < 15  # only the centre crop left
    assert sorted(p.name for p in folder.glob("cache-*")) == [
        "cache-64-test.npy",
        "cache-64-train.npy",
        "cache-64-valid.npy",
    ]

    def no_decoding(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(celeba, "decode_images", no_decoding)
    again = get_dataset("celeba", tmp_path)
    assert torch.equal(again.train.images, data.train.images)
    monkeypatch.undo()
    small = get_dataset("celeba", tmp_path, size=32)  # another size: its own cache
    assert small.spec.shape == (3, 32, 32) and (folder / "cache-32-train.npy").exists()
    with pytest.raises(ConfigError, match="size must be an integer"):
        get_dataset("celeba", tmp_path, size=200)


def test_celeba_errors(tmp_path):
    folder = write_celeba(tmp_path, [0, 1, 2])
    (folder / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataError, match="000002.jpg.*missing"):
        get_dataset("celeba", tmp_path)
    (folder / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="000002.jpg is unusable: not a usable image"):
        get_dataset("celeba", tmp_path)
    (folder / "list_eval_partition.txt").write_text("000001.jpg 7\n")
    with pytest.raises(DataError, match="line 1"):
        get_dataset("celeba", tmp_path)
    with pytest.raises(DataError, match="by hand.*img_align_celeba.zip"):
        fetch_dataset("celeba", tmp_path / "empty")


# --- generated sets and batching --------------------------------------------------------------


def test_toy_images():
    data = get_dataset("toy-images", n_train=64, n_test=16, seed=5)
    assert data.spec.shape == (1, 8, 8) and data.spec.kind == "binary"
    assert (len(data.train), len(data.test)) == (64, 16)
    again = get_dataset("toy-images", n_train=64, n_test=16, seed=5)
    other = get_dataset("toy-images", n_train=64, n_test=16, seed=6)
    assert torch.equal(data.train.images, again.train.images)
    assert not torch.equal(data.train.images, other.train.images)
    assert data.train.images.min() >= 0 and data.train.images.max() <= 1
    continuous = get_dataset("toy-images", binarize=False)
    assert continuous.spec.kind == "continuous" and len(continuous.train) == 512


def test_mixture_2d_matches_its_density():
    data = get_dataset("mixture-2d", n_train=4000, seed=1)
    assert data.spec.shape == (1, 1, 2) and data.spec.kind == "continuous"
    points = data.train.images.view(-1, 2)
    means = mixture_2d_means()
    # every point is near its component's mean; per-component spread is MIXTURE_STD
    offsets = points - means[data.train.labels]
    assert abs(offsets.std().item() - MIXTURE_STD) < 0.1 * MIXTURE_STD
    assert points.min() > 0 and points.max() < 1
    # the density integrates to 1 over [0, 1]^2 (grid quadrature)
    grid = torch.linspace(0, 1, 401, dtype=torch.float64)
    xy = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1)
    integral = mixture_2d_log_prob(xy).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(integral.item() - 1) < 1e-3


def test_batches_shard_disjointly_across_ranks():
    n, world = 103, 3
    spec = DataSpec("ids", (1, 1, 1), "continuous")
    data = ImageSet(torch.zeros(n, 1, 1, 1), torch.arange(n), spec=spec)
    shards = []
    for rank in range(world):
        ids = [
            b.y for b in data.batches(8, shuffle=True, seed=2, epoch=1, rank=rank, world_size=world)
        ]
        shards.append(torch.cat(ids))
    assert [len(s) for s in shards] == [n // world] * world
    together = torch.cat(shards)
    assert len(together.unique()) == len(together)  # disjoint
    counts = [len(list(data.batches(8, rank=r, world_size=world))) for r in range(world)]
    assert counts == [5] * world  # 34 images a rank: ranks stay in step
    # the same rank, seed and epoch give the same shard
    repeat = torch.cat([b.y for b in data.batches(8, shuffle=True, seed=2, epoch=1, world_size=3)])
    assert torch.equal(repeat, shards[0])
