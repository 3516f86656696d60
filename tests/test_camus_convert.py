"""``nnsam convert-camus`` on the CAMUS-layout phantom: the two nnU-Net datasets (2D key frames, half sequences with
time as z), the official split and metadata, the unlabelled mode, and every malformed input refused with one error
line naming the file, CAMUS_DIR untouched and nothing left in OUT_DIR that looks complete."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

from nnsam.cli import main
from nnsam.echo.camus import (
    CAMUS_LABELS,
    METADATA_FILE,
    SPLIT_FILE,
    TIME_SPACING,
    CamusDatasets,
    CamusFormatError,
    camus_cfg_path,
    camus_image_path,
    camus_split_path,
    convert_camus,
    read_case_metadata,
    read_info_cfg,
    read_official_split,
)
from nnsam.echo.phantom import make_camus_phantom
from nnsam.fewshot.splits import subject_of

NUM_PATIENTS = 4
ERROR_PREFIX = "nnsam convert-camus: error: "
LAST_PATIENT = f"patient{NUM_PATIENTS:04d}"  # sorted last: its errors come after the others were converted


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root`` with size, mtime and content hash: any change shows up."""
    listing = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            listing[str(path.relative_to(root))] = (stat.st_size if digest else None, stat.st_mtime_ns, digest)
    return listing


def _patient_dir(camus_dir: Path, patient: str = LAST_PATIENT) -> Path:
    return camus_dir / "database_nifti" / patient


def _cfg_text(camus_dir: Path, view: str = "4CH") -> str:
    return camus_cfg_path(_patient_dir(camus_dir), view).read_text()


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_camus_phantom(tmp_path_factory.mktemp("camus"), num_patients=NUM_PATIENTS, seed=0)


