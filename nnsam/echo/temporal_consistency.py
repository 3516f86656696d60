"""Temporal consistency of segmented echocardiography sequences (Painchaud et al., IEEE TMI 2022).

"Echocardiography segmentation with enforced temporal consistency" measures, on every frame of a segmented apical
sequence, a few shape attributes and calls a frame temporally inconsistent when an attribute jumps away from the
average of its two neighbours by more than a threshold. Their public code does this on min-max scaled attribute
curves; this module does the same, with its own implementation of the attributes:

* ``lv_area``: area of the LV cavity (label 1), mm².
* ``lv_base_width``: distance between the two LV base points (see :func:`lv_base_points`), mm.
* ``lv_length``: distance from the midpoint of the base to the LV pixel farthest from it (the apex), mm.
* ``lv_orientation``: angle between the image's vertical (row) axis and the LV cavity's major axis, degrees.
* ``myo_area``: area of the myocardium (label 2), mm².
* ``epi_center_x``, ``epi_center_y``: centroid of the epicardium (LV cavity and myocardium together) along columns
  and along rows, mm.

Labels: 0 background, 1 LV cavity, 2 myocardium, 3 left atrium; anything that is neither LV nor myocardium (the
atrium, the background, another label) only matters as "outside the LV and myocardium" when the base is located.
Images are expected the way CAMUS stores them: probe and apex at the top, mitral valve and atrium below.

Geometry comes from scikit-image's ``regionprops``, in physical units: ``spacing`` is the pixel size in mm as
(row spacing, column spacing), i.e. (H, W) order (SimpleITK's ``GetSpacing()`` gives (x, y), the reverse).
Coordinates are measured from the centre of the top-left pixel. The orientation follows scikit-image's convention
(counter-clockwise positive, in (-90, 90]); an upright LV is near 0, far from the wrap-around at ±90.

Scaling and thresholds. Each attribute curve ``a`` is scaled to ``(a - low) / (high - low)`` with bounds taken over
the ground truth of a whole dataset (:func:`attribute_bounds`). For an interior frame ``t`` the deviation is
``scaled(t) - (scaled(t - 1) + scaled(t + 1)) / 2``; the frame is inconsistent for that attribute when
``|deviation| > threshold``, and inconsistent when it is for any attribute. The first and last frames lack a
neighbour and never count. :data:`PAINCHAUD_THRESHOLDS` are the paper's, set with their bounds on CAMUS at native
resolution; with bounds from another dataset they are a starting point, not a calibrated value, so report the
bounds alongside the counts.

Undefined attributes. An empty structure has area 0 (defined). The orientation of an empty LV, the centre of an
empty epicardium, and the base width and length of a frame whose base points cannot be found are NaN (the original
code falls back to 0, the image centre, or NaN that then never exceeds a threshold). A NaN deviation, that is a NaN
in frame ``t`` or in one of its neighbours, counts as inconsistent for that attribute: a structure that vanishes or
loses its base for one frame behaves like an unboundedly large jump at that frame, which also flags both neighbours.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage
from skimage.measure import regionprops

LV_LABEL = 1
MYO_LABEL = 2
ATRIUM_LABEL = 3

ATTRIBUTES: tuple[str, ...] = (
    "lv_area",
    "lv_base_width",
    "lv_length",
    "lv_orientation",
    "myo_area",
    "epi_center_x",
    "epi_center_y",
)

#: Thresholds on the scaled neighbour deviation from Painchaud et al. (2022), valid with their CAMUS bounds.
PAINCHAUD_THRESHOLDS: Mapping[str, float] = MappingProxyType({
    "lv_area": 1.60e-2,
    "lv_base_width": 9.69e-2,
    "lv_length": 2.62e-2,
    "lv_orientation": 2.29e-2,
    "myo_area": 3.21e-2,
    "epi_center_x": 4.56e-3,
    "epi_center_y": 1.10e-2,
})

Spacing = tuple[float, float]
Bounds = dict[str, tuple[float, float]]

# 8-connectivity: a pixel touches the structures in the 3x3 square around it.
_SQUARE_3X3 = np.ones((3, 3), dtype=bool)


def _region(mask: np.ndarray, spacing: Spacing):
    """The regionprops of all pixels of ``mask`` as one region (connected or not), or None if it is empty."""
    regions = regionprops(mask.astype(np.uint8), spacing=spacing)
    return regions[0] if regions else None


def lv_base_points(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The two points of the LV base, as (row, column) pixel indices, or None when they cannot be found.

    Candidates are the LV cavity pixels that touch (8-connectivity) both the myocardium and a pixel that is neither
    LV nor myocardium: where the cavity's boundary leaves the myocardium, at the two ends of the myocardial
    "horseshoe" next to the mitral valve and the atrium. The candidates are split into a left and a right half at
    their mean column; in each half the deepest candidate (largest row, farthest from the apex at the top) is a base
    point, ties going to the outermost one. This is the base of Painchaud et al.'s public code; the tie rule is
    ours and makes a left-right symmetric LV give symmetric points.
    """
    lv = frame == LV_LABEL
    myo = frame == MYO_LABEL
    outside = ~(lv | myo)
    candidates = lv & ndimage.binary_dilation(myo, _SQUARE_3X3) & ndimage.binary_dilation(outside, _SQUARE_3X3)
    rows, cols = np.nonzero(candidates)
    if rows.size < 2:
        return None
    left = cols < cols.mean()
    if left.all() or not left.any():  # all candidates in one column: no left and right end to tell apart
        return None
    points = []
    for half, outward in ((left, -1), (~left, 1)):
        # Deepest first, then outermost: lexsort sorts by its last key first.
        order = np.lexsort((-outward * cols[half], -rows[half]))
        points.append(np.array([rows[half][order[0]], cols[half][order[0]]]))
    return points[0], points[1]


