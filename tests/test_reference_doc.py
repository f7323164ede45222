"""docs/reference.md is generated from the code (pipelines/reference.py) and must be fresh, and
every option, flag and pipeline parameter in it must carry a help string."""

from amopo.cli import STEPS, _load
from pipelines import reference


def test_the_committed_reference_is_what_the_code_generates():
    assert reference.REFERENCE.is_file(), "docs/reference.md is missing: run python -m pipelines.reference"
    assert reference.REFERENCE.read_text(encoding="utf-8") == reference.render(), \
        "docs/reference.md is stale: run python -m pipelines.reference and commit the result"


def test_every_option_flag_and_parameter_has_help():
    missing = [f"amopo {name} {row['flag']}" for name in STEPS for row in reference.step_options(_load(name)[0])
               if not row["help"].strip()]
    missing += [f"amopo pipeline {action} {row['flag']}" for action, rows in reference.pipeline_cli_options().items()
                for row in rows if not row["help"].strip()]
    missing += [f"pipeline parameter {row['name']}" for row in reference.pipeline_parameter_rows()
                if not row["help"].strip()]
    assert missing == []


def test_the_reference_lists_every_subcommand_and_every_pipeline_parameter():
    from pipelines.params import pipeline_parameters

    text = reference.render()
    assert all(f"### amopo {name}" in text for name in STEPS)
    assert all(f"| `{name}` |" in text for name in pipeline_parameters())
    assert "| `--learning-rate` | `learning_rate` | float |" in text   # one name in flag and key


def test_the_compiled_pipeline_carries_the_parameter_descriptions():
    import yaml

    from pipelines.package import COMPILED

    pipeline_spec = next(yaml.safe_load_all(COMPILED.read_text()))   # then the platform spec
    described = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    assert all(spec.get("description") for spec in described.values())
