"""What every route of one app shares: the index, its caches and limits, and how results are shown.

One :class:`WebState` is built by :func:`~lookalike.web.app.create_app` and kept on
``app.state``; routes receive it (or parts of it) through the dependencies in
:mod:`lookalike.web.deps`, never through closures or module globals, so two apps in one process
(as the tests make) never share anything.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from fastapi import HTTPException

from lookalike.dedup.copies import search_verified
from lookalike.dedup.verify import GeometricCheck
from lookalike.index import Index, QueryInput
from lookalike.search.results import Match, QueryResult
from lookalike.store.base import ItemRecord
from lookalike.web.batching import SearchBatcher
from lookalike.web.security import inside
from lookalike.web.thumbnails import THUMBNAIL_SIZE, ThumbnailCache
from lookalike.web.uploads import UploadDecoder

#: Longest side of the large thumbnail (the item page's picture, and formats browsers cannot show).
PREVIEW_SIZE = 1280
#: Searches checked point for point (``verify=true``) that run at once; more wait their turn. Each
#: reads up to 17 images and decodes them on 2 threads, so a burst of them would otherwise take every
#: core and the memory of as many decodes as requests.
VERIFIED_AT_ONCE = 2


class WebState:
    """Everything the routes share; one per app."""

    def __init__(
        self,
        index: Index,
        *,
        owns_index: bool,
        token: str | None,
        upload_dir: Path | None,
        max_upload_bytes: int,
        max_pixels: int,
        thumbnail_dir: Path,
        expose_paths: bool,
        quarantine_dir: Path | None = None,
    ) -> None:
        self.index = index
        self.owns_index = owns_index  # closed with the app when create_app opened it
        self.token = token
        self.upload_dir = upload_dir
        self.quarantine_dir = quarantine_dir
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.expose_paths = expose_paths
        self.uploads = UploadDecoder(index, max_bytes=max_upload_bytes, max_pixels=max_pixels)
        self.thumbs = ThumbnailCache(thumbnail_dir, size=THUMBNAIL_SIZE)
        self.previews = ThumbnailCache(thumbnail_dir, size=PREVIEW_SIZE)
        self.batcher = SearchBatcher(index)
        self.change_lock = asyncio.Lock()  # one change to the collection (add, quarantine) at a time
        #: the last audit, with the index state it was made of (see routes/audit.py)
        self.audit_cache: tuple[object, object] | None = None
        self.map_cache: tuple[object, object] | None = None  # (report, its map)
        self.audit_lock = asyncio.Lock()
        self.verified_slots = threading.BoundedSemaphore(VERIFIED_AT_ONCE)

    def search_verified(self, queries: Sequence[QueryInput], k: int) -> list[QueryResult]:
        """:func:`lookalike.dedup.copies.search_verified`, at most :data:`VERIFIED_AT_ONCE` at a time
        (blocking: call it from a worker thread)."""
        with self.verified_slots:
            return search_verified(self.index, queries, k, check=GeometricCheck(stores=[self.index.store]))

    def close(self) -> None:
        self.batcher.close()
        if self.owns_index:
            self.index.close()

    # -- records ----------------------------------------------------------------------------------
    def record(self, item_id: int) -> ItemRecord:
        """The item's record, or a 404 (also for ids no index can hold: outside 0..2^63-1)."""
        rec = self.index.item(item_id)
        if rec is None:
            raise HTTPException(404, f"no item with id {item_id}")
        return rec

    def servable(self, item_id: int) -> tuple[ItemRecord, str]:
        """The record and the resolved file path of an item, if it may be served; else an HTTP error."""
        rec = self.record(item_id)
        real = os.path.realpath(rec.path)
        if not inside(real, self.allowed_folders()):
            raise HTTPException(403, "this item's file lies outside the indexed folders and is not served")
        if not os.path.isfile(real):
            raise HTTPException(404, "this item's file is missing on disk (re-run `lookalike index`)")
        return rec, real

    def allowed_folders(self) -> list[str]:
        roots = [str(r) for r in (self.index.store.get_meta("roots") or [])]  # type: ignore[union-attr]
        if self.upload_dir is not None:
            roots.append(str(self.upload_dir))
        return roots

    # -- presenting results -----------------------------------------------------------------------
    def match_dict(self, match: Match) -> dict[str, object]:
        out = match.to_dict()
        if not self.expose_paths:
            out["path"] = os.path.basename(match.path)
        rec = self.index.item(match.id)
        out.update(_urls(match.id, rec.sha256 if rec else ""))
        return out

    def result_dict(self, result: QueryResult) -> dict[str, object]:
        out = result.to_dict()
        out["results"] = [self.match_dict(m) for m in result.results]
        return out

    def item_dict(self, rec: ItemRecord) -> dict[str, object]:
        return {
            "id": rec.id,
            "path": rec.path if self.expose_paths else os.path.basename(rec.path),
            "name": os.path.basename(rec.path),
            "width": rec.width,
            "height": rec.height,
            "size": rec.size,
            "sha256": rec.sha256,
            "mtime_ns": rec.mtime_ns,
            "added_at": rec.added_at,
            **_urls(rec.id, rec.sha256),
        }


def _urls(item_id: int, sha256: str) -> dict[str, str]:
    version = sha256[:12]
    return {
        "page_url": f"/items/{item_id}",
        "image_url": f"/api/items/{item_id}/image",
        "thumbnail_url": f"/api/items/{item_id}/thumbnail?v={version}",
        "similar_url": f"/api/items/{item_id}/similar",
    }
