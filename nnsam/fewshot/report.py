"""Turn per-case metric rows into results.csv, summary.md, fewshot.png, paired.png and overlay images.

Aggregation: for each (trainer, N, seed, case) the classes are averaged first, then mean ± sd is taken over all test
cases of all seeds. So the spread shows case-to-case and seed-to-seed variation together, as in the error bars of a
few-shot curve. Distances of a structure found in only one of prediction and reference are the image-diagonal
penalty (see ``nnsam.fewshot.metrics``); they stay in the means, and the tables say how many values were penalised.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import SimpleITK as sitk  # noqa: E402

RESULT_COLUMNS = ["trainer", "n", "seed", "case", "class", "class_name", "dice", "iou", "hd95_mm", "asd_mm",
                  "distance_penalised"]
TABLE_METRICS = (("dice", "Dice", True), ("asd_mm", "ASD (mm)", False), ("hd95_mm", "HD95 (mm)", False))
DISTANCE_METRICS = {"asd_mm", "hd95_mm"}
METRIC_BOUNDS = {"dice": (0.0, 1.0), **{metric: (0.0, math.inf) for metric in DISTANCE_METRICS}}
METRIC_CONVENTIONS = (
    "Conventions: Dice/IoU on each foreground class; HD95 and ASD (average symmetric surface distance) in mm from "
    "the image spacing. Both masks empty: Dice 1, distances 0. A structure in only one of prediction and reference "
    "(missed, or predicted where there is none): Dice 0 and both distances = the image diagonal in mm, as "
    "segmentation challenges score it; these values stay in the means and are counted as 'penalised' (column "
    "distance_penalised of results.csv). Pixels with nnU-Net's ignore label in the reference are left out of "
    "every metric."
)


def results_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as a DataFrame with the results.csv columns, sorted for stable output."""
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    frame["distance_penalised"] = frame["distance_penalised"].astype(int)
    return frame.sort_values(["trainer", "n", "seed", "case", "class"], kind="stable").reset_index(drop=True)


def write_results_csv(rows: list[dict], path: Path) -> Path:
    """One row per (trainer, n, seed, case, class); ``distance_penalised`` is 0 or 1."""
    results_frame(rows).to_csv(path, index=False, float_format="%.6g")
    return path