@pytest.fixture(scope="module")
def conversion(phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[CamusDatasets, dict, dict]:
    """The phantom converted once; with snapshots of CAMUS_DIR before and after."""
    before = _snapshot(phantom)
    datasets = convert_camus(phantom, tmp_path_factory.mktemp("out") / "nnUNet_raw")
    return datasets, before, _snapshot(phantom)


@pytest.fixture()
def camus_copy(phantom: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(phantom, tmp_path / "camus"))


# ---------------------------------------------------------------------------------------------------------------
# The phantom


def test_phantom_has_the_camus_release_layout(phantom: Path) -> None:
    patient_dir = phantom / "database_nifti" / "patient0001"
    for view in ("2CH", "4CH"):
        for name in ("ED", "ED_gt", "ES", "ES_gt", "half_sequence", "half_sequence_gt"):
            assert (patient_dir / f"patient0001_{view}_{name}.nii.gz").is_file()
        assert (patient_dir / f"Info_{view}.cfg").is_file()
    split = {s: (phantom / "database_split" / f"subgroup_{s}.txt").read_text().split()
             for s in ("training", "validation", "testing")}
    assert [len(v) for v in split.values()] == [2, 1, 1]
    assert sorted(sum(split.values(), [])) == [f"patient{i:04d}" for i in range(1, NUM_PATIENTS + 1)]

    shapes, spacings = set(), set()
    for patient_dir in sorted((phantom / "database_nifti").iterdir()):
        for view in ("2CH", "4CH"):
            sequence = sitk.ReadImage(str(camus_image_path(patient_dir, view, "half_sequence")))
            frames, labels = sitk.GetArrayFromImage(sequence), _array(camus_image_path(patient_dir, view,
                                                                                       "half_sequence", True))
            info = read_info_cfg(camus_cfg_path(patient_dir, view))
            assert sequence.GetDimension() == 3 and 6 <= frames.shape[0] <= 12  # time is the first array axis
            assert (info.ed_frame, info.es_frame, info.num_frames) == (1, frames.shape[0], frames.shape[0])
            assert info.image_quality in ("Good", "Medium", "Poor") and 0 < info.ejection_fraction < 100
            assert all(96 <= size <= 128 for size in frames.shape[1:])
            assert all(0.2 <= s <= 0.4 for s in sequence.GetSpacing()[:2])
            assert set(np.unique(labels)) == {0, 1, 2, 3}
            lv_area = (labels == CAMUS_LABELS["LV"]).sum(axis=(1, 2))
            assert lv_area[-1] < 0.9 * lv_area[0]  # the LV empties from ED to ES
            for phase, frame in (("ED", 0), ("ES", -1)):
                np.testing.assert_array_equal(_array(camus_image_path(patient_dir, view, phase)), frames[frame])
                np.testing.assert_array_equal(_array(camus_image_path(patient_dir, view, phase, True)), labels[frame])
            shapes.add(frames.shape[1:])
            spacings.add(sequence.GetSpacing()[:2])
    assert len(shapes) > 1 and len(spacings) > 1 and any(h != w for h, w in shapes)


def test_phantom_is_deterministic(phantom: Path, tmp_path: Path) -> None:
    again = make_camus_phantom(tmp_path, num_patients=NUM_PATIENTS, seed=0)
    assert {k: v[2] for k, v in _snapshot(again).items()} == {k: v[2] for k, v in _snapshot(phantom).items()}


# ---------------------------------------------------------------------------------------------------------------
# Labelled conversion


def test_conversion_writes_the_key_frame_and_sequence_datasets(conversion) -> None:
    datasets, _, _ = conversion
    assert datasets.key_frames.name == "Dataset110_CAMUS" and datasets.sequences.name == "Dataset111_CAMUSSeq"
    assert sorted(p.name for p in datasets.key_frames.parent.iterdir()) == [datasets.key_frames.name,
                                                                            datasets.sequences.name]
    for dataset_dir, num_cases in ((datasets.key_frames, NUM_PATIENTS * 4), (datasets.sequences, NUM_PATIENTS * 2)):
        dataset_json = json.loads((dataset_dir / "dataset.json").read_text())
        assert dataset_json["channel_names"] == {"0": "ultrasound"}
        assert dataset_json["labels"] == {"background": 0, "LV": 1, "MYO": 2, "LA": 3}
        assert dataset_json["numTraining"] == num_cases and dataset_json["file_ending"] == ".nii.gz"
        assert len(list((dataset_dir / "imagesTr").glob("*_0000.nii.gz"))) == num_cases
        assert len(list((dataset_dir / "labelsTr").glob("*.nii.gz"))) == num_cases
    assert (datasets.key_frames / "imagesTr" / "patient0001_2CH_ED_0000.nii.gz").is_file()
    assert (datasets.sequences / "labelsTr" / "patient0001_4CH_seq.nii.gz").is_file()


def test_frames_are_copied_exactly_with_native_spacing_and_time_as_z(conversion, phantom: Path) -> None:
    datasets, _, _ = conversion
    for case_id, meta in read_case_metadata(datasets.sequences).items():
        source = sitk.ReadImage(str(phantom / meta["source"]))
        image = sitk.ReadImage(str(datasets.sequences / "imagesTr" / f"{case_id}_0000.nii.gz"))
        label = sitk.ReadImage(str(datasets.sequences / "labelsTr" / f"{case_id}.nii.gz"))
        # Every frame, in order, bit for bit: nothing resampled or mixed along time.
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(source))
        assert sitk.GetArrayFromImage(image).shape[0] == meta["num_frames"]
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label),
                                      _array(phantom / meta["source"].replace(".nii.gz", "_gt.nii.gz")))
        assert image.GetSpacing()[:2] == source.GetSpacing()[:2] and image.GetSpacing()[2] == TIME_SPACING
        assert source.GetSpacing()[2] != TIME_SPACING  # the phantom stores the frame interval there
        assert label.GetSpacing() == image.GetSpacing() and label.GetOrigin() == image.GetOrigin()
    for case_id, meta in read_case_metadata(datasets.key_frames).items():
        source = sitk.ReadImage(str(phantom / meta["source"]))
        image = sitk.ReadImage(str(datasets.key_frames / "imagesTr" / f"{case_id}_0000.nii.gz"))
        label = _array(datasets.key_frames / "labelsTr" / f"{case_id}.nii.gz")
        assert image.GetDimension() == 2 and image.GetSpacing() == source.GetSpacing()
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(source))
        assert label.shape == sitk.GetArrayFromImage(image).shape and set(np.unique(label)) <= {0, 1, 2, 3}


