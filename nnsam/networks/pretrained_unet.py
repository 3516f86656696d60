"""Starting an nnSAM network from a U-Net that nnU-Net trained (``nnUNetv2_train ... -pretrained_weights FILE``).

nnU-Net transfers every key of the network from the checkpoint and requires all of them to be there with the same
shape; an nnSAM network also has the SAM encoder and a decoder convolution widened for the embedding, so nnU-Net's
rule can never hold. Here the U-Net part is loaded (keys and shapes as nnU-Net plans them), the fused convolution
gets the checkpoint's weights for its U-Net inputs, and its embedding inputs and the SAM encoder stay as they are.
As in nnU-Net, the segmentation heads (``.seg_layers.``) are not transferred, so the number of classes may differ.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nnsam.networks.fusion import SAMFusedUNet

SKIPPED_KEY_PARTS = (".seg_layers.",)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile, if a checkpoint was saved wrapped


class PretrainedUNetError(RuntimeError):
    """The -pretrained_weights checkpoint does not fit the planned U-Net. The message says what differs."""


def unet_state_from_checkpoint(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The U-Net's state dict from an nnU-Net checkpoint of either a plain U-Net or an nnSAM network."""
    state = checkpoint["network_weights"]
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if any(k.startswith("unet.") for k in state):  # an nnSAM checkpoint: its U-Net part
        state = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
    return state


def load_pretrained_unet(network: SAMFusedUNet, checkpoint_file: str | Path) -> list[str]:
    """Load the U-Net weights of ``checkpoint_file`` into ``network``; returns the keys that were transferred."""
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    source = unet_state_from_checkpoint(checkpoint)
    target = network.unet.state_dict()
    # The widened convolution is registered under two names (``conv`` and ``all_modules.0``), as in nnU-Net.
    fused_keys = {f"{name}.weight" for name, module in network.unet.named_modules(remove_duplicate=False)
                  if module is network.fused_conv}
    transferred = {}
    for key, tensor in target.items():
        if any(part in key for part in SKIPPED_KEY_PARTS):
            continue
        if key not in source:
            raise PretrainedUNetError(
                f"{checkpoint_file} does not fit this network: it has no '{key}'. -pretrained_weights needs a "
                f"checkpoint of the same U-Net architecture (trained by nnU-Net with the same plans)."
            )
        value = source[key]
        if key in fused_keys and value.shape[1] < tensor.shape[1] and value.shape[2:] == tensor.shape[2:] \
                and value.shape[0] == tensor.shape[0]:
            # A plain U-Net's weights for the U-Net inputs; the embedding inputs keep their values.
            value = torch.cat((value.to(tensor.dtype), tensor[:, value.shape[1]:].cpu()), dim=1)
        if value.shape != tensor.shape:
            raise PretrainedUNetError(
                f"{checkpoint_file} does not fit this network: '{key}' has shape {tuple(value.shape)} there and "
                f"{tuple(tensor.shape)} here. -pretrained_weights needs a checkpoint of the same U-Net architecture "
                f"(trained by nnU-Net with the same plans)."
            )
        transferred[key] = value
    network.unet.load_state_dict({**target, **transferred})
    return sorted(transferred)
