from nnsam.trainers.nnSAMTrainer import nnSAMTrainer


class nnSAMTrainer_LIA(nnSAMTrainer):
    """Coordinate attention (LIA, the "H-W block") after the decoder stage that receives the SAM embedding."""

    attention_stages = ("fused",)


class nnSAMTrainer_LiteMedSAM_LIA(nnSAMTrainer_LIA):
    encoder_name = "litemedsam"
