import pytest
import torch

from conftest import PLAIN_UNET, RESENC_UNET, configuration
from dynamic_network_architectures.initialization.weight_init import InitWeights_He

from nnsam.networks.build_encoder import get_encoder_spec, load_pretrained_encoder_weights
from nnsam.networks.build_nnsam import build_nnsam_network, require_2d_configuration
from nnsam.networks.fusion import find_fusion_skip, skip_strides


def _ready(network):
    # Shape tests need no pretrained weights; mark the encoder as loaded so it runs.
    network.image_encoder.weights_sha256 = "random weights, for shape tests"
    return network


@pytest.mark.parametrize("n_stages,channels,arch", [
    (5, 1, PLAIN_UNET), (6, 2, PLAIN_UNET), (7, 3, RESENC_UNET), (8, 4, PLAIN_UNET),
])
def test_output_shapes_for_planned_networks(n_stages, channels, arch):
    patch = (2 ** (n_stages - 1) * 2, 2 ** (n_stages - 1) * 2)  # smallest patch the plan would allow, x2
    network = _ready(build_nnsam_network(configuration(n_stages, patch, arch), channels, 3, True,
                                         encoder_name="litemedsam"))
    outputs = network(torch.randn(1, channels, *patch))
    assert len(outputs) == n_stages - 1  # deep supervision heads, full resolution first
    for i, out in enumerate(outputs):
        assert out.shape == (1, 3, patch[0] // 2**i, patch[1] // 2**i)

    network.decoder.deep_supervision = False  # how nnU-Net switches it off for inference
    assert network(torch.randn(1, channels, *patch)).shape == (1, 3, *patch)


def test_embedding_is_concatenated_at_the_stride_8_skip():
    network = _ready(build_nnsam_network(configuration(6, (96, 64)), 1, 2, False, encoder_name="litemedsam"))
    strides = skip_strides(network.unet)
    assert strides[network.fusion_skip] == (8, 8)

    seen = {}
    for s, stage in enumerate(network.decoder.stages):
        stage.register_forward_hook(lambda m, inp, out, s=s: seen.__setitem__(s, (inp[0].shape[1], inp[0].shape[2:])))
    network(torch.randn(1, 1, 96, 64))
    fused_stage = len(strides) - 2 - network.fusion_skip
    features = network.unet.encoder.output_channels
    for s, (channels, size) in seen.items():
        skip_channels = features[-(s + 2)]
        assert channels == 2 * skip_channels + (256 if s == fused_stage else 0)
    assert tuple(seen[fused_stage][1]) == (96 // 8, 64 // 8)


def test_embedding_changes_the_prediction():
    network = _ready(build_nnsam_network(configuration(5), 1, 2, False, encoder_name="litemedsam")).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        reference = network(x)
        network.image_encoder.encoder.neck[0].weight.mul_(0)  # a different "embedding"
        changed = network(x)
    assert not torch.allclose(reference, changed)


def test_other_fusion_stride_and_too_few_stages():
    assert find_fusion_skip([(1, 1), (2, 2), (4, 4), (8, 8), (16, 16)], 4) == 2
    assert find_fusion_skip([(1, 1), (1, 2), (2, 4), (4, 8), (8, 16)], 8) == 3  # anisotropic: largest stride
    with pytest.raises(ValueError, match="no skip connection at stride 8.*larger patch size"):
        build_nnsam_network(configuration(4, (32, 32)), 1, 2, encoder_name="litemedsam")  # skips at 1, 2, 4


def test_3d_configuration_is_refused_with_a_pointer_to_2d():
    with pytest.raises(ValueError, match="2d configuration only.*nnUNetv2_train DATASET 2d"):
        require_2d_configuration(configuration(5, (32, 32, 32), conv="Conv3d"), "3d_fullres")
    with pytest.raises(ValueError, match="2d configuration only"):
        build_nnsam_network(configuration(5, (32, 32, 32), conv="Conv3d"), 1, 2)


def test_nnunet_initialisation_of_the_whole_network_never_reaches_the_encoder():
    network = build_nnsam_network(configuration(5), 1, 2, encoder_name="litemedsam")
    load_pretrained_encoder_weights(network.image_encoder)
    state = get_encoder_spec("litemedsam").load_pretrained_state()
    unet_before = {k: v.clone() for k, v in network.unet.state_dict().items()}
    # nnU-Net's He initialisation as nnU-Net applies it (module.apply over the whole network), after loading.
    network.apply(InitWeights_He(1e-2))
    after = network.image_encoder.encoder.state_dict()
    assert all(torch.equal(after[k], state[k]) for k in state)
    assert any(not torch.equal(unet_before[k], v) for k, v in network.unet.state_dict().items())  # it did run
