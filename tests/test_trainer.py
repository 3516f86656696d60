"""nnSAMTrainer inside nnU-Net's own training machinery (in-process, on the synthetic preprocessed dataset)."""
import dataclasses

import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from conftest import nnunet_env, trace_compile_without_codegen
from nnsam.networks import checkpoints
from nnsam.networks.build_encoder import ENCODER_REGISTRY, get_encoder_spec
from nnsam.networks.checkpoints import sha256_of
from nnsam.trainers import nnSAMTrainer, nnSAMTrainer_LiteMedSAM, nnSAMTrainer_LiteMedSAM_Online


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
    # Online: the encoder runs inside every train step, in the network's train mode (BatchNorm statistics).
    trainer = _make_trainer(nnSAMTrainer_LiteMedSAM_Online, synthetic_nnunet, monkeypatch)
    trainer.on_train_start()  # nnU-Net's own start: build + He init + optimizer + dataloaders, then our weights
    network = trainer.nnsam_network()
    spec = get_encoder_spec("litemedsam")
    shipped = spec.load_pretrained_state()
    _assert_same(network.image_encoder.encoder.state_dict(), shipped)

    assert not any(p.requires_grad for p in network.image_encoder.parameters())

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
    assert saved["image_encoder._extra_state"] == {
        "encoder": "litemedsam", "input_mode": "minmax", "weights_sha256": sha256_of(spec.weights_file())}
    assert saved["_extra_state"] == {"fusion_stride": 8, "attention_stages": []}
    _assert_same({k[len("image_encoder.encoder."):]: v for k, v in saved.items()
                  if k.startswith("image_encoder.encoder.")}, shipped)
    trainer.on_train_end()

    # Resuming (--c) restores the encoder from the checkpoint and needs no weight file either.
    def no_weight_file():
        raise AssertionError("resuming must not read the pretrained weight file")

    monkeypatch.setitem(ENCODER_REGISTRY, "litemedsam", dataclasses.replace(spec, weights_file=no_weight_file))
    resumed = _make_trainer(nnSAMTrainer_LiteMedSAM, synthetic_nnunet, monkeypatch)
    resumed.initialize()
    resumed.load_checkpoint(str(path))
    resumed.load_pretrained_encoder()  # a no-op: the checkpoint brought them
    _assert_same(resumed.nnsam_network().image_encoder.encoder.state_dict(), shipped)


def test_nnunet_optimizer_variants_combine_by_multiple_inheritance(synthetic_nnunet, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerAdam

    class nnSAMTrainer_LiteMedSAM_Adam(nnSAMTrainer_LiteMedSAM, nnUNetTrainerAdam):
        pass

    trainer = _make_trainer(nnSAMTrainer_LiteMedSAM_Adam, synthetic_nnunet, monkeypatch)
    trainer.cache_embeddings = False  # the encoder in every step; no cache build (a minute on a CPU) needed here
    trainer.on_train_start()
    assert isinstance(trainer.optimizer, torch.optim.AdamW)  # nnU-Net's Adam variant's optimizer, not ours
    network = trainer.nnsam_network()
    shipped = get_encoder_spec("litemedsam").load_pretrained_state()
    unet_before = {k: v.clone() for k, v in network.unet.state_dict().items()}
    trainer.on_train_epoch_start()
    for _ in range(2):
        trainer.train_step(next(trainer.dataloader_train))
    _assert_same(network.image_encoder.encoder.state_dict(), shipped)  # AdamW's weight decay did not touch it
    assert any(not torch.equal(unet_before[k], v) for k, v in network.unet.state_dict().items())
    trainer.on_train_end()


@pytest.mark.parametrize("channels,logged", [(1, False), (2, True)])
def test_channel_mapping_is_logged_once_when_not_one_or_three(synthetic_nnunet, monkeypatch, channels, logged):
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module

    monkeypatch.setattr(nnunet_trainer_module, "determine_num_input_channels", lambda *args, **kwargs: channels)
    trainer = _make_trainer(nnSAMTrainer_LiteMedSAM, synthetic_nnunet, monkeypatch)
    trainer.initialize()
    assert trainer.nnsam_network().unet.encoder.stages[0][0].convs[0].conv.in_channels == channels
    log = open(trainer.log_file).read()
    expected = "the 2 input channels are averaged into one, which is repeated into the encoder's 3 channels"
    assert log.count("nnSAM: the ") == (1 if logged else 0)
    assert (expected in log) == logged


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


def test_training_steps_with_torch_compile(synthetic_nnunet, monkeypatch):
    """nnU-Net's compile switch on: two train steps; the network compiles into one graph, once.

    A data-dependent branch in the encoder (reading a tensor flag) would break the graph and make the encoder's
    forward a frame of its own; flipping a Python flag on the first step would recompile the network.
    """
    import torch._dynamo
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from nnsam.networks.fusion import SAMFusedUNet
    from nnsam.networks.image_encoder import FrozenImageEncoder

    torch._dynamo.reset()
    # Online, so that the encoder is part of the compiled step (the cached step: test_embedding_cache_trainer.py).
    trainer = _make_trainer(nnSAMTrainer_LiteMedSAM_Online, synthetic_nnunet, monkeypatch, nnUNet_compile="t")
    # nnU-Net switches compile off on CPU ("CPU compile crashes for 2D models"); this CPU compiles it fine.
    monkeypatch.setattr(trainer, "_do_i_compile", lambda: True)
    trace_compile_without_codegen(monkeypatch)
    trainer.on_train_start()
    assert isinstance(trainer.network, torch._dynamo.OptimizedModule)
    trainer.on_train_epoch_start()
    losses = [float(trainer.train_step(next(trainer.dataloader_train))["loss"]) for _ in range(2)]
    assert all(abs(loss) < 10 for loss in losses)
    assert len(_debug_get_cache_entry_list(SAMFusedUNet.forward.__code__)) == 1
    assert len(_debug_get_cache_entry_list(FrozenImageEncoder.forward.__wrapped__.__code__)) == 0  # inlined
    trainer.on_train_end()
    torch._dynamo.reset()


def test_temporal_trainer_refuses_a_2d_configuration(synthetic_nnunet, monkeypatch):
    from nnsam.trainers import nnSAMTrainer_LiteMedSAM_TRA

    with pytest.raises(ValueError, match="use the 2d_temporal configuration.*nnsam add-temporal-config"):
        _make_trainer(nnSAMTrainer_LiteMedSAM_TRA, synthetic_nnunet, monkeypatch)
