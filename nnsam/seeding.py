"""One seed for every random generator that nnU-Net's training draws from."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and, where present, CUDA).

    nnU-Net does not seed: its weight initialisation draws from torch, its patch sampling from NumPy, and
    batchgeneratorsv2's augmentations from NumPy and ``random``. Seeding all three makes a single-process draw of
    samples (and a run's initial weights) the same on every run; nnU-Net's multi-process data loading still is not.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
