"""Shared fixtures: nnU-Net plans for unit tests, a MobileSAM checkpoint with weights we make, and a synthetic
dataset planned and preprocessed by the real nnU-Net command."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnsam.data.synthetic import SYNTHETIC_DATASET_NAME, make_synthetic_dataset
from nnsam.plugin import env_with_trainer_dir

TESTS_DIR = Path(__file__).resolve().parent
EXT_TRAINERS_DIR = str(TESTS_DIR / "ext_trainers")
SHARED_DATA = TESTS_DIR.parent.parent / "shared" / "data"
PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def configuration(n_stages: int, patch=(64, 64), arch: str = PLAIN_UNET, conv: str = "Conv2d") -> ConfigurationManager:
    """An nnU-Net 2d configuration like the planner writes, with ``n_stages`` resolution stages."""
    dims = 2 if conv == "Conv2d" else 3
    kwargs = {
        "n_stages": n_stages,
        "features_per_stage": [min(32 * 2**i, 512) for i in range(n_stages)],
        "conv_op": f"torch.nn.modules.conv.{conv}",
        "kernel_sizes": [[3] * dims] * n_stages,
        "strides": [[1] * dims] + [[2] * dims] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if arch == RESENC_UNET:
        kwargs["n_blocks_per_stage"] = [1, 3, 4, 6, 6, 6, 6, 6][:n_stages]
        kwargs["n_conv_per_stage_decoder"] = [1] * (n_stages - 1)
    else:
        kwargs["n_conv_per_stage"] = [2] * n_stages
        kwargs["n_conv_per_stage_decoder"] = [2] * (n_stages - 1)
    return ConfigurationManager({
        "data_identifier": "test", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": list(patch), "median_image_size_in_voxels": list(patch), "spacing": [1.0] * dims,
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape", "resampling_fn_probabilities_kwargs": {},
        "architecture": {"network_class_name": arch, "arch_kwargs": kwargs,
                         "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": True,
    })


@pytest.fixture(scope="session")
def mobilesam_checkpoint(tmp_path_factory) -> Path:
    """A full MobileSAM state dict in the official file layout, with random weights we create (the official
    weights cannot be downloaded here).

    A freshly built TinyViT has all-zero attention biases and identity BatchNorm statistics, which would hide
    exactly the bugs that matter for a frozen encoder (stale eval-mode bias caches, BatchNorm in train mode), so
    those are randomised too."""
    from mobile_sam import build_sam_vit_t

    torch.manual_seed(0)
    state = build_sam_vit_t(checkpoint=None).state_dict()
    for key, value in state.items():
        if key.endswith("attention_biases"):
            value.normal_(0.0, 1.0)
        elif key.endswith("running_mean"):
            value.normal_(0.0, 0.1)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("weights") / "mobile_sam.pt"
    torch.save(state, path)
    return path


def trace_compile_without_codegen(monkeypatch) -> None:
    """Make ``torch.compile`` (as nnU-Net calls it) use AOTAutograd without Inductor's code generation.

    Graph breaks and recompiles are decided by TorchDynamo's tracing, before any backend runs, and AOTAutograd still
    traces forward and backward; what is skipped is a minute of C++ compilation per network on a CPU (where nnU-Net
    does not compile anyway)."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: compile_(model, **{**kwargs, "backend": "aot_eager"}))


def run_command(cmd: list[str], env: dict[str, str], cwd: Path | None = None, timeout: int = 1800) -> str:
    """Run a real command line; on failure show its output in the test report. Its wall time is printed (pytest -s
    shows it), because these commands are what the suite spends its time on."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    print(f"[{time.perf_counter() - started:6.1f} s] {Path(cmd[0]).name} {' '.join(cmd[1:4])}")
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc.stdout


def nnunet_env(root: Path, mobilesam_checkpoint: Path | None = None) -> dict[str, str]:
    """Environment for stock nnU-Net commands: folders under ``root``, our trainers plus the tests' tiny ones,
    an empty HOME (so no user cache is used) and CPU-friendly settings."""
    env = env_with_trainer_dir(None, EXT_TRAINERS_DIR)
    env.update({
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"),
        "nnUNet_n_proc_DA": "1",
        "nnUNet_def_n_proc": "1",  # nnU-Net otherwise starts 8 export workers, costly on a 2-core machine
        "nnUNet_compile": "f",
        "HOME": str(root / "home"),
        "PYTHONWARNINGS": "ignore",
    })
    env.pop("NNSAM_MOBILESAM_CHECKPOINT", None)
    if mobilesam_checkpoint is not None:
        env["NNSAM_MOBILESAM_CHECKPOINT"] = str(mobilesam_checkpoint)
    return env


def nnunet_bin(name: str) -> str:
    """A console script of the running interpreter's environment (works without an activated venv)."""
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="session")
def synthetic_nnunet(tmp_path_factory) -> dict:
    """The synthetic dataset (8 training subjects, 2 test subjects), planned and preprocessed for 2d by the real
    ``nnUNetv2_plan_and_preprocess``."""
    root = tmp_path_factory.mktemp("nnunet")
    dataset = make_synthetic_dataset(root / "raw", num_subjects=8, num_test_subjects=2, image_size=(64, 80))
    env = nnunet_env(root)
    run_command([nnunet_bin("nnUNetv2_plan_and_preprocess"), "-d", "990", "-c", "2d", "-np", "2",
                 "--verify_dataset_integrity"], env)
    return {"root": root, "raw": dataset, "preprocessed": root / "preprocessed" / SYNTHETIC_DATASET_NAME}


TEMPORAL_FRAMES = 4


@pytest.fixture(scope="session")
def camus_phantom_nnunet(tmp_path_factory) -> dict:
    """A CAMUS-layout phantom through the stock commands: ``nnsam convert-camus`` (the labelled training patient, and
    the test patient as a new folder of unlabelled sequences), ``nnUNetv2_plan_and_preprocess -c 2d 3d_fullres`` and
    ``nnsam add-temporal-config`` (clips of ``TEMPORAL_FRAMES``).

    60x60 frames at 0.3 mm (no resampling) on the planned 64x64 patch: a whole frame is one window, padded by an
    even count, so nnU-Net's loader centres it exactly as its predictor does (test_temporal_cache relies on it).
    Sequences of 5-6 frames: two clips each. Every frame costs an encoder pass (about 2 s on a CPU) wherever it is
    cached or predicted, hence one patient per split."""
    from nnsam.echo.phantom import make_camus_phantom

    root = tmp_path_factory.mktemp("camus_phantom")
    camus = make_camus_phantom(root / "camus", num_patients=2, seed=3, split_sizes=(1, 0, 1), frame_range=(5, 6),
                               size_range=(60, 60), spacing_range_mm=(0.3, 0.3))
    env = nnunet_env(root)
    run_command([nnunet_bin("nnsam"), "convert-camus", str(camus), str(root / "raw"), "--dataset-id", "130"], env)
    run_command([nnunet_bin("nnsam"), "convert-camus", str(camus), str(root / "new"), "--unlabelled"], env)
    raw = root / "raw" / "Dataset131_CAMUSSeq"
    run_command([nnunet_bin("nnUNetv2_plan_and_preprocess"), "-d", "131", "-c", "2d", "3d_fullres", "-np", "1"], env)
    log = run_command([nnunet_bin("nnsam"), "add-temporal-config", "131", "--frames", str(TEMPORAL_FRAMES)], env)
    return {"root": root, "raw": raw, "preprocessed": root / "preprocessed" / raw.name, "new": root / "new",
            "add_temporal_config_log": log}
