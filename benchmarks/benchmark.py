"""nnSAM against nnU-Net on one device: train-step time and peak memory, prediction time, checkpoint size.

    python benchmarks/benchmark.py [--device cpu|cuda] [--steps 3] [--image-size 128 160] [--predict-cases 2]

One run, one device, one set of nnU-Net plans, one batch for every row:

* The synthetic dataset is planned and preprocessed in a temporary folder with the stock nnU-Net command; one batch
  is taken from nnU-Net's own training data loader and saved, and every row trains on exactly that batch.
* Train step: nnU-Net's ``train_step`` (forward, loss, backward, optimizer step) of each trainer in ``ROWS``, the
  median of ``--steps`` steps after one warm-up step. Peak memory per row: on CUDA
  ``torch.cuda.max_memory_allocated`` (reset at the start of the row); on CPU the peak resident memory of the
  process that ran the row (each row runs in a process of its own, so rows cannot inflate each other's figure).
* Checkpoint: after the timed steps each trainer writes ``checkpoint_final.pth`` (network weights and nnU-Net's
  optimizer state) into nnU-Net's model folder layout (``plans.json``, ``dataset.json``, ``fold_0/``).
* Prediction: ``nnUNetPredictor`` loads that model folder as ``nnUNetv2_predict`` does (tile step 0.5, Gaussian
  weighting, test-time mirroring) and predicts ``--predict-cases`` synthetic images 1.5 times the training image
  size, so several sliding windows are needed; files are read, preprocessed, predicted, resampled and written
  in-process, one case after the other (``nnUNetv2_predict -npp 0 -nps 0``). The weights are those saved after a
  few steps: prediction cost does not depend on weight values.
* Embedding cache: the cached rows first build their cache for the dataset (timed: that is the build time, one
  encoder pass per training slice) and report its disk size; their timed steps then take the embedding from the
  cache, sampled for the batch as the data loader does (the sampling, timed per sample, runs in nnU-Net's data
  loader workers, not in the train step). Prediction never uses the cache (nnU-Net's predictor encodes every
  window), so the cached rows are not predicted again: their prediction cost is their online row's.

MobileSAM's official weights are used when found (NNSAM_MOBILESAM_CHECKPOINT or the cache); otherwise random
weights in the official layout are created: the cost does not depend on the weight values. ``nnUNet_compile``
defaults to off here (set ``nnUNet_compile=t`` to time compiled networks on a GPU).

The last line printed is ``train-step ratio nnSAM/nnU-Net: X.XX`` (nnSAMTrainer, as users run it by default: from
the embedding cache, over nnUNetTrainer); the line before it gives the online encoder's ratio.
"""
from __future__ import annotations

# Module level imports stay in the standard library: the parent process only orchestrates, and everything heavy
# (torch, nnU-Net) is imported by the worker processes, so each row's memory is its own.
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# (label, trainer class name). A trainer is looked up by name the way nnUNetv2_train does, so a new row, e.g.
# ("nnSAM MobileSAM, your variant", "nnSAMTrainer_Yours"), is one line here.
ROWS: list[tuple[str, str]] = [
    ("nnU-Net", "nnUNetTrainer"),
    ("nnSAM MobileSAM, online encoder", "nnSAMTrainer_Online"),
    ("nnSAM MobileSAM, embedding cache (default)", "nnSAMTrainer"),
    ("nnSAM LiteMedSAM, online encoder", "nnSAMTrainer_LiteMedSAM_Online"),
    ("nnSAM LiteMedSAM, embedding cache (default)", "nnSAMTrainer_LiteMedSAM"),
]
# Cached rows predict exactly as their online row (the predictor never reads the cache).
PREDICTS_LIKE = {"nnSAMTrainer": "nnSAMTrainer_Online", "nnSAMTrainer_LiteMedSAM": "nnSAMTrainer_LiteMedSAM_Online"}
BASE_TRAINER = "nnUNetTrainer"
RATIO_TRAINER = "nnSAMTrainer"  # what users run by default (trained from the embedding cache)
ONLINE_RATIO_TRAINER = "nnSAMTrainer_Online"

