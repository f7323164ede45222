"""Benchmarks through the lm-eval harness (EleutherAI/lm-evaluation-harness), not a re-implementation.

Tasks are names from lm-eval's registry (``ifeval``, ``mmlu``, ``gsm8k`` … — their datasets come
from the hub) or the tasks shipped in ``amopo/evaluate/tasks/`` over shipped JSONL:
``amopo_arithmetic`` (generation, exact match on the last integer of the reply) and
``amopo_facts_mc`` (multiple choice, log-likelihood accuracy). lm-eval's full registry is indexed
only when a requested task is not a shipped one (indexing it takes seconds).

A local folder runs with lm-eval's ``hf`` model (its chat template applied when it has one). An
endpoint runs generation tasks with ``local-chat-completions`` and log-likelihood tasks (multiple
choice, perplexity) with ``local-completions``, which scores each choice through ``/completions``
with ``echo``, ``logprobs`` and ``max_tokens: 1`` (``amopo serve`` and vLLM answer those). lm-eval
splits every request into context and continuation tokens itself, so it needs the served model's
tokenizer (``tokenizer``: its folder or hub id) and sends token ids; without one those tasks are
skipped and reported as skipped, with the reason.

:func:`compare_endpoint_to_folder` runs the same tasks both ways, the post-deploy check that the
served model is the trained one.

Metrics come back flat as ``lm_eval/<task>/<metric>[/<filter>]`` (filter "none" left out).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Sequence

import yaml

from amopo.errors import AmopoError, ConfigError

SHIPPED_TASKS_DIR = Path(__file__).parent / "tasks"
DEFAULT_TASKS = ["amopo_arithmetic", "amopo_facts_mc"]
LOGLIKELIHOOD_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling")


class EndpointMismatchError(AmopoError):
    """The served model scores differently from the model folder it should be serving.

    ``result`` is what :func:`compare_endpoint_to_folder` would have returned.
    """

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def shipped_tasks() -> list[str]:
    """Names of the tasks in ``amopo/evaluate/tasks/``."""
    names = []
    for path in sorted(SHIPPED_TASKS_DIR.glob("*.yaml")):
        # ``!function`` tags are lm-eval's; read the plain keys only.
        text = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if "!function" not in line)
        names.append(str(yaml.safe_load(text)["task"]))
    return names


def metric_key(task: str, name: str) -> str:
    """``acc,none`` → ``lm_eval/<task>/acc``; ``exact_match,last_number`` → ``…/exact_match/last_number``."""
    metric, _, filt = name.partition(",")
    parts = [task, metric] + ([filt] if filt and filt != "none" else [])
    return "lm_eval/" + "/".join(re.sub(r"[^\w.\- ]", "_", p) for p in parts)


def flatten_results(results: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for task, values in results.items():
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or name in ("sample_len",):
                continue
            if "," not in name:  # alias/name/sample counts
                continue
            if math.isfinite(float(value)):
                out[metric_key(task, name)] = float(value)
    return out


def _custom_dataset_hint(record: logging.LogRecord) -> bool:
    """Drop lm-eval's advice on passing kwargs to ``custom_dataset`` tasks: the shipped tasks need none."""
    return "Custom kwargs can be passed" not in record.getMessage()


def _task_manager(names: Sequence[str]):
    from lm_eval.tasks import TaskManager

    include_defaults = any(name not in shipped_tasks() for name in names)
    return TaskManager(include_path=str(SHIPPED_TASKS_DIR), include_defaults=include_defaults)


def _load_tasks(manager, names: Sequence[str]) -> dict:
    try:
        return manager.load(list(names))["tasks"]
    except KeyError as exc:
        raise ConfigError(f"lm-eval: unknown task ({exc.args[0] if exc.args else exc}); shipped tasks: "
                          f"{', '.join(shipped_tasks())}; registry tasks such as ifeval, mmlu, gsm8k need the hub") from None
    except (OSError, ValueError, RuntimeError) as exc:  # e.g. a registry task's dataset with no hub to fetch it from
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ConfigError(f"lm-eval: cannot load task(s) {', '.join(names)}: {type(exc).__name__}: {first}") from None


def _uses_template(path: str, chat_template: bool) -> bool:
    from amopo.models import load_tokenizer

    return chat_template and bool(getattr(load_tokenizer(path), "chat_template", None))


def _folder_run(model_ref, chat_template: bool, tasks: list) -> dict:
    from amopo.models import resolve_model

    path = resolve_model(model_ref)
    return {"model": "hf", "model_args": {"pretrained": path, "dtype": "float32", "trust_remote_code": False},
            "chat_template": _uses_template(path, chat_template), "tasks": tasks}


