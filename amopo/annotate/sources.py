"""Reading the data ``amopo annotate`` scores, and writing it back in the same format.

Every row is validated as ``amopo prepare`` would read it (``helpsteer2.parse_row``;
``readers.parse_record`` + ``check_pair``) before any judge is asked: the first bad row raises a
DataError naming the file, the line and the field, and nothing is written.

What an added score looks like on disk (``dim`` the dimension, ``P`` its provenance):

* helpsteer2 rows: ``row[dim] = level`` and ``row[dim + "_provenance"] = P``. The HelpSteer2
  reader reads ``dim`` as a score (``helpsteer2.EXTRA_SCORES``) and ignores other columns.
* amopo records: ``record[side][dim] = level`` for side chosen/rejected, and
  ``record[dim + "_provenance"][side] = P`` at the top level, which the AMoPO reader ignores
  (every key inside ``chosen``/``rejected`` must be a number there).

A response whose verdict was unparseable gets its provenance (status "unparseable") and no score.
Files are written to a temp file beside the target and renamed into place.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amopo.data.helpsteer2 import parse_row
from amopo.data.readers import check_pair, iter_jsonl, open_rows, parse_record
from amopo.errors import DataError

SIDES = ("chosen", "rejected")


@dataclass(frozen=True)
class Target:
    """One response that lacks the dimension's score: ``side`` is None for a HelpSteer2 row."""

    row: int
    side: str | None
    line: int
    prompt: str
    response: str


@dataclass
class Source:
    """The rows of one input as read (they are written back with the additions), and what to score."""

    name: str
    format: str
    rows: list[dict]
    targets: list[Target] = field(default_factory=list)
    responses: int = 0
    already_scored: int = 0


def _helpsteer2(source: str, dimension: str, max_chars: int) -> Source:
    name, rows = open_rows(source)
    out = Source(name, "helpsteer2", [])
    for line, row in rows:
        prompt, resp = parse_row(row, file=name, line=line, max_chars=max_chars)
        out.responses += 1
        if dimension in resp.scores:
            out.already_scored += 1
        else:
            out.targets.append(Target(len(out.rows), None, line, prompt, resp.text))
        out.rows.append(row)
    return out


def _amopo(source: str, dimension: str, max_chars: int) -> Source:
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError("no such file", file=str(path), reason="no_such_file")
    out = Source(str(path), "amopo", [])
    for line, obj in iter_jsonl(path):
        if isinstance(obj, DataError):
            raise obj
        pair = parse_record(obj, file=str(path), line=line)
        check_pair(pair, max_chars=max_chars)
        for side, resp in zip(SIDES, (pair.chosen, pair.rejected)):
            out.responses += 1
            if dimension in resp.scores:
                out.already_scored += 1
            else:
                out.targets.append(Target(len(out.rows), side, line, pair.prompt, resp.text))
        out.rows.append(obj)
    return out


def read_source(source: str, fmt: str, dimension: str, *, max_chars: int) -> Source:
    """Validated rows of ``source`` in ``fmt`` and the responses lacking ``dimension``."""
    out = (_helpsteer2 if fmt == "helpsteer2" else _amopo)(source, dimension, max_chars)
    if not out.rows:
        raise DataError("no rows to annotate", file=out.name, reason="no_valid_records")
    return out


def add_score(src: Source, target: Target, dimension: str, level: int | None, provenance: dict) -> None:
    """Put one verdict into its row: the level (when parseable) and its provenance."""
    row = src.rows[target.row]
    key = f"{dimension}_provenance"
    if target.side is None:
        if level is not None:
            row[dimension] = level
        row[key] = provenance
        return
    if level is not None:
        row[target.side][dimension] = level
    if not isinstance(row.get(key), dict):
        row[key] = {}
    row[key][target.side] = provenance


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` for a temp file beside ``path``, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_jsonl(rows: list[Any], tmp: Path) -> None:
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_parquet(rows: list[dict], tmp: Path) -> None:
    """Every column any row has (``Table.from_pylist`` would keep only the first row's), null where absent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(key for row in rows for key in row))
    pq.write_table(pa.table({c: pa.array([row.get(c) for row in rows]) for c in columns}), str(tmp))


def write_rows(path: Path, rows: list[dict]) -> None:
    """``rows`` as ``.parquet`` or JSON lines (by ``path``'s suffix), atomically."""
    writer = _write_parquet if path.suffix.lower() == ".parquet" else _write_jsonl
    atomic_write(path, lambda tmp: writer(rows, tmp))
