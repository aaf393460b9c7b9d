"""The GPU check (issue 14) on the CPU: ``bench/gpu_check.py --device cpu --quick`` end to end,
so the script cannot rot unseen between the sessions that are lent a GPU; its time boxes; and
the refusal of both entry points on a machine without CUDA.

These numbers measure nothing (tiny sizes, on a CPU): the tests check structure and honesty.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentgap.reproduce.tables import TABLES

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
BENCH_MODULES = ("gpu_check", "gpu_jobs", "gpu_plan", "models", "throughput", "trainer_timing")


def env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-check") / "x.json"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_a_cpu_run_says_it_is_not_a_gpu_measurement(report) -> None:
    assert report["benchmark"] == "gpu-check" and report["device"] == "cpu"
    assert report["quick"] is True and "not a GPU measurement" in report["note"]
    assert report["machine"]["device"] == "cpu" and report["machine"]["gpu"] == {}
    assert "--device cpu" in report["command"]
    assert report["matmul_peak_tflops"]["fp32"] > 0 and "tf32" not in report["matmul_peak_tflops"]
    assert report["settings"]["batch_size"] == 4  # --quick on a CPU shrinks the batch


def test_training_variants_are_timed_or_skipped_with_a_reason(report) -> None:
    train = report["train"]
    assert set(train) == {"fp32", "bf16", "compile", "cudagraphs"}
    for variant in ("fp32", "bf16"):
        entry = train[variant]
        assert "error" not in entry, entry
        assert entry["preset"] == "vaepp-mnist" and entry["iterations"] == 2
        assert entry["seconds"] > 0 and entry["seconds_per_iteration"] > 0
        assert entry["epoch_images"] == 60_000
        assert entry["epoch_seconds"] == pytest.approx(60_000 / entry["images_per_s"])
        assert "60,000 images" in entry["extrapolation"]
        assert entry["peak_memory_bytes"] is None  # CUDA only, and the JSON says so
    assert train["bf16"]["precision"] == "bf16" and train["fp32"]["precision"] == "fp32"
    assert train["fp32"]["gflop_per_iteration"] > 0 and train["fp32"]["tflops_counted"] > 0
    assert "CUDA" in train["cudagraphs"]["skipped"] and "--variants" in train["compile"]["skipped"]
    target = report["target"]
    assert target["epoch_seconds"] == 5.0 and target["best_epoch_seconds"] > 0


def test_ais_nll_and_per_epoch_extras_are_timed(report) -> None:
    ev = report["vaepp_eval"]
    assert "error" not in ev, ev
    assert ev["ais"]["grad_evals_per_s"] > 0 and ev["ais"]["gflop_per_grad_eval"] > 0
    assert ev["nll"]["images_per_s"] > 0 and ev["nll"]["finite"]
    extras = ev["per_epoch_extras"]
    for key in ("sample_grid_seconds", "epoch_ais_seconds", "test_loss_seconds"):
        assert extras[key] > 0, key
    assert ev["full_budget_evaluation"]["repeats"] == 10


def test_the_plan_covers_every_table_and_says_what_it_did_not_measure(report) -> None:
    tables = report["plan"]["tables"]
    assert set(tables) == set(TABLES.names())
    measured = []
    for name, table in tables.items():
        keys = {cell.run.key for cell in TABLES.get(name).cells}
        assert {row["run"] for row in table["runs"]} == keys
        for row in table["runs"]:
            assert row["epochs"] == sum(p["epochs"] for p in row["phases"])
            if row["gpu_hours"] is None:
                assert row["not_measured"]
            else:
                measured.append(row)
        assert table["complete"] == (table["gpu_hours"] is not None)
    # --quick times one configuration, the paper's VAEPP MNIST run's (both phases), which the
    # other 1×28×28 dynamically binarised VAEPP runs share (their latent sizes differ)
    first = "vaepp-table1/vaepp-mnist"
    assert {r["timed_as"] for r in measured} == {first}
    assert {"vaepp-mnist", "vaepp-fashion-mnist", "vaepp-omniglot"} <= {r["run"] for r in measured}
    (row,) = [r for r in measured if r["run"] == "vaepp-mnist"]
    assert row["gpu_hours"] > 0 and row["gpu_hours_with_extras"] > row["gpu_hours"]
    assert [p["phase"] for p in row["phases"]] == ["vae", "latent-gan"]
    (omniglot,) = [r for r in measured if r["run"] == "vaepp-omniglot"]
    assert omniglot["train_images"] == 24_345  # each run's own training set size
    timing = report["plan"]["timings"][first]
    assert timing["runs_sharing_it"] == len(measured)
    assert "latent_dim" not in timing["timing_key"]["model_options"]
    skipped = [v for k, v in report["plan"]["timings"].items() if k != first]
    assert skipped and all("--quick" in v["not_measured"] for v in skipped)


@pytest.fixture
def gpu_check():
    """bench/gpu_check.py imported in this process, and bench/ taken off sys.path afterwards."""
    path, modules = list(sys.path), set(sys.modules)
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path[:] = path
    for name in BENCH_MODULES:
        if name not in modules:
            sys.modules.pop(name, None)


def child(code: str):
    """A command writing nothing but running ``code`` (``RESULT``: the result path)."""
    return lambda result: [sys.executable, "-c", f"RESULT = {str(result)!r}\n{code}"]


def test_a_failing_job_records_its_error(gpu_check) -> None:
    out = gpu_check.run_isolated(child("import sys; sys.exit('boom: no kernel image')"), 30)
    assert out["error"] == "boom: no kernel image" and out["job_seconds"] > 0


def test_a_job_past_its_time_box_is_killed_with_its_children_and_keeps_partial_results(
    gpu_check,
) -> None:
    code = (
        "import json, subprocess, time\n"
        "grandchild = subprocess.Popen(['sleep', '60'])\n"
        "json.dump({'done': 1, 'grandchild': grandchild.pid}, open(RESULT, 'w'))\n"
        "time.sleep(60)\n"
    )
    t0 = time.perf_counter()
    out = gpu_check.run_isolated(child(code), 3)
    assert time.perf_counter() - t0 < 20
    assert out["error"].startswith("timed out after 3 s") and out["done"] == 1
    time.sleep(0.2)
    status = Path(f"/proc/{out['grandchild']}/status")
    if status.exists():  # gone, or a zombie waiting for its reaper: either way not running
        assert "\nState:\tZ" in status.read_text()


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, str(SCRIPT)],
        ["bash", str(REPO / "scripts" / "gpu-check.sh")],
    ],
    ids=["gpu_check.py", "gpu-check.sh"],
)
def test_without_cuda_both_entry_points_exit_2_with_one_line(command) -> None:
    proc = subprocess.run(
        command,
        env=env(CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "torch.cuda.is_available() is false" in lines[0], proc.stderr
