"""Search that says which results are copies of the query, checked point for point (``search --verify``).

Why: the model ranks by how alike two pictures look, so a copy that was turned, cropped, pasted into
a screenshot or put in a collage can rank below look-alikes of the same kind of scene (on the
duplicate sets of ``bench/bench_dups_heldout.py`` a photo inside a screenshot is found first for 0.6-0.8
of the queries). The query is checked with local features
(:class:`lookalike.dedup.verify.GeometricCheck`) against its :data:`VERIFY_K` most similar results
scoring at least :data:`~lookalike.dedup.groups.VERIFY_FLOOR`; the ones it confirms come first,
marked ``verified``, and the rest follow in the model's order. Nothing is dropped: a result the check
does not confirm may still be very similar, which is what search is for.

Cost: the query and up to ``VERIFY_K`` results are read again (about 50 ms of CPU each for a
multi-megapixel JPEG), so it is for the CLI and batch jobs; the HTTP API leaves it off unless asked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from lookalike.dedup.groups import VERIFY_AUTO_LIMIT, VERIFY_FLOOR, PairCheck
from lookalike.dedup.sweep import example_record
from lookalike.index import Index, QueryInput
from lookalike.search.results import Match, QueryResult
from lookalike.store.base import ItemRecord

#: Results checked per query (the most similar ones at or above ``VERIFY_FLOOR``). Chosen on the
#: tuning set of bench_dups_heldout (copy search accuracy@1 with the check; docs/cleaning.md, "Copies first in search").
VERIFY_K = 16
#: ``search`` checks by default (default model) up to this many query images: each costs up to
#: ``1 + VERIFY_K`` image reads, so this is the read budget of ``dups``' automatic limit.
VERIFY_AUTO_QUERIES = VERIFY_AUTO_LIMIT // (1 + VERIFY_K)


class Scored(Protocol):
    @property
    def score(self) -> float: ...


S = TypeVar("S", bound=Scored)


@dataclass(frozen=True)
class CopyCheck:
    """What the check did for one query: results checked, copies confirmed."""

    checked: int = 0
    confirmed: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def copies_first(
    results: Sequence[S], confirms: Callable[[S], bool], *, verify_k: int = VERIFY_K, floor: float = VERIFY_FLOOR
) -> tuple[list[S], set[int]]:
    """``results`` (best score first) reordered: the ones among the first ``verify_k`` scoring at
    least ``floor`` that ``confirms`` first, in their own order, then the others in theirs. Also
    returns the positions (in ``results``) of the confirmed ones."""
    confirmed = {i for i, r in enumerate(results[:verify_k]) if r.score >= floor and confirms(r)}
    ordered = [r for i, r in enumerate(results) if i in confirmed] + [
        r for i, r in enumerate(results) if i not in confirmed
    ]
    return ordered, confirmed


def search_verified(
    index: Index,
    queries: Sequence[QueryInput],
    k: int = 4,
    *,
    check: PairCheck,
    verify_k: int = VERIFY_K,
    no_match_rule: str | None = None,
    accept_rate: float | None = None,
) -> list[QueryResult]:
    """:meth:`Index.search_many`, with each query checked point for point against its ``verify_k``
    most similar results (:func:`copies_first`): confirmed copies come first with ``verified`` set,
    and a query with a confirmed copy is not "no match". ``extra["verify"]`` holds its
    :class:`CopyCheck`. A query the check cannot read keeps the model's order."""
    wide = index.search_many(queries, max(k, verify_k), no_match_rule=no_match_rule, accept_rate=accept_rate)
    out = []
    for query, result in zip(queries, wide, strict=True):
        if result.error:
            out.append(result)
            continue
        query_record = example_record(index, check, query)
        records = {m.id: index.store.get(m.id) for m in result.results[:verify_k] if m.score >= VERIFY_FLOOR}
        if query_record is None:
            out.append(dataclasses.replace(result, results=result.results[:k]))
            continue
        check.confirms_all([(query_record, r) for r in records.values() if r is not None])  # in parallel, cached
        confirms = _confirms_against(check, query_record, records)
        ordered, confirmed = copies_first(result.results, confirms, verify_k=verify_k)
        marked = [dataclasses.replace(m, verified=True) for m in ordered[: len(confirmed)]] + ordered[len(confirmed) :]
        extra = {**result.extra, "verify": CopyCheck(len(records), len(confirmed)).to_dict()}
        out.append(
            dataclasses.replace(result, results=marked[:k], no_match=result.no_match and not confirmed, extra=extra)
        )
    return out


def _confirms_against(
    check: PairCheck, query: ItemRecord, records: dict[int, ItemRecord | None]
) -> Callable[[Match], bool]:
    """Whether the check confirms a result (by its item's record) as a copy of the query."""

    def confirms(match: Match) -> bool:
        rec = records.get(match.id)
        return rec is not None and check.confirms(query, rec)

    return confirms
