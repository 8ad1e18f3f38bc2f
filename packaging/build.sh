#!/usr/bin/env bash
# Build the surgview desktop bundle into dist/surgview/ (options: see packaging/build.py --help).
#   packaging/build.sh                  torch-free bundle (onnxruntime) with the demo case and model
#   packaging/build.sh --variant cpu    torch (CPU build) and transformers instead of onnxruntime
#   packaging/build.sh --variant gpu    keep CUDA libraries (needs a CUDA build of torch)
#   packaging/build.sh --with-train     also ship surgview-train
# Then: dist/surgview/install.sh [--prefix DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${SURGVIEW_VENV:-.venv}"
"$VENV/bin/python" -c 'import PyInstaller' 2>/dev/null || {
    echo "build.sh: PyInstaller is missing: $VENV/bin/pip install -e '.[packaging]'" >&2; exit 1; }
exec nice -n 10 "$VENV/bin/python" packaging/build.py "$@"
