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


GOOD = ["Sure. {a} is the answer, because it follows from the question.",
        "The answer is {a}. Here is why: it is the standard result.",
        "{a}. That is correct and complete."]
BAD = ["I do not know, ask someone else.",
       "Maybe it is something, hard to say, the cat the moon the river.",
       "No idea. Whatever."]


def answer_pairs(n: int, offset: int = 0) -> list[dict]:
    """``n`` records "what is the value of item i?": a confident answer chosen over a vague one."""
    out = []
    for i in range(offset, offset + n):
        answer = f"number {i % 7 + 1}"
        out.append({
            "prompt": f"Question {i}: what is the value of item {i % 11}?",
            "chosen": {"response": GOOD[i % 3].format(a=answer), "helpfulness": 4, "correctness": 4,
                       "instruction_following": 5},
            "rejected": {"response": BAD[i % 3], "helpfulness": 1, "correctness": 1 + i % 2,
                         "instruction_following": 2},
        })
    return out


SHORT_ANSWER = "yes."
LONG_ANSWER = ("yes, because the model answer is clear and correct and the response is helpful and the data is "
               "short and the code is python and the cat is on the river.")
_TOPICS = "water cat dog sun moon city river code python data train loss".split()


def verbosity_prompts(n: int, offset: int = 0) -> list[str]:
    """``n`` distinct short questions made of words the tiny tokenizer knows."""
    return [f"what is the {_TOPICS[i % len(_TOPICS)]} number {i}?" for i in range(offset, offset + n)]


def verbosity_pairs(prompts: list[str]) -> list[dict]:
    """Two records per prompt, scored on ``verbosity`` (0–4) only, in both orientations: the short
    answer (verbosity 0) chosen over the long one (4), and the long one chosen over the short one.
    The conditioned prompt shows the chosen score, so a model trained on them with
    ``dimensions=["verbosity"]`` sees "level 0: short preferred" and "level 4: long preferred"."""
    short = {"response": SHORT_ANSWER, "verbosity": 0}
    long = {"response": LONG_ANSWER, "verbosity": 4}
    out = []
    for prompt in prompts:
        out.append({"prompt": prompt, "chosen": dict(short), "rejected": dict(long)})
        out.append({"prompt": prompt, "chosen": dict(long), "rejected": dict(short)})
    return out
