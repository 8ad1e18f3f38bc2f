#!/usr/bin/env bash
# The one prepared GPU check (under 10 minutes), for a session the device tool lends a GPU to:
#   bash bench/gpu_fetch_wheels.sh      (here, once: the packages the GPU machine's image lacks, into .whl/)
#   bash bench/gpu_check.sh             (there: the device tool's `run` in the repository root, carry [".whl"])
# 0. installs the carried wheels (.whl/, if any) into /tmp/site;
# 1. bench/gpu_train.py: the demo size continued and the larger variant (demo-large) trained side by side on 64
#    synthetic cases, both judged on the same 480 held-out frames (its own deadline, GPU_TRAIN_S, default 470 s;
#    GPU_TRAIN_ARGS passes options, e.g. "--train-cases 16 --test-cases 2 --max-test 120" for a shorter lease);
# 2. with the time left: every gpu-marked test in tests/ (engine: bf16 transformers, onnxruntime's CUDA provider;
#    train: bf16 SFT, the FSDP and ZeRO-3 accelerate configs, GRPO with vLLM colocated; tests/test_gpu_marks.py keeps
#    this line selecting all of them), then the Qwen2.5-VL-3B-shaped bf16 decode and batching benchmark.
# Each step has its own time limit, so one that hangs cannot eat the others' time; output goes to stdout and to
# $OUT/gpu_check.log when the device tool gives an $OUT folder (gpu_train.py writes its summary, the demo-size model
# and the reports there too).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUTDIR="${OUT:-/tmp/surgview-gpu-out}"
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
BUDGET_S="${GPU_CHECK_S:-585}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 QT_QPA_PLATFORM=offscreen PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
left() { echo $((BUDGET_S - SECONDS)); }
{
    nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
    if compgen -G ".whl/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            || { echo "the carried wheels did not install"; exit 1; }
        export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
    "$PY" -c "import torch, transformers, trl, av, datasets, ivtmetrics, pycocotools, train.pipeline, train.sft; from trl import SFTTrainer; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'trl', trl.__version__)" \
        || { echo "the training stack does not import"; exit 1; }
    echo "== gpu train";   timeout "${GPU_TRAIN_S:-470}" "$PY" bench/gpu_train.py --deadline "$(( ${GPU_TRAIN_S:-470} - 10 ))" --out "$OUTDIR" ${GPU_TRAIN_ARGS:-}
    echo "== gpu tests ($(left) s left)"
    [ "$(left)" -gt 40 ] && timeout $(( $(left) - 35 )) "$PY" -m pytest -m gpu -q -rs --durations=10 -p no:cacheprovider --continue-on-collection-errors tests
    echo "== 3b decode ($(left) s left)"
    [ "$(left)" -gt 30 ] && timeout $(( $(left) - 5 )) "$PY" bench/gpu_decode.py --tokens 64 --frames 8
    echo "== done after $SECONDS s"
} 2>&1 | tee "$LOG"
