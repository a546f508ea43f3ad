"""The on-disk ANN cache of one store folder: which file to trust, when to rebuild, how to save.

A cache file ``ann-<spec>-<vector file>-<trained>-<covered>.faiss`` (with its ``.probes.json``
policy, see :mod:`lookalike.store.vector_index`) is derived from the vector file and is never the
truth: the store's SQLite commit is. So whatever goes wrong with a cache ends in a rebuild, never
in wrong answers:

* a file is trusted only when its name matches the spec and the current vector file, it covers no
  slot past the committed ones and faiss reads back as many vectors as its name says;
* it is only ever replaced whole (temp file, fsync, rename in :meth:`AnnIndex.save`): the rename
  commits it, older files are pruned after, so a crash leaves the old file, the new one, or both;
* compaction renumbers slots, so it drops every file (:meth:`AnnCache.drop`) and a build running
  meanwhile is void;
* where nothing can be written (a read-only store, a full disk) the index lives in memory, and a
  later writable :meth:`AnnCache.save` writes it.

Growth never blocks a search: rows appended after the file's ``covered`` are scanned exactly (the
tail); once the tail passes :func:`tail_limit`, or the collection has grown 4x past what the coarse
structure was trained on, a background thread merges or retrains and swaps the new file in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import numpy as np

from lookalike.store.base import StoreError
from lookalike.store.vector_index import (
    AUTO_EXACT_FLOATS,
    AnnIndex,
    FlatIndex,
    IndexSpec,
    IndexSpecError,
    VectorIndex,
    auto_spec,
    cache_name,
    parse_cache_name,
    parse_spec,
    probe_file,
    remove_cache,
    slug_of,
)

_SAVE_ERRORS = (OSError, RuntimeError)  # faiss reports a failed write as RuntimeError


def needs_retrain(ann: AnnIndex, n_live: int) -> bool:
    """Coarse structures (IVF centroids, PCA, codebooks) go stale when the collection grows 4x."""
    return ann.spec.kind != "hnsw" and n_live > 4 * max(1, ann.trained)


def tail_limit(covered: int, dim: int) -> int:
    """Rows left to exact tail scan before merging them into the ANN file (~1-2 ms of scan)."""
    return int(max(0.01 * covered, AUTO_EXACT_FLOATS / (8 * max(1, dim))))


class AnnCache:
    """The ANN cache files of one store folder for one index spec, and the index loaded from them.

    The store owns the vectors and hands its memory map and live mask to :meth:`search_index`.
    ``lock`` is the store's lock: the store holds it around every call, and the background thread
    takes it to swap its result in. ``vector_tag`` names the store's current vector file (called
    under that lock). ``on_replace`` is called, under the lock, whenever the loaded index changes
    outside :meth:`search_index`, so the store stops serving the old one.
    """

    def __init__(
        self,
        folder: Path,
        index_kind: str,
        *,
        read_only: bool,
        lock: threading.RLock,
        vector_tag: Callable[[], str],
        on_replace: Callable[[], None],
    ) -> None:
        self.folder = folder
        self.index_kind = index_kind
        #: A read-only store builds in memory and never writes a cache file.
        self.read_only = read_only
        self._slug = slug_of(index_kind)
        self._lock = lock
        self._vector_tag = vector_tag
        self._on_replace = on_replace
        self._ann: AnnIndex | None = None
        self._tag = ""  # the vector file self._ann belongs to
        self._epoch = 0  # moved by drop(): a background build started before it is void
        self._build_lock = threading.Lock()
        self._bg: threading.Thread | None = None
        #: Why the last background build failed (the old index kept serving; the next open retries).
        self.bg_error: str | None = None

    # -- what the store asks for ------------------------------------------------------------------
    def search_index(self, matrix: np.ndarray, live: np.ndarray) -> VectorIndex:
        """The structure to search ``matrix`` with: exact while that is enough, else the cached ANN.

        Loads the newest valid file, or builds one now when there is none (later rebuilds run in
        the background, while this one keeps serving with an exact tail).
        """
        n_slots, n_live, dim = len(live), int(live.sum()), matrix.shape[1]
        want = self._want_spec(n_live, dim)
        if want.kind == "flat" or n_live < want.min_train():
            return FlatIndex(matrix, live)  # exact: fast enough, or too few to train
        tag = self._vector_tag()
        ann = self._ann
        if ann is None or ann.covered > n_slots or self._tag != tag:
            ann = self._load(tag, n_slots, dim)
        if ann is None:
            ann = self._keep(self._make(want, matrix, live), tag)
        self._ann, self._tag = ann.attach(matrix, live), tag
        if needs_retrain(ann, n_live) or ann.tail > tail_limit(ann.covered, dim):
            self._start_background_build(matrix, live, tag)
        return ann

    def save(self, search: VectorIndex) -> None:
        """Make the cache file cover what was added: ``search`` is what :meth:`search_index` returned."""
        if self.read_only or not isinstance(search, AnnIndex):
            return  # nowhere to save it (searches use the in-memory index), or nothing to save
        matrix, live = search.matrix, search.live
        n_live, dim = int(live.sum()), matrix.shape[1]
        if needs_retrain(search, n_live):
            ann = self._make(self._want_spec(n_live, dim), matrix, live)
        elif search.tail > tail_limit(search.covered, dim) // 4:
            ann = self._make(search.spec, matrix, live, base=search)
        elif search.path is None:
            ann = search  # built while the cache could not be written: try again now
        else:
            return  # a small tail stays an exact scan: not worth rewriting the file
        self._ann = self._keep(ann, self._vector_tag())
        self._on_replace()

    def wait(self, timeout: float | None = None) -> None:
        """Block until a background (re)build, if any, has finished."""
        bg = self._bg
        if bg is not None:
            bg.join(timeout)

    def drop(self, lost_from: int | None = None, n_slots: int = 0) -> int:
        """Delete the cache files, and forget the loaded index; return how many files went.

        Every file (compaction renumbered the slots), or with ``lost_from`` those covering that slot
        or later (a repair: once new rows reuse those slots, the file would map them to old vectors);
        a name that does not say what it covers is taken to cover ``n_slots``.
        """
        with self._lock:
            if lost_from is None:
                doomed = [*self.folder.glob("hnsw-*.faiss"), *self.folder.glob("ann-*.faiss")]  # hnsw-*: older names
            else:
                doomed = [p for p in self.folder.glob("ann-*.faiss") if _covered(p, n_slots) > lost_from]
            for path in doomed:
                remove_cache(path)
            self._ann = None
            self._epoch += 1
            self._on_replace()
            return len(doomed)

    def remove_orphans(self) -> None:
        """Delete probe-policy files whose index file never landed (a build killed in between)."""
        for path in self.folder.glob("ann-*.probes.json"):
            if not path.with_name(path.name.removesuffix(".probes.json") + ".faiss").exists():
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Forget the loaded index (its file may be memory-mapped: a read-only mount must unmount)."""
        self._ann = None

    # -- files ------------------------------------------------------------------------------------
    def _files(self, tag: str) -> list[Path]:
        """This spec's cache files for the vector file ``tag``, fewest slots covered first."""
        files = []
        for path in self.folder.glob("ann-*.faiss"):
            try:
                slug, file_tag, _, covered = parse_cache_name(path.name)
            except ValueError:
                continue
            if slug == self._slug and file_tag == tag:
                files.append((covered, path))
        return [path for _, path in sorted(files)]

    def _load(self, tag: str, n_slots: int, dim: int) -> AnnIndex | None:
        """The newest file that covers no uncommitted slot and reads back whole, or None."""
        for path in reversed(self._files(tag)):
            _, _, trained, covered = parse_cache_name(path.name)
            if covered > n_slots:
                continue
            try:
                loaded = AnnIndex.load(self._cached_spec(trained, dim), path)
            except Exception:  # a damaged or foreign cache is rebuilt, never trusted
                continue
            if loaded.index.d == dim:
                return loaded
        return None

    def _make(self, spec: IndexSpec, matrix: np.ndarray, live: np.ndarray, base: AnnIndex | None = None) -> AnnIndex:
        """Train a new index on every slot, or extend a private copy of ``base``'s file to them."""
        if base is not None and base.path is not None:
            ann = AnnIndex.load(base.spec, base.path, mmap=False)  # writable; the saved file stays as it is
            ann.extend(matrix, len(live))
            return ann
        return AnnIndex.build(spec, matrix, live.copy(), len(live))

    def _write(self, ann: AnnIndex, tag: str) -> AnnIndex:
        """Save ``ann`` atomically, prune the older files and reopen it memory-mapped.

        Raises what the save raised (a full disk, a folder gone read-only) after removing its temp files.
        """
        try:
            path = ann.save(self.folder, self._slug, tag)
        except _SAVE_ERRORS:
            target = self.folder / cache_name(self._slug, tag, ann.trained, ann.covered)
            for written in (target, probe_file(target)):
                with suppress(OSError):  # best effort: they only take space
                    written.with_name(f".{written.name}.tmp").unlink(missing_ok=True)
            raise
        for old in self._files(tag):
            if old != path:
                remove_cache(old)
        return AnnIndex.load(ann.spec, path)

    def _keep(self, ann: AnnIndex, tag: str) -> AnnIndex:
        """``ann`` saved as the cache, or in memory where it cannot be saved (a later save retries)."""
        if self.read_only:
            return ann
        try:
            return self._write(ann, tag)
        except _SAVE_ERRORS:
            ann.path = None
            return ann

    # -- background rebuild -----------------------------------------------------------------------
    def _start_background_build(self, matrix: np.ndarray, live: np.ndarray, tag: str) -> None:
        """Retrain or merge the tail in a thread; searches keep using the current index meanwhile."""
        if self._bg is not None and self._bg.is_alive():
            return
        if self.read_only or (self._ann is not None and self._ann.path is None):
            return  # nowhere to save the result: the tail stays an exact scan until a writable open
        self._bg = threading.Thread(
            target=self._background_build, args=(matrix, live.copy(), tag, self._epoch), daemon=True, name="ann-build"
        )
        self._bg.start()

    def _background_build(self, matrix: np.ndarray, live: np.ndarray, tag: str, epoch: int) -> None:
        try:
            with self._build_lock:
                with self._lock:
                    current = self._ann
                    if current is None or tag != self._vector_tag():
                        return
                n_live = int(live.sum())
                retrain = needs_retrain(current, n_live)
                ann = self._make(self._want_spec(n_live, matrix.shape[1]), matrix, live, None if retrain else current)
                with self._lock:
                    if tag != self._vector_tag() or epoch != self._epoch:
                        return  # compaction renumbered slots (or a repair dropped some) meanwhile: void
                    self._ann, self._tag = self._write(ann, tag), tag
                    self._on_replace()  # re-attached to the newest vectors on the next search
        except Exception as exc:  # the old index keeps serving; the next open retries
            self.bg_error = f"{type(exc).__name__}: {exc}"

    # -- specs ------------------------------------------------------------------------------------
    def _want_spec(self, n_live: int, dim: int) -> IndexSpec:
        if self.index_kind == "auto":
            return auto_spec(n_live, dim)
        try:
            return parse_spec(self.index_kind, dim)
        except IndexSpecError as exc:
            raise StoreError(str(exc)) from exc

    def _cached_spec(self, trained: int, dim: int) -> IndexSpec:
        """The spec a cache file was built with: ``auto`` is a pure function of (trained, dim)."""
        return auto_spec(trained, dim) if self.index_kind == "auto" else self._want_spec(trained, dim)


def _covered(path: Path, default: int) -> int:
    try:
        return parse_cache_name(path.name)[3]
    except ValueError:
        return default
