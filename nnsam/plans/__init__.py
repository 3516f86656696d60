"""Additions to nnU-Net plans that nnsam's trainers need (nnU-Net plans everything else)."""
