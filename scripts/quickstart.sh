#!/usr/bin/env bash
# Install latentgap and run the main job: fetch MNIST if needed, train, evaluate test NLL, sample.
# torch is installed first, pinned, so pip never resolves a bare `torch` (gigabytes of CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || python -m pip install "torch==2.13.0"
python -m pip install -q -e .
exec latentgap quickstart "$@"
