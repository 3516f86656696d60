"""``nnsam fewshot --records DIR``: a study's finished runs survive the loss of OUT_DIR (another machine, a wiped
workspace) and are skipped and reported again from their records."""
import json
import shutil
from pathlib import Path

import pytest

from nnsam.data.synthetic import make_synthetic_dataset
from nnsam.fewshot import command
from nnsam.fewshot.records import restore_records, save_records
from nnsam.fewshot.runner import RunSpec, SetupError, Workspace, earlier_runs, run_all
from test_fewshot_runner import _fake_evaluate, _parse


def _plan(dataset: Path, out: Path, records: Path, *extra: str) -> command.Plan:
    return command.plan_experiment(_parse([str(dataset), "--out", str(out), "--records", str(records), "--n", "2", "4",
                                           "--seeds", "0", "1", "--trainers", "nnUNetTrainer", "--device", "cpu",
                                           "--epochs", "1", "--test-fraction", "0.25", *extra]))


def test_finished_runs_survive_a_new_machine_through_their_records(tmp_path: Path) -> None:
    dataset = make_synthetic_dataset(tmp_path / "data", num_subjects=8, image_size=(24, 24))
    records = tmp_path / "records"
    plan = _plan(dataset, tmp_path / "out", records)
    trained: list[str] = []

    def fake_train(spec: RunSpec, workspace: Workspace, log_path: Path) -> int:
        trained.append(spec.name)
        return 1 if spec.n == 4 and spec.seed == 1 else 0  # one run fails: it has no record

    def keep(_: object) -> None:
        save_records(plan.workspace.out_dir, records)
        kept.append(len(list(records.glob("runs/*/*/done.json"))))

    kept: list[int] = []
    run_all(plan.specs, plan.workspace, fake_train, _fake_evaluate, on_finished=keep)
    assert kept == [1, 2, 3]  # saved after each finished run, before the next one starts
    assert sorted(p.name for p in records.iterdir()) == ["folds.json", "runs", "test_set.json"]

    # Another machine: the dataset lives elsewhere, OUT_DIR is new; only the records came along.
    moved = shutil.copytree(dataset, tmp_path / "elsewhere" / dataset.name)
    again = _plan(moved, tmp_path / "new_out", records)
    assert json.loads((again.workspace.out_dir / "test_set.json").read_text())["source"] == str(moved.resolve())
    assert [(s.n, s.seed, s.fold, s.train_cases) for s in again.specs] == \
           [(s.n, s.seed, s.fold, s.train_cases) for s in plan.specs]
    trained.clear()
    outcomes = run_all(again.specs, again.workspace, fake_train, _fake_evaluate)
    assert trained == ["nnUNetTrainer N=4 seed=1"]  # only the run without a record trains again
    assert [o.status for o in outcomes] == ["skipped", "skipped", "skipped", "failed"]
    assert outcomes[0].rows == _fake_evaluate(plan.specs[0], plan.workspace)

    # Restoring twice copies nothing twice, and an N added later is reported with the restored runs.
    assert restore_records(records, again.workspace.out_dir,
                           json.loads((again.workspace.out_dir / "test_set.json").read_text())) == 0
    more = command.plan_experiment(_parse([str(moved), "--out", str(tmp_path / "new_out"), "--records", str(records),
                                           "--n", "3", "--trainers", "nnUNetTrainer", "--device", "cpu", "--epochs",
                                           "1", "--test-fraction", "0.25"]))
    assert {(o.spec.n, o.spec.seed) for o in earlier_runs(more.workspace, more.specs)} == {(2, 0), (4, 0), (2, 1)}


def test_records_of_another_test_set_are_refused(tmp_path: Path) -> None:
    dataset = make_synthetic_dataset(tmp_path / "data", num_subjects=8, image_size=(24, 24))
    records = tmp_path / "records"
    plan = _plan(dataset, tmp_path / "out", records)
    save_records(plan.workspace.out_dir, records)
    with pytest.raises(SetupError, match="another test set"):
        _plan(dataset, tmp_path / "other_out", records, "--test-fraction", "0.5")
    assert not (tmp_path / "other_out" / "test_set.json").exists()  # nothing written for the refused study


def test_records_folder_must_be_writable(tmp_path: Path) -> None:
    dataset = make_synthetic_dataset(tmp_path / "data", num_subjects=8, image_size=(24, 24))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SetupError, match="--records .* is a file"):
        _plan(dataset, tmp_path / "out", tmp_path / "a_file" / "records")
