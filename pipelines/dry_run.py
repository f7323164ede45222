"""`amopo pipeline submit --dry-run`: everything a run would create, rendered and validated, without
contacting anything.

Written to the output folder (replaced as a whole, never half-written):

    pipeline.yaml          the compiled pipeline, the run's image as the ``image`` default
    run.yaml               what submit would send: namespace, ServiceAccount, experiment, arguments
    steps.yaml             the pod of every step (pipelines/step_pods.py)
    trainjob.yaml          the TrainJob of the train step (launcher "trainjob"; one per objective)
    inferenceservice.yaml  the InferenceService of the deploy step (deploy_target "kserve")

The TrainJob and the InferenceService come from the functions the components call
(``amopo.cluster.launch_training.trainjob_settings`` + ``step_trainjob``,
``amopo.cluster.inferenceservice.deploy_step_manifest``) on the inputs the compiled pipeline gives
those components, so the dry run and the steps cannot disagree. Values only the run knows (the
registered model's URI, the objective of a loop iteration) appear as ``<... at run time>``.

The step pods are validated against the Kubernetes schemas (``kubernetes-validate``, strict), the
TrainJob and the InferenceService against their CustomResourceDefinitions when ``crd_dir`` holds them
(``amopo.cluster.crd_schema``, strict); without ``crd_dir`` they are checked by their renderers only.
"""

from __future__ import annotations

import inspect
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from amopo.errors import ConfigError
from pipelines.compiled_tasks import ContainerTask, RuntimeValue, container_tasks, load_compiled

KUBERNETES_VERSION = "1.33.0"
TRAIN_TASK, DEPLOY_TASK = "train-model", "deploy-model"
# The real job name ends in 8 random hex digits (amopo.cluster.launch_training.new_job_name).
DRY_RUN_JOB_NAME = "amopo-train-00000000"


@dataclass
class DryRunReport:
    """What the dry run wrote, what it validated against what, and every validation error."""

    output_dir: Path
    files: dict[str, str] = field(default_factory=dict)      # file name → what it holds
    validated: dict[str, str] = field(default_factory=dict)  # object → schema it was validated against
    skipped: dict[str, str] = field(default_factory=dict)    # object not created → why
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"dry run: nothing was contacted; written to {self.output_dir}/"]
        lines += [f"  {name:<22} {what}" for name, what in self.files.items()]
        lines += [f"  validated {obj} against {schema}" for obj, schema in self.validated.items()]
        lines += [f"  no {obj}: {why}" for obj, why in self.skipped.items()]
        lines.append(f"  {len(self.errors)} validation error(s)" if self.errors else "  every object validates")
        return "\n".join(lines)


def _call_with_task_inputs(fn, task: ContainerTask):
    """``fn`` called with the task's inputs of the same names; an input it lacks means the component
    and the library function disagree, which is an error here rather than a guess."""
    names = list(inspect.signature(fn).parameters)
    missing = [n for n in names if n not in task.inputs]
    if missing:
        raise ConfigError(f"task {task.name} has no input(s) {', '.join(missing)} that {fn.__module__}."
                          f"{fn.__name__} takes: the component and the library disagree")
    return fn(**{n: task.inputs[n] for n in names})


def render_trainjob(task: ContainerTask) -> dict:
    """The TrainJob the train step creates (its name aside), from the step's inputs."""
    from amopo.cluster.launch_training import STEP_WORKSPACE, staged_config_file, step_trainjob, trainjob_settings

    settings = _call_with_task_inputs(trainjob_settings, task)
    return step_trainjob(DRY_RUN_JOB_NAME, staged_config_file(STEP_WORKSPACE, DRY_RUN_JOB_NAME),
                         workspace=STEP_WORKSPACE, **settings)


def render_inferenceservice(task: ContainerTask) -> dict:
    """The InferenceService the deploy step creates, from the step's inputs."""
    from amopo.cluster.inferenceservice import deploy_step_manifest

    return _call_with_task_inputs(deploy_step_manifest, task)


def core_errors(obj: dict) -> list[str]:
    """Why ``obj`` does not validate against the Kubernetes schemas of :data:`KUBERNETES_VERSION` (strict)."""
    import kubernetes_validate

    where = f"{obj['kind']}/{obj['metadata']['name']}"
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{where}: {exc.message}"]
    return []


