"""nnU-Net's data loader, delivering with every augmented sample its embedding taken from the cache.

The loader is nnU-Net's own (case sampling, foreground oversampling, cropping, the full augmentation pipeline);
three small hooks add one thing. When a sample is cropped, a map of where each of its pixels lies in the cached frame
is attached as nnU-Net's ``regression_target``: batchgeneratorsv2 moves regression targets through exactly the
spatial transforms the image goes through (crop, rotation, scaling, elastic deformation, mirroring) and through no
intensity transform. After augmentation the map is averaged over the fusion skip's cells and the slice's cached
embedding is sampled there, at the embedding's own resolution: 256 channels are never resampled at image
resolution. The batch gains ``batch["embedding"]`` (B, D, h, w).

Clips (the ``2d_temporal`` configuration: nnU-Net's 3D loader, time as the first axis, one in-plane transform for the
whole clip) work the same way frame by frame: every frame of a case is a cached slice, the map gets a time axis, and
the batch's embedding is (B * T, D, h, w), clip-major like the temporal network's frames. Frames of a clip that lie
beyond the sequence (nnU-Net pads them with zeros) get a zero embedding.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

from nnsam.cache.frames import frame_grid_coordinates, sample_at_cells
from nnsam.cache.store import EmbeddingCache

COORDINATES_KEY = "regression_target"


class CachedEmbeddingDataLoader(nnUNetDataLoader):
    def __init__(self, *args, embedding_cache: EmbeddingCache, fusion_cells: Sequence[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.embedding_cache = embedding_cache
        self.fusion_cells = tuple(int(c) for c in fusion_cells)
        self.sample_transforms = self.transforms
        self.transforms = self._transform_with_embedding  # nnU-Net's loader calls this once per sample
        self._batch_keys: list[str] = []
        self._batch_embeddings: list[torch.Tensor] = []
        self._crop: tuple[Sequence[int], Sequence[int]] | None = None

    def get_indices(self):
        self._batch_keys = list(super().get_indices())
        self._batch_embeddings = []
        return self._batch_keys

    def get_bbox(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):
        bbox_lbs, bbox_ubs = super().get_bbox(data_shape, force_fg, class_locations, overwrite_class, verbose)
        self._crop = (tuple(int(v) for v in bbox_lbs), tuple(int(s) for s in data_shape))
        return bbox_lbs, bbox_ubs

    def _transform_with_embedding(self, **sample) -> dict:
        identifier = self._batch_keys[len(self._batch_embeddings)]
        (first_frame, y0, x0), (num_frames, height, width) = self._crop
        in_plane = frame_grid_coordinates((y0, x0), sample["image"].shape[-2:], (height, width),
                                          self.embedding_cache.key.patch_size)
        clip = sample["image"].dim() == 4  # (C, T, H, W); a 2D sample is (C, H, W), one frame
        sample[COORDINATES_KEY] = (in_plane[:, None].expand(-1, sample["image"].shape[1], -1, -1).contiguous()
                                   if clip else in_plane)
        if self.sample_transforms is not None:
            sample = self.sample_transforms(**sample)
        coordinates = sample.pop(COORDINATES_KEY)
        if coordinates is None:
            raise RuntimeError("A transform in the training pipeline dropped the regression target that carries the "
                               "embedding cache's coordinates; give it an _apply_to_regr_target.")
        if not clip:
            coordinates = coordinates[:, None]
        cached = self.embedding_cache.open(identifier)
        frames = []
        for t in range(coordinates.shape[1]):
            frame = first_frame + t
            if 0 <= frame < num_frames:
                embedding = torch.from_numpy(np.asarray(cached[frame], dtype=np.float32))
                frames.append(sample_at_cells(embedding, coordinates[:, t], self.fusion_cells))
            else:  # padding beyond the sequence: nothing was encoded there
                frames.append(torch.zeros(cached.shape[2], *self.fusion_cells))
        self._batch_embeddings.append(torch.stack(frames))
        return sample

    def generate_train_batch(self) -> dict:
        batch = super().generate_train_batch()
        batch["embedding"] = torch.cat(self._batch_embeddings)  # (B * T, D, h, w), clip-major; T = 1 in 2D
        return batch
