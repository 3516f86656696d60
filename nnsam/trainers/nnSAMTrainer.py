from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnsam.networks.build_encoder import load_pretrained_encoder_weights
from nnsam.networks.build_nnsam import build_nnsam_network, require_2d_configuration, unwrap_network
from nnsam.networks.fusion import SAMFusedUNet
from nnsam.networks.image_encoder import describe_channel_mapping
from nnsam.trainers.embedding_cache import EmbeddingCacheMixin
from nnsam.trainers.pretrained_weights import install_pretrained_weights_hook

install_pretrained_weights_hook()


class nnSAMTrainer(EmbeddingCacheMixin, nnUNetTrainer):
    """nnU-Net's 2D U-Net with a frozen MobileSAM image encoder fused at the stride-8 skip (the nnSAM paper).

    Trained from the embedding cache (``nnsam.trainers.embedding_cache``): each training slice is encoded once and
    every augmented patch takes the correspondingly warped embedding (``nnSAMTrainer_Online`` encodes every sample).
    Subclasses change the class attributes below; everything else (planning, augmentation, loss, optimizer,
    schedule, inference) is nnU-Net's own. The frozen encoder's parameters never receive a gradient, so nnU-Net's
    optimizers (its SGD, or e.g. nnUNetTrainerAdam combined by multiple inheritance) never change them.
    """

    encoder_name: str = "mobilesam"
    fusion_stride: int = 8
    input_mode: str = "minmax"  # "zscore": feed nnU-Net's normalised patch as is, like the official nnSAM code
    attention_stages: tuple = ()  # decoder stages followed by coordinate attention (LIA); "fused" = the fused one

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.check_configuration(configuration)

    def check_configuration(self, configuration: str) -> None:
        """Refuse configurations this trainer's network cannot run (here: anything but a 2D one)."""
        require_2d_configuration(self.configuration_manager, configuration)

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        # Also what nnUNetv2_predict calls: it builds the architecture and then loads the trained checkpoint
        # (which contains the encoder and records its settings), so no weight file is needed at inference.
        return build_nnsam_network(configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision, encoder_name=cls.encoder_name,
                                   fusion_stride=cls.fusion_stride, input_mode=cls.input_mode,
                                   attention_stages=cls.attention_stages)

    def nnsam_network(self) -> SAMFusedUNet:
        return unwrap_network(self.network)

    def initialize(self) -> None:
        super().initialize()
        if self.num_input_channels not in (1, 3):
            self.print_to_log_file(f"nnSAM: {describe_channel_mapping(self.num_input_channels)}.")

    def load_pretrained_encoder(self) -> None:
        """Load the encoder's pretrained weights, unless a checkpoint already brought them (--c)."""
        image_encoder = self.nnsam_network().image_encoder
        if image_encoder.has_pretrained_weights:
            return
        path = load_pretrained_encoder_weights(image_encoder)
        image_encoder.to(self.device)
        self.print_to_log_file(f"nnSAM: loaded pretrained '{self.encoder_name}' encoder weights (frozen) from "
                               f"{path} (sha256 {image_encoder.weights_sha256}).")

    def on_train_start(self) -> None:
        # Loaded after nnU-Net built and He-initialised the network, so nothing can overwrite them (the official
        # nnSAM code's initialisation ran after loading and destroyed the SAM weights).
        if not self.was_initialized:
            self.initialize()
        self.load_pretrained_encoder()
        super().on_train_start()
