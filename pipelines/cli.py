"""`amopo pipeline …`: compile the pipeline, submit it to Kubeflow Pipelines, or run it here.

    amopo pipeline compile [--output pipelines/amopo_pipeline.yaml] [--image IMAGE]
    amopo pipeline submit --host URL [--values FILE] [--param KEY=VALUE ...] [--experiment NAME] [--run-name NAME]
                          [--namespace NS] [--service-account SA] [--package FILE]
                          [--token-env VAR | --token-file FILE | --iap-client-id ID [--iap-other-client-id ID]
                           [--iap-other-client-secret-env VAR]] [--cookies-env VAR] [--ca-cert FILE]
    amopo pipeline submit --dry-run [--values FILE] [--param ...] [--output-dir DIR] [--crd-dir DIR]
    amopo pipeline run --local [--work-dir runs/pipeline] [--keep-serving] [--verbose] [--param KEY=VALUE ...]
    amopo pipeline stop-serving [STATE_FILE]

``--param`` values are read as YAML (``max_steps=8``, ``train_options={lora: true}``); unknown
names are refused with the list of parameters. ``--values FILE`` holds a run's settings in one file
(``run:`` service_account, experiment; ``parameters:`` pipeline parameters; see pipelines/values.py
and k8s/values/); ``--param`` and the flags override it.

``submit`` runs the pipeline in the ``namespace`` parameter's namespace, where the TrainJobs and the
workspace PVC live (``--namespace`` may only repeat it), as ``--service-account`` (default: KFP's),
authenticated by a token from an environment variable or a file, Google IAP, or a session cookie
(pipelines/submit.py). ``--dry-run`` contacts nothing: it writes the compiled pipeline, the run
request, the step pods, the TrainJob and the InferenceService the run would create to
``--output-dir`` and validates them (pipelines/dry_run.py).

``run --local`` prints one line per step and keeps each step's full output in
``WORK_DIR/logs/<time>/<step>.log``; ``--verbose`` prints it all as well.
"""

from __future__ import annotations

import argparse
import sys

from amopo.errors import AmopoError, ConfigError
from pipelines.package import COMPILED, compile_pipeline
from pipelines.params import check_pod_resources, parse_params, pipeline_parameters

