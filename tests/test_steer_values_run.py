"""The steering recipe's values file through the whole local pipeline (KFP SubprocessRunner).

configs/pipeline/steer.yaml as `amopo pipeline run --local --values` reads it, on the tiny test model
for 2 steps instead of SmolLM2-135M for 900 (the recipe's figures are bench/steer_recipe.py's): the
model is trained on verbosity pairs in both orientations, so every steering part of the pipeline
runs on it: evaluation measures verbosity by length, the smoke step steers the served model through
chat_template_kwargs, the endpoint check compares the endpoint's steered answers with the
checkpoint's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "configs" / "pipeline" / "steer.yaml"


@pytest.mark.slow
def test_the_steering_values_file_runs_the_whole_pipeline_and_every_step_steers(tmp_path, tiny_model_dir):
    from pipelines.local_run import run_local
    from pipelines.values import load_values

    values = load_values(VALUES).parameters
    params = {**values, "base_model": str(tiny_model_dir),
              "judge": str(tiny_model_dir), "max_steps": 2, "heldout_max_pairs": 8,
              "train_options": {**values["train_options"], "progress": False},
              "eval_num_instructions": 2, "eval_max_new_tokens": 4, "lm_eval_tasks": "",
              "eval_options": {"judge_top_k": 10000, "lc_bootstrap": 10, "progress": False,
                               "steer_num_instructions": 2, "steer_bootstrap": 10},
              "gate_against_base": False, "gate_thresholds": "pref_accuracy/pairs>=1"}
    out = run_local(params, work_dir=tmp_path / "work")

    assert out["final_state"] == "SUCCEEDED" and out["gate_passed"] is True
    spec = json.loads(Path(out["model_dir"], "amopo_conditioning.json").read_text())
    assert spec["steer_trained"] == ["verbosity"]
    metrics = json.loads(Path(out["metrics_path"]).read_text())
    # verbosity measured by length at each requested level, for the model and its base (the tiny
    # model's answers all run to max_new_tokens, so the rank correlation is undefined and left out)
    for prefix in ("steer", "steer_base"):
        at = sorted(k for k in metrics if k.startswith(f"{prefix}/verbosity/mean_tokens_at_") and not k.endswith("_se"))
        assert len(at) >= 2 and all(0 < metrics[k] <= 4 * 4 for k in at), at
        assert f"{prefix}/verbosity/miscalibration" in metrics
    smoke = Path(out["logs"]["smoke-test-endpoint"]).read_text()
    assert "steering: mean completion tokens with verbosity requested at level 0" in smoke
    check = Path(out["logs"]["check-endpoint"]).read_text()
    for level in (0, 4):   # the endpoint steered exactly as the checkpoint's own chat template
        assert f"endpoint check: verbosity at {level} through chat_template_kwargs:" in check, check[-2000:]
    assert check.count("100% the same answers") >= 2
