"""The machinery of a few-shot experiment: workspace, preprocessing, nnU-Net splits, resumable training runs.

Everything nnU-Net writes goes under OUT_DIR: ``nnUNet_raw`` holds a symlink to the (possibly read-only) dataset,
``nnUNet_preprocessed`` and ``nnUNet_results`` are nnU-Net's usual folders, and ``runs/<trainer>/n<N>_seed<S>``
holds each run's log and its ``done.json`` marker (the run's settings and per-case metrics) that makes reruns skip
finished work.

Training happens in a subprocess (``python -m nnsam.fewshot.runner train ...``) for two reasons: nnU-Net reads
its folder variables when it is imported, and a crash (out of memory, a bad trainer) must not end the whole
experiment.

How the test set reaches nnU-Net: each (N, seed) pair is one fold in ``splits_final.json`` whose ``train`` is the
N-case subset and whose ``val`` is the held-out test set. nnU-Net uses a fold's ``val`` cases only to log its
pseudo-Dice during training and for the final prediction with ``checkpoint_final.pth`` (the files in
``fold_K/validation``). It selects no model and tunes nothing on them, so that final prediction is a genuine
test-set prediction.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from nnsam.fewshot.metrics import evaluate_case
from nnsam.plugin import env_with_trainer_dir

CONFIGURATION = "2d"
PLANS = "nnUNetPlans"
# Used when the dataset folder is not named DatasetXXX_Name; any id works since our nnUNet_raw holds one dataset.
FALLBACK_DATASET_ID = 991
DATASET_FOLDER_PATTERN = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")
PREPROCESSED_MARKER = "fewshot_preprocessing_done.json"


@dataclass(frozen=True)
class TrainingBudget:
    """How long and how each run trains; ``None`` keeps the trainer's own value (nnU-Net: 1000 x 250, 50 val)."""

    device: str
    epochs: int | None = None
    iters_per_epoch: int | None = None
    val_iters: int | None = None
    batch_size: int | None = None
    disable_tta: bool = False


@dataclass(frozen=True)
class RunSpec:
    """One training run: a trainer on the N-case subset of one seed, scored on the test set."""

    trainer: str
    n: int
    seed: int
    fold: int
    train_cases: tuple[str, ...]
    test_cases: tuple[str, ...]
    budget: TrainingBudget

    @property
    def name(self) -> str:
        return f"{self.trainer} N={self.n} seed={self.seed}"

    def as_json(self) -> dict:
        """JSON-comparable form (tuples become lists), stored in the done marker."""
        return json.loads(json.dumps(asdict(self)))


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # "done", "skipped" (finished earlier) or "failed"
    rows: list[dict] = field(default_factory=list)
    log_path: Path | None = None
    message: str = ""


@dataclass(frozen=True)
class Workspace:
    """OUT_DIR and nnU-Net's view of the dataset inside it."""

    out_dir: Path
    source_dir: Path
    dataset_id: int
    dataset_name: str

    @property
    def raw_root(self) -> Path:
        return self.out_dir / "nnUNet_raw"

    @property
    def preprocessed_root(self) -> Path:
        return self.out_dir / "nnUNet_preprocessed"

    @property
    def results_root(self) -> Path:
        return self.out_dir / "nnUNet_results"

    @property
    def raw_dataset_dir(self) -> Path:
        return self.raw_root / self.dataset_name

    @property
    def preprocessed_dataset_dir(self) -> Path:
        return self.preprocessed_root / self.dataset_name

    @property
    def runs_dir(self) -> Path:
        return self.out_dir / "runs"

    @property
    def dataset_json(self) -> dict:
        return json.loads((self.source_dir / "dataset.json").read_text())

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    def foreground_labels(self) -> dict[int, str]:
        """Label value -> name for every foreground class of dataset.json."""
        labels: dict[int, str] = {}
        for name, value in self.dataset_json["labels"].items():
            if not isinstance(value, int):
                raise NotImplementedError(f"Region-based labels ({name}: {value}) are not supported by nnsam fewshot.")
            if value != 0 and name != "ignore":
                labels[value] = name
        return labels

    def case_ids(self) -> list[str]:
        """Training case ids (from labelsTr), sorted."""
        ending = self.file_ending
        return sorted(p.name[: -len(ending)] for p in (self.source_dir / "labelsTr").iterdir() if p.name.endswith(ending))

    def fold_dir(self, trainer: str, fold: int) -> Path:
        return self.results_root / self.dataset_name / f"{trainer}__{PLANS}__{CONFIGURATION}" / f"fold_{fold}"

    def run_dir(self, spec: RunSpec) -> Path:
        return self.runs_dir / spec.trainer / f"n{spec.n:03d}_seed{spec.seed}"

    def nnunet_env(self, device: str) -> dict[str, str]:
        """Environment for nnU-Net subprocesses: our folders, our trainers, and CPU-friendly worker counts."""
        env = env_with_trainer_dir()
        env.update(
            nnUNet_raw=str(self.raw_root),
            nnUNet_preprocessed=str(self.preprocessed_root),
            nnUNet_results=str(self.results_root),
        )
        if device == "cpu":
            # nnU-Net's defaults (8 export workers, DA workers per hostname table) swamp a small CPU machine; a
            # value the user set explicitly wins.
            cores = os.cpu_count() or 1
            env.setdefault("nnUNet_n_proc_DA", str(min(2, cores)))
            env.setdefault("nnUNet_def_n_proc", "1")
        return env


