"""Reading a judge's verdict out of its reply text. Anything that is not a clear verdict is
``None`` (counted as unparseable by the caller), never an exception.

Pairwise (labels "A", "B"): the value is P(the FIRST answer shown is better): 1.0 for A, 0.0 for B,
0.5 for a tie. Accepted forms, in order: ``[[A]]`` style brackets; a reply that is only the label
(optionally after "Answer"/"Verdict:" and with markdown or punctuation around it); phrases such as
"Answer B is better" or "The better answer is A". A reply naming both labels is ambiguous → None.
Labels are matched case-sensitively, so the article "a" is never read as a verdict.

Rating (labels "1" … "5"): the number in ``[[4]]``, a reply that is only the number ("4", "4/5",
"**4**"), or "Rating: 4" / "Score is 4". A number outside the labels → None.
"""

from __future__ import annotations

import re
from typing import Sequence

_NOISE = r"[\s*_`'\".:!()\[\]]*"
_LEAD = r"(?:(?:final\s+)?(?:verdict|answer|response|choice|winner|better(?:\s+answer)?)\s*(?:is|:)?\s*)?"
_TIE = re.compile(r"\[\[\s*tie\s*\]\]|^\W*tie\W*$", re.IGNORECASE)


def _one(found: set[str]) -> str | None:
    return next(iter(found)) if len(found) == 1 else None


def parse_pairwise(text: str | None, labels: Sequence[str] = ("A", "B")) -> float | None:
    """P(first answer better) from a reply, or None when the reply holds no single clear verdict."""
    if not text or not text.strip():
        return None
    first, second = (re.escape(label) for label in labels)
    value = {labels[0]: 1.0, labels[1]: 0.0}
    pick = f"({first}|{second})"

    bracketed = set(re.findall(rf"\[\[\s*{pick}\s*\]\]", text))
    if bracketed:
        label = _one(bracketed)
        return value[label] if label else None
    if _TIE.search(text):
        return 0.5
    bare = re.fullmatch(rf"{_NOISE}(?i:{_LEAD}){_NOISE}{pick}{_NOISE}", text.strip())
    if bare:
        return value[bare.group(1)]
    phrases = set(re.findall(rf"(?i:\b(?:answer|response|assistant|option))\s+{pick}\s+(?i:is\s+(?:the\s+)?better|wins)\b",
                             text))
    phrases |= set(re.findall(rf"(?i:\b(?:better|best)\s+(?:answer|response|one)\s+is|\bverdict\s*:|\bwinner\s*:)"
                              rf"\s*(?i:(?:answer|response)\s+)?\**{pick}\b", text))
    label = _one(phrases)
    return value[label] if label else None


def parse_rating(text: str | None, labels: Sequence[str] = ("1", "2", "3", "4", "5")) -> float | None:
    """The rating in a reply if it is one of ``labels``, else None."""
    if not text or not text.strip():
        return None
    allowed = {float(label) for label in labels}
    number = r"(\d+(?:\.\d+)?)"
    patterns = [rf"\[\[\s*{number}\s*\]\]",
                rf"^{_NOISE}{number}(?:\s*/\s*\d+)?{_NOISE}$",
                rf"(?i:\b(?:rating|score|grade)\b)\s*(?i:is|of|:|=)?\s*\**\s*{number}"]
    for pattern in patterns:
        found = {float(v) for v in re.findall(pattern, text.strip())}
        if found:
            value = _one({str(v) for v in found})
            if value is None:
                return None
            return float(value) if float(value) in allowed else None
    return None
