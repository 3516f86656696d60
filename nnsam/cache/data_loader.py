"""nnU-Net's data loader, delivering with every augmented sample its embedding taken from the cache.

The loader is nnU-Net's own (case sampling, foreground oversampling, cropping, the full augmentation pipeline);
three small hooks add one thing. When a sample is cropped, a map of where each of its pixels lies in the cached frame
is attached as nnU-Net's ``regression_target``: batchgeneratorsv2 moves regression targets through exactly the
spatial transforms the image goes through (crop, rotation, scaling, elastic deformation, mirroring) and through no
intensity transform. After augmentation the map is averaged over the fusion skip's cells and the slice's cached
embedding is sampled there, at the embedding's own resolution: 256 channels are never resampled at image
resolution. The batch gains ``batch["embedding"]`` (B, D, h, w).
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
        if not self.patch_size_was_2d:
            raise ValueError("The embedding cache serves 2D configurations only.")
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
        (z, y0, x0), (_, height, width) = self._crop
        sample[COORDINATES_KEY] = frame_grid_coordinates((y0, x0), sample["image"].shape[1:], (height, width),
                                                         self.embedding_cache.key.patch_size)
        if self.sample_transforms is not None:
            sample = self.sample_transforms(**sample)
        coordinates = sample.pop(COORDINATES_KEY)
        if coordinates is None:
            raise RuntimeError("A transform in the training pipeline dropped the regression target that carries the "
                               "embedding cache's coordinates; give it an _apply_to_regr_target.")
        embedding = torch.from_numpy(np.asarray(self.embedding_cache.open(identifier)[z], dtype=np.float32))
        self._batch_embeddings.append(sample_at_cells(embedding, coordinates, self.fusion_cells))
        return sample

    def generate_train_batch(self) -> dict:
        batch = super().generate_train_batch()
        batch["embedding"] = torch.stack(self._batch_embeddings)
        return batch
