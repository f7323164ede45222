"""Gate: may this model be registered? Thresholds on its evaluation AND it beats its own base model."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gate_model(results: dsl.Input[dsl.Artifact], gate_metric: str, min_improvement: float, thresholds: str,
               against_base: bool, decision: dsl.Output[dsl.Markdown]) -> bool:
    """``thresholds``: comma-separated "key>=value" conditions on the evaluation's metrics.json (any key,
    e.g. "steer/verbosity/accuracy>=0.6"). ``gate_metric``: the pipeline passes pref_accuracy/plain by
    default (amopo.registry.gate.DEFAULT_METRIC).
    ``against_base``: the model must also beat its base model on ``gate_metric`` (measured by the
    same evaluation); when false the thresholds decide alone.

    Returns whether the gate passed; the decision and its reasons go to ``decision`` (first line
    ``**gate: passed**`` or ``**gate: rejected**``, then one reason per line). A single return value
    on purpose: KFP's local runner resolves only a task's ``Output`` inside a ``dsl.If`` condition.
    """
    import json
    from pathlib import Path

    from amopo.registry.gate import decide_against_base, parse_threshold

    flat = json.loads((Path(results.path) / "metrics.json").read_text())
    limits = [parse_threshold(t) for t in thresholds.split(",") if t.strip()]
    verdict = decide_against_base(flat, metric=gate_metric, min_improvement=min_improvement, thresholds=limits,
                                  compare=against_base)
    lines = [f"**gate: {'passed' if verdict.promote else 'rejected'}**", ""] + [f"- {r}" for r in verdict.reasons]
    Path(decision.path).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return bool(verdict.promote)
