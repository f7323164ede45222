"""Dataset loader for the shipped lm-eval tasks (``custom_dataset: !function shipped.load_jsonl``).

lm-eval calls it with the task's metadata and ``dataset_kwargs``; only ``file`` (a JSONL name in
this folder) is used. Reading the file here keeps the task independent of the working directory
and of the datasets download cache.
"""

from __future__ import annotations

import json
from pathlib import Path


def load_jsonl(file: str, split: str = "test", **_ignored):
    """A DatasetDict with one split holding the records of ``file``."""
    import datasets

    path = Path(__file__).parent / file
    with path.open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    return datasets.DatasetDict({split: datasets.Dataset.from_list(records)})
