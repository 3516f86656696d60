"""The machinery of a few-shot experiment: workspace, preprocessing, nnU-Net splits, resumable training runs.

Protocol: the test set is never seen before the final evaluation.

* The test set (and, with ``--test-cases``, the other cases of its subjects) is held out *before* anything is
  planned. ``OUT_DIR/nnUNet_raw/DatasetXXX_Name`` is a real folder holding a copy of the source's dataset.json
  (``numTraining`` = pool size) and per-file symlinks to the training pool's images and labels only, so nnU-Net's
  planning and preprocessing statistics (intensity normalisation, target spacing, patch size) come from the
  training pool alone. The source dataset is only read. ``OUT_DIR/test_set.json`` records the test set and the
  pool; a rerun with another test set is refused instead of mixing two experiments in one OUT_DIR.
* Each (N, seed) pair is one fold of ``splits_final.json`` whose ``train`` *and* ``val`` lists are its N training
  cases. nnU-Net's per-epoch pseudo-Dice therefore monitors the fit on the training cases; nothing is chosen on
  held-out data, and no case is spent on validation (which matters at N=4).
* After training, the run skips nnU-Net's ``perform_actual_validation`` and predicts the test cases from their
  *raw* images in the source's ``imagesTr`` with nnU-Net's own ``nnUNetPredictor`` and the final weights
  (``checkpoint_final.pth``), into ``runs/<trainer>/n<N>_seed<S>/test_predictions``; only these files are scored.
* ``checkpoint_best.pth`` (chosen by nnU-Net on the pseudo-Dice) and nnU-Net's ``validation`` folder are deleted
  after every run, so they cannot be mistaken for results. A run keeps its final weights, its test predictions,
  its logs and its ``done.json`` marker (the run's settings and per-case metrics) that makes reruns skip finished
  work.
* A run cut short (the machine or the session ended, the process was killed) resumes from its last checkpoint:
  training saves ``checkpoint_latest.pth`` about every 5 % of its epochs, and a rerun whose ``started.json`` holds
  the same settings continues from it as ``nnUNetv2_train --c`` would (nnU-Net does not store the random state, so
  the resumed run draws other batches than an uncut one would have).

Everything nnU-Net writes goes under OUT_DIR: ``nnUNet_raw`` (the pool view above), ``nnUNet_preprocessed`` and
``nnUNet_results`` are nnU-Net's usual folders, ``runs/<trainer>/n<N>_seed<S>`` holds each run's log, test
predictions and done marker.

Training happens in a subprocess (``python -m nnsam.fewshot.runner train ...``) for two reasons: nnU-Net reads
its folder variables when it is imported, and a crash (out of memory, a bad trainer) must not end the whole
experiment.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from nnsam.fewshot.metrics import evaluate_case
from nnsam.plugin import EXT_TRAINER_ENV, env_with_trainer_dir

CONFIGURATION = "2d"
PLANS = "nnUNetPlans"
DEFAULT_PLANNER = "ExperimentPlanner"
# Plans a run may name after its trainer (``TRAINER@PLANS``): nnU-Net's residual-encoder presets, which nnU-Net's
# authors ask new methods to be compared against. Short name -> (planner class, plans identifier it writes).
PLANS_PRESETS = {
    "ResEncM": ("nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans"),
    "ResEncL": ("nnUNetPlannerResEncL", "nnUNetResEncUNetLPlans"),
    "ResEncXL": ("nnUNetPlannerResEncXL", "nnUNetResEncUNetXLPlans"),
}
PLANS_SEPARATOR = "@"
CONFIGURATION_SEPARATOR = ":"
# Used when the dataset folder is not named DatasetXXX_Name; any id works since our nnUNet_raw holds one dataset.
FALLBACK_DATASET_ID = 991
DATASET_FOLDER_PATTERN = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")
PREPROCESSED_MARKER = "fewshot_preprocessing_done.json"
SPLIT_RECORD = "test_set.json"
FINAL_CHECKPOINT = "checkpoint_final.pth"
LATEST_CHECKPOINT = "checkpoint_latest.pth"
# Checkpoints per run: nnU-Net saves every 50 epochs, so a short few-shot run would otherwise have nothing to resume.
CHECKPOINTS_PER_RUN = 20
# What nnU-Net leaves in a fold folder that is no result of ours: the checkpoint it picks on the pseudo-Dice, and
# the folder of its own final validation (never run by us; removed in case a trainer subclass runs it anyway).
NOT_RESULTS = ("checkpoint_best.pth", "validation")


class SetupError(ValueError):
    """The dataset, OUT_DIR or an option cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class Model:
    """What one column of the results trains: an nnU-Net trainer class on one set of plans and one configuration.

    Written ``TRAINER[@PRESET][:CONFIGURATION]``: ``TRAINER`` alone is nnU-Net's default plans and the 2d
    configuration; ``nnUNetTrainer@ResEncM`` is nnU-Net's ResEnc M baseline; ``nnUNetTrainer:3d_fullres`` another
    configuration (``nnsam ablation`` uses these). That string is the run's name in tables, plots and ``runs/``.
    """

    trainer: str
    plans: str = PLANS
    planner: str = DEFAULT_PLANNER
    configuration: str = CONFIGURATION

    @classmethod
    def parse(cls, label: str) -> "Model":
        name, _, configuration = label.partition(CONFIGURATION_SEPARATOR)
        trainer, separator, preset = name.partition(PLANS_SEPARATOR)
        configuration = configuration or CONFIGURATION
        if not separator:
            return cls(trainer, configuration=configuration)
        if preset not in PLANS_PRESETS:
            raise SetupError(f"unknown plans {preset!r} in {label!r}; write TRAINER or TRAINER@PRESET with PRESET one "
                             f"of {', '.join(PLANS_PRESETS)} (nnU-Net's residual-encoder presets).")
        planner, plans = PLANS_PRESETS[preset]
        return cls(trainer, plans, planner, configuration)


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
    seconds: float | None = None  # wall time; an attempt that was cut counts up to its last checkpoint


