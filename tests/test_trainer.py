"""nnSAMTrainer inside nnU-Net's own training machinery (in-process, on the synthetic preprocessed dataset)."""
import dataclasses

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from conftest import nnunet_env
from nnsam.networks import checkpoints
from nnsam.networks.build_encoder import ENCODER_REGISTRY, get_encoder_spec
from nnsam.trainers import nnSAMTrainer, nnSAMTrainer_LiteMedSAM


def _make_trainer(trainer_class, synthetic_nnunet, monkeypatch, **env_overrides):
    for key, value in {**nnunet_env(synthetic_nnunet["root"]), "nnUNet_n_proc_DA": "0", **env_overrides}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(checkpoints.MOBILESAM_CHECKPOINT_ENV, raising=False)
    plans = load_json(synthetic_nnunet["preprocessed"] / "nnUNetPlans.json")
    plans["continue_training"] = False  # what nnU-Net's run_training adds to the plans
    dataset_json = load_json(synthetic_nnunet["preprocessed"] / "dataset.json")
    return trainer_class(plans, "2d", 0, dataset_json, device=torch.device("cpu"))


def _assert_same(state, reference):
    assert state.keys() == reference.keys()
    changed = [k for k in reference if not torch.equal(state[k], reference[k])]
    assert not changed, f"encoder tensors changed: {changed[:5]}"


def test_pretrained_encoder_survives_nnunet_init_and_training(synthetic_nnunet, monkeypatch, tmp_path):
    trainer = _make_trainer(nnSAMTrainer_LiteMedSAM, synthetic_nnunet, monkeypatch)
    trainer.on_train_start()  # nnU-Net's own start: build + He init + optimizer + dataloaders, then our weights
    network = trainer.nnsam_network()
    shipped = get_encoder_spec("litemedsam").load_pretrained_state()
    _assert_same(network.image_encoder.encoder.state_dict(), shipped)

    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in network.parameters() if p.requires_grad}
    assert in_optimizer.isdisjoint(id(p) for p in network.image_encoder.parameters())

    unet_before = {k: v.clone() for k, v in network.unet.state_dict().items()}
    trainer.on_train_epoch_start()  # puts the network in train mode, as every epoch does
    assert network.unet.training and not network.image_encoder.training
    losses = [trainer.train_step(next(trainer.dataloader_train))["loss"] for _ in range(2)]
    assert all(abs(float(loss)) < 10 for loss in losses)
    _assert_same(network.image_encoder.encoder.state_dict(), shipped)  # weights and BatchNorm statistics
    assert any(not torch.equal(unet_before[k], v) for k, v in network.unet.state_dict().items())

    # nnU-Net's checkpoint carries the encoder, so inference needs no weight file.
    path = tmp_path / "checkpoint.pth"
    trainer.save_checkpoint(str(path))
    saved = torch.load(path, map_location="cpu", weights_only=False)["network_weights"]
    assert bool(saved["image_encoder.has_pretrained_weights"])
    _assert_same({k[len("image_encoder.encoder."):]: v for k, v in saved.items()
                  if k.startswith("image_encoder.encoder.")}, shipped)
    trainer.on_train_end()

    # Resuming (--c) restores the encoder from the checkpoint and needs no weight file either.
    def no_weight_file():
        raise AssertionError("resuming must not read the pretrained weight file")

    spec = get_encoder_spec("litemedsam")
    monkeypatch.setitem(ENCODER_REGISTRY, "litemedsam", dataclasses.replace(spec, load_pretrained_state=no_weight_file))
    resumed = _make_trainer(nnSAMTrainer_LiteMedSAM, synthetic_nnunet, monkeypatch)
    resumed.initialize()
    resumed.load_checkpoint(str(path))
    resumed.load_pretrained_encoder()  # a no-op: the checkpoint brought them
    _assert_same(resumed.nnsam_network().image_encoder.encoder.state_dict(), shipped)


def test_mobilesam_trainer_without_weights_fails_before_training(synthetic_nnunet, monkeypatch):
    trainer = _make_trainer(nnSAMTrainer, synthetic_nnunet, monkeypatch)
    monkeypatch.setattr(checkpoints, "MOBILESAM_URL", "http://127.0.0.1:9/mobile_sam.pt")  # offline
    with pytest.raises(checkpoints.EncoderWeightsError, match="mobile_sam.pt"):
        trainer.on_train_start()


def test_3d_configuration_is_refused(synthetic_nnunet, monkeypatch):
    plans = load_json(synthetic_nnunet["preprocessed"] / "nnUNetPlans.json")
    plans["continue_training"] = False
    plans["configurations"]["3d_fullres"] = {"inherits_from": "2d", "architecture": {
        **plans["configurations"]["2d"]["architecture"],
        "arch_kwargs": {**plans["configurations"]["2d"]["architecture"]["arch_kwargs"],
                        "conv_op": "torch.nn.modules.conv.Conv3d"}}}
    for key, value in nnunet_env(synthetic_nnunet["root"]).items():
        monkeypatch.setenv(key, value)
    dataset_json = load_json(synthetic_nnunet["preprocessed"] / "dataset.json")
    with pytest.raises(ValueError, match="2d configuration only.*not '3d_fullres'"):
        nnSAMTrainer_LiteMedSAM(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
