#!/usr/bin/env bash
# Build a brand-new virtual environment in a temporary folder (no system site packages), install
# torch 2.13.0 first (pinned, so pip never resolves a bare `torch` into gigabytes of CUDA wheels),
# then latentgap with its test extras, and run ruff and the test suite from there. Nothing installed
# by hand on this machine can hide a missing dependency. Arguments are passed to pytest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || python=python
venv=$(mktemp -d "${TMPDIR:-/tmp}/latentgap-test-venv.XXXXXX")
trap 'rm -rf "$venv"' EXIT
"$python" -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q "torch==2.13.0"
"$py" -m pip install -q -e "$repo[test]"
cd "$repo"
"$py" -m pip check
"$py" -m ruff check .
"$py" -m ruff format --check .
PATH="$venv/bin:$PATH" "$py" -m pytest -q "$@"
