#!/usr/bin/env bash
# Set up (if needed), then the end-to-end demo on the embedded scikit-learn digits dataset, for both
# model families: compile the committed checkpoints, simulate one sample on Lava with traces and a
# raster plot, and validate float vs integer (all 360 test digits) vs Lava (first samples, bit for bit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
nc=.venv/bin/neurocompile
mkdir -p out
set -x
# SpikingSSM: deterministic LIF spikes
$nc export examples/digits/ckpt.pt --target loihi2 -o out/digits.loihi2
$nc simulate out/digits.loihi2 --data digits --index 3 --record spikes,ssm,stream -o out/traces.npz --plot out/raster.png
$nc validate examples/digits/ckpt.pt out/digits.loihi2 --data digits --lava-samples 16 --json out/report.json
# P-SpikeSSM: stochastic spikes from a counter-based PRNG, the same on Lava and in the emulator
$nc export examples/pspikessm-digits-bi/ckpt.pt --target loihi2 -o out/pspikessm.loihi2
$nc simulate out/pspikessm.loihi2 --data digits --index 3 --seed 7 -o out/pspikessm-traces.npz --plot out/pspikessm-raster.png
$nc validate examples/pspikessm-digits-bi/ckpt.pt out/pspikessm.loihi2 --data digits --mc-passes 8 --lava-samples 4 --json out/pspikessm-report.json