def test_converted_datasets_pass_nnunet_verify_dataset_integrity(conversion) -> None:
    datasets, _, _ = conversion
    verify_dataset_integrity(str(datasets.key_frames), num_processes=1)
    verify_dataset_integrity(str(datasets.sequences), num_processes=1)


def test_case_ids_group_by_patient_for_the_fewshot_splits(conversion) -> None:
    datasets, _, _ = conversion
    assert subject_of("patient0001_2CH_ED") == "patient0001"
    for dataset_dir in (datasets.key_frames, datasets.sequences):
        for case_id, meta in read_case_metadata(dataset_dir).items():
            assert subject_of(case_id) == meta["patient"]


def test_official_split_and_metadata_are_recorded(conversion, phantom: Path) -> None:
    datasets, _, _ = conversion
    patients_of = {s: camus_split_path(phantom, s).read_text().split() for s in ("training", "validation", "testing")}
    for dataset_dir, phases in ((datasets.key_frames, ("ED", "ES")), (datasets.sequences, ("seq",))):
        split = read_official_split(dataset_dir)
        assert split == json.loads((dataset_dir / SPLIT_FILE).read_text())
        assert split == {s: sorted(f"{p}_{v}_{phase}" for p in patients for v in ("2CH", "4CH") for phase in phases)
                         for s, patients in patients_of.items()}
    metadata = read_case_metadata(datasets.key_frames)
    assert metadata == json.loads((datasets.key_frames / METADATA_FILE).read_text())
    for case_id, meta in metadata.items():
        info = read_info_cfg(camus_cfg_path(phantom / "database_nifti" / meta["patient"], meta["view"]))
        assert case_id == f"{meta['patient']}_{meta['view']}_{meta['phase']}"
        assert (meta["ed_frame"], meta["es_frame"], meta["num_frames"]) == (info.ed_frame, info.es_frame,
                                                                            info.num_frames)
        assert (meta["image_quality"], meta["ejection_fraction"]) == (info.image_quality, info.ejection_fraction)
        assert meta["cfg"]["FrameRate"] == info.fields["FrameRate"]


def test_camus_dir_is_never_modified(conversion) -> None:
    _, before, after = conversion
    assert after == before


def test_existing_output_is_not_overwritten(conversion, phantom: Path, capsys: pytest.CaptureFixture) -> None:
    datasets, _, _ = conversion
    out_dir = datasets.key_frames.parent
    before = _snapshot(out_dir)
    assert main(["convert-camus", str(phantom), str(out_dir)]) == 2
    assert capsys.readouterr().err == (f"{ERROR_PREFIX}{datasets.key_frames} already exists; choose another OUT_DIR "
                                       "or --dataset-id, or remove it\n")
    # The sequence dataset's id is taken too: another id must avoid both.
    assert main(["convert-camus", str(phantom), str(out_dir), "--dataset-id", "109"]) == 2
    assert str(datasets.key_frames) in capsys.readouterr().err
    assert _snapshot(out_dir) == before


def test_another_dataset_with_the_same_id_is_not_overwritten(phantom: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "Dataset111_Other").mkdir()
    assert main(["convert-camus", str(phantom), str(tmp_path)]) == 2
    assert f"{tmp_path / 'Dataset111_Other'} already exists" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["Dataset111_Other"]


# ---------------------------------------------------------------------------------------------------------------
# Unlabelled conversion


def test_unlabelled_mode_writes_inputs_for_nnunet_predict(camus_copy: Path, tmp_path: Path) -> None:
    for path in camus_copy.rglob("*_gt.nii.gz"):
        path.unlink()
    shutil.rmtree(camus_copy / "database_split")
    for path in _patient_dir(camus_copy).glob("Info_*.cfg"):  # cfgs are optional
        path.unlink()
    out_dir = tmp_path / "new"
    assert main(["convert-camus", str(camus_copy), str(out_dir), "--unlabelled"]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["imagesTs_2d", "imagesTs_seq"]
    for folder, num_cases in (("imagesTs_2d", NUM_PATIENTS * 4), ("imagesTs_seq", NUM_PATIENTS * 2)):
        # What nnUNetv2_predict -i does to find the cases and their channels.
        cases = create_lists_from_splitted_dataset_folder(str(out_dir / folder), ".nii.gz")
        assert len(cases) == num_cases and all(len(files) == 1 for files in cases)
    sequence = sitk.ReadImage(str(out_dir / "imagesTs_seq" / "patient0002_4CH_seq_0000.nii.gz"))
    source = sitk.ReadImage(str(camus_image_path(_patient_dir(camus_copy, "patient0002"), "4CH", "half_sequence")))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sequence), sitk.GetArrayFromImage(source))
    assert sequence.GetSpacing() == (*source.GetSpacing()[:2], TIME_SPACING)


