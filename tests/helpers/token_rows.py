"""Tokenised preference rows of random ids, in the layout ``amopo.data.tokenize`` writes."""

from __future__ import annotations

import math

import torch

DIMS = ["overall", "helpfulness", "correctness"]


def token_rows(n: int, vocab: int = 300) -> list[dict]:
    """``n`` rows of varied prompt/response lengths (row 4 on has one-token rejected responses),
    with scores for :data:`DIMS` and a reward score on every other row."""
    rows = []
    for i in range(n):
        g = torch.Generator().manual_seed(100 + i)
        ids = lambda m: torch.randint(3, vocab, (m,), generator=g).tolist()  # noqa: E731
        rows.append({
            "id": i, "prompt_ids": [ids(6 + 2 * i + j) for j in range(len(DIMS))], "plain_prompt_ids": ids(5 + i),
            "chosen_ids": ids(4 + 3 * i), "rejected_ids": ids(9 - 2 * i) if i < 4 else ids(1),
            "chosen_scores": [math.nan, 4.0, 3.0], "rejected_scores": [math.nan, 1.0, 2.0],
            "chosen_reward": math.nan if i % 2 else 0.7, "rejected_reward": math.nan if i % 2 else 0.2,
        })
    return rows
