#!/usr/bin/env bash
# The main job, end to end on the built-in synthetic data set (CPU; training, the cpu-demo
# preset, is most of it; the README gives the whole script's time):
#   synthetic data -> san-train (cpu-demo preset) -> san-export (ONNX, self-verified)
#   -> san-calibrate (INT8 Q/DQ on the training split) -> san-embed (a folder)
#   -> san-parity (CMC/mAP of PyTorch vs ONNX fp32 vs ONNX INT8; fails on a breach).
# Sets up (or reuses) .venv first. Re-running reuses finished steps; OUT=dir picks the folder.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
OUT="${OUT:-runs/demo}"
DATA="$OUT/synthetic"

step() { printf '\n== %s\n' "$*"; }

step "model: the SAN the cpu-demo preset trains (the paper's ResNet-50 at 256x128: san-info)"
san-info --preset cpu-demo | tail -10

if [ -f "$OUT/model.pt" ]; then
    step "train: reusing $OUT/model.pt"
elif [ -f "$OUT/last.pt" ]; then
    step "train: resuming $OUT"
    san-train --preset cpu-demo --out "$OUT" --resume
else
    step "train: cpu-demo preset on the synthetic set (untrained epoch-0 mAP first)"
    san-train --preset cpu-demo --out "$OUT"
fi

step "export: ONNX with the input contract, verified against PyTorch"
san-export --ckpt "$OUT/model.pt" --out "$OUT/model.onnx"

step "calibrate: INT8 Q/DQ on training images (query/gallery refused)"
san-calibrate --onnx "$OUT/model.onnx" --images "$DATA/bounding_box_train" \
    --exclude "$DATA/query" --exclude "$DATA/bounding_box_test" --out "$OUT/model.int8.onnx" --overwrite

step "embed: the query folder with the ONNX model"
san-embed "$DATA/query" --model "$OUT/model.onnx" --out "$OUT/query_embeddings" --overwrite --no-progress

step "parity: PyTorch vs ONNX fp32 vs ONNX INT8 (CMC/mAP)"
status=0
san-parity --ckpt "$OUT/model.pt" --onnx "$OUT/model.onnx" --int8 "$OUT/model.int8.onnx" \
    --report "$OUT/parity.json" --markdown "$OUT/parity.md" || status=$?
printf '\nreport: %s\n' "$OUT/parity.md"
[ "$status" -eq 0 ] || echo "parity gate breached (exit $status): the report names each threshold" >&2
exit "$status"
