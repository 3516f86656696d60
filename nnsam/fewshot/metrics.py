"""Per-case, per-class segmentation metrics in physical units.

Overlap: Dice and IoU. Surface distances (from ``medpy.metric.binary``, using the voxel spacing from the image
header, so they are in mm for 2D images and 3D volumes alike):

* ``hd95_mm``: 95th percentile of the symmetric Hausdorff distance (``medpy.metric.binary.hd95``).
* ``asd_mm``: average *symmetric* surface distance (``medpy.metric.binary.assd``). medpy's ``asd`` averages only
  from prediction to reference; the symmetric version is what segmentation papers usually report as "ASD".

Conventions for empty masks, which happen in few-shot training (a missed structure) and in 3D data:

* both prediction and reference empty: dice = iou = 1, hd95 = asd = 0 (nothing to find, nothing found);
* exactly one empty: dice = iou = 0, hd95 = asd = NaN (a distance to nothing is undefined). The summary reports
  means over the defined values and says how many were undefined, rather than inventing a penalty distance.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from medpy.metric import binary


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one foreground class in one case."""

    dice: float
    iou: float
    hd95_mm: float
    asd_mm: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def read_label_image(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A label map and its spacing in array axis order, with singleton axes (2D stored as 3D) dropped."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    # SimpleITK spacing is (x, y, z); the numpy array is (z, y, x).
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    keep = [axis for axis, size in enumerate(array.shape) if size > 1]
    return np.squeeze(array), tuple(spacing[axis] for axis in keep)


def binary_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]) -> ClassMetrics:
    """Dice, IoU, HD95 and ASSD of two boolean masks; see the module docstring for the empty-mask conventions."""
    prediction = np.asarray(prediction, dtype=bool)
    reference = np.asarray(reference, dtype=bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"Shape mismatch: prediction {prediction.shape} vs reference {reference.shape}")
    pred_any, ref_any = bool(prediction.any()), bool(reference.any())
    if not pred_any and not ref_any:
        return ClassMetrics(dice=1.0, iou=1.0, hd95_mm=0.0, asd_mm=0.0)
    intersection = float(np.logical_and(prediction, reference).sum())
    total = float(prediction.sum() + reference.sum())
    dice = 2.0 * intersection / total
    iou = intersection / (total - intersection)
    if not (pred_any and ref_any):
        return ClassMetrics(dice=dice, iou=iou, hd95_mm=math.nan, asd_mm=math.nan)
    return ClassMetrics(
        dice=dice,
        iou=iou,
        hd95_mm=float(binary.hd95(prediction, reference, voxelspacing=spacing)),
        asd_mm=float(binary.assd(prediction, reference, voxelspacing=spacing)),
    )


def evaluate_case(
    prediction_path: str | Path, reference_path: str | Path, labels: dict[int, str]
) -> dict[int, ClassMetrics]:
    """Metrics for every foreground label (value -> name) of one case; spacing comes from the reference header."""
    prediction, _ = read_label_image(prediction_path)
    reference, spacing = read_label_image(reference_path)
    return {value: binary_metrics(prediction == value, reference == value, spacing) for value in labels}
