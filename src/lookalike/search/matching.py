"""Deciding that nothing in the collection is alike ("no match").

The first rule is the original app's: the best cosine similarity below a fixed cut-off. It is kept
as a named rule so that calibrated rules can replace it and be compared against it.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The original app's cut-off on the best cosine similarity.
FIXED_NO_MATCH_BELOW = 0.5


def fixed_no_match(scores: Sequence[float], threshold: float = FIXED_NO_MATCH_BELOW) -> bool:
    """True when the best score is below ``threshold`` (or there are no scores at all)."""
    return not scores or max(scores) < threshold
