"""The frame a cached embedding covers.

nnU-Net's predictor pads a slice that is smaller than the patch to the patch size (zeros, centred) before it slides
its windows; a slice that fits into one window is therefore encoded, at prediction, exactly as
``encoder(padded slice)``. The cache encodes every slice in that same frame: the slice padded (centred, zeros) to at
least the patch size in every axis. For such slices, the embedding a non-augmented patch takes from the cache is the
embedding the predictor computes (tested); larger slices are encoded whole, where the predictor encodes each window.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def slice_frame(slice_shape: Sequence[int], patch_size: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(frame shape, padding before the slice in each axis): the slice padded to at least ``patch_size``."""
    frame = tuple(max(int(s), int(p)) for s, p in zip(slice_shape, patch_size))
    before = tuple((f - int(s)) // 2 for f, s in zip(frame, slice_shape))  # as acvl_utils' pad_nd_image pads
    return frame, before


# A window covering less of a slice than this (along a side) sees a clearly different picture than the whole slice:
# encoding a crop of 90 % of each side vs cropping the slice's embedding already scores only ~0.9 (docs/results.md).
MIN_WINDOW_COVERAGE = 0.9


def window_covers_slice(slice_shape: Sequence[int], patch_size: Sequence[int],
                        min_fraction: float = MIN_WINDOW_COVERAGE) -> bool:
    """Whether one window of ``patch_size`` covers at least ``min_fraction`` of the slice along every in-plane axis.
    Where it does not, the predictor encodes parts of the slice one window at a time, while the cache holds the whole
    slice's embedding, of which training takes each patch's part: the two embeddings differ."""
    return all(int(p) >= min_fraction * int(s) for s, p in zip(slice_shape[-len(patch_size):], patch_size))


def pad_to_frame(slices: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) slices padded with zeros into their frame (see ``slice_frame``)."""
    frame, before = slice_frame(slices.shape[2:], patch_size)
    after = [f - s - b for f, s, b in zip(frame, slices.shape[2:], before)]
    if not any(before) and not any(after):
        return slices
    return F.pad(slices, (before[1], after[1], before[0], after[0]), value=0.0)


def frame_grid_coordinates(first_pixel: Sequence[int], size: Sequence[int], slice_shape: Sequence[int],
                           patch_size: Sequence[int]) -> torch.Tensor:
    """Where the pixels of a crop lie in the frame, as a (3, H, W) map: x and y in grid_sample's normalised frame
    coordinates (align_corners=False) and a weight of ones.

    ``first_pixel``: the crop's first pixel in slice coordinates (negative where the crop starts in padding).
    The weight channel makes the map homogeneous: wherever nnU-Net's spatial transform samples outside the crop it
    pads with zeros, so (x·w, y·w, w) stays exact under interpolation and w tells where the map is undefined.
    """
    frame, before = slice_frame(slice_shape, patch_size)
    axes = []
    for start, n, b, f in zip(first_pixel, size, before, frame):
        pixel = torch.arange(n, dtype=torch.float32) + (start + b)
        axes.append((pixel + 0.5) / f * 2 - 1)
    y, x = torch.meshgrid(axes[0], axes[1], indexing="ij")
    return torch.stack((x, y, torch.ones_like(x)))


# The views a cache may hold of each frame, in this order: as it is, mirrored left-right (x), mirrored up-down (y),
# both; as (x, y) signs of the normalised frame coordinates.
MIRRORED_VIEWS = ((1, 1), (-1, 1), (1, -1), (-1, -1))


def mirror_view_of(grid: torch.Tensor) -> int:
    """Which of ``MIRRORED_VIEWS`` a patch's cell grid (h, w, 2: frame x, y) looks at: a view is mirrored along an
    axis where the frame coordinate runs against the patch's (for a rotated patch: the flips that leave the smallest
    residual rotation)."""
    along_columns = (grid[:, 1:, 0] - grid[:, :-1, 0]).mean() if grid.shape[1] > 1 else grid.new_tensor(1.0)
    along_rows = (grid[1:, :, 1] - grid[:-1, :, 1]).mean() if grid.shape[0] > 1 else grid.new_tensor(1.0)
    return int(along_columns < 0) + 2 * int(along_rows < 0)


def sample_at_cells(embedding: torch.Tensor, coordinates: torch.Tensor, cells: Sequence[int],
                    min_weight: float = 1e-3) -> torch.Tensor:
    """A frame's cached embedding, sampled at the centres of a patch's fusion cells.

    ``embedding``: (V, D, g, g), the frame's views: V = 1 (the frame) or 4 (``MIRRORED_VIEWS``: the frame encoded
    as it is and mirrored). ``coordinates``: the patch's (3, H, W) homogeneous frame coordinates after augmentation
    (see ``frame_grid_coordinates``); ``cells``: the fusion skip's (h, w). Averaging the coordinates over each cell
    gives its centre (exact for affine maps), which is where ``F.interpolate(embedding, (h, w), mode="bilinear")``
    samples the embedding of a patch encoded on its own. With mirrored views, a mirrored patch reads the view
    encoded in its own orientation (so a mirrored crop is exact) instead of a mirrored warp of the unmirrored one.
    Sampling is bilinear with border clamping, as that interpolation is; cells whose weight is (nearly) zero lie
    outside everything the augmentation saw and get a zero embedding.
    """
    pooled = F.adaptive_avg_pool2d(coordinates[None].float(), tuple(int(c) for c in cells))[0]
    weight = pooled[2]
    inside = weight > min_weight
    grid = (pooled[:2] / torch.where(inside, weight, torch.ones_like(weight))).permute(1, 2, 0)
    view = 0
    if embedding.shape[0] == len(MIRRORED_VIEWS):
        view = mirror_view_of(grid)
        grid = grid * grid.new_tensor(MIRRORED_VIEWS[view])
    elif embedding.shape[0] != 1:
        raise ValueError(f"A cached frame holds 1 or {len(MIRRORED_VIEWS)} views, not {embedding.shape[0]}.")
    sampled = F.grid_sample(embedding[view][None].float(), grid[None], mode="bilinear", padding_mode="border",
                            align_corners=False)[0]
    return sampled * inside.to(sampled.dtype)


def cells_at_stride(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Spatial size of a U-Net skip for ``patch_size`` after the per-stage ``strides`` (nnU-Net's convolutions pad
    so that every stride-s stage gives ceil(n / s))."""
    shape = [int(p) for p in patch_size]
    for stage in strides:
        shape = [-(-n // int(s)) for n, s in zip(shape, stage)]
    return tuple(shape)


def to_numpy_slices(data, z: int | slice) -> np.ndarray:
    """Slices of nnU-Net's preprocessed (C, Z, H, W) data (numpy or blosc2) as a float32 numpy array."""
    return np.asarray(data[:, z], dtype=np.float32)
