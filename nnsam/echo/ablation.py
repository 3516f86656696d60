"""``nnsam ablation``: the SAMUS-based report's ablation (nnSAM, +TRA, +LIA, +TRA+LIA) on CAMUS in one command,
with two nnU-Net baselines, trained and scored on the same split.

    nnsam ablation CAMUS_DIR --out OUT [--seeds 0 1] [--frames 8] [--rows ...] [budget options]

CAMUS_DIR is the public release (``database_nifti/``, ``database_split/``; converted once into ``OUT/converted``)
or a sequence dataset already written by ``nnsam convert-camus`` (``Dataset111_CAMUSSeq``). Every row trains on the
half sequences of the official training and validation patients and is scored on the official test patients:

=====================  ===========================================  ==============
row                    trainer                                      configuration
=====================  ===========================================  ==============
nnU-Net 2d             nnUNetTrainer                                2d (frame by frame)
nnU-Net 3d_fullres     nnUNetTrainer                                3d_fullres (time as depth)
nnSAM                  nnSAMTrainer[_LiteMedSAM]                    2d
+TRA                   nnSAMTrainer[_LiteMedSAM]_TRA                2d_temporal (clips of --frames)
+LIA                   nnSAMTrainer[_LiteMedSAM]_LIA                2d
+TRA+LIA               nnSAMTrainer[_LiteMedSAM]_TRA_LIA            2d_temporal
=====================  ===========================================  ==============

The protocol is the few-shot runner's (``nnsam.fewshot.runner``: planning sees the training pool only, the test set
is predicted once with the final weights, nothing is chosen on it); a rerun skips finished runs. Scores: at the ED
and ES frames, Dice, IoU and HD per structure (``nnsam.echo.structure_metrics``), the table's Dice / IoU / HD being
their mean over LV, MYO and LA; over every frame, the temporal-consistency count TCI (Painchaud et al. 2022), with
attribute bounds from all ground-truth sequences of the dataset. Mean ± sd over seeds. Writes ``ablation.md`` (the
report's table layout, per structure too), ``ablation.csv`` (per case), ``ablation.png`` and ``overlays/`` (a strip of
frames of a test sequence per row).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from nnsam.echo.camus import SPLIT_FILE, CamusFormatError, convert_camus, read_official_split
from nnsam.echo.sequence_metrics import evaluate_sequences, is_sequence_file, reference_bounds
from nnsam.fewshot.runner import (
    Model,
    RunSpec,
    SetupError,
    TrainingBudget,
    Workspace,
    assign_folds,
    check_trainer,
    ensure_preprocessed,
    open_workspace,
    prepare_workspace,
    run_all,
)
from nnsam.plans.temporal import DEFAULT_NUM_FRAMES, TEMPORAL_CONFIGURATION, add_temporal_configuration_to_file

TABLE_STRUCTURES = ("LV", "MYO", "LA")  # the labels; the epicardium (LV + MYO) is in the per-structure table
CONVERTED_FOLDER = "converted"
SEQUENCE_DATASET_GLOB = "Dataset*_CAMUSSeq"
STRIP_FRAMES = 6


@dataclass(frozen=True)
class AblationRow:
    name: str
    trainer: str  # "{encoder}" is replaced by "" (MobileSAM) or "_LiteMedSAM"
    configuration: str

    def label(self, encoder: str) -> str:
        """The run label (``TRAINER:CONFIGURATION``) of this row with the chosen encoder."""
        suffix = "_LiteMedSAM" if encoder == "litemedsam" else ""
        return f"{self.trainer.format(encoder=suffix)}:{self.configuration}"


ROWS = (
    AblationRow("nnU-Net 2d", "nnUNetTrainer", "2d"),
    AblationRow("nnU-Net 3d_fullres", "nnUNetTrainer", "3d_fullres"),
    AblationRow("nnSAM", "nnSAMTrainer{encoder}", "2d"),
    AblationRow("+TRA", "nnSAMTrainer{encoder}_TRA", TEMPORAL_CONFIGURATION),
    AblationRow("+LIA", "nnSAMTrainer{encoder}_LIA", "2d"),
    AblationRow("+TRA+LIA", "nnSAMTrainer{encoder}_TRA_LIA", TEMPORAL_CONFIGURATION),
)
ROW_NAMES = {row.name: row for row in ROWS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("camus_dir", type=Path, metavar="CAMUS_DIR",
                        help="the CAMUS release (database_nifti/, database_split/) or a sequence dataset written by "
                             "nnsam convert-camus (DatasetNNN_CAMUSSeq); it is only read")
    parser.add_argument("--out", type=Path, default=Path("nnsam_ablation"), help="output folder; a rerun resumes")
    parser.add_argument("--rows", nargs="+", default=[row.name for row in ROWS], choices=list(ROW_NAMES),
                        metavar="ROW", help=f"rows to train (default: all): {', '.join(ROW_NAMES)}")
    parser.add_argument("--encoder", choices=["litemedsam", "mobilesam"], default="litemedsam",
                        help="SAM encoder of the nnSAM rows (default: litemedsam, whose weights ship with nnsam)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED", help="initialisation seeds")
    parser.add_argument("--frames", type=int, default=DEFAULT_NUM_FRAMES,
                        help=f"frames per clip of the TRA rows (default: {DEFAULT_NUM_FRAMES})")
    parser.add_argument("--epochs", type=int, help="epochs per run (default: nnU-Net's 1000)")
    parser.add_argument("--iters-per-epoch", type=int, help="training iterations per epoch (default: 250)")
    parser.add_argument("--val-iters", type=int, help="nnU-Net's pseudo-Dice batches per epoch (default: 50)")
    parser.add_argument("--batch-size", type=int,
                        help="frames per batch (default: planned); clips and 3D patches get batch // their frames")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument("--disable-tta", action="store_true", help="predict the test set without mirroring")
    parser.add_argument("--num-processes", type=int, default=2, help="nnU-Net preprocessing workers (default: 2)")


def sequence_dataset(camus_dir: Path, out_dir: Path) -> Path:
    """The sequence dataset to train on: ``camus_dir`` itself if it is one, else its conversion under OUT."""
    if (camus_dir / SPLIT_FILE).is_file() and (camus_dir / "dataset.json").is_file():
        labels = sorted((camus_dir / "labelsTr").glob("*.nii.gz"))
        if labels and not is_sequence_file(labels[0]):
            raise SetupError(f"{camus_dir} holds 2D key frames; give the sequence dataset the converter wrote beside it "
                             "(DatasetNNN_CAMUSSeq), or the CAMUS release itself.")
        return camus_dir
    if not (camus_dir / "database_nifti").is_dir():
        raise SetupError(f"{camus_dir} is neither the CAMUS release (no database_nifti/) nor a sequence dataset "
                         f"written by `nnsam convert-camus` (no {SPLIT_FILE}); give one of them.")
    converted = out_dir / CONVERTED_FOLDER
    existing = sorted(converted.glob(SEQUENCE_DATASET_GLOB))
    if existing:
        return existing[0]
    return convert_camus(camus_dir, converted).sequences


def _check_options(args: argparse.Namespace) -> None:
    for flag in ("epochs", "iters_per_epoch", "val_iters", "batch_size", "frames", "num_processes"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise SetupError(f"--{flag.replace('_', '-')} must be a positive whole number, got {value}.")
    if any(seed < 0 for seed in args.seeds):
        raise SetupError("--seeds must be 0 or larger.")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SetupError("--device cuda, but PyTorch sees no CUDA GPU; use --device cpu (or leave --device out).")


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class AblationPlan:
    workspace: Workspace
    labels: dict[str, str]  # row name -> run label
    specs: list[RunSpec]


def plan_ablation(args: argparse.Namespace) -> AblationPlan:
    """Check the options, convert CAMUS if needed, set up OUT (pool view, folds) and list the runs."""
    _check_options(args)
    rows = [ROW_NAMES[name] for name in dict.fromkeys(args.rows)]
    labels = {row.name: row.label(args.encoder) for row in rows}
    for label in labels.values():
        check_trainer(Model.parse(label).trainer)
    dataset_dir = sequence_dataset(args.camus_dir, args.out)
    split = read_official_split(dataset_dir)
    test_cases = sorted(split["testing"])
    pool = sorted(split["training"] + split["validation"])
    if not test_cases or not pool:
        raise SetupError(f"{dataset_dir / SPLIT_FILE} leaves no {'test' if not test_cases else 'training'} patients.")
    workspace = open_workspace(dataset_dir, args.out)
    prepare_workspace(workspace, pool, test_cases)
    folds = assign_folds(workspace, {(len(pool), seed): pool for seed in args.seeds})
    budget = TrainingBudget(device=args.device or _default_device(), epochs=args.epochs,
                            iters_per_epoch=args.iters_per_epoch, val_iters=args.val_iters,
                            batch_size=args.batch_size, disable_tta=args.disable_tta)
    specs = [RunSpec(trainer=label, n=len(pool), seed=seed, fold=folds[(len(pool), seed)], train_cases=tuple(pool),
                     test_cases=tuple(test_cases), budget=budget)
             for seed in dict.fromkeys(args.seeds) for label in labels.values()]
    return AblationPlan(workspace, labels, specs)


def prepare_configurations(plan: AblationPlan, num_processes: int, frames: int) -> None:
    """Plan and preprocess what the rows train on; add ``2d_temporal`` with clips of ``frames`` frames."""
    configurations = {Model.parse(label).configuration for label in plan.labels.values()}
    needed = tuple(c for c in ("2d", "3d_fullres") if c in configurations
                   or (c == "3d_fullres" and TEMPORAL_CONFIGURATION in configurations))
    if TEMPORAL_CONFIGURATION in configurations and "2d" not in needed:
        needed = ("2d", *needed)
    ensure_preprocessed(plan.workspace, num_processes, Model("nnUNetTrainer"), needed)
    if TEMPORAL_CONFIGURATION in configurations:
        plans_file = plan.workspace.preprocessed_dataset_dir / "nnUNetPlans.json"
        plans = json.loads(plans_file.read_text())
        existing = plans["configurations"].get(TEMPORAL_CONFIGURATION, {}).get("patch_size", [None])[0]
        if existing != frames:
            add_temporal_configuration_to_file(plans_file, frames)


def evaluate_run(spec: RunSpec, workspace: Workspace, bounds: dict, bounds_source: str) -> list[dict]:
    """Key-frame rows (case, phase, structure, metrics) and one row per test sequence with its inconsistent frames."""
    evaluation = evaluate_sequences(workspace.test_prediction_dir(spec), workspace.source_dir / "labelsTr",
                                    file_ending=workspace.file_ending, cases=spec.test_cases, bounds=bounds,
                                    bounds_source=bounds_source)
    rows = [{"kind": "key_frame", **row} for row in evaluation.rows]
    report = evaluation.consistency
    for case, flags, per_attribute in zip(evaluation.cases, report.frame_flags, report.attribute_flags):
        rows.append({"kind": "sequence", "case": case, "frames": int(len(flags)),
                     "inconsistent_frames": int(flags.sum()),
                     **{f"inconsistent_{name}": int(f.sum()) for name, f in per_attribute.items()}})
    return rows


def _seed_scores(rows: list[dict]) -> dict[str, float]:
    """One seed's table entries from its run rows."""
    key = [r for r in rows if r["kind"] == "key_frame" and r["structure"] in TABLE_STRUCTURES]
    sequences = [r for r in rows if r["kind"] == "sequence"]
    scores = {metric: float(np.mean([r[metric] for r in key])) for metric in ("dice", "iou", "hd_mm")}
    scores["tci"] = float(sum(r["inconsistent_frames"] for r in sequences))
    scores["sequences_with_inconsistency"] = float(np.mean([r["inconsistent_frames"] > 0 for r in sequences]))
    return scores


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    mean = f"{np.mean(values):.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ± {np.std(values):.{digits}f}"


