"""`nnsam fewshot-report`: a study's report rebuilt from its records, without the dataset or any training."""
import json
from pathlib import Path

import pandas as pd
import pytest

from nnsam.cli import main
from nnsam.fewshot.runner import RunSpec, TrainingBudget

TEST_CASES = ("t1", "t2")
BUDGET = TrainingBudget(device="cpu", epochs=2, iters_per_epoch=3, val_iters=1, batch_size=2, disable_tta=True)


def _record(folder: Path, trainer: str, n: int, seed: int, dice: tuple[float, float],
            budget: TrainingBudget = BUDGET) -> None:
    spec = RunSpec(trainer=trainer, n=n, seed=seed, fold=seed, train_cases=tuple(f"p{i}" for i in range(n)),
                   test_cases=TEST_CASES, budget=budget)
    rows = [{"trainer": trainer, "n": n, "seed": seed, "fold": seed, "case": case, "class": 1, "class_name": "organ",
             "dice": d, "iou": d, "hd95_mm": 2.0, "asd_mm": 1.0, "distance_penalised": False}
            for case, d in zip(TEST_CASES, dice)]
    run_dir = folder / "runs" / trainer / f"n{n:03d}_seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "done.json").write_text(json.dumps({"spec": spec.as_json(), "seconds": 60.0, "rows": rows}))


@pytest.fixture
def records(tmp_path: Path) -> Path:
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "test_set.json").write_text(json.dumps(
        {"source": "/data/Dataset990_Toy", "dataset": "Dataset990_Toy", "test_cases": list(TEST_CASES),
         "pool_cases": ["p0", "p1", "p2", "p3"]}))
    for seed, shift in ((0, 0.0), (1, 0.2)):
        _record(folder, "nnUNetTrainer", 2, seed, (0.5 + shift, 0.6 + shift))
        _record(folder, "nnSAMTrainer", 2, seed, (0.6 + shift, 0.8 + shift))  # +0.15 on both draws
    _record(folder, "nnUNetTrainer", 4, 0, (0.7, 0.8))
    (folder / "runs" / "nnSAMTrainer" / "n004_seed0").mkdir()
    (folder / "runs" / "nnSAMTrainer" / "n004_seed0" / "done.json").write_text("{}")  # not a record: left out
    return folder


def test_report_from_records_has_tables_plot_and_paired_comparison(records: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["fewshot-report", str(records), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = (out / "summary.md").read_text()
    assert (out / "fewshot.png").stat().st_size > 1000
    assert len(pd.read_csv(out / "results.csv")) == 5 * len(TEST_CASES)  # five readable records, one class
    assert "Dataset990_Toy" in summary and "Rebuilt by `nnsam fewshot-report` from the records of 5" in summary
    assert "epochs 2, iterations/epoch 3" in summary and "Seeds: 0 1" in summary
    assert "| N | nnUNetTrainer | nnSAMTrainer |" in summary  # nnU-Net first: the baseline
    paired = "| 2 | nnSAMTrainer | seed 0: +0.150 ± 0.071 (2/2); seed 1: +0.150 ± 0.071 (2/2) | +0.150 |"
    assert paired in summary and paired in printed
    assert "| 2 | nnSAMTrainer | " in summary and "0.200 / 0.200 | no |" in summary  # the draw moves both by 0.2
    assert f"Plot:     {out / 'fewshot.png'}" in printed and f"Paired:   {out / 'paired.png'}" in printed
    assert (out / "paired.png").stat().st_size > 1000
    # One row per run, with the wall time its record holds (60 s).
    assert "| nnSAMTrainer | 2 | 1 | 1 | 0.900 ± 0.141 | 2.0 | 1.0 | 0/2 |" in summary.split("## Per run")[1]


def test_trainers_option_picks_and_orders_the_columns(records: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["fewshot-report", str(records), "--out", str(out), "--trainers", "nnSAMTrainer", "nnUNetTrainer"]) == 0
    summary = (out / "summary.md").read_text()
    assert "| N | nnSAMTrainer | nnUNetTrainer |" in summary
    assert main(["fewshot-report", str(records), "--out", str(out), "--trainers", "nnUNetTrainer"]) == 0
    assert not (out / "paired.png").exists()  # one trainer: the earlier report's paired plot is gone
    assert "| 2 | nnUNetTrainer | seed 0: −0.150" in summary  # paired against the first one named


def test_mixed_protocols_unknown_trainers_and_foreign_folders_are_refused(records: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["fewshot-report", str(records), "--out", str(out), "--trainers", "nnUNetTrainer", "Nope"]) == 2
    assert "--trainers Nope: no finished run" in capsys.readouterr().err
    assert main(["fewshot-report", str(tmp_path), "--out", str(out)]) == 2
    assert "has no test_set.json" in capsys.readouterr().err
    longer = TrainingBudget(**{**BUDGET.__dict__, "epochs": 40})
    _record(records, "nnUNetTrainer", 8, 0, (0.9, 0.9), budget=longer)
    assert main(["fewshot-report", str(records), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "do not share one test set and budget" in error and "nnUNetTrainer N=8 seed=0" in error
    assert not out.exists()  # nothing written for a refused report


COMMITTED_RECORDS = Path(__file__).resolve().parents[1] / "docs" / "fewshot_records"


@pytest.mark.parametrize("study", sorted(p.name for p in COMMITTED_RECORDS.iterdir() if p.is_dir()))
def test_every_committed_study_still_redraws(study: str, tmp_path: Path) -> None:
    """docs/ cite `nnsam fewshot-report docs/fewshot_records/STUDY` for each study: a change of the record format
    must keep the committed records readable, every run of them in the report."""
    folder = COMMITTED_RECORDS / study
    assert main(["fewshot-report", str(folder), "--out", str(tmp_path / "report")]) == 0
    recorded = {tuple(json.loads(done.read_text())["spec"][key] for key in ("trainer", "n", "seed"))
                for done in folder.glob("runs/*/*/done.json")}
    results = pd.read_csv(tmp_path / "report" / "results.csv")
    assert set(results[["trainer", "n", "seed"]].itertuples(index=False, name=None)) == recorded
    assert (tmp_path / "report" / "fewshot.png").is_file()
