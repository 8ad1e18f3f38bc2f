#!/bin/bash
# The CVS statements of the model's report and the truth's, side by side, for synthetic cases of one folder:
#   scripts/cases_cvs_check.sh MODEL_DIR CASES_DIR WORK_DIR VIDEO...   (e.g. RUN/data/cases-test video50 video51)
# WORK_DIR holds the case stores (SURGVIEW_DATA) and both reports of each case; the cases are analysed one frame a
# second, as the demo check does (scripts/demo_cvs_check.sh).
set -e
MODEL=$(realpath "$1"); ROOT=$(realpath "$2"); W=$(realpath -m "$3"); shift 3
cd "$(dirname "$0")/.."
export SURGVIEW_DATA=$W/data
mkdir -p $W
for V in "$@"; do
VIDEO=$ROOT/cholec80/videos/$V.mp4
.venv/bin/python -c "
from pathlib import Path
from train.synth.truth_store import store_truth_chains
store_truth_chains(Path('$ROOT'), '$V')"
.venv/bin/surgview-engine analyze $VIDEO --model $MODEL --stride 1 --batch 8 --quiet > /dev/null
.venv/bin/surgview report $VIDEO --out $W/$V-truth.html --model-id ground-truth@synthetic --json $W/$V-truth.json > /dev/null
.venv/bin/surgview report $VIDEO --out $W/$V-model.html --json $W/$V-model.json > /dev/null
.venv/bin/python - <<PY
import json
for name in ("truth", "model"):
    d = json.load(open("$W/$V-%s.json" % name))
    print("$V", name, "|", d["cvs"].get("statement"))
PY
done
