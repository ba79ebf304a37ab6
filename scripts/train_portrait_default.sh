#!/usr/bin/env bash
# Reproduce IM-Portrait's embedded default (morph4d/assets/portrait): synthetic multi-view talking heads -> the
# `small` U-Net (64 px, 16 planes) trained by `morph4d train-mpi` (colour bootstrap, then geometry with L_mpi /
# L_side and the pseudo ground truth at large noise) -> EMA weights packed in bfloat16. Both stages resume if the
# script is re-run after a kill. Wall times go to $OUT/timings.txt (budget: <= 60 min on a 2-core CPU).
#   usage: scripts/train_portrait_default.sh [OUT_DIR]      (default out/portrait_default; needs `make venv`)
set -euo pipefail
OUT=${1:-out/portrait_default}
M4D=${M4D:-.venv/bin/morph4d}
mkdir -p "$OUT"
source "$(dirname "$0")/stage.sh"   # stage NAME COMMAND...: run, append its wall time
# 1. data: 60 training identities x 16 views x 17 frames at 64 px (held-out seeds are refused by the loader)
stage synth     $M4D data synth --out "$OUT/data" --identities 60 --views 16 --frames 17 --res 64 --no-progress
# 2. the U-Net: bootstrap (colour branch, L_mpi) then geometry (L_mpi 0.8 / L_side 0.2)
stage train_mpi $M4D train-mpi --preset small --data "$OUT/data" --out "$OUT/run" \
                    --bootstrap-steps "${BOOTSTRAP:-4500}" --geometry-steps "${GEOMETRY:-3500}"
# 3. pack: the EMA weights in bfloat16 + provenance
$M4D model pack-portrait "$OUT/run/unet" --out morph4d/assets/portrait --note "scripts/train_portrait_default.sh $OUT"