def read_dataset_json(dataset_dir: Path) -> dict:
    """The dataset.json of an nnU-Net raw dataset, checked for everything nnsam fewshot relies on.

    Raises ``SetupError`` with a one-line message that says what to fix.
    """
    path = dataset_dir / "dataset.json"
    if not all((path.is_file(), (dataset_dir / "imagesTr").is_dir(), (dataset_dir / "labelsTr").is_dir())):
        raise SetupError(f"{dataset_dir} is not an nnU-Net raw dataset folder (needs dataset.json, imagesTr/ and "
                         "labelsTr/); give the folder that holds them.")
    try:
        dataset_json = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SetupError(f"{path} is not valid JSON ({error}); fix the file.") from None
    if "file_ending" not in dataset_json:
        raise SetupError(f"{path} has no 'file_ending' (e.g. \".nii.gz\"); add it, nnU-Net v2 requires it.")
    if not dataset_json.get("channel_names"):
        raise SetupError(f"{path} has no 'channel_names' (e.g. {{\"0\": \"MRI\"}}); add it, nnU-Net v2 requires it.")
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or "background" not in labels:
        raise SetupError(f"{path} has no 'labels' with a 'background' entry; add them as nnU-Net v2 requires.")
    regions = [f"{name}: {value}" for name, value in labels.items() if not isinstance(value, int)]
    if regions:
        raise SetupError(f"{path} uses region-based labels ({regions[0]}), which nnsam fewshot does not score; "
                         "use a dataset.json with one integer value per label.")
    if "dataset" in dataset_json:
        raise SetupError(f"{path} lists its files in a 'dataset' entry; nnsam fewshot needs the plain "
                         "imagesTr/labelsTr layout (CASE_0000<file_ending> images, CASE<file_ending> labels).")
    return dataset_json


def case_image_files(dataset_dir: Path, dataset_json: dict, case: str) -> list[Path]:
    """nnU-Net's image files of one case in ``dataset_dir/imagesTr``, one per channel: CASE_0000, CASE_0001, ..."""
    ending = dataset_json["file_ending"]
    return [dataset_dir / "imagesTr" / f"{case}_{channel:04d}{ending}" for channel in range(len(dataset_json["channel_names"]))]


