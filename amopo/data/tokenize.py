"""Tokenisation of prepared pairs into the rows the trainer reads, with truncation and a cache.

Row contract (one per pair; ``K`` = number of dimensions, in the configured order)::

    {"id": int,                        index of the pair in the split file (0-based)
     "prompt_ids": list[list[int]],    K dimension-conditioned prompts
     "plain_prompt_ids": list[int],    the unconditioned prompt (SimPO / DPO baselines)
     "chosen_ids": list[int],          response tokens incl. the template's end-of-turn tokens,
     "rejected_ids": list[int],        the same for every one of the K prompts
     "chosen_scores": list[float],     K scores, NaN where the dimension has none ("overall")
     "rejected_scores": list[float],
     "chosen_reward": float,           ``reward_score`` of the record, else NaN
     "rejected_reward": float}

Labels are the response tokens; everything in a prompt is masked (the trainer builds them from
this layout). Response tokens are the suffix of the rendered conversation past the rendered prompt,
tokenised with ``add_special_tokens=False`` like the prompts.

Truncation to ``max_length`` never touches the dimension prefix or the template scaffolding. A
pair that fits with its longest prompt is kept whole; otherwise the user text is cut from its end
(down to ``min_user_tokens``), then the response tails; a pair where not even one response token
fits is dropped. The budget uses the longest of the K prompts, so responses are the same for all K.

Prompts are written in the prompt style of the prepared data (``prompt_style`` in its manifest's
config, ``amopo`` when absent; :mod:`amopo.data.prompt_styles`): wording, separator, order of
accumulated prefixes and any system turn, which the plain prompt and the responses get too.

The cache lives in ``<prepared_dir>/tokenized/<key>/`` (``rows.arrow`` + ``meta.json``), keyed by
the sha256 of the split file's bytes, the dimensions, the tokenizer (serialized vocabulary/model,
chat template, special tokens), the prompt style's wording and every setting. It is written to a temp
folder and renamed into place, so a concurrent reader sees either no cache or a whole one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

from amopo.data import prompts
from amopo.data.dimensions import Dimension, registry
from amopo.data.prompt_styles import AMOPO, DEFAULT_STYLE, PromptStyle, get_style
from amopo.data.readers import read_amopo
from amopo.data.records import PreferencePair
from amopo.errors import DataError

CACHE_FORMAT = "amopo-tokenized-v1"
MANIFEST_FILE = "prepare.json"
SPLITS = ("train", "eval")
DEFAULT_MAX_LENGTH = 1024
MIN_USER_TOKENS = 32
MIN_RESPONSE_TOKENS = 1
_MAX_CUT_ROUNDS = 8


@dataclass
class TruncationReport:
    examples: int = 0
    kept: int = 0
    truncated_prompts: int = 0
    truncated_responses: int = 0
    dropped: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


class Rows(Sequence):
    """The rows of a split as a read-only list of row dicts, backed by a memory-mapped Arrow file
    (``rows[i]`` → dict, ``rows[a:b]`` → list of dicts). ``dataset`` is the underlying datasets.Dataset."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self.dataset[i] for i in range(start, stop, step)]
            columns = self.dataset[start:stop]
            return [dict(zip(columns, values)) for values in zip(*columns.values())]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.dataset[index]

    def __iter__(self):
        return iter(self.dataset)


class TokenizedSplit(NamedTuple):
    rows: Rows             # list-like: len(), rows[i] / rows[a:b] / iteration give row dicts
    dimensions: list[str]  # names, in the order of prompt_ids / *_scores
    report: dict           # TruncationReport counts
    from_cache: bool       # True when an existing cache was loaded (no tokenisation happened)
    cache_dir: Path


# ---------------------------------------------------------------------------------------------
# One pair


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _prompt_ids(tokenizer, prefixes: list[str], user_text: str,
                style: PromptStyle) -> tuple[list[list[int]], list[int]]:
    texts = [prompts.render_prompt(tokenizer, prompts.conditioned_text(p, user_text, style), style.system)
             for p in prefixes]
    ids = _encode(tokenizer, texts + [prompts.render_prompt(tokenizer, user_text, style.system)])
    return ids[:-1], ids[-1]


def _cut_text(tokenizer, ids: list[int], keep: int) -> str:
    # A cut inside a multi-byte character decodes to U+FFFD; drop it rather than train on it.
    return tokenizer.decode(ids[:keep], skip_special_tokens=False).rstrip("\ufffd")