def _frame_attributes(frame: np.ndarray, spacing: Spacing) -> dict[str, float]:
    pixel_size = np.asarray(spacing, dtype=np.float64)
    lv = frame == LV_LABEL
    myo = frame == MYO_LABEL
    lv_region = _region(lv, spacing)
    myo_region = _region(myo, spacing)
    epi_region = _region(lv | myo, spacing)

    values = {name: np.nan for name in ATTRIBUTES}
    values["lv_area"] = float(lv_region.area) if lv_region is not None else 0.0
    values["myo_area"] = float(myo_region.area) if myo_region is not None else 0.0
    if lv_region is not None:
        values["lv_orientation"] = float(np.degrees(lv_region.orientation))
    if epi_region is not None:
        values["epi_center_y"], values["epi_center_x"] = (float(v) for v in epi_region.centroid)

    base = lv_base_points(frame) if lv_region is not None else None
    if base is not None:
        base_mm = [point * pixel_size for point in base]
        values["lv_base_width"] = float(np.linalg.norm(base_mm[1] - base_mm[0]))
        base_midpoint = (base_mm[0] + base_mm[1]) / 2
        lv_points_mm = lv_region.coords * pixel_size
        values["lv_length"] = float(np.linalg.norm(lv_points_mm - base_midpoint, axis=1).max())
    return values


def _check_sequence(segmentation: np.ndarray) -> np.ndarray:
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 3 or segmentation.shape[0] == 0:
        raise ValueError(f"Expected a label sequence shaped (T, H, W) with T >= 1, got shape {segmentation.shape}.")
    if segmentation.dtype.kind not in "iub":
        raise ValueError(
            f"Expected integer labels (0 bg, 1 LV, 2 myocardium, 3 atrium), got dtype {segmentation.dtype}."
        )
    return segmentation


