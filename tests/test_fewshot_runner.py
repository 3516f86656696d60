import argparse
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import SimpleITK as sitk

from nnsam.data.synthetic import SYNTHETIC_DATASET_NAME, make_synthetic_dataset
from nnsam.fewshot import command
from nnsam.fewshot.runner import (
    RunSpec,
    SetupError,
    TrainingBudget,
    Workspace,
    assign_folds,
    earlier_runs,
    evaluate_run,
    open_workspace,
    prepare_workspace,
    run_all,
    train_in_subprocess,
)
from nnsam.plugin import trainer_dir

TEST_CASES = ("subj003_a", "subj003_b")
BUDGET = TrainingBudget(device="cpu", epochs=1, iters_per_epoch=2, val_iters=1, batch_size=2, disable_tta=True)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return make_synthetic_dataset(tmp_path / "data", num_subjects=4, image_size=(24, 24), dataset_name="Dataset977_Toy")


def _spec(trainer: str, n: int, budget: TrainingBudget = BUDGET, test_cases: tuple[str, ...] = ("t1",)) -> RunSpec:
    return RunSpec(trainer=trainer, n=n, seed=0, fold=n, train_cases=tuple(f"c{i}" for i in range(n)),
                   test_cases=test_cases, budget=budget)


def _fake_evaluate(spec: RunSpec, workspace: Workspace) -> list[dict]:
    return [{"trainer": spec.trainer, "n": spec.n, "seed": spec.seed, "case": "t1", "class": 1,
             "class_name": "organ", "dice": 0.5, "iou": 0.3, "hd95_mm": 1.0, "asd_mm": 0.5,
             "distance_penalised": False}]


def _prepared(dataset: Path, out: Path, test_cases: tuple[str, ...] = TEST_CASES) -> Workspace:
    """A workspace whose pool is every case of ``dataset`` except ``test_cases``."""
    workspace = open_workspace(dataset, out)
    prepare_workspace(workspace, [c for c in workspace.case_ids() if c not in test_cases], list(test_cases))
    return workspace


