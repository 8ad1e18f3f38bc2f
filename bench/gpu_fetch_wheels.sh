#!/usr/bin/env bash
# The Python packages bench/gpu_check.sh needs that the GPU machine's image lacks (it has torch, accelerate, peft,
# onnx and huggingface_hub 1.x, no registry), as wheels in .whl/ (ignored by git; the device tool's `carry`):
#   bash bench/gpu_fetch_wheels.sh
# transformers 5.24: trl's assistant-only loss on images needs >= 5.18 (the image has 5.17), and 5.25 wants
# huggingface_hub 2. About 49 MiB: with the working tree that travels, under the device tool's 64 MiB once the
# demo model's ONNX graphs and the README's pictures stay behind (the GPU run needs neither).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl \
    av==18.1.0 transformers==5.24.0 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
    ivtmetrics==0.1.5 pycocotools==2.0.11
du -sh .whl
