"""Stand-ins for train_model and evaluate_model in local-runner tests of the compare component: they
write constructed training and evaluation folders in seconds, with no model."""

from kfp import dsl


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fake_train(objective: str, model: dsl.Output[dsl.Model]):
    """A training output folder: metrics.json, train_config.yaml, a two-step history.jsonl, model/."""
    import json
    from pathlib import Path

    out = Path(model.path)
    (out / "model").mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"objective": objective, "steps": 2}))
    (out / "train_config.yaml").write_text(f"objective: {objective}\nbeta: null\n")
    (out / "history.jsonl").write_text("".join(json.dumps({"step": s, "tokens_per_s": 100.0 * s,
                                                           "seconds_per_step": 0.5}) + "\n" for s in (1, 2)))
    model.metadata["objective"] = objective


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fake_evaluate(model: dsl.Input[dsl.Model], accuracy: float, results: dsl.Output[dsl.Artifact]):
    """An evaluation folder of ``model``: metrics.json (held-out accuracy on 40 pairs), report.json."""
    import json
    from pathlib import Path

    out = Path(results.path)
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"pref_accuracy/plain": accuracy, "pref_accuracy/pairs": 40.0}))
    (out / "report.json").write_text(json.dumps({"model": str(Path(model.path) / "model")}))
