"""Every bad argument of ``nnsam fewshot`` is refused within seconds, before OUT_DIR is written to: one line
``nnsam fewshot: error: ...`` that says what to do, exit code 2, no traceback, nothing planned."""
import json
import os
from pathlib import Path

import pytest

from nnsam.data.synthetic import make_synthetic_dataset
from nnsam.fewshot import command


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return make_synthetic_dataset(tmp_path / "data", num_subjects=4, image_size=(24, 24), dataset_name="Dataset977_Toy")


def _refused(argv: list[str], out: Path, capsys: pytest.CaptureFixture) -> str:
    """Run the command in-process; assert the refusal contract and return the message."""
    if "--trainers" not in argv:
        argv = [*argv, "--trainers", "nnUNetTrainer"]  # the cheapest trainer to look up
    code = command.main([*argv, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    message = captured.err.strip()
    assert "\n" not in message and message.startswith("nnsam fewshot: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()  # nothing planned, preprocessed or trained; OUT_DIR not even created
    return message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--val-iters", "0"], "--val-iters must be a positive whole number, got 0"),
        (["--epochs", "0"], "--epochs must be a positive whole number, got 0"),
        (["--iters-per-epoch", "-3"], "--iters-per-epoch must be a positive whole number, got -3"),
        (["--batch-size", "0"], "--batch-size must be a positive whole number, got 0"),
        (["--n", "2", "0"], "--n must be a positive whole number, got 0"),
        (["--num-processes", "0"], "--num-processes must be a positive whole number, got 0"),
        (["--seeds", "0", "-1"], "--seeds must be 0 or larger"),
        (["--group-regex", "(patient"], "--group-regex '(patient' is not a valid regular expression"),
        (["--test-fraction", "1.5"], "--test-fraction must be in (0, 1)"),
        (["--trainers", "nnUNetTrainerTypo"], "unknown trainer 'nnUNetTrainerTypo'"),
        (["--split", "official"], "--split official needs the split record camus_split.json"),
        (["--trainers", "nnUNetTrainer@ResEncXXL"], "unknown plans 'ResEncXXL' in 'nnUNetTrainer@ResEncXXL'"),
        (["--trainers", "nnUNetTrainerTypo@ResEncM"], "unknown trainer 'nnUNetTrainerTypo'"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str], expected: str
) -> None:
    message = _refused([str(dataset), *options], tmp_path / "out", capsys)
    assert expected in message


def test_the_demo_checks_its_options_before_generating_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _refused(["--val-iters", "0"], tmp_path / "demo", capsys)


def test_unknown_trainer_message_says_where_nnunet_looked(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    message = _refused([str(dataset), "--trainers", "nnUNetTrainer", "NoSuchTrainer"], tmp_path / "out", capsys)
    assert "nnUNet_extTrainer" in message and "check the spelling" in message


def test_cuda_without_a_gpu_is_refused(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = _refused([str(dataset), "--device", "cuda"], tmp_path / "out", capsys)
    assert "PyTorch sees no CUDA GPU; use --device cpu" in message


def _edit_dataset_json(dataset: Path, **changes: object) -> None:
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    for key, value in changes.items():
        if value is None:
            dataset_json.pop(key)
        else:
            dataset_json[key] = value
    (dataset / "dataset.json").write_text(json.dumps(dataset_json))


def test_region_based_labels_are_refused(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _edit_dataset_json(dataset, labels={"background": 0, "whole": [1, 2], "core": 2}, regions_class_order=[1, 2])
    message = _refused([str(dataset)], tmp_path / "out", capsys)
    assert "region-based labels (whole: [1, 2])" in message and "one integer value per label" in message


def test_dataset_json_without_file_ending_is_refused(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _edit_dataset_json(dataset, file_ending=None)
    message = _refused([str(dataset)], tmp_path / "out", capsys)
    assert "has no 'file_ending'" in message and "add it" in message


def test_folder_that_is_no_dataset_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    message = _refused([str(tmp_path / "empty")], tmp_path / "out", capsys)
    assert "is not an nnU-Net raw dataset folder" in message


def test_output_inside_a_file_is_refused(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    message = _refused([str(dataset)], a_file / "out", capsys)
    assert "is a file, not a folder; choose another --out" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_folder_is_refused(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        message = _refused([str(dataset)], locked / "out", capsys)
    finally:
        locked.chmod(0o755)
    assert "is not writable" in message


def test_unwritable_output_folder_is_refused(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    # As root, permission bits do not stop writes; a read-only mount would. Stand in for it by what os.access says.
    real_access = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode))
    message = _refused([str(dataset)], locked / "out", capsys)
    assert f"{locked} is not writable; choose a folder you can write to" in message
