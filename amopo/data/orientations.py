"""Steering pairs in both orientations: this project's extension of the AMoPO recipe.

AMoPO conditions the prompt of dimension k on the CHOSEN response's score ("on dimension k,
respond at level d"). On a style dimension (verbosity, complexity) a pair whose two responses are
equally good except on k shows the model only one of k's two levels, the chosen one's, and almost
always the same way round (the more detailed answer is the chosen one), so the model never learns
what a low request should change. With ``steer_both_orientations`` the prepare step also writes
each such pair reversed (chosen and rejected swapped): k's prompt then shows the low level with the
low-scored response chosen, beside the original's high level with the high-scored one chosen.

Which pairs. A pair *differs mainly on k* when both responses are scored on k and on every scored
dimension being prepared, their scores on k differ by at least ``min_gap``, and every other score
the two responses both carry (prepared or not, e.g. correctness) differs by at most ``tolerance``
(default 0: equal). ``min_gap > tolerance``, so a pair differs mainly on one dimension at most.

What the reversed record shows. A record carries one prompt per prepared dimension, each showing
the chosen response's score, and the AMoPO loss averages over all of them; a dimension without a
score on the chosen response cannot be rendered at all (its prefix needs the number). So the
reversed record keeps every dimension, and each prompt shows the new chosen response's own score:
the low level on k, and on every other dimension the same score as the original (within
``tolerance``). On those other dimensions, and on the holistic ones, the two orientations ask for
opposite preferences under the same prompt, which teaches no preference between two responses that
are equally good there; only k's prompt tells them apart. (Restricting the reversed record to k and
the holistic dimensions would need a per-dimension mask in the loss, which rows do not carry.)

The reversed pairs follow all original pairs of their split, in the order of their originals; a
reversed pair already in the split is not added twice. By default only the train split gets them:
held-out steering is measured by requesting a high and a low level on the original pairs, and the
eval split's preference accuracy keeps meaning "the chosen response wins". The unconditioned
baselines (simpo, dpo, modpo) see both orientations under the same plain prompt; compare them on a
folder prepared without this option.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from amopo.data.dimensions import STEERABLE, Dimension
from amopo.data.records import PreferencePair
from amopo.errors import ConfigError


def resolve_steer_dimensions(names: Sequence[str] | None, dims: Sequence[Dimension]) -> list[Dimension]:
    """The dimensions to reverse pairs on: ``names`` (each a scored, prepared dimension), or, when
    None, the prepared scored dimensions that are steerable (``STEERABLE``)."""
    scored = {d.name: d for d in dims if d.scored}
    if names is None:
        chosen = [d for d in dims if d.scored and d.name in STEERABLE]
        if not chosen:
            raise ConfigError(f"option 'steer_both_orientations': none of the prepared dimensions "
                              f"({', '.join(d.name for d in dims)}) is steerable ({', '.join(STEERABLE)}); "
                              "add one to 'dimensions' or name the ones to reverse pairs on in 'steer_dimensions'")
        return chosen
    if not names:
        raise ConfigError("option 'steer_dimensions': no dimension given")
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ConfigError(f"option 'steer_dimensions': given twice: {', '.join(dupes)}")
    unknown = [n for n in names if n not in scored]
    if unknown:
        raise ConfigError(f"option 'steer_dimensions': {', '.join(unknown)} is not a scored dimension being "
                          f"prepared (scored dimensions: {', '.join(scored) or 'none'})")
    return [scored[n] for n in names]


def steering_dimension(pair: PreferencePair, steer: Sequence[Dimension], dims: Sequence[Dimension], *,
                       min_gap: float = 1.0, tolerance: float = 0.0) -> str | None:
    """The dimension of ``steer`` that ``pair`` differs mainly on (module docstring), or None."""
    chosen, rejected = pair.chosen.scores, pair.rejected.scores
    if any(d.scored and (d.name not in chosen or d.name not in rejected) for d in dims):
        return None
    gaps = {name: abs(chosen[name] - rejected[name]) for name in chosen.keys() & rejected.keys()}
    for dim in steer:
        if gaps.get(dim.name, 0.0) >= min_gap and all(g <= tolerance for n, g in gaps.items() if n != dim.name):
            return dim.name
    return None


def steering_pairs(pairs: Sequence[PreferencePair], steer: Sequence[Dimension], dims: Sequence[Dimension], *,
                   min_gap: float = 1.0, tolerance: float = 0.0) -> list[PreferencePair]:
    """The pairs of ``pairs`` that differ mainly on a dimension of ``steer``, in their order."""
    return [p for p in pairs if steering_dimension(p, steer, dims, min_gap=min_gap, tolerance=tolerance)]


def both_orientations(pairs: Sequence[PreferencePair], dims: Sequence[Dimension], *, min_gap: float = 1.0,
                      tolerance: float = 0.0) -> list[str]:
    """The scored dimensions of ``dims`` that ``pairs`` show both ways: among the pairs that differ
    mainly on k (module docstring), some whose chosen response scores higher on k and some whose
    chosen response scores lower, natively or by reversal. These are the dimensions a conditioned
    model is trained to steer; on the others its prompts request a level it never sees contrasted."""
    seen: dict[str, set[bool]] = {}
    scored = [d for d in dims if d.scored]
    for pair in pairs:
        name = steering_dimension(pair, scored, dims, min_gap=min_gap, tolerance=tolerance)
        if name:
            seen.setdefault(name, set()).add(pair.chosen.scores[name] > pair.rejected.scores[name])
    return [d.name for d in scored if len(seen.get(d.name, ())) == 2]


def reverse(pair: PreferencePair) -> PreferencePair:
    """The same pair with chosen and rejected swapped (same prompt and source)."""
    return PreferencePair(pair.prompt, pair.rejected, pair.chosen, pair.source)


@dataclass
class OrientationReport:
    pairs: int = 0                                          # original pairs examined
    reversed: dict[str, int] = field(default_factory=dict)  # reversed pairs added, per dimension
    already_present: int = 0                                # reversed pairs the split already had

    @property
    def added(self) -> int:
        return sum(self.reversed.values())

    def to_json(self) -> dict:
        return {"pairs": self.pairs, "added": self.added, "reversed": dict(self.reversed),
                "already_present": self.already_present}


def add_reversed(pairs: Sequence[PreferencePair], steer: Sequence[Dimension], dims: Sequence[Dimension], *,
                 min_gap: float = 1.0, tolerance: float = 0.0) -> tuple[list[PreferencePair], OrientationReport]:
    """``pairs`` followed by the reversed pair of each one that differs mainly on a dimension of
    ``steer``, and the counts."""
    report = OrientationReport(pairs=len(pairs), reversed={d.name: 0 for d in steer})
    seen = {(p.prompt, p.chosen.text, p.rejected.text) for p in pairs}
    added = []
    for pair in pairs:
        name = steering_dimension(pair, steer, dims, min_gap=min_gap, tolerance=tolerance)
        if name is None:
            continue
        key = (pair.prompt, pair.rejected.text, pair.chosen.text)
        if key in seen:
            report.already_present += 1
            continue
        seen.add(key)
        added.append(reverse(pair))
        report.reversed[name] += 1
    return [*pairs, *added], report
