from nnsam.trainers.nnSAMTrainer import nnSAMTrainer
from nnsam.trainers.variants.encoder.nnSAMTrainer_LiteMedSAM import nnSAMTrainer_LiteMedSAM


class nnSAMTrainer_CachedMirrored(nnSAMTrainer):
    """Also caches every slice mirrored along x, y and both (4x the build time and disk), so that mirrored samples,
    two thirds of nnU-Net's 2D samples, read an embedding encoded in their own orientation."""

    cache_mirrored_views = True


class nnSAMTrainer_LiteMedSAM_CachedMirrored(nnSAMTrainer_LiteMedSAM):
    cache_mirrored_views = True
