#!/usr/bin/env bash
# GPU acceptance check for a machine with an NVIDIA GPU. Installs nothing: it runs the
# project from this checkout (PYTHONPATH) with the Python it finds (.venv, else python3),
# in about 10 minutes, and prints one summary table:
#   1. which of torch CUDA, onnxruntime-gpu (CUDA provider), TensorRT and pycuda are present;
#   2. the `gpu` and `tensorrt` tests;
#   3. one san-parity per available GPU backend (TensorRT: fp32, fp16, INT8, INT8 with fp16 float parts) on a small synthetic split (a ResNet-18 SAN at
#      128x64 with random weights: torch on CUDA is the reference);
#   4. engines of other kinds: NHWC input, version-compatible;
#   5. the TensorRT lint against `trtexec --skipInference` on each exported graph (fp32, fp16,
#      INT8 Q/DQ, INT8 with fp16 float parts, the DeepStream graph): both must agree;
#   6. the INT8 tactics TensorRT picked for the Q/DQ file with fp16 float parts;
#   7. Triton serving the model repository, when `tritonserver` is installed (else a skip row);
#   8. the GPU rows of benchmarks/embed.py.
# Exit status 0 when nothing that ran failed (skipped rows do not count), else 1.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/san-gpu-check.XXXXXX")"
LOG="$WORK/log.txt"
ROWS=()
FAILED=0
row() { ROWS+=("$1|$2|$3"); [ "$2" = "FAIL" ] && FAILED=1; return 0; }
run() { "$@" >>"$LOG" 2>&1; }  # every command's output goes to the log, named in the table
last() { tail -n "${1:-1}" "$LOG" | tr '\n' ' ' | cut -c1-110; }

# -- 1. what is installed -------------------------------------------------------------------
eval "$("$PY" - <<'EOF'
import importlib
def have(name):
    try:
        return getattr(importlib.import_module(name), "__version__", "present")
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable here"
        return ""
import torch, onnxruntime
print(f"TORCH_CUDA='{torch.version.cuda if torch.cuda.is_available() else ''}'")
print(f"GPU_NAME='{torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}'")
print(f"ORT_CUDA='{onnxruntime.__version__ if 'CUDAExecutionProvider' in onnxruntime.get_available_providers() else ''}'")
print(f"TRT='{have('tensorrt')}'")
print(f"PYCUDA='{have('pycuda.driver') and have('pycuda')}'")
EOF
)"
row "torch CUDA" "$([ -n "$TORCH_CUDA" ] && echo present || echo absent)" "${GPU_NAME:-no CUDA device}${TORCH_CUDA:+, CUDA $TORCH_CUDA}"
row "onnxruntime-gpu" "$([ -n "$ORT_CUDA" ] && echo present || echo absent)" "${ORT_CUDA:-no CUDAExecutionProvider}"
row "TensorRT" "$([ -n "$TRT" ] && echo present || echo absent)" "${TRT:-import tensorrt failed}"
row "pycuda" "$([ -n "$PYCUDA" ] && echo present || echo absent)" "${PYCUDA:-import pycuda.driver failed}"
HAVE_TRT=$([ -n "$TRT" ] && [ -n "$PYCUDA" ] && [ -n "$TORCH_CUDA" ] && echo 1 || echo 0)

# -- 2. the gpu and tensorrt tests -----------------------------------------------------------
if run timeout 300 "$PY" -m pytest -q -p no:cacheprovider -m "gpu or tensorrt" -rs; then
    row "tests: gpu or tensorrt" "$(last | grep -q passed && echo pass || echo skip)" "$(last)"
else
    code=$?
    if [ "$code" -eq 5 ]; then row "tests: gpu or tensorrt" "skip" "none selected"; else row "tests: gpu or tensorrt" "FAIL" "$(last)"; fi
fi

# -- 3. parity per GPU backend ---------------------------------------------------------------
if [ -z "$TORCH_CUDA" ]; then
    row "parity" "skip" "no CUDA GPU for the torch reference"
else
    DATA="$WORK/synth"
    run "$PY" -m san.cli.synth --out "$DATA" --ids 60 --cameras 3 --height 128 --width 64
    run "$PY" - "$WORK/model.pt" <<'EOF'
