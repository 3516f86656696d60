"""Clips of consecutive frames with the stock nnU-Net commands: CAMUS-layout phantom -> convert-camus -> plan ->
add-temporal-config (the ``camus_phantom_nnunet`` fixture) -> nnUNetv2_train 2d_temporal (TRA) -> nnUNetv2_predict on
a new folder of sequences."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import TEMPORAL_FRAMES, nnunet_bin, nnunet_env, run_command

pytestmark = pytest.mark.e2e


def test_tra_trainer_trains_and_predicts_whole_sequences(camus_phantom_nnunet):
    root, raw, preprocessed = (camus_phantom_nnunet[k] for k in ("root", "raw", "preprocessed"))
    env = nnunet_env(root)
    assert "Added 2d_temporal" in camus_phantom_nnunet["add_temporal_config_log"]
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["2d_temporal"]["patch_size"][0] == TEMPORAL_FRAMES
    cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    (preprocessed / "splits_final.json").write_text(json.dumps([{"train": cases[1:], "val": cases[:1]}]))

    log = run_command([nnunet_bin("nnUNetv2_train"), "131", "2d_temporal", "0", "-tr", "nnSAMTrainer_LiteMedSAM_TRA_Tiny",
                       "-device", "cpu"], env)
    assert "do_dummy_2d_data_aug: True" in log  # one in-plane transform for the whole clip
    assert "nnSAM embedding cache" in log and "built" in log  # clips train from per-frame cached embeddings
    fold = root / "results" / raw.name / "nnSAMTrainer_LiteMedSAM_TRA_Tiny__nnUNetPlans__2d_temporal" / "fold_0"
    validated = sitk.GetArrayFromImage(sitk.ReadImage(str(fold / "validation" / f"{cases[0]}.nii.gz")))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{cases[0]}.nii.gz")))
    assert validated.shape == reference.shape and reference.shape[0] > TEMPORAL_FRAMES  # every frame, several clips

    # A new folder of unlabelled sequences: every frame gets a prediction.
    sequence = sorted((camus_phantom_nnunet["new"] / "imagesTs_seq").glob("*.nii.gz"))[-1]
    new_images = root / "new_sequences"
    new_images.mkdir()
    (new_images / sequence.name).symlink_to(sequence)
    predictions = root / "pred"
    run_command([nnunet_bin("nnUNetv2_predict"), "-i", str(new_images), "-o", str(predictions), "-d", "131",
                 "-c", "2d_temporal", "-tr", "nnSAMTrainer_LiteMedSAM_TRA_Tiny", "-f", "0", "-device", "cpu",
                 "--disable_tta", "-npp", "1", "-nps", "1"], env)
    image = sitk.ReadImage(str(sequence))
    predicted = sitk.ReadImage(str(predictions / sequence.name.replace("_0000.nii.gz", ".nii.gz")))
    assert predicted.GetSize() == image.GetSize() and predicted.GetSpacing() == pytest.approx(image.GetSpacing())
    assert set(np.unique(sitk.GetArrayFromImage(predicted))) <= {0, 1, 2, 3}
