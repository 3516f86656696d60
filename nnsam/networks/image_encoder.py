"""The frozen SAM-family image encoder, adapted to nnU-Net patches.

nnU-Net hands the network z-scored patches with any number of channels and any (planned) size. SAM-family encoders
want three channels at a fixed square size, in the intensity range they were trained on. This module does that
mapping, runs the encoder, and makes sure nothing about the encoder ever changes:

* its parameters have ``requires_grad=False`` and it runs under ``torch.no_grad()``;
* it stays in eval mode even after ``network.train()`` (TinyViT has BatchNorm whose running statistics would
  otherwise drift with every training batch, which the official nnSAM code let happen);
* it refuses to run before pretrained weights were loaded, so a randomly initialised encoder is never used silently.

Channel mapping (``to_three_channels``): 1 channel is repeated, 3 channels are used as they are, any other count is
averaged into one channel which is then repeated. Intensities (``input_mode``):
``"minmax"`` (default) rescales every sample to [0, 1] and applies the encoder's own normalisation (what SAM and
MedSAM do to their inputs); ``"zscore"`` feeds nnU-Net's normalised patch as it is (the official nnSAM code's choice).
Resizing to the encoder's square input is a plain bilinear resize of the whole patch, so the embedding stays
spatially aligned with the patch and can be resized back onto any decoder stage.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nnsam.networks.checkpoints import EncoderWeightsError

InputMode = Literal["minmax", "zscore"]
INPUT_MODES = ("minmax", "zscore")


def to_three_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 3, H, W): repeat 1 channel, keep 3, average any other count and repeat that."""
    c = x.shape[1]
    if c == 3:
        return x
    gray = x if c == 1 else x.mean(dim=1, keepdim=True)
    return gray.expand(-1, 3, -1, -1)


def minmax_per_sample(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(eps)


class FrozenImageEncoder(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        input_size: int,
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
        embed_dim: int = 256,
        input_mode: InputMode = "minmax",
    ) -> None:
        super().__init__()
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
        self.encoder = encoder
        self.input_size = int(input_size)
        self.embed_dim = int(embed_dim)
        self.input_mode = input_mode
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        # Saved with the network so that a trained checkpoint records that real weights are inside.
        self.register_buffer("has_pretrained_weights", torch.zeros((), dtype=torch.bool))
        # Reading the flag is a host-device sync on a GPU; once it has been seen set, forward stops reading it.
        self._pretrained_weights_confirmed = False
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> "FrozenImageEncoder":
        return super().train(False)

    def load_pretrained(self, encoder_state: dict[str, torch.Tensor]) -> None:
        """Load the encoder's pretrained weights (strict: every key and shape must match)."""
        try:
            self.encoder.load_state_dict(encoder_state, strict=True)
        except RuntimeError as e:
            details = "; ".join(str(e).splitlines()[1:4]).strip()
            raise EncoderWeightsError(
                f"The weights do not fit this encoder ({details} ...). Is it the right checkpoint for this encoder?"
            ) from e
        self.has_pretrained_weights.fill_(True)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """nnU-Net patch (B, C, H, W) -> encoder input (B, 3, S, S)."""
        x = to_three_channels(x.float())
        if self.input_mode == "minmax":
            x = (minmax_per_sample(x) - self.pixel_mean) / self.pixel_std
        return F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._pretrained_weights_confirmed:
            self._confirm_pretrained_weights()
        return self.encoder(self.prepare_input(x))

    def _confirm_pretrained_weights(self) -> None:
        if not bool(self.has_pretrained_weights):
            raise RuntimeError(
                "The SAM image encoder has no pretrained weights loaded. Train through an nnSAM trainer (it loads "
                "them) or load a trained nnSAM checkpoint; a randomly initialised encoder is never used."
            )
        self._pretrained_weights_confirmed = True