def ablation_table(results: dict[str, dict[int, list[dict]]]) -> list[str]:
    """Markdown: rows of the ablation, columns Dice, IoU, HD (mm), TCI; mean ± sd over seeds."""
    lines = ["| row | Dice | IoU | HD (mm) | TCI (frames) | sequences with any |", "|---|---|---|---|---|---|"]
    for name, by_seed in results.items():
        scores = [_seed_scores(rows) for rows in by_seed.values()]
        lines.append(f"| {name} | " + " | ".join([
            _cell([s["dice"] for s in scores], 3), _cell([s["iou"] for s in scores], 3),
            _cell([s["hd_mm"] for s in scores], 2), _cell([s["tci"] for s in scores], 1),
            _cell([100 * s["sequences_with_inconsistency"] for s in scores], 0) + " %"]) + " |")
    return lines


def structure_table(results: dict[str, dict[int, list[dict]]], metric: str = "dice") -> list[str]:
    """Markdown: rows of the ablation, columns structure × phase, ``metric`` mean ± sd over seeds."""
    keys = [(s, p) for s in ("LV", "MYO", "LA", "epicardium") for p in ("ED", "ES")]
    lines = ["| row | " + " | ".join(f"{s} {p}" for s, p in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, by_seed in results.items():
        cells = []
        for structure, phase in keys:
            per_seed = [float(np.mean([r[metric] for r in rows if r["kind"] == "key_frame"
                                       and r["structure"] == structure and r["phase"] == phase]))
                        for rows in by_seed.values()]
            cells.append(_cell(per_seed, 3))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plot_ablation(results: dict[str, dict[int, list[dict]]], path: Path) -> Path:
    """Dice and TCI per row, bars = mean over seeds, error bars = sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    scores = {name: [_seed_scores(rows) for rows in by_seed.values()] for name, by_seed in results.items()}
    figure, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(names), 3.6))
    for axis, (metric, title) in zip(axes, (("dice", "Dice (LV, MYO, LA at ED and ES)"),
                                            ("tci", "TCI: temporally inconsistent frames"))):
        means = [np.mean([s[metric] for s in scores[n]]) for n in names]
        sds = [np.std([s[metric] for s in scores[n]]) for n in names]
        axis.bar(range(len(names)), means, yerr=sds, capsize=3, color="tab:blue")
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        axis.set_title(title, fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_sequence_strip(image_path: Path, reference_path: Path, predictions: dict[str, Path], path: Path,
                         title: str) -> Path:
    """Frames of one sequence (columns) with the ground truth and each row's prediction (rows) overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    def read(p: Path) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(p)))

    image, reference = read(image_path), read(reference_path)
    frames = np.unique(np.linspace(0, len(image) - 1, min(STRIP_FRAMES, len(image))).round().astype(int))
    masks = {"ground truth": reference, **{name: read(p) for name, p in predictions.items()}}
    low, high = np.percentile(image, (1, 99))
    figure, axes = plt.subplots(len(masks), len(frames), figsize=(1.9 * len(frames), 2.0 * len(masks)), squeeze=False)
    for row_axes, (name, mask) in zip(axes, masks.items()):
        for axis, frame in zip(row_axes, frames):
            axis.imshow(image[frame], cmap="gray", vmin=low, vmax=high)
            axis.imshow(np.ma.masked_equal(mask[frame], 0), cmap="tab10", vmin=1, vmax=10, alpha=0.5,
                        interpolation="nearest")
            axis.set_xticks([]), axis.set_yticks([])
            if frame == frames[0]:
                axis.set_ylabel(name, fontsize=8)
            if name == "ground truth":
                axis.set_title(f"frame {frame + 1}", fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def run(args: argparse.Namespace) -> int:
    """Train, predict and score every row; 0 if all runs succeeded, 1 if one failed, 2 for an unusable input."""
    try:
        plan = plan_ablation(args)
        print(f"Ablation on {plan.workspace.source_dir.name}: {len(plan.specs[0].train_cases)} training sequences "
              f"(official training + validation), {len(plan.specs[0].test_cases)} test sequences (official "
              f"testing); rows: {', '.join(plan.labels)}; seeds {' '.join(map(str, args.seeds))}.")
        prepare_configurations(plan, args.num_processes, args.frames)
        bounds, count = reference_bounds(plan.workspace.source_dir / "labelsTr", plan.workspace.file_ending)
    except (SetupError, CamusFormatError, FileExistsError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"nnsam ablation: error: {error}", file=sys.stderr)
        return 2
    bounds_source = f"all {count} ground-truth sequences of {plan.workspace.source_dir.name}"
    outcomes = run_all(plan.specs, plan.workspace,
                       evaluate_fn=partial(evaluate_run, bounds=bounds, bounds_source=bounds_source))
    names = {label: name for name, label in plan.labels.items()}
    results: dict[str, dict[int, list[dict]]] = {}
    for outcome in outcomes:
        if outcome.status != "failed":
            results.setdefault(names[outcome.spec.trainer], {})[outcome.spec.seed] = outcome.rows
    failed = [f"{o.spec.name} (log: {o.log_path})" for o in outcomes if o.status == "failed"]
    out = plan.workspace.out_dir
    if results:
        write_report(plan, results, bounds, bounds_source, out)
        print("\n" + "\n".join(ablation_table(results)))
        print(f"\nTable: {out / 'ablation.md'}\nPlot:  {out / 'ablation.png'}\nPer case: {out / 'ablation.csv'}\n"
              f"Overlays: {out / 'overlays'}")
    if failed:
        print(f"\n{len(failed)} run(s) FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def write_report(plan: AblationPlan, results: dict[str, dict[int, list[dict]]], bounds: dict, bounds_source: str,
                 out: Path) -> None:
    import pandas as pd

    spec = plan.specs[0]
    records = [{"row": name, "label": plan.labels[name], "seed": seed, **row}
               for name, by_seed in results.items() for seed, rows in by_seed.items() for row in rows]
    pd.DataFrame.from_records(records).to_csv(out / "ablation.csv", index=False)
    budget = spec.budget
    lines = [
        "# nnsam ablation", "",
        f"- Dataset: {plan.workspace.source_dir}; official split: {len(spec.train_cases)} training sequences "
        f"(training + validation patients), {len(spec.test_cases)} test sequences",
        "- Rows: " + "; ".join(f"{name} = `{label}`" for name, label in plan.labels.items()),
        f"- Budget: epochs {budget.epochs or 'nnU-Net default'}, iterations/epoch {budget.iters_per_epoch or 'default'}, "
        f"batch {budget.batch_size or 'planned'} frames, test-time mirroring {'off' if budget.disable_tta else 'on'}, "
        f"device {budget.device}; seeds {', '.join(str(s) for s in dict.fromkeys(s.seed for s in plan.specs))}",
        "- Dice, IoU, HD: at the ED and ES frames, mean over LV, MYO and LA (per test sequence, then over sequences); "
        "TCI: temporally inconsistent frames summed over the test sequences (Painchaud et al. 2022 thresholds), "
        f"attribute bounds from {bounds_source}: "
        + ", ".join(f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in bounds.items()),
        "- mean ± sd over seeds", "",
        *ablation_table(results), "", "## Dice per structure and phase", "", *structure_table(results), "",
    ]
    (out / "ablation.md").write_text("\n".join(lines))
    plot_ablation(results, out / "ablation.png")
    overlays = out / "overlays"
    overlays.mkdir(exist_ok=True)
    seed = plan.specs[0].seed
    workspace = plan.workspace
    for case in spec.test_cases[:2]:
        predictions = {name: workspace.test_prediction_dir(s) / f"{case}{workspace.file_ending}"
                       for name, label in plan.labels.items() for s in plan.specs
                       if s.trainer == label and s.seed == seed and name in results}
        write_sequence_strip(workspace.image_files(case)[0], workspace.label_file(case),
                             {n: p for n, p in predictions.items() if p.is_file()}, overlays / f"{case}.png",
                             f"{case} (seed {seed})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnsam ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
