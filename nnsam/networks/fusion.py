"""Fusing the SAM embedding into nnU-Net's U-Net decoder.

nnU-Net's U-Nets (PlainConvUNet, ResidualEncoderUNet) run ``skips = encoder(x)`` and ``decoder(skips)``; decoder
stage ``s`` upsamples what comes from below, concatenates ``skips[-(s + 2)]`` and convolves. nnSAM resizes the
256-channel SAM embedding to one skip's resolution and concatenates it to that skip, so exactly one decoder stage
sees ``2 * features + 256`` input channels; only that stage's first convolution is widened. Everything else is
nnU-Net's network as planned, including deep supervision.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from nnsam.networks.decoder_attention import attach_coordinate_attention
from nnsam.networks.image_encoder import FrozenImageEncoder, check_recorded_setting

FUSED_STAGE = "fused"  # in ``attention_stages``: the decoder stage that receives the embedding


def skip_strides(unet: nn.Module) -> list[tuple[int, ...]]:
    """Cumulative stride of every encoder output (the last one is the bottleneck)."""
    per_stage = np.array(unet.encoder.strides, dtype=np.int64)
    return [tuple(int(v) for v in s) for s in np.cumprod(per_stage, axis=0)]


def find_fusion_skip(strides: list[tuple[int, ...]], fusion_stride: int) -> int:
    """Index of the first skip (bottleneck excluded) whose largest stride equals ``fusion_stride``."""
    skips = strides[:-1]  # the bottleneck is not concatenated anywhere
    for i, s in enumerate(skips):
        if max(s) == fusion_stride:
            return i
    available = sorted({max(s) for s in skips})
    raise ValueError(
        f"The planned U-Net has no skip connection at stride {fusion_stride} (its skips are at strides {available}; "
        f"{len(strides)} stages). Fusing the SAM embedding at stride {fusion_stride} needs a deeper network: use a "
        f"larger patch size in the plans, or a trainer whose fusion_stride is one of {available}."
    )


def _widen_first_conv(decoder_stage: nn.Module, extra_channels: int) -> None:
    """Give the decoder stage's first convolution ``extra_channels`` more inputs (He-initialised like nnU-Net)."""
    block = decoder_stage.convs[0]
    old: nn.Conv2d = block.conv
    new = type(old)(
        old.in_channels + extra_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        padding=old.padding,
        dilation=old.dilation,
        bias=old.bias is not None,
    )
    InitWeights_He(1e-2)(new)
    block.conv = new
    block.all_modules[0] = new  # the block runs all_modules; conv is the same object under a second name
    block.input_channels = new.in_channels


class SAMFusedUNet(nn.Module):
    """nnU-Net's U-Net with a frozen SAM embedding concatenated at one skip connection."""

    def __init__(self, unet: nn.Module, image_encoder: FrozenImageEncoder, fusion_stride: int = 8,
                 attention_stages: Sequence[int | str] = ()) -> None:
        """``attention_stages``: decoder stages (0 = lowest resolution, or ``"fused"``) followed by coordinate
        attention (LIA, see ``nnsam.networks.decoder_attention``); none by default."""
        super().__init__()
        self.unet = unet
        self.image_encoder = image_encoder
        self.fusion_stride = int(fusion_stride)
        strides = skip_strides(unet)
        self.fusion_skip = find_fusion_skip(strides, self.fusion_stride)
        self.fused_decoder_stage = len(strides) - 2 - self.fusion_skip  # decoder stage s consumes skips[-(s + 2)]
        _widen_first_conv(unet.decoder.stages[self.fused_decoder_stage], image_encoder.embed_dim)
        stages = [self.fused_decoder_stage if s == FUSED_STAGE else int(s) for s in attention_stages]
        self.decoder_attention = attach_coordinate_attention(unet.decoder, stages)
        # Set only inside ``given_embedding`` (training from the embedding cache); None means: run the encoder.
        self._given_embedding: torch.Tensor | None = None

    # nnU-Net's trainer switches deep supervision through ``network.decoder`` and logs ``network.encoder``.
    @property
    def decoder(self) -> nn.Module:
        return self.unet.decoder

    @property
    def encoder(self) -> nn.Module:
        return self.unet.encoder

    @property
    def fused_conv(self) -> nn.Conv2d:
        """The widened convolution: its first inputs are the U-Net's, the last ``embed_dim`` the embedding's."""
        return self.unet.decoder.stages[self.fused_decoder_stage].convs[0].conv

    def fusion_cells(self, patch_size: Sequence[int]) -> tuple[int, ...]:
        """Spatial size of the fusion skip (where the embedding is concatenated) for an input of ``patch_size``."""
        from nnsam.cache.frames import cells_at_stride

        return cells_at_stride(patch_size, self.unet.encoder.strides[: self.fusion_skip + 1])

    @property
    def attention_stages(self) -> list[int]:
        return sorted(int(stage) for stage in self.decoder_attention)

    # Saved as "_extra_state" in the state dict; the encoder records its own settings the same way.
    def get_extra_state(self) -> dict:
        return {"fusion_stride": self.fusion_stride, "attention_stages": self.attention_stages}

    def set_extra_state(self, state: dict) -> None:
        check_recorded_setting("fusion_stride", state["fusion_stride"], self.fusion_stride)
        check_recorded_setting("attention_stages", state["attention_stages"], self.attention_stages)

    def fuse(self, skip: torch.Tensor, embedding: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """The fused skip: the U-Net's skip and the (resized) embedding, concatenated along channels.

        ``num_frames`` (frames per clip when the batch holds clips of consecutive frames) is unused here; temporal
        subclasses mix the frames before concatenating.
        """
        return torch.cat((skip, embedding), dim=1)

    @contextmanager
    def given_embedding(self, embedding: torch.Tensor) -> Iterator[None]:
        """Within this block, forward uses ``embedding`` (N, embed_dim, h, w), already at the fusion skip's
        resolution, instead of running the encoder on the input.

        The embedding cache's trainers use it around nnU-Net's own ``train_step``/``validation_step``, so the
        forward pass, loss and optimizer stay nnU-Net's; prediction never sets it and encodes every window.
        """
        self._given_embedding = embedding
        try:
            yield
        finally:
            self._given_embedding = None

    def embedding_at(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The SAM embedding of ``x`` at the resolution of the fusion skip ``target``."""
        if self._given_embedding is not None:
            given = self._given_embedding
            if given.shape[0] != x.shape[0] or tuple(given.shape[2:]) != tuple(target.shape[2:]):
                raise ValueError(f"The given embedding has shape {tuple(given.shape)}, but the fusion skip needs "
                                 f"({x.shape[0]}, {self.image_encoder.embed_dim}, {', '.join(map(str, target.shape[2:]))}).")
            return given.to(target.dtype)
        embedding = self.image_encoder(x)
        return F.interpolate(embedding.to(target.dtype), size=target.shape[2:], mode="bilinear", align_corners=False)

    def forward_frames(self, x: torch.Tensor, num_frames: int | None = None):
        """The U-Net on a batch of 2D images ``(N, C, H, W)`` (for clips: ``N = B * T``, clip-major)."""
        skips = list(self.unet.encoder(x))
        target = skips[self.fusion_skip]
        skips[self.fusion_skip] = self.fuse(target, self.embedding_at(x, target), num_frames)
        return self.unet.decoder(skips)

    def forward(self, x: torch.Tensor):
        return self.forward_frames(x)
