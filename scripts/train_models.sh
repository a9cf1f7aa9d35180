#!/usr/bin/env bash
# Reproduce the shipped checkpoints in models/ (about 20 minutes on a 2-core machine).
set -euo pipefail
HWGEN=${HWGEN:-.venv/bin/hwgen}
$HWGEN train --dataset pm25 --fp32 --seed 0 --out models/pm25_fp32.pt "$@"
for bits in 8 6 4; do
  $HWGEN train --dataset pm25 --bits "$bits" --init-from models/pm25_fp32.pt --seed 0 --out "models/pm25_w$bits.pt" "$@"
done