# ---------------------------------------------------------------------------------------------------------------
# Refusals


def _unlink(*parts: str) -> Callable[[Path], Path]:
    def mutate(camus_dir: Path) -> Path:
        path = camus_dir.joinpath(*parts)
        path.unlink()
        return path
    return mutate


def _edit_cfg(old: str, new: str) -> Callable[[Path], Path]:
    def mutate(camus_dir: Path) -> Path:
        path = camus_cfg_path(_patient_dir(camus_dir), "4CH")
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))
        return path
    return mutate


def _rewrite(phase: str, ground_truth: bool, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], Path]:
    """Replace an image of the last patient's 4CH view by ``change(array)``, keeping its spacing where it can."""
    def mutate(camus_dir: Path) -> Path:
        path = camus_image_path(_patient_dir(camus_dir), "4CH", phase, ground_truth)
        source = sitk.ReadImage(str(path))
        image = sitk.GetImageFromArray(change(sitk.GetArrayFromImage(source)))
        image.SetSpacing(source.GetSpacing()[: image.GetDimension()])
        sitk.WriteImage(image, str(path))
        return path
    return mutate


def _num_frames(camus_dir: Path) -> int:
    return read_info_cfg(camus_cfg_path(_patient_dir(camus_dir), "4CH")).num_frames


def _with_num_frames(mutate_for: Callable[[int], Callable[[Path], Path]]) -> Callable[[Path], Path]:
    return lambda camus_dir: mutate_for(_num_frames(camus_dir))(camus_dir)


def _corrupt(camus_dir: Path) -> Path:
    path = camus_image_path(_patient_dir(camus_dir), "4CH", "ES")
    path.write_bytes(b"not a NIfTI file")
    return path


def _truncate(camus_dir: Path) -> Path:
    path = camus_image_path(_patient_dir(camus_dir), "4CH", "half_sequence")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _label_out_of_range(labels: np.ndarray) -> np.ndarray:
    labels = labels.copy()
    labels[0, 0] = 5
    return labels


BAD_INPUTS = {
    "missing half-sequence ground truth": (
        _unlink("database_nifti", LAST_PATIENT, f"{LAST_PATIENT}_4CH_half_sequence_gt.nii.gz"), ": missing"),
    "missing ED image": (_unlink("database_nifti", LAST_PATIENT, f"{LAST_PATIENT}_2CH_ED.nii.gz"), ": missing"),
    "missing cfg": (_unlink("database_nifti", LAST_PATIENT, "Info_2CH.cfg"), ": missing"),
    "missing split file": (_unlink("database_split", "subgroup_testing.txt"), ": missing"),
    "cfg without NbFrame": (_with_num_frames(lambda n: _edit_cfg(f"NbFrame: {n}\n", "")), ": missing NbFrame"),
    "cfg with a malformed line": (_edit_cfg("Sex:", "Sex"), ": line 4 is not 'Key: value'"),
    "cfg with a non-integer ES": (_with_num_frames(lambda n: _edit_cfg(f"ES: {n}\n", "ES: last\n")),
                                  ": ES must be a whole frame number, got 'last'"),
    "NbFrame disagrees with the sequence": (
        _with_num_frames(lambda n: _edit_cfg(f"NbFrame: {n}\n", f"NbFrame: {n + 1}\n")), "disagrees with the"),
    "ES after the last frame": (
        _with_num_frames(lambda n: _edit_cfg(f"ES: {n}\n", f"ES: {n + 1}\n")), "outside the half sequence's frames"),
    "ED frame 0": (_edit_cfg("ED: 1\n", "ED: 0\n"), ": ED 0 is outside the half sequence's frames 1.."),
    "label value out of range": (_rewrite("ES", True, _label_out_of_range), ": label values [5] outside 0..3"),
    "label with a frame missing": (_rewrite("half_sequence", True, lambda labels: labels[:-1]),
                                   "does not match the shape"),
    "label of another size": (_rewrite("ED", True, lambda labels: labels[:, :-2]), "does not match the shape"),
    "sequence stored as 2D": (_rewrite("half_sequence", False, lambda frames: frames[0]),
                              "expected a 2D+time sequence stored as 3D NIfTI"),
    "unreadable NIfTI": (_corrupt, ": not a readable NIfTI image (the file is not recognized as a NIFTI file)"),
    "truncated NIfTI": (_truncate, ": truncated or corrupt gzip file"),
}


