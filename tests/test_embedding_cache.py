"""The embedding cache: frames and sampling, the store (keys, invalidation, corruption), and the cached trainer in
nnU-Net's own training machinery."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from torch import nn

from nnsam.cache.frames import (cells_at_stride, frame_grid_coordinates, pad_to_frame, sample_at_cells, slice_frame,
                                window_covers_slice)
from nnsam.cache.store import CacheKey, EmbeddingCache, sha256_of_array
from nnsam.networks.image_encoder import FrozenImageEncoder


# --- frames and sampling ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(50, 70), (64, 64), (80, 50), (100, 120)])
def test_frame_is_the_predictors_padding(shape):
    patch = (64, 64)
    x = torch.randn(1, 1, *shape)
    padded, _ = pad_nd_image(x, patch, "constant", {"value": 0}, True, None)  # as nnUNetPredictor calls it
    assert torch.equal(pad_to_frame(x, patch), padded)
    frame, before = slice_frame(shape, patch)
    assert frame == tuple(padded.shape[2:])
    assert torch.equal(padded[0, 0, before[0]:before[0] + shape[0], before[1]:before[1] + shape[1]], x[0, 0])


def test_whole_frame_sampling_equals_resizing_the_embedding():
    torch.manual_seed(0)
    embedding = torch.randn(6, 16, 16)
    coordinates = frame_grid_coordinates((0, 0), (64, 80), (64, 80), (64, 80))
    sampled = sample_at_cells(embedding[None], coordinates, (8, 10))
    resized = F.interpolate(embedding[None], size=(8, 10), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(sampled, resized, atol=1e-5, rtol=1e-5)


def test_sampling_follows_crops_into_the_padding():
    # A 32x32 slice in a 64x64 frame; a crop starting 16 pixels before the slice is the frame's top-left quarter.
    torch.manual_seed(0)
    embedding = torch.randn(3, 16, 16)
    coordinates = frame_grid_coordinates((-16, -16), (32, 32), (32, 32), (64, 64))
    sampled = sample_at_cells(embedding[None], coordinates, (4, 4))
    whole = F.interpolate(embedding[None], size=(8, 8), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(sampled, whole[:, :4, :4], atol=1e-5, rtol=1e-5)


def _transformed_coordinates(transform, coordinates: torch.Tensor) -> torch.Tensor:
    sample = {"image": torch.zeros(1, *coordinates.shape[1:]), "regression_target": coordinates.clone()}
    return transform(**sample)["regression_target"]


def test_mirroring_and_rotation_through_nnunets_transforms_move_the_embedding_with_the_patch():
    torch.manual_seed(0)
    embedding = torch.randn(4, 16, 16)
    coordinates = frame_grid_coordinates((0, 0), (64, 64), (64, 64), (64, 64))
    embedding = embedding[None]  # one view
    plain = sample_at_cells(embedding, coordinates, (8, 8))

    np.random.seed(0)
    mirror = MirrorTransform(allowed_axes=(0, 1))
    params = {"axes": [1]}
    mirrored = mirror.apply({"image": torch.zeros(1, 64, 64), "regression_target": coordinates.clone()}, **params)
    torch.testing.assert_close(sample_at_cells(embedding, mirrored["regression_target"], (8, 8)), plain.flip(2),
                               atol=1e-5, rtol=1e-5)

    quarter_turn = SpatialTransform((64, 64), 0, False, p_rotation=1, rotation=(np.pi / 2, np.pi / 2))
    rotated = sample_at_cells(embedding, _transformed_coordinates(quarter_turn, coordinates), (8, 8))
    candidates = [torch.rot90(plain, k, dims=(1, 2)) for k in (1, 3)]
    assert min((rotated - c).abs().max().item() for c in candidates) < 1e-4


def test_cells_outside_everything_get_zero_embedding():
    embedding = torch.ones(1, 2, 8, 8)
    coordinates = frame_grid_coordinates((0, 0), (32, 32), (32, 32), (32, 32))
    coordinates[:, :, 16:] = 0  # what nnU-Net's spatial transform leaves where it sampled outside the crop
    sampled = sample_at_cells(embedding, coordinates, (4, 4))
    assert torch.all(sampled[:, :, :2] == 1) and torch.all(sampled[:, :, 2:] == 0)


def test_cells_at_stride():
    assert cells_at_stride((64, 80), [(1, 1), (2, 2), (2, 2), (2, 2)]) == (8, 10)
    assert cells_at_stride((65, 80), [(2, 2), (2, 1)]) == (17, 40)


# --- the store --------------------------------------------------------------------------------------------------

class _TinyEncoder(nn.Module):
    """A stand-in for TinyViT: 32x32 input -> 4 channels at 8x8, deterministic."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, kernel_size=4, stride=4)

    def forward(self, x):
        return self.conv(x)