class _Dumper(yaml.SafeDumper):
    """Safe YAML that writes a run-time value as the string it shows."""


_Dumper.add_representer(RuntimeValue, lambda dumper, value: dumper.represent_str(str(value)))


def _write_yaml(path: Path, docs: list[dict]) -> None:
    path.write_text(yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False), encoding="utf-8")


def dry_run(plan: dict, *, output_dir: str | Path, crd_dir: str | Path | None = None,
            package: str | Path | None = None) -> DryRunReport:
    """Render and validate every object of the run ``plan`` (pipelines.cli.submission) into ``output_dir``."""
    output_dir = Path(output_dir)
    crd_dir = Path(crd_dir) if crd_dir else None
    if crd_dir is not None and not crd_dir.is_dir():
        raise ConfigError(f"--crd-dir {crd_dir}: no such folder")
    report = DryRunReport(output_dir)
    tmp = output_dir.with_name(f".{output_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _render(plan, tmp, report, crd_dir=crd_dir, package=package)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if output_dir.exists():
        shutil.rmtree(output_dir)
    tmp.rename(output_dir)
    return report


def _render(plan: dict, tmp: Path, report: DryRunReport, *, crd_dir: Path | None, package: str | Path | None) -> None:
    from amopo.cluster.crd_schema import find_crd, validation_errors
    from pipelines.package import compile_pipeline
    from pipelines.step_pods import step_pods

    params, namespace = plan["params"], plan["namespace"]
    run_name = plan.get("run_name") or "amopo-dry-run"
    if package:
        shutil.copyfile(package, tmp / "pipeline.yaml")
    else:
        compile_pipeline(tmp / "pipeline.yaml", image=params.get("image"))
    report.files["pipeline.yaml"] = "the compiled pipeline" + (f" (image {params['image']})"
                                                               if params.get("image") and not package else "")
    spec, platform = load_compiled(tmp / "pipeline.yaml")
    tasks = {t.name: t for t in container_tasks(spec, params)}

    _write_yaml(tmp / "run.yaml", [{"host (not contacted)": plan.get("host"), "namespace": namespace,
                                    "service_account": plan.get("service_account"),
                                    "experiment": plan.get("experiment"), "run_name": run_name,
                                    "arguments": params}])
    report.files["run.yaml"] = "what submit sends"

    pods = step_pods(spec, platform, list(tasks.values()), namespace=namespace,
                     service_account=plan.get("service_account"), run_name=run_name)
    _write_yaml(tmp / "steps.yaml", pods)
    report.files["steps.yaml"] = f"{len(pods)} step pods"
    for pod in pods:
        report.errors += core_errors(pod)
    report.validated[f"{len(pods)} step pods"] = f"Kubernetes {KUBERNETES_VERSION} (kubernetes-validate)"

    custom = []
    launcher, target = tasks[TRAIN_TASK].inputs["launcher"], tasks[DEPLOY_TASK].inputs["target"]
    if launcher == "trainjob":
        custom.append(("trainjob.yaml", "TrainJob", render_trainjob(tasks[TRAIN_TASK])))
    else:
        report.skipped["TrainJob"] = f"launcher is {launcher!r}"
    if target == "kserve":
        custom.append(("inferenceservice.yaml", "InferenceService", render_inferenceservice(tasks[DEPLOY_TASK])))
    else:
        report.skipped["InferenceService"] = f"deploy_target is {target!r}"
    for file_name, kind, manifest in custom:
        _write_yaml(tmp / file_name, [manifest])
        report.files[file_name] = f"the {kind}" + (" (one per objective)" if kind == "TrainJob" else "")
        crd = find_crd(crd_dir, manifest["apiVersion"], kind) if crd_dir else None
        if crd is not None:
            report.errors += [f"{kind}/{manifest['metadata']['name']}: {e}" for e in validation_errors(manifest, crd)]
            report.validated[kind] = str(crd)
        elif crd_dir:
            report.errors.append(f"{kind}: no CRD for {manifest['apiVersion']} in {crd_dir}")

