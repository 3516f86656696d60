from nnsam.trainers.nnSAMTrainer import nnSAMTrainer


class nnSAMTrainer_ZScoreInput(nnSAMTrainer):
    """Feeds nnU-Net's z-scored patch to the encoder as is, as the official nnSAM code did."""

    input_mode = "zscore"
