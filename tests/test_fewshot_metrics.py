import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnsam.fewshot.metrics import binary_metrics, evaluate_case, image_diagonal_mm, read_label_image


def test_overlapping_squares_dice_and_iou() -> None:
    # Two 4x4 squares overlapping in a 2x4 band: |A∩B| = 8, |A| + |B| = 32.
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:4] = True
    b[2:6, 0:4] = True
    metrics = binary_metrics(a, b, (1.0, 1.0))
    assert metrics.dice == pytest.approx(0.5)
    assert metrics.iou == pytest.approx(8 / 24)


def test_distances_use_anisotropic_spacing() -> None:
    # Single pixels 3 columns apart; columns are 0.5 mm wide, rows 2 mm high: every distance is 1.5 mm.
    a = np.zeros((5, 8), bool)
    b = np.zeros((5, 8), bool)
    a[2, 1] = True
    b[2, 4] = True
    metrics = binary_metrics(a, b, (2.0, 0.5))
    assert metrics.dice == 0.0
    assert metrics.hd95_mm == pytest.approx(1.5)
    assert metrics.asd_mm == pytest.approx(1.5)


def test_identical_masks_are_perfect() -> None:
    mask = np.zeros((12, 12), bool)
    mask[3:9, 2:7] = True
    metrics = binary_metrics(mask, mask, (0.7, 0.7))
    assert (metrics.dice, metrics.iou, metrics.hd95_mm, metrics.asd_mm) == (1.0, 1.0, 0.0, 0.0)


def test_empty_mask_conventions() -> None:
    empty = np.zeros((6, 6), bool)
    full = empty.copy()
    full[1:3, 1:3] = True
    both_empty = binary_metrics(empty, empty, (1.0, 1.0))
    assert (both_empty.dice, both_empty.iou, both_empty.hd95_mm, both_empty.asd_mm) == (1.0, 1.0, 0.0, 0.0)
    assert not both_empty.distance_penalised
    for prediction, reference in ((empty, full), (full, empty)):
        one_empty = binary_metrics(prediction, reference, (1.0, 1.0))
        assert one_empty.dice == 0.0 and one_empty.iou == 0.0
        # A missed (or invented) structure costs the image diagonal, sqrt(6^2 + 6^2) mm, instead of dropping out.
        assert one_empty.hd95_mm == pytest.approx(math.sqrt(72)) and one_empty.asd_mm == pytest.approx(math.sqrt(72))
        assert one_empty.distance_penalised
    assert not binary_metrics(full, full, (1.0, 1.0)).distance_penalised


def test_penalty_is_the_image_diagonal_in_mm() -> None:
    # 30 rows of 0.5 mm and 40 columns of 0.3 mm: a 15 mm x 12 mm image, diagonal sqrt(15^2 + 12^2) mm.
    reference = np.zeros((30, 40), bool)
    reference[10:14, 10:14] = True
    missed = binary_metrics(np.zeros_like(reference), reference, (0.5, 0.3))
    assert missed.hd95_mm == pytest.approx(math.sqrt(15**2 + 12**2))
    assert missed.asd_mm == missed.hd95_mm
    assert image_diagonal_mm((2, 3, 4), (1.0, 2.0, 0.5)) == pytest.approx(math.sqrt(4 + 36 + 4))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="Shape mismatch"):
        binary_metrics(np.zeros((3, 3), bool), np.zeros((3, 4), bool), (1.0, 1.0))


def _write(array: np.ndarray, spacing_xyz: tuple[float, ...], path: Path) -> Path:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(path))
    return path


def test_evaluate_case_reads_3d_spacing_in_array_order(tmp_path: Path) -> None:
    # Volumes are (z, y, x) arrays; SimpleITK spacing is (x, y, z) = (0.5, 1, 3). Label 1 sits two slices apart
    # in z (6 mm); label 2 is identical in both.
    reference = np.zeros((6, 8, 8), np.uint8)
    prediction = np.zeros_like(reference)
    reference[1, 4, 4] = 1
    prediction[3, 4, 4] = 1
    reference[4, 1:3, 1:3] = 2
    prediction[4, 1:3, 1:3] = 2
    ref = _write(reference, (0.5, 1.0, 3.0), tmp_path / "ref.nii.gz")
    pred = _write(prediction, (0.5, 1.0, 3.0), tmp_path / "pred.nii.gz")
    metrics = evaluate_case(pred, ref, {1: "dot", 2: "square"})
    assert metrics[1].hd95_mm == pytest.approx(6.0)
    assert metrics[1].asd_mm == pytest.approx(6.0)
    assert metrics[2].dice == 1.0


def test_read_label_image_drops_singleton_axes(tmp_path: Path) -> None:
    path = _write(np.zeros((1, 4, 5), np.uint8), (0.3, 0.4, 9.0), tmp_path / "flat.nii.gz")
    array, spacing = read_label_image(path)
    assert array.shape == (4, 5)
    assert spacing == pytest.approx((0.4, 0.3))


def test_ignore_label_is_masked_out_of_prediction_and_reference(tmp_path: Path) -> None:
    # Reference: label 1 in rows 0-1, ignore label (3) in rows 4-5 where the annotator drew nothing.
    # Prediction: label 1 in rows 0-1 and, inside the unannotated rows, a spurious label 1 and a label 2 blob.
    reference = np.zeros((6, 6), np.uint8)
    reference[0:2, :] = 1
    reference[4:6, :] = 3
    prediction = np.zeros_like(reference)
    prediction[0:2, :] = 1
    prediction[4, :] = 1
    prediction[5, 1:3] = 2
    ref = _write(reference, (1.0, 1.0), tmp_path / "ref.nii.gz")
    pred = _write(prediction, (1.0, 1.0), tmp_path / "pred.nii.gz")
    masked = evaluate_case(pred, ref, {1: "a", 2: "b"}, ignore_label=3)
    assert masked[1].dice == 1.0 and masked[1].hd95_mm == 0.0
    assert (masked[2].dice, masked[2].hd95_mm, masked[2].distance_penalised) == (1.0, 0.0, False)  # both empty
    # Without the ignore label the same files score worse: the unannotated pixels count as errors.
    unmasked = evaluate_case(pred, ref, {1: "a", 2: "b"})
    assert unmasked[1].dice < 1.0
    assert unmasked[2].dice == 0.0 and unmasked[2].distance_penalised
