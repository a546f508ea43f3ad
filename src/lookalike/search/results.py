"""Typed search results, shared by the Python API, the CLI's JSON and the HTTP API."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Match:
    """One indexed image found for a query. ``score`` is cosine similarity: higher is more alike."""

    id: int
    path: str
    score: float
    width: int
    height: int

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "path": self.path,
            "score": round(self.score, 6),
            "width": self.width,
            "height": self.height,
        }


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
