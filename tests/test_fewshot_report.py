from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from nnsam.fewshot.report import (
    RESULT_COLUMNS,
    _display_slice,
    case_level,
    dice_table,
    paired_dice_table,
    plot_fewshot,
    plot_paired,
    results_frame,
    write_overlay,
    write_results_csv,
    write_summary_md,
)


PENALTY_MM = 40.0  # the image diagonal charged when a structure is in only one of prediction and reference


def _rows() -> list[dict]:
    """Two trainers, N in {2, 4}, one seed, two cases, two classes; trainer B is better by 0.1 Dice.

    Class 2 ("cavity") is missed everywhere, so its distances are the penalty.
    """
    rows = []
    for trainer, bonus in (("A", 0.0), ("B", 0.1)):
        for n in (2, 4):
            for case, case_shift in (("c1", 0.0), ("c2", 0.2)):
                for label, name in ((1, "organ"), (2, "cavity")):
                    missed = label == 2
                    rows.append({"trainer": trainer, "n": n, "seed": 0, "fold": 0, "case": case, "class": label,
                                 "class_name": name, "dice": 0.5 + bonus + case_shift, "iou": 0.4,
                                 "hd95_mm": PENALTY_MM if missed else 4.0, "asd_mm": PENALTY_MM if missed else 2.0,
                                 "distance_penalised": missed})
    return rows


def test_results_csv_has_one_row_per_case_and_class(tmp_path: Path) -> None:
    path = write_results_csv(_rows(), tmp_path / "results.csv")
    table = pd.read_csv(path)
    assert list(table.columns) == RESULT_COLUMNS
    assert len(table) == 2 * 2 * 2 * 2
    assert table["asd_mm"].notna().all()
    assert sorted(table["distance_penalised"].unique()) == [0, 1]  # a 0/1 flag per row
    assert table["distance_penalised"].sum() == 8
    assert (table.loc[table["distance_penalised"] == 1, "asd_mm"] == PENALTY_MM).all()


def test_case_level_averages_classes_including_penalised_distances() -> None:
    per_case = case_level(results_frame(_rows()))
    row = per_case[(per_case.trainer == "A") & (per_case.n == 2) & (per_case.case == "c2")].iloc[0]
    assert row["dice"] == 0.7
    assert row["asd_mm"] == (2.0 + PENALTY_MM) / 2  # the missed class counts with its penalty


def test_summary_has_paper_layout_and_marks_best(tmp_path: Path) -> None:
    path = write_summary_md(_rows(), tmp_path / "summary.md", ["A", "B"], [2, 4], ["- Dataset: toy"], ["C N=2 seed=0 (log: x)"])
    text = path.read_text()
    assert "| N | A | B |" in text
    # Dice per case is 0.5 / 0.7 for A and 0.6 / 0.8 for B: mean ± sd(ddof=1).
    assert "| 2 | 0.600 ± 0.141 | **0.700 ± 0.141** |" in text
    overall_asd = text.split("## ASD")[1].split("## HD95")[0]
    assert "| 2 | 21.00 ± 0.00 (2/4 penalised) | 21.00 ± 0.00 (2/4 penalised) |" in overall_asd
    assert "penalised" not in text.split("## Dice")[1].split("## ASD")[0]
    assert "Failed runs" in text and "C N=2 seed=0" in text
    assert "penalised" not in text.split("### Class 1")[1].split("### Class 2")[0]
    assert "| 4 | 40.00 ± 0.00 (2/2 penalised) | 40.00 ± 0.00 (2/2 penalised) |" in text.split("### Class 2 (cavity): ASD")[1]
    assert "image diagonal in mm" in text and "Both masks empty: Dice 1, distances 0" in text
    per_run = text.split("## Per run")[1].split("###")[0]
    assert "| trainer | N | seed | wall (min) | Dice | organ | cavity | HD95 (mm) | ASD (mm) | penalised |" in per_run
    assert "| A | 2 | 0 | — | 0.600 ± 0.141 | 0.600 | 0.600 | 22.0 | 21.0 | 2/4 |" in per_run  # no wall time given
    timed = write_summary_md(_rows(), tmp_path / "t.md", ["A", "B"], [2, 4], [], [], {("B", 4, 0): 150.0}).read_text()
    assert "| B | 4 | 0 | 2 | 0.700 ± 0.141 |" in timed


