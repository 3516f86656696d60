"""A small synthetic 2D dataset in nnU-Net v2 raw format.

It exists so that the demo and the tests run anywhere, without downloading anything. It is *synthetic*: noisy,
ultrasound-like images of an elliptic "organ" (label 1) holding an off-centre "cavity" (label 2). Every subject
contributes two images (two "frames" of the same anatomy with a small deformation), so group-aware splitting is
exercised the same way as on real data where one patient gives several cases.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

SYNTHETIC_DATASET_NAME = "Dataset990_nnSAMSynthetic"
SYNTHETIC_LABELS = {"background": 0, "organ": 1, "cavity": 2}


def _ellipse(shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float], angle: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dy, dx = yy - center[0], xx - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / radii[1]
    v = (-dx * sin + dy * cos) / radii[0]
    return (u**2 + v**2) <= 1.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: int) -> np.ndarray:
    coarse = rng.normal(size=(shape[0] // scale + 2, shape[1] // scale + 2)).astype(np.float32)
    fine = ndimage.zoom(coarse, scale, order=3)  # smooth, bias-field-like variation
    return fine[: shape[0], : shape[1]]


def _render_case(rng: np.random.Generator, anatomy: dict, shape: tuple[int, int], num_channels: int):
    jitter = rng.normal(scale=0.04, size=4)
    cy, cx = anatomy["center"]
    ry, rx = anatomy["radii"]
    organ = _ellipse(shape, (cy * (1 + jitter[0] * 0.3), cx), (ry * (1 + jitter[1]), rx * (1 + jitter[2])), anatomy["angle"])
    cavity = _ellipse(shape, anatomy["cavity_center"], (ry * 0.45, rx * 0.4), anatomy["angle"] + jitter[3]) & organ
    seg = np.zeros(shape, dtype=np.uint8)
    seg[organ] = 1
    seg[cavity] = 2

    channels = []
    for c in range(num_channels):
        # Each channel sees the same anatomy with its own contrast, like two MR sequences would.
        contrast = 1.0 if c % 2 == 0 else -0.6
        img = 0.25 + 0.15 * _smooth_noise(rng, shape, 12)
        img = img + contrast * 0.45 * organ - contrast * 0.3 * cavity
        speckle = rng.rayleigh(scale=0.25, size=shape).astype(np.float32)
        img = img * (0.6 + speckle) + 0.05 * rng.normal(size=shape)
        channels.append((np.clip(img, 0, None) * 1000).astype(np.float32))
    return channels, seg


def make_synthetic_dataset(
    raw_dir: str | Path,
    num_subjects: int = 12,
    image_size: tuple[int, int] = (96, 112),
    num_channels: int = 1,
    spacing_mm: tuple[float, float] = (0.8, 0.8),
    seed: int = 0,
    dataset_name: str = SYNTHETIC_DATASET_NAME,
    num_test_subjects: int = 0,
) -> Path:
    """Write ``raw_dir/dataset_name`` (imagesTr, labelsTr, dataset.json; imagesTs/labelsTs if requested).

    Case ids are ``subjNNN_a`` / ``subjNNN_b``; both frames of one subject share the ``subjNNN`` prefix.
    Returns the dataset folder. An existing folder is never overwritten.
    """
    out = Path(raw_dir) / dataset_name
    if out.exists():
        raise FileExistsError(f"{out} already exists; remove it or choose another raw_dir/dataset_name.")
    rng = np.random.default_rng(seed)
    shape = (int(image_size[0]), int(image_size[1]))
    for sub in ("imagesTr", "labelsTr") + (("imagesTs", "labelsTs") if num_test_subjects else ()):
        (out / sub).mkdir(parents=True)

    def write(case_id: str, images_sub: str, labels_sub: str, anatomy: dict) -> None:
        channels, seg = _render_case(rng, anatomy, shape, num_channels)
        for c, img in enumerate(channels):
            itk = sitk.GetImageFromArray(img)
            itk.SetSpacing(tuple(float(s) for s in spacing_mm[::-1]))
            sitk.WriteImage(itk, str(out / images_sub / f"{case_id}_{c:04d}.nii.gz"))
        itk = sitk.GetImageFromArray(seg)
        itk.SetSpacing(tuple(float(s) for s in spacing_mm[::-1]))
        sitk.WriteImage(itk, str(out / labels_sub / f"{case_id}.nii.gz"))

    for subject in range(num_subjects + num_test_subjects):
        is_test = subject >= num_subjects
        anatomy = {
            "center": (shape[0] * rng.uniform(0.4, 0.6), shape[1] * rng.uniform(0.4, 0.6)),
            "radii": (shape[0] * rng.uniform(0.18, 0.3), shape[1] * rng.uniform(0.18, 0.3)),
            "angle": rng.uniform(0, np.pi),
        }
        anatomy["cavity_center"] = (
            anatomy["center"][0] + rng.uniform(-0.2, 0.2) * anatomy["radii"][0],
            anatomy["center"][1] + rng.uniform(-0.2, 0.2) * anatomy["radii"][1],
        )
        for frame in ("a", "b"):
            images_sub, labels_sub = ("imagesTs", "labelsTs") if is_test else ("imagesTr", "labelsTr")
            write(f"subj{subject:03d}_{frame}", images_sub, labels_sub, anatomy)

    dataset_json = {
        "name": dataset_name.split("_", 1)[1],
        "description": "SYNTHETIC data generated by nnsam.data.synthetic (not real patients).",
        "channel_names": {str(c): f"synthetic_us_{c}" for c in range(num_channels)},
        "labels": SYNTHETIC_LABELS,
        "numTraining": 2 * num_subjects,
        "file_ending": ".nii.gz",
    }
    (out / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return out
