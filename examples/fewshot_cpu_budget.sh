#!/usr/bin/env bash
# The CPU-budget few-shot runs reported in docs/results.md (nnU-Net vs nnSAM with the LiteMedSAM encoder).
# Data: the nnU-Net raw datasets in ../shared/data (ACDC cine MR, HC18 fetal-head ultrasound).
# On a GPU, drop the budget options to train with nnU-Net's own schedule.
# The test set is held out before planning; OUT folders written by nnsam versions that planned on the whole
# dataset are refused, so give a new OUT to repeat the runs.
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-fewshot_runs}
BUDGET=(--n 4 8 20 --trainers nnUNetTrainer nnSAMTrainer_LiteMedSAM --epochs 3 --iters-per-epoch 10 --val-iters 1
        --batch-size 2 --disable-tta --device cpu)

nnsam fewshot "$DATA/Dataset101_ACDC" --out "$OUT/acdc" --test-fraction 0.2 "${BUDGET[@]}"

# HC18's 0.1 mm images make nnU-Net plan 640x896 patches, too large for a CPU: use a 4x coarser copy (0.4 mm).
python - "$DATA/Dataset102_HC18" "$OUT/raw/Dataset103_HC18x4" <<'PY'
import sys
from pathlib import Path
from nnsam.data.downsample import downsample_raw_dataset
if not Path(sys.argv[2]).exists():
    downsample_raw_dataset(sys.argv[1], sys.argv[2], factor=4)
PY
nnsam fewshot "$OUT/raw/Dataset103_HC18x4" --out "$OUT/hc18x4" --test-fraction 0.1 "${BUDGET[@]}"
