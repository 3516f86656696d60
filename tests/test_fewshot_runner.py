import argparse
import json
import os
import stat
from pathlib import Path

import pytest

from nnsam.data.synthetic import make_synthetic_dataset
from nnsam.fewshot import command
from nnsam.fewshot.runner import (
    RunSpec,
    TrainingBudget,
    Workspace,
    assign_folds,
    prepare_workspace,
    run_all,
)
from nnsam.plugin import trainer_dir

BUDGET = TrainingBudget(device="cpu", epochs=1, iters_per_epoch=2, val_iters=1, batch_size=2, disable_tta=True)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    return make_synthetic_dataset(tmp_path / "data", num_subjects=4, image_size=(24, 24), dataset_name="Dataset977_Toy")


def _spec(trainer: str, n: int, budget: TrainingBudget = BUDGET) -> RunSpec:
    return RunSpec(trainer=trainer, n=n, seed=0, fold=n, train_cases=tuple(f"c{i}" for i in range(n)),
                   test_cases=("t1",), budget=budget)


def _fake_evaluate(spec: RunSpec, workspace: Workspace) -> list[dict]:
    return [{"trainer": spec.trainer, "n": spec.n, "seed": spec.seed, "case": "t1", "class": 1,
             "class_name": "organ", "dice": 0.5, "iou": 0.3, "hd95_mm": 1.0, "asd_mm": 0.5}]


def test_workspace_links_read_only_dataset_without_writing_into_it(dataset: Path, tmp_path: Path) -> None:
    os.chmod(dataset, stat.S_IRUSR | stat.S_IXUSR)
    try:
        workspace = prepare_workspace(dataset, tmp_path / "out")
    finally:
        os.chmod(dataset, stat.S_IRWXU)
    assert workspace.dataset_id == 977 and workspace.dataset_name == "Dataset977_Toy"
    assert workspace.raw_dataset_dir.is_symlink() and workspace.raw_dataset_dir.resolve() == dataset.resolve()
    assert len(workspace.case_ids()) == 8
    assert workspace.foreground_labels() == {1: "organ", 2: "cavity"}
    env = workspace.nnunet_env("cpu")
    assert env["nnUNet_preprocessed"] == str(workspace.preprocessed_root)
    assert trainer_dir() in env["nnUNet_extTrainer"]
    # Same dataset again: fine. Another dataset into the same OUT_DIR: refused.
    prepare_workspace(dataset, tmp_path / "out")
    other = make_synthetic_dataset(tmp_path / "data", num_subjects=4, image_size=(24, 24), dataset_name="Dataset978_Other")
    with pytest.raises(RuntimeError, match="already holds"):
        prepare_workspace(other, tmp_path / "out")


def test_folder_without_dataset_id_gets_a_fallback_name(tmp_path: Path) -> None:
    source = make_synthetic_dataset(tmp_path, num_subjects=4, image_size=(24, 24), dataset_name="my data_v2")
    workspace = prepare_workspace(source, tmp_path / "out")
    assert workspace.dataset_name == "Dataset991_mydatav2" and workspace.dataset_id == 991


def test_fold_numbers_are_stable_and_foreign_splits_are_backed_up(dataset: Path, tmp_path: Path) -> None:
    workspace = prepare_workspace(dataset, tmp_path / "out")
    splits_file = workspace.preprocessed_dataset_dir / "splits_final.json"
    splits_file.parent.mkdir(parents=True)
    splits_file.write_text(json.dumps([{"train": ["x"], "val": ["y"]}]))  # e.g. nnU-Net's own 5-fold split
    first = assign_folds(workspace, {(2, 0): ["a", "b"], (4, 0): ["a", "b", "c", "d"]}, ["t"])
    assert first == {(2, 0): 0, (4, 0): 1}
    assert len(list(splits_file.parent.glob("splits_final.json.backup-*"))) == 1
    # A rerun adding a seed appends a fold and leaves the others' numbers alone; our own file is not backed up.
    second = assign_folds(workspace, {(4, 0): ["a", "b", "c", "d"], (2, 1): ["e", "f"]}, ["t"])
    assert second == {(4, 0): 1, (2, 1): 2}
    assert len(list(splits_file.parent.glob("splits_final.json.backup-*"))) == 1
    splits = json.loads(splits_file.read_text())
    assert splits[2] == {"train": ["e", "f"], "val": ["t"]}
    assert json.loads((workspace.out_dir / "folds.json").read_text())["folds"][0]["n"] == 2


def test_failed_run_does_not_stop_others_and_rerun_skips_finished(dataset: Path, tmp_path: Path) -> None:
    workspace = prepare_workspace(dataset, tmp_path / "out")
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


def test_evaluation_error_counts_as_failure(dataset: Path, tmp_path: Path) -> None:
    workspace = prepare_workspace(dataset, tmp_path / "out")

    def no_predictions(spec: RunSpec, ws: Workspace) -> list[dict]:
        raise FileNotFoundError("Missing test prediction t1")

    outcomes = run_all([_spec("Good", 2)], workspace, lambda s, w, log: 0, no_predictions)
    assert outcomes[0].status == "failed" and "Missing test prediction" in outcomes[0].message


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
    assert (budget.epochs, budget.iters_per_epoch, budget.val_iters, budget.batch_size) == (2, 12, 1, 2)
    assert budget.disable_tta  # demo on CPU
    assert len(plan.specs[0].test_cases) == 4
    # Both trainers of one (N, seed) share the fold and thus the cases.
    assert plan.specs[0].fold == plan.specs[1].fold and plan.specs[0].train_cases == plan.specs[1].train_cases


def test_real_dataset_keeps_nnunet_defaults_and_rejects_too_large_n(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    plan = command.plan_experiment(_parse([str(dataset), "--out", str(tmp_path / "o"), "--n", "2", "--device", "cpu"]))
    budget = plan.specs[0].budget
    assert (budget.epochs, budget.batch_size, budget.disable_tta) == (None, None, False)
    assert command.run(_parse([str(dataset), "--out", str(tmp_path / "o"), "--n", "20", "--device", "cpu"])) == 2
    assert "maximum N is 6" in capsys.readouterr().err
