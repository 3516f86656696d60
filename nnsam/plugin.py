"""How stock nnU-Net finds our trainers.

nnU-Net >= 2.8 imports every ``.py`` file in the folders listed in ``nnUNet_extTrainer`` as a *top-level* module
and looks for the requested trainer class there. We ship one such folder (``nnsam/nnunet_ext``) holding a single
shim module with a name unlikely to clash, which re-exports the real trainers from ``nnsam.trainers``.
"""
from __future__ import annotations

import os
from pathlib import Path

EXT_TRAINER_ENV = "nnUNet_extTrainer"


def trainer_dir() -> str:
    """The folder to put into ``nnUNet_extTrainer`` so that ``-tr nnSAMTrainer`` works with stock nnU-Net."""
    return str(Path(__file__).resolve().parent / "nnunet_ext")


def env_with_trainer_dir(env: dict[str, str] | None = None, *extra_dirs: str) -> dict[str, str]:
    """A copy of ``env`` (default: ``os.environ``) whose ``nnUNet_extTrainer`` also lists our trainer folder.

    Folders the user already listed are kept (after ours and ``extra_dirs``), so their own trainers still resolve.
    """
    env = dict(os.environ if env is None else env)
    existing = [p for p in env.get(EXT_TRAINER_ENV, "").split(os.pathsep) if p]
    wanted = [trainer_dir(), *extra_dirs]
    env[EXT_TRAINER_ENV] = os.pathsep.join(wanted + [p for p in existing if p not in wanted])
    return env
