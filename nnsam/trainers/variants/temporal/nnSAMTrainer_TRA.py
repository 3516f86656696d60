"""nnSAM on clips of consecutive frames (TRA), trained and predicted with the stock commands on ``2d_temporal``:

    nnsam add-temporal-config DATASET --frames 8
    nnUNetv2_train DATASET 2d_temporal FOLD -tr nnSAMTrainer_TRA
    nnUNetv2_predict -i SEQUENCES -o OUT -d DATASET -c 2d_temporal -tr nnSAMTrainer_TRA -f FOLD
"""
from __future__ import annotations

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnsam.networks.build_nnsam import build_nnsam_network
from nnsam.networks.temporal_unet import TRA_PLACES, TemporalSAMFusedUNet
from nnsam.plans.temporal import TEMPORAL_CONFIGURATION, frame_configuration, is_temporal_configuration
from nnsam.trainers.nnSAMTrainer import nnSAMTrainer

# Time stays in order: a half sequence runs from end-diastole to end-systole, and TRA may learn that direction.
IN_PLANE_MIRROR_AXES = (1, 2)


class nnSAMTrainer_TRA(nnSAMTrainer):
    """The planned 2D nnSAM U-Net on every frame of a clip, with TRA at the fusion stage (skip and embedding).

    Like nnSAMTrainer it trains from the embedding cache: every frame of a sequence is encoded once and each clip's
    frames take their warped embeddings (``nnSAMTrainer_TRA_Online`` encodes every frame of every clip)."""

    tra_at: tuple[str, ...] = TRA_PLACES

    def check_configuration(self, configuration: str) -> None:
        if not is_temporal_configuration(self.configuration_manager):
            raise ValueError(
                f"{type(self).__name__} trains on clips of frames: use the {TEMPORAL_CONFIGURATION} configuration "
                f"(`nnsam add-temporal-config DATASET`, then `nnUNetv2_train DATASET {TEMPORAL_CONFIGURATION} FOLD "
                f"-tr {type(self).__name__}`), not {configuration!r}."
            )

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return build_nnsam_network(frame_configuration(configuration_manager), num_input_channels,
                                   num_output_channels, enable_deep_supervision, encoder_name=cls.encoder_name,
                                   fusion_stride=cls.fusion_stride, input_mode=cls.input_mode,
                                   attention_stages=cls.attention_stages, network_class=TemporalSAMFusedUNet,
                                   tra_at=cls.tra_at)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not dummy_2d:
            raise ValueError(
                f"Clips of {self.configuration_manager.patch_size[0]} frames are too long for the in-plane patch "
                f"{self.configuration_manager.patch_size[1:]}: nnU-Net would rotate across time. Use fewer frames "
                f"(in-plane patch at least 3x the frames): `nnsam add-temporal-config DATASET --frames T`."
            )
        self.inference_allowed_mirroring_axes = IN_PLANE_MIRROR_AXES
        return rotation, dummy_2d, initial_patch_size, IN_PLANE_MIRROR_AXES


class nnSAMTrainer_TRA_LIA(nnSAMTrainer_TRA):
    """TRA at the fusion stage and coordinate attention (LIA) after the fused decoder stage: the report's full model."""

    attention_stages = ("fused",)


class nnSAMTrainer_LiteMedSAM_TRA(nnSAMTrainer_TRA):
    encoder_name = "litemedsam"


class nnSAMTrainer_LiteMedSAM_TRA_LIA(nnSAMTrainer_TRA_LIA):
    encoder_name = "litemedsam"
