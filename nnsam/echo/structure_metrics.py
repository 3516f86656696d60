"""CAMUS metrics per cardiac structure and phase, as echocardiography papers report them.

Structures: LV (label 1), MYO (2), LA (3) and the LV epicardium (LV ∪ MYO, what CAMUS calls "LVepi"). For each, at
ED and at ES: Dice, IoU, the Hausdorff distance (maximum, "HD"), its 95th percentile (HD95) and the mean symmetric
surface distance (MSD), in mm from the image spacing, at the resolution the files are in (native CAMUS resolution for
predictions written by nnU-Net). The overlap, HD95 and MSD values and the empty-mask conventions are those of
``nnsam.fewshot.metrics.binary_metrics`` (one place for them): a structure in only one of the masks scores Dice 0 and
the image diagonal as every distance.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from medpy.metric import binary

from nnsam.fewshot.metrics import binary_metrics, image_diagonal_mm, read_label_image

CAMUS_STRUCTURES: dict[str, tuple[int, ...]] = {"LV": (1,), "MYO": (2,), "LA": (3,), "epicardium": (1, 2)}
PHASE_PATTERN = re.compile(r"_(ED|ES)$")


@dataclass(frozen=True)
class StructureMetrics:
    dice: float
    iou: float
    hd_mm: float
    hd95_mm: float
    msd_mm: float
    distance_penalised: bool = False

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def structure_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...],
                      structures: Mapping[str, tuple[int, ...]] = CAMUS_STRUCTURES) -> dict[str, StructureMetrics]:
    """Metrics of every structure (name -> the labels it is made of) of one label map against its reference."""
    results = {}
    for name, labels in structures.items():
        predicted, expected = np.isin(prediction, labels), np.isin(reference, labels)
        base = binary_metrics(predicted, expected, spacing)
        if base.distance_penalised:
            hd = image_diagonal_mm(reference.shape, spacing)
        elif not expected.any():
            hd = 0.0
        else:
            hd = float(binary.hd(predicted, expected, voxelspacing=spacing))
        results[name] = StructureMetrics(base.dice, base.iou, hd, base.hd95_mm, base.asd_mm, base.distance_penalised)
    return results


def phase_of(case_id: str) -> str | None:
    """"ED" or "ES" for the converter's 2D cases (``patient0001_2CH_ED``), None otherwise."""
    match = PHASE_PATTERN.search(case_id)
    return match.group(1) if match else None


def evaluate_folder(prediction_dir: str | Path, reference_dir: str | Path, file_ending: str = ".nii.gz",
                    structures: Mapping[str, tuple[int, ...]] = CAMUS_STRUCTURES) -> list[dict]:
    """One row per (case, structure) for every reference file that has a prediction of the same name."""
    rows = []
    for reference_path in sorted(Path(reference_dir).glob(f"*{file_ending}")):
        case = reference_path.name[: -len(file_ending)]
        prediction_path = Path(prediction_dir) / reference_path.name
        if not prediction_path.is_file():
            raise FileNotFoundError(f"No prediction for {case}: {prediction_path} is missing.")
        prediction, _ = read_label_image(prediction_path)
        reference, spacing = read_label_image(reference_path)
        for name, metrics in structure_metrics(prediction, reference, spacing, structures).items():
            rows.append({"case": case, "phase": phase_of(case), "structure": name, **metrics.as_dict()})
    return rows


def summarise(rows: Iterable[dict], metrics: tuple[str, ...] = ("dice", "iou", "hd_mm", "hd95_mm", "msd_mm")
              ) -> dict[tuple[str, str | None], dict[str, tuple[float, float]]]:
    """(structure, phase) -> metric -> (mean, sd over cases)."""
    groups: dict[tuple[str, str | None], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["structure"], row["phase"]), []).append(row)
    return {key: {m: (float(np.mean([r[m] for r in group])), float(np.std([r[m] for r in group])))
                  for m in metrics}
            for key, group in groups.items()}
