"""`amopo register`: put a trained model into the MLflow Model Registry as a new version.

The logged model holds MLflow's transformers flavour (so ``mlflow.pyfunc.load_model`` works) whose
``model/`` subfolder is an exact copy of the training output's Hugging Face folder: config,
safetensors and tokenizer together, the folder KServe's Hugging Face runtime takes as ``storageUri``.
The version is tagged with the training run, the base model, the objective and every metric
(training summary flattened with "/", plus the eval metrics), and gets the alias ``challenger``
(or the one asked for, or none).

Order of work: validate inputs → wait for the server (back-off) → log the model in a run → create
the version (tags included) → set the alias. If anything fails after the version exists, the version
(and a registered model created by this call) is deleted again and the run is marked FAILED, so a
failed registration leaves nothing registered. Registering the same model and metrics again
returns the existing version (matched by a content digest).
"""

from __future__ import annotations

import json

import shutil
import types
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from amopo.config import field
from amopo.errors import ConfigError
from amopo.registry import RegistryError
from amopo.registry.inputs import digest, read_eval_metrics, read_training_output
from amopo.registry import store


@dataclass
class RegisterConfig:
    train_dir: str = field("", help="training output folder written by `amopo train` (holds model/ and metrics.json)")
    eval_metrics: str | None = field(None, help="flat eval metrics: EVAL_DIR/metrics.json from `amopo evaluate` (or EVAL_DIR)")
    registered_model_name: str = field("amopo", help="registered model name")
    alias: str = field("challenger", help="alias given to the new version (\"\": none)")
    mlflow_tracking_uri: str | None = field(None, help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI, "
                                                "else the embedded sqlite store under runs/mlflow)")
    mlflow_experiment: str = field("amopo-registry", help="MLflow experiment of the registration run")
    comparison: str | None = field(None, help="the comparison folder (`amopo compare`) the model took part in: its "
                                              "verdict as tags (amopo.comparison.*), its report as artifacts")
    comparison_label: str | None = field(None, help="the model's entry in the comparison (e.g. simpo); tags "
                                                    "amopo.comparison.label and .role (best or candidate)")
    connect_attempts: int = field(5, help="tries to reach an MLflow server before giving up")
    connect_backoff_s: float = field(1.0, help="first wait between tries (doubles each time, capped at 15 s)")
    registry: str = field("mlflow", help="where the version goes: mlflow (MLflow Model Registry, the files logged "
                                         "to its artifact store) or kubeflow (Kubeflow Model Registry: metadata, "
                                         "the files stay at storage_uri; amopo.registry.kubeflow)")
    model_registry_url: str = field("", help="Kubeflow Model Registry REST address, e.g. http://model-registry-"
                                             "service.kubeflow.svc.cluster.local:8080 (registry kubeflow; its "
                                             "token: $AMOPO_MODEL_REGISTRY_TOKEN, else the pod's service account's)")
    model_registry_author: str = field("amopo", help="author and owner recorded in the Kubeflow Model Registry")
    model_version: str = field("", help="version name in the Kubeflow Model Registry (default: the pipeline run "
                                        "id, else the next number)")
    storage_uri: str = field("", help="registry kubeflow: URI of the model folder the InferenceService reads "
                                      "(default: TRAIN_DIR/model as a file:// URI)")
    pipeline_run_id: str = field("", help="registry kubeflow: the Kubeflow Pipelines run that made the model, "
                                          "recorded as the version's source")
    pipeline_namespace: str = field("", help="registry kubeflow: the namespace of that pipeline run (the "
                                             "source's group)")

    def validate(self) -> None:
        from amopo.registry.kubeflow import check_registry

        check_name(self.registered_model_name)
        check_registry(self.registry, self.model_registry_url)
        if self.alias and not self.alias.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"alias {self.alias!r}: use letters, digits, '-' and '_'")
        if self.comparison_label and not self.comparison:
            raise ConfigError("comparison_label is set but comparison is not: the label names an entry of a comparison")
        if self.connect_attempts < 1:
            raise ConfigError("connect_attempts must be at least 1")


def check_name(name: str) -> None:
    if not name or any(c in name for c in "'\"`/\\:@"):
        raise ConfigError(f"model name {name!r}: must be non-empty without quotes, '/', ':' or '@'")


