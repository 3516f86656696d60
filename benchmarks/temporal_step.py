"""What TRA costs in a train step: nnSAM on a clip of T frames (2d_temporal) against nnSAM on T single frames (2d).

    python benchmarks/temporal_step.py [--device cpu|cuda] [--frames 8] [--steps 3]

One run, one device, the same frames per step for every row: a CAMUS-layout phantom (``nnsam.echo.phantom``) is
converted, planned (2d, 3d_fullres) and given the ``2d_temporal`` configuration with clips of ``--frames`` frames.
The 2D rows train on a batch of T frames from nnU-Net's 2D loader, the temporal rows on one clip of T frames from
the 3D loader. Rows (LiteMedSAM encoder, whose weights ship with nnsam):

* nnSAM, online encoder (``nnSAMTrainer_LiteMedSAM_Online``): every frame encoded in the step;
* nnSAM, embedding cache (``nnSAMTrainer_LiteMedSAM``, the default 2D trainer);
* +TRA, online encoder (``nnSAMTrainer_LiteMedSAM_TRA_Online``): every frame of the clip encoded in the step;
* +TRA and +TRA+LIA (``nnSAMTrainer_LiteMedSAM_TRA``, ``..._TRA_LIA``, the defaults): every frame of the clip takes
  its embedding from the cache, as nnSAM's frames do.

Each row runs in its own process (nnU-Net's ``train_step``, median of ``--steps`` after one warm-up). The last
lines: ``train-step ratio TRA/nnSAM online: X.XX`` (what TRA itself adds, both encoding every frame) and
``train-step ratio TRA/nnSAM: X.XX`` (the default trainers, both from the cache).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark  # noqa: E402  (helpers shared with the main benchmark; standard library at import time)

ROWS = [
    ("nnSAM LiteMedSAM, online encoder", "nnSAMTrainer_LiteMedSAM_Online", "2d"),
    ("nnSAM LiteMedSAM, embedding cache (default)", "nnSAMTrainer_LiteMedSAM", "2d"),
    ("+TRA, online encoder (one clip)", "nnSAMTrainer_LiteMedSAM_TRA_Online", "2d_temporal"),
    ("+TRA, embedding cache (one clip, default)", "nnSAMTrainer_LiteMedSAM_TRA", "2d_temporal"),
    ("+TRA+LIA, embedding cache (one clip, default)", "nnSAMTrainer_LiteMedSAM_TRA_LIA", "2d_temporal"),
]
DATASET_ID = 131
WORKER_FLAG = "--worker"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip T, and per 2D batch (default 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed train steps per row (after one warm-up)")
    return parser.parse_args()


def run_worker(name: str, task: dict, root: Path) -> dict:
    task_file, result_file, log_file = (root / f"{name}.{suffix}" for suffix in ("task.json", "result.json", "log"))
    task_file.write_text(json.dumps(task))
    print(f"[temporal benchmark] {name} ...", flush=True)
    with log_file.open("w") as log:
        completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), WORKER_FLAG, str(task_file),
                                    str(result_file)], stdout=log, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        tail = "\n".join(log_file.read_text().splitlines()[-40:])
        sys.exit(f"{tail}\n\ntemporal benchmark: worker '{name}' failed (exit code {completed.returncode}).")
    return json.loads(result_file.read_text())


def prepare(task: dict) -> dict:
    """Phantom -> nnU-Net raw -> plans (2d, 3d_fullres, 2d_temporal); one saved batch per loader."""
    import torch

    from nnsam.echo.camus import convert_camus
    from nnsam.echo.phantom import make_camus_phantom
    from nnsam.plans.temporal import add_temporal_configuration_to_file

    root, frames = Path(task["root"]), task["frames"]
    device = benchmark.resolve_device(task["device"])
    camus = make_camus_phantom(root / "camus", num_patients=4, seed=0, frame_range=(frames + 2, frames + 4),
                               size_range=(112, 128))
    sequences = convert_camus(camus, os.environ["nnUNet_raw"], dataset_id=DATASET_ID - 1).sequences
    env = {key: value for key, value in os.environ.items() if key != "nnUNet_n_proc_DA"}
    subprocess.run([str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c",
                    "2d", "3d_fullres", "-np", "2"], check=True, env=env)
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / sequences.name
    add_temporal_configuration_to_file(preprocessed / "nnUNetPlans.json", frames)
    batches = {}
    for configuration, trainer_name, batch_size in (("2d", "nnUNetTrainer", frames),
                                                    ("2d_temporal", "nnSAMTrainer_LiteMedSAM_TRA_Online", 1)):
        trainer = build_trainer(trainer_name, preprocessed, configuration, torch.device("cpu"), batch_size)
        batch = next(trainer.get_dataloaders()[0])
        batches[configuration] = str(root / f"batch_{configuration}.pt")
        torch.save({"data": batch["data"], "target": batch["target"]}, batches[configuration])
    return {"device": device.type, "device_name": benchmark.device_name(device), "torch_version": torch.__version__,
            "preprocessed": str(preprocessed), "batches": batches}


def build_trainer(trainer_name: str, preprocessed: Path, configuration: str, device, batch_size: int):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    trainer = recursive_find_trainer_class_by_name(trainer_name)(
        benchmark.load_plans(preprocessed), configuration, 0, load_json(preprocessed / "dataset.json"), device=device)
    trainer.configuration_manager.configuration["batch_size"] = batch_size  # read by initialize()
    trainer.initialize()
    return trainer


def train(task: dict) -> dict:
    import statistics

    import torch

    device = benchmark.resolve_device(task["device"])
    benchmark.use_threads_like_nnunet_commands(device)
    batch = torch.load(task["batch"])
    trainer = build_trainer(task["trainer"], Path(task["preprocessed"]), task["configuration"], device,
                            batch["data"].shape[0])
    trainer.load_pretrained_encoder()
    trainer.network.train()
    if getattr(trainer, "cache_embeddings", False):
        benchmark.add_cached_embedding(trainer, batch, device)
    trainer.train_step(batch)  # warm-up
    times = [benchmark.timed_train_step(trainer, batch, device) for _ in range(task["steps"])]
    return {"step_s": statistics.median(times), "step_times_s": times, "batch_shape": list(batch["data"].shape),
            "peak_bytes": benchmark.peak_memory_bytes(device)}


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="nnsam_temporal_benchmark_") as tmp:
        root = Path(tmp)
        benchmark.set_benchmark_environment(root)
        setup = run_worker("prepare", {"phase": "prepare", "root": str(root), "device": args.device,
                                       "frames": args.frames}, root)
        results = {trainer: run_worker(f"train_{trainer}", {
            "phase": "train", "device": setup["device"], "preprocessed": setup["preprocessed"], "trainer": trainer,
            "configuration": configuration, "batch": setup["batches"][configuration], "steps": args.steps}, root)
            for _, trainer, configuration in ROWS}
    online, cached = results[ROWS[0][1]]["step_s"], results[ROWS[1][1]]["step_s"]
    print(f"\n# nnsam temporal benchmark on {setup['device_name']} (torch {setup['torch_version']}), "
          f"{args.frames} frames per step, median of {args.steps} steps after 1 warm-up")
    print(benchmark.markdown_table(
        ["row", "trainer", "configuration", "batch", "step (s)", "range (s)", "x nnSAM online", "x nnSAM (cache)",
         "peak memory (MiB)"],
        [[label, f"`{trainer}`", configuration, "x".join(map(str, results[trainer]["batch_shape"])),
          f"{results[trainer]['step_s']:.3f}", benchmark.seconds_range(results[trainer]["step_times_s"]),
          f"{results[trainer]['step_s'] / online:.2f}", f"{results[trainer]['step_s'] / cached:.2f}",
          f"{results[trainer]['peak_bytes'] / benchmark.MIB:,.0f}"] for label, trainer, configuration in ROWS]))
    tra_online, tra = results[ROWS[2][1]]["step_s"], results[ROWS[3][1]]["step_s"]
    print(f"\ntrain-step ratio TRA/nnSAM online: {tra_online / online:.2f}")
    print(f"train-step ratio TRA/nnSAM: {tra / cached:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == WORKER_FLAG:
        task = json.loads(Path(sys.argv[2]).read_text())
        Path(sys.argv[3]).write_text(json.dumps({"prepare": prepare, "train": train}[task["phase"]](task)))
    else:
        main()
