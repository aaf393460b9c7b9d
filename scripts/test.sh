#!/usr/bin/env bash
# Install latentgap with its test extras and run ruff and the test suite.
# torch is installed first, pinned, so pip never resolves a bare `torch` (gigabytes of CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || python -m pip install "torch==2.13.0"
python -m pip install -q -e ".[test]"
python -m ruff check .
python -m ruff format --check .
python -m pytest -q "$@"
