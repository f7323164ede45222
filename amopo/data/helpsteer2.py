"""Preference pairs from raw HelpSteer2 (nvidia/HelpSteer2).

Raw HelpSteer2 has one row per (prompt, response) with five 0–4 attributes, two responses per
prompt on consecutive rows. Rows are grouped by prompt text (first-occurrence order) and paired in
order within a group (rows 1–2, 3–4, ...; an odd row left over is counted as unpaired). The
authors' pairing rule is not published; ours:

* chosen = the response with the higher helpfulness;
* ``tie_rule="sum-others"`` (default): a helpfulness tie goes to the higher sum of correctness,
  coherence, complexity and verbosity; a tie on that too drops the pair;
* ``tie_rule="drop"``: any helpfulness tie drops the pair.

Both responses keep all five attributes as dimension scores. A row may also carry a column for
another scored dimension of the registry (``EXTRA_SCORES``: instruction_following, honesty,
truthfulness; ``amopo annotate`` adds instruction_following, 1–5): a non-null value there is read as
that dimension's score, on the registry's scale; a missing or null one means "not scored".
"""

from __future__ import annotations

from typing import Any, Iterable

from amopo.data.dimensions import KNOWN
from amopo.data.readers import (DEFAULT_MAX_CHARS, ReadResult, SkipReport, check_pair, ensure_some,
                                is_number, open_rows, record_failer, reject, require_keys)
from amopo.data.records import PreferencePair, Response
from amopo.errors import ConfigError, DataError

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
TIE_RULES = ("sum-others", "drop")
EXTRA_SCORES = tuple(name for name, dim in KNOWN.items() if dim.scored and name not in ATTRIBUTES)


def _score(value: Any, column: str, low: float, high: float, fail) -> float:
    if not is_number(value):
        fail(f"expected a finite number, got {value!r}"[:80], column, "bad_score")
    if not low <= value <= high:
        fail(f"score {value:g} is outside the {column} scale {low:g} to {high:g}", column, "score_out_of_range")
    return float(value)


def parse_row(row: Any, *, file: str, line: int, max_chars: int = DEFAULT_MAX_CHARS) -> tuple[str, Response]:
    """One raw row → (prompt, scored response); DataError names the row and column."""
    fail = record_failer(file, line)
    require_keys(row, ("prompt", "response", *ATTRIBUTES), fail, noun="column")
    for column in ("prompt", "response"):
        text = row[column]
        if not isinstance(text, str):
            fail(f"expected a string, got {type(text).__name__}", column, "bad_type")
        if not text.strip():
            fail("empty or whitespace-only text", column, "empty_text")
        if len(text) > max_chars:
            fail(f"text of {len(text)} characters is longer than max_chars={max_chars}", column, "too_long")
    scores = {column: _score(row[column], column, 0, 4, fail) for column in ATTRIBUTES}
    for column in EXTRA_SCORES:
        if row.get(column) is not None:
            scores[column] = _score(row[column], column, KNOWN[column].low, KNOWN[column].high, fail)
    return row["prompt"], Response(row["response"], scores)


def choose(a: Response, b: Response, tie_rule: str = "sum-others") -> tuple[Response, Response] | None:
    """(chosen, rejected) under the pairing rule, or None when the pair is a tie to drop."""
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {TIE_RULES}, got {tie_rule!r}")
    ha, hb = a.scores["helpfulness"], b.scores["helpfulness"]
    if ha != hb:
        return (a, b) if ha > hb else (b, a)
    if tie_rule == "drop":
        return None
    sa = sum(a.scores[c] for c in ATTRIBUTES[1:])
    sb = sum(b.scores[c] for c in ATTRIBUTES[1:])
    if sa == sb:
        return None
    return (a, b) if sa > sb else (b, a)


def build_pairs(rows: Iterable[tuple[str, int, str, Response]], tie_rule: str = "sum-others"
                ) -> tuple[list[PreferencePair], dict[str, int]]:
    """Pairs from parsed rows ``(file, line, prompt, response)``, plus counts of ties and unpaired rows."""
    groups: dict[str, list[tuple[str, int, Response]]] = {}
    for file, line, prompt, resp in rows:
        groups.setdefault(prompt, []).append((file, line, resp))
    pairs: list[PreferencePair] = []
    ties = unpaired = 0
    for prompt, members in groups.items():
        unpaired += len(members) % 2
        for (file, line, a), (_, _, b) in zip(members[0::2], members[1::2]):
            picked = choose(a, b, tie_rule)
            if picked is None:
                ties += 1
                continue
            pairs.append(PreferencePair(prompt, picked[0], picked[1], source=f"{file}:{line}"))
    return pairs, {"pairs": len(pairs), "ties_dropped": ties, "unpaired_rows": unpaired}


def read_helpsteer2(source: str, *, tie_rule: str = "sum-others", skip_invalid: bool = False,
                    max_chars: int = DEFAULT_MAX_CHARS, max_records: int | None = None) -> ReadResult:
    """Pairs from a raw HelpSteer2 file (.jsonl, .jsonl.gz, .parquet) or hub name (``nvidia/HelpSteer2[:split]``).

    Bad rows raise DataError (file, line, column) unless ``skip_invalid``; at most ``max_records``
    pairs are kept.
    """
    if tie_rule not in TIE_RULES:
        raise ConfigError(f"tie_rule must be one of {', '.join(TIE_RULES)}, got {tie_rule!r}")
    file, rows = open_rows(source)
    report = SkipReport()
    parsed = []
    n_rows = 0
    for line, row in rows:
        n_rows += 1
        try:
            prompt, resp = parse_row(row, file=file, line=line, max_chars=max_chars)
        except DataError as err:
            reject(err, report, skip_invalid)
            continue
        parsed.append((file, line, prompt, resp))
    pairs, stats = build_pairs(parsed, tie_rule)
    kept = []
    for pair in pairs:
        try:
            check_pair(pair, max_chars=max_chars)
        except DataError as err:
            reject(err, report, skip_invalid)
            continue
        kept.append(pair)
        if max_records is not None and len(kept) >= max_records:
            break
    ensure_some(kept, file, report)
    return ReadResult(kept, report, {"rows": n_rows, **stats, "pairs": len(kept)})
