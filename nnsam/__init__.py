"""nnSAM for nnU-Net v2: a frozen SAM-family image encoder fused into nnU-Net's 2D U-Net."""

__version__ = "0.1.0"
