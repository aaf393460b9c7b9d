"""Hostile input: bad flags, bad ``--set`` values, unusable output paths, damaged checkpoints,
configs, metrics and dataset files, malicious pickles. Every case must exit 2 with one line on
stderr (what is wrong, how to fix it), no traceback, and leave the user's files as they were."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hostile_helpers import TOY, assert_refused, cli, copy_run, snapshot, train_toy
from latentgap.data.idx import write_idx
from latentgap.train import checkpoint as ckpt


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile-inputs") / "run"
    train_toy(out)
    return out


# --- flags and --set values (refused before any data is read) -------------------------------
TRAIN = ["train", "--out", "{tmp}/r", *TOY]
FLAG_CASES = [
    (["--seed", str(2**63)], "[0, 2**63)"),
    (["--seed", "-1"], "[0, 2**63)"),
    (["--lr", "inf"], "positive number"),
    (["--lr", "nan"], "positive number"),
    (["--weight-decay", "nan"], "≥ 0"),
    (["--weight-decay", "-0.1"], "≥ 0"),
    (["--grad-clip", "inf"], "positive number"),
    (["--sample-every", "-1"], "≥ 0"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "cuda:99"], "cuda"),
    (["--set", "train.grad_clip=-1"], "grad_clip"),
    (["--set", "data=5"], "config.data must be a section"),
    (["--set", "train=5"], "config.train must be a section"),
    (["--set", "model_options=3"], "config.model_options must be a section"),
    (["--set", "train.batch_size=1.5"], "config.train.batch_size must be an integer"),
    (["--set", "train.checkpoint_every=0"], "checkpoint_every must be a positive integer"),
    (["--set", "train.log_every=0"], "log_every must be a positive integer"),
    (["--set", "train.eval_batches=-1"], "eval_batches must be ≥ 0"),
    (["--set", "train.lr=NaN"], "config.train.lr must be a finite number, got nan"),
    (["--set", "train.lr=Infinity"], "config.train.lr must be a finite number, got inf"),
    (["--set", "train.weight_decay=NaN"], "train.weight_decay must be a finite number"),
    (["--set", "train.lr=1e-400"], "learning rate must be positive"),
    (["--set", "model_options.kl_weight=NaN"], "kl_weight must be a finite number"),
    (["--set", "model_options.latent_dim=1.5"], "latent_dim must be an integer"),
    (["--set", f"train.seed={2**63}"], "seed must be in [0, 2**63)"),
    (["--set", "train.seed=1e3"], "train.seed must be an integer"),
    (["--set", 'train.epochs="2"'], "train.epochs must be an integer"),
    (["--set", "train.progress=1"], "train.progress must be true or false"),
    (["--set", "train.device=5"], "train.device must be a string"),
    (["--set", "train.grad_clip=[1]"], "train.grad_clip must be a finite number or null"),
    (["--set", "data.limit_train=0"], "limit_train must be a positive integer"),
    (["--set", "data.options=[]"], "data.options must be a section"),
    (["--set", "train.nope=1"], "unknown option(s) nope"),
    (["--set", "novalue"], "KEY=VALUE"),
]


@pytest.mark.parametrize(("extra", "message"), FLAG_CASES, ids=lambda v: " ".join(v)[:40])
def test_bad_train_flags(tmp_path, capsys, extra, message):
    if extra[:2] == ["--device", "cuda:99"] and torch.cuda.device_count() > 99:
        pytest.skip("this machine has 100 GPUs")
    args = [a.replace("{tmp}", str(tmp_path)) for a in TRAIN] + extra
    assert_refused(cli(capsys, *args), message)
    assert not (tmp_path / "r").exists()  # nothing written for a refused run


def test_mps_where_there_is_none(tmp_path, capsys):
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        pytest.skip("this machine has an MPS device")
    assert_refused(cli(capsys, "train", "--out", tmp_path / "r", *TOY, "--device", "mps"), "MPS")


def test_cuda_where_there_is_none(tmp_path, capsys, toy_run):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    for args in (
        ["train", "--out", tmp_path / "r", *TOY, "--device", "cuda"],
        ["evaluate", toy_run, "--nll", "--device", "cuda"],
        ["sample", toy_run, "--device", "cuda:0"],
        ["report", toy_run, "--device", "cuda"],
    ):
        assert_refused(cli(capsys, *args), "no CUDA device")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "{run}", "--nll", "--seed", str(2**63)], "[0, 2**63)"),
        (["evaluate", "{run}", "--nll", "--logz-normal-samples", "-5"], "≥ 0"),
        (["evaluate", "{run}", "--nll", "--limit-train", "0"], "positive integer"),
        (["evaluate", "{run}", "--nll", "--device", "mps0"], "unknown device"),
        (["evaluate", "{run}"], "nothing to evaluate"),
        (["sample", "{run}", "--seed", "-3"], "[0, 2**63)"),
        (["sample", "{run}", "--num", "0"], "positive integer"),
        (["sample", "{run}", "--out", "{tmp}/grid.jpg"], "must be a .png"),
        (["sample", "{run}", "--num", "2000000000"], "GiB of memory"),
        (["sample", "{run}", "--sampler", "nope"], "no sampler 'nope'"),
        (["sample", "{run}", "--num", "4", "--nrow", "1000000000"], "more than --num"),
        (["plot", "{run}", "--latent-tsne", "/proc/latentgap.png"], "virtual file system"),
        (["reproduce", "vaepp-table4", "--out", "{tmp}/t", "--fid-extractor", "nosuch"], "nosuch"),
        (["reproduce", "vaepp-table4", "--out", "{tmp}/t", "--device", "tpu"], "unknown device"),
        (["reproduce", "nosuch", "--out", "{tmp}/t"], "unknown table"),
    ],
    ids=lambda v: " ".join(v)[:50] if isinstance(v, list) else v,
)
def test_bad_flags_of_other_commands(tmp_path, capsys, toy_run, args, message):
    before = snapshot(toy_run)
    args = [a.replace("{run}", str(toy_run)).replace("{tmp}", str(tmp_path)) for a in args]
    assert_refused(cli(capsys, *args), message)
    assert snapshot(toy_run) == before
    assert not (tmp_path / "t").exists()  # reproduce fails before it trains anything


# --- unusable output paths ---------------------------------------------------------------------
def _out_commands(run: Path) -> dict[str, list]:
    return {
        "train": ["train", *TOY, "--out"],
        "sample": ["sample", run, "--out"],
        "export": ["export", run, "--out"],
        "report": ["report", run, "--out"],
        "reproduce": ["reproduce", "vaepp-table4", "--budget", "smoke", "--out"],
    }


def _target(kind: str, tmp_path: Path, command: str) -> str:
    suffix = "/grid.png" if command == "sample" else ""
    if kind == "empty":
        return ""
    if kind == "file":
        (tmp_path / "file").write_text("mine")
        return str(tmp_path / "file") + ("" if command != "sample" else "")
    if kind == "under-file":
        (tmp_path / "file").write_text("mine")
        return str(tmp_path / "file" / "sub") + suffix
    if kind == "proc":
        return "/proc/latentgap-hostile" + suffix
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["empty", "file", "under-file", "proc"])
@pytest.mark.parametrize("command", ["train", "sample", "export", "report", "reproduce"])
def test_unusable_out(tmp_path, capsys, toy_run, command, kind):
    target = _target(kind, tmp_path, command)
    if command == "sample" and kind == "file":
        target = str(tmp_path)  # a folder where a PNG file is expected
    before = snapshot(tmp_path), snapshot(toy_run)
    line = assert_refused(cli(capsys, *_out_commands(toy_run)[command], target))
    assert "empty" in line or target in line or str(tmp_path) in line, line
    assert (snapshot(tmp_path), snapshot(toy_run)) == before


@pytest.mark.parametrize("command", ["train", "sample", "export", "report", "reproduce"])
def test_read_only_out(tmp_path, capsys, toy_run, monkeypatch, command):
    """A folder that cannot be written (simulated for root, who may write anywhere)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda p, m, **k: Path(p) != locked and real_access(p, m, **k)
        )
    target = locked / ("grid.png" if command == "sample" else "out")
    line = assert_refused(cli(capsys, *_out_commands(toy_run)[command], target), "not writable")
    assert str(locked) in line
    assert list(locked.iterdir()) == []