import sys, torch
from san import ModelConfig, build_model, save_checkpoint
torch.manual_seed(0)
save_checkpoint(sys.argv[1], build_model(ModelConfig(backbone="resnet18").with_spec(height=128, width=64)).eval())
EOF
    run "$PY" -m export.cli --ckpt "$WORK/model.pt" --out "$WORK/model.onnx"
    parity() {  # name, then san-parity arguments
        local name=$1; shift
        if run timeout 240 "$PY" -m runtime.cli_parity --ckpt "$WORK/model.pt" --dataset synthetic --root "$DATA" \
                --draws 0 --device cuda --no-progress "$@"; then
            row "parity: $name" "pass" "$(grep -E '^(onnx|engine) ' "$LOG" | tail -n 1 | cut -c1-110)"
        else
            row "parity: $name" "FAIL" "$(last 2)"
        fi
    }
    if [ -n "$ORT_CUDA" ]; then parity "onnxruntime CUDA" --onnx "$WORK/model.onnx" --providers cuda,cpu
    else row "parity: onnxruntime CUDA" "skip" "onnxruntime has no CUDA provider"; fi
    if [ "$HAVE_TRT" = 1 ]; then
        for precision in fp32 fp16 int8 int8-fp16; do
            engine="$WORK/model.$precision.engine"
            case $precision in
                fp32) built=(--trt --engine "$engine") ;;
                fp16) built=(--trt --fp16 --engine "$engine") ;;
                int8) run "$PY" -m calibration.cli --onnx "$WORK/model.onnx" --images "$DATA/bounding_box_train" \
                          --target tensorrt --num 64 --out "$WORK/model.trt.int8.onnx" --no-progress
                      built=(--trt --int8 "$WORK/model.trt.int8.onnx" --engine "$engine") ;;
                int8-fp16) run "$PY" -m calibration.cli --onnx "$WORK/model.onnx" --images "$DATA/bounding_box_train" \
                          --target tensorrt --float-precision fp16 --num 64 --out "$WORK/model.trt-fp16.int8.onnx" --no-progress
                      built=(--trt --int8 "$WORK/model.trt-fp16.int8.onnx" --engine "$engine") ;;
            esac
            if run timeout 300 "$PY" -m export.cli --ckpt "$WORK/model.pt" --out "$WORK/model.onnx" "${built[@]}" \
                    --max-batch 64 --opt-batch 32; then
                parity "TensorRT $precision" --engine "$engine"
            else
                row "parity: TensorRT $precision" "FAIL" "engine build: $(last)"
            fi
        done
    else
        row "parity: TensorRT" "skip" "needs TensorRT, pycuda and a CUDA GPU"
    fi
fi

# -- 4.-7. other engines, the lint against trtexec, INT8 tactics, Triton ----------------------
TRTEXEC="$(command -v trtexec || ls /usr/src/tensorrt/bin/trtexec 2>/dev/null || true)"
if [ "$HAVE_TRT" != 1 ]; then
    row "engines: NHWC, version-compatible" "skip" "needs TensorRT, pycuda and a CUDA GPU"
else
    if run timeout 300 "$PY" -m export.cli --ckpt "$WORK/model.pt" --out "$WORK/model.nhwc.onnx" --nhwc \
            --trt --engine "$WORK/model.nhwc.engine" --max-batch 16 --overwrite; then
        parity "TensorRT NHWC" --engine "$WORK/model.nhwc.engine"
    else
        row "parity: TensorRT NHWC" "FAIL" "engine build: $(last)"
    fi
    if run timeout 300 "$PY" -m export.cli --ckpt "$WORK/model.pt" --out "$WORK/model.onnx" --trt \
            --trt-version-compatible --engine "$WORK/model.vc.engine" --max-batch 16 --overwrite; then
        parity "TensorRT version-compatible" --engine "$WORK/model.vc.engine"
    else
        row "parity: TensorRT version-compatible" "FAIL" "engine build: $(last)"
    fi
fi
if [ -z "$TRTEXEC" ] || [ -z "$TORCH_CUDA" ]; then
    row "lint vs trtexec" "skip" "needs trtexec and a CUDA GPU"
