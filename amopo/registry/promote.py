"""`amopo promote`: run the gate on a registered version and move the ``champion`` alias if it passes.

The candidate is ``--version`` or, by default, the version behind the ``challenger`` alias; its
metrics are the ``metric.*`` tags written by `amopo register`. The decision and every reason are
recorded as tags on the candidate (``amopo.gate.*``) whether it is promoted or not.
"""

from __future__ import annotations

from dataclasses import dataclass

from amopo.config import field
from amopo.errors import ConfigError
from amopo.registry import store
from amopo.registry.gate import DEFAULT_METRIC, decide, parse_threshold
from amopo.registry.register import check_name


@dataclass
class PromoteConfig:
    registered_model_name: str = field("amopo", help="registered model name")
    version: int = field(0, help="version to consider (0: the version behind --candidate-alias)")
    candidate_alias: str = field("challenger", help="alias of the candidate when --version is 0")
    champion_alias: str = field("champion", help="alias moved to the candidate when the gate passes")
    gate_metric: str = field(DEFAULT_METRIC, help="primary metric key (a key of the eval metrics.json) the "
                                                  "candidate must improve over the champion; default: held-out "
                                                  "accuracy on the plain prompt")
    gate_min_improvement: float = field(0.0, help="the candidate must beat the champion's primary metric "
                                                  "by at least this much (and by more than 0)")
    gate_higher_is_better: bool = field(True, help="false when a lower primary metric is better")
    gate_thresholds: list[str] = field(default_factory=list,
                                       help='conditions on the candidate\'s metrics, e.g. "winrate/lc>=0.5" '
                                            '"dimension/verbosity/delta<=0.2" "steer/verbosity/accuracy>=0.6"')
    mlflow_tracking_uri: str | None = field(None, help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI, "
                                                "else the embedded sqlite store under runs/mlflow)")
    connect_attempts: int = field(5, help="tries to reach an MLflow server before giving up")
    connect_backoff_s: float = field(1.0, help="first wait between tries (doubles each time, capped at 15 s)")
    registry: str = field("mlflow", help="the registry holding the versions: mlflow or kubeflow (Kubeflow Model "
                                         "Registry: --version is the version's id, aliases are its property "
                                         "amopo.alias; amopo.registry.kubeflow)")
    model_registry_url: str = field("", help="Kubeflow Model Registry REST address (registry kubeflow; its token: "
                                             "$AMOPO_MODEL_REGISTRY_TOKEN, else the pod's service account's)")

    def validate(self) -> None:
        from amopo.registry.kubeflow import check_registry

        check_name(self.registered_model_name)
        check_registry(self.registry, self.model_registry_url)
        if self.version < 0:
            raise ConfigError("version must be 0 (use the candidate alias) or a version number")
        if self.gate_min_improvement < 0:
            raise ConfigError("gate_min_improvement must be ≥ 0")
        for text in self.gate_thresholds:
            parse_threshold(text)


def promote(cfg: PromoteConfig) -> dict:
    """Gate the candidate against the current champion; move the champion alias when it passes.

    Returns the decision, its reasons and the champion version after the call.
    """
    if cfg.registry == "kubeflow":
        from amopo.registry import kubeflow

        return kubeflow.promote(cfg)
    client, uri = store.connect(cfg.mlflow_tracking_uri, attempts=cfg.connect_attempts, first_delay_s=cfg.connect_backoff_s)
    with store.registry_errors(f"promoting '{cfg.registered_model_name}'", uri):
        return _promote(client, uri, cfg)


def _promote(client, uri: str, cfg: PromoteConfig) -> dict:
    candidate = store.get_version(client, cfg.registered_model_name, version=cfg.version or None, alias=cfg.candidate_alias)
    champion = store.find_version_by_alias(client, cfg.registered_model_name, cfg.champion_alias)
    if champion is not None and champion.version == candidate.version:
        reasons = [f"version {candidate.version} is already '{cfg.champion_alias}'"]
        print(f"{cfg.registered_model_name} version {candidate.version}: already {cfg.champion_alias}", flush=True)
        return _summary(cfg, uri, candidate.version, False, reasons, champion.version)

    decision = decide(store.metrics_from_tags(candidate.tags),
                      store.metrics_from_tags(champion.tags) if champion is not None else None,
                      metric=cfg.gate_metric, min_improvement=cfg.gate_min_improvement,
                      thresholds=[parse_threshold(t) for t in cfg.gate_thresholds],
                      higher_is_better=cfg.gate_higher_is_better)
    # The alias moves first: a failure after it leaves a champion without recorded reasons rather
    # than a version recorded as promoted that is not the champion.
    if decision.promote:
        client.set_registered_model_alias(cfg.registered_model_name, cfg.champion_alias, candidate.version)
    tags = {store.GATE_DECISION_TAG: "promoted" if decision.promote else "rejected",
            store.GATE_REASONS_TAG: "; ".join(decision.reasons)[:4900],
            "amopo.gate.metric": cfg.gate_metric,
            "amopo.gate.min_improvement": repr(cfg.gate_min_improvement),
            "amopo.gate.thresholds": ", ".join(cfg.gate_thresholds),
            "amopo.gate.compared_with": champion.version if champion is not None else "none"}
    for key, value in tags.items():
        client.set_model_version_tag(cfg.registered_model_name, candidate.version, key, str(value))
    new_champion = candidate.version if decision.promote else (champion.version if champion is not None else None)
    verdict = "promoted to" if decision.promote else "not promoted to"
    print(f"{cfg.registered_model_name} version {candidate.version} {verdict} '{cfg.champion_alias}': {'; '.join(decision.reasons)}",
          flush=True)
    return _summary(cfg, uri, candidate.version, decision.promote, decision.reasons, new_champion)


def _summary(cfg: PromoteConfig, uri: str, version, promoted: bool, reasons: list[str], champion) -> dict:
    return {"name": cfg.registered_model_name, "version": int(version), "promoted": promoted, "reasons": reasons,
            "champion_version": int(champion) if champion is not None else None,
            "champion_uri": f"models:/{cfg.registered_model_name}@{cfg.champion_alias}" if champion is not None else None,
            "tracking_uri": uri}