def frame_attributes(segmentation: np.ndarray, spacing: Spacing = (1.0, 1.0)) -> dict[str, np.ndarray]:
    """The attributes of every frame of a label sequence.

    Args:
        segmentation: (T, H, W) integer labels, 0 background, 1 LV cavity, 2 myocardium, 3 left atrium.
        spacing: pixel size in mm, (row spacing, column spacing).

    Returns:
        For each name in :data:`ATTRIBUTES`, a float64 array of shape (T,); NaN where the attribute is undefined.
    """
    segmentation = _check_sequence(segmentation)
    if len(spacing) != 2 or min(spacing) <= 0:
        raise ValueError(f"spacing must be two positive pixel sizes (row, column) in mm, got {spacing}.")
    spacing = (float(spacing[0]), float(spacing[1]))
    per_frame = [_frame_attributes(frame, spacing) for frame in segmentation]
    return {name: np.array([values[name] for values in per_frame], dtype=np.float64) for name in ATTRIBUTES}


def _spacings_for(sequences: Sequence[np.ndarray], spacings) -> list[Spacing]:
    """One (row, column) spacing per sequence: from a list of them, one shared spacing, or 1 mm by default."""
    if spacings is None:
        return [(1.0, 1.0)] * len(sequences)
    array = np.asarray(spacings, dtype=np.float64)
    if array.shape == (2,):
        return [(float(array[0]), float(array[1]))] * len(sequences)
    if array.shape != (len(sequences), 2):
        raise ValueError(
            f"spacings must be one (row, column) pair for all sequences or one per sequence ({len(sequences)}), "
            f"got an array of shape {array.shape}."
        )
    return [(float(r), float(c)) for r, c in array]


def attribute_bounds(sequences: Sequence[np.ndarray], spacings: Sequence[Spacing] | Spacing | None = None) -> Bounds:
    """Dataset-wide (low, high) bounds of every attribute, over all frames of the given (ground-truth) sequences.

    Args:
        sequences: (T, H, W) label sequences, normally the dataset's reference segmentations.
        spacings: pixel size in mm, (row, column): one pair for all sequences or one per sequence; default 1 mm.

    Returns:
        ``{attribute: (low, high)}``, undefined (NaN) values ignored. Report these with the counts: the counts
        depend on them.

    Raises:
        ValueError: an attribute is undefined in every frame, or takes a single value (up to rounding), so it
            cannot be scaled.
    """
    if len(sequences) == 0:
        raise ValueError("attribute_bounds needs at least one sequence.")
    curves = [frame_attributes(seq, sp) for seq, sp in zip(sequences, _spacings_for(sequences, spacings))]
    bounds: Bounds = {}
    for name in ATTRIBUTES:
        values = np.concatenate([curve[name] for curve in curves])
        values = values[np.isfinite(values)]
        # "Constant" up to rounding: an upright, symmetric LV has orientations like +-1e-15 degrees, and scaling
        # by such a range would blow rounding noise up into jumps.
        if values.size == 0 or values.max() - values.min() <= 1e-9 * max(1.0, np.abs(values).max()):
            raise ValueError(
                f"Cannot derive bounds for {name!r}: it is {'undefined' if values.size == 0 else 'constant'} over "
                f"all {sum(len(s) for s in sequences)} frames, so it cannot be min-max scaled."
            )
        bounds[name] = (float(values.min()), float(values.max()))
    return bounds


