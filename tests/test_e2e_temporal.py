"""Clips of consecutive frames with the stock nnU-Net commands: CAMUS-layout phantom -> convert-camus -> plan ->
add-temporal-config -> nnUNetv2_train 2d_temporal (TRA) -> nnUNetv2_predict on a new folder of sequences."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import nnunet_bin, nnunet_env, run_command
from nnsam.echo.phantom import make_camus_phantom

pytestmark = pytest.mark.e2e
FRAMES = 4


def test_tra_trainer_trains_and_predicts_whole_sequences(tmp_path):
    # Few, short, small sequences: the cache and the predictor encode every frame (about 2 s each on a CPU); frames
    # of 64-80 px take one or two 80-px windows in-plane after resampling. Still two clips of 4 per 5-frame sequence.
    camus = make_camus_phantom(tmp_path / "camus", num_patients=2, seed=1, split_sizes=(1, 0, 1), frame_range=(5, 5),
                               size_range=(64, 80))
    env = nnunet_env(tmp_path)
    run_command([nnunet_bin("nnsam"), "convert-camus", str(camus), str(tmp_path / "raw"), "--dataset-id", "120"], env)
    run_command([nnunet_bin("nnsam"), "convert-camus", str(camus), str(tmp_path / "new"), "--unlabelled"], env)
    raw = tmp_path / "raw" / "Dataset121_CAMUSSeq"
    run_command([nnunet_bin("nnUNetv2_plan_and_preprocess"), "-d", "121", "-c", "2d", "3d_fullres", "-np", "1"], env)
    log = run_command([nnunet_bin("nnsam"), "add-temporal-config", "121", "--frames", str(FRAMES)], env)
    assert "Added 2d_temporal" in log
    preprocessed = tmp_path / "preprocessed" / raw.name
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["2d_temporal"]["patch_size"][0] == FRAMES
    cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    (preprocessed / "splits_final.json").write_text(json.dumps([{"train": cases[1:], "val": cases[:1]}]))

    log = run_command([nnunet_bin("nnUNetv2_train"), "121", "2d_temporal", "0", "-tr", "nnSAMTrainer_LiteMedSAM_TRA_Tiny",
                       "-device", "cpu"], env)
    assert "do_dummy_2d_data_aug: True" in log  # one in-plane transform for the whole clip
    assert "nnSAM embedding cache" in log and "built" in log  # clips train from per-frame cached embeddings
    fold = tmp_path / "results" / raw.name / "nnSAMTrainer_LiteMedSAM_TRA_Tiny__nnUNetPlans__2d_temporal" / "fold_0"
    validated = sitk.GetArrayFromImage(sitk.ReadImage(str(fold / "validation" / f"{cases[0]}.nii.gz")))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{cases[0]}.nii.gz")))
    assert validated.shape == reference.shape and reference.shape[0] > FRAMES  # every frame, several clips

    # A new folder of unlabelled sequences: every frame gets a prediction.
    sequence = sorted((tmp_path / "new" / "imagesTs_seq").glob("*.nii.gz"))[-1]
    new_images = tmp_path / "new_sequences"
    new_images.mkdir()
    (new_images / sequence.name).symlink_to(sequence)
    predictions = tmp_path / "pred"
    run_command([nnunet_bin("nnUNetv2_predict"), "-i", str(new_images), "-o", str(predictions), "-d", "121",
                 "-c", "2d_temporal", "-tr", "nnSAMTrainer_LiteMedSAM_TRA_Tiny", "-f", "0", "-device", "cpu",
                 "--disable_tta", "-npp", "1", "-nps", "1"], env)
    image = sitk.ReadImage(str(sequence))
    predicted = sitk.ReadImage(str(predictions / sequence.name.replace("_0000.nii.gz", ".nii.gz")))
    assert predicted.GetSize() == image.GetSize() and predicted.GetSpacing() == pytest.approx(image.GetSpacing())
    assert set(np.unique(sitk.GetArrayFromImage(predicted))) <= {0, 1, 2, 3}
