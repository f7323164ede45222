"""Reading preference data: the AMoPO JSON-lines record format with strict validation, and the
row sources the other readers share (local JSONL / JSONL.gz / parquet files, or a hub dataset).

Strict by default: the first bad record raises a DataError naming the file, the line and the
field. With ``skip_invalid=True`` bad records are dropped and counted by reason in a SkipReport.
A source with no valid record is always an error. Blank lines are ignored.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Sequence

from amopo.data.dimensions import KNOWN, Dimension, in_range, split_source
from amopo.data.records import PreferencePair, Response
from amopo.errors import DataError

DEFAULT_MAX_CHARS = 100_000
_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?$")
_FILE_SUFFIXES = (".jsonl", ".json", ".gz", ".parquet", ".csv", ".txt")


@dataclass
class SkipReport:
    """Records dropped under ``skip_invalid``: a count per reason and a few "file:line: message" examples."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 5

    def add(self, err: DataError) -> None:
        self.counts[err.reason] = self.counts.get(err.reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(err))

    def merge(self, other: SkipReport) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
        self.examples.extend(other.examples[: max(0, self.max_examples - len(self.examples))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict:
        return {"skipped": self.total, "by_reason": dict(sorted(self.counts.items())), "examples": list(self.examples)}


def reject(err: DataError, report: SkipReport, skip_invalid: bool) -> None:
    """Raise ``err`` in strict mode; otherwise count it."""
    if not skip_invalid:
        raise err
    report.add(err)


@dataclass
class ReadResult:
    """Valid pairs from one source, what was skipped, and source-specific counts (rows, ties, ...)."""

    pairs: list[PreferencePair]
    skipped: SkipReport
    stats: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Row sources


def is_hub_name(source: str) -> bool:
    """``owner/name`` or ``owner/name:split`` that is not a local path or a file name."""
    return (bool(_HUB_NAME.match(source)) and not source.lower().endswith(_FILE_SUFFIXES)
            and not Path(source).exists())


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON value or DataError) for each non-blank line.

    Bytes are decoded line by line so that a non-UTF-8 byte is reported on its own line.
    """
    path = Path(path)
    with _open_bytes(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, DataError(f"not valid UTF-8 (byte {exc.start} of the line)", file=str(path),
                                        line=lineno, reason="not_utf8")
                continue
            if not text.strip():
                continue
            try:
                yield lineno, json.loads(text)
            except json.JSONDecodeError as exc:
                yield lineno, DataError(f"not valid JSON ({exc.msg} at column {exc.colno})", file=str(path),
                                        line=lineno, reason="not_json")


def iter_parquet(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(row number starting at 1, row dict) for each row of a parquet file."""
    import pyarrow.parquet as pq

    lineno = 0
    for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            lineno += 1
            yield lineno, row


def iter_hub(name: str, split: str) -> Iterator[tuple[int, Any]]:
    """(row number starting at 1, row dict) of a hub dataset split, via ``datasets.load_dataset``."""
    import datasets

    for i, row in enumerate(datasets.load_dataset(name, split=split), start=1):
        yield i, row


def open_rows(source: str, *, default_split: str = "train") -> tuple[str, Iterator[tuple[int, Any]]]:
    """A display name for ``source`` and its rows.

    ``source`` is a local ``.jsonl``, ``.jsonl.gz`` or ``.parquet`` file, or a hub dataset name
    ``owner/name`` with an optional ``:split`` (default ``default_split``).
    """
    path = Path(source).expanduser()
    if path.is_file():
        suffixes = "".join(path.suffixes[-2:]).lower()
        if path.suffix.lower() == ".parquet":
            return str(path), iter_parquet(path)
        if path.suffix.lower() in (".jsonl", ".json") or suffixes in (".jsonl.gz", ".json.gz"):
            return str(path), iter_jsonl(path)
        raise DataError("unsupported file type (expected .jsonl, .jsonl.gz or .parquet)", file=str(path),
                        reason="unsupported_file")
    if path.exists():
        raise DataError("not a file", file=str(path), reason="not_a_file")
    if is_hub_name(source):
        name, _, split = source.partition(":")
        split = split or default_split
        return f"hub:{name}[{split}]", iter_hub(name, split)
    raise DataError("no such file (and not a hub dataset name owner/name[:split])", file=str(path),
                    reason="no_such_file")


# ---------------------------------------------------------------------------------------------
# Validation shared by every format


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_pair(pair: PreferencePair, *, max_chars: int = DEFAULT_MAX_CHARS,
               known: dict[str, Dimension] = KNOWN) -> None:
    """Checks every pair passes whatever its source: non-empty, distinct, bounded texts and
    known-dimension scores within their scale (``known``, see ``dimensions.registry``).
    Raises DataError naming the pair's source and field."""
    fail = record_failer(*split_source(pair.source))

    for fieldname, text in (("prompt", pair.prompt), ("chosen.response", pair.chosen.text),
                            ("rejected.response", pair.rejected.text)):
        if not text.strip():
            fail("empty or whitespace-only text", fieldname, "empty_text")
        if len(text) > max_chars:
            fail(f"text of {len(text)} characters is longer than max_chars={max_chars}", fieldname, "too_long")
    if pair.chosen.text.strip() == pair.rejected.text.strip():
        fail("chosen and rejected responses are identical", "rejected.response", "identical_responses")
    for which, resp in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        for name, value in resp.scores.items():
            dim = known.get(name)
            if dim is not None and not in_range(dim, value):
                fail(f"score {value:g} is outside the {name} scale {dim.low:g} to {dim.high:g}",
                     f"{which}.{name}", "score_out_of_range")


def require_scores(pairs: list[PreferencePair], dims: list[Dimension], report: SkipReport,
                   skip_invalid: bool) -> list[PreferencePair]:
    """Pairs whose chosen response scores every scored dimension in ``dims`` (the conditioned prompt
    shows that score); others raise, or are counted under ``missing_score`` when skipping."""
    kept = []
    for pair in pairs:
        missing = [d.name for d in dims if d.scored and d.name not in pair.chosen.scores]
        if missing:
            file, line = split_source(pair.source)
            reject(DataError(f"no score for requested dimension '{missing[0]}' (the conditioned prompt shows "
                             "the chosen response's score; use skip_invalid to drop such records)",
                             file=file, line=line, field=f"chosen.{missing[0]}", reason="missing_score"),
                   report, skip_invalid)
            continue
        kept.append(pair)
    return kept


# ---------------------------------------------------------------------------------------------
# The AMoPO record format


def _parse_response(value: Any, which: str, fail) -> Response:
    if not isinstance(value, dict):
        fail(f"expected an object with a 'response', got {type(value).__name__}", which, "bad_type")
    if "response" not in value:
        fail("missing field", f"{which}.response", "missing_field")
    text = value["response"]
    if not isinstance(text, str):
        fail(f"expected a string, got {type(text).__name__}", f"{which}.response", "bad_type")
    scores: dict[str, float] = {}
    reward = None
    for key, score in value.items():
        if key == "response":
            continue
        if not is_number(score):
            fail(f"expected a finite number, got {json.dumps(score)[:40]}", f"{which}.{key}", "bad_score")
        if key == "reward_score":
            reward = float(score)
        else:
            scores[key] = float(score)
    return Response(text, scores, reward)


def record_failer(file: str, line: int) -> Callable[[str, str | None, str], NoReturn]:
    """``fail(message, field, reason)`` raising a DataError that names ``file`` and ``line``."""

    def fail(message: str, fieldname: str | None, reason: str) -> NoReturn:
        raise DataError(message, file=file, line=line, field=fieldname, reason=reason)

    return fail


def require_keys(row: Any, keys: Sequence[str], fail, *, noun: str = "field") -> dict:
    """``row`` as a JSON object holding ``keys``; a row that failed to parse is re-raised."""
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, dict):
        fail(f"expected a JSON object, got {type(row).__name__}", None, "not_object")
    for key in keys:
        if key not in row:
            fail(f"missing {noun}", key, "missing_field")
    return row


