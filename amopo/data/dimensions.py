"""The preference dimensions a pair can be scored on, and how requested dimensions are resolved.

Known dimensions carry their rating scale; "overall" is the holistic conditioning with no score.
A dimension the registry does not know is accepted when the data scores it, with its scale taken
from the observed minimum and maximum (and a warning); one that neither the registry nor the data
knows is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

from amopo.data.records import PreferencePair
from amopo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

OVERALL = "overall"


@dataclass(frozen=True)
class Dimension:
    """A preference dimension. ``low``/``high`` are None for a holistic dimension (no score)."""

    name: str
    low: float | None
    high: float | None
    description: str
    inferred: bool = False  # scale taken from the data rather than the registry

    @property
    def scored(self) -> bool:
        return self.low is not None

    def to_json(self) -> dict:
        return {"name": self.name, "low": self.low, "high": self.high, "description": self.description,
                "inferred": self.inferred}

    @classmethod
    def from_json(cls, data: dict) -> Dimension:
        return cls(data["name"], data.get("low"), data.get("high"), data.get("description", ""),
                   bool(data.get("inferred", False)))


def _registry(*dims: Dimension) -> dict[str, Dimension]:
    return {d.name: d for d in dims}


KNOWN: dict[str, Dimension] = _registry(
    Dimension(OVERALL, None, None, "helpful, correct, clear and suited to the request"),
    # HelpSteer2 attributes (0–4).
    Dimension("helpfulness", 0, 4, "how well the response meets the user's need"),
    Dimension("correctness", 0, 4, "factual accuracy and inclusion of all pertinent facts"),
    Dimension("coherence", 0, 4, "consistency and clarity of expression"),
    Dimension("complexity", 0, 4, "intellectual depth required to write the response"),
    Dimension("verbosity", 0, 4, "amount of detail relative to what is asked"),
    # UltraFeedback aspects (1–5); the AMoPO authors' judge-annotated instruction_following uses 1–5 too.
    Dimension("instruction_following", 1, 5, "how closely the response follows the instructions"),
    Dimension("honesty", 1, 5, "honest expression of uncertainty and of what is known"),
    Dimension("truthfulness", 1, 5, "freedom from fabricated or misleading content"),
)

# UltraFeedback rates helpfulness 1–5, where HelpSteer2 (and the AMoPO record format) uses 0–4.
_UF_HELPFULNESS = Dimension("helpfulness", 1, 5, "how well the response meets the user's need")


def registry(source_format: str = "amopo") -> dict[str, Dimension]:
    """The known dimensions for a source format (scales differ: helpfulness is 1–5 in UltraFeedback)."""
    if source_format == "ultrafeedback":
        return {**KNOWN, "helpfulness": _UF_HELPFULNESS}
    return KNOWN


DEFAULT_DIMENSIONS: list[str] = [OVERALL, "helpfulness", "correctness", "instruction_following"]
# Defaults per source format: the AMoPO set where the data carries it, else its nearest counterpart
# that the format's raw data scores (raw HelpSteer2 has no instruction_following until `amopo annotate`
# adds it; UltraFeedback has truthfulness where HelpSteer2 has correctness).
FORMAT_DEFAULTS: dict[str, list[str]] = {
    "amopo": DEFAULT_DIMENSIONS,
    "helpsteer2": [OVERALL, "helpfulness", "correctness", "coherence"],
    "ultrafeedback": [OVERALL, "helpfulness", "truthfulness", "instruction_following"],
}


def default_dimensions(source_format: str) -> list[str]:
    """The dimensions prepared when none are asked for (:data:`FORMAT_DEFAULTS`)."""
    return list(FORMAT_DEFAULTS.get(source_format, DEFAULT_DIMENSIONS))

# Style dimensions, on which a low level is as legitimate a request as a high one (a concise or a
# detailed answer, a plain or a technical one), unlike quality dimensions, where a low level only
# means worse. `prepare --steer-both-orientations` reverses pairs on these by default.
STEERABLE: tuple[str, ...] = ("verbosity", "complexity")


def observed_ranges(pairs: Iterable[PreferencePair]) -> dict[str, tuple[float, float]]:
    """Min and max of every score name over chosen and rejected responses."""
    out: dict[str, tuple[float, float]] = {}
    for pair in pairs:
        for resp in (pair.chosen, pair.rejected):
            for name, value in resp.scores.items():
                lo, hi = out.get(name, (value, value))
                out[name] = (min(lo, value), max(hi, value))
    return out


def in_range(dim: Dimension, value: float) -> bool:
    """Whether ``value`` lies on the dimension's scale (always true for a holistic dimension)."""
    return not dim.scored or dim.low <= value <= dim.high


def resolve_dimensions(names: Sequence[str], pairs: Sequence[PreferencePair], *, file: str,
                       known: dict[str, Dimension] = KNOWN) -> list[Dimension]:
    """The requested dimensions, in order, checked against the data; scales from ``known``.

    A scored dimension (known or not) must be scored somewhere in ``pairs``; otherwise a DataError
    names ``file``, the first record and the field, and lists the dimensions the data does have.
    """
    if not names:
        raise ConfigError("option 'dimensions': no dimension requested")
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ConfigError(f"option 'dimensions': requested twice: {', '.join(dupes)}")
    ranges = observed_ranges(pairs)
    first_file, first_line = split_source(pairs[0].source) if pairs else (file, None)
    out = []
    for name in names:
        dim = known.get(name)
        if dim is not None and not dim.scored:
            out.append(dim)
            continue
        if name not in ranges:
            found = ", ".join(sorted(ranges)) or "none"
            raise DataError(f"dimension '{name}' is requested but no record scores it (checked every record; "
                            f"dimensions in the data: {found})", file=first_file, line=first_line,
                            field=f"chosen.{name}", reason="unknown_dimension")
        if dim is not None:
            out.append(dim)
            continue
        lo, hi = ranges[name]
        log.warning("dimension '%s' is not a known dimension; using the observed scale %g to %g", name, lo, hi)
        out.append(Dimension(name, lo, hi, name.replace("_", " "), inferred=True))
    return out


def split_source(source: str) -> tuple[str, int | None]:
    """``"file:line"`` → (file, line); a source without a line number → (source, None)."""
    head, sep, tail = source.rpartition(":")
    if sep and tail.isdigit():
        return head, int(tail)
    return source, None
