"""TemporalRelationAggregation: identity when untrained, mixes only neighbouring frames, shapes, gradients, layouts."""
import pytest
import torch
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from nnsam.networks.temporal_relation import TemporalRelationAggregation, clips_to_frames, frames_to_clips


def _trained_like(module: TemporalRelationAggregation) -> TemporalRelationAggregation:
    # What training does to the zero-initialised up-projection: it leaves zero. Random values make every path live.
    nn.init.normal_(module.up_proj.weight, std=0.5)
    nn.init.normal_(module.up_proj.bias, std=0.1)
    return module


@pytest.mark.parametrize("batch,num_frames", [(1, 1), (1, 4), (2, 3), (3, 5)])
def test_untrained_block_is_exactly_the_identity(batch, num_frames):
    torch.manual_seed(0)
    module = TemporalRelationAggregation(16, num_frames=num_frames)
    x = torch.randn(batch * num_frames, 16, 6, 5)
    assert torch.equal(module(x), x)
    clips = torch.randn(batch, 16, num_frames, 6, 5)
    assert torch.equal(module.forward_clips(clips), clips)


def test_layers_follow_the_local_temporal_mhra():
    module = TemporalRelationAggregation(64, num_frames=4)
    assert module.hidden_channels == round(64 / 1.5) == 43
    assert isinstance(module.norm, nn.GroupNorm) and module.norm.num_groups == 1
    assert module.down_proj.kernel_size == (1, 1) and module.down_proj.out_channels == 43
    conv = module.temporal_conv
    assert conv.kernel_size == (3, 1, 1) and conv.padding == (1, 0, 0) and conv.groups == 43  # depthwise, time only
    assert module.up_proj.in_channels == 43 and module.up_proj.out_channels == 64
    assert torch.count_nonzero(module.up_proj.weight) == 0 and torch.count_nonzero(module.up_proj.bias) == 0
    assert TemporalRelationAggregation(3).hidden_channels == 2
    assert TemporalRelationAggregation(1).hidden_channels == 1


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("num_frames", [1, 2, 3, 4, 5])
def test_output_shape_for_odd_even_and_single_frame_clips(batch, num_frames):
    torch.manual_seed(1)
    module = _trained_like(TemporalRelationAggregation(8))
    x = torch.randn(batch * num_frames, 8, 7, 9)
    out = module(x, num_frames)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, x)
    assert module.forward_clips(frames_to_clips(x, num_frames)).shape == (batch, 8, num_frames, 7, 9)


def test_single_frame_sees_zero_padding_around_it():
    torch.manual_seed(2)
    module = _trained_like(TemporalRelationAggregation(6))
    x = torch.randn(2, 6, 4, 4)  # two clips of one frame
    centre_tap = module.temporal_conv.weight[:, 0, 1, 0, 0].view(1, -1, 1, 1)
    expected_hidden = module.down_proj(module.norm(x)) * centre_tap + module.temporal_conv.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(module(x, num_frames=1), x + module.up_proj(expected_hidden))


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("changed_frame", [0, 3, 6])
def test_a_frame_only_affects_its_temporal_neighbours(kernel_size, changed_frame):
    torch.manual_seed(3)
    num_frames, reach = 7, kernel_size // 2
    module = _trained_like(TemporalRelationAggregation(12, num_frames=num_frames, kernel_size=kernel_size))
    x = torch.randn(2 * num_frames, 12, 5, 5)
    changed = x.clone()
    changed[num_frames + changed_frame] += torch.randn(12, 5, 5)  # frame `changed_frame` of the second clip
    with torch.no_grad():
        difference = (module(changed) - module(x)).abs().amax(dim=(1, 2, 3))
    affected = {num_frames + t for t in range(changed_frame - reach, changed_frame + reach + 1) if 0 <= t < num_frames}
    for row in range(2 * num_frames):
        if row in affected:
            assert difference[row] > 1e-4, f"frame row {row} should see the change"  # it does mix along time
        else:
            assert difference[row] == 0, f"frame row {row} is outside the temporal kernel"


