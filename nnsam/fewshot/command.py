"""``nnsam fewshot``: nnU-Net vs nnSAM when only N labelled cases are available.

Without DATASET_DIR it runs the demo on a generated SYNTHETIC dataset with a budget that finishes in about a
quarter of an hour on a 2-core CPU. With DATASET_DIR (an nnU-Net raw dataset, may be read-only) the defaults are
nnU-Net's own training schedule. Run ``python -m nnsam.fewshot.command --help`` for all options.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from nnsam.data.synthetic import SYNTHETIC_DATASET_NAME, make_synthetic_dataset
from nnsam.fewshot.report import RunKey, terminal_tables, write_overlay, write_report
from nnsam.fewshot.runner import (
    PLANS_PRESETS,
    Model,
    RunOutcome,
    RunSpec,
    SetupError,
    TrainingBudget,
    Workspace,
    assign_folds,
    check_trainer,
    earlier_runs,
    ensure_preprocessed,
    open_workspace,
    prepare_workspace,
    run_all,
    split_record,
)
from nnsam.fewshot.records import restore_records, save_records
from nnsam.fewshot.splits import SplitError, check_test_fraction, make_fewshot_split

DEFAULT_TRAINERS = ["nnUNetTrainer", "nnSAMTrainer_LiteMedSAM"]
FEWSHOT_CONFIGURATIONS = ("2d", "3d_fullres")
DEFAULT_TEST_FRACTION = 0.2
# Demo budget, sized for <15 min on 2 CPU cores. nnSAM trains from the embedding cache: one LiteMedSAM pass per
# training image (~2 s on a CPU) when a run starts, then steps at nnU-Net's cost; its test predictions still encode
# every window (~2 s per image). 100 iterations of batch 2 per run, 3 N values x 2 trainers, no test-time mirroring.
DEMO_SUBJECTS = 10  # x 2 images each; 20% (2 subjects, 4 images) become the test set
DEMO_N = [2, 4, 8]
DEMO_BUDGET = {"epochs": 5, "iters_per_epoch": 20, "val_iters": 1, "batch_size": 2}
REAL_N = [4, 8, 12, 16, 20]
NUM_OVERLAY_CASES = 3
SYNTHETIC_DATA_FOLDER = "synthetic_data"  # under OUT_DIR; a source dataset like any other, outside nnUNet_raw
PROTOCOL_LINES = [
    "- Protocol: the test set was held out before planning; nnU-Net planned and preprocessed the training pool only "
    "(normalisation, spacing and patch size from those cases). nnU-Net's validation list of each run is its own N "
    "training cases (the logged pseudo-Dice monitors the fit; nothing is chosen on held-out data). The test images "
    "were predicted once, from their raw files, with the final weights (checkpoint_final.pth) and nnU-Net's "
    "nnUNetPredictor.",
]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``fewshot`` options on ``parser`` (used by ``nnsam fewshot`` and the standalone entry)."""
    parser.add_argument(
        "dataset_dir", nargs="?", type=Path, default=None, metavar="DATASET_DIR",
        help="nnU-Net raw dataset folder (imagesTr, labelsTr, dataset.json); it is only read. Omit it to run the "
             "demo on a generated SYNTHETIC dataset.",
    )
    parser.add_argument("--out", type=Path, default=Path("nnsam_fewshot"),
                        help="Output folder; rerunning with the same folder resumes (default: ./nnsam_fewshot).")
    parser.add_argument("--n", type=int, nargs="+", default=None, metavar="N",
                        help=f"Training set sizes (default: {' '.join(map(str, DEMO_N))} for the demo, "
                             f"{' '.join(map(str, REAL_N))} for a dataset).")
    parser.add_argument("--trainers", nargs="+", default=DEFAULT_TRAINERS, metavar="TRAINER",
                        help=f"nnU-Net trainer class names (default: {' '.join(DEFAULT_TRAINERS)}), each optionally "
                             f"with plans: TRAINER@PRESET, PRESET one of {', '.join(PLANS_PRESETS)} (e.g. "
                             "nnUNetTrainer@ResEncM, nnU-Net's ResEnc M baseline; planned and preprocessed once per "
                             "preset). nnSAMTrainer (MobileSAM) needs its weight file.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                        help="Seeds of the training-subset draw (and of weight init); default: 0.")
    test = parser.add_mutually_exclusive_group()
    test.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                      help=f"Share of cases held out as test set, whole subjects only (default: {DEFAULT_TEST_FRACTION}).")
    test.add_argument("--test-cases", nargs="+", default=None, metavar="CASE_ID",
                      help="Explicit test case ids; other cases of their subjects are left out of training.")
    test.add_argument("--split", choices=["official"], default=None,
                      help="official: hold out the dataset's official test subset (a CAMUS dataset written by "
                           "`nnsam convert-camus`, which records the release's split); N are drawn from the rest.")
    parser.add_argument("--group-regex", default=None,
                        help="Regex on case ids whose first group is the subject (default: built-in rules for ACDC "
                             "patientNNN_*, HC18 NNN_HC/NNN_2HC, synthetic subjNNN_*, else the id minus its last "
                             "'_' part when that still contains a digit).")
    budget = parser.add_argument_group("training budget (defaults: demo value / nnU-Net's value for a dataset)")
    budget.add_argument("--epochs", type=int, default=None,
                        help=f"Epochs per run (default: {DEMO_BUDGET['epochs']} / 1000).")
    budget.add_argument("--iters-per-epoch", type=int, default=None,
                        help=f"Training iterations per epoch (default: {DEMO_BUDGET['iters_per_epoch']} / 250).")
    budget.add_argument("--val-iters", type=int, default=None,
                        help="nnU-Net's num_val_iterations_per_epoch: batches of the run's own training cases for "
                             f"the pseudo-Dice log (default: {DEMO_BUDGET['val_iters']} / 50).")
    budget.add_argument("--batch-size", type=int, default=None,
                        help=f"Override the planned batch size, e.g. for CPU (default: {DEMO_BUDGET['batch_size']} / planned).")
    budget.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="Training device (default: cuda if available, else cpu).")
    tta = budget.add_mutually_exclusive_group()
    tta.add_argument("--disable-tta", dest="tta", action="store_false", default=None,
                     help="Predict the test set without mirroring (default: off for the demo on CPU, on otherwise).")
    tta.add_argument("--enable-tta", dest="tta", action="store_true", help="Force mirroring at test prediction.")
    parser.add_argument("--records", type=Path, default=None, metavar="DIR",
                        help="Also keep the study's records (test set, folds and each finished run's done.json with "
                             "its per-case metrics: small text files) in DIR, and start from the records found "
                             "there: finished runs are skipped and reported again. For studies that outlast their "
                             "machine; weights and predictions are not kept.")
    parser.add_argument("--num-processes", type=int, default=2,
                        help="Worker processes for nnU-Net preprocessing (default: 2).")