__all__ = ["COMPILED", "compile_pipeline", "main", "parse_params", "pipeline_parameters"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amopo pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    comp = sub.add_parser("compile", help="write the KFP IR YAML")
    comp.add_argument("--output", default=str(COMPILED), help="where the compiled pipeline YAML goes")
    comp.add_argument("--image", default=None,
                      help="default of the `image` parameter: the image of every step, TrainJob and custom "
                           "InferenceService (default: the project's release image)")
    sm = sub.add_parser("submit", help="run the pipeline on a Kubeflow Pipelines server")
    sm.add_argument("--host", help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")
    sm.add_argument("--dry-run", action="store_true",
                    help="contact nothing (not even --host): write and validate every object the run would create")
    sm.add_argument("--values", default=None, metavar="FILE", help="run settings and parameters (k8s/values/)")
    sm.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a pipeline parameter, over the values file's (repeatable)")
    sm.add_argument("--experiment", default=None, help="KFP experiment (default: the values file's, else amopo)")
    sm.add_argument("--run-name", default=None, help="display name of the run (default: KFP's)")
    sm.add_argument("--namespace", default=None,
                    help="the run's namespace; must equal the `namespace` parameter (its default)")
    sm.add_argument("--service-account", default=None,
                    help="ServiceAccount of the run's pods (default: the values file's, else KFP's)")
    sm.add_argument("--package", default=None, help="compiled YAML to submit (default: compile now)")
    auth = sm.add_argument_group("authentication (secrets come from variables or files, never the command line)")
    auth.add_argument("--token-env", metavar="VAR", help="bearer token in environment variable VAR")
    auth.add_argument("--token-file", metavar="FILE",
                      help="bearer token in FILE, re-read on every request (e.g. a projected ServiceAccount token)")
    auth.add_argument("--iap-client-id", metavar="ID", help="Google IAP: the OAuth client id of the IAP")
    auth.add_argument("--iap-other-client-id", metavar="ID", help="Google IAP: your desktop OAuth client id")
    auth.add_argument("--iap-other-client-secret-env", metavar="VAR",
                      help="Google IAP: your desktop OAuth client secret, in environment variable VAR")
    auth.add_argument("--cookies-env", metavar="VAR",
                      help="session cookie(s) in environment variable VAR, e.g. oauth2_proxy_kubeflow=...")
    auth.add_argument("--ca-cert", metavar="FILE", help="CA bundle that signed the server's TLS certificate")
    dry = sm.add_argument_group("--dry-run")
    dry.add_argument("--output-dir", default="amopo-dry-run", help="where the rendered objects go")
    dry.add_argument("--crd-dir", default=None,
                     help="folder of CustomResourceDefinition YAMLs to validate the TrainJob and the "
                          "InferenceService against (without it they are checked by their renderers only)")
    rn = sub.add_parser("run", help="run the whole pipeline on this machine (KFP local runner)")
    rn.add_argument("--local", action="store_true", required=True, help="KFP's local subprocess runner")
    rn.add_argument("--work-dir", default="runs/pipeline", help="artifacts, MLflow store and server state")
    rn.add_argument("--keep-serving", action="store_true", help="leave the model server running at the end")
    rn.add_argument("--verbose", action="store_true",
                    help="print everything KFP and the steps print (it also goes to the step logs)")
    rn.add_argument("--values", default=None, metavar="FILE",
                    help="pipeline parameters from a values file's `parameters:` (its `run:` settings are for "
                         "submit and are not read here), e.g. configs/pipeline/steer.yaml")
    rn.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a pipeline parameter, over the values file's (repeatable)")
    st = sub.add_parser("stop-serving", help="stop a model server left running by `run --local --keep-serving`")
    st.add_argument("state_file", nargs="?", default=None,
                    help="the server's state file (default: every one under runs/pipeline/serving)")
    return parser


def submission(args: argparse.Namespace) -> dict:
    """What ``submit`` sends, from the values file overridden by the flags: ``params`` (the values
    given), ``resolved`` (with every default), ``namespace``, ``service_account``, ``experiment``."""
    from pipelines.submit import run_namespace
    from pipelines.values import Values, load_values

    values = load_values(args.values) if args.values else Values()
    params = {**values.parameters, **parse_params(args.param)}
    resolved = {**pipeline_parameters(), **params}
    check_pod_resources(resolved)
    return {"params": params, "resolved": resolved, "namespace": run_namespace(resolved, args.namespace),
            "service_account": args.service_account or values.run.get("service_account"),
            "experiment": args.experiment or values.run.get("experiment") or "amopo", "run_name": args.run_name,
            "host": args.host}


def _submit(args: argparse.Namespace) -> None:
    from pipelines.submit import Auth, submit

    plan = submission(args)
    if args.dry_run:
        from pipelines.dry_run import dry_run

        report = dry_run(plan, output_dir=args.output_dir, crd_dir=args.crd_dir, package=args.package)
        print(report.summary())
        if report.errors:
            raise ConfigError(f"{len(report.errors)} rendered object(s) do not validate:\n  "
                              + "\n  ".join(report.errors))
        return
    if not args.host:
        raise ConfigError("--host is required (or --dry-run)")
    auth = Auth(token_env=args.token_env, token_file=args.token_file, cookies_env=args.cookies_env,
                iap_client_id=args.iap_client_id, iap_other_client_id=args.iap_other_client_id,
                iap_other_client_secret_env=args.iap_other_client_secret_env, ca_cert=args.ca_cert)
    result = submit(args.host, params=plan["params"], experiment=plan["experiment"], run_name=plan["run_name"],
                    namespace=plan["namespace"], service_account=plan["service_account"], auth=auth,
                    package=args.package)
    print(f"submitted run {result['run_id']} in namespace {result['namespace']} as "
          f"{result['service_account'] or 'the default service account'}: {result['run_url']}")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "compile":
            print(f"compiled: {compile_pipeline(args.output, image=args.image)}")
        elif args.action == "submit":
            _submit(args)
        elif args.action == "run":
            from pipelines.local_run import print_summary, run_local
            from pipelines.values import load_values

            params = {**(load_values(args.values).parameters if args.values else {}), **parse_params(args.param)}
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
