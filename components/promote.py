"""Promote: move alias "champion" to the served challenger when it beats the current champion."""

from typing import NamedTuple

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote_model(registered_name: str, version: int, gate_metric: str, min_improvement: float, thresholds: str,
                  mlflow_tracking_uri: str, decision: dsl.Output[dsl.Markdown], registry: str = "mlflow",
                  model_registry_url: str = ""
                  ) -> NamedTuple("PromoteOutputs", promoted=bool, champion_version=int):
    """The registry gate (thresholds AND beats the champion on ``gate_metric``; the first version only
    needs the thresholds); its reasons are recorded on the version and in ``decision``. ``registry``
    "kubeflow": the versions of the Kubeflow Model Registry at ``model_registry_url`` (``version`` is
    the version's id)."""
    from collections import namedtuple
    from pathlib import Path

    from amopo.registry.promote import PromoteConfig, promote

    cfg = PromoteConfig(registered_model_name=registered_name, version=version, gate_metric=gate_metric,
                        gate_min_improvement=min_improvement,
                        gate_thresholds=[t.strip() for t in thresholds.split(",") if t.strip()],
                        mlflow_tracking_uri=mlflow_tracking_uri or None, registry=registry,
                        model_registry_url=model_registry_url)
    cfg.validate()
    summary = promote(cfg)
    verdict = "promoted to champion" if summary["promoted"] else "not promoted"
    lines = [f"**version {summary['version']}: {verdict}** (champion: {summary['champion_version']})", ""]
    Path(decision.path).write_text("\n".join(lines + [f"- {r}" for r in summary["reasons"]]) + "\n")
    outputs = namedtuple("PromoteOutputs", ["promoted", "champion_version"])
    return outputs(bool(summary["promoted"]), int(summary["champion_version"] or 0))
