"""Coordinate attention (LIA, the "H-W block") after chosen decoder stages of an nnSAM network.

The attention modules live outside nnU-Net's U-Net (in ``SAMFusedUNet.decoder_attention``, keys
``decoder_attention.<stage>.*``), so the U-Net's state dict keeps exactly nnU-Net's keys and shapes (what
``-pretrained_weights`` transfers). They run as forward hooks on the decoder stages: nnU-Net's decoder loop
(upsample, concatenate the skip, stage, segmentation head) stays nnU-Net's own code, and a hook replaces the stage's
output by its attended version, which the segmentation head and the next stage then receive.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from nnsam.networks.coordinate_attention import CoordinateAttention


def _attend(attention: nn.Module, stage: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return attention(output)


def stage_output_channels(decoder: nn.Module, stage: int) -> int:
    """Channels a decoder stage outputs (its last convolution's)."""
    return decoder.stages[stage].output_channels


def attach_coordinate_attention(decoder: nn.Module, stages: Sequence[int]) -> nn.ModuleDict:
    """Coordinate attention after each decoder stage in ``stages`` (0 = lowest resolution); returns the modules.

    The caller must keep the returned ``ModuleDict`` as a submodule so that its parameters are trained and saved.
    """
    modules = nn.ModuleDict()
    for stage in sorted(set(stages)):
        if not 0 <= stage < len(decoder.stages):
            raise ValueError(f"Decoder stage {stage} does not exist; this U-Net's decoder has stages "
                             f"0..{len(decoder.stages) - 1} (0 = lowest resolution).")
        attention = CoordinateAttention(stage_output_channels(decoder, stage))
        decoder.stages[stage].register_forward_hook(partial(_attend, attention))
        modules[str(stage)] = attention
    return modules
