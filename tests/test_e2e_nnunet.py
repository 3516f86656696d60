"""End to end with the stock nnU-Net commands in subprocesses: plan/preprocess -> train (tiny schedule, from the
embedding cache) -> predict on a new folder, with real encoder architectures."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

from conftest import SHARED_DATA, nnunet_bin, nnunet_env, run_command
from nnsam.cache.store import CACHE_FOLDER
from nnsam.data.downsample import downsample_raw_dataset
from nnsam.data.synthetic import make_synthetic_dataset

pytestmark = pytest.mark.e2e


def dice_per_class(pred_dir: Path, label_dir: Path, labels: list[int]) -> dict[int, tuple[float, float]]:
    """Mean Dice per class, and the Dice of a 'chance' prediction that marks every pixel as that class."""
    scores = {c: ([], []) for c in labels}
    for gt_file in sorted(label_dir.glob("*.nii.gz")):
        gt = sitk.GetArrayFromImage(sitk.ReadImage(str(gt_file)))
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / gt_file.name)))
        for c in labels:
            g, p = gt == c, pred == c
            scores[c][0].append(2 * (g & p).sum() / max(g.sum() + p.sum(), 1))
            scores[c][1].append(2 * g.sum() / (g.size + g.sum()))
    return {c: (float(np.mean(s)), float(np.mean(ch))) for c, (s, ch) in scores.items()}


def test_mobilesam_trainer_plan_train_cache_resume_predict(synthetic_nnunet, mobilesam_checkpoint, tmp_path):
    root, raw, preprocessed = synthetic_nnunet["root"], synthetic_nnunet["raw"], synthetic_nnunet["preprocessed"]
    shutil.rmtree(preprocessed / CACHE_FOLDER, ignore_errors=True)  # other tests may have filled it
    env = nnunet_env(root, mobilesam_checkpoint)
    train = [nnunet_bin("nnUNetv2_train"), "990", "2d", "0", "-tr", "nnSAMTrainer_Tiny", "-device", "cpu"]
    # The stock command trains from the embedding cache (the default), building it on first use.
    log = run_command(train, env)
    assert "0 cases reused, 16 built (16 slices encoded)" in log
    caches = list((preprocessed / CACHE_FOLDER / "nnUNetPlans_2d").iterdir())
    assert len(caches) == 1 and caches[0].name.startswith("mobilesam_minmax_")
    assert len(list(caches[0].glob("*.npy"))) == 16
    fold = root / "results" / raw.name / "nnSAMTrainer_Tiny__nnUNetPlans__2d" / "fold_0"
    checkpoint = fold / "checkpoint_final.pth"
    assert checkpoint.is_file()
    print(f"trained nnSAM (MobileSAM) checkpoint: {checkpoint.stat().st_size / 2**20:.1f} MiB")

    # --c on a finished run resumes from checkpoint_final (and redoes the validation) without failing. It prepares
    # the cache again: every case is reused except one whose file was damaged, which is found and rebuilt, not read.
    damaged = sorted(caches[0].glob("*.npy"))[3]
    damaged.write_bytes(damaged.read_bytes()[:1000])
    log = run_command(train + ["--c"], env)
    assert "Mean Validation Dice" in log
    assert "15 cases reused, 1 built (1 slices encoded)" in log

    # Prediction on a new folder: nnU-Net's predictor with the online encoder (no cache involved or needed), no
    # weight file, no nnSAM variable, an empty HOME.
    shutil.rmtree(preprocessed / CACHE_FOLDER)
    predict_env = nnunet_env(root)
    assert "NNSAM_MOBILESAM_CHECKPOINT" not in predict_env
    predictions = tmp_path / "pred"
    predict = [nnunet_bin("nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-d", "990", "-c", "2d",
               "-tr", "nnSAMTrainer_Tiny", "-f", "0", "-device", "cpu", "--disable_tta", "--save_probabilities"]
    run_command(predict + ["-o", str(predictions)], predict_env)
    scores = dice_per_class(predictions, raw / "labelsTs", [1, 2])
    print("Dice (model, chance) per class:", scores)
    organ_dice, organ_chance = scores[1]
    assert organ_dice > organ_chance + 0.2

    # nnU-Net's ensembling and configuration search still work on nnSAM outputs (an ensemble of a prediction with
    # itself must reproduce it).
    ensembled = tmp_path / "ensemble"
    run_command([nnunet_bin("nnUNetv2_ensemble"), "-i", str(predictions), str(predictions), "-o", str(ensembled),
                 "-np", "1"], predict_env)
    for predicted in sorted(predictions.glob("*.nii.gz")):
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(predicted))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(ensembled / predicted.name))))
    log = run_command([nnunet_bin("nnUNetv2_find_best_configuration"), "990", "-c", "2d", "-tr", "nnSAMTrainer_Tiny",
                       "-f", "0", "-np", "1", "--disable_ensembling"], predict_env)
    assert "nnSAMTrainer_Tiny" in log


@pytest.mark.skipif(not (SHARED_DATA / "Dataset102_HC18").is_dir(),
                    reason=f"real HC18 data not found at {SHARED_DATA / 'Dataset102_HC18'} (../shared/data beside the repo)")
def test_litemedsam_trainer_on_real_hc18_cases(tmp_path):
    # The first cases of HC18, 4x coarser (0.4 mm pixels) so that training fits a CPU test.
    cases = sorted(p.name[: -len(".nii.gz")] for p in (SHARED_DATA / "Dataset102_HC18" / "labelsTr").glob("*.nii.gz"))[:10]
    raw = downsample_raw_dataset(SHARED_DATA / "Dataset102_HC18", tmp_path / "raw" / "Dataset992_HC18small", 4, cases)
    env = nnunet_env(tmp_path)
    run_command([nnunet_bin("nnUNetv2_plan_and_preprocess"), "-d", "992", "-c", "2d", "-np", "2"], env)
    run_command([nnunet_bin("nnUNetv2_train"), "992", "2d", "0", "-tr", "nnSAMTrainer_LiteMedSAM_Tiny",
                 "-device", "cpu"], env)
    fold = tmp_path / "results" / raw.name / "nnSAMTrainer_LiteMedSAM_Tiny__nnUNetPlans__2d" / "fold_0"
    print(f"trained nnSAM (LiteMedSAM) checkpoint: {(fold / 'checkpoint_final.pth').stat().st_size / 2**20:.1f} MiB")

    # Predict the validation fold's images as a new folder and score them against their labels.
    validation_cases = sorted(p.name for p in (fold / "validation").glob("*.nii.gz"))
    new_images, new_labels = tmp_path / "new_images", tmp_path / "new_labels"
    new_images.mkdir(), new_labels.mkdir()
    for name in validation_cases:
        (new_images / name.replace(".nii.gz", "_0000.nii.gz")).symlink_to(raw / "imagesTr" / name.replace(".nii.gz", "_0000.nii.gz"))
        (new_labels / name).symlink_to(raw / "labelsTr" / name)
    predictions = tmp_path / "pred"
    run_command([nnunet_bin("nnUNetv2_predict"), "-i", str(new_images), "-o", str(predictions), "-d", "992", "-c", "2d",
                 "-tr", "nnSAMTrainer_LiteMedSAM_Tiny", "-f", "0", "-device", "cpu", "--disable_tta"], env)
    head_dice, chance = dice_per_class(predictions, new_labels, [1])[1]
    print(f"HC18 fetal head Dice {head_dice:.3f} (chance {chance:.3f}) on {len(validation_cases)} cases")
    assert head_dice > chance


def test_pretrained_unet_then_mirrored_sliding_window_prediction_matches_validation(tmp_path):
    """-pretrained_weights from a plain nnU-Net run; then the trainer's own final validation (test-time mirroring,
    an image larger than the patch) must equal what nnUNetv2_predict writes for the same image."""
    raw = make_synthetic_dataset(tmp_path / "raw", num_subjects=3, image_size=(64, 80), dataset_name="Dataset993_Windows")
    env = nnunet_env(tmp_path)
    run_command([nnunet_bin("nnUNetv2_plan_and_preprocess"), "-d", "993", "-c", "2d", "-np", "1"], env)
    preprocessed = tmp_path / "preprocessed" / raw.name
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["2d"]["patch_size"] == [64, 80]  # the whole image: one window
    plans["plans_name"] = "nnUNetPlansSmallPatch"
    # Same network (5 stages), two overlapping windows per image (each one encoder pass per mirror: 4 in 2D)
    plans["configurations"]["2d"]["patch_size"] = [64, 64]
    (preprocessed / "nnUNetPlansSmallPatch.json").write_text(json.dumps(plans))
    assert [len(s) for s in compute_steps_for_sliding_window((64, 80), (64, 64), 0.5)] == [1, 2]
    cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    validation_case = cases[0]
    (preprocessed / "splits_final.json").write_text(json.dumps([{"train": cases[1:], "val": [validation_case]}]))

    def train(trainer: str, *extra: str) -> str:
        return run_command([nnunet_bin("nnUNetv2_train"), "993", "2d", "0", "-tr", trainer, "-p", "nnUNetPlansSmallPatch",
                            "-device", "cpu", *extra], env)

    train("nnUNetTrainer_Tiny")
    results = tmp_path / "results" / raw.name
    plain = results / "nnUNetTrainer_Tiny__nnUNetPlansSmallPatch__2d" / "fold_0" / "checkpoint_final.pth"
    log = train("nnSAMTrainer_LiteMedSAM_TinyMirroring", "-pretrained_weights", str(plain))
    assert "nnSAM: loaded" in log and "U-Net tensors from" in log

    fold = results / "nnSAMTrainer_LiteMedSAM_TinyMirroring__nnUNetPlansSmallPatch__2d" / "fold_0"
    new_images = tmp_path / "new_images"
    new_images.mkdir()
    (new_images / f"{validation_case}_0000.nii.gz").symlink_to(raw / "imagesTr" / f"{validation_case}_0000.nii.gz")
    predictions = tmp_path / "pred"
    run_command([nnunet_bin("nnUNetv2_predict"), "-i", str(new_images), "-o", str(predictions), "-d", "993",
                 "-c", "2d", "-p", "nnUNetPlansSmallPatch", "-tr", "nnSAMTrainer_LiteMedSAM_TinyMirroring", "-f", "0",
                 "-device", "cpu", "-npp", "1", "-nps", "1"], env)  # mirroring on: nnU-Net's default
    # (nnU-Net writes the validation file without the singleton axis of the raw 2D image; the pixels are what count)
    validated = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(fold / "validation" / f"{validation_case}.nii.gz"))))
    predicted = np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / f"{validation_case}.nii.gz"))))
    assert validated.shape == predicted.shape == (64, 80)
    assert validated.any()
    assert np.array_equal(validated, predicted)
