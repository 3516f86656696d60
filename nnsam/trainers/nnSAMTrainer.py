from __future__ import annotations

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn
from torch._dynamo import OptimizedModule

from nnsam.networks.build_encoder import get_encoder_spec
from nnsam.networks.build_nnsam import build_nnsam_network, require_2d_configuration, trainable_parameters
from nnsam.networks.fusion import SAMFusedUNet


class nnSAMTrainer(nnUNetTrainer):
    """nnU-Net's 2D U-Net with a frozen MobileSAM image encoder fused at the stride-8 skip (the nnSAM paper).

    Subclasses change the class attributes below; everything else (planning, augmentation, loss, schedule,
    inference) is nnU-Net's own.
    """

    encoder_name: str = "mobilesam"
    fusion_stride: int = 8
    input_mode: str = "minmax"  # "zscore": feed nnU-Net's normalised patch as is, like the official nnSAM code

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        require_2d_configuration(self.configuration_manager, configuration)

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        # Also what nnUNetv2_predict calls: it builds the architecture and then loads the trained checkpoint
        # (which contains the encoder), so no weight file is needed at inference.
        return build_nnsam_network(configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision, encoder_name=cls.encoder_name,
                                   fusion_stride=cls.fusion_stride, input_mode=cls.input_mode)

    def nnsam_network(self) -> SAMFusedUNet:
        network = self.network.module if self.is_ddp else self.network
        return network._orig_mod if isinstance(network, OptimizedModule) else network

    def load_pretrained_encoder(self) -> None:
        """Load the encoder's pretrained weights, unless a checkpoint already brought them (--c)."""
        image_encoder = self.nnsam_network().image_encoder
        if bool(image_encoder.has_pretrained_weights):
            return
        image_encoder.load_pretrained(get_encoder_spec(self.encoder_name).load_pretrained_state())
        image_encoder.to(self.device)
        self.print_to_log_file(f"nnSAM: loaded pretrained '{self.encoder_name}' encoder weights (frozen).")

    def on_train_start(self) -> None:
        # Loaded after nnU-Net built and He-initialised the network, so nothing can overwrite them (the official
        # nnSAM code's initialisation ran after loading and destroyed the SAM weights).
        if not self.was_initialized:
            self.initialize()
        self.load_pretrained_encoder()
        super().on_train_start()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(trainable_parameters(self.network), self.initial_lr,
                                    weight_decay=self.weight_decay, momentum=0.99, nesterov=True)
        lr_scheduler = PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)
        return optimizer, lr_scheduler
