"""The ``annotate`` step: add a judge-scored dimension to the responses that lack it.

    annotate(AnnotateConfig(data_source=..., output=..., data_format="helpsteer2", dimension="instruction_following"))

1. Read and validate every row of the input (``sources``); any bad row stops the run first.
2. For each response lacking the dimension, look its verdict up in the answer cache (``cache``),
   and ask the judge for the rest in chunks, caching after each (``judging``).
3. Store each parseable verdict as the nearest whole level of the dimension's scale (halves up)
   with its provenance; an unparseable one is counted, reported and left unscored.
4. Write the output (same format) and ``OUTPUT.annotate-report.json`` atomically.

What ``amopo prepare`` then does with an unscored response: the conditioned prompt shows the
CHOSEN response's score, so a pair whose chosen response has no score on a requested dimension
stops ``prepare`` with a DataError naming the file, the line and the field
(``chosen.instruction_following``, reason ``missing_score``), unless ``--skip-invalid`` drops and
counts it. A rejected response without the score is accepted: AMoPO, SimPO and DPO never read it,
and the token cache holds NaN there (MODPO with that dimension as its margin would read it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from amopo.annotate.cache import AnswerCache, answer_key
from amopo.annotate.config import AnnotateConfig
from amopo.annotate.judging import ask, build_judge, to_level
from amopo.annotate.rubric import load_rubric_prompt
from amopo.annotate.sources import add_score, atomic_write, read_source, write_rows
from amopo.errors import ConfigError

ROUNDING = ("a local judge's expected level is rounded to the nearest whole level (halves up) and clamped to "
            "the scale; an endpoint judge's level is stored as given; the raw value is in the provenance")
MAX_EXAMPLES = 5


def _check_judge(judge, prompts) -> None:
    theirs = getattr(getattr(judge, "prompts", None), "identity", None)
    if theirs is not None and theirs != prompts.identity:
        raise ConfigError(f"the judge given was built with prompt {theirs.get('prompts_file')}, not "
                          f"{prompts.identity['prompts_file']} (build it with amopo.annotate.load_rubric_prompt)")


def _summary(report: dict) -> list[str]:
    c = report["counts"]
    lines = [f"annotated {report['dimension']['name']} on {c['to_score']} of {c['responses']} responses "
             f"({c['already_scored']} already scored) in {report['data_source']} -> {report['output_path']}",
             f"judge {report['judge'].get('judge', '-')}: {c['asked']} asked, {c['from_cache']} from the cache; "
             f"{c['scored']} scored, {c['unparseable']} unparseable"]
    if c["unparseable"]:
        lines.append(f"{c['unparseable']} unparseable verdicts left those responses without a score (examples in "
                     f"{report['report_path']}); prepare stops on a chosen response without it unless --skip-invalid")
    return lines


def annotate(cfg: AnnotateConfig, *, judge=None, echo: Callable[[str], None] | None = print) -> dict:
    """Run the step and return its report (also written as ``OUTPUT.annotate-report.json``).

    ``judge``: a judge to use instead of building one from ``cfg.judge`` (anything with
    ``rate(items, desc)`` and ``identity``, built with ``load_rubric_prompt(cfg.prompts, dim)``);
    the caller closes it. Raises ConfigError (options), DataError (file, line, field of a bad row)
    or EndpointError (the judge's URL, after retries with back-off); then no output is written,
    and the verdicts already given stay in the cache.
    """
    started = time.time()
    cfg.validate()
    dim = cfg.scored_dimension()
    prompts = load_rubric_prompt(cfg.prompts, dim)
    out = Path(cfg.output).expanduser()
    if out.is_dir():
        raise ConfigError(f"option 'output': {out} is a folder; give a file name")
    src = read_source(cfg.data_source, cfg.data_format, dim.name, max_chars=cfg.max_chars)
    cache = AnswerCache(cfg.cache_path())
    own = judge is None and bool(src.targets)
    if own:
        judge = build_judge(cfg, prompts)
    elif judge is not None:
        _check_judge(judge, prompts)
    identity = dict(judge.identity) if judge is not None else {}
    try:
        context = {"judge": identity, "prompts_sha256": prompts.identity["prompts_sha256"], "dimension": dim.name,
                   "levels": list(prompts.rating.labels),
                   "max_answer_chars": getattr(judge, "max_answer_chars", cfg.max_answer_chars)}
        keys = [answer_key(context, t.prompt, t.response) for t in src.targets]
        questions = {}
        for key, target in zip(keys, src.targets):
            if key not in cache and key not in questions:
                questions[key] = target
        from tqdm.auto import tqdm

        with tqdm(total=len(keys), initial=len(keys) - len(questions), desc=f"annotating {dim.name}",
                  unit="response", disable=not cfg.progress) as bar:
            asked = ask(judge, list(questions.items()), dim.name, cache, chunk_size=cfg.chunk_size,
                        on_chunk=bar.update) if questions else 0
    finally:
        if own:
            judge.close()

    provenance_base = {**identity, "prompt": prompts.rating.name, "prompt_version": prompts.rating.version,
                       "prompts_sha256": prompts.identity["prompts_sha256"]}
    scored, examples = 0, []
    for key, target in zip(keys, src.targets):
        answer = cache[key]
        level = None if answer.value is None else to_level(answer.value, dim)
        status = "unparseable" if level is None else "scored"
        add_score(src, target, dim.name, level, {**provenance_base, "value": answer.value, "raw": answer.raw,
                                                 "status": status})
        scored += level is not None
        if level is None and len(examples) < MAX_EXAMPLES:
            examples.append({"file": src.name, "line": target.line, "side": target.side, "raw": answer.raw[:300]})

    report = {
        "data_source": src.name, "data_format": cfg.data_format, "dimension": dim.to_json(), "judge": identity,
        "prompt": prompts.identity, "rounding": ROUNDING,
        "counts": {"rows": len(src.rows), "responses": src.responses, "already_scored": src.already_scored,
                   "to_score": len(keys), "asked": asked, "from_cache": len(keys) - asked, "scored": scored,
                   "unparseable": len(keys) - scored},
        "unparseable_examples": examples, "cache_torn_lines": cache.torn_lines,
        "output_path": str(out), "report_path": str(cfg.report_path()), "cache_path": str(cache.path),
    }
    write_rows(out, src.rows)
    report["seconds"] = round(time.time() - started, 3)
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    atomic_write(cfg.report_path(), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if echo:
        for line in _summary(report):
            echo(line)
    return report
