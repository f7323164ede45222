"""A small multi-dimensional preference data set that ships with the package.

Every record was written by this project's own generator, :mod:`amopo.sample_data.build`, from
hand-written facts and templates; no third-party text is included. The files are AMoPO JSON lines
(``prompt`` / ``chosen`` / ``rejected``, each response scored on helpfulness, correctness,
coherence, complexity and verbosity 0-4 and instruction_following 1-5). See ``README.md`` in this
folder for the datasheet, and run ``python -m amopo.sample_data.build`` to regenerate the files.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).parent
SPLITS = ("train", "test")


def sample_path(split: str) -> Path:
    """The path of the shipped ``train.jsonl`` or ``test.jsonl``."""
    if split not in SPLITS:
        raise ValueError(f"unknown sample split {split!r}; expected one of {', '.join(SPLITS)}")
    return SAMPLE_DIR / f"{split}.jsonl"


__all__ = ["SAMPLE_DIR", "SPLITS", "sample_path"]
