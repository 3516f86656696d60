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
    from nnsam.echo import camus

    convert_camus = sub.add_parser(
        "convert-camus", help="CAMUS echocardiography release -> nnU-Net v2 raw datasets (ED/ES 2D and half sequences)"
    )
    camus.add_arguments(convert_camus)
    args = parser.parse_args(argv)
    if args.command == "trainer-dir":
        print(trainer_dir())
        return 0
    if args.command == "convert-camus":
        return camus.run(args)
    return fewshot_command.run(args)


if __name__ == "__main__":
    sys.exit(main())
