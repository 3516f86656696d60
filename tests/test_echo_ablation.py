"""nnsam ablation without training: its rows, its refusals and its table arithmetic."""
from pathlib import Path

import pytest

from nnsam.echo import ablation
from nnsam.fewshot.runner import Model, check_trainer


@pytest.mark.parametrize("encoder,prefix", [("litemedsam", "nnSAMTrainer_LiteMedSAM"), ("mobilesam", "nnSAMTrainer")])
def test_every_row_is_a_trainer_nnunet_finds(encoder: str, prefix: str) -> None:
    labels = {row.name: row.label(encoder) for row in ablation.ROWS}
    assert labels["+TRA+LIA"] == f"{prefix}_TRA_LIA:2d_temporal" and labels["nnU-Net 3d_fullres"] == "nnUNetTrainer:3d_fullres"
    for label in labels.values():
        check_trainer(Model.parse(label).trainer)


def test_a_folder_that_is_no_camus_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "something").mkdir()
    assert ablation.main([str(tmp_path / "something"), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert "neither the CAMUS release" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_key_frame_dataset_is_refused_with_a_pointer_to_the_sequences(tmp_path: Path, capsys) -> None:
    from nnsam.echo.camus import convert_camus
    from nnsam.echo.phantom import make_camus_phantom

    converted = convert_camus(make_camus_phantom(tmp_path / "camus", num_patients=4, seed=0), tmp_path / "raw")
    assert ablation.main([str(converted.key_frames), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert "holds 2D key frames; give the sequence dataset" in capsys.readouterr().err


def _rows(dice: float, inconsistent: list[int]) -> list[dict]:
    key = [{"kind": "key_frame", "case": "c", "phase": phase, "structure": structure, "dice": dice, "iou": dice / 2,
            "hd_mm": 10 * dice} for phase in ("ED", "ES") for structure in ("LV", "MYO", "LA", "epicardium")]
    return key + [{"kind": "sequence", "case": f"s{i}", "frames": 8, "inconsistent_frames": n}
                  for i, n in enumerate(inconsistent)]


def test_table_is_mean_and_sd_over_seeds_and_tci_sums_the_test_sequences() -> None:
    table = ablation.ablation_table({"+TRA": {0: _rows(0.8, [1, 0]), 1: _rows(0.9, [3, 2])}, "nnSAM": {0: _rows(0.7, [0, 0])}})
    assert table[2] == "| +TRA | 0.850 ± 0.050 | 0.425 ± 0.025 | 8.50 ± 0.50 | 3.0 ± 2.0 | 75 ± 25 % |"
    assert table[3] == "| nnSAM | 0.700 | 0.350 | 7.00 | 0.0 | 0 % |"
