"""Coordinate attention (Hou, Zhou and Feng, CVPR 2021): channel attention that keeps where along H and W it fires.

The input is averaged along W (one descriptor per row, ``C x H x 1``) and along H (one per column, ``C x 1 x W``).
Both go through one shared 1x1 convolution down to ``max(min_hidden, C // reduction)`` channels, a norm and
h-swish; then each direction gets its own 1x1 convolution back to ``C`` channels and a sigmoid. The input is
multiplied by both maps, so a channel can be weighted up in some rows and some columns only. Used as the
"H-W block" of our echocardiography networks, where the heart's position along the probe axis (H) and across the
sector (W) matters.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def single_group_norm(channels: int) -> nn.Module:
    """The default norm: one mean and variance per sample over all hidden channels and positions."""
    return nn.GroupNorm(1, channels)


class CoordinateAttention(nn.Module):
    """Coordinate attention on ``(N, C, H, W)`` features; the output has the input's shape.

    Args:
        channels: feature channels ``C``.
        reduction: the shared bottleneck has ``max(min_hidden, channels // reduction)`` channels.
        min_hidden: smallest bottleneck width (8 in the paper).
        norm: builds the bottleneck's norm from its channel count. Pass ``nn.BatchNorm2d`` to reproduce the paper.

    Why GroupNorm with one group by default instead of the paper's BatchNorm: its statistics come from the sample
    itself, so the block computes the same thing in training and eval and at any batch size. BatchNorm would, in
    training, estimate per-channel statistics from whatever else is in the batch (with batch 1, from that one
    image's ``H + W`` pooled positions) and switch to running averages in eval; nnU-Net avoids BatchNorm for the
    same reason (small batches) and uses instance norm. A per-channel instance norm is no alternative here: it
    would subtract each channel's mean over positions and with it the "which channels matter" half of the
    attention. One group over all channels and positions keeps both how channels and how positions compare.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 32,
        min_hidden: int = 8,
        norm: Callable[[int], nn.Module] = single_group_norm,
    ) -> None:
        super().__init__()
        if channels < 1 or reduction < 1 or min_hidden < 1:
            raise ValueError(
                f"channels, reduction and min_hidden must be positive, got {channels}, {reduction}, {min_hidden}."
            )
        self.channels = channels
        self.hidden_channels = max(min_hidden, channels // reduction)
        # Shared by both directions: rows and columns are embedded in one space before they are split again.
        self.reduce = nn.Conv2d(channels, self.hidden_channels, kernel_size=1)
        self.norm = norm(self.hidden_channels)
        self.act = nn.Hardswish()
        self.attend_h = nn.Conv2d(self.hidden_channels, channels, kernel_size=1)
        self.attend_w = nn.Conv2d(self.hidden_channels, channels, kernel_size=1)

    def attention_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two attention maps for ``x``: ``(N, C, H, 1)`` over rows and ``(N, C, 1, W)`` over columns, in (0, 1)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"Expected features shaped (N, {self.channels}, H, W), got {tuple(x.shape)}.")
        height, width = x.shape[2:]
        per_row = x.mean(dim=3, keepdim=True)  # (N, C, H, 1)
        per_column = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (N, C, W, 1): columns laid along the H axis
        # Both directions in one tensor so that the shared convolution and the norm see rows and columns together.
        hidden = self.act(self.norm(self.reduce(torch.cat((per_row, per_column), dim=2))))
        hidden_rows, hidden_columns = torch.split(hidden, [height, width], dim=2)
        attention_h = torch.sigmoid(self.attend_h(hidden_rows))
        attention_w = torch.sigmoid(self.attend_w(hidden_columns.transpose(2, 3)))
        return attention_h, attention_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention_h, attention_w = self.attention_maps(x)
        return x * attention_h * attention_w

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden_channels={self.hidden_channels}"
