#!/usr/bin/env bash
# The few-shot study of docs/results.md ("Few-shot evidence"): nnU-Net vs nnSAM (LiteMedSAM encoder, trained from
# the embedding cache) on CPU budgets at which nnU-Net learns. The protocol was fixed before any run:
#   - ACDC downsampled 2x in-plane (slices kept; nnU-Net plans a 128x112 patch), HC18 downsampled 4x;
#   - test set held out by subject before planning (ACDC 20 %, HC18 10 %), the same for every run;
#   - 2000 training iterations of batch 4 (40 epochs x 50), 1 validation iteration per epoch (on the run's own
#     training cases: it only feeds nnU-Net's log), final weights, test prediction without mirroring;
#   - the same budget, folds and seeds for both trainers; seed = the draw of the N training cases and the init.
# Runs are resumable: rerunning skips every run whose done.json matches. STEPS picks what to run (default: all,
# most informative first: an HC18 run costs about 2.5 ACDC runs, its patch being 160x224), e.g. STEPS="acdc4 acdc20".
# Each finished run's record (its settings and per-case metrics) is also kept under RECORDS (default: the
# repository's docs/fewshot_records, under version control): a study longer than one machine's session continues on
# a new machine from them, and the report includes every recorded run.
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-fewshot_evidence}
RECORDS=${RECORDS:-"$(cd "$(dirname "$0")/.." && pwd)/docs/fewshot_records"}
STEPS=${STEPS:-"acdc4 acdc20 hc18 acdc4resenc acdc8 hc18s1 hc18n8"}
# nnSAMTrainer_LiteMedSAM_Cached = nnSAMTrainer_LiteMedSAM (the cache is the default); the study started under this name.
TRAINERS=(nnUNetTrainer nnSAMTrainer_LiteMedSAM_Cached)
BUDGET=(--epochs 40 --iters-per-epoch 50 --val-iters 1 --batch-size 4 --disable-tta --device cpu)

downsample() {  # SOURCE TARGET FACTOR: an in-plane downsampled copy, made once
    python - "$1" "$2" "$3" <<'PY'
import sys
from pathlib import Path
from nnsam.data.downsample import downsample_raw_dataset
if not Path(sys.argv[2]).exists():
    downsample_raw_dataset(sys.argv[1], sys.argv[2], factor=int(sys.argv[3]))
PY
}

downsample "$DATA/Dataset101_ACDC" "$OUT/raw/Dataset104_ACDCx2" 2
downsample "$DATA/Dataset102_HC18" "$OUT/raw/Dataset103_HC18x4" 4

for step in $STEPS; do
    case $step in
        acdc4)  # N = 4, two draws
            nnsam fewshot "$OUT/raw/Dataset104_ACDCx2" --out "$OUT/acdc" --records "$RECORDS/acdc" --test-fraction 0.2 --n 4 --seeds 0 1 \
                --trainers "${TRAINERS[@]}" "${BUDGET[@]}" ;;
        acdc20)
            nnsam fewshot "$OUT/raw/Dataset104_ACDCx2" --out "$OUT/acdc" --records "$RECORDS/acdc" --test-fraction 0.2 --n 20 --seeds 0 \
                --trainers "${TRAINERS[@]}" "${BUDGET[@]}" ;;
        acdc4resenc)  # nnU-Net's ResEnc M preset as a baseline row, same draws
            nnsam fewshot "$OUT/raw/Dataset104_ACDCx2" --out "$OUT/acdc" --records "$RECORDS/acdc" --test-fraction 0.2 --n 4 --seeds 0 1 \
                --trainers nnUNetTrainer@ResEncM "${BUDGET[@]}" ;;
        acdc8)
            nnsam fewshot "$OUT/raw/Dataset104_ACDCx2" --out "$OUT/acdc" --records "$RECORDS/acdc" --test-fraction 0.2 --n 8 --seeds 0 \
                --trainers "${TRAINERS[@]}" "${BUDGET[@]}" ;;
        hc18)
            nnsam fewshot "$OUT/raw/Dataset103_HC18x4" --out "$OUT/hc18x4" --records "$RECORDS/hc18x4" --test-fraction 0.1 --n 4 20 --seeds 0 \
                --trainers "${TRAINERS[@]}" "${BUDGET[@]}" ;;
        hc18s1)  # the second draw at N = 4 (the issue asks for two seeds at N = 4 on each dataset)
            nnsam fewshot "$OUT/raw/Dataset103_HC18x4" --out "$OUT/hc18x4" --records "$RECORDS/hc18x4" --test-fraction 0.1 --n 4 --seeds 1 \
                --trainers "${TRAINERS[@]}" "${BUDGET[@]}" ;;
        hc18n8)
            nnsam fewshot "$OUT/raw/Dataset103_HC18x4" --out "$OUT/hc18x4" --records "$RECORDS/hc18x4" --test-fraction 0.1 --n 8 --seeds 0 \
                --trainers "${TRAINERS[@]}" "${BUDGET[@]}" ;;
        *) echo "unknown step $step (known: acdc4 acdc20 hc18 acdc4resenc acdc8 hc18s1 hc18n8)" >&2; exit 2 ;;
    esac
done
