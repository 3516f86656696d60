"""A coarser copy of a 2D nnU-Net raw dataset, for CPU budgets.

HC18's ultrasound images are about 800x540 pixels of 0.1 mm; nnU-Net plans 640x896 patches for them, far too
large to train on a CPU in minutes. Resampling by an integer factor (spacing scaled accordingly, so distances
stay in mm) keeps the anatomy and makes CPU experiments possible. Only the in-plane axes (SimpleITK's x and y) are
resampled: the slices of a 3D volume (ACDC's short-axis stacks) are kept as they are. The source folder is only read.

nnU-Net's 2D configuration slices along the axis of coarsest spacing. A volume whose slice spacing would end up finer
than its new in-plane spacing (ACDC's files say 1 mm everywhere: 2 x 2 x 1 mm after halving in-plane) would make
nnU-Net slice it sideways, so its slice spacing is raised to the in-plane one; the voxels are not touched.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import SimpleITK as sitk


IN_PLANE_AXES = 2  # SimpleITK orders axes x, y, z


def _resample(image: sitk.Image, factor: int, interpolator: int) -> sitk.Image:
    factors = [factor if axis < IN_PLANE_AXES else 1 for axis in range(image.GetDimension())]
    size = [max(1, s // f) for s, f in zip(image.GetSize(), factors)]
    spacing = [sp * f for sp, f in zip(image.GetSpacing(), factors)]
    if image.GetDimension() > IN_PLANE_AXES:  # keep the slice axis the coarsest, so nnU-Net still slices along it
        spacing[IN_PLANE_AXES:] = [max(sp, *spacing[:IN_PLANE_AXES]) for sp in spacing[IN_PLANE_AXES:]]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), spacing,
                         image.GetDirection(), 0, image.GetPixelID())


def downsample_raw_dataset(source: str | Path, target: str | Path, factor: int,
                           case_ids: list[str] | None = None) -> Path:
    """Write ``target`` (imagesTr, labelsTr, dataset.json): the cases of ``source`` (all, or ``case_ids``) with
    ``factor`` times fewer pixels along each in-plane axis (slices of 3D volumes are kept). Images are resampled
    linearly, labels by nearest neighbour."""
    source, target = Path(source), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists; choose another target folder.")
    dataset_json = json.loads((source / "dataset.json").read_text())
    ending = dataset_json.get("file_ending", ".nii.gz")
    available = sorted(p.name[: -len(ending)] for p in (source / "labelsTr").glob(f"*{ending}"))
    cases = available if case_ids is None else list(case_ids)
    missing = sorted(set(cases) - set(available))
    if missing:
        raise ValueError(f"{len(missing)} requested cases are not in {source / 'labelsTr'}, e.g. {missing[:3]}")
    (target / "imagesTr").mkdir(parents=True)
    (target / "labelsTr").mkdir()
    for case in cases:
        for channel in range(len(dataset_json["channel_names"])):
            name = f"{case}_{channel:04d}{ending}"
            image = sitk.ReadImage(str(source / "imagesTr" / name))
            sitk.WriteImage(_resample(image, factor, sitk.sitkLinear), str(target / "imagesTr" / name))
        label = sitk.ReadImage(str(source / "labelsTr" / f"{case}{ending}"))
        sitk.WriteImage(_resample(label, factor, sitk.sitkNearestNeighbor), str(target / "labelsTr" / f"{case}{ending}"))
    dataset_json["numTraining"] = len(cases)
    dataset_json["description"] = (f"{dataset_json.get('description', '')} Downsampled {factor}x in-plane by "
                                   f"nnsam.data.downsample from {source.name}.").strip()
    (target / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    for extra in ("LICENSE", "README.md"):
        if (source / extra).is_file():
            shutil.copy(source / extra, target / extra)
    return target