def test_no_spatial_mixing_apart_from_the_norm():
    # With the norm taken out, each pixel's output depends on the same pixel of the neighbouring frames only.
    torch.manual_seed(4)
    module = _trained_like(TemporalRelationAggregation(5, num_frames=3, norm=lambda channels: nn.Identity()))
    x = torch.randn(3, 5, 6, 6)
    changed = x.clone()
    changed[1, :, 2, 4] += 3.0
    with torch.no_grad():
        difference = (module(changed) - module(x)).abs().amax(dim=1)
    assert difference[:, 2, 4].min() > 0
    difference[:, 2, 4] = 0
    assert difference.max() == 0


def test_gradient_reaches_every_parameter():
    torch.manual_seed(5)
    module = TemporalRelationAggregation(8, num_frames=4)
    x = torch.randn(8, 8, 5, 5)
    target = torch.randn_like(x)

    nn.functional.mse_loss(module(x), target).backward()
    # Zero-initialised, only the up-projection gets a gradient (the layers below it are multiplied by its zeros);
    # that gradient is what moves it away from zero.
    assert module.up_proj.weight.grad.abs().sum() > 0 and module.up_proj.bias.grad.abs().sum() > 0
    torch.optim.SGD(module.parameters(), lr=0.1).step()

    module.zero_grad()
    nn.functional.mse_loss(module(x), target).backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_num_frames_per_call_overrides_the_constructor():
    torch.manual_seed(6)
    module = _trained_like(TemporalRelationAggregation(4, num_frames=4))
    x = torch.randn(8, 4, 3, 3)
    two_clips_of_four = module(x)
    four_clips_of_two = module(x, num_frames=2)
    assert not torch.allclose(two_clips_of_four, four_clips_of_two)
    torch.testing.assert_close(four_clips_of_two[:2], module(x[:2], num_frames=2))


def test_errors_name_the_problem():
    module = TemporalRelationAggregation(4)
    with pytest.raises(ValueError, match="num_frames"):
        module(torch.randn(6, 4, 3, 3))
    with pytest.raises(ValueError, match="whole clips"):
        module(torch.randn(6, 4, 3, 3), num_frames=4)
    with pytest.raises(ValueError, match="forward_clips"):
        module(torch.randn(2, 4, 3, 3, 3), num_frames=3)
    with pytest.raises(ValueError, match="odd"):
        TemporalRelationAggregation(4, kernel_size=2)


def test_clip_layout_helpers():
    batch, channels, num_frames = 2, 3, 4
    frames = torch.arange(batch * num_frames, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, channels, 2, 2)
    clips = frames_to_clips(frames, num_frames)
    assert clips.shape == (batch, channels, num_frames, 2, 2)
    for b in range(batch):
        for t in range(num_frames):
            assert torch.all(clips[b, :, t] == b * num_frames + t)  # clip-major: row b * T + t
    assert torch.equal(clips_to_frames(clips), frames)

    torch.manual_seed(7)
    module = _trained_like(TemporalRelationAggregation(channels))
    x = torch.randn(batch, channels, num_frames, 5, 5)
    torch.testing.assert_close(module.forward_clips(x), frames_to_clips(module(clips_to_frames(x), num_frames), 4))


def test_reset_parameters_restores_the_identity_after_nnunet_initialisation():
    torch.manual_seed(8)
    module = TemporalRelationAggregation(8, num_frames=3)
    module.apply(InitWeights_He(1e-2))  # what nnU-Net does to the whole network after building it
    x = torch.randn(6, 8, 4, 4)
    assert not torch.equal(module(x), x)
    module.reset_parameters()
    assert torch.equal(module(x), x)


def test_same_result_in_train_and_eval_with_batch_one():
    torch.manual_seed(9)
    module = _trained_like(TemporalRelationAggregation(8, num_frames=5))
    x = torch.randn(5, 8, 6, 6)
    with torch.no_grad():
        train_out = module.train()(x)
        eval_out = module.eval()(x)
    torch.testing.assert_close(train_out, eval_out)
