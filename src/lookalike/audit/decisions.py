""" "Not a problem" decisions: a reviewer's word that a finding is wrong, remembered in the index.

Keyed by content (sha256), like "not a duplicate" marks (:meth:`Store.mark_not_duplicates`), so a
decision survives renames, moves and re-indexing, and covers every copy of the picture. Stored in the
index's metadata (key :data:`META_KEY`: ``{sha256: [kind, ...]}``), which every store keeps. A kind is
``outlier``, a quality issue name (``blurry`` ...), or ``all``.
"""

from __future__ import annotations

from collections.abc import Iterable

from lookalike.audit.quality import ISSUES
from lookalike.store.base import Store

META_KEY = "audit_not_a_problem"
OUTLIER = "outlier"
ALL = "all"
KINDS = (ALL, OUTLIER, *ISSUES)


def not_a_problem(store: Store) -> dict[str, set[str]]:
    """sha256 -> the kinds of finding marked "not a problem" for that picture."""
    raw = store.get_meta(META_KEY)
    if not isinstance(raw, dict):
        return {}
    return {str(sha): {str(k) for k in kinds} for sha, kinds in raw.items() if isinstance(kinds, list)}


def mark_not_a_problem(store: Store, sha256s: Iterable[str], kinds: Iterable[str] = (ALL,)) -> int:
    """Remember that these pictures' findings of these kinds are not problems; returns how many marks are new."""
    kinds = list(kinds)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kind of finding {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    marks = not_a_problem(store)
    new = 0
    for sha in sha256s:
        have = marks.setdefault(sha, set())
        new += len(set(kinds) - have)
        have.update(kinds)
    if new:
        store.set_meta(META_KEY, {sha: sorted(kinds) for sha, kinds in sorted(marks.items())})
    return new


def unmark(store: Store, sha256s: Iterable[str]) -> int:
    """Forget every decision about these pictures; returns how many pictures had one."""
    marks = not_a_problem(store)
    gone = [sha for sha in sha256s if marks.pop(sha, None) is not None]
    if gone:
        store.set_meta(META_KEY, {sha: sorted(kinds) for sha, kinds in sorted(marks.items())})
    return len(gone)


def is_dismissed(marks: dict[str, set[str]], sha256: str, kind: str) -> bool:
    """Whether this picture's finding of this kind was marked "not a problem"."""
    kinds = marks.get(sha256)
    return bool(kinds) and (ALL in kinds or kind in kinds)  # type: ignore[operator]
