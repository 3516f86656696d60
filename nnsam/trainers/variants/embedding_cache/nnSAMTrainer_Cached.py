from nnsam.trainers.nnSAMTrainer import nnSAMTrainer
from nnsam.trainers.variants.encoder.nnSAMTrainer_LiteMedSAM import nnSAMTrainer_LiteMedSAM


# The names under which the cache was opt-in (nnsam 0.1): identical to the defaults now. Kept so that models
# trained under these names (nnUNet_results/.../nnSAMTrainer_Cached__...) still predict and resume.
class nnSAMTrainer_Cached(nnSAMTrainer):
    """Same as nnSAMTrainer (which trains from the embedding cache)."""


class nnSAMTrainer_LiteMedSAM_Cached(nnSAMTrainer_LiteMedSAM):
    """Same as nnSAMTrainer_LiteMedSAM (which trains from the embedding cache)."""
