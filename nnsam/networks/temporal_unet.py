"""nnSAM on clips of consecutive frames: the planned 2D nnSAM U-Net on every frame, TRA mixing frames at the fusion.

Input ``(B, C, T, H, W)`` (nnU-Net's 3D layout, with time as the first spatial axis), output ``(B, K, T, H, W)``
(a list of such, full resolution first, with deep supervision), so nnU-Net's 3D data pipeline, loss and sliding-window
predictor can drive it. Every frame goes through the same 2D U-Net and frozen encoder as in :class:`SAMFusedUNet`;
at the fusion stage, temporal relation aggregation (TRA, ``nnsam.networks.temporal_relation``) mixes the U-Net's
skip and the SAM embedding along time before they are concatenated (where the SAMUS-based report placed it, before
its CNN/ViT fusion). TRA starts as the identity, so an untrained temporal network predicts every frame exactly as
the 2D network with the same weights does.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnsam.networks.fusion import SAMFusedUNet
from nnsam.networks.image_encoder import FrozenImageEncoder
from nnsam.networks.temporal_relation import TemporalRelationAggregation, clips_to_frames, frames_to_clips

TRA_PLACES = ("skip", "embedding")


class TemporalSAMFusedUNet(SAMFusedUNet):
    """:class:`SAMFusedUNet` on clips, with TRA on the fusion stage's skip and/or embedding (``tra_at``)."""

    def __init__(self, unet: nn.Module, image_encoder: FrozenImageEncoder, fusion_stride: int = 8,
                 attention_stages: Sequence[int | str] = (), tra_at: Sequence[str] = TRA_PLACES) -> None:
        super().__init__(unet, image_encoder, fusion_stride, attention_stages)
        unknown = sorted(set(tra_at) - set(TRA_PLACES))
        if unknown:
            raise ValueError(f"TRA can sit at {TRA_PLACES}, not {unknown}.")
        skip_channels = unet.encoder.output_channels[self.fusion_skip]
        self.skip_temporal = TemporalRelationAggregation(skip_channels) if "skip" in tra_at else None
        self.embedding_temporal = (TemporalRelationAggregation(image_encoder.embed_dim)
                                   if "embedding" in tra_at else None)

    def fuse(self, skip: torch.Tensor, embedding: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        if self.skip_temporal is not None:
            skip = self.skip_temporal(skip, num_frames)
        if self.embedding_temporal is not None:
            embedding = self.embedding_temporal(embedding, num_frames)
        return super().fuse(skip, embedding, num_frames)

    def forward(self, x: torch.Tensor):
        if x.dim() != 5:
            raise ValueError(f"Expected clips shaped (B, C, T, H, W), got {tuple(x.shape)}.")
        num_frames = x.shape[2]
        output = self.forward_frames(clips_to_frames(x), num_frames)
        if isinstance(output, (list, tuple)):  # deep supervision: one output per decoder resolution
            return [frames_to_clips(o, num_frames) for o in output]
        return frames_to_clips(output, num_frames)