def neighbour_deviation(curve: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Scaled deviation of each frame from the mean of its two neighbours; 0 at the first and last frame.

    NaN where the frame or one of its neighbours is NaN.
    """
    low, high = bounds
    if not high > low:
        raise ValueError(f"Bounds must satisfy low < high, got {bounds}.")
    scaled = (np.asarray(curve, dtype=np.float64) - low) / (high - low)
    deviation = np.zeros_like(scaled)
    deviation[1:-1] = scaled[1:-1] - (scaled[:-2] + scaled[2:]) / 2
    return deviation


def inconsistent_frames(
    attributes: Mapping[str, np.ndarray],
    bounds: Mapping[str, tuple[float, float]],
    thresholds: Mapping[str, float] = PAINCHAUD_THRESHOLDS,
) -> dict[str, np.ndarray]:
    """Per attribute in ``thresholds``, a (T,) boolean array: the frames inconsistent for it.

    Interior frames with a NaN deviation count as inconsistent; the first and last frames never do.
    """
    flags = {}
    for name, threshold in thresholds.items():
        if name not in bounds:
            raise KeyError(f"No bounds for attribute {name!r}; bounds are given for {sorted(bounds)}.")
        deviation = neighbour_deviation(attributes[name], bounds[name])
        flagged = ~(np.abs(deviation) <= threshold)  # NaN compares False, so it is flagged
        flagged[[0, -1]] = False
        flags[name] = flagged
    return flags


@dataclass(frozen=True)
class TemporalConsistencyReport:
    """Temporal inconsistencies over a set of sequences.

    ``total_inconsistent_frames`` is the TCI: frames inconsistent for at least one attribute, summed over sequences.
    ``per_attribute`` counts, per attribute, the frames inconsistent for it (a frame can count for several).
    ``frame_flags[i]`` is sequence i's (T,) boolean array of inconsistent frames, ``attribute_flags[i]`` the same
    per attribute.
    """

    num_sequences: int
    num_frames: int
    total_inconsistent_frames: int
    sequences_with_inconsistency: int
    per_attribute: dict[str, int]
    per_sequence: tuple[int, ...]
    frame_flags: tuple[np.ndarray, ...] = field(repr=False)
    attribute_flags: tuple[dict[str, np.ndarray], ...] = field(repr=False)
    bounds: Bounds
    thresholds: dict[str, float]

    @property
    def fraction_sequences_with_inconsistency(self) -> float:
        return self.sequences_with_inconsistency / self.num_sequences

    def summary(self) -> dict:
        """The counts, bounds and thresholds as plain Python values (for JSON)."""
        return {
            "num_sequences": self.num_sequences,
            "num_frames": self.num_frames,
            "total_inconsistent_frames": self.total_inconsistent_frames,
            "sequences_with_inconsistency": self.sequences_with_inconsistency,
            "fraction_sequences_with_inconsistency": self.fraction_sequences_with_inconsistency,
            "per_attribute": dict(self.per_attribute),
            "per_sequence": list(self.per_sequence),
            "bounds": {name: list(b) for name, b in self.bounds.items()},
            "thresholds": dict(self.thresholds),
        }


def temporal_consistency(
    sequences: Sequence[np.ndarray],
    bounds: Mapping[str, tuple[float, float]],
    spacings: Sequence[Spacing] | Spacing | None = None,
    thresholds: Mapping[str, float] = PAINCHAUD_THRESHOLDS,
) -> TemporalConsistencyReport:
    """Count the temporally inconsistent frames of (predicted) label sequences.

    Args:
        sequences: (T, H, W) label sequences.
        bounds: dataset-wide attribute bounds, normally :func:`attribute_bounds` of the ground truth.
        spacings: pixel size in mm, (row, column): one pair for all sequences or one per sequence; default 1 mm.
            Use the same units as for the bounds.
        thresholds: the attributes to check and their thresholds on the scaled deviation.
    """
    if len(sequences) == 0:
        raise ValueError("temporal_consistency needs at least one sequence.")
    attribute_flags = []
    frame_flags = []
    for sequence, spacing in zip(sequences, _spacings_for(sequences, spacings)):
        flags = inconsistent_frames(frame_attributes(sequence, spacing), bounds, thresholds)
        attribute_flags.append(flags)
        frame_flags.append(np.logical_or.reduce(list(flags.values())) if flags else np.zeros(len(sequence), bool))
    per_sequence = tuple(int(f.sum()) for f in frame_flags)
    return TemporalConsistencyReport(
        num_sequences=len(sequences),
        num_frames=sum(len(f) for f in frame_flags),
        total_inconsistent_frames=sum(per_sequence),
        sequences_with_inconsistency=sum(n > 0 for n in per_sequence),
        per_attribute={name: int(sum(f[name].sum() for f in attribute_flags)) for name in thresholds},
        per_sequence=per_sequence,
        frame_flags=tuple(frame_flags),
        attribute_flags=tuple(attribute_flags),
        bounds={name: (float(b[0]), float(b[1])) for name, b in bounds.items()},
        thresholds=dict(thresholds),
    )
