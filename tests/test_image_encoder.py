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


def test_encoder_runs_channels_last_with_the_contiguous_result(litemedsam):
    def conv_weights_channels_last(module):
        weights = [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
        return bool(weights) and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)

    assert conv_weights_channels_last(litemedsam.encoder)  # after loading the shipped weights
    copy = build_image_encoder("litemedsam")
    copy.load_state_dict(litemedsam.state_dict())  # as from an nnSAM checkpoint
    assert conv_weights_channels_last(copy.encoder)
    x = torch.randn(2, 1, 40, 56, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fast = litemedsam(x)
        plain = litemedsam.encoder.to(memory_format=torch.contiguous_format)(litemedsam.prepare_input(x))
    litemedsam.encoder.to(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4 * float(plain.abs().max()))


def test_downsampling_to_the_encoder_input_antialiases():
    # Pixel noise on a patch larger than LiteMedSAM's 256x256 input: anti-aliasing averages it away, while
    # point-sampling (plain bilinear) keeps most of it; an image-scale pattern survives either way.
    encoder = build_image_encoder("litemedsam", input_mode="zscore")
    noise = torch.randn(1, 1, 1000, 900, generator=torch.Generator().manual_seed(0))
    assert float(encoder.prepare_input(noise).std()) < 0.35
    ramp = torch.linspace(-1, 1, 1000).view(1, 1, 1000, 1).expand(1, 1, 1000, 900)
    resized = encoder.prepare_input(ramp)[0, 0]
    assert torch.allclose(resized[:, 0], torch.linspace(-1, 1, 256), atol=0.01)


def test_non_finite_input_is_mapped_to_the_sample_minimum(litemedsam):
    x = torch.randn(2, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    clean = x.clone()
    x[0, 0, 3, 4], x[0, 0, 10, 10], x[1, 0, 20, 30] = float("nan"), float("inf"), float("-inf")
    clean[0, 0, 3, 4] = clean[0, 0, 10, 10] = x[0][torch.isfinite(x[0])].min()
    clean[1, 0, 20, 30] = x[1][torch.isfinite(x[1])].min()
    embedding = litemedsam(x)
    assert torch.isfinite(embedding).all()
    assert torch.equal(embedding, litemedsam(clean))
    all_nan = torch.full((1, 1, 32, 32), float("nan"))
    assert torch.isfinite(build_image_encoder("litemedsam", input_mode="zscore").prepare_input(all_nan)).all()


def test_eval_caches_follow_the_weights_and_the_device_dtype(litemedsam):
    attention = next(m for m in litemedsam.modules() if hasattr(m, "attention_biases"))
    assert torch.equal(attention.ab, attention.attention_biases[:, attention.attention_bias_idxs])
    assert attention.attention_biases.abs().sum() > 0  # real biases, not the zeros of a fresh TinyViT
    copy = build_image_encoder("litemedsam")
    copy.load_state_dict(litemedsam.state_dict())
    copy_attention = next(m for m in copy.modules() if hasattr(m, "attention_biases"))
    assert torch.equal(copy_attention.ab, attention.ab)
    assert copy.double().encoder.layers[1].blocks[0].attn.ab.dtype == torch.float64


@pytest.mark.parametrize("mode", ["minmax", "zscore"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_prepare_input_equals_the_plain_composition(mode, channels):
    """The cheap path (resize one channel, one fused affine map) is the plain recipe: three channels, min-max
    scaling and normalisation, then the resize."""
    from nnsam.networks.image_encoder import resize_to_square

    encoder = build_image_encoder("mobilesam", input_mode=mode)
    x = torch.randn(2, channels, 40, 56, generator=torch.Generator().manual_seed(channels)) * 3 + 1
    plain = to_three_channels(x)
    if mode == "minmax":
        plain = (minmax_per_sample(plain) - encoder.pixel_mean) / encoder.pixel_std
    expected = resize_to_square(plain, 1024)
    assert torch.allclose(encoder.prepare_input(x), expected, atol=1e-5, rtol=1e-5)
