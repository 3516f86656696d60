"""One tiny real few-shot experiment: nnU-Net planning, preprocessing, training and test prediction on CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nnsam.data.synthetic import make_synthetic_dataset

# nnUNetTrainer@ResEncM: nnU-Net's ResEnc M baseline, planned with its own planner and plans.
TRAINERS = ["nnUNetTrainer", "nnSAMTrainer_LiteMedSAM", "nnUNetTrainer@ResEncM"]


@pytest.mark.e2e
def test_fewshot_command_end_to_end(tmp_path: Path) -> None:
    dataset = make_synthetic_dataset(tmp_path / "data", num_subjects=6, image_size=(64, 80), dataset_name="Dataset990_Tiny")
    os.chmod(dataset, 0o555)  # the command must only read the dataset
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "nnsam.fewshot.command", str(dataset), "--out", str(out),
        "--n", "2", "--trainers", *TRAINERS, "--device", "cpu",  # several N in one study: test_fewshot_runner
        "--epochs", "1", "--iters-per-epoch", "3", "--val-iters", "1", "--batch-size", "2", "--disable-tta",
        "--num-processes", "1",
    ]
    # Keep every nnU-Net path inside tmp_path even if the caller's environment sets them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    try:
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

        for name in ("results.csv", "summary.md", "fewshot.png", "paired.png", "folds.json", "test_set.json"):
            assert (out / name).is_file(), name
        assert list((out / "overlays").glob("*.png"))
        results = pd.read_csv(out / "results.csv")
        test_cases = results["case"].unique()
        # 12 cases, 20% held out by subject -> 2 test cases; 2 foreground classes.
        assert len(test_cases) == 2
        assert len(results) == len(TRAINERS) * len(test_cases) * 2
        assert set(results["n"]) == {2} and set(results["class_name"]) == {"organ", "cavity"}
        assert results["dice"].between(0, 1).all() and results["iou"].between(0, 1).all()
        assert (results["dice"] > 0).any()  # three iterations already find some of the organ
        assert (results["hd95_mm"] >= 0).all() and (results["asd_mm"] >= 0).all()  # missed structures: penalty, not NaN
        assert set(results["distance_penalised"]) <= {0, 1}
        summary = (out / "summary.md").read_text()
        assert "| N | nnUNetTrainer |" in summary and "Protocol: the test set was held out before planning" in summary
        # The terminal shows the Dice table and where the plot is.
        assert "| N | nnUNetTrainer | nnSAMTrainer_LiteMedSAM | nnUNetTrainer@ResEncM |" in first.stdout and f"Plot:     {out / 'fewshot.png'}" in first.stdout
        # ... and each trainer against the first, paired per test case (one seed: no claim about the draw).
        paired_rows = [line for line in first.stdout.splitlines() if line.startswith("| 2 | ") and "(one seed)" in line]
        assert [row.split(" | ")[1] for row in paired_rows] == TRAINERS[1:]
        assert "paired per test case against nnUNetTrainer" in summary

        # The test set was never seen by nnU-Net: not planned, not preprocessed, in no train or val list.
        dataset_name = "Dataset990_Tiny"
        planned = [p.name for p in (out / "nnUNet_raw" / dataset_name / "labelsTr").iterdir()]
        assert len(planned) == 10 and not set(test_cases) & {p[: -len(".nii.gz")] for p in planned}
        preprocessed = out / "nnUNet_preprocessed" / dataset_name
        assert not [p for p in preprocessed.rglob("*") if any(p.name.startswith(case) for case in test_cases)]
        for fold in json.loads((preprocessed / "splits_final.json").read_text()):
            assert fold["val"] == fold["train"] and not set(test_cases) & set(fold["train"])
        # Scored predictions are the runs' test predictions; only final weights are kept.
        for trainer in TRAINERS:
            predictions = out / "runs" / trainer / "n002_seed0" / "test_predictions"
            assert sorted(p.name for p in predictions.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in test_cases)
        results_root = out / "nnUNet_results" / dataset_name
        assert len(list(results_root.rglob("checkpoint_final.pth"))) == len(TRAINERS)
        resenc = json.loads((results_root / "nnUNetTrainer__nnUNetResEncUNetMPlans__2d" / "plans.json").read_text())
        assert resenc["configurations"]["2d"]["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
        assert not list(results_root.rglob("checkpoint_best.pth")) and not list(results_root.rglob("validation"))

        # A rerun finds everything done and trains nothing.
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert second.stdout.count("finished earlier, skipped") + second.stderr.count("finished earlier, skipped") == len(TRAINERS)
    finally:
        os.chmod(dataset, 0o755)
