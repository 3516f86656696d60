import hashlib

import pytest
import torch

from nnsam.networks import checkpoints
from nnsam.networks.build_encoder import build_image_encoder, get_encoder_spec
from nnsam.networks.checkpoints import (EncoderWeightsError, download_mobilesam_checkpoint, read_encoder_state_dict,
                                        resolve_mobilesam_checkpoint)


@pytest.fixture
def clean_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(checkpoints.MOBILESAM_CHECKPOINT_ENV, raising=False)
    return tmp_path / "home" / ".cache" / "nnsam" / "mobile_sam.pt"


def test_environment_variable_comes_first(clean_home, mobilesam_checkpoint, monkeypatch):
    clean_home.parent.mkdir(parents=True)
    clean_home.write_bytes(b"cached copy")
    monkeypatch.setenv(checkpoints.MOBILESAM_CHECKPOINT_ENV, str(mobilesam_checkpoint))
    assert resolve_mobilesam_checkpoint(download=False) == mobilesam_checkpoint


def test_missing_explicit_file_is_an_error_not_a_fallback(clean_home, tmp_path, monkeypatch):
    clean_home.parent.mkdir(parents=True)
    clean_home.write_bytes(b"cached copy")
    monkeypatch.setenv(checkpoints.MOBILESAM_CHECKPOINT_ENV, str(tmp_path / "nope.pt"))
    with pytest.raises(EncoderWeightsError, match="not a file"):
        resolve_mobilesam_checkpoint()


def test_cache_is_used_when_no_variable_is_set(clean_home):
    clean_home.parent.mkdir(parents=True)
    clean_home.write_bytes(b"x")
    assert resolve_mobilesam_checkpoint(download=False) == clean_home


def test_offline_without_file_says_where_to_put_it(clean_home):
    with pytest.raises(EncoderWeightsError) as info:
        resolve_mobilesam_checkpoint(url="http://127.0.0.1:9/mobile_sam.pt")  # nothing listens on port 9
    message = str(info.value)
    assert str(clean_home) in message and checkpoints.MOBILESAM_CHECKPOINT_ENV in message
    assert not clean_home.exists() and not clean_home.with_name("mobile_sam.pt.part").exists()


def test_download_checks_size_and_sha256(clean_home, tmp_path, mobilesam_checkpoint, monkeypatch):
    wrong = tmp_path / "wrong.pt"
    wrong.write_bytes(b"not the official file")
    with pytest.raises(EncoderWeightsError, match="not the official mobile_sam.pt"):
        download_mobilesam_checkpoint(clean_home, url=wrong.as_uri())
    assert not clean_home.exists() and not clean_home.with_name("mobile_sam.pt.part").exists()

    # The same code path with a file whose size and hash we declare official: it lands in the cache.
    payload = mobilesam_checkpoint.read_bytes()
    monkeypatch.setattr(checkpoints, "MOBILESAM_SIZE", len(payload))
    monkeypatch.setattr(checkpoints, "MOBILESAM_SHA256", hashlib.sha256(payload).hexdigest())
    assert resolve_mobilesam_checkpoint(url=mobilesam_checkpoint.as_uri()) == clean_home
    assert clean_home.read_bytes() == payload


def test_truncated_file_is_a_clear_error(tmp_path, mobilesam_checkpoint):
    truncated = tmp_path / "mobile_sam.pt"
    truncated.write_bytes(mobilesam_checkpoint.read_bytes()[: 5_000_000])
    with pytest.raises(EncoderWeightsError, match="truncated or not a PyTorch checkpoint"):
        read_encoder_state_dict(truncated)


def test_wrong_keys_are_a_clear_error(tmp_path):
    not_sam = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, not_sam)
    with pytest.raises(EncoderWeightsError, match="not a SAM-family checkpoint"):
        read_encoder_state_dict(not_sam)

    # A SAM-family file for another encoder: LiteMedSAM's weights do not fit MobileSAM's TinyViT (other stem).
    encoder = build_image_encoder("mobilesam")
    with pytest.raises(EncoderWeightsError, match="do not fit this encoder"):
        encoder.load_pretrained(get_encoder_spec("litemedsam").load_pretrained_state())
    assert not bool(encoder.has_pretrained_weights)


def test_mobilesam_weights_load_from_official_layout(clean_home, mobilesam_checkpoint, monkeypatch):
    monkeypatch.setenv(checkpoints.MOBILESAM_CHECKPOINT_ENV, str(mobilesam_checkpoint))
    encoder = build_image_encoder("mobilesam", pretrained=True)
    full = torch.load(mobilesam_checkpoint, weights_only=True)
    for key, value in encoder.encoder.state_dict().items():
        assert torch.equal(value, full["image_encoder." + key])