def case_level(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (trainer, n, seed, case): metrics averaged over the foreground classes."""
    metrics = [m for m, _, _ in TABLE_METRICS]
    return frame.groupby(["trainer", "n", "seed", "case"], as_index=False)[metrics].mean()


def _cell(values: pd.Series, digits: int) -> tuple[str, float]:
    if values.empty:
        return "—", math.nan
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {sd:.{digits}f}", float(values.mean())


def _table(
    frame: pd.DataFrame,
    metric: str,
    higher_is_better: bool,
    trainers: list[str],
    ns: list[int],
    digits: int,
    per_class: pd.DataFrame,
) -> list[str]:
    """Markdown rows N x columns trainers; the best mean (at the shown precision) of each row is bold.

    ``per_class`` holds the per-class rows behind ``frame`` (the same frame for a per-class table); for a distance
    metric it gives the count of penalised class values, shown in the cell.
    """
    lines = ["| N | " + " | ".join(trainers) + " |", "|---|" + "---|" * len(trainers)]
    for n in ns:
        cells = []
        for trainer in trainers:
            text, mean = _cell(frame.loc[(frame["trainer"] == trainer) & (frame["n"] == n), metric], digits)
            penalised = per_class.loc[(per_class["trainer"] == trainer) & (per_class["n"] == n), "distance_penalised"]
            if metric in DISTANCE_METRICS and penalised.any():
                text += f" ({int(penalised.sum())}/{len(penalised)} penalised)"
            cells.append((text, round(mean, digits)))
        means = [m for _, m in cells if not math.isnan(m)]
        best = (max(means) if higher_is_better else min(means)) if len(set(means)) > 1 else None
        texts = [f"**{t}**" if best is not None and m == best else t for t, m in cells]
        lines.append(f"| {n} | " + " | ".join(texts) + " |")
    return lines


def _digits(metric: str) -> int:
    return 3 if metric == "dice" else 2


def overall_table(frame: pd.DataFrame, metric: str, higher_is_better: bool, trainers: list[str], ns: list[int]) -> list[str]:
    """The class-averaged table of one metric (mean ± sd over test cases × seeds), as markdown lines."""
    return _table(case_level(frame), metric, higher_is_better, trainers, ns, _digits(metric), per_class=frame)


def dice_table(rows: list[dict], trainers: list[str], ns: list[int]) -> list[str]:
    """The overall mean Dice table of summary.md, e.g. to print it on the terminal."""
    return overall_table(results_frame(rows), "dice", True, trainers, ns)


def _signed(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}".replace("-", "−")


def paired_dice_table(rows: list[dict], trainers: list[str], ns: list[int]) -> list[str]:
    """Each trainer against the first of ``trainers`` (the baseline), paired per test case, as markdown lines.

    Within one seed every trainer trains on the same N cases from the same initialisation and is scored on the same
    test cases, so the difference per case removes the case-to-case spread that dominates the overall table. Per N
    and trainer: the mean paired Dice difference of each seed (± sd over cases; on how many cases the trainer is
    better), their mean over seeds, and the seed spread of each of the two trainers (max − min of the seeds' mean
    Dice over the paired cases: how far the draw of N cases alone moves a model). The difference counts as *beyond
    the seed spread* when its size is larger than both spreads; with one seed the spread is unknown and nothing is
    claimed.
    """
    per_case = case_level(results_frame(rows))
    baseline = trainers[0]
    header = (f"| N | trainer − {baseline} | per seed: mean ± sd over cases (trainer better on) | mean over seeds | "
              f"seed spread ({baseline} / trainer) | beyond the seed spread? |")
    lines = [header, "|---|---|---|---|---|---|"]
    for n in ns:
        base = per_case[(per_case["trainer"] == baseline) & (per_case["n"] == n)]
        for trainer in trainers[1:]:
            own = per_case[(per_case["trainer"] == trainer) & (per_case["n"] == n)]
            paired = own.merge(base, on=["n", "seed", "case"], suffixes=("", "_base"))
            if paired.empty:
                continue
            paired["delta"] = paired["dice"] - paired["dice_base"]
            per_seed = []
            for seed, group in paired.groupby("seed"):
                sd = group["delta"].std(ddof=1) if len(group) > 1 else 0.0
                better = int((group["delta"] > 0).sum())
                per_seed.append((group["delta"].mean(),
                                 f"seed {seed}: {_signed(group['delta'].mean())} ± {sd:.3f} ({better}/{len(group)})"))
            mean_delta = float(np.mean([mean for mean, _ in per_seed]))
            spreads = [paired.groupby("seed")[column].mean() for column in ("dice_base", "dice")]
            if len(per_seed) < 2:
                spread_text, verdict = "— (one seed)", "— (one seed)"
            else:
                widths = [float(spread.max() - spread.min()) for spread in spreads]
                spread_text = " / ".join(f"{width:.3f}" for width in widths)
                beyond = abs(mean_delta) > max(widths)
                verdict = ("yes, " + ("better" if mean_delta > 0 else "worse")) if beyond else "no"
            lines.append(f"| {n} | {trainer} | {'; '.join(text for _, text in per_seed)} | {_signed(mean_delta)} | "
                         f"{spread_text} | {verdict} |")
    return lines


RunKey = tuple[str, int, int]  # (trainer, N, seed)


def per_run_table(rows: list[dict], trainers: list[str], wall_seconds: dict[RunKey, float | None]) -> list[str]:
    """One markdown row per run (seed, N, trainer order): wall time, Dice (classes averaged per case; mean ± sd over
    cases), each class's mean Dice where there are several, HD95 and ASD (means over cases and classes) and the
    count of penalised class values."""
    frame = results_frame(rows)
    per_case = case_level(frame)
    classes = sorted(frame[["class", "class_name"]].drop_duplicates().itertuples(index=False)) \
        if frame["class"].nunique() > 1 else []
    lines = ["| trainer | N | seed | wall (min) | Dice | " + "".join(f"{name} | " for _, name in classes)
             + "HD95 (mm) | ASD (mm) | penalised |",
             "|---|---|---|---|---|" + "---|" * len(classes) + "---|---|---|"]
    keys = sorted({(r["trainer"], r["n"], r["seed"]) for r in rows},
                  key=lambda k: (k[2], k[1], trainers.index(k[0]) if k[0] in trainers else len(trainers)))
    for trainer, n, seed in keys:
        run_rows = frame[(frame["trainer"] == trainer) & (frame["n"] == n) & (frame["seed"] == seed)]
        run_cases = per_case[(per_case["trainer"] == trainer) & (per_case["n"] == n) & (per_case["seed"] == seed)]
        seconds = wall_seconds.get((trainer, n, seed))
        dice, _ = _cell(run_cases["dice"], 3)
        class_cells = "".join(f"{run_rows.loc[run_rows['class'] == value, 'dice'].mean():.3f} | "
                              for value, _ in classes)
        lines.append(f"| {trainer} | {n} | {seed} | {'—' if seconds is None else f'{seconds / 60:.0f}'} | {dice} | "
                     f"{class_cells}{run_rows['hd95_mm'].mean():.1f} | {run_rows['asd_mm'].mean():.1f} | "
                     f"{int(run_rows['distance_penalised'].sum())}/{len(run_rows)} |")
    return lines


def write_summary_md(
    rows: list[dict],
    path: Path,
    trainers: list[str],
    ns: list[int],
    header_lines: list[str],
    failed_runs: list[str],
    wall_seconds: dict[RunKey, float | None] | None = None,
) -> Path:
    """Paper-style tables (rows N, columns trainers) for Dice, ASD and HD95, overall and per class, and the Dice of
    each trainer paired per case against the first one (see ``paired_dice_table``), and one row per run
    (``per_run_table``; ``wall_seconds`` gives the runs' wall times where known).

    The best mean of each row is bold. ``header_lines`` describe the experiment (dataset, protocol, budget, test
    set).
    """
    frame = results_frame(rows)
    lines = ["# nnsam few-shot results", "", *header_lines, ""]
    if failed_runs:
        lines += ["**Failed runs (missing from the tables):** " + "; ".join(failed_runs), ""]
    for metric, title, higher in TABLE_METRICS:
        lines += [f"## {title}, mean ± sd over test cases × seeds (classes averaged per case)", ""]
        lines += overall_table(frame, metric, higher, trainers, ns) + [""]
        if metric == "dice" and len(trainers) > 1:
            lines += [f"## Dice, paired per test case against {trainers[0]} (same seed: same training cases)", ""]
            lines += paired_dice_table(rows, trainers, ns) + [""]
    if rows:
        lines += ["## Per run", ""]
        lines += per_run_table(rows, trainers, wall_seconds or {}) + [""]
        lines += ["Wall time: the run's time from its record; an attempt that was cut (machine or session ended) "
                  "counts up to its last checkpoint. Records written before nnsam kept the attempts' start times "
                  "(2026-12-04) count a resumed run from its resumption only.", ""]
    if frame["class"].nunique() > 1:
        for (value, name), class_frame in frame.groupby(["class", "class_name"]):
            for metric, title, higher in TABLE_METRICS:
                lines += [f"### Class {value} ({name}): {title}", ""]
                lines += _table(class_frame, metric, higher, trainers, ns, _digits(metric), per_class=class_frame) + [""]
    lines += [METRIC_CONVENTIONS, ""]
    path.write_text("\n".join(lines))
    return path


def write_report(
    rows: list[dict],
    out_dir: Path,
    trainers: list[str],
    ns: list[int],
    header_lines: list[str],
    failed_runs: list[str],
    wall_seconds: dict[RunKey, float | None] | None = None,
) -> tuple[Path, Path, Path | None, Path | None]:
    """``results.csv``, ``summary.md`` and, when any run finished, ``fewshot.png`` and (with several trainers)
    ``paired.png`` (``plot_paired``) in ``out_dir``; returns their paths, ``None`` for a plot not drawn."""
    results_csv = write_results_csv(rows, out_dir / "results.csv")
    summary = write_summary_md(rows, out_dir / "summary.md", trainers, ns, header_lines, failed_runs, wall_seconds)
    plot = plot_fewshot(rows, out_dir / "fewshot.png", trainers) if rows else None
    paired = out_dir / "paired.png"
    paired.unlink(missing_ok=True)  # never leave the plot of an earlier report with other trainers
    paired = plot_paired(rows, paired, trainers) if rows and len(trainers) > 1 else None
    return results_csv, summary, plot, paired


def terminal_tables(rows: list[dict], trainers: list[str], ns: list[int]) -> str:
    """The mean Dice table and, for several trainers, the paired one, as the commands print them at the end."""
    text = ("Mean Dice on the test set (mean ± sd over test cases × seeds, classes averaged per case):\n"
            + "\n".join(dice_table(rows, trainers, ns)))
    if len(trainers) > 1:
        text += (f"\n\nDice paired per test case against {trainers[0]} (same seed: same training cases):\n"
                 + "\n".join(paired_dice_table(rows, trainers, ns)))
    return text


def _clipped_spread(mean: np.ndarray, sd: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Error-bar lengths below and above ``mean`` for mean ± sd, cut at the metric's range (a Dice bar above 1 or
    a distance bar below 0 would show values no case can have)."""
    low, high = bounds
    return np.stack([mean - np.maximum(mean - sd, low), np.minimum(mean + sd, high) - mean])


def plot_fewshot(rows: list[dict], path: Path, trainers: list[str]) -> Path:
    """Dice and ASD against N, one line per trainer.

    Each point is the mean over test cases × seeds with a bar of ± one sd, cut at the metric's range (Dice in
    [0, 1], distances ≥ 0). Where an N has several seeds, each seed's mean is drawn as an open marker, so the
    draw-to-draw spread shows apart from the case-to-case spread. Trainers are shifted sideways a little so that
    their bars do not hide each other.
    """
    per_case = case_level(results_frame(rows))
    ns = sorted(per_case["n"].unique())
    dodge = 0.015 * (ns[-1] - ns[0]) if len(ns) > 1 else 0.05
    several_seeds = bool((per_case.groupby(["trainer", "n"])["seed"].nunique() > 1).any())
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, (metric, title) in zip(axes, (("dice", "Dice"), ("asd_mm", "ASD (mm)"))):
        for index, trainer in enumerate(trainers):
            own = per_case[per_case["trainer"] == trainer]
            if own.empty:
                continue
            shift = (index - (len(trainers) - 1) / 2) * dodge
            stats = own.groupby("n")[metric].agg(["mean", "std"]).reset_index()
            mean = stats["mean"].to_numpy(dtype=float)
            spread = _clipped_spread(mean, stats["std"].fillna(0.0).to_numpy(dtype=float), METRIC_BOUNDS[metric])
            bars = axis.errorbar(stats["n"] + shift, mean, yerr=spread, marker="o", capsize=3, label=trainer)
            seed_means = own.groupby(["n", "seed"])[metric].mean().reset_index()
            seed_means = seed_means[seed_means.groupby("n")["seed"].transform("size") > 1]
            axis.plot(seed_means["n"] + shift, seed_means[metric], linestyle="none", marker="o", markersize=5,
                      markerfacecolor="none", color=bars.lines[0].get_color())
        axis.set_xticks(ns)
        axis.set_xlabel("N training cases")
        axis.set_ylabel(title)
        axis.set_title(f"{title} vs N (mean ± sd over test cases × seeds)", fontsize=10)
        axis.grid(alpha=0.3)
    if several_seeds:
        axes[0].plot([], [], linestyle="none", marker="o", markerfacecolor="none", color="gray", label="mean of one seed")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


SEED_MARKERS = "osD^v<>"


def plot_paired(rows: list[dict], path: Path, trainers: list[str]) -> Path | None:
    """Each trainer's Dice against the first trainer's, one point per test case and run (classes averaged per case,
    same N and seed on both axes), one panel per compared trainer: points above the diagonal are cases where the
    trainer did better. Colour is N, marker shape the seed. ``None`` (nothing written) for a single trainer or no
    pairs."""
    per_case = case_level(results_frame(rows))
    baseline, others = trainers[0], trainers[1:]
    base = per_case[per_case["trainer"] == baseline]
    pairs = {t: per_case[per_case["trainer"] == t].merge(base, on=["n", "seed", "case"], suffixes=("", "_base"))
             for t in others}
    pairs = {t: frame for t, frame in pairs.items() if not frame.empty}
    if not pairs:
        return None
    ns = sorted(per_case["n"].unique())
    seeds = sorted(per_case["seed"].unique())
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(ns)))
    figure, axes = plt.subplots(1, len(pairs), figsize=(max(5.2, 4.4 * len(pairs)), 4.6), squeeze=False)
    for axis, (trainer, frame) in zip(axes[0], pairs.items()):
        axis.plot([0, 1], [0, 1], color="gray", linewidth=1, zorder=0)
        for n, colour in zip(ns, colours):
            for seed_index, seed in enumerate(seeds):
                points = frame[(frame["n"] == n) & (frame["seed"] == seed)]
                if points.empty:
                    continue
                axis.scatter(points["dice_base"], points["dice"], color=colour, alpha=0.8, s=28,
                             marker=SEED_MARKERS[seed_index % len(SEED_MARKERS)], label=f"N={n}, seed {seed}")
        better = int((frame["dice"] > frame["dice_base"]).sum())
        axis.set_title(f"{trainer}: better on {better} of {len(frame)}", fontsize=9)
        axis.set_xlabel(f"{baseline} Dice")
        axis.set_ylabel(f"{trainer} Dice")
        axis.set_xlim(0, 1.02)
        axis.set_ylim(0, 1.02)
        axis.set_aspect("equal")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    figure.suptitle("Dice per test case (classes averaged), paired by N and seed", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _read_array(path: Path) -> np.ndarray:
    return np.squeeze(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))