CONFIGURATION = "2d"
FOLD = 0
NUM_TRAINING_SUBJECTS = 6  # 12 images: enough for nnU-Net to plan, cheap to preprocess
PREDICT_IMAGE_SCALE = 1.5  # prediction images are this much larger than training images: several windows
WORKER_FLAG = "--worker"
MIB = 2**20


# ---------------------------------------------------------------------------------------------------------------
# Parent: options, worker processes, report
# ---------------------------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda if available, else cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed train steps per trainer (after one warm-up)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"),
                        help="training image size of the synthetic dataset (nnU-Net plans the patch from it)")
    parser.add_argument("--predict-cases", type=int, default=2, help="synthetic cases predicted per trainer")
    args = parser.parse_args()
    if args.steps < 1 or args.predict_cases < 1 or min(args.image_size) < 16:
        parser.error("--steps and --predict-cases must be at least 1, --image-size at least 16 16")
    return args


def set_benchmark_environment(root: Path) -> None:
    """Environment shared by every worker: nnU-Net's folders, the nnSAM trainer folder, in-process data loading."""
    from nnsam.plugin import env_with_trainer_dir  # standard library only

    os.environ.update({"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
                       "nnUNet_results": str(root / "results")})
    os.environ.update(env_with_trainer_dir())  # the predictor finds nnSAM trainers the way nnUNetv2_predict does
    os.environ.setdefault("nnUNet_compile", "f")
    # One in-process data loader (the planning subprocess gets this variable removed: it reads it as a thread count).
    os.environ["nnUNet_n_proc_DA"] = "0"


def run_worker(name: str, task: dict, root: Path) -> dict:
    """Run one task in a fresh Python process and return its result; its output goes to a log shown on failure."""
    task_file, result_file, log_file = (root / f"{name}.{suffix}" for suffix in ("task.json", "result.json", "log"))
    task_file.write_text(json.dumps(task))
    print(f"[benchmark] {name} ...", flush=True)
    with log_file.open("w") as log:
        completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), WORKER_FLAG, str(task_file),
                                    str(result_file)], stdout=log, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        tail = "\n".join(log_file.read_text().splitlines()[-40:])
        sys.exit(f"{tail}\n\nbenchmark: worker '{name}' failed (exit code {completed.returncode}); its log ends above.")
    return json.loads(result_file.read_text())


def report_cache(train: dict[str, dict]) -> None:
    rows = [[label, f"`{trainer}`", str(train[trainer]["cache"]["slices"]), f"{train[trainer]['cache']['build_s']:.1f}",
             f"{train[trainer]['cache']['build_s'] / train[trainer]['cache']['slices']:.2f}",
             f"{train[trainer]['cache']['bytes'] / MIB:.1f}", f"{train[trainer]['cache']['sample_ms']:.2f}"]
            for label, trainer in ROWS if "cache" in train[trainer]]
    print("\n## Embedding cache: built once per dataset and encoder (float16, beside nnU-Net's preprocessed data)")
    print(markdown_table(["row", "trainer", "slices", "build (s)", "s/slice", "disk (MiB)",
                          "lookup per sample (ms, data loader)"], rows))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def memory_meaning(device: str) -> str:
    if device == "cuda":
        return ("peak memory = torch.cuda.max_memory_allocated over building the trainer, the warm-up and the timed "
                "steps (reset at the start of the row; PyTorch's caching allocator reserves more)")
    return ("peak memory = peak resident memory (VmHWM) of the process that ran the row: Python, PyTorch and "
            "nnU-Net, the network, optimizer state and one step's activations")


def seconds_range(samples: list[float]) -> str:
    # Shown beside the median: on a shared machine the spread says how far to trust the median.
    return f"{min(samples):.2f}-{max(samples):.2f}"


