"""lookalike: visual similarity search for image collections.

>>> from lookalike import Index
>>> index = Index.open("photos.lookalike")      # doctest: +SKIP
>>> index.add(["~/Pictures"])                    # doctest: +SKIP
>>> index.search("query.jpg", k=4).results       # doctest: +SKIP
"""

from lookalike.index import Index
from lookalike.ingest import IngestReport
from lookalike.search.results import Match, QueryResult
from lookalike.store.base import (
    DamagedIndexError,
    IndexWriteError,
    ModelMismatchError,
    ReadOnlyIndexError,
    StoreError,
)

__version__ = "0.1.0"
__all__ = [
    "DamagedIndexError",
    "Index",
    "IndexWriteError",
    "IngestReport",
    "Match",
    "ModelMismatchError",
    "QueryResult",
    "ReadOnlyIndexError",
    "StoreError",
    "__version__",
]
