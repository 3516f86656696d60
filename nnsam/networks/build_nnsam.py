"""Building an nnSAM network from nnU-Net plans."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnsam.networks.build_encoder import build_image_encoder
from nnsam.networks.fusion import SAMFusedUNet
from nnsam.networks.image_encoder import InputMode


def require_2d_configuration(configuration_manager: ConfigurationManager, name: str = "") -> None:
    conv_op = str(configuration_manager.network_arch_init_kwargs.get("conv_op", ""))
    if not conv_op.endswith("Conv2d"):
        raise ValueError(
            f"nnSAM supports nnU-Net's 2d configuration only (the SAM encoders are 2D), not {name or conv_op!r}. "
            f"Train with `nnUNetv2_train DATASET 2d FOLD -tr nnSAMTrainer`."
        )


def build_nnsam_network(
    configuration_manager: ConfigurationManager,
    num_input_channels: int,
    num_output_channels: int,
    enable_deep_supervision: bool = True,
    encoder_name: str = "mobilesam",
    fusion_stride: int = 8,
    input_mode: InputMode = "minmax",
    attention_stages: Sequence[int | str] = (),
    network_class: type[SAMFusedUNet] = SAMFusedUNet,
    **network_kwargs,
) -> SAMFusedUNet:
    """The planned U-Net plus a frozen SAM encoder, *without* pretrained encoder weights.

    nnU-Net's He initialisation is applied to the U-Net only, before the encoder exists, so it can never touch the
    encoder's weights. Inference needs nothing more (the checkpoint holds the encoder); training loads the
    pretrained weights afterwards (see ``nnSAMTrainer.initialize``).
    """
    require_2d_configuration(configuration_manager)
    unet = get_network_from_plans(
        configuration_manager.network_arch_class_name,
        configuration_manager.network_arch_init_kwargs,
        configuration_manager.network_arch_init_kwargs_req_import,
        num_input_channels,
        num_output_channels,
        allow_init=True,
        deep_supervision=enable_deep_supervision,
    )
    image_encoder = build_image_encoder(encoder_name, input_mode=input_mode, pretrained=False)
    return network_class(unet, image_encoder, fusion_stride=fusion_stride, attention_stages=attention_stages,
                         **network_kwargs)


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The network inside nnU-Net's DDP and torch.compile wrappers."""
    if isinstance(network, DistributedDataParallel):
        network = network.module
    return network._orig_mod if isinstance(network, OptimizedModule) else network
