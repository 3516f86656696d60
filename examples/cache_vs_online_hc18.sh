#!/usr/bin/env bash
# Does training from the embedding cache cost Dice? The study in docs/results.md ("Embedding cache"): nnSAM with
# LiteMedSAM on HC18 (4x downsampled), N = 8, seeds 0 and 1, 150 iterations of batch 2, trained online, from the
# cache, and from the cache with mirrored views. All three draw the same test set and training images.
set -euo pipefail
DATA=${DATA:-../shared/data}
OUT=${OUT:-cache_study}
BUDGET=(--n 8 --seeds 0 1 --epochs 15 --iters-per-epoch 10 --val-iters 1 --batch-size 2 --disable-tta --device cpu
        --test-fraction 0.1)
python - "$DATA/Dataset102_HC18" "$OUT/raw/Dataset103_HC18x4" <<'PY'
import sys
from pathlib import Path
from nnsam.data.downsample import downsample_raw_dataset
if not Path(sys.argv[2]).exists():
    downsample_raw_dataset(sys.argv[1], sys.argv[2], factor=4)
PY
nnsam fewshot "$OUT/raw/Dataset103_HC18x4" --out "$OUT/cache_dice" "${BUDGET[@]}" \
    --trainers nnSAMTrainer_LiteMedSAM_Cached nnSAMTrainer_LiteMedSAM
nnsam fewshot "$OUT/raw/Dataset103_HC18x4" --out "$OUT/cache_dice_mirrored" "${BUDGET[@]}" \
    --trainers nnSAMTrainer_LiteMedSAM_CachedMirrored
# How close the cached embedding is to the online one, per augmentation (1 view, then 4 mirrored views):
python benchmarks/cache_fidelity.py "$OUT/cache_dice/nnUNet_preprocessed/Dataset103_HC18x4" --samples 12
python benchmarks/cache_fidelity.py "$OUT/cache_dice/nnUNet_preprocessed/Dataset103_HC18x4" --samples 12 --mirrored-views