def _endpoint_runs(endpoint, loaded: dict, tokenizer: str | None, chat_template: bool) -> tuple[list[dict], dict]:
    """The lm-eval runs of an endpoint (generation by chat, log-likelihoods by completions) and the
    tasks skipped, with why."""
    common = {"model": endpoint.model, "num_concurrent": 1, "max_retries": max(1, endpoint.retries)}
    if endpoint.api_key:
        common["header"] = {"Authorization": f"Bearer {endpoint.api_key}"}
    runs, skipped = [], {}
    generation = [t for t in loaded.values() if t.OUTPUT_TYPE == "generate_until"]
    scored = {n: t for n, t in loaded.items() if t.OUTPUT_TYPE in LOGLIKELIHOOD_TYPES}
    for name, task in loaded.items():
        if task.OUTPUT_TYPE != "generate_until" and task.OUTPUT_TYPE not in LOGLIKELIHOOD_TYPES:
            skipped[name] = f"output type {task.OUTPUT_TYPE} cannot be run on an endpoint"
    if generation:
        runs.append({"model": "local-chat-completions", "chat_template": True, "tasks": generation,
                     "model_args": {**common, "base_url": endpoint.base + "/chat/completions",
                                    "tokenized_requests": False}})
    if scored and not tokenizer:
        for name, task in scored.items():
            skipped[name] = (f"needs log-likelihoods ({task.OUTPUT_TYPE}): lm-eval's local-completions splits each "
                             "request into context and continuation with the served model's tokenizer; give it "
                             "(tokenizer / --model-tokenizer: the served model's folder or hub id) to score this task "
                             "through /completions")
    elif scored:
        from amopo.models import resolve_model

        path = resolve_model(tokenizer)
        runs.append({"model": "local-completions", "chat_template": _uses_template(path, chat_template),
                     "tasks": list(scored.values()),
                     "model_args": {**common, "base_url": endpoint.base + "/completions", "tokenizer": path,
                                    "tokenizer_backend": "huggingface", "tokenized_requests": True}})
    return runs, skipped


def _answers(samples: list[dict]) -> dict[int, object]:
    """Each document's answer: the chosen option of a multiple-choice task (the highest
    log-likelihood), the filtered reply of a generation task; other outputs are left out."""
    out = {}
    for sample in samples:
        resps = sample.get("filtered_resps")
        if isinstance(resps, (list, tuple)) and resps and all(isinstance(r, (list, tuple)) and len(r) == 2
                                                                and isinstance(r[0], (int, float)) for r in resps):
            out[int(sample["doc_id"])] = max(range(len(resps)), key=lambda i: resps[i][0])
        elif isinstance(resps, (list, tuple)) and resps and isinstance(resps[0], str):
            out[int(sample["doc_id"])] = resps[0]
        elif isinstance(resps, str):
            out[int(sample["doc_id"])] = resps
    return out


def _simple_evaluate(run: dict, manager, *, limit: int, batch_size: int, seed: int, endpoint,
                     log_samples: bool = False) -> dict:
    import requests
    import torch
    from lm_eval import simple_evaluate

    device = ("cuda" if torch.cuda.is_available() else "cpu") if run["model"] == "hf" else None
    try:
        return simple_evaluate(model=run["model"], model_args=run["model_args"], tasks=run["tasks"],
                               task_manager=manager, limit=limit or None, batch_size=batch_size, device=device,
                               apply_chat_template=run["chat_template"], log_samples=log_samples,
                               bootstrap_iters=1000,
                               random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                               fewshot_random_seed=seed)
    except requests.RequestException as exc:
        if endpoint is None:
            raise
        from amopo.evaluate.endpoint import EndpointError

        hint = (" (log-likelihood tasks need echo and logprobs on /completions: amopo serve and vLLM have them)"
                if run["model"] == "local-completions" else "")
        raise EndpointError(f"{run['model_args']['base_url']}: lm-eval's {run['model']} failed: "
                            f"{str(exc)[:300]}{hint}") from None


def run_lm_eval(model_ref, tasks: Sequence[str], *, limit: int = 0, batch_size: int = 8,
                chat_template: bool = True, endpoint=None, seed: int = 0,
                tokenizer: str | None = None, answers: bool = False) -> tuple[dict[str, float], dict]:
    """Run ``tasks`` on a local model folder (``model_ref``) or an ``endpoint`` (a ChatEndpoint);
    ``tokenizer`` is the served model's tokenizer (folder or hub id), which an endpoint's
    log-likelihood tasks need.

    Returns the flat metrics and a report: lm-eval's results, sample counts, skipped tasks, the runs,
    and with ``answers`` each document's answer per task (``{task: {doc_id: answer}}``).
    """
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    task_log = logging.getLogger("lm_eval.api.task")
    if _custom_dataset_hint not in task_log.filters:
        task_log.addFilter(_custom_dataset_hint)
    manager = _task_manager(tasks)
    loaded = _load_tasks(manager, tasks)
    if endpoint is None:
        runs, skipped = [_folder_run(model_ref, chat_template, list(loaded.values()))], {}
    else:
        runs, skipped = _endpoint_runs(endpoint, loaded, tokenizer, chat_template)
    report = {"runs": [], "limit": limit or None, "skipped": skipped, "results": {}, "n-samples": {},
              "versions": {}}
    if answers:
        report["answers"] = {}
    for run in runs:
        results = _simple_evaluate(run, manager, limit=limit, batch_size=batch_size, seed=seed, endpoint=endpoint,
                                   log_samples=answers)
        if answers:
            report["answers"].update({task: _answers(samples) for task, samples in results.get("samples", {}).items()})
        report["runs"].append({"model": run["model"], "chat_template": run["chat_template"],
                               "tasks": sorted(results["results"]),
                               "model_args": {k: v for k, v in run["model_args"].items() if k != "header"}})
        for key in ("results", "n-samples", "versions"):
            report[key].update(results.get(key, {}))
    return flatten_results(report["results"]), report


