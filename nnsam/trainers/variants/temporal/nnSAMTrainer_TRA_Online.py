from nnsam.trainers.variants.temporal.nnSAMTrainer_TRA import (
    nnSAMTrainer_LiteMedSAM_TRA,
    nnSAMTrainer_LiteMedSAM_TRA_LIA,
    nnSAMTrainer_TRA,
    nnSAMTrainer_TRA_LIA,
)


class nnSAMTrainer_TRA_Online(nnSAMTrainer_TRA):
    """Encodes every frame of every augmented clip with the frozen encoder (no embedding cache)."""

    cache_embeddings = False


class nnSAMTrainer_TRA_LIA_Online(nnSAMTrainer_TRA_LIA):
    cache_embeddings = False


class nnSAMTrainer_LiteMedSAM_TRA_Online(nnSAMTrainer_LiteMedSAM_TRA):
    cache_embeddings = False


class nnSAMTrainer_LiteMedSAM_TRA_LIA_Online(nnSAMTrainer_LiteMedSAM_TRA_LIA):
    cache_embeddings = False
