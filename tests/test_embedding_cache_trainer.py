"""Training from the embedding cache (nnSAMTrainer's default) inside nnU-Net's own training machinery (in-process,
synthetic preprocessed data, LiteMedSAM's shipped weights)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import trace_compile_without_codegen
from test_trainer import _make_trainer
from nnsam.seeding import seed_everything
from nnsam.trainers import nnSAMTrainer_LiteMedSAM, nnSAMTrainer_LiteMedSAM_Online

# Median cosine similarity, over augmented training samples of the synthetic data, between the embedding taken
# from the cache and the online embedding of the same augmented patch (nnU-Net's full augmentation: crops shifted
# by foreground oversampling, rotation, scaling, mirroring, intensity changes). Measured on seeded draws of 12
# samples: 0.76 for the test's seed 0, 0.70-0.76 over seeds 0-3; docs/results.md has the distributions on HC18 and
# ACDC.
MIN_MEDIAN_COSINE_AUGMENTED = 0.6


def _online_embedding(network, data):
    with torch.no_grad():
        skips = network.unet.encoder(data)
        return network.embedding_at(data, skips[network.fusion_skip])


def draw_seeded(augmenter, count: int, seed: int) -> list[dict]:
    """``count`` training batches of a single-threaded augmenter, after seeding every generator nnU-Net's sampling
    and augmentation draw from: the same samples on every run, so a threshold measured on them holds."""
    seed_everything(seed)
    return [next(augmenter) for _ in range(count)]


def median_cosine_to_online(batches: list[dict], online_embedding) -> tuple[torch.Tensor, torch.Tensor]:
    """Median over samples (frames padded beyond their sequence left out) of the cosine similarity between the cached
    embedding and the online embedding of the same augmented sample; and all the cosines."""
    cached = torch.cat([b["embedding"] for b in batches])
    online = torch.cat([online_embedding(b["data"]) for b in batches])
    cosines = F.cosine_similarity(cached, online, dim=1).mean(dim=(1, 2))
    encoded = cached.flatten(1).abs().amax(dim=1) > 0
    return cosines[encoded].median(), cosines


@pytest.fixture
def cached_trainer(synthetic_nnunet, monkeypatch):
    trainer = _make_trainer(nnSAMTrainer_LiteMedSAM, synthetic_nnunet, monkeypatch)
    trainer.oversample_foreground_percent = 0.0  # patches = whole slices (64x80 images, 64x80 patch)
    trainer.on_train_start()
    yield trainer
    trainer.on_train_end()


def test_cached_embedding_equals_online_without_augmentation(cached_trainer):
    network = cached_trainer.nnsam_network()
    for _ in range(3):
        batch = next(cached_trainer.dataloader_val)  # nnU-Net's validation pipeline: no augmentation
        online = _online_embedding(network, batch["data"])
        assert batch["embedding"].shape == online.shape
        # float16 storage: relative error ~1e-3
        assert (batch["embedding"] - online).abs().max() <= 2e-3 * online.abs().max()


def test_cached_training_never_runs_the_encoder_and_tracks_augmented_patches(cached_trainer):
    network = cached_trainer.nnsam_network()
    calls = []
    handle = network.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    cached_trainer.on_train_epoch_start()
    unet_before = {k: v.clone() for k, v in network.unet.state_dict().items()}
    batches = draw_seeded(cached_trainer.dataloader_train, 6, seed=0)  # 12 samples, each encoded online below
    for batch in batches[:2]:
        cached_trainer.train_step(batch)
    cached_trainer.on_validation_epoch_start()
    cached_trainer.validation_step(next(cached_trainer.dataloader_val))
    handle.remove()
    assert not calls, "a cached train/validation step ran the encoder"
    assert any(not torch.equal(unet_before[k], v) for k, v in network.unet.state_dict().items())

    median, cosines = median_cosine_to_online(batches, lambda data: _online_embedding(network, data))
    assert median > MIN_MEDIAN_COSINE_AUGMENTED, cosines


def test_cache_is_reused_by_the_next_fold(cached_trainer, synthetic_nnunet, monkeypatch):
    assert "nnSAM embedding cache" in open(cached_trainer.log_file).read()
    other_fold = _make_trainer(nnSAMTrainer_LiteMedSAM, synthetic_nnunet, monkeypatch)
    other_fold.fold = 1
    other_fold.initialize()
    other_fold.load_pretrained_encoder()
    cache = other_fold.prepare_embedding_cache()
    assert cache.folder == cached_trainer.embedding_cache.folder
    assert "16 cases reused, 0 built" in open(other_fold.log_file).read()


def test_cached_training_compiles_into_one_graph(synthetic_nnunet, monkeypatch):
    """nnU-Net's compile switch on: the embedding arrives as a new tensor every step (a module attribute set around
    nnU-Net's train_step); that must neither break the graph nor recompile it."""
    import torch._dynamo
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from nnsam.networks.fusion import SAMFusedUNet

    torch._dynamo.reset()
    trainer = _make_trainer(nnSAMTrainer_LiteMedSAM, synthetic_nnunet, monkeypatch, nnUNet_compile="t")
    monkeypatch.setattr(trainer, "_do_i_compile", lambda: True)  # nnU-Net switches compile off on CPU
    trace_compile_without_codegen(monkeypatch)
    trainer.on_train_start()
    assert isinstance(trainer.network, torch._dynamo.OptimizedModule)
    trainer.on_train_epoch_start()
    losses = [float(trainer.train_step(next(trainer.dataloader_train))["loss"]) for _ in range(3)]
    assert all(abs(loss) < 10 for loss in losses)
    assert len(_debug_get_cache_entry_list(SAMFusedUNet.forward.__code__)) == 1
    trainer.on_train_end()
    torch._dynamo.reset()


def test_online_variant_encodes_every_sample_and_builds_no_cache(synthetic_nnunet, monkeypatch):
    trainer = _make_trainer(nnSAMTrainer_LiteMedSAM_Online, synthetic_nnunet, monkeypatch)
    monkeypatch.setattr(trainer, "prepare_embedding_cache",
                        lambda: pytest.fail("an online trainer prepared the embedding cache"))
    trainer.on_train_start()
    network = trainer.nnsam_network()
    calls = []
    handle = network.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    trainer.on_train_epoch_start()
    batch = next(trainer.dataloader_train)
    assert "embedding" not in batch
    trainer.train_step(batch)
    handle.remove()
    assert calls, "an online train step did not run the encoder"
    trainer.on_train_end()


def test_loaders_built_outside_training_deliver_plain_batches(synthetic_nnunet, monkeypatch):
    # Scripts that call get_dataloaders() themselves (benchmarks, notebooks) never prepared a cache: their batches
    # carry no embedding, and a train step encodes them online instead of failing.
    trainer = _make_trainer(nnSAMTrainer_LiteMedSAM, synthetic_nnunet, monkeypatch)
    trainer.initialize()
    assert trainer.embedding_cache is None
    train_loader, _ = trainer.get_dataloaders()
    assert "embedding" not in next(train_loader)
