"""nnSAM trainer variants, grouped like nnU-Net's: one folder per concern, one small file per idea."""
