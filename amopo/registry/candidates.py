"""Every objective of a comparison registered as a version of its own, tagged with its entry and role.

The comparison's best entry goes on to the gate as today; registering all of them keeps the losers
at hand (to deploy, to compare again later) without an alias, so no alias moves. Each version is
tagged ``amopo.comparison.label`` (its entry), ``amopo.comparison.role`` ("best" or "candidate")
and the comparison's verdict (:func:`amopo.registry.register.comparison_tags`). The gate's
registration of the best entry then finds that version by its content digest and gives it the
alias ``challenger`` instead of registering it twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from amopo.compare.entries import pair_evaluations
from amopo.errors import ConfigError
from amopo.registry.register import RegisterConfig, register


def register_candidates(labels: Sequence[str], train_dirs: Sequence[Path], eval_dirs: Sequence[Path],
                        comparison: Path, *, name: str, tracking_uri: str | None = None) -> list[dict]:
    """Register each entry (``labels[i]`` trained in ``train_dirs[i]``; evaluations paired to trainings
    by the model they evaluated) with no alias; returns the registration summaries, in order, each
    with its ``label``."""
    if len(labels) != len(train_dirs):
        raise ConfigError(f"register candidates: {len(labels)} labels for {len(train_dirs)} training folders")
    out = []
    for label, train_dir, eval_dir in zip(labels, train_dirs, pair_evaluations(list(map(Path, train_dirs)),
                                                                             list(map(Path, eval_dirs)))):
        cfg = RegisterConfig(train_dir=str(train_dir), eval_metrics=str(Path(eval_dir) / "metrics.json"), registered_model_name=name,
                             alias="", mlflow_tracking_uri=tracking_uri, mlflow_experiment="amopo-registry",
                             comparison=str(comparison), comparison_label=label)
        cfg.validate()
        out.append({**register(cfg), "label": label})
    return out