def report_train(setup: dict, train: dict[str, dict], steps: int) -> None:
    base = train[BASE_TRAINER]["step_s"]
    rows = [[label, f"`{trainer}`", f"{train[trainer]['step_s']:.3f}", seconds_range(train[trainer]["step_times_s"]),
             f"{train[trainer]['step_s'] / base:.2f}", f"{train[trainer]['peak_bytes'] / MIB:,.0f}",
             f"{train[trainer]['checkpoint_bytes'] / MIB:.1f}"]
            for label, trainer in ROWS]
    print(f"\n## Train step: nnU-Net's train_step (forward, loss, backward, optimizer step), median of {steps} "
          f"after 1 warm-up, batch {tuple(setup['batch_shape'])}, patch {tuple(setup['patch_size'])}")
    print(markdown_table(["row", "trainer", "step (s)", "range (s)", "x nnU-Net", "peak memory (MiB)",
                          "checkpoint (MiB)"], rows))
    print(f"{memory_meaning(setup['device'])}.")
    print("checkpoint = checkpoint_final.pth as nnU-Net writes it (network weights + optimizer state) after the "
          "timed steps.")


def report_predict(setup: dict, predict: dict[str, dict]) -> None:
    base = predict[BASE_TRAINER]["seconds_per_case"]
    rows = [[label, f"`{trainer}`", f"{predict[trainer]['seconds_per_case']:.2f}",
             seconds_range(predict[trainer]["case_times_s"]), f"{predict[trainer]['seconds_per_case'] / base:.2f}",
             ", ".join(str(n) for n in predict[trainer]["windows_per_case"]),
             str(predict[trainer]["passes_per_window"])]
            for label, trainer in ROWS if trainer in predict]
    cases = len(setup["predict_files"])
    print(f"\n## Prediction as nnUNetv2_predict -npp 0 -nps 0 (tile step 0.5, Gaussian, mirroring): {cases} "
          f"synthetic case(s) of {tuple(setup['predict_image_size'])} pixels, patch {tuple(setup['patch_size'])}")
    print(markdown_table(["row", "trainer", "s/case (median)", "range (s)", "x nnU-Net", "windows per case",
                          "network passes per window"], rows))
    print("s/case = reading, preprocessing, sliding-window prediction, resampling and writing one case; model "
          "loading excluded, the first case's one-time costs included. Cached rows predict exactly as their online "
          "row (nnU-Net's predictor encodes every window; the cache is a training-time device).")


def report(setup: dict, train: dict[str, dict], predict: dict[str, dict], args: argparse.Namespace) -> None:
    height, width = args.image_size
    print(f"\n# nnsam benchmark on {setup['device_name']}")
    print(f"settings: --device {setup['device']} --steps {args.steps} --image-size {height} {width} "
          f"--predict-cases {args.predict_cases}; torch {setup['torch_version']}, {setup['threads']} thread(s), "
          f"nnUNet_compile={os.environ['nnUNet_compile']}; MobileSAM: {setup['weights_note']}")
    report_train(setup, train, args.steps)
    report_predict(setup, predict)
    report_cache(train)
    base = train[BASE_TRAINER]["step_s"]
    print(f"\nonline train-step ratio {ONLINE_RATIO_TRAINER}/nnU-Net: {train[ONLINE_RATIO_TRAINER]['step_s'] / base:.2f}")
    print(f"train-step ratio nnSAM/nnU-Net: {train[RATIO_TRAINER]['step_s'] / base:.2f}")


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="nnsam_benchmark_") as tmp:
        root = Path(tmp)
        set_benchmark_environment(root)
        setup = run_worker("prepare", {"phase": "prepare", "root": str(root), "device": args.device,
                                       "image_size": list(args.image_size), "predict_cases": args.predict_cases},
                           root)
        if setup["mobilesam_checkpoint"]:
            os.environ["NNSAM_MOBILESAM_CHECKPOINT"] = setup["mobilesam_checkpoint"]
        common = {"device": setup["device"], "preprocessed": setup["preprocessed"]}
        train = {trainer: run_worker(f"train_{trainer}", {**common, "phase": "train", "trainer": trainer,
                                                          "batch": setup["batch"], "steps": args.steps}, root)
                 for _, trainer in ROWS}
        predict = {trainer: run_worker(f"predict_{trainer}",
                                       {**common, "phase": "predict", "model_folder": train[trainer]["model_folder"],
                                        "files": setup["predict_files"], "output": str(root / "predictions" / trainer)},
                                       root)
                   for _, trainer in ROWS if trainer not in PREDICTS_LIKE}
    report(setup, train, predict, args)