@dataclass(frozen=True)
class Workspace:
    """OUT_DIR, the (read-only) source dataset and nnU-Net's view of the training pool inside OUT_DIR."""

    out_dir: Path
    source_dir: Path
    dataset_id: int
    dataset_name: str
    dataset_json: dict = field(repr=False, compare=False)

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
    def split_record(self) -> Path:
        return self.out_dir / SPLIT_RECORD

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    def foreground_labels(self) -> dict[int, str]:
        """Label value -> name for every foreground class of dataset.json (not background, not ignore)."""
        return {value: name for name, value in self.dataset_json["labels"].items() if value != 0 and name != "ignore"}

    def ignore_label(self) -> int | None:
        """nnU-Net's ignore label (the ``labels`` entry named "ignore"), if the dataset has one."""
        return self.dataset_json["labels"].get("ignore")

    def case_ids(self) -> list[str]:
        """Case ids of the source dataset (from labelsTr), sorted."""
        ending = self.file_ending
        return sorted(p.name[: -len(ending)] for p in (self.source_dir / "labelsTr").iterdir() if p.name.endswith(ending))

    def image_files(self, case: str) -> list[Path]:
        """The raw image files (all channels) of a case in the source dataset."""
        return case_image_files(self.source_dir, self.dataset_json, case)

    def label_file(self, case: str) -> Path:
        """The reference label map of a case in the source dataset."""
        return self.source_dir / "labelsTr" / f"{case}{self.file_ending}"

    def fold_dir(self, label: str, fold: int) -> Path:
        return self.model_dir(label) / f"fold_{fold}"

    def model_dir(self, label: str) -> Path:
        """nnU-Net's trained model folder (plans.json, dataset.json, fold_K/) of one model label (``Model``)."""
        model = Model.parse(label)
        return self.results_root / self.dataset_name / f"{model.trainer}__{model.plans}__{model.configuration}"

    def run_dir(self, spec: RunSpec) -> Path:
        # "TRAINER:CONFIGURATION" labels: no colon in paths (Windows and some tools refuse it).
        return self.runs_dir / spec.trainer.replace(CONFIGURATION_SEPARATOR, "__") / f"n{spec.n:03d}_seed{spec.seed}"

    def test_prediction_dir(self, spec: RunSpec) -> Path:
        """Where a run's test-set predictions are written; the only predictions that are scored."""
        return self.run_dir(spec) / "test_predictions"

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


def open_workspace(dataset_dir: Path, out_dir: Path) -> Workspace:
    """Check the dataset and name nnU-Net's view of it (``DatasetXXX_Name``); writes nothing.

    Raises ``SetupError`` if the folder is no usable nnU-Net raw dataset.
    """
    source = dataset_dir.resolve()
    dataset_json = read_dataset_json(source)
    match = DATASET_FOLDER_PATTERN.match(source.name)
    if match:
        dataset_id, dataset_name = int(match.group(1)), source.name
    else:
        safe = re.sub(r"[^A-Za-z0-9]+", "", source.name) or "Dataset"
        dataset_id, dataset_name = FALLBACK_DATASET_ID, f"Dataset{FALLBACK_DATASET_ID}_{safe}"
    return Workspace(out_dir=out_dir.resolve(), source_dir=source, dataset_id=dataset_id,
                     dataset_name=dataset_name, dataset_json=dataset_json)


def split_record(workspace: Workspace, pool_cases: list[str], test_cases: list[str]) -> dict:
    """What OUT_DIR's ``test_set.json`` records: the source folder, the test set and the training pool."""
    return {"source": str(workspace.source_dir), "dataset": workspace.dataset_name,
            "test_cases": sorted(test_cases), "pool_cases": sorted(pool_cases)}


def _check_out_dir_matches(workspace: Workspace, record: dict) -> None:
    """Refuse an OUT_DIR prepared for another dataset, test set or pool, or by an older nnsam version."""
    out = workspace.out_dir
    if workspace.raw_dataset_dir.is_symlink():
        raise SetupError(f"{out} was prepared by an earlier nnsam version that planned the whole dataset, test set "
                         "included; use a new --out.")
    if not workspace.split_record.is_file():
        if workspace.raw_dataset_dir.exists() or workspace.preprocessed_dataset_dir.exists():
            raise SetupError(f"{out} holds nnU-Net data without a record of its test set ({SPLIT_RECORD}), e.g. from "
                             "an earlier nnsam version whose planning saw the test set; use a new --out.")
        return
    recorded = json.loads(workspace.split_record.read_text())
    if recorded["source"] != record["source"]:
        raise SetupError(f"{out} already holds an experiment on {recorded['source']}; use a new --out for "
                         f"{record['source']}.")
    if recorded["test_cases"] != record["test_cases"]:
        raise SetupError(f"OUT_DIR was prepared with another test set; use a new --out (this one, {out}, was "
                         f"prepared with the test set {', '.join(recorded['test_cases'])}).")
    if recorded["pool_cases"] != record["pool_cases"]:
        raise SetupError(f"OUT_DIR was prepared with another training pool (the dataset's cases or --group-regex "
                         f"changed); use a new --out instead of {out}.")


