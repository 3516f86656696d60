#!/usr/bin/env bash
# Does training from the embedding cache cost Dice on ACDC? The second half of docs/results.md's "Does training from
# the cache cost Dice?" (the first: examples/cache_vs_online_hc18.sh). Protocol, fixed before any run (2026-12-04):
#   - ACDC downsampled 2x in-plane (the few-shot study's copy: patch 128x112) and the study's test set (20 %);
#   - N = 20 training volumes, seeds 0 and 1 (seed = the draw and the initialisation);
#   - 1000 iterations of batch 4 (20 epochs x 50; nnU-Net learns ACDC at this budget: mean Dice 0.59 at N = 20),
#     1 validation iteration per epoch, final weights, test prediction without mirroring, CPU;
#   - nnSAMTrainer_LiteMedSAM (the default: from the cache) vs nnSAMTrainer_LiteMedSAM_Online (encoder run on every
#     augmented patch), same draws, same initialisation.
# The runs go in the order seed 0 (cache, online), seed 1 (cache, online): an online run costs about 1.5-2 h of a
# 2-core CPU (one encoder pass per sample), a cached one about 15 min. Resumable like every `nnsam fewshot` study,
# and each finished run's record is kept under RECORDS so that the study can continue on another machine.
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-cache_vs_online_acdc}
RECORDS=${RECORDS:-"$(cd "$(dirname "$0")/.." && pwd)/docs/fewshot_records/acdc_cache_vs_online"}
python - "$DATA/Dataset101_ACDC" "$OUT/raw/Dataset104_ACDCx2" <<'PY'
import sys
from pathlib import Path
from nnsam.data.downsample import downsample_raw_dataset
if not Path(sys.argv[2]).exists():
    downsample_raw_dataset(sys.argv[1], sys.argv[2], factor=2)
PY
nnsam fewshot "$OUT/raw/Dataset104_ACDCx2" --out "$OUT/runs" --records "$RECORDS" --test-fraction 0.2 \
    --n 20 --seeds 0 1 --trainers nnSAMTrainer_LiteMedSAM nnSAMTrainer_LiteMedSAM_Online \
    --epochs 20 --iters-per-epoch 50 --val-iters 1 --batch-size 4 --disable-tta --device cpu