# ---------------------------------------------------------------------------------------------------------------
# Workers: each task runs in its own process (python benchmark.py --worker TASK.json RESULT.json)
# ---------------------------------------------------------------------------------------------------------------

def resolve_device(requested: str | None):
    import torch

    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark: --device cuda but PyTorch sees no CUDA device")
    return torch.device(requested)


def use_threads_like_nnunet_commands(device) -> None:
    """Thread settings of nnUNetv2_train and nnUNetv2_predict, so timings match the stock commands."""
    import multiprocessing

    import torch

    if device.type == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
    else:
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{os.cpu_count()}-core CPU" + (f" ({models[0]})" if models else "")


def plan_and_preprocess(image_size: tuple[int, int]) -> Path:
    from nnsam.data.synthetic import make_synthetic_dataset

    dataset = make_synthetic_dataset(os.environ["nnUNet_raw"], num_subjects=NUM_TRAINING_SUBJECTS,
                                     image_size=image_size)
    dataset_id = dataset.name.split("_")[0].removeprefix("Dataset")
    env = {key: value for key, value in os.environ.items() if key != "nnUNet_n_proc_DA"}
    subprocess.run([str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c",
                    CONFIGURATION, "-np", "2"], check=True, env=env)
    return Path(os.environ["nnUNet_preprocessed"]) / dataset.name


def ensure_mobilesam_weights(root: Path) -> tuple[str, str | None]:
    """(note for the report, path to export as NNSAM_MOBILESAM_CHECKPOINT or None when the official file is used)."""
    import torch

    from nnsam.networks.checkpoints import EncoderWeightsError, resolve_mobilesam_checkpoint

    try:
        return f"official weights ({resolve_mobilesam_checkpoint(download=False)})", None
    except EncoderWeightsError:
        from mobile_sam import build_sam_vit_t

        path = root / "mobile_sam_random.pt"
        torch.save(build_sam_vit_t(checkpoint=None).state_dict(), path)
        return "random weights in the official layout (official file not found)", str(path)


def load_plans(preprocessed: Path) -> dict:
    from batchgenerators.utilities.file_and_folder_operations import load_json

    plans = load_json(preprocessed / "nnUNetPlans.json")
    plans["continue_training"] = False  # nnU-Net's trainer pops this key (run_training puts it there)
    return plans


def build_trainer(trainer_name: str, preprocessed: Path, device):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    trainer = trainer_class(load_plans(preprocessed), CONFIGURATION, FOLD, load_json(preprocessed / "dataset.json"),
                            device=device)
    trainer.initialize()
    return trainer


def save_training_batch(preprocessed: Path, path: Path) -> tuple[int, ...]:
    """One batch from nnU-Net's own training loader (augmented, deep-supervision targets), saved for every row."""
    import torch

    reference = build_trainer(BASE_TRAINER, preprocessed, torch.device("cpu"))
    train_loader, _ = reference.get_dataloaders()
    batch = next(train_loader)
    torch.save({"data": batch["data"], "target": batch["target"]}, path)
    return tuple(batch["data"].shape)


