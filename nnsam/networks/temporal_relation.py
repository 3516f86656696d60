"""Temporal relation aggregation (TRA): a residual block that mixes features of neighbouring frames.

Modelled on the local temporal MHRA of UniFormerV2 (Li et al., 2023): normalise, project the channels down by a
factor ``reduction``, convolve each channel along time only (a depthwise ``kernel_size x 1 x 1`` convolution, no
spatial mixing), project back up and add the result to the input. The up-projection starts at zero, so an untrained
block is exactly the identity and can be inserted into a trained 2D network without changing what it predicts.

Layout. nnU-Net's 2D U-Net sees frames as a batch of images, so the block takes frames stacked along the batch axis,
``(B * T, C, H, W)``, clip-major: row ``b * T + t`` is frame ``t`` of clip ``b``. ``T`` (``num_frames``) is given at
construction or per call. Features already shaped as clips, ``(B, C, T, H, W)``, go through :meth:`forward_clips`
(or the helpers :func:`frames_to_clips` and :func:`clips_to_frames`).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def frames_to_clips(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(B * T, C, H, W)`` clip-major frames to ``(B, C, T, H, W)`` clips."""
    if x.dim() != 4:
        raise ValueError(f"Expected frames shaped (B * T, C, H, W), got a tensor of shape {tuple(x.shape)}.")
    if num_frames < 1 or x.shape[0] % num_frames != 0:
        raise ValueError(
            f"A batch of {x.shape[0]} frames cannot be split into clips of num_frames={num_frames} frames: the batch "
            f"must hold whole clips, frame t of clip b at row b * num_frames + t."
        )
    frames, channels, height, width = x.shape
    return x.reshape(frames // num_frames, num_frames, channels, height, width).transpose(1, 2)


def clips_to_frames(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` clips to ``(B * T, C, H, W)`` clip-major frames (the inverse of :func:`frames_to_clips`)."""
    if x.dim() != 5:
        raise ValueError(f"Expected clips shaped (B, C, T, H, W), got a tensor of shape {tuple(x.shape)}.")
    clips, channels, num_frames, height, width = x.shape
    return x.transpose(1, 2).reshape(clips * num_frames, channels, height, width)


def frame_group_norm(channels: int) -> nn.Module:
    """The default normalisation: one group over (C, H, W) of each frame on its own (a per-frame layer norm)."""
    return nn.GroupNorm(1, channels)


class TemporalRelationAggregation(nn.Module):
    """Residual depthwise temporal convolution on a bottleneck of the channels (UniFormerV2's local temporal MHRA).

    Args:
        channels: feature channels ``C`` of the input.
        num_frames: frames per clip ``T``, used when :meth:`forward` is not given one.
        reduction: the bottleneck has ``round(C / reduction)`` channels (at least 1).
        kernel_size: temporal extent of the depthwise convolution; odd, so zero padding keeps ``T``.
        norm: builds the normalisation from the channel count; it is applied to frames ``(B * T, C, H, W)``.

    The default norm, ``GroupNorm(1, C)`` per frame, is chosen over UniFormerV2's BatchNorm because its statistics
    come from one frame alone: it behaves the same in training and eval, at any batch size including 1, and it
    cannot carry information from one frame to another, so frame ``t``'s output depends only on frames
    ``t - k//2 .. t + k//2`` (BatchNorm in training, or a norm over the whole clip, would leak every frame into every
    other through the statistics). A single group keeps how channels compare within a frame, which a per-channel
    instance norm would remove.

    An initialiser applied to the whole network (nnU-Net's ``network.apply(InitWeights_He(...))``) re-initialises
    ``up_proj`` too; call :meth:`reset_parameters` afterwards to make the block the identity again.
    """

    def __init__(
        self,
        channels: int,
        num_frames: int | None = None,
        reduction: float = 1.5,
        kernel_size: int = 3,
        norm: Callable[[int], nn.Module] = frame_group_norm,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (so that padding keeps the frame count), got {kernel_size}.")
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
        if reduction <= 0:
            raise ValueError(f"reduction must be positive, got {reduction}.")
        self.channels = channels
        self.num_frames = num_frames
        self.hidden_channels = max(1, round(channels / reduction))
        self.kernel_size = kernel_size

        self.norm = norm(channels)
        self.down_proj = nn.Conv2d(channels, self.hidden_channels, kernel_size=1)
        # One filter per channel along T only; "same" zero padding, so a single frame (T = 1) sees zeros around it.
        self.temporal_conv = nn.Conv3d(
            self.hidden_channels,
            self.hidden_channels,
            kernel_size=(kernel_size, 1, 1),
            padding=(kernel_size // 2, 0, 0),
            groups=self.hidden_channels,
        )
        self.up_proj = nn.Conv2d(self.hidden_channels, channels, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero the up-projection (weights and bias), which makes the whole block the identity."""
        nn.init.zeros_(self.up_proj.weight)
        nn.init.zeros_(self.up_proj.bias)

    def _resolve_num_frames(self, num_frames: int | None) -> int:
        if num_frames is not None:
            return num_frames
        if self.num_frames is None:
            raise ValueError(
                "TemporalRelationAggregation needs the number of frames per clip: pass num_frames to the constructor "
                "or to forward()."
            )
        return self.num_frames

    def forward(self, x: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Frames ``(B * T, C, H, W)``, clip-major, to frames of the same shape.

        ``num_frames`` overrides the ``T`` given at construction for this call.
        """
        num_frames = self._resolve_num_frames(num_frames)
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"Expected frames shaped (B * T, {self.channels}, H, W), got {tuple(x.shape)}; clips shaped "
                f"(B, C, T, H, W) go through forward_clips()."
            )
        hidden = self.down_proj(self.norm(x))
        # Only this convolution needs the clip layout: the 1x1 projections act on every frame alike.
        hidden = clips_to_frames(self.temporal_conv(frames_to_clips(hidden, num_frames)))
        return x + self.up_proj(hidden)

    def forward_clips(self, x: torch.Tensor) -> torch.Tensor:
        """Clips ``(B, C, T, H, W)`` to clips of the same shape."""
        if x.dim() != 5:
            raise ValueError(f"Expected clips shaped (B, C, T, H, W), got a tensor of shape {tuple(x.shape)}.")
        return frames_to_clips(self.forward(clips_to_frames(x), num_frames=x.shape[2]), x.shape[2])

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, hidden_channels={self.hidden_channels}, num_frames={self.num_frames}, "
            f"kernel_size={self.kernel_size}"
        )
