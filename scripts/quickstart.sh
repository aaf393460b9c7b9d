#!/usr/bin/env bash
# Install latentgap and run the main job: fetch MNIST if needed, train, evaluate test NLL, sample.
# torch is installed first, pinned, so pip never resolves a bare `torch` (gigabytes of CUDA wheels).
# The install is skipped when this Python already has this checkout installed with the same
# pyproject.toml; paths given to the job (--out, --data-dir) are relative to where you run it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || python=python
stamp="$repo/.install-stamp"
want="$("$python" -c 'import sys; print(sys.executable)') $(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)"
have=$(cat "$stamp" 2>/dev/null || true)
installed=$("$python" -c 'import latentgap, os; print(os.path.dirname(latentgap.__file__))' 2>/dev/null || true)
if [ "$want" != "$have" ] || [ "$installed" != "$repo/src/latentgap" ]; then
  "$python" -c "import torch" 2>/dev/null || "$python" -m pip install "torch==2.13.0"
  "$python" -m pip install -q -e "$repo"
  echo "$want" >"$stamp"
fi
exec "$python" -m latentgap quickstart "$@"
