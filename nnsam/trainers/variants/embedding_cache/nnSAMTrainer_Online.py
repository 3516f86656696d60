from nnsam.trainers.nnSAMTrainer import nnSAMTrainer
from nnsam.trainers.variants.encoder.nnSAMTrainer_LiteMedSAM import nnSAMTrainer_LiteMedSAM


class nnSAMTrainer_Online(nnSAMTrainer):
    """Encodes every augmented sample with the frozen encoder (no embedding cache): the embedding of exactly the
    augmented patch, at about 7x nnU-Net's train-step cost on a CPU (docs/results.md)."""

    cache_embeddings = False


class nnSAMTrainer_LiteMedSAM_Online(nnSAMTrainer_LiteMedSAM):
    cache_embeddings = False
