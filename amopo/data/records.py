"""The in-memory form of one multi-dimensional preference pair.

On disk this is the AMoPO JSON-lines record::

    {"prompt": "...",
     "chosen":   {"response": "...", "helpfulness": 4, "correctness": 4},
     "rejected": {"response": "...", "helpfulness": 2, "correctness": 3}}

Every key of ``chosen``/``rejected`` other than ``response`` (and the optional ``reward_score``)
is a dimension score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Response:
    text: str
    scores: dict[str, float] = field(default_factory=dict)
    reward_score: float | None = None

    def to_json(self) -> dict:
        out: dict = {"response": self.text, **self.scores}
        if self.reward_score is not None:
            out["reward_score"] = self.reward_score
        return out


@dataclass
class PreferencePair:
    prompt: str
    chosen: Response
    rejected: Response
    source: str = ""  # "file:line" (or "hub:name:row") the pair came from, for error messages

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "chosen": self.chosen.to_json(), "rejected": self.rejected.to_json()}

    def score(self, which: str, dimension: str) -> float:
        """The score of the chosen/rejected response on ``dimension``; NaN when absent."""
        resp = self.chosen if which == "chosen" else self.rejected
        return float(resp.scores.get(dimension, math.nan))
