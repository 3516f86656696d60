"""``nnUNetv2_train ... -tr nnSAMTrainer -pretrained_weights FILE`` with stock nnU-Net.

nnU-Net's ``run_training`` hands ``-pretrained_weights`` to its free function ``load_pretrained_weights(network,
fname)``, not to a trainer method, and that function requires every key of the network in the checkpoint, which an
nnSAM network (SAM encoder, widened fusion convolution) can never satisfy. There is no smaller hook, so importing
the nnSAM trainers replaces the name in ``run_training``'s namespace with a dispatcher: nnSAM networks get
``nnsam.networks.pretrained_unet.load_pretrained_unet``, every other network nnU-Net's own function, unchanged.
"""
from __future__ import annotations

from pathlib import Path

import nnunetv2.run.run_training as run_training
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights as nnunet_load_pretrained_weights
from torch import nn

from nnsam.networks.build_nnsam import unwrap_network
from nnsam.networks.fusion import SAMFusedUNet
from nnsam.networks.pretrained_unet import load_pretrained_unet


def load_pretrained_weights(network: nn.Module, fname: str | Path, verbose: bool = False) -> None:
    """nnU-Net's ``load_pretrained_weights``, extended to nnSAM networks (U-Net part only; the encoder stays)."""
    module = unwrap_network(network)
    if not isinstance(module, SAMFusedUNet):
        return nnunet_load_pretrained_weights(network, fname, verbose=verbose)
    transferred = load_pretrained_unet(module, fname)
    print(f"nnSAM: loaded {len(transferred)} U-Net tensors from {fname}; the SAM encoder and the fusion "
          f"convolution's embedding inputs keep their weights, the segmentation heads are not transferred.")
    if verbose:
        print("\n".join(transferred))


def install_pretrained_weights_hook() -> None:
    """Make stock ``nnUNetv2_train -pretrained_weights`` use :func:`load_pretrained_weights` (idempotent)."""
    run_training.load_pretrained_weights = load_pretrained_weights