def prepare_workspace(dataset_dir: Path, out_dir: Path) -> Workspace:
    """Create OUT_DIR's nnU-Net folders and make the dataset visible as ``nnUNet_raw/DatasetXXX_Name``.

    The dataset is linked, never copied or written to, so a read-only dataset works. A dataset already inside our
    ``nnUNet_raw`` (the synthetic demo) is used in place.
    """
    source = dataset_dir.resolve()
    if not (source / "dataset.json").is_file() or not (source / "labelsTr").is_dir():
        raise FileNotFoundError(f"{dataset_dir} is not an nnU-Net raw dataset (needs dataset.json and labelsTr/).")
    match = DATASET_FOLDER_PATTERN.match(source.name)
    if match:
        dataset_id, dataset_name = int(match.group(1)), source.name
    else:
        safe = re.sub(r"[^A-Za-z0-9]+", "", source.name) or "Dataset"
        dataset_id, dataset_name = FALLBACK_DATASET_ID, f"Dataset{FALLBACK_DATASET_ID}_{safe}"
    workspace = Workspace(out_dir=out_dir.resolve(), source_dir=source, dataset_id=dataset_id, dataset_name=dataset_name)
    for folder in (workspace.raw_root, workspace.preprocessed_root, workspace.results_root, workspace.runs_dir):
        folder.mkdir(parents=True, exist_ok=True)
    others = [p.name for p in workspace.raw_root.iterdir() if p.name != dataset_name and p.name.startswith("Dataset")]
    if others:
        raise RuntimeError(f"{out_dir} already holds an experiment on {others[0]}; use a new --out for {source}.")
    link = workspace.raw_dataset_dir
    if link.is_symlink() or link.exists():
        if link.resolve() != source:
            raise RuntimeError(f"{link} points to {link.resolve()}, not {source}; use a new --out.")
    else:
        link.symlink_to(source, target_is_directory=True)
    return workspace


def ensure_preprocessed(workspace: Workspace, num_processes: int) -> Path:
    """Plan and preprocess the 2d configuration once (with integrity check); later calls reuse the result.

    Returns the log path. Raises ``RuntimeError`` naming the log if nnU-Net fails.
    """
    log_path = workspace.out_dir / "logs" / "plan_and_preprocess.log"
    marker = workspace.preprocessed_dataset_dir / PREPROCESSED_MARKER
    if marker.is_file():
        return log_path
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints",
        "-d", str(workspace.dataset_id), "-c", CONFIGURATION,
        "-np", str(num_processes), "-npfp", str(num_processes), "--verify_dataset_integrity",
    ]
    with open(log_path, "w") as log:
        result = subprocess.run(command, env=workspace.nnunet_env("cpu"), stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"nnU-Net planning/preprocessing failed (exit {result.returncode}); see {log_path}")
    marker.write_text(json.dumps({"source": str(workspace.source_dir), "configuration": CONFIGURATION}))
    return log_path