def _encoder(input_mode="minmax", sha="a" * 64, seed: int = 0) -> FrozenImageEncoder:
    frozen = FrozenImageEncoder(_TinyEncoder(seed), "tiny", 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), embed_dim=4,
                                input_mode=input_mode)
    frozen.weights_sha256 = sha
    return frozen


class _Dataset:
    """nnU-Net's dataset interface (load_case -> data, seg, seg_prev, properties), in memory."""

    def __init__(self, cases: dict[str, np.ndarray]):
        self.cases = cases
        self.identifiers = sorted(cases)

    def load_case(self, identifier):
        return self.cases[identifier], None, None, {}


@pytest.fixture
def dataset():
    rng = np.random.default_rng(0)
    return _Dataset({f"case{i}": rng.normal(size=(1, 3, 24, 28)).astype(np.float32) for i in range(3)})


def _build(tmp_path, dataset, encoder=None, mirrored_views=False):
    encoder = encoder or _encoder()
    cache = EmbeddingCache(tmp_path, CacheKey.for_encoder(encoder, (32, 32), mirrored_views))
    counts = cache.build(dataset, dataset.identifiers, encoder, torch.device("cpu"), progress=False)
    return cache, counts


def test_store_builds_once_and_matches_the_encoder(tmp_path, dataset):
    cache, counts = _build(tmp_path, dataset)
    assert counts == {"reused": 0, "built": 3, "slices_encoded": 9}
    embeddings = cache.open("case1")
    assert embeddings.shape == (3, 1, 4, 8, 8) and embeddings.dtype == np.float16
    slices = torch.from_numpy(dataset.cases["case1"]).permute(1, 0, 2, 3)
    expected = _encoder()(pad_to_frame(slices, (32, 32)))
    torch.testing.assert_close(torch.from_numpy(np.asarray(embeddings[:, 0], dtype=np.float32)), expected,
                               atol=2e-3, rtol=2e-3)
    record = json.loads(cache.record_file("case1").read_text())
    assert record["frame"] == [32, 32] and record["padding_before"] == [4, 2]
    assert record["data_sha256"] == sha256_of_array(dataset.cases["case1"])
    assert _build(tmp_path, dataset)[1] == {"reused": 3, "built": 0, "slices_encoded": 0}


def test_store_rebuilds_a_case_whose_data_changed(tmp_path, dataset):
    cache, _ = _build(tmp_path, dataset)
    before = np.array(cache.open("case0"))
    dataset.cases["case2"] = dataset.cases["case2"] * 2 + 1
    cache, counts = _build(tmp_path, dataset)
    assert counts == {"reused": 2, "built": 1, "slices_encoded": 3}
    assert np.array_equal(np.asarray(cache.open("case0")), before)


@pytest.mark.parametrize("change", ["weights", "input_mode"])
def test_store_keys_weights_and_input_mode(tmp_path, dataset, change):
    first, _ = _build(tmp_path, dataset)
    encoder = _encoder(sha="b" * 64, seed=1) if change == "weights" else _encoder(input_mode="zscore")
    second, counts = _build(tmp_path, dataset, encoder)
    assert counts["built"] == 3 and second.folder != first.folder
    assert first.folder.is_dir()  # the other key's cache is kept (another trainer may use it)
    assert not np.array_equal(np.asarray(first.open("case0")), np.asarray(second.open("case0")))


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete_record", "delete_embeddings", "garble_record"])
def test_store_never_reads_a_damaged_entry(tmp_path, dataset, damage):
    cache, _ = _build(tmp_path, dataset)
    good = np.array(cache.open("case1"))
    path, record = cache.embedding_file("case1"), cache.record_file("case1")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "flip_byte":
        raw = bytearray(path.read_bytes())
        raw[-7] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "delete_record":
        record.unlink()
    elif damage == "delete_embeddings":
        path.unlink()
    else:
        record.write_text("{not json")
    assert not cache.is_valid("case1", sha256_of_array(dataset.cases["case1"]))
    cache, counts = _build(tmp_path, dataset)
    assert counts == {"reused": 2, "built": 1, "slices_encoded": 3}
    assert np.array_equal(np.asarray(cache.open("case1")), good)


