"""Which copy of a duplicate group to keep.

The default prefers the best copy: most pixels, then the largest file (less compression), then the
oldest (most likely the original), then the path, so the choice is deterministic. The other rules
put one criterion first and fall back on the default for ties.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lookalike.store.base import ItemRecord

KEEP_RULES = ("best", "newest", "oldest", "largest", "smallest", "shortest-path")
DEFAULT_KEEP = "best"


def _best(rec: ItemRecord) -> tuple:
    return (-rec.width * rec.height, -rec.size, rec.mtime_ns, rec.path)


_PRIMARY: dict[str, Callable[[ItemRecord], tuple]] = {
    "best": lambda r: (),
    "newest": lambda r: (-r.mtime_ns,),
    "oldest": lambda r: (r.mtime_ns,),
    "largest": lambda r: (-r.size,),
    "smallest": lambda r: (r.size,),
    "shortest-path": lambda r: (len(r.path),),
}


def keep_key(rule: str = DEFAULT_KEEP) -> Callable[[ItemRecord], tuple]:
    """A sort key: the record to keep sorts first."""
    if rule not in _PRIMARY:
        raise ValueError(f"unknown keep rule {rule!r}; choose one of {', '.join(KEEP_RULES)}")
    primary = _PRIMARY[rule]
    return lambda rec: (*primary(rec), *_best(rec))


def choose_keep(records: Sequence[ItemRecord], rule: str = DEFAULT_KEEP) -> ItemRecord:
    """The record to keep among ``records`` under ``rule``."""
    if not records:
        raise ValueError("no records to choose from")
    return min(records, key=keep_key(rule))
