"""One name per concept: a pipeline parameter that sets a step's option has the option's name, which
is also its YAML key and (dashed) its CLI flag; the names the layers used to disagree on are gone."""

import dataclasses

import pytest

from amopo.cli import STEPS, _load
from pipelines.params import pipeline_parameters

# pipeline parameter → the `amopo` subcommands whose option of the same name it sets
SHARED = {
    "data_source": ["prepare", "annotate"], "data_format": ["prepare", "annotate"], "eval_source": ["prepare"],
    "dimensions": ["prepare", "evaluate"], "base_model": ["prepare", "train"], "max_length": ["prepare", "train", "evaluate"],
    "objective": ["train"], "beta": ["train"], "gamma": ["train"], "learning_rate": ["train"], "max_steps": ["train"],
    "batch_size": ["train"], "gradient_accumulation_steps": ["train"], "fsdp_config": ["train"],
    "heldout_max_pairs": ["train", "evaluate"], "judge": ["annotate", "evaluate", "compare"],
    "judge_model_name": ["annotate", "evaluate", "compare"], "lm_eval_tasks": ["evaluate"], "lm_eval_limit": ["evaluate"],
    "mlflow_tracking_uri": ["train", "evaluate", "register", "promote", "serve"],
    "mlflow_experiment": ["train", "evaluate", "register"], "registered_model_name": ["register", "promote"],
    "gate_metric": ["promote"], "gate_min_improvement": ["promote"], "gate_thresholds": ["promote"],
    "registry": ["register", "promote"], "model_registry_url": ["register", "promote"],
}
RETIRED = {"lr", "loss", "model_name_or_path", "grad_accum", "eval_max_pairs", "pref_max_pairs", "judge_name", "tasks",
           "input", "eval_input", "format", "tracking_uri", "experiment", "accelerate_config", "eval_batch_size"}


def _fields(step: str) -> set[str]:
    return {f.name for f in dataclasses.fields(_load(step)[0])}


@pytest.mark.parametrize("param", sorted(SHARED))
def test_a_shared_concept_has_one_name_in_the_pipeline_and_in_each_step(param):
    assert param in pipeline_parameters()
    assert all(param in _fields(step) for step in SHARED[param]), [s for s in SHARED[param] if param not in _fields(s)]


def test_the_retired_names_are_nowhere():
    names = set(pipeline_parameters())
    for step in STEPS:
        names |= _fields(step)
    assert names & RETIRED == set()
