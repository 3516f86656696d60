"""`nnsam ablation` end to end on a CAMUS-layout phantom: convert, plan (2d, 3d_fullres, 2d_temporal), train rows with
a token budget, predict the official test sequences, score key frames and temporal consistency."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nnsam.echo.ablation import ROWS
from nnsam.echo.phantom import make_camus_phantom

pytestmark = pytest.mark.e2e
TRAINED_ROWS = ("nnU-Net 2d", "nnU-Net 3d_fullres", "+TRA+LIA")


def test_ablation_command_trains_rows_predicts_sequences_and_reports(tmp_path: Path) -> None:
    # Square 64 px frames, 4-frame sequences and one training patient (no validation patient: the pool is training +
    # validation): one sliding window per frame and per clip, and few encoder passes (about 2 s each on a CPU).
    # Three rows, one per kind of model: a 2d model predicting frame by frame, a 3d one, and the clip model with
    # both modules (TRA from the temporal embedding cache, LIA). The other rows differ from these by their trainer
    # class only: test_echo_ablation checks that nnU-Net finds each, and the 2d nnSAM trainers are trained through
    # the same runner in test_fewshot_e2e and in-process in test_decoder_attention.
    camus = make_camus_phantom(tmp_path / "camus", num_patients=2, seed=2, split_sizes=(1, 0, 1), frame_range=(4, 4),
                               size_range=(64, 64))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "nnsam.echo.ablation", str(camus), "--out", str(out), "--frames", "4",
               "--epochs", "1", "--iters-per-epoch", "2", "--val-iters", "1", "--batch-size", "4", "--device", "cpu",
               "--disable-tta", "--num-processes", "1", "--rows", *TRAINED_ROWS]
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]

    report = (out / "ablation.md").read_text()
    for row in ROWS:
        assert (f"| {row.name} |" in report) == (row.name in TRAINED_ROWS)
    assert "| row | Dice | IoU | HD (mm) | TCI (frames) |" in first.stdout
    assert "attribute bounds from all 4 ground-truth sequences" in report
    results = pd.read_csv(out / "ablation.csv")
    split = json.loads((out / "converted" / "Dataset111_CAMUSSeq" / "camus_split.json").read_text())
    test_sequences = sorted(split["testing"])
    assert len(test_sequences) == 2  # one patient, two views
    assert sorted(results["row"].unique()) == sorted(TRAINED_ROWS)
    for row in TRAINED_ROWS:
        scored = results[results["row"] == row]
        assert sorted(scored.loc[scored["kind"] == "sequence", "case"]) == test_sequences
        key_frames = scored[scored["kind"] == "key_frame"]
        assert len(key_frames) == 2 * 2 * 4  # sequences x (ED, ES) x (LV, MYO, LA, epicardium)
        assert key_frames["dice"].between(0, 1).all()
        assert (scored.loc[scored["kind"] == "sequence", "inconsistent_frames"] >= 0).all()
    # The temporal rows trained on clips: nnU-Net's 2d_temporal model folders exist next to the 2d ones.
    results_root = out / "nnUNet_results" / "Dataset111_CAMUSSeq"
    assert (results_root / "nnSAMTrainer_LiteMedSAM_TRA_LIA__nnUNetPlans__2d_temporal" / "fold_0" / "checkpoint_final.pth").is_file()
    assert (results_root / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth").is_file()
    assert (out / "ablation.png").is_file() and len(list((out / "overlays").glob("*.png"))) == 2

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (second.stdout + second.stderr).count("finished earlier, skipped") == len(TRAINED_ROWS)
