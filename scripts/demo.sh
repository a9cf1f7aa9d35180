#!/usr/bin/env bash
# The main job on the shipped 8-bit model: build, verify bit-exact on real test windows, estimate, summarise.
set -euo pipefail
cd "$(dirname "$0")/.."
HWGEN=.venv/bin/hwgen
MODEL=${MODEL:-models/pm25_w8.pt}
OUT=${OUT:-build/demo_w8}
WINDOWS=${WINDOWS:-256}
$HWGEN eval "$MODEL"
$HWGEN build "$MODEL" --board xc7s15 --parallel auto --out "$OUT"
$HWGEN sim "$OUT" --windows "$WINDOWS" --stall 0.1
$HWGEN estimate "$OUT"
$HWGEN report "$OUT"
