"""A small SYNTHETIC dataset in the layout of the public CAMUS release (it is not patient data).

CAMUS cannot be downloaded here, so the converter and, later, the temporal training tests run on this phantom. It
mimics what matters for them: the file layout and names, the NIfTI geometry (2D key frames; half sequences stored
as 3D NIfTI with time as the third NIfTI axis, i.e. the first axis of ``sitk.GetArrayFromImage``), per-view image
sizes and anisotropic in-plane spacings that differ between patients, the four labels and the ``Info_*.cfg`` files.

Every view of a patient is a half sequence (end diastole, ED, to end systole, ES) of an apical view: a left ventricle
(LV) cavity that shrinks smoothly from ED to ES, a myocardium (MYO) horseshoe that thickens and opens at the mitral
valve, and a left atrium (LA) below the LV base that grows, with a smooth random drift of the heart's position
(probe and breathing motion; a half sequence has too few frames for its ground truth to be temporally consistent
by Painchaud et al.'s thresholds everywhere, so measure the phantom's own count), multiplicative speckle noise
whose strength follows the cfg's ``ImageQuality``, and zero intensity outside the ultrasound sector. The ED and ES
images are the sequence's first and last frames (``ED: 1``, ``ES: NbFrame``), with the same labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnsam.echo.camus import (
    CAMUS_LABELS,
    KEY_PHASES,
    NIFTI_DIR,
    SEQUENCE_PHASE,
    SPLIT_DIR,
    SPLIT_SUBSETS,
    VIEWS,
    camus_cfg_path,
    camus_image_path,
    camus_split_path,
)

IMAGE_QUALITIES = ("Good", "Medium", "Poor")
# Share of speckle in the intensity per image quality: poorer views are noisier.
SPECKLE_STRENGTH = {"Good": 0.5, "Medium": 0.7, "Poor": 0.9}
# Mean echo intensity (0..1) per tissue before speckle: blood is dark, myocardium bright.
TISSUE_INTENSITY = {"background": 0.3, "LV": 0.07, "MYO": 0.75, "LA": 0.09}
SECTOR_HALF_ANGLE = np.deg2rad(38.0)
# Probe and breathing motion: the whole heart drifts by a smooth curve (sd DRIFT_PX per axis) over the half
# sequence. Real motion over its ~0.5 s is smooth; an independent shift per frame would make the ground truth itself
# temporally inconsistent by Painchaud et al.'s metric, which real CAMUS ground truth is not.
DRIFT_PX = 1.0
MITRAL_WIDTH = 0.7  # half-width of the mitral opening, as a fraction of the cavity's short radius


@dataclass(frozen=True)
class ViewAnatomy:
    """The heart of one view at ED, in pixels, and how it moves until ES."""

    lv_center: tuple[float, float]  # (y, x)
    lv_radii: tuple[float, float]  # (long axis along y, short axis along x)
    tilt: float  # radians
    myo_thickness: float
    la_radii: tuple[float, float]
    lv_shrink: float  # LV radius at ES / LV radius at ED

    @property
    def ejection_fraction(self) -> float:
        """EF in percent, taking the LV volume as proportional to the cube of its radii (a prolate ellipsoid)."""
        return 100.0 * (1.0 - self.lv_shrink**3)


def _draw_anatomy(rng: np.random.Generator, shape: tuple[int, int]) -> ViewAnatomy:
    height, width = shape
    return ViewAnatomy(
        lv_center=(height * rng.uniform(0.38, 0.45), width * rng.uniform(0.45, 0.55)),
        lv_radii=(height * rng.uniform(0.22, 0.27), width * rng.uniform(0.11, 0.15)),
        tilt=rng.uniform(-0.2, 0.2),
        myo_thickness=min(shape) * rng.uniform(0.04, 0.06),
        la_radii=(height * rng.uniform(0.08, 0.1), width * rng.uniform(0.1, 0.13)),
        lv_shrink=rng.uniform(0.72, 0.88),
    )


def _ellipse(grid: tuple[np.ndarray, np.ndarray], center: tuple[float, float], radii: tuple[float, float],
             tilt: float) -> np.ndarray:
    yy, xx = grid
    dy, dx = yy - center[0], xx - center[1]
    cos, sin = np.cos(tilt), np.sin(tilt)
    along = (dy * cos + dx * sin) / radii[0]
    across = (-dy * sin + dx * cos) / radii[1]
    return along**2 + across**2 <= 1.0


def _sector(grid: tuple[np.ndarray, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The ultrasound fan: apex at the top centre, like CAMUS's apical views."""
    yy, xx = grid
    angle = np.arctan2(xx - shape[1] / 2.0, yy + 1.0)
    return (np.abs(angle) <= SECTOR_HALF_ANGLE) & (np.hypot(yy, xx - shape[1] / 2.0) <= 0.98 * shape[0])


