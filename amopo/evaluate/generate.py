"""Instruction sets and response generation for the pairwise evaluation.

Instruction sets: ``shipped`` (``amopo/evaluate/instructions.jsonl``, 100 instructions written by
this project), ``alpaca_eval`` (the 805 AlpacaEval instructions from the ``tatsu-lab/alpaca_eval``
hub dataset), or a JSONL/JSON file of records with ``instruction`` (optional ``id``,
``difficulty``). ``select_evenly`` takes n of them spread over the whole set, so a small budget
still covers every category of the shipped file.

Decoding is fixed and recorded: greedy (local: ``do_sample=False``; endpoint: ``temperature=0``),
``max_new_tokens`` tokens at most, the model's own chat template around the instruction as the
only user turn (``amopo.data.prompts.render_prompt``, the rendering training used).

Outputs are stored in AlpacaEval's format (JSONL of ``instruction``, ``output``, ``generator``),
so a run's outputs can be another run's ``--baseline``.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from amopo.errors import DataError

SHIPPED_INSTRUCTIONS = Path(__file__).parent / "instructions.jsonl"


def _read_records(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror})", file=str(path)) from None
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text", file=str(path)) from None
    if path.suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", file=str(path), line=exc.lineno) from None
        if not isinstance(records, list):
            raise DataError("expected a JSON list of records", file=str(path))
        return records
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc.msg})", file=str(path), line=number) from None
    return records


def _check_instructions(records: list[dict], source: str) -> list[dict]:
    out = []
    for i, rec in enumerate(records, 1):
        text = rec.get("instruction") if isinstance(rec, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise DataError("missing or empty", file=source, line=i, field="instruction")
        item = {"id": str(rec.get("id", i)), "instruction": text}
        if rec.get("difficulty") is not None:
            item["difficulty"] = float(rec["difficulty"])
        out.append(item)
    if not out:
        raise DataError("no instructions", file=source)
    return out


def load_instructions(spec: str = "shipped") -> list[dict]:
    """Records ``{"id", "instruction"[, "difficulty"]}`` of an instruction set (see module doc)."""
    if spec == "shipped":
        return _check_instructions(_read_records(SHIPPED_INSTRUCTIONS), str(SHIPPED_INSTRUCTIONS))
    if spec == "alpaca_eval":
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download("tatsu-lab/alpaca_eval", "alpaca_eval.json", repo_type="dataset"))
        return _check_instructions(_read_records(path), "tatsu-lab/alpaca_eval")
    path = Path(spec)
    if not path.is_file():
        raise DataError("no such instruction file (or use 'shipped' / 'alpaca_eval')", file=spec)
    return _check_instructions(_read_records(path), str(path))


def select_evenly(items: Sequence, n: int) -> list:
    """n items at evenly spaced positions (all when n <= 0 or n >= len)."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[(i * len(items)) // n] for i in range(n)]


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="response", disable=not progress, leave=False)


def generate_local(model_dir: str, instructions: Sequence[str], *, max_new_tokens: int, batch_size: int = 8,
                   progress: bool = True, desc: str = "generating",
                   system: str | None = None) -> tuple[list[str], dict]:
    """Greedy responses of a local model, and the record of how they were decoded; ``system``: a
    system turn before each instruction (a prompt style's, for steered prompts)."""
    import torch

    from amopo.data.prompts import render_prompt
    from amopo.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = "left"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(model_dir).eval().to(device)
    prompts = [render_prompt(tokenizer, text, system) for text in instructions]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding per batch
    outputs: list[str] = [""] * len(prompts)
    eos = {tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)} - {None}
    with _bar(len(prompts), desc, progress) as bar, torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, eos_token_id=sorted(eos),
                                 pad_token_id=tokenizer.pad_token_id)
            for row, i in enumerate(idx):
                new = out[row, enc["input_ids"].shape[1]:]
                outputs[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
            bar.update(len(idx))
    template = getattr(tokenizer, "chat_template", None) or ""
    info = {"kind": "local", "model": str(model_dir), "decoding": "greedy", "do_sample": False,
            "max_new_tokens": max_new_tokens, "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
            "has_chat_template": bool(template), "example_prompt": prompts[0] if prompts else ""}
    del model
    return outputs, info


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def generate_endpoint(endpoint, instructions: Sequence[str], *, max_new_tokens: int, concurrency: int = 4,
                      seed: int = 0, progress: bool = True, desc: str = "generating",
                      system: str | None = None) -> tuple[list[str], dict]:
    """Greedy (temperature 0) responses of a served model; the server applies its chat template.
    ``system``: a system message before each instruction."""
    head = [] if system is None else [{"role": "system", "content": system}]

    def one(text: str) -> str:
        reply = endpoint.chat(head + [{"role": "user", "content": text}], max_tokens=max_new_tokens,
                              temperature=0.0, seed=seed)
        bar.update(1)
        return reply.strip()

    with _bar(len(instructions), desc, progress) as bar, ThreadPoolExecutor(max(1, concurrency)) as pool:
        outputs = list(pool.map(one, instructions))
    info = {"kind": "endpoint", "model": endpoint.model, "url": endpoint.base, "decoding": "greedy",
            "temperature": 0.0, "max_new_tokens": max_new_tokens, "seed": seed,
            "chat_template": "applied by the server"}
    return outputs, info


def read_outputs(path: str | Path, instructions: Sequence[str]) -> tuple[list[str], dict]:
    """Outputs for ``instructions`` from an AlpacaEval-style file, matched by instruction text."""
    path = Path(path)
    by_text: dict[str, str] = {}
    generator = ""
    for i, rec in enumerate(_read_records(path), 1):
        if not isinstance(rec, dict) or not isinstance(rec.get("instruction"), str):
            raise DataError("missing or not a string", file=str(path), line=i, field="instruction")
        if not isinstance(rec.get("output"), str):
            raise DataError("missing or not a string", file=str(path), line=i, field="output")
        by_text[rec["instruction"]] = rec["output"]
        generator = generator or str(rec.get("generator", ""))
    missing = [text for text in instructions if text not in by_text]
    if missing:
        raise DataError(f"no output for {len(missing)} of the {len(instructions)} instructions "
                        f"(first: {missing[0][:80]!r})", file=str(path))
    return [by_text[text] for text in instructions], {"kind": "outputs", "file": str(path), "generator": generator}


def write_outputs(path: Path, instructions: Sequence[str], outputs: Sequence[str], generator: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for text, output in zip(instructions, outputs, strict=True):
            fh.write(json.dumps({"instruction": text, "output": output, "generator": generator},
                                ensure_ascii=False) + "\n")
