"""Judge-annotated dimensions (`amopo annotate`): score the responses of a preference data file on
one more dimension with a judge, and write the file back in the same format for `amopo prepare`.

    config.py    AnnotateConfig: options, output/cache/report paths
    rubric.py    the versioned rubric prompt (prompts/annotate_v1.yaml) as a judge PromptSet
    sources.py   reading + validating HelpSteer2 rows / AMoPO records; writing them back atomically
    cache.py     the per-response answer cache that lets an interrupted run resume
    judging.py   building the judge, asking in chunks through the cache, rounding to a level
    run.py       annotate(): the step and its report

The AMoPO authors added an instruction_following score (1–5) to HelpSteer2 with a strong judge;
``amopo annotate --data-source helpsteer2.jsonl --output annotated.jsonl`` does the same with any judge,
after which the default dimensions prepare. Counts in the report: ``asked`` verdicts requested from
the judge in this run; ``from_cache`` responses answered without asking (cached by an earlier
run, or the same prompt and response met earlier in the input).
"""

from amopo.annotate.config import AnnotateConfig
from amopo.annotate.rubric import load_rubric_prompt
from amopo.annotate.run import annotate

__all__ = ["AnnotateConfig", "annotate", "load_rubric_prompt"]