def _assert_refused(argv: list[str], out_dir: Path, capsys: pytest.CaptureFixture) -> str:
    """The refusal contract: exit code 2, one error line last on stderr, no traceback, nothing complete in OUT_DIR."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    error_lines = [line for line in captured.err.splitlines() if "nnsam convert-camus" in line]
    assert len(error_lines) == 1 and captured.err.endswith(error_lines[0] + "\n"), captured.err
    assert "Traceback" not in captured.err + captured.out
    # The progress bar may have run, but no dataset and no staging folder is left behind.
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    return error_lines[0]


@pytest.mark.parametrize("problem", list(BAD_INPUTS))
def test_bad_input_is_refused_naming_the_file(problem: str, camus_copy: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    mutate, expected = BAD_INPUTS[problem]
    bad_file = mutate(camus_copy)
    before = _snapshot(camus_copy)
    out_dir = tmp_path / "out"
    line = _assert_refused(["convert-camus", str(camus_copy), str(out_dir)], out_dir, capsys)
    assert line.startswith(f"{ERROR_PREFIX}{bad_file}") and expected in line, line
    assert _snapshot(camus_copy) == before


def test_unlabelled_mode_still_checks_the_files_it_reads(camus_copy: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    mutate, expected = BAD_INPUTS["NbFrame disagrees with the sequence"]
    bad_cfg = mutate(camus_copy)
    out_dir = tmp_path / "out"
    line = _assert_refused(["convert-camus", str(camus_copy), str(out_dir), "--unlabelled"], out_dir, capsys)
    assert line.startswith(f"{ERROR_PREFIX}{bad_cfg}") and expected in line


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--dataset-id", "999"], "--dataset-id must be between 1 and 998 (the sequences take id + 1), got 999"),
        (["--dataset-id", "0"], "--dataset-id must be between 1 and 998 (the sequences take id + 1), got 0"),
        (["--unlabelled", "--dataset-id", "5"], "--dataset-id has no effect with --unlabelled (no dataset is written)"),
    ],
)
def test_bad_options_are_refused(options: list[str], expected: str, phantom: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    out_dir = tmp_path / "out"
    line = _assert_refused(["convert-camus", str(phantom), str(out_dir), *options], out_dir, capsys)
    assert line == f"{ERROR_PREFIX}{expected}"


def test_out_dir_inside_camus_dir_is_refused(camus_copy: Path, capsys: pytest.CaptureFixture) -> None:
    before = _snapshot(camus_copy)
    line = _assert_refused(["convert-camus", str(camus_copy), str(camus_copy / "out")], camus_copy / "out", capsys)
    assert "is inside CAMUS_DIR" in line
    assert _snapshot(camus_copy) == before


def test_format_errors_are_camus_format_errors(camus_copy: Path, tmp_path: Path) -> None:
    BAD_INPUTS["label value out of range"][0](camus_copy)
    with pytest.raises(CamusFormatError, match="label values"):
        convert_camus(camus_copy, tmp_path / "out")


def test_fewshot_official_split_holds_out_the_official_test_patients(conversion, tmp_path: Path) -> None:
    import argparse

    from nnsam.fewshot import command

    datasets, _, _ = conversion
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args([str(datasets.key_frames), "--split", "official", "--n", "4", "--out", str(tmp_path / "fs"),
                              "--trainers", "nnUNetTrainer", "--device", "cpu"])
    plan = command.plan_experiment(args)
    official = read_official_split(datasets.key_frames)
    assert sorted(plan.specs[0].test_cases) == sorted(official["testing"])
    assert set(plan.specs[0].train_cases) <= set(official["training"]) | set(official["validation"])
