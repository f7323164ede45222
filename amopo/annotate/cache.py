"""The answer cache of ``amopo annotate``: one JSON line per verdict the judge gave.

A verdict is keyed by ``answer_key``: sha256 over the judge's identity, the rubric prompt's
identity (version and file sha256), the dimension, its levels, the cut applied to responses, the
prompt text and the response text. A change to any of them asks again; nothing else does.

Lines are appended and flushed to disk after every judge call (``add``), so a run that is
interrupted or fails keeps what it was told, and the next run asks only for the rest. Unparseable
verdicts are answers too and are cached (a greedy judge would reply the same again); an endpoint
error is no answer and is not. A torn last line (a run killed mid-write) is ignored on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class Answer:
    value: float | None   # the judge's number (a local judge's expected level); None: unparseable
    raw: str              # the reply text, or the level probabilities of a local judge


def answer_key(context: dict, prompt: str, response: str) -> str:
    """The cache key of one (prompt, response) under ``context`` (judge, prompt, dimension, ...)."""
    blob = json.dumps({"context": context, "prompt": prompt, "response": response}, sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    """Verdicts by key, loaded from ``path`` (when it exists) and appended to it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.answers: dict[str, Answer] = {}
        self.torn_lines = 0
        if self.path.is_file():
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                        self.answers[entry["key"]] = Answer(entry["value"], entry["raw"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.torn_lines += 1

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def __getitem__(self, key: str) -> Answer:
        return self.answers[key]

    def __len__(self) -> int:
        return len(self.answers)

    def add(self, entries: Iterable[tuple[str, Answer]]) -> None:
        """Remember and append ``entries``, on disk before this returns."""
        lines = []
        for key, answer in entries:
            self.answers[key] = answer
            lines.append(json.dumps({"key": key, "value": answer.value, "raw": answer.raw}, ensure_ascii=False))
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            if fh.tell() and not self._ends_with_newline():
                fh.write("\n")   # after a torn line, start a fresh one
            fh.write("\n".join(lines) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
