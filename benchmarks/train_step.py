"""Time one training step of nnSAM trainers against nnUNetTrainer on the same batch, and the checkpoint sizes.

    python benchmarks/train_step.py [--device cpu|cuda] [--steps 3] [--patch-scale 1]

Plans and preprocesses the synthetic dataset in a temporary folder with the stock nnU-Net command, takes one batch
from nnU-Net's own data loader and runs ``train_step`` (forward, loss, backward, optimizer step) of each trainer on
that batch. MobileSAM's official weights are used when found (NNSAM_MOBILESAM_CHECKPOINT or the cache); otherwise
random weights in the official layout are created: a step's cost does not depend on the weight values.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from batchgenerators.utilities.file_and_folder_operations import load_json


def prepare_dataset(root: Path, image_size: tuple[int, int]) -> Path:
    from nnsam.data.synthetic import make_synthetic_dataset

    dataset = make_synthetic_dataset(root / "raw", num_subjects=6, image_size=image_size)
    os.environ.update({"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
                       "nnUNet_results": str(root / "results")})
    subprocess.run([str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", "990", "-c", "2d",
                    "-np", "2"], check=True, stdout=subprocess.DEVNULL)
    # One in-process data loader for the batch (set only now: the planner uses this variable as a thread count).
    os.environ["nnUNet_n_proc_DA"] = "0"
    return root / "preprocessed" / dataset.name


def ensure_mobilesam_weights(root: Path) -> str:
    from nnsam.networks.checkpoints import EncoderWeightsError, resolve_mobilesam_checkpoint

    try:
        return f"official weights ({resolve_mobilesam_checkpoint(download=False)})"
    except EncoderWeightsError:
        from mobile_sam import build_sam_vit_t

        path = root / "mobile_sam_random.pt"
        torch.save(build_sam_vit_t(checkpoint=None).state_dict(), path)
        os.environ["NNSAM_MOBILESAM_CHECKPOINT"] = str(path)
        return "random weights in the official layout (official file not found)"


def time_trainer(trainer_class, preprocessed: Path, device: torch.device, batch, steps: int, out: Path):
    plans = load_json(preprocessed / "nnUNetPlans.json")
    plans["continue_training"] = False
    trainer = trainer_class(plans, "2d", 0, load_json(preprocessed / "dataset.json"), device=device)
    trainer.initialize()
    if hasattr(trainer, "load_pretrained_encoder"):
        trainer.load_pretrained_encoder()
    trainer.network.train()
    trainer.train_step(batch)  # warm-up
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    checkpoint = out / f"{trainer_class.__name__}.pth"
    trainer.save_checkpoint(str(checkpoint))
    return statistics.median(times), checkpoint.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--image-size", type=int, nargs=2, default=(128, 160))
    args = parser.parse_args()
    device = torch.device(args.device)
    os.environ.setdefault("nnUNet_compile", "f")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        preprocessed = prepare_dataset(root, tuple(args.image_size))
        weights_note = ensure_mobilesam_weights(root)
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        from nnsam.trainers import nnSAMTrainer, nnSAMTrainer_LiteMedSAM

        plans = load_json(preprocessed / "nnUNetPlans.json")
        plans["continue_training"] = False
        reference = nnUNetTrainer(plans, "2d", 0, load_json(preprocessed / "dataset.json"), device=device)
        reference.initialize()
        loader, _ = reference.get_dataloaders()
        batch = next(loader)
        shape = tuple(batch["data"].shape)

        results = {}
        for trainer_class in (nnUNetTrainer, nnSAMTrainer, nnSAMTrainer_LiteMedSAM):
            results[trainer_class.__name__] = time_trainer(trainer_class, preprocessed, device, batch, args.steps, root)

    base_time, base_size = results["nnUNetTrainer"]
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nOne train_step on the same batch {shape} ({device_name}); MobileSAM: {weights_note}")
    print(f"{'trainer':<26}{'step (s)':>10}{'x nnU-Net':>11}{'checkpoint (MiB)':>18}")
    for name, (seconds, size) in results.items():
        print(f"{name:<26}{seconds:>10.3f}{seconds / base_time:>11.2f}{size / 2**20:>18.1f}")


if __name__ == "__main__":
    main()