# --- damaged checkpoints and configs -------------------------------------------------------
class Payload:
    """Pickled code: unpickling it would run ``touch <sentinel>``."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def _damage_checkpoint(path: Path, how: str, tmp_path: Path) -> None:
    if how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(300))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif how == "folder":
        path.unlink()
        path.mkdir()
    elif how == "no-model":
        ckpt.save_checkpoint(path, {"epoch": 1, "config": {}})
    elif how == "model-not-tensors":
        ckpt.save_checkpoint(path, {"model": {"w": "x"}, "epoch": 1})
    elif how == "model-a-list":
        ckpt.save_checkpoint(path, {"model": [1, 2]})
    elif how == "pickle":
        torch.save({"format": 1, "model": Payload(tmp_path / "pwned")}, path)
    else:
        raise AssertionError(how)


CHECKPOINT_DAMAGE = [
    "empty",
    "garbage",
    "truncated",
    "folder",
    "no-model",
    "model-not-tensors",
    "model-a-list",
    "pickle",
]


@pytest.mark.parametrize("how", CHECKPOINT_DAMAGE)
@pytest.mark.parametrize("command", ["evaluate", "sample", "export", "resume", "report"])
def test_damaged_checkpoint(tmp_path, capsys, toy_run, command, how):
    run = copy_run(toy_run, tmp_path)
    _damage_checkpoint(run / "checkpoint.pt", how, tmp_path)
    before = snapshot(run)
    args = {
        "evaluate": ["evaluate", run, "--nll", "--iw-samples", "2", "--no-progress"],
        "sample": ["sample", run, "--out", tmp_path / "grid.png"],
        "export": ["export", run, "--out", tmp_path / "export"],
        "resume": ["train", "--out", run, "--resume", *TOY, "--epochs", "2"],
    }
    if command == "report":  # a page still comes out, with the reason instead of samples
        code, out, err = cli(capsys, "report", run, "--out", tmp_path / "page")
        assert code == 0 and "Traceback" not in err
        assert "could not load the model" in (tmp_path / "page" / "index.html").read_text()
    else:
        assert_refused(cli(capsys, *args[command]), "checkpoint")
        assert snapshot(run) == before
    assert not (tmp_path / "pwned").exists()  # weights_only=True: the payload never ran
    assert not (tmp_path / "export").exists() and not (tmp_path / "grid.png").exists()


def test_resume_needs_the_optimiser_state(tmp_path, capsys, toy_run):
    run = copy_run(toy_run, tmp_path)
    state = ckpt.load_checkpoint(run / "checkpoint.pt")
    state["epoch"] = "1"
    ckpt.save_checkpoint(run / "checkpoint.pt", {k: v for k, v in state.items() if k != "format"})
    assert_refused(
        cli(capsys, "train", "--out", run, "--resume", *TOY, "--epochs", "2"), "'epoch' is a str"
    )


CONFIG_DAMAGE = {
    "binary": b"\xff\xfe\x00\x81garbage",
    "invalid": b'{"model": "vae",',
    "a-list": b"[1, 2, 3]",
    "wrong-type": b'{"model": "vae", "train": {"batch_size": 1.5}}',
    "section-not-object": b'{"model": "vae", "data": 5}',
    "bad-range": b'{"model": "vae", "train": {"grad_clip": -1}}',
}


@pytest.mark.parametrize("how", sorted(CONFIG_DAMAGE))
@pytest.mark.parametrize("command", ["evaluate", "sample", "export", "report", "resume"])
def test_damaged_config_json(tmp_path, capsys, toy_run, command, how):
    run = copy_run(toy_run, tmp_path)
    (run / "config.json").write_bytes(CONFIG_DAMAGE[how])
    before = snapshot(run)
    args = {
        "evaluate": ["evaluate", run, "--nll", "--iw-samples", "2", "--no-progress"],
        "sample": ["sample", run, "--out", tmp_path / "grid.png"],
        "export": ["export", run, "--out", tmp_path / "export"],
        "report": ["report", run, "--out", tmp_path / "page"],
        "resume": ["train", "--out", run, "--resume", *TOY, "--lr", "0.5"],
    }[command]
    result = cli(capsys, *args)
    if command == "resume":  # the checkpoint's copy of the config still tells --lr apart
        assert_refused(result, "--lr", "train.lr=0.001")
    elif command == "report" and how not in ("binary", "invalid", "a-list"):
        assert result[0] == 0 and "Traceback" not in result[2]  # the page says what failed
        assert "could not load the model" in (tmp_path / "page" / "index.html").read_text()
    else:
        assert_refused(result, "config.json")
    assert snapshot(run) == before


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("eval.json", b"{not json", "eval.json cannot be read"),
        ("eval.json", b"[1]", "not a JSON object"),
        ("eval.json", b"\x00\xff\xfe", "eval.json cannot be read"),
        ("metrics.jsonl", b'{"split": "train"}\nnot json\n{"split": "epoch"}\n', "line 2"),
        ("metrics.jsonl", b"5\n", "line 1 is not a JSON object"),
        ("metrics.jsonl", b"\xff\xfe\x00\x81", "metrics.jsonl cannot be read"),
    ],
)
def test_report_on_damaged_run_files(tmp_path, capsys, toy_run, name, content, message):
    run = copy_run(toy_run, tmp_path)
    (run / name).write_bytes(content)
    assert_refused(cli(capsys, "report", run, "--out", tmp_path / "page"), message)


def test_report_skips_a_torn_last_metrics_line(tmp_path, capsys, toy_run):
    run = copy_run(toy_run, tmp_path)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"split": "train", "loss": 1')  # killed mid-write
    code, _, err = cli(capsys, "report", run, "--out", tmp_path / "page")
    assert code == 0, err


@pytest.mark.parametrize(
    ("results", "message"),
    [
        (b"{oops", "results.json cannot be read"),
        (b'"a string"', "not a JSON object"),
        (b'{"table": "vaepp-table4", "runs": [1]}', "'runs' is not an object"),
        (b'{"table": "vaepp-table4", "cells": {"a": 5}}', "'cells' is not an object"),
    ],
)
def test_report_on_damaged_results_json(tmp_path, capsys, results, message):
    folder = tmp_path / "table"
    folder.mkdir()
    (folder / "results.json").write_bytes(results)
    assert_refused(cli(capsys, "report", folder), message)
    assert list(folder.iterdir()) == [folder / "results.json"]


@pytest.mark.parametrize("key", ["../victim", "{abs}", "sub/run", ".."])
def test_report_reads_runs_inside_its_folder_only(tmp_path, capsys, toy_run, key):
    victim = copy_run(toy_run, tmp_path, "victim")
    folder = tmp_path / "table"
    copy_run(toy_run, folder, "sub/run")
    key = key.replace("{abs}", str(victim))
    results = {"table": "vaepp-table4", "runs": {key: {"status": "trained"}}, "cells": {}}
    (folder / "results.json").write_text(json.dumps(results))
    before = snapshot(tmp_path)
    assert_refused(cli(capsys, "report", folder), "not a folder inside")
    assert snapshot(tmp_path) == before  # no PNG written anywhere, no page either


# --- damaged dataset files ---------------------------------------------------------------------
def _mnist_folder(root: Path, n_train: int = 20, images: bytes | None = None) -> Path:
    folder = root / "mnist"
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", 10)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    if images is not None:
        (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
    return root


MNIST = ["--dataset", "mnist", "--arch", "mlp", "--latent-dim", "2", "--no-progress"]


@pytest.mark.parametrize(
    "header",
    [
        bytes([0, 0, 8, 3]) + np.array([2**32 - 1] * 3, ">u4").tobytes(),  # product overflows
        bytes([0, 0, 8, 255]) + np.zeros(255, ">u4").tobytes(),  # 255 dims of size 0
        bytes([0, 0, 8, 3]) + np.array([2**31, 2**31, 4], ">u4").tobytes(),  # int64: 2**64 = 0
    ],
    ids=["overflow", "255-dims", "wraps-to-zero"],
)
def test_idx_header_whose_dimensions_overflow(tmp_path, capsys, header):
    root = _mnist_folder(tmp_path / "data", images=header)
    args = ["train", "--out", tmp_path / "r", *MNIST, "--data-dir", root]
    assert_refused(cli(capsys, *args), "train-images-idx3-ubyte.gz is unusable")
    assert not (tmp_path / "r").exists()


def test_empty_training_set(tmp_path, capsys):
    root = _mnist_folder(tmp_path / "data", n_train=0)
    args = ["train", "--out", tmp_path / "r", *MNIST, "--data-dir", root]
    assert_refused(cli(capsys, *args), "no training images")
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_fashion_mnist_files_in_the_mnist_folder_warn(tmp_path, data_root):
    from latentgap.data import get_dataset

    fashion = data_root / "fashion-mnist"
    if not (fashion / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not found")
    (tmp_path / "mnist").symlink_to(fashion)
    with pytest.warns(UserWarning, match="train-images-idx3-ubyte.gz is fashion-mnist's"):
        get_dataset("mnist", data_dir=tmp_path)


def test_celeba_decompression_bomb(tmp_path, capsys, monkeypatch):
    from PIL import Image

    folder = tmp_path / "data" / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    for name in ("000001.jpg", "000002.jpg"):
        Image.new("RGB", (178, 218), (120, 30, 200)).save(folder / "img_align_celeba" / name)
    (folder / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 178 x 218 is over twice that
    args = [
        "train",
        "--out",
        tmp_path / "r",
        "--dataset",
        "celeba",
        "--data-dir",
        tmp_path / "data",
    ]
    assert_refused(cli(capsys, *args, "--no-progress"), "too large to decode safely")
    assert not list(folder.glob("cache-*"))


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import latentgap.train.run as run_module

    def huge(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] . DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 64000000000 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(run_module, "build_model", huge)
    args = ["train", "--out", tmp_path / "r", *TOY, "--latent-dim", "1000000000"]
    assert_refused(cli(capsys, *args), "out of memory", "59.6 GiB", "--latent-dim")
    assert not (tmp_path / "r").exists()


def test_plot_of_a_run_with_a_small_test_set(tmp_path, capsys, toy_run):
    run = copy_run(toy_run, tmp_path)
    code, _, err = cli(capsys, "plot", run, "--latent-tsne", tmp_path / "tsne.png")
    assert code == 0, err
    assert (tmp_path / "tsne.png").stat().st_size > 0
