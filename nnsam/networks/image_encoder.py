"""The frozen SAM-family image encoder, adapted to nnU-Net patches.

nnU-Net hands the network z-scored patches with any number of channels and any (planned) size. SAM-family encoders
want three channels at a fixed square size, in the intensity range they were trained on. This module does that
mapping, runs the encoder, and makes sure nothing about the encoder ever changes:

* its parameters have ``requires_grad=False`` and it runs under ``torch.no_grad()``;
* it stays in eval mode even after ``network.train()`` (TinyViT has BatchNorm whose running statistics would
  otherwise drift with every training batch, which the official nnSAM code let happen);
* initialisers applied to a whole network (``network.apply(init)``, as the official nnSAM code did after loading
  the SAM weights) do not reach it;
* it refuses to run before pretrained weights were loaded, so a randomly initialised encoder is never used silently.

Eval-mode caches. TinyViT's attention layers keep a copy of their attention biases (``ab``) for eval mode, built
when ``.train(False)`` is called. Loading weights (our loader, or ``load_state_dict`` from an nnSAM checkpoint)
replaces the biases but not that copy, so every way weights arrive rebuilds the caches afterwards.

Channel mapping (``to_three_channels``): 1 channel is repeated, 3 channels are used as they are, any other count is
averaged into one channel which is then repeated. Intensities (``input_mode``):
``"minmax"`` (default) rescales every sample to [0, 1] and applies the encoder's own normalisation (what SAM and
MedSAM do to their inputs); ``"zscore"`` feeds nnU-Net's normalised patch as it is (the official nnSAM code's choice).
Non-finite values (NaN, ±Inf) are replaced by the sample's lowest finite value before that, so one bad pixel cannot
turn the whole embedding into NaN (the U-Net branch still sees the input as nnU-Net gives it; nnU-Net's
``--verify_dataset_integrity`` finds such images).
Resizing to the encoder's square input is an anti-aliased bilinear resize of the whole patch (plain bilinear when
enlarging), so the embedding stays spatially aligned with the patch and can be resized back onto any decoder stage.
"""
from __future__ import annotations

from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

InputMode = Literal["minmax", "zscore"]
INPUT_MODES = ("minmax", "zscore")


class NetworkDefinitionMismatch(RuntimeError):
    """A checkpoint was made by a network defined differently from the one it is loaded into."""


def check_recorded_setting(what: str, recorded: Any, expected: Any) -> None:
    """Raise ``NetworkDefinitionMismatch`` naming ``what`` when a checkpoint's recorded value differs."""
    if recorded != expected:
        raise NetworkDefinitionMismatch(
            f"This checkpoint was trained with {what}={recorded!r}, but the network it is being loaded into uses "
            f"{what}={expected!r}. Load it with the trainer it was trained with (same encoder, input mode and "
            f"fusion stride), or retrain."
        )


def describe_channel_mapping(num_channels: int) -> str:
    """How ``to_three_channels`` maps ``num_channels`` input channels, in words (for logs)."""
    if num_channels == 1:
        return "the 1 input channel is repeated into the encoder's 3 channels"
    if num_channels == 3:
        return "the 3 input channels are given to the encoder as its 3 channels"
    return (f"the {num_channels} input channels are averaged into one, which is repeated into the encoder's "
            f"3 channels")


def to_three_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 3, H, W): repeat 1 channel, keep 3, average any other count and repeat that."""
    c = x.shape[1]
    if c == 3:
        return x
    gray = x if c == 1 else x.mean(dim=1, keepdim=True)
    return gray.expand(-1, 3, -1, -1)


def replace_non_finite(x: torch.Tensor) -> torch.Tensor:
    """NaN and ±Inf replaced by the sample's lowest finite value (0 for a sample with none); no host sync."""
    finite = torch.isfinite(x)
    lowest = torch.where(finite, x, torch.full_like(x, float("inf"))).amin(dim=(1, 2, 3), keepdim=True)
    lowest = torch.where(torch.isfinite(lowest), lowest, torch.zeros_like(lowest))
    return torch.where(finite, x, lowest)


MINMAX_EPS = 1e-6  # a constant sample maps to 0 instead of dividing by zero


