"""-pretrained_weights: a U-Net trained by nnU-Net starts an nnSAM network, through nnU-Net's own entry point."""
import pytest
import torch
from nnunetv2.run import run_training
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

import nnsam.trainers  # noqa: F401  (importing the trainers is what nnU-Net does; it installs the hook)
from conftest import configuration
from nnsam.networks.build_nnsam import build_nnsam_network
from nnsam.networks.pretrained_unet import PretrainedUNetError


def plain_unet_checkpoint(path, config, num_classes: int) -> dict[str, torch.Tensor]:
    """What nnUNetTrainer.save_checkpoint writes for a plain U-Net (only the part -pretrained_weights reads)."""
    unet = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                  config.network_arch_init_kwargs_req_import, 1, num_classes, allow_init=True,
                                  deep_supervision=True)
    state = unet.state_dict()
    torch.save({"network_weights": state, "trainer_name": "nnUNetTrainer"}, path)
    return state


def test_plain_nnunet_checkpoint_loads_into_the_unet_part(tmp_path):
    config = configuration(5)
    pretrained = plain_unet_checkpoint(tmp_path / "plain.pth", config, num_classes=4)  # another task: 4 classes
    network = build_nnsam_network(config, 1, 3, encoder_name="litemedsam")
    encoder_before = {k: v.clone() for k, v in network.image_encoder.state_dict().items() if torch.is_tensor(v)}
    fused_before = network.fused_conv.weight.detach().clone()

    run_training.load_pretrained_weights(network, str(tmp_path / "plain.pth"), verbose=False)

    loaded = network.unet.state_dict()
    fused_key = next(k for k in loaded if k.endswith("convs.0.conv.weight") and loaded[k].shape[1] > pretrained[k].shape[1])
    u_net_inputs = pretrained[fused_key].shape[1]
    for key, value in pretrained.items():
        if ".seg_layers." in key:
            assert loaded[key].shape[0] == 3  # segmentation heads are not transferred (another number of classes)
        elif key.startswith(fused_key.rsplit(".conv.weight", 1)[0]) and key.endswith("weight") and value.dim() == 4:
            assert torch.equal(loaded[key][:, :u_net_inputs], value)  # the U-Net inputs of the fused conv
        else:
            assert torch.equal(loaded[key], value), key
    assert torch.equal(network.fused_conv.weight[:, u_net_inputs:], fused_before[:, u_net_inputs:])  # embedding inputs
    after = network.image_encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in encoder_before.items())


def test_incompatible_checkpoint_is_a_clear_error(tmp_path):
    plain_unet_checkpoint(tmp_path / "deeper.pth", configuration(6, (128, 128)), num_classes=3)
    network = build_nnsam_network(configuration(5), 1, 3, encoder_name="litemedsam")
    with pytest.raises(PretrainedUNetError, match="does not fit this network.*same U-Net architecture"):
        run_training.load_pretrained_weights(network, str(tmp_path / "deeper.pth"))


def test_other_networks_still_get_nnunets_own_loader(tmp_path):
    config = configuration(5)
    pretrained = plain_unet_checkpoint(tmp_path / "plain.pth", config, num_classes=3)
    unet = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                  config.network_arch_init_kwargs_req_import, 1, 3, allow_init=True)
    run_training.load_pretrained_weights(unet, str(tmp_path / "plain.pth"))
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in pretrained.items() if ".seg_layers." not in k)