def _pool_links(workspace: Workspace, pool_cases: list[str], test_cases: list[str]) -> list[tuple[Path, Path]]:
    """(source file, link) pairs of the pool's images and labels; every pool and test file must exist."""
    missing = [path for case in [*pool_cases, *test_cases]
               for path in (*workspace.image_files(case), workspace.label_file(case)) if not path.is_file()]
    if missing:
        raise SetupError(f"{missing[0]} is missing ({len(missing)} files in all); every case needs its label and one "
                         "image per channel of dataset.json.")
    links = []
    for case in pool_cases:
        for source in (*workspace.image_files(case), workspace.label_file(case)):
            links.append((source, workspace.raw_dataset_dir / source.parent.name / source.name))
    return links


def _link(source: Path, link: Path) -> None:
    """Symlink ``link`` -> ``source``; an identical link from an earlier call is kept."""
    if link.is_symlink() and link.resolve() == source.resolve():
        return
    link.symlink_to(source)


def prepare_workspace(workspace: Workspace, pool_cases: list[str], test_cases: list[str]) -> None:
    """Create OUT_DIR's nnU-Net folders, with ``nnUNet_raw/DatasetXXX_Name`` holding the training pool only.

    The raw folder is a real folder: a copy of dataset.json with ``numTraining`` = pool size, and per-file symlinks
    to the pool cases' images (all channels) and labels. The test cases are not in it, so nnU-Net's planning and
    preprocessing never see them. ``OUT_DIR/test_set.json`` records the split; raises ``SetupError`` if OUT_DIR was
    prepared for another dataset, test set or pool.
    """
    record = split_record(workspace, pool_cases, test_cases)
    _check_out_dir_matches(workspace, record)
    links = _pool_links(workspace, pool_cases, test_cases)
    # The record comes first: an interrupted first call then still finds its own OUT_DIR on the next call.
    workspace.out_dir.mkdir(parents=True, exist_ok=True)
    workspace.split_record.write_text(json.dumps(record, indent=1))
    for folder in (workspace.preprocessed_root, workspace.results_root, workspace.runs_dir,
                   workspace.raw_dataset_dir / "imagesTr", workspace.raw_dataset_dir / "labelsTr"):
        folder.mkdir(parents=True, exist_ok=True)
    for source, link in links:
        _link(source, link)
    dataset_json = {**workspace.dataset_json, "numTraining": len(pool_cases)}
    (workspace.raw_dataset_dir / "dataset.json").write_text(json.dumps(dataset_json, indent=2))


def ensure_preprocessed(workspace: Workspace, num_processes: int, model: Model = Model("nnUNetTrainer"),
                        configurations: tuple[str, ...] = (CONFIGURATION,)) -> Path:
    """Plan and preprocess ``configurations`` of the pool once per plans (with integrity check); later calls reuse
    it.

    Returns the log path. Raises ``RuntimeError`` naming the log if nnU-Net fails.
    """
    suffix = "" if model.plans == PLANS else f"_{model.plans}"
    log_path = workspace.out_dir / "logs" / f"plan_and_preprocess{suffix}.log"
    marker = workspace.preprocessed_dataset_dir / PREPROCESSED_MARKER.replace(".json", f"{suffix}.json")
    if marker.is_file() and set(configurations) <= set(json.loads(marker.read_text()).get("configurations",
                                                                                            [CONFIGURATION])):
        return log_path
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints",
        "-d", str(workspace.dataset_id), "-c", *configurations, "-pl", model.planner,
        "-np", *[str(num_processes)] * len(configurations), "-npfp", str(num_processes), "--verify_dataset_integrity",
    ]
    with open(log_path, "w") as log:
        result = subprocess.run(command, env=workspace.nnunet_env("cpu"), stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"nnU-Net planning/preprocessing failed (exit {result.returncode}); see {log_path}")
    marker.write_text(json.dumps({"source": str(workspace.source_dir), "configurations": list(configurations),
                                  "plans": model.plans}))
    return log_path


def _nnunet_splits(folds: list[dict]) -> list[dict]:
    """nnU-Net's splits_final.json: each fold validates on its own training cases, never on held-out ones."""
    return [{"train": f["train"], "val": f["train"]} for f in folds]


