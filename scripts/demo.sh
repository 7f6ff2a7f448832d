#!/usr/bin/env bash
# Set up (if needed), then the end-to-end demo on the embedded scikit-learn digits dataset, for both
# model families: compile the committed checkpoints, simulate one sample on Lava with traces and a
# raster plot, and validate float vs integer (all 360 test digits) vs Lava (first samples, bit for bit).
#   bash scripts/demo.sh                           # Python 3.10 + Lava: ./.venv
#   NEUROCOMPILE_PYTHON=3.12 bash scripts/demo.sh  # current Python, no Lava: the bit-exact emulator instead
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
version="${NEUROCOMPILE_PYTHON:-3.10}"
if [ "$version" = 3.10 ]; then
  nc=.venv/bin/neurocompile; engine=lava; lava16=16; lava4=4
else   # Lava 0.10 imports on Python 3.10 only
  nc=".venv-$version/bin/neurocompile"; engine=emulator; lava16=0; lava4=0
fi
mkdir -p out
set -x
# SpikingSSM: deterministic LIF spikes
$nc export examples/digits/ckpt.pt --target loihi2 -o out/digits.loihi2
$nc simulate out/digits.loihi2 --data digits --index 3 --engine $engine --record spikes,ssm,stream -o out/traces.npz --plot out/raster.png
$nc validate examples/digits/ckpt.pt out/digits.loihi2 --data digits --lava-samples $lava16 --json out/report.json
# P-SpikeSSM: stochastic spikes from a counter-based PRNG, the same on Lava and in the emulator
$nc export examples/pspikessm-digits-bi/ckpt.pt --target loihi2 -o out/pspikessm.loihi2
$nc simulate out/pspikessm.loihi2 --data digits --index 3 --engine $engine --seed 7 -o out/pspikessm-traces.npz --plot out/pspikessm-raster.png
$nc validate examples/pspikessm-digits-bi/ckpt.pt out/pspikessm.loihi2 --data digits --mc-passes 8 --lava-samples $lava4 --json out/pspikessm-report.json