@dataclass(frozen=True)
class Plan:
    """The resolved experiment: what to train, on which cases, and how long."""

    workspace: Workspace
    trainers: list[str]
    ns: list[int]
    specs: list[RunSpec]
    synthetic: bool
    records_dir: Path | None = None


def _resolve_budget(args: argparse.Namespace, demo: bool) -> TrainingBudget:
    device = args.device or _default_device()
    defaults = DEMO_BUDGET if demo else {}
    tta = args.tta if args.tta is not None else not (demo and device == "cpu")
    return TrainingBudget(
        device=device,
        epochs=args.epochs if args.epochs is not None else defaults.get("epochs"),
        iters_per_epoch=args.iters_per_epoch if args.iters_per_epoch is not None else defaults.get("iters_per_epoch"),
        val_iters=args.val_iters if args.val_iters is not None else defaults.get("val_iters"),
        batch_size=args.batch_size if args.batch_size is not None else defaults.get("batch_size"),
        disable_tta=not tta,
    )


def budget_line(budget: TrainingBudget) -> str:
    """The summary's line on the training budget."""

    def describe(value: int | None) -> str:
        return "trainer default" if value is None else str(value)

    return (f"- Budget: epochs {describe(budget.epochs)}, iterations/epoch {describe(budget.iters_per_epoch)}, "
            f"val iterations (on training cases) {describe(budget.val_iters)}, batch size "
            f"{describe(budget.batch_size)}, test-time mirroring {'off' if budget.disable_tta else 'on'}, "
            f"device {budget.device}")


