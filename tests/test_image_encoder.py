import pytest
import torch

from nnsam.networks.build_encoder import build_image_encoder, get_encoder_spec
from nnsam.networks.image_encoder import minmax_per_sample, to_three_channels


@pytest.fixture(scope="module")
def litemedsam():
    return build_image_encoder("litemedsam", pretrained=True)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_any_channel_count_maps_to_three(channels):
    x = torch.arange(channels, dtype=torch.float32).view(1, channels, 1, 1).expand(2, channels, 5, 7)
    rgb = to_three_channels(x)
    assert rgb.shape == (2, 3, 5, 7)
    if channels == 3:
        assert torch.equal(rgb, x)
    else:  # one channel repeated, or the mean of all channels repeated
        expected = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
        assert torch.allclose(rgb, expected)


def test_minmax_scales_each_sample_to_unit_range():
    x = torch.stack([torch.linspace(-3, 5, 48).view(3, 4, 4), torch.full((3, 4, 4), 7.0)])
    y = minmax_per_sample(x)
    assert y[0].min() == 0 and y[0].max() == 1
    assert torch.all(y[1] == 0)  # a constant sample does not divide by zero


@pytest.mark.parametrize("mode", ["minmax", "zscore"])
def test_prepare_input_for_mobilesam(mode):
    encoder = build_image_encoder("mobilesam", input_mode=mode)
    x = torch.randn(2, 1, 40, 56) * 3 + 1
    prepared = encoder.prepare_input(x)
    assert prepared.shape == (2, 3, 1024, 1024)
    if mode == "minmax":  # [0, 1] then ImageNet normalisation, as SAM normalises its 0..255 inputs
        spec = get_encoder_spec("mobilesam")
        lo = (0 - torch.tensor(spec.pixel_mean)) / torch.tensor(spec.pixel_std)
        hi = (1 - torch.tensor(spec.pixel_mean)) / torch.tensor(spec.pixel_std)
        # bilinear upsampling keeps values inside the input's range and (nearly) reaches its ends
        per_channel_min, per_channel_max = prepared.amin(dim=(0, 2, 3)), prepared.amax(dim=(0, 2, 3))
        assert torch.all(per_channel_min >= lo - 1e-4) and torch.all(per_channel_max <= hi + 1e-4)
        assert torch.all(per_channel_max - per_channel_min > 0.9 * (hi - lo))
    else:  # the official nnSAM code's choice: nnU-Net's z-scored values go in unchanged
        assert prepared.min() >= x.min() - 1e-4 and prepared.max() <= x.max() + 1e-4
        assert prepared.min() < -1 and prepared.max() > 3


def test_unknown_input_mode_and_encoder_are_refused():
    with pytest.raises(ValueError, match="input_mode"):
        build_image_encoder("litemedsam", input_mode="rgb")
    with pytest.raises(ValueError, match="available"):
        get_encoder_spec("sam_vit_h")


def test_encoder_without_pretrained_weights_refuses_to_run():
    encoder = build_image_encoder("litemedsam", pretrained=False)
    with pytest.raises(RuntimeError, match="no pretrained weights"):
        encoder(torch.zeros(1, 1, 32, 32))


def test_litemedsam_loads_shipped_weights_and_stays_frozen(litemedsam):
    shipped = get_encoder_spec("litemedsam").load_pretrained_state()
    state = litemedsam.encoder.state_dict()
    assert state.keys() == shipped.keys()
    assert all(torch.equal(state[k], shipped[k]) for k in shipped)
    assert not any(p.requires_grad for p in litemedsam.parameters())

    litemedsam.train()  # what nnU-Net does every epoch
    assert not litemedsam.training and not any(m.training for m in litemedsam.modules())
    bn_stats = {k: v.clone() for k, v in state.items() if "running" in k}
    out = litemedsam(torch.randn(1, 1, 48, 48))
    assert out.shape == (1, 256, 64, 64) and not out.requires_grad
    after = litemedsam.encoder.state_dict()
    assert all(torch.equal(after[k], bn_stats[k]) for k in bn_stats)  # BatchNorm statistics did not move