def compare_endpoint_to_folder(endpoint_url: str, model_name: str | None, folder: str,
                               tasks: Sequence[str] = ("amopo_facts_mc",), limit: int = 20,
                               tolerance: float = 0.05, *, api_key_env: str | None = None, batch_size: int = 8,
                               chat_template: bool = True, seed: int = 0, retries: int = 3) -> dict:
    """Run ``tasks`` on the served model and on ``folder`` and check that they score alike.

    The endpoint's log-likelihood tasks go through ``/completions`` with ``folder``'s tokenizer, so
    both sides score the same token ids. Two checks per task, both within ``tolerance``: every
    metric (acc, exact_match …) differs by at most ``tolerance``, and the two gave the same answer
    (chosen option, filtered reply) on at least 1 - ``tolerance`` of the examples, the sharper test
    when scores sit near chance. 0.05 is one example in ``limit`` = 20: room for a server in bf16 on
    GPU to flip a near-tie against the fp32 folder; 0 asks for identical results.

    Returns {"agree": True, "endpoint", "model_name", "folder", "tasks", "limit", "tolerance",
    "metrics": {key: {"endpoint", "folder", "difference"}}, "same_answers": {task: fraction}}.
    Raises EndpointMismatchError (naming the task, the metric, both scores and the tolerance) when a
    check fails or a metric is missing on one side: the served model is not the trained one.
    """
    from amopo.evaluate.endpoint import ChatEndpoint

    if tolerance < 0:
        raise ConfigError(f"compare_endpoint_to_folder: tolerance must be >= 0, got {tolerance}")
    if not tasks:
        raise ConfigError("compare_endpoint_to_folder: no tasks to compare")
    endpoint = ChatEndpoint(endpoint_url, model_name, api_key_env=api_key_env, retries=retries)
    options = {"limit": limit, "batch_size": batch_size, "chat_template": chat_template, "seed": seed}
    served, served_report = run_lm_eval(folder, tasks, endpoint=endpoint, tokenizer=folder, answers=True,
                                        **options)
    trained, trained_report = run_lm_eval(folder, tasks, answers=True, **options)
    metrics, problems = {}, []
    for key in sorted(set(served) | set(trained)):
        if "_stderr" in key:
            continue
        task, metric = key.split("/", 2)[1], key.split("/", 2)[2]
        a, b = served.get(key), trained.get(key)
        diff = abs(a - b) if a is not None and b is not None else None
        metrics[key] = {"endpoint": a, "folder": b, "difference": diff}
        if diff is None or diff > tolerance:
            shown = lambda v: "missing" if v is None else f"{v:.4f}"  # noqa: E731
            problems.append(f"task {task}: {metric} {shown(a)} at the endpoint vs {shown(b)} from the folder"
                            + (f" (difference {diff:.4f} > tolerance {tolerance:g})" if diff is not None else ""))
    same = {}
    for task, mine in served_report["answers"].items():
        theirs = trained_report["answers"].get(task, {})
        docs = sorted(set(mine) & set(theirs))
        if not docs:
            continue
        agreed = sum(mine[d] == theirs[d] for d in docs)
        same[task] = agreed / len(docs)
        if same[task] < 1 - tolerance:
            problems.append(f"task {task}: the same answer on {agreed} of {len(docs)} examples "
                            f"({same[task]:.4f} < 1 - tolerance {tolerance:g})")
    for task, why in served_report["skipped"].items():
        problems.append(f"task {task}: not run at the endpoint ({why})")
    result = {"agree": not problems, "endpoint": endpoint.base, "model_name": endpoint.model, "folder": str(folder),
              "tasks": list(tasks), "limit": limit or None, "tolerance": tolerance, "metrics": metrics,
              "same_answers": same}
    if problems:
        raise EndpointMismatchError(
            f"the served model is not the trained one: {endpoint.base} (model '{endpoint.model}') and {folder} "
            f"disagree beyond tolerance {tolerance:g} on {limit or 'all'} examples per task: " + "; ".join(problems),
            result)
    return result
