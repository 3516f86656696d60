"""One tiny real few-shot experiment: nnU-Net planning, preprocessing, training and test prediction on CPU."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nnsam.data.synthetic import make_synthetic_dataset

TRAINERS = ["nnUNetTrainer", "nnSAMTrainer_LiteMedSAM"]


@pytest.mark.e2e
def test_fewshot_command_end_to_end(tmp_path: Path) -> None:
    dataset = make_synthetic_dataset(tmp_path / "data", num_subjects=6, image_size=(64, 80), dataset_name="Dataset990_Tiny")
    os.chmod(dataset, 0o555)  # the command must only read the dataset
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "nnsam.fewshot.command", str(dataset), "--out", str(out),
        "--n", "2", "4", "--trainers", *TRAINERS, "--device", "cpu",
        "--epochs", "1", "--iters-per-epoch", "3", "--val-iters", "1", "--batch-size", "2", "--disable-tta",
        "--num-processes", "1",
    ]
    # Keep every nnU-Net path inside tmp_path even if the caller's environment sets them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    try:
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

        for name in ("results.csv", "summary.md", "fewshot.png", "folds.json"):
            assert (out / name).is_file(), name
        assert list((out / "overlays").glob("*.png"))
        results = pd.read_csv(out / "results.csv")
        test_cases = results["case"].unique()
        # 12 cases, 20% held out by subject -> 2 test cases; 2 foreground classes.
        assert len(test_cases) == 2
        assert len(results) == len(TRAINERS) * 2 * len(test_cases) * 2
        assert set(results["n"]) == {2, 4} and set(results["class_name"]) == {"organ", "cavity"}
        assert results["dice"].between(0, 1).all() and results["iou"].between(0, 1).all()
        assert (results["dice"] > 0).any()  # three iterations already find some of the organ
        assert (results["hd95_mm"].dropna() >= 0).all()
        summary = (out / "summary.md").read_text()
        assert "| N | nnUNetTrainer |" in summary

        # A rerun finds everything done and trains nothing.
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert second.stdout.count("finished earlier, skipped") + second.stderr.count("finished earlier, skipped") == len(TRAINERS) * 2
    finally:
        os.chmod(dataset, 0o755)
