#!/usr/bin/env bash
# The README's "Own data, own networks" example, end to end, in a scratch folder (default
# ./own-data-example): PNGs + own nets (examples/mynets.py) → VAE and VAEPP runs → evaluate,
# sample, export, re-evaluate the export, FID between the PNGs and the samples, a comparison
# report. Needs latentgap installed with the mlflow extra, MNIST (to write the stand-in PNGs)
# and the Inception weights (README, "Where things come from").
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-own-data-example}
mkdir -p "$work" && cd "$work"
cp "$repo/examples/mynets.py" .
latentgap data verify mnist >/dev/null 2>&1 || latentgap data fetch mnist
python - <<'PY'
from pathlib import Path
from PIL import Image
from latentgap.data import get_dataset

train = get_dataset("mnist", binarize=False).train
Path("digits").mkdir(exist_ok=True)
for i in range(5000):  # stand-ins for your own images
    Image.fromarray(train.images[i, 0].numpy()).save(f"digits/{i:04d}.png")
PY
latentgap train --model vae --dataset folder:digits --set data.options.binarize=true \
  --arch mynets:small_conv --latent-dim 16 --epochs 10 --out runs/vae --logger mlflow --force
latentgap train --model vaepp --dataset folder:digits --set data.options.binarize=true \
  --arch mynets:small_conv --latent-dim 16 --epochs 12 --out runs/vaepp --force \
  --set model_options.mala_steps=200
latentgap evaluate runs/vae --nll --iw-samples 200
latentgap evaluate runs/vaepp --nll --iw-samples 200
latentgap sample runs/vaepp --num 64 --out vaepp-samples.png
latentgap export runs/vae
latentgap evaluate runs/vae/export --nll --iw-samples 200
latentgap fid digits runs/vae --num 500 --limit 500
latentgap report runs/vae runs/vaepp --out report/
