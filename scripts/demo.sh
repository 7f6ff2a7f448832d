#!/usr/bin/env bash
# Set up (if needed), then the end-to-end demo on the embedded scikit-learn digits dataset:
# compile the committed checkpoint, simulate one sample on Lava with traces and a raster plot,
# and validate float vs integer (all 360 test digits) vs Lava (first 16, bit for bit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
nc=.venv/bin/neurocompile
mkdir -p out
set -x
$nc export examples/digits/ckpt.pt --target loihi2 -o out/digits.loihi2
$nc simulate out/digits.loihi2 --dataset digits --index 3 --record spikes,ssm,stream -o out/traces.npz --plot out/raster.png
$nc validate examples/digits/ckpt.pt out/digits.loihi2 --dataset digits --lava-samples 16 --json out/report.json