def report_header(dataset_line: str, outcomes: list[RunOutcome]) -> list[str]:
    """The summary's opening lines for runs of one protocol (one test set and budget): dataset, test set,
    protocol, seeds and budget."""
    test_cases, budget = outcomes[0].spec.test_cases, outcomes[0].spec.budget
    return [
        f"- Dataset: {dataset_line}",
        f"- Test set ({len(test_cases)} cases, fixed for all runs): {', '.join(test_cases)}",
        *PROTOCOL_LINES,
        f"- Seeds: {' '.join(str(s) for s in sorted({o.spec.seed for o in outcomes}))}",
        budget_line(budget),
    ]


def wall_seconds(outcomes: list[RunOutcome]) -> dict[RunKey, float | None]:
    """Each run's recorded wall time, keyed as the report's tables key runs: (trainer, N, seed)."""
    return {(o.spec.trainer, o.spec.n, o.spec.seed): o.seconds for o in outcomes}


def _check_positive(flag: str, values: list[int | None]) -> None:
    """``None`` stands for an option left out."""
    for value in values:
        if value is not None and value < 1:
            raise SetupError(f"{flag} must be a positive whole number, got {value}.")


def check_writable(out_dir: Path, flag: str = "--out") -> None:
    """A folder option (OUT_DIR), or the folder it would be created in, must be a writable folder; nothing is
    created here."""
    existing = out_dir.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SetupError(f"{flag} {out_dir}: {existing} is a file, not a folder; choose another {flag}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SetupError(f"{flag} {out_dir}: {existing} is not writable; choose a folder you can write to.")


def check_options(args: argparse.Namespace) -> None:
    """Every check of the options that needs neither the dataset nor nnU-Net; raises ``SetupError``/``SplitError``.

    Runs before anything is written, so a typo costs seconds, not a planning step or a training run.
    """
    _check_positive("--n", args.n or [])
    for flag, value in (("--epochs", args.epochs), ("--iters-per-epoch", args.iters_per_epoch),
                        ("--val-iters", args.val_iters), ("--batch-size", args.batch_size),
                        ("--num-processes", args.num_processes)):
        _check_positive(flag, [value])
    negative = [seed for seed in args.seeds if seed < 0]
    if negative:
        raise SetupError(f"--seeds must be 0 or larger (numpy's generators refuse negative seeds), got {negative[0]}.")
    if args.test_cases is None:
        check_test_fraction(args.test_fraction)
    if args.group_regex is not None:
        try:
            re.compile(args.group_regex)
        except re.error as error:
            raise SetupError(f"--group-regex {args.group_regex!r} is not a valid regular expression ({error}); "
                             "fix it, e.g. '^(patient\\d+)_'.") from None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SetupError("--device cuda, but PyTorch sees no CUDA GPU; use --device cpu (or leave --device out).")
    check_writable(args.out)
    if args.records is not None:
        check_writable(args.records, "--records")


def official_test_cases(dataset_dir: Path) -> list[str]:
    """The official test subset recorded by ``nnsam convert-camus`` (its ``camus_split.json``)."""
    from nnsam.echo.camus import SPLIT_FILE, read_official_split

    try:
        return read_official_split(dataset_dir)["testing"]
    except (FileNotFoundError, KeyError, ValueError):
        raise SetupError(f"--split official needs the split record {SPLIT_FILE} in {dataset_dir}, which `nnsam "
                         "convert-camus` writes; for other datasets use --test-cases or --test-fraction.") from None


def plan_experiment(args: argparse.Namespace) -> Plan:
    """Check the options, set up OUT_DIR (and the synthetic data if no dataset is given), split, list the runs.

    Raises ``SetupError`` or ``SplitError`` before anything is planned or trained; OUT_DIR is written to only once
    the options, trainers and dataset have passed their checks (the demo's synthetic data excepted, which is made
    after the option checks so that its case ids can be split).
    """
    check_options(args)
    trainers = list(dict.fromkeys(args.trainers))
    for label in trainers:
        model = Model.parse(label)
        check_trainer(model.trainer)
        if model.configuration not in FEWSHOT_CONFIGURATIONS:
            raise SetupError(f"{label!r}: nnsam fewshot trains the {' or '.join(FEWSHOT_CONFIGURATIONS)} configuration "
                             f"(TRAINER or TRAINER:3d_fullres), not {model.configuration!r}; for clips of frames "
                             "use `nnsam ablation`.")
    out_dir: Path = args.out
    demo = args.dataset_dir is None
    if demo:
        dataset_dir = out_dir / SYNTHETIC_DATA_FOLDER / SYNTHETIC_DATASET_NAME
        if not dataset_dir.is_dir():
            make_synthetic_dataset(dataset_dir.parent, num_subjects=DEMO_SUBJECTS)
        print(f"No DATASET_DIR given: using a generated SYNTHETIC dataset ({dataset_dir}). "
              "Its numbers say nothing about real images.")
    else:
        dataset_dir = args.dataset_dir
    workspace = open_workspace(dataset_dir, out_dir)
    ns = sorted(set(args.n if args.n is not None else (DEMO_N if demo else REAL_N)))
    seeds = list(dict.fromkeys(args.seeds))
    test_cases = official_test_cases(dataset_dir) if args.split == "official" else args.test_cases
    split = make_fewshot_split(workspace.case_ids(), seeds, args.test_fraction, test_cases, args.group_regex)
    if ns[-1] > split.max_n:
        raise SplitError(f"N={ns[-1]} is more than the {split.max_n} training cases left after holding out "
                         f"{len(split.test_cases)} test cases; the maximum N is {split.max_n}.")
    if args.records is not None:
        record = split_record(workspace, list(split.pool_cases), list(split.test_cases))
        restored = restore_records(args.records, workspace.out_dir, record)
        if restored:
            print(f"Restored {restored} finished run(s) from the records in {args.records}.")
    prepare_workspace(workspace, list(split.pool_cases), list(split.test_cases))
    if split.excluded_cases:
        print(f"Left out of training (same subject as a test case): {', '.join(split.excluded_cases)}")
    folds = assign_folds(workspace, {(n, s): split.train_cases(n, s) for n in ns for s in seeds})
    budget = _resolve_budget(args, demo)
    # Seed outermost, then N, then trainer: every completed block gives a comparable point for all trainers.
    specs = [
        RunSpec(trainer=t, n=n, seed=s, fold=folds[(n, s)], train_cases=tuple(split.train_cases(n, s)),
                test_cases=split.test_cases, budget=budget)
        for s in seeds for n in ns for t in trainers
    ]
    return Plan(workspace=workspace, trainers=trainers, ns=ns, specs=specs, synthetic=demo,
                records_dir=args.records)


def _write_overlays(plan: Plan, test_cases: tuple[str, ...], finished: set[tuple[str, int, int]]) -> list[Path]:
    """One PNG per shown test case: rows N (first seed), columns image, ground truth, trainers."""
    workspace = plan.workspace
    seed = plan.specs[0].seed
    folder = workspace.out_dir / "overlays"
    folder.mkdir(exist_ok=True)
    written = []
    shown = [spec for spec in plan.specs if spec.seed == seed and (spec.trainer, spec.n, spec.seed) in finished]
    for case in test_cases[:NUM_OVERLAY_CASES]:
        rows: dict[str, dict[str, Path]] = {}
        for spec in shown:
            prediction = workspace.test_prediction_dir(spec) / f"{case}{workspace.file_ending}"
            if not prediction.is_file():  # a run restored from --records keeps no predictions
                continue
            rows.setdefault(f"N={spec.n}", {})[spec.trainer] = prediction
        if not rows:
            continue
        written.append(write_overlay(
            workspace.image_files(case)[0], workspace.label_file(case),
            rows, folder / f"{case}.png", f"{workspace.dataset_name}: {case} (seed {seed})",
        ))
    return written


def _error(message: object) -> int:
    """Report a problem the user can fix as one line, the way argparse does, and return its exit code."""
    print(f"nnsam fewshot: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run the experiment described by ``args``; returns 0 if every run succeeded, 1 if a run failed, 2 for an
    error in the options, the dataset or OUT_DIR."""
    try:
        plan = plan_experiment(args)
    except (SplitError, SetupError) as error:
        return _error(error)
    workspace, budget = plan.workspace, plan.specs[0].budget
    test_cases = plan.specs[0].test_cases
    print(f"Dataset {workspace.dataset_name}: {len(workspace.case_ids())} cases, {len(test_cases)} held out for "
          f"testing; N = {' '.join(map(str, plan.ns))}; trainers = {' '.join(plan.trainers)}; "
          f"{len(plan.specs)} runs on {budget.device}.")
    print("Planning and preprocessing (2d, training pool only) ...")
    try:
        models = [Model.parse(label) for label in plan.trainers]
        for plans in dict.fromkeys(m.plans for m in models):
            same_plans = [m for m in models if m.plans == plans]
            configurations = tuple(dict.fromkeys(m.configuration for m in same_plans))
            ensure_preprocessed(workspace, args.num_processes, same_plans[0], configurations)
    except RuntimeError as error:
        return _error(error)

    def keep_records(_: object) -> None:
        save_records(workspace.out_dir, plan.records_dir)

    outcomes = run_all(plan.specs, workspace, on_finished=keep_records if plan.records_dir is not None else None)
    if plan.records_dir is not None:  # runs finished before --records was first given are kept too
        save_records(workspace.out_dir, plan.records_dir)
    earlier = earlier_runs(workspace, plan.specs)
    if earlier:
        print(f"The report also includes {len(earlier)} run(s) finished earlier in {workspace.out_dir} under the same "
              f"test set and budget: {', '.join(o.spec.name for o in earlier)}.")
    reported = outcomes + earlier
    trainers = list(dict.fromkeys([*plan.trainers, *(o.spec.trainer for o in earlier)]))
    ns = sorted({*plan.ns, *(o.spec.n for o in earlier)})
    rows = [row for outcome in reported for row in outcome.rows]
    failed = [f"{o.spec.name} (log: {o.log_path})" for o in outcomes if o.status == "failed"]
    finished = {(o.spec.trainer, o.spec.n, o.spec.seed) for o in outcomes if o.status != "failed"}
    header = report_header(f"{workspace.dataset_name} ({workspace.source_dir})"
                           + (" — **SYNTHETIC data, generated for the demo**" if plan.synthetic else ""), reported)
    out = workspace.out_dir
    results_csv, summary, plot, paired = write_report(rows, out, trainers, ns, header, failed, wall_seconds(reported))
    if rows:
        overlays = _write_overlays(plan, test_cases, finished)
        print("\n" + terminal_tables(rows, trainers, ns))
        print(f"\nTable:    {summary}\nPlot:     {plot}" + (f"\nPaired:   {paired}" if paired else "")
              + f"\nPer case: {results_csv}\nOverlays: {out / 'overlays'} ({len(overlays)} images)")
    else:
        print(f"\nNo run finished; nothing to plot. Summary: {summary}")
    if plan.synthetic:
        print("Reminder: these results are on SYNTHETIC data.")
    if failed:
        print(f"\n{len(failed)} run(s) FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m nnsam.fewshot.command [DATASET_DIR] [options]``."""
    parser = argparse.ArgumentParser(prog="nnsam fewshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
