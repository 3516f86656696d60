"""Scoring predicted CAMUS half sequences: key-frame structure metrics and temporal consistency, on the phantom."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnsam.echo.camus import convert_camus
from nnsam.echo.phantom import make_camus_phantom
from nnsam.echo.sequence_metrics import evaluate_sequences, key_frames
from nnsam.echo.temporal_consistency import attribute_bounds, temporal_consistency
from nnsam.fewshot.metrics import read_label_image


@pytest.fixture(scope="module")
def sequence_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    camus = make_camus_phantom(tmp_path_factory.mktemp("camus"), num_patients=4, seed=3)
    return convert_camus(camus, tmp_path_factory.mktemp("raw")).sequences / "labelsTr"


def _predictions_like(references: Path, folder: Path) -> Path:
    shutil.copytree(references, folder)
    return folder


def _jitter(path: Path, frame: int, columns: int) -> None:
    image = sitk.ReadImage(str(path))
    labels = sitk.GetArrayFromImage(image)
    labels[frame] = np.roll(labels[frame], columns, axis=1)
    jittered = sitk.GetImageFromArray(labels)
    jittered.CopyInformation(image)
    sitk.WriteImage(jittered, str(path))


def test_perfect_predictions_score_one_and_count_what_the_ground_truth_counts(sequence_labels: Path, tmp_path: Path):
    evaluation = evaluate_sequences(_predictions_like(sequence_labels, tmp_path / "pred"), sequence_labels)
    assert len(evaluation.cases) == 8  # 4 patients x 2 views
    assert {r["phase"] for r in evaluation.rows} == {"ED", "ES"}
    assert all(r["dice"] == 1 and r["hd_mm"] == 0 for r in evaluation.rows)
    references = [read_label_image(p) for p in sorted(sequence_labels.glob("*.nii.gz"))]
    spacings = [(s[1], s[2]) for _, s in references]
    truth = temporal_consistency([r for r, _ in references], attribute_bounds([r for r, _ in references], spacings),
                                 spacings)
    assert evaluation.consistency.total_inconsistent_frames == truth.total_inconsistent_frames
    assert evaluation.consistency.bounds == truth.bounds


def test_a_jittered_frame_is_flagged_and_leaves_the_key_frames_alone(sequence_labels: Path, tmp_path: Path):
    predictions = _predictions_like(sequence_labels, tmp_path / "pred")
    clean = evaluate_sequences(predictions, sequence_labels)
    # An interior frame the ground truth itself does not flag (the phantom's short sequences flag a few).
    index, frame = next((i, t) for i, flags in enumerate(clean.consistency.frame_flags)
                        for t in range(2, len(flags) - 2) if not flags[t - 1:t + 2].any())
    case = clean.cases[index]
    _jitter(predictions / f"{case}.nii.gz", frame=frame, columns=8)
    jittered = evaluate_sequences(predictions, sequence_labels)
    assert jittered.consistency.frame_flags[index][frame]
    assert jittered.consistency.per_attribute["epi_center_x"] > clean.consistency.per_attribute["epi_center_x"]
    # The other sequences are scored as before; the key frames (ED = 0, ES = last) did not move.
    others = [i for i in range(len(clean.cases)) if i != index]
    assert [jittered.consistency.per_sequence[i] for i in others] == [clean.consistency.per_sequence[i] for i in others]
    assert all(r["dice"] == 1 for r in jittered.rows)


def test_key_frames_follow_the_recorded_cfg():
    assert key_frames("p_2CH_seq", 10) == {"ED": 0, "ES": 9}
    assert key_frames("p_2CH_seq", 10, {"p_2CH_seq": {"ed_frame": 2, "es_frame": 8}}) == {"ED": 1, "ES": 7}
    with pytest.raises(ValueError, match="outside its 10 frames"):
        key_frames("p_2CH_seq", 10, {"p_2CH_seq": {"ed_frame": 1, "es_frame": 11}})


def test_echo_metrics_command_on_sequences(sequence_labels: Path, tmp_path: Path, capsys):
    from nnsam.cli import main

    predictions = _predictions_like(sequence_labels, tmp_path / "pred")
    assert main(["echo-metrics", str(predictions), str(sequence_labels)]) == 0
    out = capsys.readouterr().out
    assert "| epicardium | ED | 1.000 ± 0.000 |" in out and "Temporal consistency" in out and "TCI" in out
    assert f"bounds (min-max scaling) from the 8 reference sequences in {sequence_labels}" in out