def _render_frame_labels(grid: tuple[np.ndarray, np.ndarray], anatomy: ViewAnatomy, phase: float,
                         shift: np.ndarray) -> np.ndarray:
    """Labels of one frame; ``phase`` goes from 0 (ED) to 1 (ES)."""
    lv_scale = 1.0 - (1.0 - anatomy.lv_shrink) * phase
    lv_radii = (anatomy.lv_radii[0] * lv_scale, anatomy.lv_radii[1] * lv_scale)
    # The myocardium keeps its volume, so it thickens as the cavity shrinks.
    thickness = anatomy.myo_thickness * (1.0 + 0.4 * phase)
    outer_radii = (lv_radii[0] + thickness, lv_radii[1] + thickness)
    center = (anatomy.lv_center[0] + shift[0], anatomy.lv_center[1] + shift[1])
    # The LA fills while the LV empties; it sits below the LV base along the long axis.
    la_radii = (anatomy.la_radii[0] * (1.0 + 0.25 * phase), anatomy.la_radii[1] * (1.0 + 0.25 * phase))
    base_offset = outer_radii[0] + 0.8 * la_radii[0]
    la_center = (center[0] + base_offset * np.cos(anatomy.tilt), center[1] + base_offset * np.sin(anatomy.tilt))

    labels = np.zeros(grid[0].shape, dtype=np.uint8)
    labels[_ellipse(grid, la_center, la_radii, anatomy.tilt)] = CAMUS_LABELS["LA"]
    outer = _ellipse(grid, center, outer_radii, anatomy.tilt)
    labels[outer] = CAMUS_LABELS["MYO"]
    labels[_ellipse(grid, center, lv_radii, anatomy.tilt)] = CAMUS_LABELS["LV"]
    # The myocardium is a horseshoe, open at the base: the cavity reaches the atrium through the mitral valve, so
    # the LV base (where the cavity's border leaves the myocardium) exists, as in real apical views.
    labels[outer & _mitral_opening(grid, center, lv_radii, anatomy.tilt)] = CAMUS_LABELS["LV"]
    return labels


def _mitral_opening(grid: tuple[np.ndarray, np.ndarray], center: tuple[float, float], lv_radii: tuple[float, float],
                    tilt: float) -> np.ndarray:
    """The basal half of the heart within MITRAL_WIDTH of the cavity's width around the long axis."""
    yy, xx = grid
    dy, dx = yy - center[0], xx - center[1]
    cos, sin = np.cos(tilt), np.sin(tilt)
    along, across = dy * cos + dx * sin, -dy * sin + dx * cos
    return (along > 0) & (np.abs(across) <= MITRAL_WIDTH * lv_radii[1])


