#!/usr/bin/env bash
# The echo ablation (nnU-Net 2d / 3d_fullres, nnSAM, +TRA, +LIA, +TRA+LIA) on a CAMUS-layout phantom with a budget
# that learns, on a CPU: the table in docs/results.md ("Echo ablation on the phantom"). CAMUS itself cannot be
# downloaded on our machines; with the release at hand, pass its folder as CAMUS_DIR instead of the phantom.
#
# The protocol was fixed before any result was seen: 10 phantom patients (official-style split 6/1/3, so 6 test
# sequences), 6-10 frames per half sequence, frames 72-96 px; every row 20 epochs x 25 iterations of 8 frames
# (the temporal rows: 1 clip of 8), 1 validation batch per epoch, LiteMedSAM encoder, test set predicted without
# mirroring, seeds 0 and 1. A rerun skips finished runs: SEEDS="0" first, then SEEDS="0 1" adds seed 1.
set -euo pipefail
OUT=${OUT:-echo_ablation}
SEEDS=${SEEDS:-0 1}
CAMUS_DIR=${CAMUS_DIR:-$OUT/camus_phantom}
if [ ! -d "$CAMUS_DIR/database_nifti" ]; then
    python - "$CAMUS_DIR" <<'PY'
import sys
from nnsam.echo.phantom import make_camus_phantom
make_camus_phantom(sys.argv[1], num_patients=10, seed=0, split_sizes=(6, 1, 3), frame_range=(6, 10),
                   size_range=(72, 96))
PY
fi
# shellcheck disable=SC2086
nnsam ablation "$CAMUS_DIR" --out "$OUT/ablation" --seeds $SEEDS --frames 8 --encoder litemedsam \
    --epochs 20 --iters-per-epoch 25 --val-iters 1 --batch-size 8 --disable-tta --device cpu
