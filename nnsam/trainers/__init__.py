from nnsam.trainers.nnSAMTrainer import nnSAMTrainer
from nnsam.trainers.temporal import (
    nnSAMTrainer_LiteMedSAM_TRA,
    nnSAMTrainer_LiteMedSAM_TRA_LIA,
    nnSAMTrainer_TRA,
    nnSAMTrainer_TRA_LIA,
)
from nnsam.trainers.variants import (
    nnSAMTrainer_LIA,
    nnSAMTrainer_LiteMedSAM,
    nnSAMTrainer_LiteMedSAM_LIA,
    nnSAMTrainer_ZScoreInput,
)

__all__ = ["nnSAMTrainer", "nnSAMTrainer_LIA", "nnSAMTrainer_LiteMedSAM", "nnSAMTrainer_LiteMedSAM_LIA",
           "nnSAMTrainer_LiteMedSAM_TRA", "nnSAMTrainer_LiteMedSAM_TRA_LIA", "nnSAMTrainer_TRA", "nnSAMTrainer_TRA_LIA",
           "nnSAMTrainer_ZScoreInput"]
