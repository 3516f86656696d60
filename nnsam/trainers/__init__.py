from nnsam.trainers.nnSAMTrainer import nnSAMTrainer
from nnsam.trainers.variants import nnSAMTrainer_LiteMedSAM, nnSAMTrainer_ZScoreInput

__all__ = ["nnSAMTrainer", "nnSAMTrainer_LiteMedSAM", "nnSAMTrainer_ZScoreInput"]
