import math
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from nnsam.fewshot.report import (
    RESULT_COLUMNS,
    _display_slice,
    case_level,
    plot_fewshot,
    results_frame,
    write_overlay,
    write_results_csv,
    write_summary_md,
)


def _rows() -> list[dict]:
    """Two trainers, N in {2, 4}, one seed, two cases, two classes; trainer B is better by 0.1 Dice."""
    rows = []
    for trainer, bonus in (("A", 0.0), ("B", 0.1)):
        for n in (2, 4):
            for case, case_shift in (("c1", 0.0), ("c2", 0.2)):
                for label, name in ((1, "organ"), (2, "cavity")):
                    rows.append({"trainer": trainer, "n": n, "seed": 0, "fold": 0, "case": case, "class": label,
                                 "class_name": name, "dice": 0.5 + bonus + case_shift, "iou": 0.4,
                                 "hd95_mm": 4.0, "asd_mm": 2.0 if label == 1 else math.nan})
    return rows


def test_results_csv_has_one_row_per_case_and_class(tmp_path: Path) -> None:
    path = write_results_csv(_rows(), tmp_path / "results.csv")
    table = pd.read_csv(path)
    assert list(table.columns) == RESULT_COLUMNS
    assert len(table) == 2 * 2 * 2 * 2
    assert table["asd_mm"].isna().sum() == 8  # NaN written as empty cells, read back as NaN


def test_case_level_averages_classes_skipping_nan() -> None:
    per_case = case_level(results_frame(_rows()))
    row = per_case[(per_case.trainer == "A") & (per_case.n == 2) & (per_case.case == "c2")].iloc[0]
    assert row["dice"] == 0.7
    assert row["asd_mm"] == 2.0  # only the defined class counts


def test_summary_has_paper_layout_and_marks_best(tmp_path: Path) -> None:
    path = write_summary_md(_rows(), tmp_path / "summary.md", ["A", "B"], [2, 4], ["- Dataset: toy"], ["C N=2 seed=0 (log: x)"])
    text = path.read_text()
    assert "| N | A | B |" in text
    # Dice per case is 0.5 / 0.7 for A and 0.6 / 0.8 for B: mean ± sd(ddof=1).
    assert "| 2 | 0.600 ± 0.141 | **0.700 ± 0.141** |" in text
    overall_asd = text.split("## ASD")[1].split("## HD95")[0]
    assert "| 2 | 2.00 ± 0.00 (2/4 class values undefined) |" in overall_asd
    assert "Failed runs" in text and "C N=2 seed=0" in text
    assert "(2/2 undefined)" not in text.split("### Class 1")[1].split("### Class 2")[0]
    assert "| 4 | n/a | n/a |" in text.split("### Class 2 (cavity): ASD")[1]


def test_plot_is_written(tmp_path: Path) -> None:
    path = plot_fewshot(_rows(), tmp_path / "fewshot.png", ["A", "B"])
    assert path.stat().st_size > 1000


def _write(array: np.ndarray, path: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def test_overlay_of_3d_volume_shows_the_fullest_slice(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    label = np.zeros((4, 16, 16), np.uint8)
    label[1, 5:7, 5:7] = 1
    label[2, 2:12, 2:12] = 2  # slice 2 holds the most foreground
    img = _write(image, tmp_path / "img.nii.gz")
    ref = _write(label, tmp_path / "ref.nii.gz")
    out = write_overlay(img, ref, {"N=2": {"A": ref, "B": ref}, "N=4": {"A": ref}}, tmp_path / "o.png", "toy")
    assert out.stat().st_size > 1000
    assert _display_slice(label) == 2
    assert _display_slice(label[2]) is None
