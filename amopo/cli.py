"""`amopo` command line: one subcommand per step.

    amopo prepare --input FILE_OR_HUB_NAME --output DIR [--format ...] [--dimensions ...] [--model ...]
    amopo train   --data DIR --model NAME_OR_PATH --output DIR [--loss ...] [--config FILE.yaml] ...

Every option of a step is also settable in its YAML file (``--config``); flags override the file.
Errors in the user's input print one line naming what and where, and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from amopo import __version__
from amopo import config as config_lib
from amopo.errors import AmopoError


def _add_step(sub, name: str, cls: type, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file with any of the options below")
    config_lib.add_arguments(parser, cls)
    return parser


def _resolve(cls: type, args: argparse.Namespace):
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    return config_lib.resolve(cls, args.config, overrides)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from amopo.data.prepare import PrepareConfig, prepare

    prepare(_resolve(PrepareConfig, args))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from amopo.train.config import TrainConfig
    from amopo.train.loop import train

    cfg = _resolve(TrainConfig, args)
    if not cfg.data:
        raise AmopoError("train: --data is required (a folder written by `amopo prepare`)")
    summary = train(cfg)
    if summary.get("model_dir"):
        print(f"model: {summary['model_dir']}")
        print(f"metrics: {os.path.join(cfg.output, 'metrics.json')}")
        print(f"curves: {os.path.join(cfg.output, 'training_curves.png')}")
        print(f"mlflow: {summary.get('mlflow_tracking_uri')} (run {summary.get('mlflow_run_id')})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from amopo.data.prepare import PrepareConfig
    from amopo.train.config import TrainConfig

    parser = argparse.ArgumentParser(prog="amopo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"amopo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_step(sub, "prepare", PrepareConfig,
              "Validate preference data, build pairs and dimension prompts, optionally tokenise.")
    _add_step(sub, "train", TrainConfig, "Train with AMoPO or a baseline (SimPO, DPO, MODPO).")
    return parser


COMMANDS = {"prepare": _cmd_prepare, "train": _cmd_train}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except AmopoError as exc:
        print(f"amopo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"amopo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
