"""The chosen objective's training and evaluation folders, out of those compared."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from amopo.compare.entries import pair_evaluations
from amopo.errors import ConfigError


def select_best(labels: Sequence[str], train_dirs: Sequence[Path], eval_dirs: Sequence[Path],
                best: str) -> tuple[Path, Path]:
    """(training folder, evaluation folder) of the entry labelled ``best``; ``labels`` and
    ``train_dirs`` in the same order, evaluations paired to trainings by the model they evaluated."""
    if len(labels) != len(train_dirs):
        raise ConfigError(f"select: {len(labels)} labels for {len(train_dirs)} training folders")
    if best not in labels:
        raise ConfigError(f"select: no objective '{best}' among {', '.join(labels)} (the comparison found none "
                          "with the metric)" if not best else f"select: '{best}' is not one of {', '.join(labels)}")
    i = list(labels).index(best)
    return Path(train_dirs[i]), pair_evaluations(list(map(Path, train_dirs)), list(map(Path, eval_dirs)))[i]