def test_workspace_holds_only_the_pool_and_leaves_the_read_only_dataset_alone(dataset: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    os.chmod(dataset, stat.S_IRUSR | stat.S_IXUSR)
    try:
        workspace = _prepared(dataset, tmp_path / "out")
    finally:
        os.chmod(dataset, stat.S_IRWXU)
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before
    assert workspace.dataset_id == 977 and workspace.dataset_name == "Dataset977_Toy"
    assert len(workspace.case_ids()) == 8
    assert workspace.foreground_labels() == {1: "organ", 2: "cavity"}
    raw = workspace.raw_dataset_dir
    # A real folder of per-file links to the 6 pool cases; the 2 test cases are not in it.
    assert raw.is_dir() and not raw.is_symlink()
    images, labels = sorted((raw / "imagesTr").iterdir()), sorted((raw / "labelsTr").iterdir())
    assert [p.name for p in labels] == [f"{c}.nii.gz" for c in workspace.case_ids() if c not in TEST_CASES]
    assert len(images) == 6 and all(p.name.endswith("_0000.nii.gz") for p in images)
    assert all(p.is_symlink() and p.resolve().parent.parent == dataset.resolve() for p in images + labels)
    assert not any(case in p.name for case in TEST_CASES for p in images + labels)
    dataset_json = json.loads((raw / "dataset.json").read_text())
    assert dataset_json["numTraining"] == 6
    assert {k: v for k, v in dataset_json.items() if k != "numTraining"} == \
        {k: v for k, v in json.loads((dataset / "dataset.json").read_text()).items() if k != "numTraining"}
    record = json.loads(workspace.split_record.read_text())
    assert record["test_cases"] == list(TEST_CASES) and len(record["pool_cases"]) == 6
    env = workspace.nnunet_env("cpu")
    assert env["nnUNet_preprocessed"] == str(workspace.preprocessed_root)
    assert trainer_dir() in env["nnUNet_extTrainer"]
    # Same dataset and split again: fine. Another dataset into the same OUT_DIR: refused.
    _prepared(dataset, tmp_path / "out")
    other = make_synthetic_dataset(tmp_path / "data", num_subjects=4, image_size=(24, 24), dataset_name="Dataset978_Other")
    with pytest.raises(SetupError, match="already holds"):
        _prepared(other, tmp_path / "out")


def test_every_channel_of_a_pool_case_is_linked(tmp_path: Path) -> None:
    source = make_synthetic_dataset(tmp_path / "data", num_subjects=2, image_size=(24, 24), num_channels=2,
                                    dataset_name="Dataset976_TwoChannels")
    workspace = _prepared(source, tmp_path / "out", test_cases=("subj001_a", "subj001_b"))
    names = sorted(p.name for p in (workspace.raw_dataset_dir / "imagesTr").iterdir())
    assert names == ["subj000_a_0000.nii.gz", "subj000_a_0001.nii.gz", "subj000_b_0000.nii.gz", "subj000_b_0001.nii.gz"]
    assert [str(p) for p in workspace.image_files("subj001_a")] == \
        [str(source.resolve() / "imagesTr" / f"subj001_a_{c:04d}.nii.gz") for c in (0, 1)]


def test_rerun_with_another_test_set_is_refused(dataset: Path, tmp_path: Path) -> None:
    _prepared(dataset, tmp_path / "out")
    with pytest.raises(SetupError, match="OUT_DIR was prepared with another test set; use a new --out"):
        _prepared(dataset, tmp_path / "out", test_cases=("subj000_a", "subj000_b"))
    assert json.loads((tmp_path / "out" / "test_set.json").read_text())["test_cases"] == list(TEST_CASES)


def test_out_dir_of_the_old_protocol_is_refused(dataset: Path, tmp_path: Path) -> None:
    # Earlier versions linked the whole dataset, test set included, into nnUNet_raw and planned on it.
    workspace = open_workspace(dataset, tmp_path / "out")
    workspace.raw_root.mkdir(parents=True)
    workspace.raw_dataset_dir.symlink_to(dataset, target_is_directory=True)
    with pytest.raises(SetupError, match="earlier nnsam version"):
        _prepared(dataset, tmp_path / "out")


def test_folder_without_dataset_id_gets_a_fallback_name(tmp_path: Path) -> None:
    source = make_synthetic_dataset(tmp_path, num_subjects=4, image_size=(24, 24), dataset_name="my data_v2")
    workspace = open_workspace(source, tmp_path / "out")
    assert workspace.dataset_name == "Dataset991_mydatav2" and workspace.dataset_id == 991


def test_fold_numbers_are_stable_and_foreign_splits_are_backed_up(dataset: Path, tmp_path: Path) -> None:
    workspace = _prepared(dataset, tmp_path / "out")
    splits_file = workspace.preprocessed_dataset_dir / "splits_final.json"
    splits_file.parent.mkdir(parents=True)
    splits_file.write_text(json.dumps([{"train": ["x"], "val": ["y"]}]))  # e.g. nnU-Net's own 5-fold split
    first = assign_folds(workspace, {(2, 0): ["a", "b"], (4, 0): ["a", "b", "c", "d"]})
    assert first == {(2, 0): 0, (4, 0): 1}
    assert len(list(splits_file.parent.glob("splits_final.json.backup-*"))) == 1
    # A rerun adding a seed appends a fold and leaves the others' numbers alone; our own file is not backed up.
    second = assign_folds(workspace, {(4, 0): ["a", "b", "c", "d"], (2, 1): ["e", "f"]})
    assert second == {(4, 0): 1, (2, 1): 2}
    assert len(list(splits_file.parent.glob("splits_final.json.backup-*"))) == 1
    splits = json.loads(splits_file.read_text())
    assert splits[2] == {"train": ["e", "f"], "val": ["e", "f"]}  # nnU-Net validates on the training cases
    assert json.loads((workspace.out_dir / "folds.json").read_text())["folds"][0]["n"] == 2


def test_failed_run_does_not_stop_others_and_rerun_skips_finished(dataset: Path, tmp_path: Path) -> None:
    workspace = _prepared(dataset, tmp_path / "out")
    specs = [_spec("Good", 2), _spec("Broken", 2), _spec("Good", 4)]
    calls: list[str] = []

    def fake_train(spec: RunSpec, ws: Workspace, log_path: Path) -> int:
        calls.append(spec.name)
        log_path.write_text("training log")
        return 1 if spec.trainer == "Broken" else 0

    outcomes = run_all(specs, workspace, train_fn=fake_train, evaluate_fn=_fake_evaluate)
    assert [o.status for o in outcomes] == ["done", "failed", "done"]
    assert outcomes[1].log_path.read_text() == "training log"
    assert (workspace.run_dir(specs[1]) / "failed.json").is_file()

    calls.clear()
    outcomes = run_all(specs, workspace, train_fn=fake_train, evaluate_fn=_fake_evaluate)
    assert calls == ["Broken N=2 seed=0"]  # finished runs skipped, the failed one retried
    assert [o.status for o in outcomes] == ["skipped", "failed", "skipped"]
    assert outcomes[0].rows == _fake_evaluate(specs[0], workspace)

    # A different budget is a different experiment: retrain.
    calls.clear()
    run_all([_spec("Good", 2, TrainingBudget(device="cpu", epochs=5))], workspace, fake_train, _fake_evaluate)
    assert calls == ["Good N=2 seed=0"]


def test_an_unreadable_done_record_retrains_the_run_instead_of_stopping_the_study(dataset: Path,
                                                                                 tmp_path: Path) -> None:
    workspace = _prepared(dataset, tmp_path / "out")
    specs = [_spec("A", 2), _spec("A", 4)]
    calls: list[str] = []

    def fake_train(spec: RunSpec, ws: Workspace, log_path: Path) -> int:
        calls.append(spec.name)
        return 0

    run_all(specs, workspace, fake_train, _fake_evaluate)
    done_file = workspace.run_dir(specs[0]) / "done.json"
    done_file.write_text(done_file.read_text()[:40])  # cut mid-write, e.g. by a full disk

    calls.clear()
    outcomes = run_all(specs, workspace, fake_train, _fake_evaluate)
    assert calls == ["A N=2 seed=0"]
    assert [o.status for o in outcomes] == ["done", "skipped"]
    assert json.loads(done_file.read_text())["spec"] == specs[0].as_json()


def test_a_study_run_in_steps_reports_every_finished_run_of_its_protocol(dataset: Path, tmp_path: Path) -> None:
    workspace = _prepared(dataset, tmp_path / "out")
    first_step = [_spec("A", 2), _spec("B", 2)]
    run_all(first_step, workspace, lambda s, w, log: 0, _fake_evaluate)
    run_all([_spec("A", 3, test_cases=("other",))], workspace, lambda s, w, log: 0, _fake_evaluate)
    run_all([_spec("A", 5, TrainingBudget(device="cpu", epochs=9))], workspace, lambda s, w, log: 0, _fake_evaluate)
    (workspace.runs_dir / "A" / "n007_seed0").mkdir()
    (workspace.runs_dir / "A" / "n007_seed0" / "done.json").write_text("{not json")

    second_step = [_spec("A", 4), _spec("B", 2)]  # B N=2 is planned again: reported from this step, not twice
    earlier = earlier_runs(workspace, second_step)
    assert [o.spec.name for o in earlier] == ["A N=2 seed=0"]  # other test set, other budget, broken marker: not
    assert earlier[0].rows == _fake_evaluate(first_step[0], workspace)
    assert earlier_runs(workspace, []) == []


def test_evaluation_error_counts_as_failure(dataset: Path, tmp_path: Path) -> None:
    workspace = _prepared(dataset, tmp_path / "out")

    def no_predictions(spec: RunSpec, ws: Workspace) -> list[dict]:
        raise FileNotFoundError("Missing test prediction t1")

    outcomes = run_all([_spec("Good", 2)], workspace, lambda s, w, log: 0, no_predictions)
    assert outcomes[0].status == "failed" and "Missing test prediction" in outcomes[0].message


def test_scored_predictions_come_from_the_test_prediction_folder(dataset: Path, tmp_path: Path) -> None:
    workspace = _prepared(dataset, tmp_path / "out")
    spec = _spec("Good", 2, test_cases=TEST_CASES)
    # Perfect predictions in the run's test-prediction folder; empty ones where nnU-Net's validation would write.
    predictions, validation = workspace.test_prediction_dir(spec), workspace.fold_dir(spec.trainer, spec.fold) / "validation"
    for folder in (predictions, validation):
        folder.mkdir(parents=True)
    for case in TEST_CASES:
        shutil.copy(workspace.label_file(case), predictions / f"{case}.nii.gz")
        empty = sitk.Image(sitk.ReadImage(str(workspace.label_file(case))))
        sitk.WriteImage(empty * 0, str(validation / f"{case}.nii.gz"))
    rows = evaluate_run(spec, workspace)
    assert len(rows) == len(TEST_CASES) * 2
    assert all(r["dice"] == 1.0 and r["hd95_mm"] == 0.0 and not r["distance_penalised"] for r in rows)
    shutil.rmtree(predictions)
    with pytest.raises(FileNotFoundError, match="test_predictions"):
        evaluate_run(spec, workspace)


def test_a_run_keeps_final_weights_and_test_predictions_only(dataset: Path, tmp_path: Path) -> None:
    workspace = _prepared(dataset, tmp_path / "out")

    def train_like_nnunet(spec: RunSpec, ws: Workspace, log_path: Path) -> int:
        fold_dir = ws.fold_dir(spec.trainer, spec.fold)
        (fold_dir / "validation").mkdir(parents=True)
        (fold_dir / "validation" / "t1.nii.gz").write_text("prediction chosen by nobody")
        for name in ("checkpoint_best.pth", "checkpoint_final.pth", "training_log.txt"):
            (fold_dir / name).write_text(name)
        ws.test_prediction_dir(spec).mkdir(parents=True)
        (ws.test_prediction_dir(spec) / "t1.nii.gz").write_text("test prediction")
        log_path.write_text("log")
        return 0 if spec.trainer == "Good" else 1

    specs = [_spec("Good", 2), _spec("Broken", 2)]
    outcomes = run_all(specs, workspace, train_like_nnunet, _fake_evaluate)
    assert [o.status for o in outcomes] == ["done", "failed"]
    for spec in specs:  # also after a failed run: what is left must not be mistaken for a result
        fold_dir = workspace.fold_dir(spec.trainer, spec.fold)
        assert sorted(p.name for p in fold_dir.iterdir()) == ["checkpoint_final.pth", "training_log.txt"]
        assert (workspace.test_prediction_dir(spec) / "t1.nii.gz").is_file()
        assert (workspace.run_dir(spec) / "train.log").is_file()
    assert (workspace.run_dir(specs[0]) / "done.json").is_file()


def test_training_subprocess_predicts_raw_test_images_into_the_run_folder(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    workspace = _prepared(dataset, tmp_path / "out")
    spec = _spec("Good", 2, test_cases=TEST_CASES)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(command) or subprocess.CompletedProcess(command, 0))
    workspace.run_dir(spec).mkdir(parents=True)
    assert train_in_subprocess(spec, workspace, workspace.run_dir(spec) / "train.log") == 0
    command = calls[0]
    assert command[command.index("--source") + 1] == str(dataset.resolve())  # raw test images: the source, not nnUNet_raw
    assert command[command.index("--predictions-dir") + 1] == str(workspace.test_prediction_dir(spec))
    assert command[command.index("--test-cases") + 1:][:2] == list(TEST_CASES)


def test_a_run_cut_short_resumes_from_its_last_checkpoint(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    workspace = _prepared(dataset, tmp_path / "out")
    spec = _spec("Good", 2, test_cases=TEST_CASES)
    seen: list[tuple[bool, bool]] = []

    def cut_short(s: RunSpec, ws: Workspace, log_path: Path) -> int:
        fold_dir = ws.fold_dir(s.trainer, s.fold)
        seen.append(((fold_dir / "checkpoint_latest.pth").is_file(), ws.test_prediction_dir(s).exists()))
        fold_dir.mkdir(parents=True, exist_ok=True)
        (fold_dir / "checkpoint_latest.pth").write_text("epoch 7")
        ws.test_prediction_dir(s).mkdir(parents=True, exist_ok=True)
        (ws.test_prediction_dir(s) / "t1.nii.gz").write_text("half-written")
        return 1  # as if the process had been killed mid-run

    run_all([spec], workspace, cut_short, _fake_evaluate)
    run_all([spec], workspace, cut_short, _fake_evaluate)
    # The rerun kept the checkpoint, never the predictions of the cut attempt.
    assert seen == [(False, False), (True, False)]

    # The training subprocess continues from it, appending to the run's log.
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(command) or subprocess.CompletedProcess(command, 0))
    log_path = workspace.run_dir(spec) / "train.log"
    log_path.write_text("first attempt\n")
    train_in_subprocess(spec, workspace, log_path)
    assert "--resume" in calls[0] and log_path.read_text().startswith("first attempt")
    monkeypatch.undo()

    # Other settings are another run: it starts from scratch.
    seen.clear()
    run_all([_spec("Good", 2, TrainingBudget(device="cpu", epochs=9), test_cases=TEST_CASES)], workspace, cut_short,
            _fake_evaluate)
    assert seen == [(False, False)]


def test_a_resumed_run_records_the_time_of_its_earlier_attempts(dataset: Path, tmp_path: Path) -> None:
    workspace = _prepared(dataset, tmp_path / "out")
    spec = _spec("Good", 2, test_cases=TEST_CASES)

    def cut_after_a_checkpoint(s: RunSpec, ws: Workspace, log_path: Path) -> int:
        fold_dir = ws.fold_dir(s.trainer, s.fold)
        fold_dir.mkdir(parents=True, exist_ok=True)
        (fold_dir / "checkpoint_latest.pth").write_text("epoch 7")
        return 1

    run_all([spec], workspace, cut_after_a_checkpoint, _fake_evaluate)
    started_file = workspace.run_dir(spec) / "started.json"
    record = json.loads(started_file.read_text())
    checkpoint = workspace.fold_dir(spec.trainer, spec.fold) / "checkpoint_latest.pth"
    # As if the cut attempt had started 600 s before writing its last checkpoint.
    started_file.write_text(json.dumps({**record, "started_at": checkpoint.stat().st_mtime - 600.0}))
    (outcome,) = run_all([spec], workspace, lambda s, ws, log: 0, _fake_evaluate)
    done = json.loads((workspace.run_dir(spec) / "done.json").read_text())
    assert outcome.status == "done" and 600.0 <= done["seconds"] < 660.0 and outcome.seconds == done["seconds"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_demo_defaults_plan_a_small_synthetic_experiment(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    plan = command.plan_experiment(_parse(["--out", str(tmp_path / "demo"), "--device", "cpu"]))
    assert "SYNTHETIC" in capsys.readouterr().out
    assert plan.synthetic and plan.ns == command.DEMO_N and plan.trainers == command.DEFAULT_TRAINERS
    assert len(plan.specs) == len(command.DEMO_N) * len(command.DEFAULT_TRAINERS)
    budget = plan.specs[0].budget
    assert (budget.epochs, budget.iters_per_epoch, budget.val_iters, budget.batch_size) == tuple(
        command.DEMO_BUDGET[k] for k in ("epochs", "iters_per_epoch", "val_iters", "batch_size"))
    # The demo must learn the synthetic data (README promises it): more than a token budget, from the cache.
    assert budget.epochs * budget.iters_per_epoch >= 100
    import nnsam.trainers
    assert any(getattr(getattr(nnsam.trainers, t, None), "cache_embeddings", False) for t in plan.trainers)
    assert budget.disable_tta  # demo on CPU
    assert len(plan.specs[0].test_cases) == 4
    # Both trainers of one (N, seed) share the fold and thus the cases.
    assert plan.specs[0].fold == plan.specs[1].fold and plan.specs[0].train_cases == plan.specs[1].train_cases
    # The synthetic data is a source like any other, outside nnU-Net's raw folder, which holds the pool only.
    workspace = plan.workspace
    assert workspace.source_dir == (tmp_path / "demo" / "synthetic_data" / SYNTHETIC_DATASET_NAME).resolve()
    assert len(list((workspace.source_dir / "labelsTr").iterdir())) == 2 * command.DEMO_SUBJECTS
    pool_labels = [p.name for p in (workspace.raw_dataset_dir / "labelsTr").iterdir()]
    assert len(pool_labels) == 2 * command.DEMO_SUBJECTS - 4
    assert not any(name.startswith(case) for case in plan.specs[0].test_cases for name in pool_labels)


def test_no_test_case_is_in_any_nnunet_train_or_val_list(dataset: Path, tmp_path: Path) -> None:
    plan = command.plan_experiment(_parse([str(dataset), "--out", str(tmp_path / "o"), "--n", "2", "4", "6",
                                           "--seeds", "0", "1", "--device", "cpu", "--trainers", "nnUNetTrainer"]))
    test_cases = set(plan.specs[0].test_cases)
    splits = json.loads((plan.workspace.preprocessed_dataset_dir / "splits_final.json").read_text())
    assert len(splits) == 6 and test_cases
    for spec in plan.specs:
        fold = splits[spec.fold]
        assert not test_cases & (set(fold["train"]) | set(fold["val"]))
        # nnU-Net's validation list is the fold's own training cases: nothing held out is looked at.
        assert fold["val"] == fold["train"] == list(spec.train_cases)


def test_real_dataset_keeps_nnunet_defaults_and_rejects_too_large_n(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    plan = command.plan_experiment(_parse([str(dataset), "--out", str(tmp_path / "o"), "--n", "2", "--device", "cpu"]))
    budget = plan.specs[0].budget
    assert (budget.epochs, budget.batch_size, budget.disable_tta) == (None, None, False)
    assert command.run(_parse([str(dataset), "--out", str(tmp_path / "o2"), "--n", "20", "--device", "cpu"])) == 2
    assert "maximum N is 6" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # refused before anything was written
