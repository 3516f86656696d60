"""CAMUS per-structure metrics on label maps with known answers."""
import numpy as np
import pytest
import SimpleITK as sitk

from nnsam.echo.structure_metrics import evaluate_folder, phase_of, structure_metrics, summarise


def _heart(shift: int = 0) -> np.ndarray:
    label = np.zeros((40, 40), np.uint8)
    label[10 + shift:20 + shift, 10:20] = 2  # myocardium block
    label[12 + shift:18 + shift, 12:18] = 1  # LV inside it
    label[25:30, 10:20] = 3  # LA
    return label


def test_identical_maps_are_perfect_and_the_epicardium_is_lv_plus_myo():
    metrics = structure_metrics(_heart(), _heart(), (0.5, 0.5))
    assert all(m.dice == 1 and m.hd_mm == 0 and m.msd_mm == 0 for m in metrics.values())
    assert set(metrics) == {"LV", "MYO", "LA", "epicardium"}


def test_a_shift_gives_the_expected_overlap_and_distances():
    metrics = structure_metrics(_heart(shift=2), _heart(), (0.5, 0.5))
    # The 10x10 epicardium moved by 2 rows: overlap 8x10, Dice 2*80/200, IoU 80/120, HD 2 px = 1 mm.
    assert metrics["epicardium"].dice == pytest.approx(0.8)
    assert metrics["epicardium"].iou == pytest.approx(80 / 120)
    assert metrics["epicardium"].hd_mm == pytest.approx(1.0)
    assert metrics["LA"].dice == 1  # the atrium did not move
    assert metrics["LV"].hd_mm == pytest.approx(1.0)


def test_a_missed_structure_is_penalised_with_the_diagonal():
    prediction = _heart()
    prediction[prediction == 3] = 0
    la = structure_metrics(prediction, _heart(), (1.0, 1.0))["LA"]
    assert la.dice == 0 and la.distance_penalised and la.hd_mm == pytest.approx(np.hypot(40, 40))


def test_folder_evaluation_by_phase(tmp_path):
    (tmp_path / "ref").mkdir(), (tmp_path / "pred").mkdir()
    for case, shift in (("patient0001_2CH_ED", 0), ("patient0001_2CH_ES", 2)):
        for folder, label in (("ref", _heart()), ("pred", _heart(shift))):
            image = sitk.GetImageFromArray(label)
            image.SetSpacing((0.5, 0.5))
            sitk.WriteImage(image, str(tmp_path / folder / f"{case}.nii.gz"))
    rows = evaluate_folder(tmp_path / "pred", tmp_path / "ref")
    assert len(rows) == 8 and {r["phase"] for r in rows} == {"ED", "ES"}
    summary = summarise(rows)
    assert summary[("epicardium", "ED")]["dice"] == (1.0, 0.0)
    assert summary[("epicardium", "ES")]["dice"][0] == pytest.approx(0.8)
    assert phase_of("patient0001_4CH_half_sequence") is None


def test_echo_metrics_command(tmp_path, capsys):
    from nnsam.cli import main

    (tmp_path / "ref").mkdir(), (tmp_path / "pred").mkdir()
    for folder in ("ref", "pred"):
        sitk.WriteImage(sitk.GetImageFromArray(_heart()), str(tmp_path / folder / "patient0002_4CH_ES.nii.gz"))
    assert main(["echo-metrics", str(tmp_path / "pred"), str(tmp_path / "ref")]) == 0
    assert "| epicardium | ES | 1.000 ± 0.000 |" in capsys.readouterr().out
    (tmp_path / "pred" / "patient0002_4CH_ES.nii.gz").unlink()
    assert main(["echo-metrics", str(tmp_path / "pred"), str(tmp_path / "ref")]) == 2
    assert "No prediction for patient0002_4CH_ES" in capsys.readouterr().err
