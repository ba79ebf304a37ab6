#!/usr/bin/env bash
# Reproduce the embedded default (morph4d/assets/default): synthetic training data -> our video autoencoder
# -> the small MMVDM with the `small` curriculum -> packed weights. Every stage resumes if re-run after a
# kill (finished sequences / checkpoints are kept). Wall times go to $OUT/timings.txt.
#   usage: scripts/train_default.sh [OUT_DIR]      (default out/default; needs `make venv` first)
set -euo pipefail
OUT=${1:-out/default}
M4D=${M4D:-.venv/bin/morph4d}
mkdir -p "$OUT"
source "$(dirname "$0")/stage.sh"   # stage NAME COMMAND...: run, append its wall time
# 1. data (training identities only; the held-out seeds 900000-900099 are refused by the loader)
stage synth_video  $M4D data synth --out "$OUT/data_video" --identities 80 --views 8 --frames 17 --res 96 --no-progress
stage synth_images $M4D data synth --out "$OUT/data_images" --modality multiview_images --identities 300 \
                        --first-seed 1000 --views 8 --res 96 --no-progress
# 2. the autoencoder
stage train_vae    $M4D train-vae --preset small --data "$OUT/data_video" --out "$OUT/vae_run"
# 3. the MMVDM on the frozen autoencoder (videos weighted 2:1 over single-frame multi-view images); the small preset
#    conditions on the reference projection (ours, issue 17: 76 channels; --no-reference-projection gives MVP4D's 59),
#    its first make (the preset's --projection-version 1: sheet 1 cm back, no mirror fill; README "Embedded default")
stage train_mmvdm  $M4D train --preset small --data "$OUT/data_video" --data "$OUT/data_images" --weights 2 1 \
                        --vae "$OUT/vae_run/vae" --out "$OUT/mmvdm_run"
# 4. pack: MMVDM EMA weights in bfloat16 + autoencoder in float32
$M4D model pack --mmvdm "$OUT/mmvdm_run/ema" --vae "$OUT/vae_run/vae" --out morph4d/assets/default \
    --note "scripts/train_default.sh $OUT"
