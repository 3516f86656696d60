"""CoordinateAttention (the "H-W block"): shapes, gradients, attention range, position awareness, batch-1 eval."""
import pytest
import torch
from torch import nn

from nnsam.networks.coordinate_attention import CoordinateAttention


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 8, 12, 20), (3, 64, 7, 5), (2, 1, 9, 4), (1, 40, 1, 6)])
def test_output_has_the_input_shape(shape):
    torch.manual_seed(0)
    module = CoordinateAttention(shape[1])
    x = torch.randn(shape)
    out = module(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("channels,hidden", [(1, 8), (16, 8), (64, 8), (256, 8), (320, 10), (512, 16)])
def test_bottleneck_width_is_max_of_min_hidden_and_channels_over_reduction(channels, hidden):
    module = CoordinateAttention(channels)
    assert module.hidden_channels == hidden
    assert module.reduce.out_channels == hidden and module.attend_h.out_channels == channels
    assert CoordinateAttention(64, reduction=4, min_hidden=4).hidden_channels == 16
    assert CoordinateAttention(8, reduction=4, min_hidden=4).hidden_channels == 4


def test_gradient_reaches_every_parameter():
    torch.manual_seed(1)
    module = CoordinateAttention(12)
    x = torch.randn(2, 12, 10, 7)
    nn.functional.mse_loss(module(x), torch.randn_like(x)).backward()
    names = [name for name, _ in module.named_parameters()]
    expected = {"reduce.weight", "reduce.bias", "norm.weight", "norm.bias", "attend_h.weight", "attend_w.weight"}
    assert expected <= set(names)
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_attention_maps_lie_in_the_open_unit_interval_and_weight_the_input():
    torch.manual_seed(2)
    module = CoordinateAttention(16)
    x = torch.randn(2, 16, 11, 13)
    attention_h, attention_w = module.attention_maps(x)
    assert attention_h.shape == (2, 16, 11, 1) and attention_w.shape == (2, 16, 1, 13)
    for attention in (attention_h, attention_w):
        assert (attention > 0).all() and (attention < 1).all()
    torch.testing.assert_close(module(x), x * attention_h * attention_w)


def _blob(row: int, col: int, amplitude: torch.Tensor, size=(20, 18)) -> torch.Tensor:
    x = torch.zeros(1, amplitude.numel(), *size)
    x[:, :, row:row + 3, col:col + 3] = amplitude.view(1, -1, 1, 1)
    return x


@pytest.mark.parametrize("norm", [None, nn.BatchNorm2d])
def test_the_attention_follows_a_blob_along_each_axis(norm):
    torch.manual_seed(3)
    module = CoordinateAttention(8, **({} if norm is None else {"norm": norm})).eval()
    amplitude = 2 * torch.rand(8) + 2
    with torch.no_grad():
        h, w = module.attention_maps(_blob(4, 5, amplitude))
        h_down, w_down = module.attention_maps(_blob(10, 5, amplitude))  # moved 6 rows down
        h_right, w_right = module.attention_maps(_blob(4, 12, amplitude))  # moved 7 columns right

    # The maps single out the blob's rows and columns (each differs from an empty row or column in some channel) ...
    assert (h[0, :, 4:7, 0] - h[0, :, 0:1, 0]).abs().amax(dim=0).min() > 1e-2
    assert (w[0, :, 0, 5:8] - w[0, :, 0, 0:1]).abs().amax(dim=0).min() > 1e-2
    # ... and move with it: the H map shifts by the same rows, the W map stays; and the other way round.
    torch.testing.assert_close(h_down, torch.roll(h, 6, dims=2))
    torch.testing.assert_close(w_down, w)
    torch.testing.assert_close(w_right, torch.roll(w, 7, dims=3))
    torch.testing.assert_close(h_right, h)


@pytest.mark.parametrize("norm", [None, nn.BatchNorm2d])
def test_eval_with_batch_one(norm):
    torch.manual_seed(4)
    module = CoordinateAttention(24, **({} if norm is None else {"norm": norm}))
    module.train()(torch.randn(4, 24, 8, 8))  # a training step's forward (BatchNorm's running statistics move)
    module.eval()
    x = torch.randn(1, 24, 9, 7)
    with torch.no_grad():
        out = module(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if norm is nn.BatchNorm2d:
        assert isinstance(module.norm, nn.BatchNorm2d)


def test_default_norm_makes_each_sample_independent_of_the_batch():
    # The reason for GroupNorm over the paper's BatchNorm: in training too, a sample's output ignores its batch-mates.
    torch.manual_seed(5)
    module = CoordinateAttention(16).train()
    x = torch.randn(4, 16, 6, 6)
    with torch.no_grad():
        together = module(x)
        alone = torch.cat([module(x[i:i + 1]) for i in range(4)])
        train_out = module(x[:1])
        eval_out = module.eval()(x[:1])
    torch.testing.assert_close(together, alone)
    torch.testing.assert_close(train_out, eval_out)


def test_wrong_input_is_refused():
    module = CoordinateAttention(8)
    with pytest.raises(ValueError, match="8"):
        module(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError):
        CoordinateAttention(8, reduction=0)