def sample_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample minimum and maximum of (B, C, H, W), shaped (B, 1, 1, 1)."""
    return x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)


def minmax_per_sample(x: torch.Tensor, eps: float = MINMAX_EPS) -> torch.Tensor:
    lo, hi = sample_range(x)
    return (x - lo) / (hi - lo).clamp_min(eps)


def resize_to_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to (size, size); anti-aliased, so shrinking a large patch averages instead of skipping pixels.

    (With ``antialias=True`` an axis that is enlarged gets plain bilinear interpolation.)
    """
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _rebuild_eval_caches_after_load(module: "FrozenImageEncoder", incompatible_keys: Any) -> None:
    module.rebuild_eval_caches()


class FrozenImageEncoder(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        name: str,
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
        self.name = name
        self.input_size = int(input_size)
        self.embed_dim = int(embed_dim)
        self.input_mode = input_mode
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        # SHA-256 of the file the pretrained weights came from; None until weights are loaded. A plain Python
        # attribute (saved through get_extra_state), so forward's check is no tensor read: no host-device sync and
        # no graph break under torch.compile.
        self.weights_sha256: str | None = None
        self.encoder.requires_grad_(False)
        # channels_last weights and input: the same embedding (relative difference ~5e-6) from 15-40 % less CPU time
        # per pass for both TinyViTs (measured 2026-12-03 on the 2-core CPU), and the layout CUDA's fp16 convolutions
        # prefer. Loading weights copies into these tensors, so the layout stays.
        self.encoder.to(memory_format=torch.channels_last)
        self.register_load_state_dict_post_hook(_rebuild_eval_caches_after_load)
        self.rebuild_eval_caches()

    @property
    def has_pretrained_weights(self) -> bool:
        return self.weights_sha256 is not None

    def train(self, mode: bool = True) -> "FrozenImageEncoder":
        return super().train(False)

    def apply(self, fn: Callable[[nn.Module], None]) -> "FrozenImageEncoder":
        # nn.Module.apply recurses through children's apply, so a whole-network initialiser stops here.
        fn(self)
        return self

    def rebuild_eval_caches(self) -> None:
        """Rebuild what the encoder caches for eval mode from its current weights (TinyViT's attention biases)."""
        self.encoder.train(False)

    def load_pretrained(self, encoder_state: dict[str, torch.Tensor], weights_sha256: str) -> None:
        """Load the encoder's pretrained weights (strict: every key and shape must match)."""
        from nnsam.networks.checkpoints import EncoderWeightsError

        try:
            self.encoder.load_state_dict(encoder_state, strict=True)
        except RuntimeError as e:
            details = "; ".join(str(e).splitlines()[1:4]).strip()
            raise EncoderWeightsError(
                f"The weights do not fit this encoder ({details} ...). Is it the right checkpoint for this encoder?"
            ) from e
        self.rebuild_eval_caches()
        self.weights_sha256 = weights_sha256

    # Saved as "<prefix>_extra_state" by state_dict(), so nnU-Net's checkpoints record what defines the encoder.
    def get_extra_state(self) -> dict[str, Any]:
        return {"encoder": self.name, "input_mode": self.input_mode, "weights_sha256": self.weights_sha256}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        check_recorded_setting("encoder", state["encoder"], self.name)
        check_recorded_setting("input_mode", state["input_mode"], self.input_mode)
        self.weights_sha256 = state["weights_sha256"]

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """nnU-Net patch (B, C, H, W) -> encoder input (B, 3, S, S).

        Same result as ``to_three_channels``, then min-max scaling and normalisation, then the resize, but cheaper:
        a single channel is resized before it becomes three, and min-max scaling and normalisation are one affine
        map applied after the resize (resizing commutes with per-sample affine maps: its weights sum to one).
        """
        x = replace_non_finite(x.float())
        if x.shape[1] not in (1, 3):
            x = x.mean(dim=1, keepdim=True)
        if self.input_mode == "minmax":
            lo, hi = sample_range(x)
            scale = 1.0 / ((hi - lo).clamp_min(MINMAX_EPS) * self.pixel_std)  # (B, 3, 1, 1)
            shift = -lo * scale - self.pixel_mean / self.pixel_std
            return resize_to_square(x, self.input_size) * scale + shift  # broadcasting makes 1 channel three
        return resize_to_square(x, self.input_size).expand(-1, 3, -1, -1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weights_sha256 is None:
            raise RuntimeError(
                "The SAM image encoder has no pretrained weights loaded. Train through an nnSAM trainer (it loads "
                "them) or load a trained nnSAM checkpoint; a randomly initialised encoder is never used."
            )
        return self.encoder(self.prepare_input(x).contiguous(memory_format=torch.channels_last))