def _display_slice(reference: np.ndarray) -> int | None:
    """For a 3D volume, the slice (first numpy axis) with the most foreground; None for 2D images."""
    if reference.ndim == 2:
        return None
    return int(np.argmax((reference > 0).reshape(reference.shape[0], -1).sum(axis=1)))


def write_overlay(
    image_path: Path,
    reference_path: Path,
    predictions: dict[str, dict[str, Path]],
    path: Path,
    title: str,
) -> Path:
    """Image, ground truth and every trainer's prediction side by side; one row per key of ``predictions``.

    ``predictions`` maps a row label (e.g. "N=8") to {trainer: prediction file}. 3D volumes show the slice with the
    most ground-truth foreground.
    """
    image, reference = _read_array(image_path), _read_array(reference_path)
    index = _display_slice(reference)

    def view(array: np.ndarray) -> np.ndarray:
        return array if index is None else array[index]

    low, high = np.percentile(view(image), (1, 99))
    trainers = list(dict.fromkeys(t for row in predictions.values() for t in row))  # keep the caller's order
    columns = ["image", "ground truth", *trainers]
    num_labels = int(max(reference.max(), 1))
    figure, axes = plt.subplots(len(predictions), len(columns), figsize=(2.6 * len(columns), 2.9 * len(predictions)), squeeze=False)
    for row_axes, (row_label, row) in zip(axes, predictions.items()):
        for axis, column in zip(row_axes, columns):
            axis.imshow(view(image), cmap="gray", vmin=low, vmax=high)
            mask = view(reference) if column == "ground truth" else (view(_read_array(row[column])) if column in row else None)
            if mask is not None and column != "image":
                axis.imshow(np.ma.masked_equal(mask, 0), cmap="tab10", vmin=1, vmax=max(num_labels, 10), alpha=0.5, interpolation="nearest")
            axis.set_title(column if column in ("image", "ground truth") else f"{column}\n{row_label}", fontsize=8)
            axis.axis("off")
    suffix = "" if index is None else f" (slice {index})"
    figure.suptitle(title + suffix, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