def make_prediction_cases(root: Path, image_size: tuple[int, int], cases: int) -> tuple[list[str], tuple[int, int]]:
    from nnsam.data.synthetic import make_synthetic_dataset

    size = (round(image_size[0] * PREDICT_IMAGE_SCALE), round(image_size[1] * PREDICT_IMAGE_SCALE))
    # Outside nnUNet_raw and with another seed: new images, never seen by planning.
    dataset = make_synthetic_dataset(root / "predict_raw", num_subjects=math.ceil(cases / 2), image_size=size, seed=1)
    return [str(path) for path in sorted((dataset / "imagesTr").glob("*_0000.nii.gz"))[:cases]], size


def prepare(task: dict) -> dict:
    import torch

    root = Path(task["root"])
    device = resolve_device(task["device"])
    use_threads_like_nnunet_commands(device)
    preprocessed = plan_and_preprocess(tuple(task["image_size"]))
    weights_note, mobilesam_checkpoint = ensure_mobilesam_weights(root)
    batch_shape = save_training_batch(preprocessed, root / "batch.pt")
    predict_files, predict_size = make_prediction_cases(root, tuple(task["image_size"]), task["predict_cases"])
    patch_size = load_plans(preprocessed)["configurations"][CONFIGURATION]["patch_size"]
    return {"device": device.type, "device_name": device_name(device), "torch_version": torch.__version__,
            "threads": torch.get_num_threads(), "preprocessed": str(preprocessed), "batch": str(root / "batch.pt"),
            "batch_shape": batch_shape, "patch_size": patch_size, "weights_note": weights_note,
            "mobilesam_checkpoint": mobilesam_checkpoint, "predict_files": predict_files,
            "predict_image_size": predict_size}


def peak_resident_bytes() -> int:
    # VmHWM is this process's own high-water mark. ru_maxrss comes second: Linux carries the parent's peak into a
    # child's ru_maxrss across exec, so it reports at least the size of whoever started the process.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_memory_bytes(device) -> int:
    import torch

    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_resident_bytes()


def timed_train_step(trainer, batch: dict, device) -> float:
    import time

    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()  # train_step returns before queued GPU work ends
    return time.perf_counter() - start


def write_model_folder(trainer) -> Path:
    """nnU-Net's trained-model layout (plans.json, dataset.json, fold_0/checkpoint_final.pth) for nnUNetPredictor."""
    from batchgenerators.utilities.file_and_folder_operations import save_json

    # nnU-Net sets the test-time mirroring axes in on_train_start (not run here) and the checkpoint records them;
    # without them nnUNetPredictor would silently predict without mirroring.
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    model_folder = Path(trainer.output_folder_base)
    (model_folder / f"fold_{FOLD}").mkdir(parents=True, exist_ok=True)
    save_json(trainer.plans_manager.plans, str(model_folder / "plans.json"), sort_keys=False)
    save_json(trainer.dataset_json, str(model_folder / "dataset.json"), sort_keys=False)
    trainer.save_checkpoint(str(model_folder / f"fold_{FOLD}" / "checkpoint_final.pth"))
    return model_folder


