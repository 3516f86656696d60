"""nnSAM on clips: per-frame U-Net, TRA at the fusion stage, nnU-Net's 3D output layout."""
import pytest
import torch

from conftest import configuration
from nnsam.networks.build_encoder import load_pretrained_encoder_weights
from nnsam.networks.build_nnsam import build_nnsam_network
from nnsam.networks.temporal_unet import TemporalSAMFusedUNet


def _pair(deep_supervision: bool, tra_at=("skip", "embedding")):
    """A 2D nnSAM network and a temporal one with the same weights (encoder: shipped LiteMedSAM)."""
    flat = build_nnsam_network(configuration(5), 1, 3, deep_supervision, encoder_name="litemedsam")
    load_pretrained_encoder_weights(flat.image_encoder)
    temporal = build_nnsam_network(configuration(5), 1, 3, deep_supervision, encoder_name="litemedsam",
                                   network_class=TemporalSAMFusedUNet, tra_at=tra_at)
    missing, unexpected = temporal.load_state_dict(flat.state_dict(), strict=False)
    assert not unexpected and all(k.split(".")[0] in ("skip_temporal", "embedding_temporal") for k in missing)
    return flat.eval(), temporal.eval()


@pytest.fixture(scope="module")
def clips():
    return torch.randn(1, 1, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # each frame: ~2 s of encoder


def test_untrained_temporal_network_predicts_every_frame_like_the_2d_one(clips):
    flat, temporal = _pair(deep_supervision=True)
    with torch.no_grad():
        outputs = temporal(clips)
        frames = flat(clips.transpose(1, 2).reshape(3, 1, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(1, 3, 3, 64 // 2**i, 64 // 2**i) for i in range(4)]
    for clip_output, frame_output in zip(outputs, frames):
        assert torch.equal(clip_output.transpose(1, 2).reshape(frame_output.shape), frame_output)


def test_trained_tra_mixes_neighbouring_frames_only(clips):
    flat, temporal = _pair(deep_supervision=False, tra_at=("embedding",))
    assert temporal.skip_temporal is None
    torch.nn.init.normal_(temporal.embedding_temporal.up_proj.weight, std=0.5)  # as if trained
    changed = clips.clone()
    changed[0, :, 0] = torch.randn(1, 64, 64)  # the first frame
    with torch.no_grad():
        before, after = temporal(clips), temporal(changed)
    differs = [not torch.allclose(before[0, :, t], after[0, :, t]) for t in range(3)]
    assert differs == [True, True, False]  # the changed frame and its neighbour; other clips: tests/test_tra.py


def test_tra_is_trained_and_placement_is_checked(clips):
    _, temporal = _pair(deep_supervision=False)
    temporal.train()
    temporal(clips).sum().backward()
    for tra in (temporal.skip_temporal, temporal.embedding_temporal):
        assert tra.up_proj.weight.grad.abs().sum() > 0  # the zero-initialised projection learns first
    with pytest.raises(ValueError, match="TRA can sit at"):
        _pair(deep_supervision=False, tra_at=("bottleneck",))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        temporal(clips[:, :, 0])
