"""``nnsam fewshot-report``: a few-shot study's tables and plot, rebuilt from its run records alone.

DIR is an ``nnsam fewshot`` OUT_DIR or a ``--records`` folder: its ``test_set.json`` and every
``runs/TRAINER/nNNN_seedS/done.json`` (a run's settings and per-case metrics). Nothing is trained or predicted, and
neither the dataset nor nnU-Net's folders are needed, so a study's figures can be redrawn anywhere from the
kilobytes kept under version control (this project's docs/fewshot_records), for instance with the trainers in
another order: the first one is the baseline of the paired table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nnsam.fewshot.command import budget_line, check_writable, report_header, wall_seconds
from nnsam.fewshot.records import RUNS_FOLDER
from nnsam.fewshot.report import terminal_tables, write_report
from nnsam.fewshot.runner import SPLIT_RECORD, RunOutcome, SetupError, finished_runs

BASELINE_TRAINER = "nnUNetTrainer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``fewshot-report`` options on ``parser``."""
    parser.add_argument("study_dir", type=Path, metavar="DIR",
                        help="an `nnsam fewshot` OUT_DIR or --records folder (test_set.json, runs/*/*/done.json)")
    parser.add_argument("--out", type=Path, default=Path("fewshot_report"),
                        help="folder for summary.md, results.csv, fewshot.png and paired.png (default: ./fewshot_report)")
    parser.add_argument("--trainers", nargs="+", default=None, metavar="TRAINER",
                        help="which trainers to report, in this order; the first is the paired table's baseline "
                             f"(default: every recorded trainer, {BASELINE_TRAINER} first)")


def _one_protocol(outcomes: list[RunOutcome], study_dir: Path) -> None:
    """A report compares runs of one protocol: the same test set and the same budget."""
    protocols: dict[tuple, list[str]] = {}
    for outcome in outcomes:
        protocols.setdefault((outcome.spec.test_cases, outcome.spec.budget), []).append(outcome.spec.name)
    if len(protocols) > 1:
        described = "; ".join(f"{budget_line(budget)[2:]} ({len(test)} test cases): {', '.join(names)}"
                              for (test, budget), names in protocols.items())
        raise SetupError(f"the runs in {study_dir} do not share one test set and budget, so one table would mix "
                         f"protocols: {described}. Copy test_set.json and the runs/TRAINER/nNNN_seedS folders of "
                         "one protocol into a folder of their own and report that.")


def _trainers(outcomes: list[RunOutcome], chosen: list[str] | None) -> list[str]:
    recorded = sorted({o.spec.trainer for o in outcomes}, key=lambda name: (name != BASELINE_TRAINER, name))
    if chosen is None:
        return recorded
    unknown = [name for name in chosen if name not in recorded]
    if unknown:
        raise SetupError(f"--trainers {' '.join(unknown)}: no finished run of that trainer here; recorded: "
                         f"{' '.join(recorded)}.")
    return list(dict.fromkeys(chosen))


def run(args: argparse.Namespace) -> int:
    """Write the report of ``args.study_dir`` into ``args.out``; 0 on success, 2 for a folder that holds no study or
    mixes protocols, or an unknown trainer."""
    study_dir: Path = args.study_dir
    try:
        if not (study_dir / SPLIT_RECORD).is_file():
            raise SetupError(f"{study_dir} has no {SPLIT_RECORD}: give an `nnsam fewshot` OUT_DIR or --records "
                             "folder.")
        record = json.loads((study_dir / SPLIT_RECORD).read_text())
        outcomes = finished_runs(study_dir / RUNS_FOLDER)
        if not outcomes:
            raise SetupError(f"{study_dir} holds no finished run ({RUNS_FOLDER}/TRAINER/nNNN_seedS/done.json).")
        _one_protocol(outcomes, study_dir)
        trainers = _trainers(outcomes, args.trainers)
        check_writable(args.out)
    except (SetupError, ValueError, KeyError) as error:
        print(f"nnsam fewshot-report: error: {error}", file=sys.stderr)
        return 2
    reported = [o for o in outcomes if o.spec.trainer in trainers]
    rows = [row for outcome in reported for row in outcome.rows]
    ns = sorted({o.spec.n for o in reported})
    header = [
        *report_header(f"{record.get('dataset', '?')} ({record.get('source', '?')})", reported),
        f"- Rebuilt by `nnsam fewshot-report` from the records of {len(reported)} finished run(s) in {study_dir}.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    results_csv, summary, plot, paired = write_report(rows, args.out, trainers, ns, header, [], wall_seconds(reported))
    print(terminal_tables(rows, trainers, ns))
    print(f"\nTable:    {summary}\nPlot:     {plot}" + (f"\nPaired:   {paired}" if paired else "")
          + f"\nPer case: {results_csv}")
    return 0