def tokenize_pair(pair: PreferencePair, index: int, tokenizer, dims: Sequence[Dimension], *,
                  max_length: int = DEFAULT_MAX_LENGTH, accumulate_prefixes: bool = False,
                  min_user_tokens: int = MIN_USER_TOKENS, score_source: str = "chosen",
                  report: TruncationReport | None = None, style: PromptStyle = AMOPO) -> dict | None:
    """The row for one pair (see the module docstring) with prompts in ``style``, or None when it
    cannot fit ``max_length``."""
    report = report if report is not None else TruncationReport()
    report.examples += 1
    prefixes = prompts.dimension_prefixes(dims, prompts.shown_scores(pair, dims, score_source),
                                          accumulate=accumulate_prefixes, style=style)
    responses = _encode(tokenizer, [prompts.render_response(tokenizer, pair.prompt, pair.chosen.text, style.system),
                                    prompts.render_response(tokenizer, pair.prompt, pair.rejected.text,
                                                            style.system)])
    conditioned, plain = _prompt_ids(tokenizer, prefixes, pair.prompt, style)
    longest_prompt = max(len(p) for p in conditioned)
    longest_response = max(len(r) for r in responses)

    cut_prompt = cut_response = False
    if longest_prompt + longest_response > max_length:
        user_ids = _encode(tokenizer, [pair.prompt])[0]
        keep = len(user_ids)
        for _ in range(_MAX_CUT_ROUNDS):
            over = longest_prompt + longest_response - max_length
            if over <= 0 or keep <= min_user_tokens:
                break
            keep = max(min_user_tokens, keep - over)
            conditioned, plain = _prompt_ids(tokenizer, prefixes, _cut_text(tokenizer, user_ids, keep), style)
            longest_prompt = max(len(p) for p in conditioned)
            cut_prompt = True
    if longest_prompt + longest_response > max_length:
        budget = max_length - longest_prompt
        if budget < MIN_RESPONSE_TOKENS:
            report.dropped += 1
            return None
        responses = [r[:budget] for r in responses]
        cut_response = True
    report.kept += 1
    report.truncated_prompts += cut_prompt
    report.truncated_responses += cut_response

    def reward(value: float | None) -> float:
        return math.nan if value is None else float(value)

    return {
        "id": index,
        "prompt_ids": conditioned,
        "plain_prompt_ids": plain,
        "chosen_ids": responses[0],
        "rejected_ids": responses[1],
        "chosen_scores": [pair.score("chosen", d.name) for d in dims],
        "rejected_scores": [pair.score("rejected", d.name) for d in dims],
        "chosen_reward": reward(pair.chosen.reward_score),
        "rejected_reward": reward(pair.rejected.reward_score),
    }


def tokenize_pairs(pairs: Sequence[PreferencePair], tokenizer, dims: Sequence[Dimension], *,
                   max_length: int = DEFAULT_MAX_LENGTH, accumulate_prefixes: bool = False,
                   min_user_tokens: int = MIN_USER_TOKENS, score_source: str = "chosen",
                   show_progress: bool = True, desc: str = "tokenising",
                   style: PromptStyle = AMOPO) -> tuple[list[dict], TruncationReport]:
    """Rows for ``pairs`` (dropped pairs leave a gap in ``id``) and the truncation report."""
    from tqdm.auto import tqdm

    report = TruncationReport()
    rows = []
    bar = tqdm(pairs, desc=desc, unit="pair", disable=not show_progress or not sys.stderr.isatty())
    for index, pair in enumerate(bar):
        row = tokenize_pair(pair, index, tokenizer, dims, max_length=max_length,
                            accumulate_prefixes=accumulate_prefixes, min_user_tokens=min_user_tokens,
                            score_source=score_source, report=report, style=style)
        if row is not None:
            rows.append(row)
    return rows, report


# ---------------------------------------------------------------------------------------------
# Cache


def _arrow_schema():
    import pyarrow as pa

    ids, nested = pa.list_(pa.int32()), pa.list_(pa.list_(pa.int32()))
    return pa.schema([("id", pa.int64()), ("prompt_ids", nested), ("plain_prompt_ids", ids),
                      ("chosen_ids", ids), ("rejected_ids", ids), ("chosen_scores", pa.list_(pa.float64())),
                      ("rejected_scores", pa.list_(pa.float64())), ("chosen_reward", pa.float64()),
                      ("rejected_reward", pa.float64())])