def parse_record(obj: Any, *, file: str, line: int) -> PreferencePair:
    """One AMoPO record → PreferencePair (structure and types only; see ``check_pair``)."""
    fail = record_failer(file, line)
    require_keys(obj, ("prompt", "chosen", "rejected"), fail)
    if not isinstance(obj["prompt"], str):
        fail(f"expected a string, got {type(obj['prompt']).__name__}", "prompt", "bad_type")
    chosen = _parse_response(obj["chosen"], "chosen", fail)
    rejected = _parse_response(obj["rejected"], "rejected", fail)
    return PreferencePair(obj["prompt"], chosen, rejected, source=f"{file}:{line}")


def read_amopo(path: str | Path, *, skip_invalid: bool = False, max_chars: int = DEFAULT_MAX_CHARS,
               max_records: int | None = None, known: dict[str, Dimension] = KNOWN) -> ReadResult:
    """Valid pairs of an AMoPO JSONL file (at most ``max_records``); scales checked against ``known``.

    Raises DataError (file, line, field) on the first bad record unless ``skip_invalid``; raises
    when no record is valid.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", file=str(path), reason="no_such_file")
    report = SkipReport()
    pairs: list[PreferencePair] = []
    lines = 0
    for lineno, obj in iter_jsonl(path):
        if max_records is not None and len(pairs) >= max_records:
            break
        lines += 1
        try:
            if isinstance(obj, DataError):
                raise obj
            pair = parse_record(obj, file=str(path), line=lineno)
            check_pair(pair, max_chars=max_chars, known=known)
        except DataError as err:
            reject(err, report, skip_invalid)
            continue
        pairs.append(pair)
    ensure_some(pairs, str(path), report)
    return ReadResult(pairs, report, {"records": lines})


def ensure_some(pairs: list, file: str, report: SkipReport) -> None:
    """A source without a single valid pair is an error, whatever ``skip_invalid`` says."""
    if not pairs:
        detail = f" ({report.total} invalid: {', '.join(f'{k}={v}' for k, v in sorted(report.counts.items()))})" \
            if report.total else ""
        raise DataError(f"no valid preference pair{detail}", file=file, reason="no_valid_records")


def write_amopo(path: str | Path, pairs: list[PreferencePair]) -> None:
    """Write pairs as AMoPO JSON lines (UTF-8, one record per line)."""
    with open(path, "w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
