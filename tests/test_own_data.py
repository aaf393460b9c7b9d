"""Own data: ``folder:PATH`` image folders and ``npy:PATH`` arrays, their options, their
one-line errors, and a run on them that reloads from config.json alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentgap.cli.main import main
from latentgap.data import get_dataset
from latentgap.errors import ConfigError, DataError


def write_pngs(folder, n, size=(6, 5), mode="L", seed=0, offset=0):
    """``n`` random PNGs of ``size`` (W, H) in ``folder``; returns their arrays by name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i in range(n):
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        name = f"{offset + i:03d}.png"
        Image.fromarray(a, mode=mode).save(folder / name)
        arrays[name] = a
    return arrays


def test_folder_with_split_and_class_subfolders(tmp_path):
    train_a = write_pngs(tmp_path / "train" / "a", 3)
    write_pngs(tmp_path / "train" / "b", 2, seed=1)
    write_pngs(tmp_path / "test" / "b", 2, seed=2)
    (tmp_path / "train" / "notes.txt").write_text("ignored")
    splits = get_dataset(f"folder:{tmp_path}")
    assert splits.spec.shape == (1, 5, 6) and splits.spec.kind == "continuous"
    assert len(splits.train) == 5 and len(splits.test) == 2 and splits.valid is None
    assert splits.train.labels.tolist() == [0, 0, 0, 1, 1] and splits.test.labels.tolist() == [1, 1]
    first = splits.train.images[0, 0].numpy()  # uint8, exact pixels
    np.testing.assert_array_equal(first, train_a["000.png"])
    batch = next(splits.train.batches(5))
    assert torch.allclose(batch.x[0, 0], torch.from_numpy(train_a["000.png"]).float() / 255)


def test_folder_random_split_resize_rgb_and_binarize(tmp_path):
    write_pngs(tmp_path, 8, size=(10, 10), mode="RGB")
    write_pngs(tmp_path, 2, size=(7, 9), mode="L", offset=8)  # other size, gray
    splits = get_dataset(f"folder:{tmp_path}", size=[4, 6], binarize=True, test_fraction=0.3)
    assert splits.spec.shape == (3, 4, 6) and splits.spec.kind == "binary"
    assert (len(splits.train), len(splits.test)) == (7, 3) and splits.train.labels is None
    x = next(splits.train.batches(7)).x
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    again = get_dataset(f"folder:{tmp_path}", size=[4, 6], binarize=True, test_fraction=0.3)
    assert torch.equal(again.test.images, splits.test.images)  # the split is seeded
    gray = get_dataset(f"folder:{tmp_path}", size=4, channels=1)
    assert gray.spec.shape == (1, 4, 4)


def test_npy_and_npz_layouts(tmp_path):
    rng = np.random.default_rng(0)
    nhw = rng.integers(0, 256, (20, 5, 4), dtype=np.uint8)
    np.save(tmp_path / "a.npy", nhw)
    splits = get_dataset(f"npy:{tmp_path / 'a.npy'}", test_fraction=0.25)
    assert splits.spec.shape == (1, 5, 4) and (len(splits.train), len(splits.test)) == (15, 5)
    kept = torch.cat([splits.train.images, splits.test.images])[:, 0]
    assert sorted(map(bytes, kept.numpy())) == sorted(map(bytes, nhw))  # nothing lost
    nhwc = rng.random((6, 4, 4, 3)).astype(np.float32)
    labels = np.arange(6)
    np.savez(tmp_path / "b.npz", x_train=nhwc, y_train=labels, x_test=nhwc[:2], y_test=labels[:2])
    splits = get_dataset(f"npy:{tmp_path / 'b.npz'}")
    assert splits.spec.shape == (3, 4, 4) and splits.train.images.dtype == torch.float32
    np.testing.assert_allclose(splits.train.images[1].numpy(), nhwc[1].transpose(2, 0, 1))
    assert splits.test.labels.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("make", "options", "error", "message"),
    [
        (lambda p: p.mkdir(), {}, DataError, "no PNG or JPEG images"),
        (lambda p: write_pngs(p, 1), {}, DataError, "too few to split"),
        (
            lambda p: (write_pngs(p, 2), write_pngs(p, 2, size=(3, 3), offset=2)),
            {},
            DataError,
            "different sizes.*data.options.size",
        ),
        (
            lambda p: (write_pngs(p, 3), (p / "bad.png").write_bytes(b"not a png")),
            {},
            DataError,
            r"cannot read image .*bad\.png",
        ),
        (lambda p: write_pngs(p / "train", 3), {}, DataError, "no test/"),
        (
            lambda p: (write_pngs(p, 3), write_pngs(p / "cls", 3)),
            {},
            DataError,
            "both directly and in subfolders",
        ),
        (lambda p: write_pngs(p, 3), {"size": 0}, ConfigError, "size must be"),
        (lambda p: write_pngs(p, 3), {"colour": 1}, ConfigError, "valid options: size"),
    ],
)
def test_folder_errors(tmp_path, make, options, error, message):
    folder = tmp_path / "imgs"
    make(folder)
    with pytest.raises(error, match=message):
        get_dataset(f"folder:{folder}", **options)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((4, 2, 5, 5, 5))}, "expected N×H×W"),
        ({"images": np.zeros((4, 5, 5, 5))}, "neither N×C×H×W nor N×H×W×C"),
        ({"images": np.full((4, 5, 5), 2.0)}, r"must lie in \[0, 1\]"),
        ({"images": np.zeros((4, 5, 5), np.int64)}, "dtype int64"),
        ({"train": np.zeros((4, 5, 5), np.uint8)}, "not both train and test"),
        ({"a": np.zeros((4, 5, 5)), "b": np.zeros((4, 5, 5))}, "name them train/test"),
        ({"train": np.zeros((4, 5, 5)), "test": np.zeros((2, 4, 4))}, "differ in shape"),
    ],
)
def test_npy_errors(tmp_path, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        get_dataset(f"npy:{path}")


def test_missing_and_corrupt_files_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    for name, message in [
        (f"npy:{tmp_path / 'bad.npy'}", "cannot read"),
        (f"npy:{tmp_path / 'gone.npy'}", "not found"),
        (f"folder:{tmp_path / 'gone'}", "not found"),
    ]:
        code = main(["train", "--dataset", name, "--out", str(tmp_path / "r"), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_run_on_own_folder_records_it_and_reloads(tmp_path, capsys, monkeypatch):
    """A relative folder: path is recorded absolute; evaluate from another directory finds it;
    moved files are found again through --data-dir."""
    data = tmp_path / "work" / "digits"
    write_pngs(data, 40, size=(4, 4))
    monkeypatch.chdir(tmp_path / "work")
    run = tmp_path / "run"
    args = ["train", "--dataset", "folder:digits", "--latent-dim", "2", "--epochs", "1"]
    args += ["--batch-size", "16", "--no-progress", "--out", str(run)]
    args += ["--set", "model_options.arch_options.hidden=[8]"]
    assert main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["name"] == f"folder:{data}"
    monkeypatch.chdir(tmp_path)
    evaluate = ["evaluate", str(run), "--nll", "--iw-samples", "5", "--no-progress"]
    assert main(evaluate) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["n_examples"] == 4 and first["dataset"] == f"folder:{data}"
    data.rename(tmp_path / "digits")
    assert main(evaluate) == 2 and "--data-dir" in capsys.readouterr().err
    assert main([*evaluate, "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["nll_nats"] == pytest.approx(first["nll_nats"])
