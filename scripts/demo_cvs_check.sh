#!/bin/bash
# The demo report's CVS statement beside the demo case's ground truth, for a model folder:
#   scripts/demo_cvs_check.sh MODEL_DIR WORK_DIR      (WORK_DIR: the demo case, its data folder and both reports)
set -e
MODEL=$(realpath "$1"); W=$(realpath -m "$2")
cd "$(dirname "$0")/.."
export SURGVIEW_DATA=$W/data
mkdir -p $W
[ -f $W/demo/synth.json ] || .venv/bin/surgview-train demo --out $W/demo --quiet > /dev/null
VIDEO=$W/demo/cholec80/videos/video01.mp4
.venv/bin/python -c "
from pathlib import Path
from train.synth.truth_store import store_truth_chains
print(store_truth_chains(Path('$W/demo')))"
.venv/bin/surgview-engine analyze $VIDEO --model $MODEL --stride 1 --batch 8 --quiet
ID=$(.venv/bin/python -c "import json;m=json.load(open('$MODEL/surgview.json'));print(m['name'])")
.venv/bin/surgview report $VIDEO --out $W/truth.html --model-id ground-truth@synthetic --json $W/truth.json > /dev/null
.venv/bin/surgview report $VIDEO --out $W/model.html --json $W/model.json > /dev/null
.venv/bin/python - <<PY
import json
for name in ("truth", "model"):
    d = json.load(open("$W/%s.json" % name))
    print(name, "|", d.get("model_id") or d.get("analysis", {}).get("model_id"), "|", d["cvs"].get("statement"))
PY
