"""Preference pairs from UltraFeedback (openbmb/UltraFeedback layout).

A row has an ``instruction`` and a list of ``completions``; each completion has a ``response`` and
``annotations`` mapping the aspects instruction_following / honesty / truthfulness / helpfulness
to ``{"Rating": "4", ...}``. A rating of "N/A" (or a missing aspect) is ignored. Rules:

* a completion's mean rating is the mean of its rated aspects; completions with none are left out;
* chosen = the highest mean (the first such completion on a tie at the top);
* rejected = ``uf_rejected``: "lowest" (default) the lowest mean (first on a tie), or "random" a
  seeded uniform draw among the completions whose mean is strictly lower than the chosen one's;
* a row where no completion has a lower mean than the chosen one (all means equal) is dropped.

Scores are the aspect ratings (1–5, so helpfulness here is 1–5, not HelpSteer2's 0–4) of each
response; no ``reward_score`` is set.
"""

from __future__ import annotations

import random
from typing import Any

from amopo.data.readers import (DEFAULT_MAX_CHARS, ReadResult, SkipReport, check_pair, ensure_some,
                                is_number, open_rows, record_failer, reject, require_keys)
from amopo.data.dimensions import registry
from amopo.data.records import PreferencePair, Response
from amopo.errors import ConfigError, DataError

ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
REJECTED_RULES = ("lowest", "random")
_NOT_RATED = ("n/a", "na", "")


def _rating(value: Any, fieldname: str, fail) -> float | None:
    """A 1–5 rating from a number or numeric string; None for "N/A"/null."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NOT_RATED):
        return None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            fail(f"expected a rating or 'N/A', got {value!r}"[:80], fieldname, "bad_score")
    elif is_number(value):
        number = float(value)
    else:
        fail(f"expected a rating or 'N/A', got {value!r}"[:80], fieldname, "bad_score")
    if not 1 <= number <= 5:
        fail(f"rating {number:g} is outside the scale 1 to 5", fieldname, "score_out_of_range")
    return number


def parse_row(row: Any, *, file: str, line: int, max_chars: int = DEFAULT_MAX_CHARS
              ) -> tuple[str, list[Response]]:
    """One row → (prompt, completions with their rated aspects); DataError names row and field."""
    fail = record_failer(file, line)
    require_keys(row, ("instruction", "completions"), fail, noun="column")
    prompt = row["instruction"]
    if not isinstance(prompt, str):
        fail(f"expected a string, got {type(prompt).__name__}", "instruction", "bad_type")
    if not isinstance(row["completions"], list):
        fail(f"expected a list, got {type(row['completions']).__name__}", "completions", "bad_type")
    out = []
    for i, comp in enumerate(row["completions"]):
        where = f"completions[{i}]"
        if not isinstance(comp, dict):
            fail(f"expected an object, got {type(comp).__name__}", where, "bad_type")
        text = comp.get("response")
        if not isinstance(text, str):
            fail(f"expected a string, got {type(text).__name__}", f"{where}.response", "bad_type")
        annotations = comp.get("annotations") or {}
        if not isinstance(annotations, dict):
            fail(f"expected an object, got {type(annotations).__name__}", f"{where}.annotations", "bad_type")
        scores = {}
        for aspect in ASPECTS:
            note = annotations.get(aspect)
            if note is None:
                continue
            if not isinstance(note, dict):
                fail(f"expected an object with 'Rating', got {type(note).__name__}",
                     f"{where}.annotations.{aspect}", "bad_type")
            value = _rating(note.get("Rating"), f"{where}.annotations.{aspect}.Rating", fail)
            if value is not None:
                scores[aspect] = value
        out.append(Response(text, scores))
    return prompt, out


def mean_rating(resp: Response) -> float:
    return sum(resp.scores.values()) / len(resp.scores)


def choose(completions: list[Response], rule: str = "lowest", rng: random.Random | None = None
           ) -> tuple[Response, Response] | None:
    """(chosen, rejected) under the rules above, or None when there is no strictly worse completion."""
    if rule not in REJECTED_RULES:
        raise ValueError(f"uf_rejected must be one of {REJECTED_RULES}, got {rule!r}")
    rated = [c for c in completions if c.scores]
    if len(rated) < 2:
        return None
    means = [mean_rating(c) for c in rated]
    best = max(range(len(rated)), key=lambda i: (means[i], -i))
    worse = [i for i in range(len(rated)) if means[i] < means[best]]
    if not worse:
        return None
    if rule == "lowest":
        pick = min(worse, key=lambda i: (means[i], i))
    else:
        pick = (rng or random.Random(0)).choice(worse)
    return rated[best], rated[pick]


def read_ultrafeedback(source: str, *, uf_rejected: str = "lowest", seed: int = 0, skip_invalid: bool = False,
                       max_chars: int = DEFAULT_MAX_CHARS, max_records: int | None = None) -> ReadResult:
    """Pairs from an UltraFeedback file (.jsonl, .jsonl.gz, .parquet) or hub name
    (``openbmb/UltraFeedback[:split]``). The "random" draw is seeded by ``seed`` and the prompt, so
    it does not depend on row order."""
    if uf_rejected not in REJECTED_RULES:
        raise ConfigError(f"uf_rejected must be one of {', '.join(REJECTED_RULES)}, got {uf_rejected!r}")
    file, rows = open_rows(source)
    report = SkipReport()
    pairs: list[PreferencePair] = []
    n_rows = ties = 0
    for line, row in rows:
        if max_records is not None and len(pairs) >= max_records:
            break
        n_rows += 1
        try:
            prompt, completions = parse_row(row, file=file, line=line, max_chars=max_chars)
            picked = choose(completions, uf_rejected, random.Random(f"{seed}\0{prompt}"))
            if picked is None:
                ties += 1
                continue
            pair = PreferencePair(prompt, picked[0], picked[1], source=f"{file}:{line}")
            check_pair(pair, max_chars=max_chars, known=registry("ultrafeedback"))
        except DataError as err:
            reject(err, report, skip_invalid)
            continue
        pairs.append(pair)
    ensure_some(pairs, file, report)
    return ReadResult(pairs, report, {"rows": n_rows, "pairs": len(pairs), "ties_dropped": ties})
