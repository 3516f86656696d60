# Shim imported by stock nnU-Net through the nnUNet_extTrainer folder (see nnsam/plugin.py).
# nnU-Net imports this file as a top-level module, so it only re-exports; the trainers live in nnsam.trainers.
from nnsam.trainers import *  # noqa: F401,F403
