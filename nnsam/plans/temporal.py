"""The ``2d_temporal`` configuration: clips of T consecutive frames through nnU-Net's own 3D data pipeline.

nnU-Net's 2D loader draws single slices and its predictor feeds single slices, so a temporal network would never see
neighbouring frames. Sequences converted with time as the first axis (``nnsam convert-camus``) are 3D images to
nnU-Net, so its ``3d_fullres`` data pipeline already reads clips. ``2d_temporal`` inherits ``3d_fullres`` (same
preprocessed data: time spacing 1, never resampled) and changes only what makes the network the planned *2D* one:

* patch ``[T, *patch_2d]`` and the 2D plan's architecture with a leading time axis of kernel 1 and stride 1
  (``Conv3d``/``InstanceNorm3d`` names), so nnU-Net's deep-supervision targets are downsampled in-plane only;
* with ``T`` small against the in-plane patch (nnU-Net's anisotropy rule: in-plane ≥ 3·T), nnU-Net augments clips
  with its "dummy 2D" path: one in-plane rotation/scaling for the whole clip, frames never mixed;
* the network (``TemporalSAMFusedUNet``) is built from :func:`frame_configuration`, the 2D plan again.

nnU-Net's sliding-window predictor then covers whole sequences with overlapping clips.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

TEMPORAL_CONFIGURATION = "2d_temporal"
DEFAULT_NUM_FRAMES = 8
_OP_KEYS = ("conv_op", "norm_op", "dropout_op")


def _swap_dimension(op: str | None, old: str, new: str) -> str | None:
    """``torch.nn.modules.conv.Conv2d`` -> ``...Conv3d`` (and back); None (no dropout) stays None."""
    if op is None:
        return None
    if not op.endswith(old):
        raise ValueError(f"Expected a {old} operation in the plans, got {op!r}.")
    return op[: -len(old)] + new


def add_temporal_configuration(plans: dict, num_frames: int = DEFAULT_NUM_FRAMES) -> dict:
    """A copy of nnU-Net ``plans`` with ``2d_temporal`` added (from its ``2d`` and ``3d_fullres`` configurations)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
    configurations = plans["configurations"]
    missing = [name for name in ("2d", "3d_fullres") if name not in configurations]
    if missing:
        raise ValueError(f"The plans have no {' and no '.join(missing)} configuration; plan the sequence dataset with "
                         f"`nnUNetv2_plan_and_preprocess -d DATASET -c 2d 3d_fullres` first.")
    plans = copy.deepcopy(plans)
    two_d = plans["configurations"]["2d"]
    architecture = copy.deepcopy(two_d["architecture"])
    kwargs = architecture["arch_kwargs"]
    for key in _OP_KEYS:
        kwargs[key] = _swap_dimension(kwargs.get(key), "2d", "3d")
    kwargs["kernel_sizes"] = [[1, *k] for k in kwargs["kernel_sizes"]]
    kwargs["strides"] = [[1, *s] for s in kwargs["strides"]]
    plans["configurations"][TEMPORAL_CONFIGURATION] = {
        "inherits_from": "3d_fullres",
        "patch_size": [num_frames, *two_d["patch_size"]],
        # The 2D plan's batch holds batch_size frames; a clip is num_frames of them.
        "batch_size": max(1, two_d["batch_size"] // num_frames),
        "architecture": architecture,
    }
    return plans


def is_temporal_configuration(configuration: ConfigurationManager) -> bool:
    strides = configuration.network_arch_init_kwargs.get("strides", [])
    conv_op = str(configuration.network_arch_init_kwargs.get("conv_op", ""))
    return conv_op.endswith("Conv3d") and len(configuration.patch_size) == 3 and all(s[0] == 1 for s in strides)


def frame_configuration(configuration: ConfigurationManager) -> ConfigurationManager:
    """The 2D configuration (per frame) of a ``2d_temporal`` one: the leading time axis dropped everywhere."""
    if not is_temporal_configuration(configuration):
        raise ValueError("Not a 2d_temporal configuration (3D names, time stride 1, patch [T, H, W]); add it with "
                         "`nnsam add-temporal-config DATASET` and train with `nnUNetv2_train DATASET 2d_temporal ...`.")
    two_d = copy.deepcopy(configuration.configuration)
    kwargs = two_d["architecture"]["arch_kwargs"]
    for key in _OP_KEYS:
        kwargs[key] = _swap_dimension(kwargs.get(key), "3d", "2d")
    kwargs["kernel_sizes"] = [k[1:] for k in kwargs["kernel_sizes"]]
    kwargs["strides"] = [s[1:] for s in kwargs["strides"]]
    two_d["patch_size"] = two_d["patch_size"][1:]
    two_d["spacing"] = two_d["spacing"][1:]
    return ConfigurationManager(two_d)


def add_temporal_configuration_to_file(plans_file: Path, num_frames: int = DEFAULT_NUM_FRAMES) -> Path:
    """Add ``2d_temporal`` to a plans file in place (the original is kept once as ``<name>.before_temporal.json``)."""
    plans = json.loads(plans_file.read_text())
    updated = add_temporal_configuration(plans, num_frames)
    backup = plans_file.with_name(plans_file.stem + ".before_temporal.json")
    if not backup.exists():
        shutil.copy2(plans_file, backup)
    plans_file.write_text(json.dumps(updated, indent=4))
    return plans_file
