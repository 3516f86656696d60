# Tiny-schedule trainers for the end-to-end tests. nnU-Net imports this folder through nnUNet_extTrainer,
# exactly as it would import a user's own trainer variants.
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnsam.trainers import nnSAMTrainer, nnSAMTrainer_LiteMedSAM, nnSAMTrainer_LiteMedSAM_TRA


class _TinySchedule:
    """A few iterations of batch 2 on 2 CPU cores; no test-time mirroring, so validation stays cheap."""

    tiny_epochs = 3
    tiny_iterations = 8
    tiny_batch_size = 2  # each sample costs a ~2.4 s encoder pass on a CPU; the planned batch can be 10+
    keep_mirroring = False  # nnU-Net's test-time mirroring costs 4 encoder passes per window in 2D

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.tiny_epochs
        self.num_iterations_per_epoch = self.tiny_iterations
        self.num_val_iterations_per_epoch = 1
        self.configuration_manager.configuration["batch_size"] = self.tiny_batch_size  # read by initialize()

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        configured = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.keep_mirroring:
            self.inference_allowed_mirroring_axes = None
        return configured


class nnSAMTrainer_Tiny(_TinySchedule, nnSAMTrainer):
    pass


class nnSAMTrainer_LiteMedSAM_Tiny(_TinySchedule, nnSAMTrainer_LiteMedSAM):
    # Real ultrasound needs a few more steps than the synthetic data before it beats the all-foreground guess.
    tiny_epochs = 4
    tiny_iterations = 10


class nnSAMTrainer_LiteMedSAM_TinyMirroring(_TinySchedule, nnSAMTrainer_LiteMedSAM):
    keep_mirroring = True


class nnUNetTrainer_Tiny(_TinySchedule, nnUNetTrainer):
    pass


class nnSAMTrainer_LiteMedSAM_TRA_Tiny(_TinySchedule, nnSAMTrainer_LiteMedSAM_TRA):
    # One clip per batch: a clip of T frames already costs T encoder passes.
    tiny_epochs = 2
    tiny_iterations = 3
    tiny_batch_size = 1

