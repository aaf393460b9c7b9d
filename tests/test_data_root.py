"""Where datasets are looked for, the registry-level API and the shared file helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from latentgap.data import (
    DATASETS,
    default_data_root,
    fetch_dataset,
    get_dataset,
    resolve_dataset_dir,
    root,
    verify_dataset,
)
from latentgap.data.idx import write_idx
from latentgap.data.root import atomic_output, find_file
from latentgap.errors import ConfigError, DataError


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Path:
    """No LATENTGAP_DATA, HOME in tmp, and a private system data folder."""
    monkeypatch.delenv("LATENTGAP_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(root, "SYSTEM_DATA_DIRS", (tmp_path / "system",))
    return tmp_path


def write_fashion(folder: Path) -> None:
    for prefix, n in (("train", 3), ("t10k", 2)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", [[[0] * 28] * 28] * n)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", [1] * n)


def test_root_precedence_flag_env_cache(isolated, monkeypatch):
    info = DATASETS.get("mnist")
    cache = isolated / "home" / ".cache" / "latentgap"
    assert default_data_root() == cache
    assert resolve_dataset_dir(info) == cache / "mnist"
    monkeypatch.setenv("LATENTGAP_DATA", str(isolated / "env"))
    assert default_data_root() == isolated / "env"
    assert resolve_dataset_dir(info) == isolated / "env" / "mnist"
    assert resolve_dataset_dir(info, isolated / "flag") == isolated / "flag" / "mnist"
    assert resolve_dataset_dir(info, str(isolated / "flag")) == isolated / "flag" / "mnist"


def test_system_dir_is_searched_after_the_root(isolated):
    info = DATASETS.get("fashion-mnist")
    system = isolated / "system" / "fashion-mnist"
    write_fashion(system)
    assert resolve_dataset_dir(info, isolated / "flag") == system
    assert len(get_dataset("fashion-mnist", isolated / "flag").train) == 3
    # a complete copy in the root wins over the system one
    write_fashion(isolated / "flag" / "fashion-mnist")
    assert resolve_dataset_dir(info, isolated / "flag") == isolated / "flag" / "fashion-mnist"
    # an incomplete copy in the root does not
    (isolated / "flag" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert resolve_dataset_dir(info, isolated / "flag") == system


def test_fetch_uses_an_existing_verified_copy(isolated, monkeypatch):
    from latentgap.data import fetch, idx, verify

    system = isolated / "system" / "fashion-mnist"
    write_fashion(system)
    for name in idx.IDX_FILES:
        monkeypatch.setitem(idx.FASHION_MNIST_MD5, name, verify.decoded_md5(system / name))

    def no_download(url, timeout):
        raise AssertionError("nothing should be downloaded")

    monkeypatch.setattr(fetch, "open_url", no_download)
    assert fetch_dataset("fashion-mnist", isolated / "flag") == system
    assert all(check.ok for check in verify_dataset("fashion-mnist", isolated / "flag"))


def test_broken_system_copy_hint_points_at_default_root(isolated):
    system = isolated / "system" / "fashion-mnist"
    write_fashion(system)
    (system / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DataError, match=r"run `latentgap data fetch fashion-mnist` \(downloads"):
        get_dataset("fashion-mnist")


def test_uncompressed_twin_is_found(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    assert find_file(tmp_path, "train-images-idx3-ubyte.gz") == tmp_path / "train-images-idx3-ubyte"
    assert find_file(tmp_path, "other.gz") is None


def test_unknown_name_and_option():
    with pytest.raises(ConfigError, match="unknown dataset 'mnsit'.*mnist"):
        get_dataset("mnsit")
    with pytest.raises(ConfigError, match=r"no option 'binarise'; valid options: binarize"):
        get_dataset("mnist", binarise=False)
    with pytest.raises(ConfigError, match="valid options: none"):
        get_dataset("cifar10", size=3)


def test_every_dataset_is_described():
    expected = {
        "mnist",
        "fashion-mnist",
        "static-mnist",
        "omniglot",
        "cifar10",
        "celeba",
        "toy-images",
        "mixture-2d",
    }
    assert expected <= set(DATASETS.names())
    for name, info in DATASETS.items():
        assert info.name == name and info.description
        assert set(info.md5) <= set(info.files)
        assert bool(info.files) == bool(info.folder)


def test_generated_sets_need_no_files(isolated):
    assert verify_dataset("toy-images") == []
    assert fetch_dataset("mixture-2d", isolated / "flag") == isolated / "flag"
    assert not (isolated / "flag").exists()


def test_atomic_output(tmp_path):
    dest = tmp_path / "sub" / "file.bin"
    with atomic_output(dest) as tmp:
        tmp.write_bytes(b"done")
        assert not dest.exists()
    assert dest.read_bytes() == b"done"
    umask = os.umask(0o022)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would make it
    with pytest.raises(RuntimeError), atomic_output(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert dest.read_bytes() == b"done"
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]