def assign_folds(workspace: Workspace, fold_contents: dict[tuple[int, int], list[str]], test_cases: list[str]) -> dict[tuple[int, int], int]:
    """Give every (n, seed) a stable fold number and write nnU-Net's ``splits_final.json`` accordingly.

    ``OUT_DIR/folds.json`` keeps the mapping (with each fold's cases) across reruns, so adding N values or seeds
    later appends folds instead of renumbering finished ones. A ``splits_final.json`` that we did not write is
    backed up before it is replaced.
    """
    folds_file = workspace.out_dir / "folds.json"
    recorded: list[dict] = json.loads(folds_file.read_text())["folds"] if folds_file.is_file() else []
    workspace.preprocessed_dataset_dir.mkdir(parents=True, exist_ok=True)
    splits_file = workspace.preprocessed_dataset_dir / "splits_final.json"
    previous_splits = [{"train": f["train"], "val": f["test"]} for f in recorded]
    if splits_file.is_file() and json.loads(splits_file.read_text()) != previous_splits:
        backup = splits_file.with_name(f"splits_final.json.backup-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(splits_file, backup)
        print(f"Note: {splits_file} was not written by nnsam fewshot; kept a copy as {backup.name}.")

    index = {(f["n"], f["seed"]): i for i, f in enumerate(recorded)}
    for (n, seed), train in sorted(fold_contents.items()):
        entry = {"n": n, "seed": seed, "fold": 0, "train": list(train), "test": list(test_cases)}
        if (n, seed) in index:
            recorded[index[(n, seed)]] = entry
        else:
            index[(n, seed)] = len(recorded)
            recorded.append(entry)
    for fold, entry in enumerate(recorded):
        entry["fold"] = fold
    folds_file.write_text(json.dumps({"dataset": workspace.dataset_name, "folds": recorded}, indent=1))
    splits_file.write_text(json.dumps([{"train": f["train"], "val": f["test"]} for f in recorded], indent=1))
    return {key: index[key] for key in fold_contents}


def train_in_subprocess(spec: RunSpec, workspace: Workspace, log_path: Path) -> int:
    """Train and predict the test set for one run in a fresh Python process; returns its exit code."""
    budget = spec.budget
    command = [
        sys.executable, "-m", "nnsam.fewshot.runner", "train",
        "--dataset", workspace.dataset_name, "--fold", str(spec.fold), "--trainer", spec.trainer,
        "--device", budget.device, "--seed", str(spec.seed),
    ]
    for flag, value in (("--epochs", budget.epochs), ("--iters-per-epoch", budget.iters_per_epoch),
                        ("--val-iters", budget.val_iters), ("--batch-size", budget.batch_size)):
        if value is not None:
            command += [flag, str(value)]
    if budget.disable_tta:
        command.append("--disable-tta")
    with open(log_path, "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        return subprocess.run(command, env=workspace.nnunet_env(budget.device), stdout=log, stderr=subprocess.STDOUT).returncode


def evaluate_run(spec: RunSpec, workspace: Workspace) -> list[dict]:
    """Per-case, per-class metric rows of one finished run (predictions from its fold's validation folder)."""
    labels = workspace.foreground_labels()
    prediction_dir = workspace.fold_dir(spec.trainer, spec.fold) / "validation"
    rows = []
    for case in spec.test_cases:
        prediction = prediction_dir / f"{case}{workspace.file_ending}"
        if not prediction.is_file():
            raise FileNotFoundError(f"Missing test prediction {prediction}")
        reference = workspace.source_dir / "labelsTr" / f"{case}{workspace.file_ending}"
        for value, metrics in evaluate_case(prediction, reference, labels).items():
            rows.append({"trainer": spec.trainer, "n": spec.n, "seed": spec.seed, "fold": spec.fold, "case": case,
                         "class": value, "class_name": labels[value], **metrics.as_dict()})
    return rows


def _mean_dice(rows: list[dict]) -> float:
    return sum(r["dice"] for r in rows) / max(1, len(rows))


def run_all(
    specs: list[RunSpec],
    workspace: Workspace,
    train_fn: Callable[[RunSpec, Workspace, Path], int] = train_in_subprocess,
    evaluate_fn: Callable[[RunSpec, Workspace], list[dict]] = evaluate_run,
) -> list[RunOutcome]:
    """Run every spec not finished before, one after the other; a failure is recorded and the loop goes on.

    A run counts as finished when its ``done.json`` holds exactly this spec (same cases, fold and budget); a
    changed budget or split therefore retrains it.
    """
    outcomes: list[RunOutcome] = []
    progress = tqdm(specs, desc="few-shot runs", unit="run", dynamic_ncols=True)
    for i, spec in enumerate(progress, start=1):
        run_dir = workspace.run_dir(spec)
        done_file, failed_file, log_path = run_dir / "done.json", run_dir / "failed.json", run_dir / "train.log"
        label = f"[{i}/{len(specs)}] {spec.name}"
        progress.set_postfix_str(spec.name)
        if done_file.is_file():
            done = json.loads(done_file.read_text())
            if done["spec"] == spec.as_json():
                outcomes.append(RunOutcome(spec, "skipped", done["rows"], log_path))
                tqdm.write(f"{label}: finished earlier, skipped (mean Dice {_mean_dice(done['rows']):.3f})")
                continue
            tqdm.write(f"{label}: settings changed since the last run, retraining")
        run_dir.mkdir(parents=True, exist_ok=True)
        done_file.unlink(missing_ok=True)
        failed_file.unlink(missing_ok=True)
        # A fresh fold folder: stale predictions of an earlier attempt must never be scored.
        shutil.rmtree(workspace.fold_dir(spec.trainer, spec.fold), ignore_errors=True)
        tqdm.write(f"{label}: training on {spec.n} cases (log: {log_path})")
        started = time.time()
        try:
            return_code = train_fn(spec, workspace, log_path)
            if return_code != 0:
                raise RuntimeError(f"training exited with code {return_code}")
            rows = evaluate_fn(spec, workspace)
        except Exception as error:  # noqa: BLE001 - any failure of one run must not stop the others
            message = f"{type(error).__name__}: {error}"
            failed_file.write_text(json.dumps({"spec": spec.as_json(), "error": message, "log": str(log_path)}))
            outcomes.append(RunOutcome(spec, "failed", [], log_path, message))
            tqdm.write(f"{label}: FAILED ({message}); log: {log_path}")
            continue
        seconds = time.time() - started
        done_file.write_text(json.dumps({"spec": spec.as_json(), "seconds": seconds, "rows": rows}, indent=1))
        outcomes.append(RunOutcome(spec, "done", rows, log_path))
        tqdm.write(f"{label}: done in {seconds:.0f} s, mean test Dice {_mean_dice(rows):.3f}")
    progress.close()
    return outcomes


def train_one(
    dataset: str,
    fold: int,
    trainer_name: str,
    device: str,
    seed: int,
    epochs: int | None,
    iters_per_epoch: int | None,
    val_iters: int | None,
    batch_size: int | None,
    disable_tta: bool,
) -> None:
    """Train one fold with nnU-Net's own trainer classes, then predict its val (= test) cases with the final model."""
    import numpy as np
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    # Same thread policy as nnUNetv2_train: all cores on CPU, one thread next to a GPU.
    torch.set_num_threads((os.cpu_count() or 1) if device == "cpu" else 1)
    # nnU-Net itself does not seed; we do, so that a rerun of one (N, seed) starts from the same weights.
    torch.manual_seed(seed)
    np.random.seed(seed)
    trainer = get_trainer_from_args(dataset, CONFIGURATION, fold, trainer_name, PLANS, device=torch.device(device))
    if epochs is not None:
        trainer.num_epochs = epochs
    if iters_per_epoch is not None:
        trainer.num_iterations_per_epoch = iters_per_epoch
    if val_iters is not None:
        trainer.num_val_iterations_per_epoch = val_iters
    if batch_size is not None:
        # initialize() reads the batch size from the configuration, so it must be changed before training starts.
        trainer.configuration_manager.configuration["batch_size"] = batch_size
    trainer.print_to_log_file(
        f"nnsam fewshot budget: epochs={trainer.num_epochs} iters/epoch={trainer.num_iterations_per_epoch} "
        f"val iters={trainer.num_val_iterations_per_epoch} batch={trainer.configuration_manager.batch_size} "
        f"tta={'off' if disable_tta else 'on'}"
    )
    trainer.run_training()
    if disable_tta:
        # The training data loader setup sets the mirroring axes; clearing them afterwards makes the final
        # prediction run without mirroring test-time augmentation.
        trainer.inference_allowed_mirroring_axes = None
    trainer.perform_actual_validation()


def _train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnsam.fewshot.runner train", description=train_one.__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--iters-per-epoch", type=int)
    parser.add_argument("--val-iters", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--disable-tta", action="store_true")
    args = parser.parse_args(argv)
    train_one(args.dataset, args.fold, args.trainer, args.device, args.seed, args.epochs, args.iters_per_epoch,
              args.val_iters, args.batch_size, args.disable_tta)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "train":
        sys.exit("usage: python -m nnsam.fewshot.runner train --dataset D --fold K --trainer T [options]")
    sys.exit(_train_main(sys.argv[2:]))
