"""nnU-Net's planning and preprocessing see the training pool only: no statistic is taken from the test set."""
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnsam.fewshot.runner import ensure_preprocessed, open_workspace, prepare_workspace
from nnsam.fewshot.splits import make_fewshot_split

POOL = [f"case{i:02d}" for i in range(6)]
TEST = ["case06", "case07"]
TEST_SCALE = 1000.0  # test images are 1000x brighter: any test pixel in the statistics would show at once


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0))
    sitk.WriteImage(image, str(path))


def _ct_dataset(root: Path) -> Path:
    """Tiny 2D "CT" dataset: CTNormalization clips and scales with dataset-wide foreground intensity statistics."""
    dataset = root / "Dataset975_TinyCT"
    (dataset / "imagesTr").mkdir(parents=True)
    (dataset / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for case in POOL + TEST:
        image = rng.uniform(0.0, 100.0, size=(32, 32)).astype(np.float32)
        label = np.zeros((32, 32), np.uint8)
        label[8:20, 10:22] = 1
        image[label == 1] += 100.0  # pool foreground intensities lie in [100, 200]
        if case in TEST:
            image *= TEST_SCALE
        _write(image, dataset / "imagesTr" / f"{case}_0000.nii.gz")
        _write(label, dataset / "labelsTr" / f"{case}.nii.gz")
    (dataset / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "blob": 1},
        "numTraining": len(POOL) + len(TEST), "file_ending": ".nii.gz",
    }))
    return dataset


def test_plans_and_preprocessed_data_come_from_the_pool_only(tmp_path: Path) -> None:
    source = _ct_dataset(tmp_path / "data")
    workspace = open_workspace(source, tmp_path / "out")
    split = make_fewshot_split(workspace.case_ids(), seeds=[0], test_cases=TEST)
    assert list(split.pool_cases) == POOL
    prepare_workspace(workspace, list(split.pool_cases), list(split.test_cases))
    ensure_preprocessed(workspace, num_processes=1)

    plans = json.loads((workspace.preprocessed_dataset_dir / "nnUNetPlans.json").read_text())
    intensities = plans["foreground_intensity_properties_per_channel"]["0"]
    assert 100.0 <= intensities["percentile_99_5"] <= intensities["max"] <= 200.0, intensities
    assert plans["configurations"]["2d"]["normalization_schemes"] == ["CTNormalization"]
    files = [p.name for p in workspace.preprocessed_dataset_dir.rglob("*") if p.is_file()]
    assert any(name.startswith("case00") for name in files)  # the pool was preprocessed ...
    assert not [name for name in files if any(name.startswith(case) for case in TEST)]  # ... the test set was not
    assert json.loads((workspace.preprocessed_dataset_dir / "dataset.json").read_text())["numTraining"] == len(POOL)
