from nnsam.trainers.nnSAMTrainer import nnSAMTrainer
from nnsam.trainers.variants import (
    nnSAMTrainer_LIA,
    nnSAMTrainer_LiteMedSAM,
    nnSAMTrainer_LiteMedSAM_LIA,
    nnSAMTrainer_ZScoreInput,
)

__all__ = ["nnSAMTrainer", "nnSAMTrainer_LIA", "nnSAMTrainer_LiteMedSAM", "nnSAMTrainer_LiteMedSAM_LIA",
           "nnSAMTrainer_ZScoreInput"]
