"""Small preference records in the AMoPO JSONL format, for tests that prepare and train on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path


def arithmetic_pairs(n: int, offset: int = 0) -> list[dict]:
    """``n`` records "what is i plus one?": a correct chosen answer, the same wrong rejected one."""
    return [{"prompt": f"Question {i}: what is {i} plus one?",
             "chosen": {"response": f"It is {i + 1}.", "helpfulness": 4, "correctness": 4, "instruction_following": 5},
             "rejected": {"response": "No idea, the moon.", "helpfulness": 1, "correctness": 1,
                          "instruction_following": 2}} for i in range(offset, offset + n)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