def test_store_ignores_a_partial_write(tmp_path, dataset, monkeypatch):
    cache, _ = _build(tmp_path, dataset)
    dataset.cases["case0"] = dataset.cases["case0"] + 1

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies while the record is being written

    import nnsam.cache.store as store

    monkeypatch.setattr(store.json, "dumps", killed)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path, dataset)
    monkeypatch.undo()
    assert not cache.is_valid("case0", sha256_of_array(dataset.cases["case0"]))
    assert not list(cache.folder.glob(".*.part"))
    assert _build(tmp_path, dataset)[1]["built"] == 1


def test_mirrored_views_make_a_mirrored_patch_exact(tmp_path, dataset):
    # The tiny encoder is not mirror-equivariant (like TinyViT), so the warped single view differs from the online
    # embedding of the mirrored frame, and the mirrored view equals it.
    cache, counts = _build(tmp_path, dataset, mirrored_views=True)
    assert counts["slices_encoded"] == 9 and cache.folder.name.endswith("_mirrored")
    views = torch.from_numpy(np.asarray(cache.open("case0")[1], dtype=np.float32))
    assert views.shape == (4, 4, 8, 8)
    frame = pad_to_frame(torch.from_numpy(dataset.cases["case0"][:, 1][None]), (32, 32))
    coordinates = frame_grid_coordinates((-4, -2), (32, 32), (24, 28), (32, 32))
    for axes in ([1], [0], [0, 1]):  # MirrorTransform's spatial axes: 0 = rows (y), 1 = columns (x)
        mirror = MirrorTransform(allowed_axes=(0, 1))
        mirrored = mirror.apply({"image": frame[0].clone(), "regression_target": coordinates.clone()}, axes=axes)
        online = F.interpolate(_encoder()(mirrored["image"][None]), size=(4, 4), mode="bilinear",
                               align_corners=False)[0]
        exact = sample_at_cells(views, mirrored["regression_target"], (4, 4))
        warped = sample_at_cells(views[:1], mirrored["regression_target"], (4, 4))
        torch.testing.assert_close(exact, online, atol=5e-3, rtol=5e-3)
        assert (warped - online).abs().max() > 0.05


def test_cases_with_slices_larger_than_the_patch_are_named_in_a_note(tmp_path, dataset):
    from nnsam.trainers.embedding_cache import oversized_slices_note

    dataset.cases["a_little_wider"] = np.zeros((1, 2, 24, 34), dtype=np.float32)  # 32 px cover 94 % of 34
    dataset.identifiers = sorted(dataset.cases)
    cache, _ = _build(tmp_path, dataset)
    assert oversized_slices_note(cache, dataset.identifiers) is None  # every slice (nearly) fits the 32x32 patch
    dataset.cases["wide"] = np.zeros((1, 2, 24, 40), dtype=np.float32)
    dataset.cases["tall"] = np.zeros((1, 2, 48, 20), dtype=np.float32)
    dataset.identifiers = sorted(dataset.cases)
    cache, _ = _build(tmp_path, dataset)
    note = oversized_slices_note(cache, dataset.identifiers)
    assert "2 of 6 cases" in note and "32x32 patch" in note and "largest 48x20" in note and "_Online" in note


def test_a_window_covers_a_slice_it_spans_to_the_tolerance():
    assert window_covers_slice((100, 100), (100, 100)) and window_covers_slice((20, 30), (32, 32))
    assert window_covers_slice((1, 110, 90), (100, 90))  # leading axes (channels, depth) are not in-plane
    assert not window_covers_slice((112, 90), (100, 90)) and not window_covers_slice((90, 200), (100, 90))
