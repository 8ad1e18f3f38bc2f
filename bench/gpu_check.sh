#!/usr/bin/env bash
# The one prepared GPU check (≤ 9 minutes), for a session the device tool lends a GPU to:
#   bash bench/gpu_check.sh            (run by the device tool's `run`, in the repository root)
# 1. every gpu-marked test in tests/ (engine: bf16 transformers, onnxruntime's CUDA provider; train: bf16 SFT,
#    the FSDP and ZeRO-3 accelerate configs, GRPO with vLLM colocated; tests/test_gpu_marks.py keeps this line
#    selecting all of them); 2. the Qwen2.5-VL-3B-shaped bf16 decode and batching benchmark;
# 3. ONNX Runtime's CUDA provider against transformers (greedy parity and speed).
# Each step has its own time limit, so one that hangs cannot eat the others' time; output goes
# to stdout and to $OUT/gpu_check.log when the device tool gives an $OUT folder.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
LOG="${OUT:-/tmp}/gpu_check.log"
export HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=offscreen
{
    nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
    echo "== gpu tests";   timeout 300 "$PY" -m pytest -m gpu -q -rs --durations=10 -p no:cacheprovider tests
    echo "== 3b decode";   timeout 150 "$PY" bench/gpu_decode.py --tokens 128 --frames 32
    echo "== onnx cuda";   timeout 90 "$PY" bench/onnx_vs_transformers.py --device cuda --shape 3b --tokens 64 --repeats 3
} 2>&1 | tee "$LOG"
