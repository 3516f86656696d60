"""Evaluation of segmented CAMUS half sequences: the key frames' structure metrics and the temporal consistency.

A predicted sequence is scored twice:

* at its **ED and ES frames** with the per-structure metrics of ``structure_metrics`` (LV, MYO, LA, epicardium:
  Dice, IoU, HD, HD95, MSD in mm), so sequence models compare with 2D models on the classic CAMUS task. The key
  frames are the cfg's ``ED`` / ``ES`` (1-based) recorded by ``nnsam convert-camus`` in ``camus_metadata.json``;
  without that record, the first and the last frame (a CAMUS half sequence runs from ED to ES).
* over **all its frames** with the temporal-consistency count of ``temporal_consistency`` (Painchaud et al. 2022).
  The attribute bounds come from the reference sequences (the ground truth of the dataset at hand), as the metric
  asks, and are returned with the counts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nnsam.echo.structure_metrics import CAMUS_STRUCTURES, structure_metrics
from nnsam.echo.temporal_consistency import TemporalConsistencyReport, attribute_bounds, temporal_consistency
from nnsam.fewshot.metrics import read_label_image

METADATA_FILE = "camus_metadata.json"  # written by nnsam convert-camus beside labelsTr


@dataclass(frozen=True)
class SequenceEvaluation:
    rows: list[dict]  # one per (case, phase ED/ES, structure), as structure_metrics.evaluate_folder's rows
    consistency: TemporalConsistencyReport  # of the predictions, with bounds from the references
    cases: tuple[str, ...]
    bounds_source: str  # where the bounds came from, for the report


def key_frames(case: str, num_frames: int, metadata: Mapping[str, Mapping] | None = None) -> dict[str, int]:
    """0-based indices of the ED and ES frames of a half sequence: from the converter's metadata (cfg frame
    numbers) when it has the case, else the first and the last frame."""
    record = (metadata or {}).get(case) or {}
    ed, es = record.get("ed_frame"), record.get("es_frame")
    if ed is None or es is None:
        return {"ED": 0, "ES": num_frames - 1}
    indices = {"ED": int(ed) - 1, "ES": int(es) - 1}
    if not all(0 <= i < num_frames for i in indices.values()):
        raise ValueError(f"{case}: the recorded ED/ES frames {ed}/{es} lie outside its {num_frames} frames.")
    return indices


def _read_metadata(reference_dir: Path) -> dict | None:
    for folder in (reference_dir, reference_dir.parent):
        if (folder / METADATA_FILE).is_file():
            return json.loads((folder / METADATA_FILE).read_text())
    return None


def _read_sequence(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    labels, spacing = read_label_image(path)
    if labels.ndim != 3:
        raise ValueError(f"{path} is not a sequence: expected (frames, height, width) labels, got shape {labels.shape}.")
    return labels, (spacing[1], spacing[2])


def is_sequence_file(path: str | Path) -> bool:
    """True for a label file holding more than one frame (time as the slowest axis, as the converter writes)."""
    return read_label_image(path)[0].ndim == 3


def reference_bounds(reference_dir: str | Path, file_ending: str = ".nii.gz") -> tuple[dict, int]:
    """Attribute bounds over every reference sequence in ``reference_dir`` (the dataset's ground truth), and how
    many sequences they came from."""
    sequences = [_read_sequence(path) for path in sorted(Path(reference_dir).glob(f"*{file_ending}"))]
    if not sequences:
        raise FileNotFoundError(f"no {file_ending} label maps in {reference_dir}")
    return attribute_bounds([s for s, _ in sequences], [sp for _, sp in sequences]), len(sequences)


def evaluate_sequences(prediction_dir: str | Path, reference_dir: str | Path, file_ending: str = ".nii.gz",
                       structures: Mapping[str, tuple[int, ...]] = CAMUS_STRUCTURES, cases: Sequence[str] | None = None,
                       bounds: Mapping[str, tuple[float, float]] | None = None, bounds_source: str = "") -> SequenceEvaluation:
    """Score the reference sequences of ``reference_dir`` (all, or ``cases``), each of which must have a prediction
    of the same name. ``bounds`` default to those of the scored references themselves."""
    prediction_dir, reference_dir = Path(prediction_dir), Path(reference_dir)
    if cases is None:
        reference_paths = sorted(reference_dir.glob(f"*{file_ending}"))
        if not reference_paths:
            raise FileNotFoundError(f"no {file_ending} label maps in {reference_dir}")
    else:
        reference_paths = [reference_dir / f"{case}{file_ending}" for case in cases]
    metadata = _read_metadata(reference_dir)
    rows, names, predictions, references, spacings = [], [], [], [], []
    for reference_path in reference_paths:
        case = reference_path.name[: -len(file_ending)]
        prediction_path = prediction_dir / reference_path.name
        if not prediction_path.is_file():
            raise FileNotFoundError(f"No prediction for {case}: {prediction_path} is missing.")
        reference, spacing = _read_sequence(reference_path)
        prediction, _ = _read_sequence(prediction_path)
        if prediction.shape != reference.shape:
            raise ValueError(f"{case}: prediction shape {prediction.shape} differs from the reference's {reference.shape}.")
        for phase, frame in key_frames(case, len(reference), metadata).items():
            for name, metrics in structure_metrics(prediction[frame], reference[frame], spacing, structures).items():
                rows.append({"case": case, "phase": phase, "structure": name, **metrics.as_dict()})
        names.append(case)
        predictions.append(prediction)
        references.append(reference)
        spacings.append(spacing)
    if bounds is None:
        bounds = attribute_bounds(references, spacings)
        bounds_source = f"the {len(references)} reference sequences in {reference_dir}"
    return SequenceEvaluation(rows=rows, consistency=temporal_consistency(predictions, bounds, spacings),
                              cases=tuple(names), bounds_source=bounds_source)
