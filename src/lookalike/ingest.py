"""Incremental, pipelined indexing of files into a store.

Decisions per file, cheapest first: unchanged ``(path, size, mtime)`` costs one ``stat``; a file that
failed before and has not changed is reported again without decoding; otherwise the embedding
pipeline (:mod:`lookalike.pipeline`) reads, hashes, decodes (JPEG draft mode), measures and
preprocesses it in worker threads while the model runs on full batches. Content already in the index
(same sha256) is never re-embedded: a moved file keeps its vector, a copy reuses it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lookalike.imaging import checkpicture
from lookalike.imaging.checkpicture import PICTURE_KIND, decode_is_large_enough, encode_check_picture
from lookalike.imaging.discover import FoundFile, Skip, walk_images
from lookalike.imaging.formats import skip_still_holds
from lookalike.imaging.load import DEFAULT_MAX_PIXELS, ImageLoadError, decode_image, read_bytes
from lookalike.imaging.stats import pixel_stats
from lookalike.models.base import Embedder
from lookalike.pipeline.runner import Pipeline, Work
from lookalike.store.base import ItemRecord, Store


@dataclass
class IngestReport:
    """What one ``index`` run did. ``embedded`` counts images that actually went through the model."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    copied: int = 0
    removed: int = 0
    embedded: int = 0
    skipped: list[Skip] = field(default_factory=list)
    #: lookalike's own folders met under the roots (indexes, caches, quarantines): never indexed.
    excluded: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skip_reasons(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped))

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skip_reasons.items()))
        skipped = f"{len(self.skipped)} skipped" + (f" ({reasons})" if reasons else "")
        return (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, {self.moved} moved, "
            f"{self.removed} removed, {skipped} in {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "moved": self.moved,
            "copied": self.copied,
            "removed": self.removed,
            "embedded": self.embedded,
            "skipped": [{"path": s.path, "reason": s.reason, "detail": s.detail} for s in self.skipped],
            "excluded": list(self.excluded),
            "seconds": round(self.seconds, 3),
        }


