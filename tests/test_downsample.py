"""nnsam.data.downsample: in-plane only, spacing scaled, labels kept as labels."""
import json

import numpy as np
import SimpleITK as sitk

from nnsam.data.downsample import downsample_raw_dataset


def _write(array: np.ndarray, path, spacing):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def test_volumes_keep_their_slices_and_2d_images_shrink(tmp_path):
    source = tmp_path / "Dataset001_Src"
    (source / "imagesTr").mkdir(parents=True), (source / "labelsTr").mkdir()
    volume = np.random.default_rng(0).random((7, 40, 60)).astype(np.float32)  # z, y, x
    labels = np.zeros((7, 40, 60), np.uint8)
    labels[:, 10:30, 20:40] = 3
    _write(volume, source / "imagesTr" / "vol_0000.nii.gz", (1.5, 1.5, 10.0))
    _write(labels, source / "labelsTr" / "vol.nii.gz", (1.5, 1.5, 10.0))
    _write(volume[0], source / "imagesTr" / "img_0000.nii.gz", (0.2, 0.2))
    _write(labels[0], source / "labelsTr" / "img.nii.gz", (0.2, 0.2))
    (source / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 3},
                                                     "numTraining": 2, "file_ending": ".nii.gz"}))
    target = downsample_raw_dataset(source, tmp_path / "Dataset002_Small", 2)
    vol = sitk.ReadImage(str(target / "imagesTr" / "vol_0000.nii.gz"))
    assert vol.GetSize() == (30, 20, 7) and vol.GetSpacing() == (3.0, 3.0, 10.0)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / "vol.nii.gz")))
    assert set(np.unique(lab)) == {0, 3} and lab.shape == (7, 20, 30)
    img = sitk.ReadImage(str(target / "imagesTr" / "img_0000.nii.gz"))
    assert img.GetSize() == (30, 20) and np.allclose(img.GetSpacing(), (0.4, 0.4))
    assert json.loads((target / "dataset.json").read_text())["numTraining"] == 2


def test_isotropic_volumes_keep_their_slice_axis_the_coarsest(tmp_path):
    """ACDC's files say 1 mm on every axis: after halving in-plane, nnU-Net would slice along x unless the slice
    spacing follows."""
    source = tmp_path / "Dataset001_Iso"
    (source / "imagesTr").mkdir(parents=True), (source / "labelsTr").mkdir()
    volume = np.random.default_rng(1).random((6, 32, 28)).astype(np.float32)
    _write(volume, source / "imagesTr" / "vol_0000.nii.gz", (1.0, 1.0, 1.0))
    _write((volume > 0.5).astype(np.uint8), source / "labelsTr" / "vol.nii.gz", (1.0, 1.0, 1.0))
    (source / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1},
                                                     "numTraining": 1, "file_ending": ".nii.gz"}))
    target = downsample_raw_dataset(source, tmp_path / "Dataset002_IsoSmall", 2)
    for path in (target / "imagesTr" / "vol_0000.nii.gz", target / "labelsTr" / "vol.nii.gz"):
        image = sitk.ReadImage(str(path))
        assert image.GetSize() == (14, 16, 6) and image.GetSpacing() == (2.0, 2.0, 2.0)
        assert np.argmax(image.GetSpacing()[::-1]) == 0  # nnU-Net's order (z, y, x): z first among the coarsest
