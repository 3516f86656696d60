"""End to end with the stock nnU-Net commands: nnSAM trained from the embedding cache, then nnUNetv2_predict."""
from __future__ import annotations

import shutil

import pytest

from conftest import nnunet_bin, nnunet_env, run_command
from nnsam.cache.store import CACHE_FOLDER
from test_e2e_nnunet import dice_per_class

pytestmark = pytest.mark.e2e
TRAINER = "nnSAMTrainer_LiteMedSAM_Cached_Tiny"


def test_cached_trainer_builds_reuses_repairs_and_predicts(synthetic_nnunet, tmp_path):
    root, raw, preprocessed = synthetic_nnunet["root"], synthetic_nnunet["raw"], synthetic_nnunet["preprocessed"]
    shutil.rmtree(preprocessed / CACHE_FOLDER, ignore_errors=True)  # other tests may have filled it
    env = nnunet_env(root)

    def train(fold: int) -> str:
        return run_command([nnunet_bin("nnUNetv2_train"), "990", "2d", str(fold), "-tr", TRAINER, "-device", "cpu"],
                           env)

    log = train(0)
    assert "0 cases reused, 16 built (16 slices encoded)" in log
    caches = list((preprocessed / CACHE_FOLDER / "nnUNetPlans_2d").iterdir())
    assert len(caches) == 1 and caches[0].name.startswith("litemedsam_minmax_")
    assert len(list(caches[0].glob("*.npy"))) == 16

    # Another fold reuses every case, except one whose file was damaged: it is found and rebuilt, not read.
    damaged = sorted(caches[0].glob("*.npy"))[3]
    damaged.write_bytes(damaged.read_bytes()[:1000])
    assert "15 cases reused, 1 built (1 slices encoded)" in train(1)

    # Prediction is nnU-Net's predictor with the online encoder; no cache is involved or needed.
    shutil.rmtree(preprocessed / CACHE_FOLDER)
    predictions = tmp_path / "pred"
    run_command([nnunet_bin("nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(predictions), "-d", "990",
                 "-c", "2d", "-tr", TRAINER, "-f", "0", "-device", "cpu", "--disable_tta"], env)
    organ_dice, organ_chance = dice_per_class(predictions, raw / "labelsTs", [1, 2])[1]
    print(f"cached-trained nnSAM: organ Dice {organ_dice:.3f} (chance {organ_chance:.3f})")
    assert organ_dice > organ_chance + 0.2
