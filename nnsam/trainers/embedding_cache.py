"""How nnSAM trainers train from the embedding cache (``nnsam.cache``): the frozen encoder runs once per training
slice instead of once per augmented sample, which brings nnSAM's train step to nnU-Net's cost.

On the first ``nnUNetv2_train`` the embeddings of every slice of the fold's cases are computed (progress bar) and
stored beside nnU-Net's preprocessed data (``nnsam.cache.store``); later runs reuse them and rebuild only what
changed (data, encoder, encoder weights, input mode, patch size) or what fails its checksum. Each augmented patch
takes its embedding from its slice's, through the same spatial augmentation as the image (``nnsam.cache.data_loader``).
Clips of the ``2d_temporal`` configuration take theirs frame by frame (each frame of a sequence is a cached slice).

What the encoder sees is the whole slice (padded to the patch size, as nnU-Net's predictor pads it), not the patch.
Prediction is nnU-Net's predictor, unchanged: it encodes every sliding window, which for a slice that fits into one
window is exactly what the cache holds; where slices are larger than the patch the training log says so
(``oversized_slices_note``). Rotated, scaled and mirrored samples get the warped slice embedding, which
is close to, not equal to, the embedding of the warped slice; docs/results.md has the measured similarity and the
Dice of cached against online training (equal within the seed-to-seed spread), on which the cache became the default.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from unittest import mock

import torch.distributed as dist
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module

from nnsam.cache.data_loader import CachedEmbeddingDataLoader
from nnsam.cache.frames import MIN_WINDOW_COVERAGE, window_covers_slice
from nnsam.cache.store import CACHE_FOLDER, CacheKey, EmbeddingCache


def oversized_slices_note(cache: EmbeddingCache, identifiers: list[str]) -> str | None:
    """A note naming the cases whose slices one patch does not cover (``window_covers_slice``), ``None`` when
    every slice is covered: for those cases what training takes from the cache (a part of the whole slice's
    embedding) and what the predictor encodes (each window on its own) are not the same embedding."""
    patch = cache.key.patch_size
    shapes = {i: tuple(record["slice_shape"]) for i in identifiers
              if (record := cache.read_record(i)) is not None}
    oversized = {i: shape for i, shape in shapes.items() if not window_covers_slice(shape, patch)}
    if not oversized:
        return None
    largest = max(oversized.values(), key=lambda shape: shape[-2] * shape[-1])
    return (f"nnSAM embedding cache: {len(oversized)} of {len(shapes)} cases have slices that the "
            f"{patch[0]}x{patch[1]} patch covers less than {MIN_WINDOW_COVERAGE:.0%} of along a side (largest "
            f"{largest[-2]}x{largest[-1]}). Training takes their patches' embeddings from the whole slice's, while "
            "nnUNetv2_predict encodes each sliding window on its own, so the decoder sees somewhat different "
            "embeddings at prediction (docs/results.md, 'Embedding cache'). Where most slices are much larger than "
            "the patch, compare with the _Online trainer, which encodes patches in training as the predictor does.")


class EmbeddingCacheMixin:
    """Trains an nnSAM trainer from cached slice embeddings when ``cache_embeddings`` is set (mix in before
    nnUNetTrainer; the trainer provides ``nnsam_network()`` and loads the encoder weights before ``on_train_start``
    reaches this class)."""

    cache_embeddings: bool = True  # False: encode every augmented sample online (the _Online trainers)
    cache_mirrored_views: bool = False  # True: 4 views per slice (as is, mirrored x, y, both)
    embedding_cache: EmbeddingCache | None = None

    def frame_patch_size(self) -> tuple[int, int]:
        """The in-plane patch: the 2D plan's patch, or a ``2d_temporal`` clip's patch without its time axis."""
        return tuple(int(p) for p in self.configuration_manager.patch_size[-2:])

    def embedding_cache_root(self) -> Path:
        return (Path(self.preprocessed_dataset_folder_base) / CACHE_FOLDER
                / f"{self.plans_manager.plans_name}_{self.configuration_name}")

    def prepare_embedding_cache(self) -> EmbeddingCache:
        """Build what is missing or stale in this fold's cache (rank 0 only under DDP) and return the cache."""
        encoder = self.nnsam_network().image_encoder
        cache = EmbeddingCache(self.embedding_cache_root(),
                               CacheKey.for_encoder(encoder, self.frame_patch_size(),
                                                    self.cache_mirrored_views))
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        identifiers = sorted(set(dataset_tr.identifiers) | set(dataset_val.identifiers))
        if self.local_rank == 0:
            counts = cache.build(self.dataset_class(self.preprocessed_dataset_folder, identifiers), identifiers,
                                 encoder, self.device, slices_per_batch=8 if self.device.type == "cuda" else 1)
            self.print_to_log_file(
                f"nnSAM embedding cache {cache.folder}: {counts['reused']} cases reused, {counts['built']} built "
                f"({counts['slices_encoded']} slices encoded), {cache.size_bytes(identifiers) / 2**20:.0f} MiB.")
            note = oversized_slices_note(cache, identifiers)
            if note:
                self.print_to_log_file(note)
        if self.is_ddp:
            dist.barrier()
        return cache

    def on_train_start(self) -> None:
        if self.cache_embeddings:
            self.embedding_cache = self.prepare_embedding_cache()
        super().on_train_start()

    def get_dataloaders(self):
        if not self.cache_embeddings or self.embedding_cache is None:
            # Loaders built outside on_train_start (no cache prepared) deliver plain batches, encoded online.
            return super().get_dataloaders()
        # nnU-Net builds its loaders inside get_dataloaders; ours is nnU-Net's loader plus the embedding, so it is
        # swapped in for exactly that call instead of copying nnU-Net's method.
        loader = partial(CachedEmbeddingDataLoader, embedding_cache=self.embedding_cache,
                         fusion_cells=self.nnsam_network().fusion_cells(self.frame_patch_size()))
        with mock.patch.object(nnunet_trainer_module, "nnUNetDataLoader", loader):
            return super().get_dataloaders()

    def _with_cached_embedding(self, step, batch: dict) -> dict:
        if "embedding" not in batch:  # online trainers, and batches from outside nnU-Net's loaders
            return step(batch)
        embedding = batch["embedding"].to(self.device, non_blocking=True)
        with self.nnsam_network().given_embedding(embedding):
            return step(batch)

    def train_step(self, batch: dict) -> dict:
        return self._with_cached_embedding(super().train_step, batch)

    def validation_step(self, batch: dict) -> dict:
        return self._with_cached_embedding(super().validation_step, batch)
