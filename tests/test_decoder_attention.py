"""LIA (coordinate attention) after decoder stages of an nnSAM network, outside nnU-Net's U-Net state dict."""
import pytest
import torch

from conftest import configuration
from nnsam.networks.build_nnsam import build_nnsam_network
from nnsam.networks.image_encoder import NetworkDefinitionMismatch


def _network(attention_stages=()):
    torch.manual_seed(0)
    network = build_nnsam_network(configuration(5), 1, 2, False, encoder_name="litemedsam",
                                  attention_stages=attention_stages)
    network.image_encoder.weights_sha256 = "random weights, for shape tests"
    return network


def test_attention_follows_the_fused_stage_and_feeds_the_next_one():
    network = _network(("fused",))
    stage = network.fused_decoder_stage
    assert network.attention_stages == [stage]
    raw, received = {}, {}
    network.decoder.stages[stage].convs.register_forward_hook(lambda m, i, out: raw.__setitem__("x", out))
    network.decoder.transpconvs[stage + 1].register_forward_pre_hook(lambda m, args: received.__setitem__("x", args[0]))
    out = network(torch.randn(1, 1, 64, 64))
    assert out.shape == (1, 2, 64, 64)
    expected = network.decoder_attention[str(stage)](raw["x"])
    assert torch.equal(received["x"], expected) and not torch.equal(received["x"], raw["x"])


def test_unet_state_dict_stays_nnunets_and_the_checkpoint_records_the_stages():
    plain, with_attention = _network(), _network(("fused", 0))
    assert plain.unet.state_dict().keys() == with_attention.unet.state_dict().keys()
    state = with_attention.state_dict()
    stages = sorted({0, with_attention.fused_decoder_stage})
    assert state["_extra_state"]["attention_stages"] == stages
    assert {k.split(".")[1] for k in state if k.startswith("decoder_attention.")} == {str(s) for s in stages}
    with pytest.raises(NetworkDefinitionMismatch, match="attention_stages"):
        plain.load_state_dict(state)
    _network(("fused", 0)).load_state_dict(state)


def test_attention_is_trained():
    network = _network(("fused",))
    network(torch.randn(2, 1, 64, 64)).sum().backward()
    attention = network.decoder_attention[str(network.fused_decoder_stage)]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attention.parameters())


def test_a_stage_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="Decoder stage 7 does not exist.*0..3"):
        _network((7,))


def test_lia_trainer_trains_with_nnunets_machinery(synthetic_nnunet, monkeypatch):
    from test_trainer import _make_trainer

    from nnsam.trainers import nnSAMTrainer_LiteMedSAM_LIA

    trainer = _make_trainer(nnSAMTrainer_LiteMedSAM_LIA, synthetic_nnunet, monkeypatch)
    # Online embeddings: the attention trains the same either way, and the step encodes 2 slices where building the
    # cache would encode the whole dataset (a minute on a CPU).
    trainer.cache_embeddings = False
    trainer.on_train_start()
    network = trainer.nnsam_network()
    attention = network.decoder_attention[str(network.fused_decoder_stage)]
    before = {k: v.clone() for k, v in attention.state_dict().items()}
    trainer.on_train_epoch_start()
    trainer.train_step(next(trainer.dataloader_train))
    assert any(not torch.equal(before[k], v) for k, v in attention.state_dict().items())  # the optimizer has it
    trainer.on_train_end()
