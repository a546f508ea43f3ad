"""Typed search results, shared by the Python API, the CLI's JSON and the HTTP API."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Match:
    """One indexed image found for a query. ``score`` is cosine similarity: higher is more alike.

    With a calibrated collection, ``probability`` is the estimated probability that the pair is a copy
    of the same picture and ``label`` one of ``duplicate``, ``very similar``, ``similar``, ``weak``
    (see docs/calibration.md); both are None otherwise and then left out of ``to_dict``.
    ``verified``: a copy of the query checked point for point (``search --verify``).
    """

    id: int
    path: str
    score: float
    width: int
    height: int
    probability: float | None = None
    label: str | None = None
    verified: bool = False

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id,
            "path": self.path,
            "score": round(self.score, 6),
            "width": self.width,
            "height": self.height,
        }
        if self.probability is not None:
            out["probability"] = round(self.probability, 4)
        if self.label is not None:
            out["label"] = self.label
        if self.verified:
            out["verified"] = True
        return out


@dataclass(frozen=True)
class QueryResult:
    """The answer for one query image: matches best first, and whether anything is really alike."""

    query: str
    results: list[Match]
    no_match: bool
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "query": self.query,
            "results": [m.to_dict() for m in self.results],
            "no_match": self.no_match,
        }
        if self.error:
            out["error"] = self.error
        out.update(self.extra)
        return out
