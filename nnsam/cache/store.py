"""The embedding cache on disk.

One file per preprocessed case: ``<identifier>.npy``, float16 (Z, V, D, g, g), the embedding of every slice in its
frame (see ``nnsam.cache.frames``; V = 1, or 4 with mirrored views), beside ``<identifier>.json``, which records what the embeddings were computed
from. Caches live next to nnU-Net's preprocessed data,

    nnUNet_preprocessed/DatasetXXX/nnsam_embeddings/<plans>_<configuration>/<encoder>_<input mode>_<weights>_<frame>/

one folder per key (encoder, encoder-weights SHA-256, input mode, minimum frame = patch size, views), so trainers with
different encoders can share a dataset. A case is reused only when its record names the same key, the SHA-256 of
the preprocessed data it was computed from still matches, and the embedding file's own SHA-256 matches (a truncated,
partial or altered file is rebuilt, never read). Files are written under temporary names and renamed into place,
the record last, so a build that is killed leaves nothing that passes as valid.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nnsam.cache.frames import MIRRORED_VIEWS, pad_to_frame, slice_frame, to_numpy_slices
from nnsam.networks.image_encoder import FrozenImageEncoder

CACHE_FOLDER = "nnsam_embeddings"  # under nnUNet_preprocessed/DatasetXXX
FORMAT_VERSION = 2  # 2: a views axis (Z, V, D, g, g)
EMBEDDING_DTYPE = np.float16


@dataclass(frozen=True)
class CacheKey:
    """Everything besides the preprocessed data that determines a cached embedding."""

    encoder: str
    weights_sha256: str
    input_mode: str
    patch_size: tuple[int, int]  # slices are padded to at least this (the predictor's padding)
    mirrored_views: bool = False  # also encode each frame mirrored along x, y and both (4 views, 4x the cost)

    @property
    def num_views(self) -> int:
        return len(MIRRORED_VIEWS) if self.mirrored_views else 1

    def folder_name(self) -> str:
        h, w = self.patch_size
        views = "_mirrored" if self.mirrored_views else ""
        return f"{self.encoder}_{self.input_mode}_{self.weights_sha256[:12]}_frame{h}x{w}{views}"

    def as_record(self) -> dict:
        record = asdict(self)
        record["patch_size"] = list(self.patch_size)
        return record

    @classmethod
    def for_encoder(cls, encoder: FrozenImageEncoder, patch_size: Sequence[int],
                    mirrored_views: bool = False) -> "CacheKey":
        if not encoder.has_pretrained_weights:
            raise RuntimeError("The embedding cache needs the encoder's pretrained weights loaded first.")
        return cls(encoder.name, encoder.weights_sha256, encoder.input_mode, tuple(int(p) for p in patch_size),
                   bool(mirrored_views))


def sha256_of_array(array: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and contents (independent of how nnU-Net stored it)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.shape}|{array.dtype.str}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def mirrored_views(frames: torch.Tensor, num_views: int) -> torch.Tensor:
    """(N, C, H, W) frames -> (N * num_views, C, H, W): each frame followed by its mirrored views
    (``MIRRORED_VIEWS`` order: x flips the last axis, y the one before)."""
    if num_views == 1:
        return frames
    flips = [[axis for axis, sign in zip((-1, -2), view) if sign < 0] for view in MIRRORED_VIEWS]
    views = [frames.flip(f) if f else frames for f in flips]
    return torch.stack(views, dim=1).flatten(0, 1)


@torch.no_grad()
def encode_case(encoder: FrozenImageEncoder, data, patch_size: Sequence[int], device: torch.device,
                allocate: Callable[[tuple[int, ...]], np.ndarray] | None = None, slices_per_batch: int = 1,
                on_slices: Callable[[int], None] | None = None, num_views: int = 1) -> np.ndarray:
    """Embeddings (Z, V, D, g, g) of every slice of preprocessed data (C, Z, H, W), each in its frame (and its
    mirrored views when ``num_views`` is 4), as float16.

    ``allocate(shape)`` gives the array to fill (default: in memory); the store passes a memory-mapped file, so a
    volume of hundreds of slices never has to fit into memory.
    """
    num_slices = data.shape[1]
    out = None
    for start in range(0, num_slices, slices_per_batch):
        stop = min(start + slices_per_batch, num_slices)
        slices = torch.from_numpy(to_numpy_slices(data, slice(start, stop))).permute(1, 0, 2, 3)  # (N, C, H, W)
        frames = mirrored_views(pad_to_frame(slices, patch_size), num_views)
        embedding = encoder(frames.to(device)).float().cpu().numpy()
        embedding = embedding.reshape(stop - start, num_views, *embedding.shape[1:])
        if out is None:
            shape = (num_slices, *embedding.shape[1:])
            out = allocate(shape) if allocate is not None else np.empty(shape, dtype=EMBEDDING_DTYPE)
        out[start:stop] = embedding
        if on_slices is not None:
            on_slices(stop - start)
    return out


class EmbeddingCache:
    """The cached embeddings of one key (see ``CacheKey``) under ``root``."""

    def __init__(self, root: str | Path, key: CacheKey) -> None:
        self.key = key
        self.folder = Path(root) / key.folder_name()
        self._open: dict[str, np.ndarray] = {}

    def embedding_file(self, identifier: str) -> Path:
        return self.folder / f"{identifier}.npy"

    def record_file(self, identifier: str) -> Path:
        return self.folder / f"{identifier}.json"

    def read_record(self, identifier: str) -> dict | None:
        try:
            return json.loads(self.record_file(identifier).read_text())
        except (OSError, ValueError):
            return None

    def is_valid(self, identifier: str, data_sha256: str) -> bool:
        """True only if the case's embeddings were computed with this key from exactly this data and are intact."""
        record = self.read_record(identifier)
        path = self.embedding_file(identifier)
        if (record is None or record.get("format") != FORMAT_VERSION or record.get("key") != self.key.as_record()
                or record.get("data_sha256") != data_sha256 or not path.is_file()):
            return False
        return path.stat().st_size == record.get("embedding_bytes") and sha256_of_file(path) == record.get(
            "embedding_sha256")

    def encode_and_write(self, identifier: str, data, data_sha256: str, encoder: FrozenImageEncoder,
                         device: torch.device, slices_per_batch: int = 1,
                         on_slices: Callable[[int], None] | None = None) -> None:
        """Encode the case's slices straight into its (memory-mapped) cache file, then write its record."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.record_file(identifier).unlink(missing_ok=True)  # a record never describes a file being replaced
        path = self.embedding_file(identifier)
        shape: tuple[int, ...] = ()

        def encode_into(partial: Path) -> None:
            nonlocal shape

            def allocate(wanted: tuple[int, ...]) -> np.ndarray:
                return np.lib.format.open_memmap(partial, mode="w+", dtype=EMBEDDING_DTYPE, shape=wanted)

            embeddings = encode_case(encoder, data, self.key.patch_size, device, allocate, slices_per_batch,
                                     on_slices, self.key.num_views)
            embeddings.flush()
            shape = embeddings.shape
            del embeddings

        _replace_atomically(path, encode_into)
        slice_shape = data.shape[2:]
        frame, before = slice_frame(slice_shape, self.key.patch_size)
        record = {
            "format": FORMAT_VERSION,
            "key": self.key.as_record(),
            "identifier": identifier,
            "data_sha256": data_sha256,
            "slice_shape": [int(s) for s in slice_shape],
            "frame": list(frame),
            "padding_before": list(before),
            "embedding_shape": list(shape),
            "embedding_bytes": path.stat().st_size,
            "embedding_sha256": sha256_of_file(path),
        }
        _replace_atomically(self.record_file(identifier), lambda p: p.write_text(json.dumps(record, indent=1)))

    def build(self, dataset, identifiers: Iterable[str], encoder: FrozenImageEncoder, device: torch.device,
              slices_per_batch: int = 1, progress: bool = True) -> dict[str, int]:
        """Encode every case of ``identifiers`` (nnU-Net dataset ``dataset``) whose cache entry is not valid.

        Returns counts: ``reused``, ``built`` (cases) and ``slices_encoded``.
        """
        identifiers = sorted(identifiers)
        missing: list[tuple[str, str]] = []
        for identifier in identifiers:
            data = dataset.load_case(identifier)[0]
            data_sha256 = sha256_of_array(np.asarray(data[:]))
            if not self.is_valid(identifier, data_sha256):
                missing.append((identifier, data_sha256))
        total_slices = sum(dataset.load_case(i)[0].shape[1] for i, _ in missing)
        with tqdm(total=total_slices, desc=f"nnSAM embedding cache ({self.key.encoder})", unit="slice",
                  disable=not progress or not missing) as bar:
            for identifier, data_sha256 in missing:
                data = dataset.load_case(identifier)[0]
                self.encode_and_write(identifier, data, data_sha256, encoder, device, slices_per_batch, bar.update)
        return {"reused": len(identifiers) - len(missing), "built": len(missing), "slices_encoded": total_slices}

    def open(self, identifier: str) -> np.ndarray:
        """The case's embeddings (Z, V, D, g, g), memory-mapped (only the slices read are loaded)."""
        if identifier not in self._open:
            self._open[identifier] = np.load(self.embedding_file(identifier), mmap_mode="r")
        return self._open[identifier]

    def size_bytes(self, identifiers: Iterable[str]) -> int:
        return sum(self.embedding_file(i).stat().st_size for i in identifiers)