class Progress:
    """Receives progress events; the CLI draws a bar from them. The default does nothing."""

    def found(self, total: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def skipped(self, skip: Skip) -> None: ...


def prepare_file(
    found: FoundFile,
    embedder: Embedder,
    max_pixels: int,
    known: Callable[[str], bool],
    *,
    keep_picture: bool = False,
) -> Work[FoundFile] | Skip:
    """Worker: read once, hash, and (unless the content is known) decode, measure and preprocess.

    ``info`` carries ``sha256`` and, for new content, ``width``/``height`` and the picture's
    :func:`~lookalike.imaging.stats.pixel_stats` (taken from the same decode); with ``keep_picture``
    also ``picture``, the geometric check's small copy (:mod:`lookalike.imaging.checkpicture`).
    """
    try:
        data = read_bytes(found.path)
        sha = hashlib.sha256(data).hexdigest()
        if known(sha):
            return Work(found, [], {"sha256": sha})
        loaded = decode_image(data, draft_size=embedder.spec.input_size, max_pixels=max_pixels, name=found.path)
    except ImageLoadError as exc:
        return Skip(found.path, exc.reason, exc.detail)
    info = {"sha256": sha, "width": loaded.width, "height": loaded.height, "stats": pixel_stats(loaded.image)}
    if keep_picture and decode_is_large_enough(loaded.image.size, (loaded.width, loaded.height)):
        info["picture"] = encode_check_picture(loaded.image)
    return Work(found, [embedder.preprocess(loaded.image)], info)


def file_record(work: Work[FoundFile], extra: dict[str, object] | None = None) -> ItemRecord:
    """The store record of a prepared file (its stats kept in ``extra`` for quality checks)."""
    found, info = work.item, work.info
    extra = {**(extra or {}), **({"stats": info["stats"]} if info.get("stats") else {})}
    return ItemRecord(
        found.path, info["sha256"], found.size, found.mtime_ns, info["width"], info["height"], extra=extra
    )


class IngestRun:
    """One indexing run's plan, report and closing steps, shared by the local and the Ray pipelines.

    ``plan()`` walks the roots and returns the files that need work; the pipeline then reports each
    file through ``failed``, ``reuse`` or ``commit``; ``finish()`` drops vanished files, remembers
    failures, records the roots, compacts and saves the search index.
    """

    def __init__(
        self,
        store: Store,
        roots: Sequence[str | os.PathLike[str]],
        progress: Progress | None,
        *,
        rehash: bool = False,
    ) -> None:
        self.store = store
        self.rehash = rehash
        self.progress = progress or Progress()
        self.report = IngestReport()
        self.started = time.perf_counter()
        self.roots = [os.path.abspath(os.fspath(r)) for r in roots]
        self.states = store.file_states()
        self.seen: set[str] = set()
        self.todo: dict[str, FoundFile] = {}
        self.new_skips: list[tuple[str, int, int, str, str]] = []
        # Vectors of contents this run overwrote, by sha256: when contents move between indexed paths
        # (two files swapped, a backup copy of files re-saved since), a later file with that content
        # reuses the vector instead of finding no source. Bounded; a miss costs one re-embedding.
        self.replaced: dict[str, tuple[np.ndarray, ItemRecord]] = {}

    def skip(self, skip: Skip) -> None:
        self.report.skipped.append(skip)
        self.progress.skipped(skip)

    def plan(self) -> list[FoundFile]:
        """Walk the roots; unchanged files and unchanged known failures cost a stat call and no more."""
        states, old_skips = self.states, self.store.known_skips()
        trusted = None if self.rehash else lambda p, size, mtime: _same(states.get(p), size, mtime)
        for found in walk_images(self.roots, self.skip, is_known=trusted, on_excluded=self.report.excluded.append):
            self.seen.add(found.path)
            if not self.rehash and _same(states.get(found.path), found.size, found.mtime_ns):
                self.report.unchanged += 1
                continue
            old = old_skips.get(found.path)
            if (
                not self.rehash
                and old
                and old[0] == found.size
                and old[1] == found.mtime_ns
                and skip_still_holds(old[2], old[3])
            ):
                self.skip(Skip(found.path, old[2], old[3]))
                continue
            self.todo[found.path] = found
        self.progress.found(len(self.todo))
        return list(self.todo.values())

    def keeps_pictures(self, todo: Sequence[FoundFile]) -> bool:
        """Whether this run keeps the geometric check's copies of its new pictures: where ``dups``
        checks by default (:data:`lookalike.imaging.checkpicture.VERIFIED_UP_TO` items), not past it."""
        return len(self.store) + len(todo) <= checkpicture.VERIFIED_UP_TO

    def failed(self, skip: Skip) -> None:
        """A planned file that could not be read or decoded."""
        self.skip(skip)
        found = self.todo.get(skip.path)
        if found:
            self.new_skips.append((found.path, found.size, found.mtime_ns, skip.reason, skip.detail))
        self.progress.advance()

    def reuse(self, prepared: Work[FoundFile]) -> bool:
        """A planned file whose bytes were indexed when a worker hashed it: a move or a copy, no new vector.

        False when no item (and no vector this run replaced) holds that content any more, because
        another file of this run overwrote it meanwhile: the caller must embed the file after all.
        """
        if not self._reuse_known_content(prepared):
            return False
        self.progress.advance()
        return True

    def commit(
        self, records: Sequence[ItemRecord], vectors: np.ndarray, pictures: Mapping[str, bytes] | None = None
    ) -> None:
        """Store one embedded batch in one atomic write, then the check's copies of its pictures
        (content sha256 -> bytes) in another: a crash between the two leaves items whose copies
        are missing, which the check reads from the files instead."""
        for rec in records:
            if rec.path in self.states:
                self.report.updated += 1
            else:
                self.report.added += 1
            self._remember_replaced(rec.path, rec.sha256)
        self.store.add(records, vectors)
        if pictures:
            self.store.add_pictures(PICTURE_KIND, pictures)
        self.report.embedded += len(records)
        self.progress.advance(len(records))

    #: At most this many replaced vectors are kept in memory per run (~5.5 MB at 1376-d).
    REPLACED_LIMIT = 1024

    def _remember_replaced(self, path: str, new_sha256: str) -> None:
        """Keep the vector of the content that is about to be overwritten at ``path``."""
        if path not in self.states or len(self.replaced) >= self.REPLACED_LIMIT:
            return
        current = self.store.get_by_path(path)
        if current is None or current.sha256 == new_sha256 or current.sha256 in self.replaced:
            return
        if len(self.store.find_by_sha256(current.sha256)) > 1:
            return  # another item keeps this content and its vector
        self.replaced[current.sha256] = (self.store.vectors([current.id]), current)

    def _reuse_known_content(self, work: Work[FoundFile]) -> bool:
        """Same bytes as an indexed item: a move if that item's file is gone, else a copy sharing its vector."""
        store, report, found, sha = self.store, self.report, work.item, str(work.info["sha256"])
        matches = store.find_by_sha256(sha)
        current = store.get_by_path(found.path)
        if current is not None and current.sha256 == sha:
            store.touch(current.id, found.size, found.mtime_ns)  # same content, new mtime
            report.unchanged += 1
            return True
        gone = next((m for m in matches if m.path != found.path and not os.path.lexists(m.path)), None)
        if gone is not None:
            if current is not None:
                self._remember_replaced(current.path, sha)
                store.remove([current.id])
            store.move(gone.id, found.path, found.mtime_ns)
            report.moved += 1
            return True
        if matches:
            source, vector = matches[0], store.vectors([matches[0].id])
        elif sha in self.replaced:
            vector, source = self.replaced[sha]
        else:
            return False
        self._remember_replaced(found.path, sha)
        record = ItemRecord(
            found.path, sha, found.size, found.mtime_ns, source.width, source.height, extra=source.extra
        )
        store.add([record], vector)
        if found.path in self.states:
            report.updated += 1
        else:
            report.added += 1
        report.copied += 1
        return True

    def finish(self, remove_missing: bool) -> IngestReport:
        store, report = self.store, self.report
        # Files that became unreadable/non-images lose their stale vector; vanished files leave the index.
        stale_ids = [self.states[s.path][0] for s in report.skipped if s.path in self.states]
        if remove_missing:
            for root in self.roots:
                for item_id, path in store.paths_under(root):
                    if path not in self.seen and not os.path.lexists(path):
                        stale_ids.append(item_id)
        # Items an older version indexed inside lookalike's own folders (e.g. thumbnails) leave the index.
        for folder in self.report.excluded:
            stale_ids.extend(item_id for item_id, path in store.paths_under(folder) if path not in self.seen)
        report.removed = store.remove(sorted(set(stale_ids)))
        failed = {skip[0] for skip in self.new_skips}
        store.record_skips(self.new_skips, forget=[path for path in self.todo if path not in failed])
        roots_meta = list(store.get_meta("roots") or [])  # type: ignore[arg-type]
        for root in self.roots:
            folder = root if os.path.isdir(root) else os.path.dirname(root)
            if folder not in roots_meta and os.path.exists(folder):
                roots_meta.append(folder)
        store.set_meta("roots", roots_meta)
        store.compact()
        store.save_search_index()
        report.seconds = time.perf_counter() - self.started
        return report


def ingest(
    store: Store,
    embedder: Embedder,
    roots: Sequence[str | os.PathLike[str]],
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    remove_missing: bool = True,
    rehash: bool = False,
) -> IngestReport:
    """Index ``roots`` into ``store``. ``rehash`` reads and hashes every file, trusting no (size, mtime)."""
    run = IngestRun(store, roots, progress, rehash=rehash)
    todo = run.plan()
    embed_again: set[str] = set()  # files whose known content was overwritten before they were reused
    known = _KnownHashes(store, run.replaced)  # type: ignore[arg-type]
    keep_pictures = run.keeps_pictures(todo)

    def prepare(found: FoundFile) -> Work[FoundFile] | Skip:
        return prepare_file(
            found,
            embedder,
            max_pixels,
            (lambda sha: False) if found.path in embed_again else known,
            keep_picture=keep_pictures,
        )

    class Sink:
        def finished(self, done: list[tuple[Work[FoundFile], np.ndarray]], extras: list[dict[str, object]]) -> None:
            records, vectors, pictures = [], [], {}
            for (work, vecs), extra in zip(done, extras, strict=True):
                if len(vecs):
                    records.append(file_record(work, extra))
                    vectors.append(vecs[0])
                    if "picture" in work.info:
                        pictures[str(work.info["sha256"])] = work.info["picture"]
                elif not run.reuse(work):  # its content was overwritten since the worker hashed it
                    embed_again.add(work.item.path)
                    pipeline.submit(work.item)
            if records:
                run.commit(records, np.stack(vectors), pictures)  # one atomic store write per model batch

        def skipped(self, item: FoundFile, skip: Skip) -> None:
            run.failed(skip)

    pipeline = Pipeline(prepare, Sink(), embedder, workers=workers)
    pipeline.run(todo)
    return run.finish(remove_missing)


def _same(state: tuple[int, int, int] | None, size: int, mtime_ns: int) -> bool:
    return state is not None and state[1] == size and state[2] == mtime_ns


class _KnownHashes:
    """Thread-safe 'is this content already indexed?' for the workers (the store serialises access).

    Content this run overwrote counts as known: its vector waits in ``replaced`` (filled before the
    store forgets it), so a file that now holds it is not decoded again. The store is asked *first*:
    asking ``replaced`` first lets the sink stash the content and drop it from the store between the
    two looks, and the content then reads as unknown (a needless embedding; seen in CI on a swap).
    """

    def __init__(self, store: Store, replaced: dict[str, object]) -> None:
        self.store = store
        self.replaced = replaced

    def __call__(self, sha256: str) -> bool:
        return bool(self.store.find_by_sha256(sha256)) or sha256 in self.replaced