def _requirements() -> list[str]:
    # Explicit pins: MLflow would otherwise infer them by loading the model in a subprocess.
    out = []
    for dist in ("mlflow", "transformers", "torch", "safetensors", "tokenizers"):
        try:
            out.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pass
    return out


def _save_transformers_with_hf_folder(path, mlflow_model=None, *, hf_dir: str, **kwargs) -> None:
    """``save_model`` of the flavour passed to ``Model.log``: MLflow's transformers flavour, then its
    ``model/`` subfolder replaced by an exact copy of ``hf_dir`` (weights, config and tokenizer)."""
    import mlflow.transformers

    from amopo.models import load_model, load_tokenizer

    # MLflow 3.17 cannot save a local checkpoint path with transformers 5, so build from memory.
    # An absolute hf_dir also keeps MLflow from looking the name up on the Hugging Face hub.
    components = {"model": load_model(hf_dir, dtype="auto"), "tokenizer": load_tokenizer(hf_dir)}
    mlflow.transformers.save_model(components, path=path, mlflow_model=mlflow_model, **kwargs)
    target = Path(path) / store.HF_SUBPATH
    shutil.rmtree(target)
    shutil.copytree(hf_dir, target)


_HF_FOLDER_FLAVOR = types.SimpleNamespace(__name__="mlflow.transformers",
                                          save_model=_save_transformers_with_hf_folder)


def _find_by_digest(client, name: str, fingerprint: str):
    found = client.search_model_versions(f"name='{name}' and tags.`{store.DIGEST_TAG}`='{fingerprint}'")
    return max(found, key=lambda v: int(v.version)) if found else None