def test_dice_table_is_the_summary_table(tmp_path: Path) -> None:
    table = dice_table(_rows(), ["A", "B"], [2, 4])
    assert table[0] == "| N | A | B |" and len(table) == 4
    summary = write_summary_md(_rows(), tmp_path / "summary.md", ["A", "B"], [2, 4], [], []).read_text()
    assert "\n".join(table) in summary.split("## ASD")[0]


def _row(trainer: str, n: int, seed: int, case: str, dice: float) -> dict:
    return {"trainer": trainer, "n": n, "seed": seed, "fold": seed, "case": case, "class": 1, "class_name": "organ",
            "dice": dice, "iou": dice, "hd95_mm": 1.0, "asd_mm": 1.0, "distance_penalised": False}


def test_paired_table_pairs_cases_within_a_seed_and_weighs_the_difference_against_the_seed_spread(
    tmp_path: Path,
) -> None:
    base = {0: [0.5, 0.6, 0.7], 1: [0.55, 0.65, 0.75]}  # the draw moves the baseline's mean by 0.05
    rows = [_row("A", 4, seed, f"c{i}", d) for seed, values in base.items() for i, d in enumerate(values)]
    rows.append(_row("A", 4, 0, "only_A", 0.0))  # no partner: left out of the pairs
    b_deltas = {0: [0.1, 0.1, 0.1], 1: [0.1, 0.1, -0.05]}
    rows += [_row("B", 4, seed, f"c{i}", base[seed][i] + b_deltas[seed][i]) for seed in base for i in range(3)]
    rows += [_row("C", 4, seed, f"c{i}", base[seed][i] + 0.01) for seed in base for i in range(3)]
    rows += [_row(t, 8, 0, "c0", 0.8 if t == "A" else 0.7) for t in "ABC"]  # one seed at N = 8
    lines = paired_dice_table(rows, ["A", "B", "C"], [4, 8])
    assert lines[0].startswith("| N | trainer − A |") and len(lines) == 2 + 4
    b4, c4, b8, _ = (line.split(" | ") for line in lines[2:])
    # B: +0.1 on every case of seed 0, +0.05 on average for seed 1 (better on 2 of 3); mean +0.075 exceeds both
    # seed spreads (A 0.05, B 0.0).
    assert b4[2] == "seed 0: +0.100 ± 0.000 (3/3); seed 1: +0.050 ± 0.087 (2/3)"
    assert b4[3:] == ["+0.075", "0.050 / 0.000", "yes, better |"]
    assert c4[3:] == ["+0.010", "0.050 / 0.050", "no |"]  # a steady +0.01 is inside the draw's 0.05
    assert b8[2:] == ["seed 0: −0.100 ± 0.000 (0/1)", "−0.100", "— (one seed)", "— (one seed) |"]
    summary = write_summary_md(rows, tmp_path / "summary.md", ["A", "B", "C"], [4, 8], [], []).read_text()
    assert "\n".join(lines) in summary.split("## ASD")[0]
    assert "paired" not in write_summary_md(rows, tmp_path / "one.md", ["A"], [4, 8], [], []).read_text()


