import random

import numpy as np
import torch

from nnsam.seeding import seed_everything


def _draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_one_seed_repeats_the_draws_of_python_numpy_and_torch() -> None:
    seed_everything(3)
    first = _draw()
    seed_everything(3)
    assert _draw() == first
    seed_everything(4)
    assert all(a != b for a, b in zip(_draw(), first))  # each generator follows the seed