def tokenizer_identity(tokenizer) -> dict:
    """What makes two tokenizers tokenise alike: class, serialized model/vocabulary, chat template,
    special tokens. ``fingerprint`` is the sha256 of all of it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        model = backend.to_str()
    else:
        model = json.dumps(sorted(tokenizer.get_vocab().items()))
    template = getattr(tokenizer, "chat_template", None)
    # The pad token never reaches the ids (loaders often set it to eos), so it is left out.
    special = {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())
               if k != "pad_token"}
    h = hashlib.sha256()
    for part in (type(tokenizer).__name__, model, json.dumps(template, sort_keys=True, default=str),
                 json.dumps(special, sort_keys=True)):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return {"class": type(tokenizer).__name__, "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
            "chat_template": bool(template), "special_tokens": special, "fingerprint": h.hexdigest()}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_inputs(split_file: Path, tokenizer, dims: Sequence[Dimension], settings: dict,
                 style: PromptStyle = AMOPO) -> dict:
    """Everything the cache key is computed from (recorded in meta.json)."""
    wording = {**style.to_json(), "fallback": prompts.FALLBACK_PROMPT}
    return {"format": CACHE_FORMAT, "split_sha256": file_sha256(split_file),
            "dimensions": [d.to_json() for d in dims], "tokenizer": tokenizer_identity(tokenizer),
            "prompt_wording": wording, "settings": dict(sorted(settings.items()))}


def cache_key(inputs: dict) -> str:
    """sha256 of the inputs, the tokenizer by its fingerprint only (not the folder it came from)."""
    keyed = {**inputs, "tokenizer": inputs["tokenizer"]["fingerprint"]}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode("utf-8")).hexdigest()


def _write_cache(root: Path, key: str, rows: list[dict], meta: dict) -> Path:
    """Write rows + meta into a temp folder and rename it to ``root/key``. If another process got
    there first, keep theirs (same key, same content)."""
    import pyarrow as pa

    final = root / key
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        schema = _arrow_schema()
        table = pa.Table.from_pylist(rows, schema=schema)
        with pa.OSFile(str(tmp / "rows.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            writer.write_table(table)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _load_rows(cache_dir: Path) -> Rows:
    import datasets

    return Rows(datasets.Dataset.from_file(str(cache_dir / "rows.arrow")))


# ---------------------------------------------------------------------------------------------
# Entry point


def read_manifest(prepared_dir: str | Path) -> dict:
    path = Path(prepared_dir) / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("not a prepared data folder (no manifest; run `prepare` first)", file=str(path)) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"manifest is not valid JSON ({exc.msg})", file=str(path), line=exc.lineno) from None


def manifest_prompt_style(manifest: dict, where: str = MANIFEST_FILE) -> PromptStyle:
    """The prompt style a prepare manifest records (``amopo`` for manifests older than styles)."""
    name = manifest.get("config", {}).get("prompt_style", DEFAULT_STYLE)
    return get_style(name, f"{where}: config.prompt_style")


def load_tokenized(prepared_dir: str | Path, tokenizer, split: str, *, max_length: int = DEFAULT_MAX_LENGTH,
                   accumulate_prefixes: bool = False, show_progress: bool = True,
                   min_user_tokens: int = MIN_USER_TOKENS, score_source: str | None = None,
                   prompt_style: str | None = None) -> TokenizedSplit:
    """The tokenized rows of ``split`` ("train" or "eval") of a ``prepare`` output folder.

    Dimensions (with their scales) and, unless given, ``score_source`` and ``prompt_style`` come
    from the manifest.
    Loads ``<prepared_dir>/tokenized/<key>/`` when present (``from_cache=True``, no tokenizer call
    beyond fingerprinting); otherwise tokenises the split and writes that cache atomically. Safe for
    several processes: run it on rank 0 first and the other ranks load rank 0's cache.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    prepared_dir = Path(prepared_dir)
    manifest = read_manifest(prepared_dir)
    dims = [Dimension.from_json(d) for d in manifest["dimensions"]]
    score_source = score_source or manifest.get("config", {}).get("score_source", "chosen")
    style = (get_style(prompt_style) if prompt_style is not None
             else manifest_prompt_style(manifest, str(prepared_dir / MANIFEST_FILE)))
    split_file = prepared_dir / f"{split}.jsonl"
    if not split_file.is_file():
        raise DataError(f"split file '{split}.jsonl' is missing", file=str(prepared_dir))
    settings = {"max_length": max_length, "accumulate_prefixes": accumulate_prefixes,
                "min_user_tokens": min_user_tokens, "min_response_tokens": MIN_RESPONSE_TOKENS,
                "score_source": score_source, "prompt_style": style.name}
    inputs = cache_inputs(split_file, tokenizer, dims, settings, style)
    key = cache_key(inputs)
    root = prepared_dir / "tokenized"
    names = [d.name for d in dims]
    if (root / key / "meta.json").is_file():
        meta = json.loads((root / key / "meta.json").read_text(encoding="utf-8"))
        return TokenizedSplit(_load_rows(root / key), names, meta["report"], True, root / key)

    count = manifest.get("counts", {}).get(split)
    known = {**registry(manifest.get("source", {}).get("format", "amopo")), **{d.name: d for d in dims}}
    pairs = [] if count == 0 else read_amopo(split_file, known=known, max_chars=sys.maxsize).pairs
    rows, report = tokenize_pairs(pairs, tokenizer, dims, max_length=max_length,
                                  accumulate_prefixes=accumulate_prefixes, min_user_tokens=min_user_tokens,
                                  score_source=score_source, show_progress=show_progress,
                                  desc=f"tokenising {split}", style=style)
    if pairs and not rows:
        raise DataError(f"no pair fits max_length={max_length} (all {report.dropped} dropped: the conditioned "
                        "prompt scaffolding alone is too long)", file=str(split_file), field="max_length",
                        reason="nothing_fits")
    meta = {"key": key, "split": split, "inputs": inputs, "report": report.to_json()}
    cache_dir = _write_cache(root, key, rows, meta)
    return TokenizedSplit(_load_rows(cache_dir), names, report.to_json(), False, cache_dir)