def _registered_model_exists(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException as exc:
        if store.is_not_found(exc):
            return False
        raise


def _summary(client, uri: str, name: str, version: str, alias: str, run_id: str | None, reused: bool) -> dict:
    base = client.get_model_version_download_uri(name, version).rstrip("/")
    return {"name": name, "version": int(version), "alias": alias, "reused": reused,
            "model_uri": f"models:/{name}/{version}", "alias_uri": f"models:/{name}@{alias}" if alias else None,
            "hf_artifact_uri": f"{base}/{store.HF_SUBPATH}", "registration_run_id": run_id,
            "tracking_uri": uri}


def _lineage_tags(cfg: RegisterConfig, trained, fingerprint: str) -> dict[str, str]:
    tags = {store.DIGEST_TAG: fingerprint, store.HF_SUBPATH_TAG: store.HF_SUBPATH,
            "amopo.train_dir": str(Path(cfg.train_dir).resolve())}
    for key, value in ((store.TRAINING_RUN_TAG, trained.training_run_id), (store.BASE_MODEL_TAG, trained.base_model),
                       (store.OBJECTIVE_TAG, trained.objective)):
        if value:
            tags[key] = str(value)
    tags.update({f"amopo.{k}": v for k, v in trained.info.items()})
    if cfg.eval_metrics:
        tags["amopo.eval_metrics"] = str(Path(cfg.eval_metrics).resolve())
    if cfg.comparison:
        tags.update(comparison_tags(Path(cfg.comparison), cfg.comparison_label))
    return tags


def comparison_tags(folder: Path, label: str | None = None) -> dict[str, str]:
    """``amopo.comparison.best``, ``.objectives`` and ``.within_noise.<metric>`` (is the leader's lead
    within noise) from ``folder/comparison.json``; with ``label``, also ``.label`` and ``.role``
    ("best" for the comparison's best entry, else "candidate")."""
    try:
        flat = json.loads((folder / "comparison.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder}: not a comparison folder (comparison.json: {exc})") from None
    tags = {"amopo.comparison.best": str(flat.get("best") or ""),
            "amopo.comparison.objectives": ",".join(map(str, flat.get("objectives") or []))}
    for key, value in flat.items():
        if key.startswith("leader/") and key.endswith("/within_noise"):
            tags[f"amopo.comparison.within_noise.{key[len('leader/'):-len('/within_noise')]}"] = str(value)
    if label:
        if label not in (flat.get("objectives") or []):
            raise ConfigError(f"{folder}: '{label}' is not one of the objectives compared "
                              f"({', '.join(map(str, flat.get('objectives') or []))})")
        tags.update({"amopo.comparison.label": label,
                     "amopo.comparison.role": "best" if label == flat.get("best") else "candidate"})
    return tags


def register(cfg: RegisterConfig) -> dict:
    """Register the model of ``cfg.train_dir`` (see the module docstring); returns a summary with the
    version, ``models:/`` URIs and the artifact URI of the Hugging Face folder."""
    import mlflow
    from mlflow.models import Model, infer_signature

    from amopo.tracking import Run

    if not cfg.train_dir:
        raise ConfigError("register: --train-dir is required (the output folder of `amopo train`)")
    trained = read_training_output(cfg.train_dir)
    metrics = dict(trained.metrics)
    if cfg.eval_metrics:
        metrics.update(read_eval_metrics(cfg.eval_metrics))
    fingerprint = digest(trained.model_dir, metrics)
    if cfg.registry == "kubeflow":
        from amopo.registry import kubeflow

        return kubeflow.register(cfg, trained, metrics, fingerprint, _lineage_tags(cfg, trained, fingerprint),
                                 comparison_tags(Path(cfg.comparison), cfg.comparison_label) if cfg.comparison else {})

    client, uri = store.connect(cfg.mlflow_tracking_uri, attempts=cfg.connect_attempts, first_delay_s=cfg.connect_backoff_s)
    with store.registry_errors(f"looking up '{cfg.registered_model_name}'", uri):
        existing = _find_by_digest(client, cfg.registered_model_name, fingerprint)
        if existing is not None:
            if cfg.alias:
                client.set_registered_model_alias(cfg.registered_model_name, cfg.alias, existing.version)
            if cfg.comparison:
                for key, value in comparison_tags(Path(cfg.comparison), cfg.comparison_label).items():
                    client.set_model_version_tag(cfg.registered_model_name, existing.version, key, value)
            print(f"{cfg.registered_model_name} version {existing.version} already holds this model and these metrics"
                  + (f"; alias '{cfg.alias}' points to it" if cfg.alias else ""), flush=True)
            return _summary(client, uri, cfg.registered_model_name, existing.version, cfg.alias, existing.run_id, reused=True)
        created_model = not _registered_model_exists(client, cfg.registered_model_name)

    lineage = _lineage_tags(cfg, trained, fingerprint)
    run, version = None, None
    try:
        run = Run(True, uri, cfg.mlflow_experiment, run_name=f"register-{cfg.registered_model_name}", tags=lineage)
        run.log_metrics(metrics)
        if cfg.comparison:
            for item in sorted(Path(cfg.comparison).iterdir()):
                if item.is_file():
                    run.log_artifact(item, "comparison")
        signature = infer_signature(["prompt"], ["completion"], params={"max_new_tokens": 64})
        info = Model.log(artifact_path=None, name="model", flavor=_HF_FOLDER_FLAVOR, hf_dir=str(trained.model_dir.resolve()),
                         task="text-generation", signature=signature, pip_requirements=_requirements())
        mv = mlflow.register_model(info.model_uri, cfg.registered_model_name, tags={**lineage, **store.metrics_to_tags(metrics)})
        version = mv.version
        if cfg.alias:
            client.set_registered_model_alias(cfg.registered_model_name, cfg.alias, version)
    except BaseException as exc:
        _roll_back(client, cfg.registered_model_name, version, created_model)
        if run is not None:
            _end_quietly(run, "FAILED")
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise RegistryError(f"registering {cfg.train_dir} as '{cfg.registered_model_name}' failed; nothing was registered "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from exc
    with store.registry_errors("closing the registration run", uri):
        run.end()
        summary = _summary(client, uri, cfg.registered_model_name, version, cfg.alias, run.run_id, reused=False)
    print(f"registered {cfg.registered_model_name} version {version}" + (f" (alias '{cfg.alias}')" if cfg.alias else "")
          + f" from {cfg.train_dir}", flush=True)
    return summary


def _end_quietly(run, status: str) -> None:
    try:
        run.end(status)
    except Exception:
        pass


def _roll_back(client, name: str, version: str | None, created_model: bool) -> None:
    """Best effort: remove a half-made version (and a registered model this call created)."""
    try:
        if version is not None:
            client.delete_model_version(name, version)
        if created_model and _registered_model_exists(client, name):
            if not client.search_model_versions(f"name='{name}'"):
                client.delete_registered_model(name)
    except Exception as exc:  # the original error matters more; say what is left behind
        print(f"warning: could not roll back '{name}' version {version}: {exc}", flush=True)
