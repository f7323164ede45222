"""Benchmarks through the lm-eval harness (EleutherAI/lm-evaluation-harness), not a re-implementation.

Tasks are names from lm-eval's registry (``ifeval``, ``mmlu``, ``gsm8k`` … — their datasets come
from the hub) or the tasks shipped in ``amopo/evaluate/tasks/`` over shipped JSONL:
``amopo_arithmetic`` (generation, exact match on the last integer of the reply) and
``amopo_facts_mc`` (multiple choice, log-likelihood accuracy). lm-eval's full registry is indexed
only when a requested task is not a shipped one (indexing it takes seconds).

A local folder runs with lm-eval's ``hf`` model (its chat template applied when it has one); an
endpoint with ``local-chat-completions``, which gives no log-likelihoods: tasks that need them
(multiple choice, perplexity) are skipped for endpoints and reported as skipped.

Metrics come back flat as ``lm_eval/<task>/<metric>[/<filter>]`` (filter "none" left out).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Sequence

import yaml

from amopo.errors import ConfigError

SHIPPED_TASKS_DIR = Path(__file__).parent / "tasks"
DEFAULT_TASKS = ["amopo_arithmetic", "amopo_facts_mc"]


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


def run_lm_eval(model_ref, tasks: Sequence[str], *, limit: int = 0, batch_size: int = 8,
                chat_template: bool = True, endpoint=None, seed: int = 0) -> tuple[dict[str, float], dict]:
    """Run ``tasks`` on a local model folder (``model_ref``) or an ``endpoint`` (a ChatEndpoint).

    Returns the flat metrics and a report: lm-eval's results, sample counts, skipped tasks, config.
    """
    from lm_eval import simple_evaluate

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    task_log = logging.getLogger("lm_eval.api.task")
    if _custom_dataset_hint not in task_log.filters:
        task_log.addFilter(_custom_dataset_hint)
    manager = _task_manager(tasks)
    loaded = _load_tasks(manager, tasks)
    skipped = {}
    if endpoint is not None:
        for name, task in list(loaded.items()):
            if task.OUTPUT_TYPE != "generate_until":
                skipped[name] = f"needs log-likelihoods ({task.OUTPUT_TYPE}); chat endpoints give none"
                del loaded[name]
    if not loaded:
        return {}, {"skipped": skipped, "results": {}}

    if endpoint is None:
        import torch

        from amopo.models import load_tokenizer, resolve_model

        path = resolve_model(model_ref)
        use_template = chat_template and bool(getattr(load_tokenizer(path), "chat_template", None))
        model, args = "hf", {"pretrained": path, "dtype": "float32", "trust_remote_code": False}
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        use_template, device = True, None
        model, args = "local-chat-completions", {
            "model": endpoint.model, "base_url": endpoint.base + "/chat/completions", "num_concurrent": 1,
            "max_retries": endpoint.retries, "tokenized_requests": False}
        if endpoint.api_key:
            args["header"] = {"Authorization": f"Bearer {endpoint.api_key}"}
    results = simple_evaluate(model=model, model_args=args, tasks=list(loaded.values()), task_manager=manager,
                              limit=limit or None, batch_size=batch_size, device=device,
                              apply_chat_template=use_template, log_samples=False, bootstrap_iters=1000,
                              random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                              fewshot_random_seed=seed)
    report = {"model": model, "model_args": {k: v for k, v in args.items() if k != "header"},
              "chat_template": use_template, "limit": limit or None, "skipped": skipped,
              "results": results["results"], "n-samples": results.get("n-samples", {}),
              "versions": results.get("versions", {})}
    return flatten_results(results["results"]), report