def _render_frame_image(rng: np.random.Generator, labels: np.ndarray, sector: np.ndarray, quality: str) -> np.ndarray:
    mean = np.zeros(labels.shape, dtype=np.float32)
    for name, value in CAMUS_LABELS.items():
        mean[labels == value] = TISSUE_INTENSITY[name]
    # Fully developed speckle is Rayleigh distributed; divide by its mean so the tissue brightness is kept.
    speckle = rng.rayleigh(scale=1.0, size=labels.shape).astype(np.float32) / np.sqrt(np.pi / 2.0)
    strength = SPECKLE_STRENGTH[quality]
    image = mean * ((1.0 - strength) + strength * speckle) * sector
    return np.clip(image * 255.0, 0, 255).astype(np.uint8)


def render_half_sequence(rng: np.random.Generator, anatomy: ViewAnatomy, shape: tuple[int, int], num_frames: int,
                         quality: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one ED->ES half sequence, both uint8 arrays of shape (time, y, x)."""
    grid = tuple(np.mgrid[: shape[0], : shape[1]].astype(np.float32))
    sector = _sector(grid, shape)
    images, labels = [], []
    amplitude, start = rng.normal(scale=DRIFT_PX, size=2), rng.uniform(0, 2 * np.pi, size=2)
    for frame in range(num_frames):
        # Cosine easing: the contraction starts and ends slowly, as in a real ejection.
        phase = 0.5 - 0.5 * np.cos(np.pi * frame / (num_frames - 1))
        drift = amplitude * np.sin(start + np.pi * frame / (num_frames - 1))
        frame_labels = _render_frame_labels(grid, anatomy, phase, drift)
        frame_labels[~sector] = 0
        labels.append(frame_labels)
        images.append(_render_frame_image(rng, frame_labels, sector, quality))
    return np.stack(images), np.stack(labels)


def _write_nifti(array: np.ndarray, spacing: tuple[float, ...], path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def _write_cfg(path: Path, fields: dict[str, object]) -> None:
    path.write_text("".join(f"{key}: {value}\n" for key, value in fields.items()))


def _write_view(rng: np.random.Generator, patient_dir: Path, view: str, frame_range: tuple[int, int],
                size_range: tuple[int, int], spacing_range_mm: tuple[float, float]) -> None:
    shape = (int(rng.integers(size_range[0], size_range[1] + 1)), int(rng.integers(size_range[0], size_range[1] + 1)))
    spacing_xy = (round(rng.uniform(*spacing_range_mm), 4), round(rng.uniform(*spacing_range_mm), 4))
    num_frames = int(rng.integers(frame_range[0], frame_range[1] + 1))
    frame_rate = int(rng.integers(25, 60))
    quality = IMAGE_QUALITIES[int(rng.integers(len(IMAGE_QUALITIES)))]
    anatomy = _draw_anatomy(rng, shape)
    images, labels = render_half_sequence(rng, anatomy, shape, num_frames, quality)

    # The time axis of the sequence gets the frame interval in ms, so that a converter which must replace it by
    # its own time spacing is tested with a value other than 1.
    sequence_spacing = (*spacing_xy, round(1000.0 / frame_rate, 3))
    _write_nifti(images, sequence_spacing, camus_image_path(patient_dir, view, SEQUENCE_PHASE))
    _write_nifti(labels, sequence_spacing, camus_image_path(patient_dir, view, SEQUENCE_PHASE, ground_truth=True))
    for phase, frame in zip(KEY_PHASES, (0, num_frames - 1)):
        _write_nifti(images[frame], spacing_xy, camus_image_path(patient_dir, view, phase))
        _write_nifti(labels[frame], spacing_xy, camus_image_path(patient_dir, view, phase, ground_truth=True))
    _write_cfg(camus_cfg_path(patient_dir, view), {
        "ED": 1,
        "ES": num_frames,
        "NbFrame": num_frames,
        "Sex": "MF"[int(rng.integers(2))],
        "Age": int(rng.integers(20, 90)),
        "ImageQuality": quality,
        "EF": round(anatomy.ejection_fraction, 1),
        "FrameRate": frame_rate,
    })


def default_split_sizes(num_patients: int) -> tuple[int, int, int]:
    """(training, validation, testing) patient counts: a quarter each for validation and testing, at least one."""
    if num_patients < 3:
        raise ValueError(f"{num_patients} patients cannot fill 3 subsets; pass split_sizes, e.g. (1, 0, 0)")
    held_out = max(1, num_patients // 4)
    return num_patients - 2 * held_out, held_out, held_out


def make_camus_phantom(
    root: str | Path,
    num_patients: int = 4,
    seed: int = 0,
    split_sizes: tuple[int, int, int] | None = None,
    frame_range: tuple[int, int] = (6, 12),
    size_range: tuple[int, int] = (96, 128),
    spacing_range_mm: tuple[float, float] = (0.2, 0.4),
) -> Path:
    """Write a CAMUS-layout phantom under ``root`` and return ``root``.

    Layout (``NNNN`` = 0001 ... ``num_patients``; both views ``2CH`` and ``4CH``)::

        root/database_nifti/patientNNNN/
            patientNNNN_{2CH,4CH}_half_sequence.nii.gz     uint8, array (time, y, x), spacing (x, y, frame
                                                           interval in ms)
            patientNNNN_{2CH,4CH}_half_sequence_gt.nii.gz  uint8 labels per frame: 0 bg, 1 LV, 2 MYO, 3 LA
            patientNNNN_{2CH,4CH}_{ED,ES}.nii.gz           2D uint8, first / last frame of the half sequence
            patientNNNN_{2CH,4CH}_{ED,ES}_gt.nii.gz        2D labels of those frames
            Info_{2CH,4CH}.cfg                             ED: 1, ES: NbFrame, NbFrame, Sex, Age, ImageQuality, EF,
                                                           FrameRate ("Key: value" lines)
        root/database_split/subgroup_{training,validation,testing}.txt   one patient name per line

    Per view the number of frames is drawn from ``frame_range``, the image height and width (independently, so
    images are usually not square) from ``size_range`` and the x and y spacings from ``spacing_range_mm``
    (inclusive ranges). ``split_sizes`` gives the (training, validation, testing) patient counts (default: see
    ``default_split_sizes``, 2/1/1 for 4 patients); patients are assigned with a seeded shuffle.

    Deterministic: the same arguments give identical files, and each patient's images depend only on ``seed`` and
    its number, so a larger phantom extends a smaller one. ``root`` may exist but must not already hold a
    ``database_nifti`` or ``database_split`` folder.
    """
    root = Path(root)
    split_sizes = default_split_sizes(num_patients) if split_sizes is None else tuple(split_sizes)
    if len(split_sizes) != len(SPLIT_SUBSETS) or sum(split_sizes) != num_patients or min(split_sizes) < 0:
        raise ValueError(f"split_sizes {split_sizes} must be 3 non-negative counts adding up to {num_patients}")
    for folder in (NIFTI_DIR, SPLIT_DIR):
        if (root / folder).exists():
            raise FileExistsError(f"{root / folder} already exists; choose another root or remove it")

    patients = [f"patient{number:04d}" for number in range(1, num_patients + 1)]
    for number, patient in enumerate(patients, start=1):
        patient_dir = root / NIFTI_DIR / patient
        patient_dir.mkdir(parents=True)
        rng = np.random.default_rng([seed, number])
        for view in VIEWS:
            _write_view(rng, patient_dir, view, frame_range, size_range, spacing_range_mm)

    order = [patients[i] for i in np.random.default_rng([seed, 0]).permutation(num_patients)]
    (root / SPLIT_DIR).mkdir(parents=True)
    start = 0
    for subset, size in zip(SPLIT_SUBSETS, split_sizes):
        members = sorted(order[start:start + size])
        start += size
        camus_split_path(root, subset).write_text("".join(f"{patient}\n" for patient in members))
    return root
