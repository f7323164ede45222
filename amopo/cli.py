"""`amopo` command line: one subcommand per step.

    amopo prepare --data-source FILE_OR_HUB_NAME --output DIR [--data-format ...] [--dimensions ...] [--base-model ...]
    amopo train   --data DIR --base-model NAME_OR_PATH --output DIR [--objective ...] [--config FILE.yaml] ...
    amopo compare --entry LABEL=TRAIN_DIR,EVAL_DIR --entry ... --output DIR [--metric ...] [--judge ...]

Every option of a step is also settable in its YAML file (``--config``); flags override the file.
Errors in the user's input print one line naming what and where, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from amopo import __version__
from amopo import config as config_lib
from amopo.errors import AmopoError


# name -> (module, config class, function, help). A step's function takes its resolved config and
# returns a summary dict; adding a subcommand is one line here.
STEPS: dict[str, tuple[str, str, str, str]] = {
    "prepare": ("amopo.data.prepare", "PrepareConfig", "prepare",
                "Validate preference data, build pairs and dimension prompts, optionally tokenise."),
    "annotate": ("amopo.annotate", "AnnotateConfig", "annotate",
                 "Add a judge-scored dimension (default instruction_following) to the responses that lack it."),
    "train": ("amopo.train.loop", "TrainConfig", "train",
              "Train with AMoPO or a baseline (SimPO, DPO, MODPO)."),
    "register": ("amopo.registry.register", "RegisterConfig", "register",
                 "Register a trained model in MLflow's or Kubeflow's Model Registry (alias 'challenger')."),
    "promote": ("amopo.registry.promote", "PromoteConfig", "promote",
                "Gate a registered version on its metrics and move alias 'champion' if it passes."),
    "rollback": ("amopo.registry.rollback", "RollbackConfig", "rollback",
                 "Serve an earlier registered version again (patch the InferenceService, wait for Ready), "
                 "then move alias 'champion' to it."),
    "serve": ("amopo.serving.server", "ServeConfig", "serve",
              "Serve a model with KServe: v1, v2 and OpenAI-compatible routes (blocks until stopped)."),
    "evaluate": ("amopo.evaluate.evaluate", "EvaluateConfig", "evaluate",
                 "Evaluate a model folder or endpoint: lm-eval, judged win rates, dimension scores, plots."),
    "compare": ("amopo.compare.compare", "CompareConfig", "compare",
                "Compare objectives trained and evaluated side by side; pick the best on a metric."),
}


def _load(name: str):
    module_name, cls_name, fn_name, _ = STEPS[name]
    module = importlib.import_module(module_name)
    return getattr(module, cls_name), getattr(module, fn_name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amopo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"amopo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, _, help_text) in STEPS.items():
        step = sub.add_parser(name, help=help_text, description=help_text)
        step.add_argument("--config", metavar="FILE.yaml", help="YAML file with any of the options below")
        config_lib.add_arguments(step, _load(name)[0])
    # parsed by pipelines.cli (main() hands it every argument first); listed here for --help
    sub.add_parser("pipeline", add_help=False, help="The whole Kubeflow pipeline: compile, run --local, submit "
                                                    "(--dry-run), stop-serving; `amopo pipeline --help`.")
    return parser


def _print_outputs(summary) -> None:
    """Print the summary's locations (keys ending in _dir, _path, _uri, _url) one per line, once
    (on rank 0 of a torchrun job)."""
    if not isinstance(summary, dict) or os.environ.get("RANK", "0") != "0":
        return
    for key, value in summary.items():
        if value and not isinstance(value, (dict, list)) and key.endswith(("_dir", "_path", "_uri", "_url", "run_id")):
            print(f"{key}: {value}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pipeline"]:
        from pipelines.cli import main as pipeline_main   # the KFP side, outside the library

        return pipeline_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        cls, fn = _load(args.command)
        overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
        _print_outputs(fn(config_lib.resolve(cls, args.config, overrides)))
        return 0
    except AmopoError as exc:
        print(f"amopo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"amopo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