def test_paired_plot_puts_each_case_against_the_baseline(tmp_path: Path, monkeypatch) -> None:
    from nnsam.fewshot import report

    kept = []
    monkeypatch.setattr(report.plt, "close", kept.append)
    assert plot_paired(_rows(), tmp_path / "one.png", ["A"]) is None and not kept  # nothing to pair with
    rows = _rows() + [_row("C", 2, 0, "c1", 0.9)]  # C: one case at N = 2 only
    plot_paired(rows, tmp_path / "paired.png", ["A", "B", "C"])
    b_axis, c_axis = kept[0].axes
    points = np.concatenate([c.get_offsets() for c in b_axis.collections])
    # B's class-averaged Dice is A's + 0.1 on each of 2 cases at N = 2 and 4: all four above the diagonal.
    assert sorted(map(tuple, points.round(3))) == [(0.5, 0.6), (0.5, 0.6), (0.7, 0.8), (0.7, 0.8)]
    assert b_axis.get_title().endswith("better on 4 of 4") and c_axis.get_title().endswith("better on 1 of 1")
    assert (tmp_path / "paired.png").stat().st_size > 1000
    monkeypatch.undo()
    report.plt.close(kept[0])


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


def test_plot_shows_mean_and_spread_per_n_one_line_per_trainer(tmp_path: Path, monkeypatch) -> None:
    from nnsam.fewshot import report

    kept = []
    monkeypatch.setattr(report.plt, "close", kept.append)  # keep the figure to look at it
    plot_fewshot(_rows(), tmp_path / "fewshot.png", ["A", "B"])
    dice_axis = kept[0].axes[0]
    assert [c.get_label() for c in dice_axis.containers] == ["A", "B"]  # one error-bar line per trainer
    for container, expected_mean in zip(dice_axis.containers, (0.6, 0.7)):
        line, _, (bars,) = container.lines
        assert list(line.get_xdata()) == pytest.approx([2, 4], abs=0.1)  # at N, shifted a little per trainer
        assert list(line.get_ydata()) == pytest.approx([expected_mean] * 2)  # mean over cases (and seeds) per N
        # Error bars span mean ± sd over the per-case values (0.5/0.7 or 0.6/0.8: sd = 0.1414).
        low, high = bars.get_segments()[0][:, 1]
        assert high - low == pytest.approx(2 * 0.14142, abs=1e-4)
    a_x, b_x = (c.lines[0].get_xdata()[0] for c in dice_axis.containers)
    assert a_x < b_x  # side by side, so one trainer's bar does not hide the other's
    monkeypatch.undo()
    report.plt.close(kept[0])


def test_plot_cuts_bars_at_the_metric_range_and_marks_each_seed(tmp_path: Path, monkeypatch) -> None:
    from nnsam.fewshot import report

    rows = []
    for seed, dice, asd in ((0, (0.5, 1.0), (0.1, 9.0)), (1, (0.9, 1.0), (0.2, 0.3))):  # N = 4: two draws
        for case, d, a in zip(("c1", "c2"), dice, asd):
            rows.append({"trainer": "A", "n": 4, "seed": seed, "fold": seed, "case": case, "class": 1,
                         "class_name": "organ", "dice": d, "iou": d, "hd95_mm": a, "asd_mm": a,
                         "distance_penalised": False})
    rows.append({**rows[0], "n": 8, "case": "c1", "dice": 0.8})  # N = 8: one seed, no per-seed markers
    kept = []
    monkeypatch.setattr(report.plt, "close", kept.append)
    plot_fewshot(rows, tmp_path / "fewshot.png", ["A"])
    dice_axis, asd_axis = kept[0].axes
    for axis, low_bound, high_bound in ((dice_axis, 0.0, 1.0), (asd_axis, 0.0, np.inf)):
        (_, _, (bars,)) = axis.containers[0].lines
        mean_at_4 = axis.containers[0].lines[0].get_ydata()[0]
        low, high = bars.get_segments()[0][:, 1]
        assert low >= low_bound and high <= high_bound  # mean ± sd would leave the range here
        assert low < mean_at_4 < high or mean_at_4 == high == high_bound
    (seed_markers,) = [line for line in dice_axis.lines if line.get_marker() == "o" and line.get_linestyle() == "None"
                       and len(line.get_xdata())]
    assert sorted(seed_markers.get_ydata()) == pytest.approx([0.75, 0.95])  # each draw's mean at N = 4, none at N = 8
    assert "mean of one seed" in [t.get_text() for t in dice_axis.get_legend().get_texts()]
    monkeypatch.undo()
    report.plt.close(kept[0])
