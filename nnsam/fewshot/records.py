"""Run records of a few-shot study, kept outside OUT_DIR (``nnsam fewshot --records DIR``).

A study can outlast the machine it runs on: a CPU study of several hours, a cluster job with a time limit, a
workspace that is wiped between sessions. What a finished run contributes to the report is small: its
``done.json`` (the run's settings and per-case metrics). The records folder keeps, for one study, the test set
record (``test_set.json``), nnsam's fold mapping (``folds.json``) and every finished run's ``done.json``; they are
small text files, meant to be kept under version control next to the report they support.

``restore_records`` seeds a new OUT_DIR from them, so that finished runs are skipped and reported again, and new
runs draw the same training cases under the same fold numbers; ``save_records`` copies what a run has finished.
Weights and test predictions are not kept: runs restored from records appear in the tables and the plot but not
in the overlays.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from nnsam.fewshot.runner import SPLIT_RECORD, SetupError

FOLDS_RECORD = "folds.json"
DONE_RECORD = "done.json"
RUNS_FOLDER = "runs"


def _run_records(root: Path) -> list[Path]:
    """The ``done.json`` of every finished run under ``root``, relative to it (``runs/TRAINER/nNNN_seedS/...``)."""
    return sorted(path.relative_to(root) for path in root.glob(f"{RUNS_FOLDER}/*/*/{DONE_RECORD}"))


def save_records(out_dir: Path, records_dir: Path) -> int:
    """Copy OUT_DIR's test set record, fold mapping and finished runs' ``done.json`` into ``records_dir``; returns
    the number of run records there. A run record already in ``records_dir`` is replaced by OUT_DIR's."""
    out_dir, records_dir = Path(out_dir), Path(records_dir)
    records_dir.mkdir(parents=True, exist_ok=True)
    for name in (SPLIT_RECORD, FOLDS_RECORD):
        if (out_dir / name).is_file():
            shutil.copy2(out_dir / name, records_dir / name)
    for relative in _run_records(out_dir):
        (records_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out_dir / relative, records_dir / relative)
    return len(_run_records(records_dir))


def restore_records(records_dir: Path, out_dir: Path, split_record: dict) -> int:
    """Seed OUT_DIR with the records of ``records_dir`` (made by ``save_records``) for the study whose test set
    record is ``split_record`` (source, test and pool cases, as OUT_DIR's ``test_set.json`` holds them); returns the
    number of run records copied (runs OUT_DIR already has are kept as they are).

    The records may come from another machine: the test set and training pool must be the same cases, the source
    folder may be elsewhere. Raises ``SetupError`` when the records belong to another study.
    """
    records_dir, out_dir = Path(records_dir), Path(out_dir)
    if not (records_dir / SPLIT_RECORD).is_file():
        return 0  # a new records folder: nothing to restore yet
    recorded = json.loads((records_dir / SPLIT_RECORD).read_text())
    for key, what in (("test_cases", "test set"), ("pool_cases", "training pool")):
        if recorded[key] != split_record[key]:
            raise SetupError(f"The records in {records_dir} were made with another {what} than this run's; use "
                             "another --records folder (or the options that made them).")
    if not (out_dir / SPLIT_RECORD).is_file():  # a fresh OUT_DIR takes the records' fold numbers too
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SPLIT_RECORD).write_text(json.dumps(split_record, indent=1))
        if (records_dir / FOLDS_RECORD).is_file() and not (out_dir / FOLDS_RECORD).is_file():
            shutil.copy2(records_dir / FOLDS_RECORD, out_dir / FOLDS_RECORD)
    copied = 0
    for relative in _run_records(records_dir):
        if not (out_dir / relative).is_file():
            (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(records_dir / relative, out_dir / relative)
            copied += 1
    return copied
