"""Per-case, per-class segmentation metrics in physical units.

Overlap: Dice and IoU. Surface distances (from ``medpy.metric.binary``, using the voxel spacing from the image
header, so they are in mm for 2D images and 3D volumes alike):

* ``hd95_mm``: 95th percentile of the symmetric Hausdorff distance (``medpy.metric.binary.hd95``).
* ``asd_mm``: average *symmetric* surface distance (``medpy.metric.binary.assd``). medpy's ``asd`` averages only
  from prediction to reference; the symmetric version is what segmentation papers usually report as "ASD".

Conventions for empty masks, which happen in few-shot training (a missed structure) and in 3D data:

* both prediction and reference empty: dice = iou = 1, hd95 = asd = 0 (nothing to find, nothing found);
* exactly one empty (a missed structure, or one predicted where there is none): dice = iou = 0 and both distances
  are the image diagonal in mm, the largest distance the image allows, as segmentation challenges score it.
  Leaving such a case out of the distance means instead would flatter the model that misses more often.
  ``distance_penalised`` marks these values so that the report can count them.

nnU-Net's ignore label (the ``labels`` entry named ``"ignore"`` in dataset.json) marks pixels without a reference
annotation; they are masked out of every metric, in prediction and reference alike.
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
    # True when exactly one of the masks is empty and the distances are the image-diagonal penalty.
    distance_penalised: bool = False

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


def image_diagonal_mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    """Length of the image's diagonal in mm: the distance charged for a structure found in only one mask."""
    return math.sqrt(sum((size * step) ** 2 for size, step in zip(shape, spacing)))


def _check_same_shape(prediction: np.ndarray, reference: np.ndarray) -> None:
    if prediction.shape != reference.shape:
        raise ValueError(f"Shape mismatch: prediction {prediction.shape} vs reference {reference.shape}")


def binary_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...]) -> ClassMetrics:
    """Dice, IoU, HD95 and ASSD of two boolean masks; see the module docstring for the empty-mask conventions."""
    prediction = np.asarray(prediction, dtype=bool)
    reference = np.asarray(reference, dtype=bool)
    _check_same_shape(prediction, reference)
    pred_any, ref_any = bool(prediction.any()), bool(reference.any())
    if not pred_any and not ref_any:
        return ClassMetrics(dice=1.0, iou=1.0, hd95_mm=0.0, asd_mm=0.0)
    intersection = float(np.logical_and(prediction, reference).sum())
    total = float(prediction.sum() + reference.sum())
    dice = 2.0 * intersection / total
    iou = intersection / (total - intersection)
    if not (pred_any and ref_any):
        penalty = image_diagonal_mm(reference.shape, spacing)
        return ClassMetrics(dice=dice, iou=iou, hd95_mm=penalty, asd_mm=penalty, distance_penalised=True)
    return ClassMetrics(
        dice=dice,
        iou=iou,
        hd95_mm=float(binary.hd95(prediction, reference, voxelspacing=spacing)),
        asd_mm=float(binary.assd(prediction, reference, voxelspacing=spacing)),
    )


def evaluate_case(
    prediction_path: str | Path,
    reference_path: str | Path,
    labels: dict[int, str],
    ignore_label: int | None = None,
) -> dict[int, ClassMetrics]:
    """Metrics for every foreground label (value -> name) of one case; spacing comes from the reference header.

    Pixels whose reference value is ``ignore_label`` count neither in the prediction nor in the reference masks.
    """
    prediction, _ = read_label_image(prediction_path)
    reference, spacing = read_label_image(reference_path)
    _check_same_shape(prediction, reference)
    annotated = np.ones(reference.shape, bool) if ignore_label is None else reference != ignore_label
    return {
        value: binary_metrics((prediction == value) & annotated, (reference == value) & annotated, spacing)
        for value in labels
    }