else
    run "$PY" -m export.cli --ckpt "$WORK/model.pt" --out "$WORK/model.onnx" --deepstream "$WORK/ds" \
        --deepstream-precision fp32 --overwrite
    for graph in "$WORK/model.onnx" "$WORK"/model.fp16.onnx "$WORK/model.trt.int8.onnx" "$WORK/model.trt-fp16.int8.onnx" \
            "$WORK/ds/san_reid.onnx"; do
        [ -f "$graph" ] || continue
        "$PY" -m export.cli --check-tensorrt "$graph" >>"$LOG" 2>&1; lint=$?
        "$TRTEXEC" --onnx="$graph" --skipInference --stronglyTyped >>"$LOG" 2>&1; built=$?
        if [ "$lint" -eq 0 ] && [ "$built" -eq 0 ] || [ "$lint" -ne 0 ] && [ "$built" -ne 0 ]; then
            row "lint vs trtexec: $(basename "$graph")" "pass" "lint exit $lint, trtexec exit $built: they agree"
        else
            row "lint vs trtexec: $(basename "$graph")" "FAIL" "lint exit $lint, trtexec exit $built: they disagree"
        fi
    done
    qdq="$WORK/model.trt-fp16.int8.onnx"
    if [ -f "$qdq" ] && run "$TRTEXEC" --onnx="$qdq" --skipInference --stronglyTyped --profilingVerbosity=detailed \
            --exportLayerInfo="$WORK/layers.json"; then
        int8=$(grep -o -i '"Int8' "$WORK/layers.json" | wc -l)
        row "INT8 tactics (fp16 float parts)" "$([ "$int8" -gt 0 ] && echo pass || echo FAIL)" \
            "$int8 INT8 tensor formats in the engine's layer info ($WORK/layers.json)"
    else
        row "INT8 tactics (fp16 float parts)" "FAIL" "$(last)"
    fi
fi
if ! command -v tritonserver >/dev/null; then
    row "Triton" "skip" "tritonserver is not installed"
elif run timeout 300 "$PY" -m export.cli --ckpt "$WORK/model.pt" --out "$WORK/model.onnx" --triton "$WORK/repo" \
        --overwrite $([ "$HAVE_TRT" = 1 ] && echo --trt --engine "$WORK/model.triton.engine" --max-batch 64); then
    tritonserver --model-repository "$WORK/repo" --http-port 8700 --grpc-port 8701 --metrics-port 8702 >>"$LOG" 2>&1 &
    server=$!
    ready=0
    for _ in $(seq 1 90); do
        if "$PY" -c "import urllib.request as u; u.urlopen('http://localhost:8700/v2/models/san/ready', timeout=2)" \
                2>/dev/null; then ready=1; break; fi
        sleep 1
    done
    kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
    row "Triton" "$([ "$ready" = 1 ] && echo pass || echo FAIL)" "model san $([ "$ready" = 1 ] && echo ready || echo 'not ready in 90 s')"
else
    row "Triton" "FAIL" "model repository: $(last)"
fi

# -- 8. the GPU rows of benchmarks/embed.py ---------------------------------------------------
if [ -z "$TORCH_CUDA" ]; then
    row "benchmarks/embed.py GPU rows" "skip" "no CUDA GPU"
elif run timeout 420 "$PY" benchmarks/embed.py --images 256 --work "$WORK/bench" \
        --only cuda-eager,cuda-compile,ort-cuda,trt-fp16,trt-int8; then
    cp "$LOG" "$WORK/bench.txt"
    while IFS= read -r line; do
        row "bench: $(echo "$line" | cut -d'|' -f2 | xargs)" "ran" "$(echo "$line" | cut -d'|' -f3-4,11 | tr -s ' ')"
    done < <(grep -E '^\| (GPU|reference)' "$WORK/bench.txt")
else
    row "benchmarks/embed.py GPU rows" "FAIL" "$(last)"
fi

# -- summary -------------------------------------------------------------------------------
printf '\n| check | status | detail |\n|---|---|---|\n'
for r in "${ROWS[@]}"; do IFS='|' read -r a b c <<<"$r"; printf '| %s | %s | %s |\n' "$a" "$b" "$c"; done
printf '\nfull output: %s\n' "$LOG"
exit "$FAILED"