def assign_folds(workspace: Workspace, fold_contents: dict[tuple[int, int], list[str]]) -> dict[tuple[int, int], int]:
    """Give every (n, seed) a stable fold number and write nnU-Net's ``splits_final.json`` accordingly.

    ``OUT_DIR/folds.json`` keeps the mapping (with each fold's cases) across reruns, so adding N values or seeds
    later appends folds instead of renumbering finished ones. A ``splits_final.json`` that we did not write is
    backed up before it is replaced.
    """
    folds_file = workspace.out_dir / "folds.json"
    recorded: list[dict] = json.loads(folds_file.read_text())["folds"] if folds_file.is_file() else []
    workspace.preprocessed_dataset_dir.mkdir(parents=True, exist_ok=True)
    splits_file = workspace.preprocessed_dataset_dir / "splits_final.json"
    if splits_file.is_file() and json.loads(splits_file.read_text()) != _nnunet_splits(recorded):
        backup = splits_file.with_name(f"splits_final.json.backup-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(splits_file, backup)
        print(f"Note: {splits_file} was not written by nnsam fewshot; kept a copy as {backup.name}.")

    index = {(f["n"], f["seed"]): i for i, f in enumerate(recorded)}
    for (n, seed), train in sorted(fold_contents.items()):
        entry = {"n": n, "seed": seed, "fold": 0, "train": list(train)}
        if (n, seed) in index:
            recorded[index[(n, seed)]] = entry
        else:
            index[(n, seed)] = len(recorded)
            recorded.append(entry)
    for fold, entry in enumerate(recorded):
        entry["fold"] = fold
    folds_file.write_text(json.dumps({"dataset": workspace.dataset_name, "folds": recorded}, indent=1))
    splits_file.write_text(json.dumps(_nnunet_splits(recorded), indent=1))
    return {key: index[key] for key in fold_contents}


@contextlib.contextmanager
def _environment_variable(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def check_trainer(name: str) -> None:
    """Raise ``SetupError`` unless nnU-Net finds trainer class ``name`` the way the training subprocess will.

    This is nnU-Net's own lookup (``nnunetv2.training.nnUNetTrainer``, then the ``nnUNet_extTrainer`` folders),
    with ``nnUNet_extTrainer`` set as for the subprocess: our trainer folder plus the user's.
    """
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    search_path = env_with_trainer_dir()[EXT_TRAINER_ENV]
    # nnU-Net narrates its search on stdout and some trainer modules warn on import; only the verdict matters here.
    with _environment_variable(EXT_TRAINER_ENV, search_path), contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            recursive_find_trainer_class_by_name(name)
        except RuntimeError:
            raise SetupError(f"unknown trainer {name!r}: nnU-Net finds no such class in "
                             f"nnunetv2.training.nnUNetTrainer or the {EXT_TRAINER_ENV} folders ({search_path}); "
                             f"check the spelling, or add the folder that defines it to {EXT_TRAINER_ENV}.") from None
        except AssertionError:
            raise SetupError(f"trainer {name!r} does not subclass nnU-Net's nnUNetTrainer; give an nnU-Net "
                             "trainer class.") from None


def train_in_subprocess(spec: RunSpec, workspace: Workspace, log_path: Path) -> int:
    """Train and predict the test set for one run in a fresh Python process; returns its exit code."""
    budget = spec.budget
    model = Model.parse(spec.trainer)
    command = [
        sys.executable, "-m", "nnsam.fewshot.runner", "train",
        "--dataset", workspace.dataset_name, "--fold", str(spec.fold), "--trainer", model.trainer,
        "--plans", model.plans, "--configuration", model.configuration,
        "--device", budget.device, "--seed", str(spec.seed),
        "--source", str(workspace.source_dir), "--predictions-dir", str(workspace.test_prediction_dir(spec)),
        "--test-cases", *spec.test_cases,
    ]
    for flag, value in (("--epochs", budget.epochs), ("--iters-per-epoch", budget.iters_per_epoch),
                        ("--val-iters", budget.val_iters), ("--batch-size", budget.batch_size)):
        if value is not None:
            command += [flag, str(value)]
    if budget.disable_tta:
        command.append("--disable-tta")
    resume = _latest_checkpoint(spec, workspace).is_file()  # run_all left it only for a resumable attempt
    if resume:
        command.append("--resume")
    with open(log_path, "a" if resume else "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        return subprocess.run(command, env=workspace.nnunet_env(budget.device), stdout=log, stderr=subprocess.STDOUT).returncode


def evaluate_run(spec: RunSpec, workspace: Workspace) -> list[dict]:
    """Per-case, per-class metric rows of one finished run, from its test-prediction folder."""
    labels = workspace.foreground_labels()
    prediction_dir = workspace.test_prediction_dir(spec)
    rows = []
    for case in spec.test_cases:
        prediction = prediction_dir / f"{case}{workspace.file_ending}"
        if not prediction.is_file():
            raise FileNotFoundError(f"Missing test prediction {prediction}")
        metrics_per_class = evaluate_case(prediction, workspace.label_file(case), labels, workspace.ignore_label())
        for value, metrics in metrics_per_class.items():
            rows.append({"trainer": spec.trainer, "n": spec.n, "seed": spec.seed, "fold": spec.fold, "case": case,
                         "class": value, "class_name": labels[value], **metrics.as_dict()})
    return rows


def discard_non_results(spec: RunSpec, workspace: Workspace) -> None:
    """Delete what nnU-Net left in the run's fold folder that is no result (see ``NOT_RESULTS``)."""
    fold_dir = workspace.fold_dir(spec.trainer, spec.fold)
    for name in NOT_RESULTS:
        path = fold_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _latest_checkpoint(spec: RunSpec, workspace: Workspace) -> Path:
    return workspace.fold_dir(spec.trainer, spec.fold) / LATEST_CHECKPOINT


def _resumable(spec: RunSpec, workspace: Workspace, started_file: Path) -> bool:
    """Whether an earlier attempt of exactly this run left a checkpoint to continue from."""
    if not _latest_checkpoint(spec, workspace).is_file():
        return False
    try:
        return json.loads(started_file.read_text())["spec"] == spec.as_json()
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _seconds_of_earlier_attempts(spec: RunSpec, workspace: Workspace, started_file: Path) -> float:
    """The time the attempts before a resumed one put into the run: each from its start to the last checkpoint it
    wrote (the work the resumed run keeps; what came after that checkpoint is done again). A ``started.json``
    without start times (nnsam before 2026-12-04) counts nothing."""
    try:
        record = json.loads(started_file.read_text())
        before, started_at = float(record.get("seconds_before", 0.0)), record.get("started_at")
        if started_at is None:
            return before
        return before + max(0.0, _latest_checkpoint(spec, workspace).stat().st_mtime - float(started_at))
    except (OSError, ValueError, TypeError):
        return 0.0


def _mean_dice(rows: list[dict]) -> float:
    scored = [r["dice"] for r in rows if "dice" in r]  # nnsam ablation adds per-sequence rows without one
    return sum(scored) / max(1, len(scored))


def run_all(
    specs: list[RunSpec],
    workspace: Workspace,
    train_fn: Callable[[RunSpec, Workspace, Path], int] = train_in_subprocess,
    evaluate_fn: Callable[[RunSpec, Workspace], list[dict]] = evaluate_run,
    on_finished: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Run every spec not finished before, one after the other; a failure is recorded and the loop goes on.

    A run counts as finished when its ``done.json`` holds exactly this spec (same cases, fold and budget); a
    changed budget or split, or a ``done.json`` that cannot be read (truncated, another version's), therefore
    retrains it. After each run, what is no result is deleted
    (``discard_non_results``), and ``on_finished`` gets each newly finished run's outcome (e.g. to keep its record
    elsewhere before the next run starts).
    """
    outcomes: list[RunOutcome] = []
    progress = tqdm(specs, desc="few-shot runs", unit="run", dynamic_ncols=True)
    for i, spec in enumerate(progress, start=1):
        run_dir = workspace.run_dir(spec)
        done_file, failed_file, log_path = run_dir / "done.json", run_dir / "failed.json", run_dir / "train.log"
        started_file = run_dir / "started.json"
        label = f"[{i}/{len(specs)}] {spec.name}"
        progress.set_postfix_str(spec.name)
        if done_file.is_file():
            earlier = read_done_record(done_file)
            if earlier is not None and earlier.spec.as_json() == spec.as_json():
                outcomes.append(RunOutcome(spec, "skipped", earlier.rows, log_path, seconds=earlier.seconds))
                tqdm.write(f"{label}: finished earlier, skipped (mean Dice {_mean_dice(earlier.rows):.3f})")
                continue
            tqdm.write(f"{label}: " + ("settings changed since the last run" if earlier is not None
                                       else f"{done_file} is unreadable") + ", retraining")
        run_dir.mkdir(parents=True, exist_ok=True)
        done_file.unlink(missing_ok=True)
        failed_file.unlink(missing_ok=True)
        # Stale predictions of an earlier attempt must never be scored; its weights are kept only to resume the same
        # run from its last checkpoint.
        shutil.rmtree(workspace.test_prediction_dir(spec), ignore_errors=True)
        seconds_before = 0.0
        if _resumable(spec, workspace, started_file):
            seconds_before = _seconds_of_earlier_attempts(spec, workspace, started_file)
            tqdm.write(f"{label}: resuming from its last checkpoint (log: {log_path})")
        else:
            shutil.rmtree(workspace.fold_dir(spec.trainer, spec.fold), ignore_errors=True)
            tqdm.write(f"{label}: training on {spec.n} cases (log: {log_path})")
        started = time.time()
        started_file.write_text(json.dumps({"spec": spec.as_json(), "started_at": started,
                                            "seconds_before": seconds_before}))
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
        finally:
            discard_non_results(spec, workspace)
        seconds = seconds_before + time.time() - started
        done_file.write_text(json.dumps({"spec": spec.as_json(), "seconds": seconds, "rows": rows}, indent=1))
        outcomes.append(RunOutcome(spec, "done", rows, log_path, seconds=seconds))
        if on_finished is not None:
            on_finished(outcomes[-1])
        tqdm.write(f"{label}: done in {seconds:.0f} s, mean test Dice {_mean_dice(rows):.3f}")
    progress.close()
    return outcomes


def earlier_runs(workspace: Workspace, specs: list[RunSpec]) -> list[RunOutcome]:
    """Finished runs in the workspace from earlier invocations under the same protocol as ``specs`` (same test set
    and budget) but not among them: a study run in steps (N = 4 today, N = 20 tomorrow) reports all its runs together.
    Sorted by seed, N and trainer, like a plan's specs."""
    if not specs:
        return []
    planned = {(spec.trainer, spec.n, spec.seed) for spec in specs}
    return [outcome for outcome in finished_runs(workspace.runs_dir)
            if outcome.spec.test_cases == specs[0].test_cases and outcome.spec.budget == specs[0].budget
            and (outcome.spec.trainer, outcome.spec.n, outcome.spec.seed) not in planned]


def read_done_record(done_file: Path) -> RunOutcome | None:
    """The finished run a ``done.json`` describes (settings and per-case rows), or ``None`` for a file this version
    of nnsam did not write: its settings are never guessed."""
    try:
        done = json.loads(done_file.read_text())
        spec = RunSpec(**{**done["spec"], "train_cases": tuple(done["spec"]["train_cases"]),
                          "test_cases": tuple(done["spec"]["test_cases"]),
                          "budget": TrainingBudget(**done["spec"]["budget"])})
        rows = list(done["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return RunOutcome(spec, "skipped", rows, done_file.parent / "train.log", seconds=done.get("seconds"))


def finished_runs(runs_dir: Path) -> list[RunOutcome]:
    """Every run with a readable ``done.json`` under ``runs_dir`` (``TRAINER/nNNN_seedS/``), sorted by seed, N and
    trainer like a plan's specs."""
    outcomes = [read_done_record(path) for path in sorted(runs_dir.glob("*/*/done.json"))]
    return sorted((o for o in outcomes if o is not None), key=lambda o: (o.spec.seed, o.spec.n, o.spec.trainer))


def train_one(dataset: str, fold: int, trainer_name: str, seed: int, budget: TrainingBudget,
              plans: str = PLANS, configuration: str = CONFIGURATION, resume: bool = False) -> Path:
    """Train one fold with nnU-Net's own trainer classes; returns nnU-Net's trained model folder.

    ``resume`` continues from the fold's ``checkpoint_latest.pth`` (saved every ``num_epochs / CHECKPOINTS_PER_RUN``
    epochs) as ``nnUNetv2_train --c`` does.

    Training ends with nnU-Net's ``checkpoint_final.pth``; nnU-Net's own final validation is not run (the fold's
    ``val`` cases are its training cases, see the module docstring).
    """
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    from nnsam.seeding import seed_everything

    device = budget.device
    # Same thread policy as nnUNetv2_train: all cores on CPU, one thread next to a GPU.
    torch.set_num_threads((os.cpu_count() or 1) if device == "cpu" else 1)
    # nnU-Net itself does not seed; we do, so that a rerun of one (N, seed) starts from the same weights.
    seed_everything(seed)
    trainer = get_trainer_from_args(dataset, configuration, fold, trainer_name, plans, device=torch.device(device))
    if budget.epochs is not None:
        trainer.num_epochs = budget.epochs
    if budget.iters_per_epoch is not None:
        trainer.num_iterations_per_epoch = budget.iters_per_epoch
    if budget.val_iters is not None:
        trainer.num_val_iterations_per_epoch = budget.val_iters
    if budget.batch_size is not None:
        # initialize() reads the batch size from the configuration, so it must be changed before training starts.
        # The budget counts 2D images; a 3D patch (a clip of frames, a stack of slices) holds patch_size[0] of them.
        patch = trainer.configuration_manager.patch_size
        images_per_patch = patch[0] if len(patch) == 3 else 1
        trainer.configuration_manager.configuration["batch_size"] = max(1, budget.batch_size // images_per_patch)
    trainer.save_every = max(1, min(trainer.save_every, trainer.num_epochs // CHECKPOINTS_PER_RUN))
    if resume:
        # nnU-Net's load_checkpoint initialises the trainer first, with the batch size set above.
        trainer.load_checkpoint(os.path.join(trainer.output_folder, LATEST_CHECKPOINT))
        trainer.print_to_log_file(f"nnsam fewshot: resumed from {LATEST_CHECKPOINT} at epoch {trainer.current_epoch}")
    trainer.print_to_log_file(
        f"nnsam fewshot budget: epochs={trainer.num_epochs} iters/epoch={trainer.num_iterations_per_epoch} "
        f"val iters={trainer.num_val_iterations_per_epoch} batch={trainer.configuration_manager.batch_size} "
        f"tta={'off' if budget.disable_tta else 'on'}; pseudo-Dice on the training cases"
    )
    trainer.run_training()
    return Path(trainer.output_folder_base)


def predict_test_cases(
    model_dir: Path, fold: int, budget: TrainingBudget, image_files: list[list[Path]], output_files: list[Path]
) -> None:
    """Predict raw test images with nnU-Net's ``nnUNetPredictor`` and the fold's ``checkpoint_final.pth``.

    ``output_files`` are the prediction paths without file ending, as nnU-Net expects them.
    """
    import torch
    from nnunetv2.configuration import default_num_processes
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    on_gpu = budget.device == "cuda"
    predictor = nnUNetPredictor(use_mirroring=not budget.disable_tta, perform_everything_on_device=on_gpu,
                                device=torch.device(budget.device), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=(fold,), checkpoint_name=FINAL_CHECKPOINT)
    images, outputs = [[str(p) for p in files] for files in image_files], [str(p) for p in output_files]
    if on_gpu:  # background workers preprocess and export while the GPU predicts
        predictor.predict_from_files(images, outputs, save_probabilities=False, overwrite=True,
                                     num_processes_preprocessing=default_num_processes,
                                     num_processes_segmentation_export=default_num_processes)
    else:
        # On a CPU the workers would only compete with the network for the same cores, and each spawned one first
        # imports torch and nnU-Net again (seconds per run): nnU-Net's own single-process path, same results. Unlike
        # predict_from_files it expects the output folder to exist.
        for output in output_files:
            output.parent.mkdir(parents=True, exist_ok=True)
        predictor.predict_from_files_sequential(images, outputs, save_probabilities=False, overwrite=True)


def _train_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnsam.fewshot.runner train",
                                     description="Train one fold, then predict the raw test images with its final weights.")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--trainer", required=True)
    parser.add_argument("--plans", default=PLANS)
    parser.add_argument("--configuration", default=CONFIGURATION)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--iters-per-epoch", type=int)
    parser.add_argument("--val-iters", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--disable-tta", action="store_true")
    parser.add_argument("--resume", action="store_true", help=f"continue from the fold's {LATEST_CHECKPOINT}")
    parser.add_argument("--source", type=Path, required=True, help="The source raw dataset (test images are read here).")
    parser.add_argument("--test-cases", nargs="+", required=True)
    parser.add_argument("--predictions-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    budget = TrainingBudget(device=args.device, epochs=args.epochs, iters_per_epoch=args.iters_per_epoch,
                            val_iters=args.val_iters, batch_size=args.batch_size, disable_tta=args.disable_tta)
    model_dir = train_one(args.dataset, args.fold, args.trainer, args.seed, budget, args.plans, args.configuration,
                          resume=args.resume)
    dataset_json = read_dataset_json(args.source)
    predict_test_cases(model_dir, args.fold, budget,
                       [case_image_files(args.source, dataset_json, case) for case in args.test_cases],
                       [args.predictions_dir / case for case in args.test_cases])
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "train":
        sys.exit("usage: python -m nnsam.fewshot.runner train --dataset D --fold K --trainer T [options]")
    sys.exit(_train_main(sys.argv[2:]))
