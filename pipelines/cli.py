"""`amopo pipeline …`: compile the pipeline, submit it to Kubeflow Pipelines, or run it here.

    amopo pipeline compile [--output pipelines/amopo_pipeline.yaml]
    amopo pipeline submit --host URL [--experiment NAME] [--run-name NAME] [--param KEY=VALUE ...]
    amopo pipeline run --local [--work-dir runs/pipeline] [--keep-serving] [--verbose] [--param KEY=VALUE ...]
    amopo pipeline stop-serving [STATE_FILE]

``--param`` values are read as YAML (``max_steps=8``, ``train_options={lora: true}``); unknown
names are refused with the list of parameters. ``run --local`` prints one line per step and keeps
each step's full output in ``WORK_DIR/logs/<time>/<step>.log``; ``--verbose`` prints it all as well.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

import yaml

from amopo.errors import AmopoError, ConfigError

COMPILED = Path(__file__).resolve().parent / "amopo_pipeline.yaml"


class _ParamLoader(yaml.SafeLoader):
    """YAML 1.1 as ``safe_load`` reads it, except that exponents without a dot (``3e-4``) are floats,
    as in YAML 1.2, at any depth (``train_options={lr: 3e-4}`` too)."""


_ParamLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                   re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                   list("-+0123456789"))


def pipeline_parameters() -> dict[str, object]:
    """Name → default of every pipeline parameter."""
    from pipelines.amopo_pipeline import amopo_pipeline

    signature = inspect.signature(amopo_pipeline.pipeline_func)
    return {name: p.default for name, p in signature.parameters.items()}


def parse_params(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings → typed values, checked against the pipeline's parameters and their types."""
    known = pipeline_parameters()
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        if key not in known:
            raise ConfigError(f"--param {key!r}: not a pipeline parameter; known: {', '.join(sorted(known))}")
        default = known[key]
        try:
            value = text if isinstance(default, str) else yaml.load(text, Loader=_ParamLoader)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--param {key}: cannot read {text!r} ({exc.problem})") from None
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise ConfigError(f"--param {key}: expected {type(default).__name__}, got {text!r}")
        out[key] = value
    return out


def compile_pipeline(output: str | Path = COMPILED) -> Path:
    """Compile to KFP IR YAML (atomically: a failed compile leaves the previous file)."""
    from kfp import compiler

    from pipelines.amopo_pipeline import amopo_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".tmp-{output.name}")
    compiler.Compiler().compile(amopo_pipeline, str(tmp))
    tmp.replace(output)
    return output


def submit(host: str, *, params: dict, experiment: str, run_name: str | None, namespace: str | None,
           package: str | Path | None = None) -> dict:
    """Create a run of the compiled pipeline on the KFP API server at ``host``."""
    import kfp

    package = Path(package) if package else compile_pipeline(Path(".amopo_pipeline.yaml"))
    try:
        client = kfp.Client(host=host, namespace=namespace)
        result = client.create_run_from_pipeline_package(str(package), arguments=params, run_name=run_name,
                                                         experiment_name=experiment, enable_caching=False)
    except Exception as exc:  # the client raises urllib3/kfp_server_api/ValueError types alike
        raise ConfigError(f"submitting to {host} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                          ) from None
    url = f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    return {"run_id": result.run_id, "run_url": url, "experiment": experiment}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="amopo pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    comp = sub.add_parser("compile", help="write the KFP IR YAML")
    comp.add_argument("--output", default=str(COMPILED))
    sm = sub.add_parser("submit", help="run the pipeline on a Kubeflow Pipelines server")
    sm.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow:80")
    sm.add_argument("--experiment", default="amopo")
    sm.add_argument("--run-name", default=None)
    sm.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user installs)")
    sm.add_argument("--package", default=None, help="compiled YAML to submit (default: compile now)")
    sm.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    rn = sub.add_parser("run", help="run the whole pipeline on this machine (KFP local runner)")
    rn.add_argument("--local", action="store_true", required=True, help="KFP's local subprocess runner")
    rn.add_argument("--work-dir", default="runs/pipeline", help="artifacts, MLflow store and server state")
    rn.add_argument("--keep-serving", action="store_true", help="leave the model server running at the end")
    rn.add_argument("--verbose", action="store_true",
                    help="print everything KFP and the steps print (it also goes to the step logs)")
    rn.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    st = sub.add_parser("stop-serving", help="stop a model server left running by `run --local --keep-serving`")
    st.add_argument("state_file", nargs="?", default=None)
    args = parser.parse_args(argv)
    try:
        if args.action == "compile":
            print(f"compiled: {compile_pipeline(args.output)}")
        elif args.action == "submit":
            result = submit(args.host, params=parse_params(args.param), experiment=args.experiment,
                            run_name=args.run_name, namespace=args.namespace, package=args.package)
            print(f"submitted run {result['run_id']}: {result['run_url']}")
        elif args.action == "run":
            from pipelines.local_run import print_summary, run_local

            params = parse_params(args.param)
            if args.keep_serving:
                params["keep_serving"] = True
            print_summary(run_local(params, work_dir=args.work_dir, verbose=args.verbose))
        else:
            from pipelines.local_run import stop_serving

            print(stop_serving(args.state_file))
        return 0
    except AmopoError as exc:   # a bad parameter, or a failed step of the local run (PipelineRunError)
        print(f"amopo pipeline {args.action}: error: {exc}", file=sys.stderr)
        return 2