def train(task: dict) -> dict:
    import statistics

    import torch

    device = resolve_device(task["device"])
    use_threads_like_nnunet_commands(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = build_trainer(task["trainer"], Path(task["preprocessed"]), device)
    if hasattr(trainer, "load_pretrained_encoder"):
        trainer.load_pretrained_encoder()  # nnSAM trainers do this in on_train_start, which is not run here
    trainer.network.train()
    batch = torch.load(task["batch"])
    cache = None
    if getattr(trainer, "cache_embeddings", False):
        cache = add_cached_embedding(trainer, batch, device)
    trainer.train_step(batch)  # warm-up: first-call allocations and kernel selection
    times = [timed_train_step(trainer, batch, device) for _ in range(task["steps"])]
    peak = peak_memory_bytes(device)
    model_folder = write_model_folder(trainer)
    checkpoint = model_folder / f"fold_{FOLD}" / "checkpoint_final.pth"
    result = {"step_s": statistics.median(times), "step_times_s": times, "peak_bytes": peak,
              "checkpoint_bytes": checkpoint.stat().st_size, "model_folder": str(model_folder)}
    return result if cache is None else {**result, "cache": cache}


def add_cached_embedding(trainer, batch: dict, device) -> dict:
    """Build the trainer's embedding cache (timed) and give ``batch`` an embedding sampled from it, as the data
    loader does: per sample, the frame coordinates of the patch, averaged over the fusion cells, sample the cached
    slice embedding. Returns the cache's figures."""
    import time

    import numpy as np
    import torch

    from nnsam.cache.frames import frame_grid_coordinates, sample_at_cells

    start = time.perf_counter()
    cache = trainer.prepare_embedding_cache()
    build_s = time.perf_counter() - start
    identifiers = sorted(p.stem for p in cache.folder.glob("*.npy"))
    embeddings = cache.open(identifiers[0])
    patch = trainer.frame_patch_size()
    cells = trainer.nnsam_network().fusion_cells(patch)
    samples, times = [], []
    data = batch["data"]
    num_frames = data.shape[0] * (data.shape[2] if data.dim() == 5 else 1)  # a clip's frames each take one
    for _ in range(num_frames):
        start = time.perf_counter()
        coordinates = frame_grid_coordinates((0, 0), patch, patch, patch)
        slice_embedding = torch.from_numpy(np.asarray(embeddings[0], dtype=np.float32))
        samples.append(sample_at_cells(slice_embedding, coordinates, cells))
        times.append(time.perf_counter() - start)
    batch["embedding"] = torch.stack(samples)
    return {"build_s": build_s, "slices": sum(int(cache.open(i).shape[0]) for i in identifiers),
            "bytes": cache.size_bytes(identifiers), "sample_ms": 1000 * float(np.median(times))}


def window_counting_predictor(device):
    """nnU-Net's predictor with nnUNetv2_predict's defaults, recording the sliding windows of each case."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    class WindowCountingPredictor(nnUNetPredictor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.windows_per_case: list[int] = []

        def _internal_get_sliding_window_slicers(self, image_size):
            slicers = super()._internal_get_sliding_window_slicers(image_size)
            self.windows_per_case.append(len(slicers))
            return slicers

    return WindowCountingPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                   perform_everything_on_device=True, device=device, allow_tqdm=False)


def passes_per_window(predictor) -> int:
    # nnU-Net runs the network once plus once per non-empty combination of mirror axes: 2 ** len(axes) in all.
    axes = predictor.allowed_mirroring_axes if predictor.use_mirroring else None
    return 2 ** len(axes) if axes else 1


def predict(task: dict) -> dict:
    import statistics
    import time

    device = resolve_device(task["device"])
    use_threads_like_nnunet_commands(device)
    predictor = window_counting_predictor(device)
    predictor.initialize_from_trained_model_folder(task["model_folder"], use_folds=(FOLD,),
                                                   checkpoint_name="checkpoint_final.pth")
    Path(task["output"]).mkdir(parents=True)
    times = []
    for image in task["files"]:
        start = time.perf_counter()
        # The result is written to disk and read back to the CPU, so no GPU work is left pending.
        predictor.predict_from_files_sequential([[image]], task["output"], save_probabilities=False, overwrite=True)
        times.append(time.perf_counter() - start)
    return {"seconds_per_case": statistics.median(times), "case_times_s": times,
            "windows_per_case": predictor.windows_per_case, "passes_per_window": passes_per_window(predictor)}


WORKER_PHASES = {"prepare": prepare, "train": train, "predict": predict}


def worker_main(task_file: Path, result_file: Path) -> None:
    task = json.loads(task_file.read_text())
    result = WORKER_PHASES[task["phase"]](task)
    result_file.write_text(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == WORKER_FLAG:
        worker_main(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
