#!/usr/bin/env bash
# The GPU check of issue 14 in one command, on a machine with a CUDA GPU (docs/benchmarks.md,
# "GPU check"): the CUDA-only tests (`pytest -m cuda`), then bench/gpu_check.py, which writes
# bench/results/gpu-check-<hostname>.json. Every stage has its own time limit and the whole run
# stays under $GPU_CHECK_LIMIT_S seconds (default 470: 8 minutes less a margin).
#
#   bash scripts/gpu-check.sh                  # a fresh venv: torch 2.13.0, then latentgap[test]
#   PYTHON=python3 bash scripts/gpu-check.sh   # that interpreter as it is: its own (CUDA) torch,
#                                              # this checkout's src/ on PYTHONPATH, no installs
#
# `pip install torch==2.13.0` gets the CUDA build from PyPI on a Linux GPU machine; on the
# project's CPU dev machines the same pin is satisfied by a local CPU wheel. A machine that cannot
# reach PyPI needs PYTHON= an interpreter that already has a CUDA torch and latentgap's
# dependencies (numpy, tqdm, pillow, safetensors, scikit-learn, matplotlib, pytest, scipy).
# Further arguments go to bench/gpu_check.py (--quick, --out PATH, --variants fp32,bf16, ...).
# Exit status: 0 every stage passed; 2 no CUDA device; 1 a stage failed or ran out of time.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
limit=${GPU_CHECK_LIMIT_S:-470}
start=$SECONDS
failed=()

left() { echo $((limit - (SECONDS - start))); }

# stage NAME CAP COMMAND...: COMMAND with a limit of CAP seconds or what is left, if less
stage() {
  local name=$1 cap=$2 t rc
  shift 2
  t=$(left)
  ((t > cap)) && t=$cap
  if ((t < 10)); then
    echo "gpu-check: $name not run: the ${limit} s limit is spent" >&2
    failed+=("$name")
    return 1
  fi
  echo "gpu-check: $name (limit ${t} s)" >&2
  timeout --kill-after=10 "$t" "$@"
  rc=$?
  if ((rc == 124 || rc == 137)); then
    echo "gpu-check: $name timed out after ${t} s" >&2
  elif ((rc != 0)); then
    echo "gpu-check: $name failed (exit $rc)" >&2
  fi
  ((rc == 0)) || failed+=("$name")
  return "$rc"
}

# exit 2 with one line unless $py's torch sees a CUDA device
require_cuda() {
  local out rc
  out=$("$py" -c 'import sys, torch
ok = torch.cuda.is_available()
print(torch.cuda.get_device_name(0) if ok else f"torch {torch.__version__}")
sys.exit(0 if ok else 3)' 2>&1)
  rc=$?
  if ((rc == 3)); then
    echo "gpu-check: no CUDA device: torch.cuda.is_available() is false ($out)" >&2
    exit 2
  elif ((rc != 0)); then
    echo "gpu-check: $py cannot import torch: ${out##*$'\n'}" >&2
    exit 1
  fi
  echo "gpu-check: $out, $("$py" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')" >&2
}

if [[ -n "${PYTHON:-}" ]]; then
  py=$PYTHON
  export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
  require_cuda
else
  venv=$(mktemp -d "${TMPDIR:-/tmp}/latentgap-gpu-check.XXXXXX")
  trap 'rm -rf "$venv"' EXIT
  python3 -m venv "$venv" || exit 1
  py="$venv/bin/python"
  if ! stage install-torch 240 "$py" -m pip install -q "torch==2.13.0"; then
    echo "gpu-check: could not install torch (no PyPI here?); rerun with PYTHON=<a Python with CUDA torch>" >&2
    exit 1
  fi
  require_cuda
  stage install-latentgap 90 "$py" -m pip install -q -e "$repo[test]" || exit 1
fi

stage cuda-tests 120 "$py" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider
budget=$(($(left) - 25))
stage gpu-bench $((budget + 20)) "$py" bench/gpu_check.py --budget-s "$budget" "$@"

echo "gpu-check: $((SECONDS - start)) s in all${failed[*]:+; failed: ${failed[*]}}" >&2
((${#failed[@]} == 0)) || exit 1
