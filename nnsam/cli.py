"""The ``nnsam`` command."""
from __future__ import annotations

import argparse
import sys

from nnsam.plugin import EXT_TRAINER_ENV, trainer_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnsam", description="nnSAM plugin for nnU-Net v2.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "trainer-dir",
        help=f"print the folder for {EXT_TRAINER_ENV}: export {EXT_TRAINER_ENV}=$(nnsam trainer-dir)",
    )
    from nnsam.fewshot import command as fewshot_command

    fewshot = sub.add_parser("fewshot", help="few-shot comparison of trainers (Dice/IoU/HD95/ASD table and plot)")
    fewshot_command.add_arguments(fewshot)
    from nnsam.fewshot import report_command

    fewshot_report = sub.add_parser("fewshot-report", help="a few-shot study's tables and plot, rebuilt from its run "
                                    "records (an OUT_DIR or --records folder) without training anything",
                                    description=report_command.__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    report_command.add_arguments(fewshot_report)
    from nnsam.echo import camus

    convert_camus = sub.add_parser(
        "convert-camus", help="CAMUS echocardiography release -> nnU-Net v2 raw datasets (ED/ES 2D and half sequences)"
    )
    camus.add_arguments(convert_camus)
    temporal = sub.add_parser("add-temporal-config",
                              help="add the 2d_temporal configuration (clips of T frames) to a planned sequence dataset")
    temporal.add_argument("dataset", help="dataset id or name, planned with -c 2d 3d_fullres")
    temporal.add_argument("--frames", type=int, default=8, help="frames per clip T (default 8)")
    temporal.add_argument("--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    echo_metrics = sub.add_parser("echo-metrics",
                                  help="CAMUS metrics per structure (LV, MYO, LA, epicardium) and phase (ED, ES)")
    echo_metrics.add_argument("predictions", help="folder of predicted label maps (e.g. nnUNetv2_predict's output)")
    echo_metrics.add_argument("references", help="folder of reference label maps with the same file names; for half "
                              "sequences (the converter's CAMUSSeq labelsTr) the ED/ES frames are scored and the "
                              "temporal consistency counted, with bounds from these references")
    from nnsam.echo import ablation

    ablation_parser = sub.add_parser("ablation", help="the echo ablation on CAMUS: nnU-Net 2d/3d_fullres, nnSAM, +TRA, "
                                     "+LIA, +TRA+LIA on the official split (Dice, IoU, HD, TCI; table, plot, overlays)")
    ablation.add_arguments(ablation_parser)
    args = parser.parse_args(argv)
    if args.command == "ablation":
        return ablation.run(args)
    if args.command == "trainer-dir":
        print(trainer_dir())
        return 0
    if args.command == "fewshot-report":
        return report_command.run(args)
    if args.command == "convert-camus":
        return camus.run(args)
    if args.command == "add-temporal-config":
        return _add_temporal_config(args)
    if args.command == "echo-metrics":
        return _echo_metrics(args)
    return fewshot_command.run(args)


def _add_temporal_config(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnsam.plans.temporal import TEMPORAL_CONFIGURATION, add_temporal_configuration_to_file

    try:
        if nnUNet_preprocessed is None:
            raise ValueError("nnUNet_preprocessed is not set; export it as for nnU-Net's own commands.")
        plans_file = Path(nnUNet_preprocessed) / maybe_convert_to_dataset_name(args.dataset) / f"{args.plans}.json"
        if not plans_file.is_file():
            raise ValueError(f"{plans_file} does not exist; run nnUNetv2_plan_and_preprocess -d {args.dataset} "
                             f"-c 2d 3d_fullres first.")
        add_temporal_configuration_to_file(plans_file, args.frames)
    except (ValueError, RuntimeError) as error:
        print(f"nnsam add-temporal-config: error: {error}", file=sys.stderr)
        return 2
    print(f"Added {TEMPORAL_CONFIGURATION} (clips of {args.frames} frames) to {plans_file}.")
    return 0


def _echo_metrics(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnsam.echo.sequence_metrics import evaluate_sequences, is_sequence_file
    from nnsam.echo.structure_metrics import evaluate_folder, summarise

    references = sorted(Path(args.references).glob("*.nii.gz"))
    if not references:
        print(f"nnsam echo-metrics: error: no .nii.gz label maps in {args.references}", file=sys.stderr)
        return 2
    consistency = None
    try:
        if is_sequence_file(references[0]):  # half sequences: key frames + temporal consistency
            evaluation = evaluate_sequences(args.predictions, args.references)
            rows, consistency = evaluation.rows, evaluation.consistency
        else:
            rows = evaluate_folder(args.predictions, args.references)
    except (FileNotFoundError, ValueError) as error:
        print(f"nnsam echo-metrics: error: {error}", file=sys.stderr)
        return 2
    print("| structure | phase | Dice | IoU | HD (mm) | HD95 (mm) | MSD (mm) |")
    print("|---|---|---|---|---|---|---|")
    for (structure, phase), values in sorted(summarise(rows).items(), key=lambda item: (item[0][0], str(item[0][1]))):
        cells = " | ".join(f"{mean:.3f} ± {sd:.3f}" for mean, sd in values.values())
        print(f"| {structure} | {phase or 'all'} | {cells} |")
    if consistency is not None:
        report = consistency
        print(f"\nTemporal consistency (Painchaud et al. 2022) of {report.num_sequences} predicted sequences, "
              f"{report.num_frames} frames: TCI {report.total_inconsistent_frames} inconsistent frames; "
              f"{report.sequences_with_inconsistency} of {report.num_sequences} sequences "
              f"({100 * report.fraction_sequences_with_inconsistency:.0f} %) have at least one.")
        print("per attribute: " + ", ".join(f"{name} {count}" for name, count in report.per_attribute.items()))
        print(f"bounds (min-max scaling) from {evaluation.bounds_source}: "
              + ", ".join(f"{name} [{low:.4g}, {high:.4g}]" for name, (low, high) in report.bounds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
