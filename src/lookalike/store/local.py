"""The embedded store: SQLite (WAL) for items and metadata, an append-only float32 file for vectors.

Crash safety comes from ordering, not luck. A write appends vector rows after the last committed
slot, fsyncs them, and only then commits the SQLite transaction that points items at those slots and
moves ``n_slots`` forward. A process killed at any moment leaves either the old or the new committed
state; rows past ``n_slots`` are garbage and are cut off by the next writer. ``BEGIN IMMEDIATE``
serialises writers across processes. Deleted or replaced items leave dead rows, which
:meth:`LocalStore.compact` rewrites away (new file, fsync, commit, then unlink the old one).
Approximate search structures are only a cache of the vector file, kept on disk beside it by
:class:`~lookalike.store.ann_cache.AnnCache`.

Failure modes are met at open, not halfway through a command:

* A folder that cannot be written (read-only mount, ``chattr +i``, no permission) or that has no
  room to open the WAL (disk full) opens **read-only**: SQLite's ``mode=ro`` where that works, else
  ``immutable=1``; no schema is written, ANN indexes are built in memory instead of cached. Every
  write then raises :class:`ReadOnlyIndexError` naming the reason. ``read_only=False`` asks for a
  writable index and raises at open instead (``lookalike index`` does).
* A write the file system refuses midway (``ENOSPC``) rolls back and raises
  :class:`IndexWriteError`: the index keeps its last committed state (rows it appended are cut at
  once, or by the next writer if SQLite's commit was what failed). ANN caches that cannot be saved
  are used from memory; a compaction without room waits for a later run.
* A vector file shorter than ``n_slots`` rows is :class:`DamagedIndexError` at open; ``repair=True``
  (``lookalike index``, ``lookalike repair``) runs :meth:`LocalStore.repair`, which drops exactly the
  items whose rows are lost so the next ``index`` run embeds those files again.
* An ``items.sqlite`` of 0 bytes is a new index only in an otherwise empty folder (a creation that
  was killed); beside other index files, or when it is not SQLite at all, it is damage.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from lookalike.store.ann_cache import AnnCache
from lookalike.store.base import (
    DamagedIndexError,
    Hit,
    IndexWriteError,
    ItemRecord,
    ModelMismatchError,
    ReadOnlyIndexError,
    RepairReport,
    Store,
    StoreError,
    VectorRows,
    model_mismatch_message,
)
from lookalike.store.vector_index import AnnIndex, IndexSpecError, VectorIndex, parse_spec

FORMAT_VERSION = 1
DB_FILE = "items.sqlite"
_DB_FILES = (DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm")  # the database and SQLite's side files
NO_SPACE = "no space left on device"
_LOW_SPACE_BYTES = 1 << 20  # below this, an I/O error while writing is taken for a full disk
_ERRNO_PROBLEMS = {
    errno.ENOSPC: NO_SPACE,
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")
INDEX_KINDS = ("auto", "flat", "hnsw32", "ivf4096,sq8", "ivf16384,pq64", "pca256,ivf1024,sq8")  # examples

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    slot INTEGER NOT NULL UNIQUE,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    added_at REAL NOT NULL,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS items_sha256 ON items(sha256);
CREATE TABLE IF NOT EXISTS not_duplicates (
    a TEXT NOT NULL, b TEXT NOT NULL, added_at REAL NOT NULL, PRIMARY KEY (a, b)
);
CREATE TABLE IF NOT EXISTS skipped (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, reason TEXT NOT NULL, detail TEXT
);
CREATE TABLE IF NOT EXISTS pictures (
    sha256 TEXT NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (sha256, kind)
);
"""

_COLUMNS = "id, path, sha256, size, mtime_ns, width, height, added_at, extra"


def _record(row: tuple) -> ItemRecord:
    item_id, path, sha, size, mtime_ns, width, height, added_at, extra = row
    return ItemRecord(
        path=path,
        sha256=sha,
        size=size,
        mtime_ns=mtime_ns,
        width=width,
        height=height,
        id=item_id,
        added_at=added_at,
        extra=json.loads(extra) if extra else {},
    )


class LocalStore(Store):
    """Items and vectors in one folder. Thread-safe; several processes may read, one writes at a time.

    ``read_only``: None (default) opens read-only only when the folder cannot be written; True
    always; False requires a writable index (:class:`ReadOnlyIndexError` at open otherwise).
    ``repair``: repair a damaged vector file at open instead of raising :class:`DamagedIndexError`.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        index_kind: str | None = None,
        create: bool = True,
        read_only: bool | None = None,
        repair: bool = False,
    ) -> None:
        if index_kind is not None:
            try:
                index_kind = parse_spec(index_kind).text  # dimension checks wait until the dim is known
            except IndexSpecError as exc:
                raise StoreError(str(exc)) from exc
        self.folder = Path(folder)
        #: Why this handle cannot write ("read-only file system", "no space left on device"...), or None.
        self.read_only_reason: str | None = "opened read-only" if read_only else None
        #: What :meth:`repair` did when ``repair=True`` found damage at open, else None.
        self.repaired: RepairReport | None = None
        new = self._check_folder(create, read_only)
        self._lock = threading.RLock()
        self._loaded_generation = -1
        self._id_to_slot: np.ndarray | None = None  # inverse of _slot_to_id, built on first use
        self._pending: list[tuple[str, object]] = []  # in-memory changes of the transaction in flight
        self._tables: set[str] = set()
        self._search: VectorIndex | None = None
        self._matrix = np.zeros((0, 1), dtype=np.float32)
        try:
            self._db = self._connect(new, read_only)
        except sqlite3.DatabaseError as exc:
            raise self._open_error(exc) from exc
        try:
            self._open(index_kind)
            try:
                self._refresh()
            except DamagedIndexError:
                if not repair:
                    raise
                self.repaired = self.repair()
        except BaseException as exc:
            self.close()  # never leave a handle on the files (a read-only mount could not be unmounted)
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._open_error(exc) from exc
            raise

    def _check_folder(self, create: bool, read_only: bool | None) -> bool:
        """Refuse what is not an index; True when the index is new (to be created)."""
        db_path = self.folder / DB_FILE
        wal = self.folder / _DB_FILES[1]
        if db_path.exists() and db_path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size):
            others = sorted(p.name for p in self.folder.iterdir() if p.name not in _DB_FILES)
            if others:  # a creation killed early leaves the folder empty; anything beside it is an index's
                listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
                raise DamagedIndexError(
                    f"{db_path} is empty (0 bytes) but {self.folder} holds index files ({listed}): the list of "
                    "items is lost and the vectors cannot be used without it. Move the folder aside and run "
                    "`lookalike index` into a new index folder"
                )
            new = True
        else:
            new = not db_path.exists()
        if not new:
            return False
        if not create:
            raise StoreError(f"no lookalike index at {self.folder} (create one with `lookalike index`)")
        if not db_path.exists() and self.folder.exists() and any(self.folder.iterdir()):
            raise StoreError(f"{self.folder} exists and is not a lookalike index; choose an empty folder")
        if read_only:
            raise StoreError(f"no lookalike index at {self.folder} to open read-only")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._write_error(exc, f"cannot create an index at {self.folder}") from exc
        reason = _not_writable(self.folder)
        if reason is not None:
            raise ReadOnlyIndexError(f"{reason}: cannot create an index at {self.folder}", errno.EROFS)
        return True

    def _connect(self, new: bool, read_only: bool | None) -> sqlite3.Connection:
        """A read-write WAL connection when the folder allows one, else a read-only one."""
        db_path = self.folder / DB_FILE
        if not read_only:
            reason = _not_writable(self.folder)
            if reason is None:
                db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
                try:
                    db.execute("PRAGMA journal_mode=WAL")  # needs room for the -wal and -shm files
                    db.execute("PRAGMA synchronous=NORMAL")
                    db.execute("PRAGMA busy_timeout=30000")
                    return db
                except sqlite3.OperationalError as exc:
                    db.close()
                    if new:
                        raise self._write_error(exc, f"cannot create an index at {self.folder}") from exc
                    if _sqlite_name(exc) in _DAMAGED or _sqlite_name(exc) == "SQLITE_BUSY":
                        raise
                    reason = _problem(exc, self.folder)
            self.read_only_reason = reason
            if read_only is False:
                raise ReadOnlyIndexError(self._read_only_message(), _problem_errno(reason))
        return self._connect_read_only(db_path)

    def _connect_read_only(self, db_path: Path) -> sqlite3.Connection:
        """``mode=ro`` (sees other writers; needs the -shm file), else ``immutable=1`` (a snapshot)."""
        uri = db_path.absolute().as_uri()
        try:
            return _probe(sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, isolation_level=None))
        except sqlite3.OperationalError as exc:
            if _sqlite_name(exc) in _DAMAGED:
                raise
        wal = self.folder / _DB_FILES[1]
        if wal.exists() and wal.stat().st_size:
            # immutable=1 would ignore committed changes still in the WAL (and maybe a newer vector file).
            raise StoreError(
                f"cannot open {self.folder} read-only ({self.read_only_reason}): {wal.name} holds committed "
                "changes that SQLite can only read where the folder is writable; open it once there "
                "(e.g. `lookalike info`) to fold them into the database"
            )
        return _probe(sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False, isolation_level=None))

    def _open(self, index_kind: str | None) -> None:
        """Read (and for a new index, write) the metadata; a read-only handle writes nothing."""
        if not self.read_only:
            self._db.executescript(_SCHEMA)  # idempotent
        self._tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "items"} <= self._tables:
            raise DamagedIndexError(f"{self.folder / DB_FILE} holds no lookalike index (no items or meta table)")
        if self._meta("format_version") is None:  # a new index; opening an existing one writes nothing
            if self.read_only:
                raise StoreError(f"{self.folder} is an empty lookalike index that cannot be written")
            with self._write_txn():
                if self._meta("format_version") is None:
                    self._set_meta("format_version", FORMAT_VERSION)
                    self._set_meta("n_slots", 0)
                    self._set_meta("vector_file", "vectors-0.f32")
                    self._set_meta("generation", 0)
                    self._set_meta("created_at", time.time())
        version = self._meta("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(f"index format {version} is not supported by this lookalike (needs {FORMAT_VERSION})")
        recorded = self._meta("index_kind")
        if index_kind is not None and index_kind != recorded and not self.read_only:
            with self._write_txn():
                self._set_meta("index_kind", index_kind)  # later opens (search, web) use the same kind
        #: The user's index spec (``auto`` or a factory string), remembered in the index.
        self.index_kind: str = index_kind or str(recorded or "auto")
        self._check_kind(self._meta("dim"))
        self._ann_cache = AnnCache(
            self.folder,
            self.index_kind,
            read_only=self.read_only,
            lock=self._lock,
            vector_tag=self._vector_tag,
            on_replace=self._forget_search,
        )

    @property
    def read_only(self) -> bool:  # type: ignore[override]
        return self.read_only_reason is not None

    def _read_only_message(self) -> str:
        hint = " (free some space and run it again)" if self.read_only_reason == NO_SPACE else ""
        return (
            f"the index at {self.folder} is read-only ({self.read_only_reason}): it can be searched "
            f"but not changed{hint}"
        )

    def _write_error(self, exc: BaseException, what: str = "") -> IndexWriteError:
        """A typed, one-line error for a write the file system or SQLite refused."""
        problem = _problem(exc, self.folder)
        code = exc.errno if isinstance(exc, OSError) else _problem_errno(problem)
        what = what or f"cannot write to the index at {self.folder}; it keeps its last committed state"
        hint = " (free some space and run it again)" if problem == NO_SPACE else ""
        cls = ReadOnlyIndexError if code in (errno.EROFS, errno.EACCES, errno.EPERM) else IndexWriteError
        return cls(f"{problem}: {what}{hint}", code)

    def _open_error(self, exc: sqlite3.DatabaseError) -> StoreError:
        db_path = self.folder / DB_FILE
        if _sqlite_name(exc) in _DAMAGED:
            return DamagedIndexError(
                f"{db_path} is not a lookalike index database ({exc}): it is damaged or was overwritten. "
                "Restore it from a backup, or move the folder aside and run `lookalike index` into a new --db"
            )
        return StoreError(f"cannot open the index at {self.folder}: {_problem(exc, self.folder)}")

    # -- metadata -------------------------------------------------------------------------------
    def _meta(self, key: str) -> object:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def _set_meta(self, key: str, value: object) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def get_meta(self, key: str) -> object:
        with self._lock:
            return self._meta(key)

    def set_meta(self, key: str, value: object) -> None:
        with self._lock, self._write_txn():
            self._set_meta(key, value)

    @property
    def model_identity(self) -> dict[str, object] | None:
        return self.get_meta("model")  # type: ignore[return-value]

    def set_model_identity(self, identity: dict[str, object]) -> None:
        with self._lock, self._write_txn():
            current = self._meta("model")
            if current is not None and current != identity:
                raise ModelMismatchError(model_mismatch_message(current, identity))  # type: ignore[arg-type]
            self._check_kind(identity["dim"])
            self._set_meta("model", identity)
            self._set_meta("dim", identity["dim"])
            self._pending.append(("reload", None))

    @contextmanager
    def _write_txn(self) -> Iterator[bool]:
        """One atomic write. BEGIN IMMEDIATE takes SQLite's write lock, so writers never interleave.

        Yields whether our in-memory state was current when the lock was taken; if so, and the caller
        updates that state itself, the store stays in sync without reloading every slot.
        A write the file system refuses (disk full, read-only) is rolled back and raised as
        :class:`IndexWriteError`; a read-only handle raises :class:`ReadOnlyIndexError` before starting.
        """
        with self._lock:
            if self.read_only:
                raise ReadOnlyIndexError(self._read_only_message(), _problem_errno(self.read_only_reason))
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._write_error(exc) from exc
            try:
                generation = int(self._meta("generation") or 0)
                in_sync = generation == self._loaded_generation
                yield in_sync
                self._set_meta("generation", generation + 1)
                self._set_meta("updated_at", time.time())
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._pending.clear()
                if self._db.in_transaction:  # SQLite may have rolled back by itself (SQLITE_FULL, IOERR)
                    with suppress(sqlite3.Error):  # gone either way; the file keeps the last commit
                        self._db.execute("ROLLBACK")
                if isinstance(exc, OSError | sqlite3.OperationalError):
                    raise self._write_error(exc) from exc
                raise
            if in_sync and self._apply_pending():
                self._loaded_generation = generation + 1
            self._pending.clear()

    # -- vectors ----------------------------------------------------------------------------------
    @property
    def dim(self) -> int | None:
        dim = self.get_meta("dim")
        return int(dim) if dim is not None else None  # type: ignore[arg-type]

    def _vector_path(self) -> Path:
        return self.folder / str(self._meta("vector_file"))

    def _refresh(self) -> None:
        """(Re)load the memory map and slot table if another writer (or we) committed since."""
        with self._lock:
            generation = int(self._meta("generation") or 0)
            if generation == self._loaded_generation:
                return
            n_slots = int(self._meta("n_slots") or 0)
            dim = self._meta("dim")
            if dim is None or n_slots == 0:
                self._matrix = np.zeros((0, int(dim or 1)), dtype=np.float32)
            else:
                try:
                    self._check_vector_file(n_slots, int(dim))
                except DamagedIndexError:
                    if int(self._meta("generation") or 0) != generation:  # a compaction swapped files meanwhile
                        self._refresh()
                        return
                    raise
                self._matrix = np.memmap(self._vector_path(), dtype=np.float32, mode="r", shape=(n_slots, int(dim)))
            self._slot_to_id = np.full(n_slots, -1, dtype=np.int64)
            rows = self._db.execute("SELECT id, slot FROM items").fetchall()
            if rows:
                arr = np.asarray(rows, dtype=np.int64)
                self._slot_to_id[arr[:, 1]] = arr[:, 0]
            self._live = self._slot_to_id >= 0
            self._id_to_slot = None
            self._loaded_generation = generation
            self._search = None  # rebuilt on the next search

    def _intact_rows(self, n_slots: int, dim: int) -> int:
        """How many of the ``n_slots`` committed rows the vector file really holds."""
        try:
            size = self._vector_path().stat().st_size
        except FileNotFoundError:
            size = 0
        return min(n_slots, size // (dim * 4))

    def _check_vector_file(self, n_slots: int, dim: int) -> None:
        """A vector file shorter than the committed rows (cut by a copy, a restore, the file system)."""
        intact = self._intact_rows(n_slots, dim)
        if intact == n_slots:
            return
        lost = int(self._db.execute("SELECT COUNT(*) FROM items WHERE slot >= ?", (intact,)).fetchone()[0])
        raise DamagedIndexError(
            f"{self._vector_path()} is damaged: it holds {intact} of the {n_slots} vector rows this index needs "
            f"({n_slots - intact} missing, {lost} items without a vector). Repair it (`lookalike repair`) "
            "to drop those items and keep the rest; `lookalike index` over the same folders then embeds them "
            "again (it also repairs by itself)"
        )

    def _apply_pending(self) -> bool:
        """Apply our own committed changes to the in-memory slot table; False if a reload is needed."""
        events, self._pending = self._pending, []
        for kind, payload in events:
            if kind == "reload":
                return False
            if kind == "append":
                first, ids, dead = payload  # type: ignore[misc]
                n_slots = first + len(ids)
                self._matrix = np.memmap(
                    self._vector_path(), dtype=np.float32, mode="r", shape=(n_slots, self._matrix.shape[1])
                )
                grown = np.full(n_slots, -1, dtype=np.int64)
                grown[: len(self._slot_to_id)] = self._slot_to_id
                grown[first:n_slots] = ids
                grown[dead] = -1
                self._slot_to_id = grown
            elif kind == "dead":
                self._slot_to_id[payload] = -1  # type: ignore[index]
        self._live = self._slot_to_id >= 0
        self._id_to_slot = None
        self._search = None
        return True

    def _ensure_search(self) -> VectorIndex:
        self._refresh()
        if self._search is None:
            self._search = self._ann_cache.search_index(self._matrix, self._live)
        return self._search

    def _forget_search(self) -> None:
        """The ANN cache swapped its index: the next search asks it again (and attaches the newest rows)."""
        self._search = None

    def _check_kind(self, dim: object) -> None:
        """Fail at open (not after embedding a folder) when the index spec cannot fit the vectors."""
        if dim is not None and self.index_kind != "auto":
            try:
                parse_spec(self.index_kind, int(dim))  # type: ignore[call-overload]
            except IndexSpecError as exc:
                raise StoreError(f"index kind {self.index_kind!r}: {exc}", parameters=("index_kind",)) from exc

    def _vector_tag(self) -> str:
        return str(self._meta("vector_file")).removesuffix(".f32").replace("-", "")

    def wait_for_index(self, timeout: float | None = None) -> None:
        """Block until a background (re)build of the ANN index, if any, has finished."""
        self._ann_cache.wait(timeout)

    @property
    def _bg_error(self) -> str | None:
        """Why the last background ANN build failed, or None (the old index kept serving)."""
        return self._ann_cache.bg_error

    def save_search_index(self) -> None:
        """Make the ANN cache cover what was added (a cache: losing it only costs a rebuild)."""
        if self.read_only:
            return  # nowhere to save it; searches use the in-memory index
        self.wait_for_index()
        with self._lock:
            self._ann_cache.save(self._ensure_search())

    def _append_vectors(self, vectors: np.ndarray) -> int:
        """Write rows after the committed slots (inside the write transaction); return the first slot."""
        n_slots = int(self._meta("n_slots") or 0)
        dim = vectors.shape[1]
        row_bytes = dim * 4
        path = self._vector_path()
        with open(path, "ab" if path.exists() else "wb") as handle:
            handle.truncate(n_slots * row_bytes)  # cut rows a killed writer left uncommitted
            handle.seek(n_slots * row_bytes)
            try:
                handle.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                with suppress(OSError):  # uncommitted rows are garbage (else the next writer cuts them)
                    handle.truncate(n_slots * row_bytes)  # cutting them now gives the space back
                raise
        return n_slots

    # -- Store interface --------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def add(self, records: Sequence[ItemRecord], vectors: np.ndarray) -> list[int]:
        vectors = self._checked_batch(records, vectors, self.dim)
        if not records:
            return []
        now = time.time()
        ids: list[int] = []
        with self._lock:
            self._refresh()  # catch up once with other writers so the cheap in-memory update applies
        with self._write_txn():
            first = self._append_vectors(vectors)
            replaced = self._db.execute(
                f"SELECT slot, sha256 FROM items WHERE path IN ({','.join('?' * len(records))})",
                [r.path for r in records],
            ).fetchall()
            for offset, rec in enumerate(records):
                slot = first + offset
                extra = json.dumps(rec.extra) if rec.extra else None
                row = self._db.execute(
                    "INSERT INTO items(path, slot, sha256, size, mtime_ns, width, height, added_at, extra) "
                    "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET slot = excluded.slot, "
                    "sha256 = excluded.sha256, size = excluded.size, mtime_ns = excluded.mtime_ns, "
                    "width = excluded.width, height = excluded.height, extra = excluded.extra RETURNING id",
                    (rec.path, slot, rec.sha256, rec.size, rec.mtime_ns, rec.width, rec.height, now, extra),
                ).fetchone()
                ids.append(int(row[0]))
            self._set_meta("n_slots", first + len(records))
            self._prune_pictures({str(r[1]) for r in replaced})
            self._pending.append(("append", (first, np.asarray(ids, dtype=np.int64), [int(r[0]) for r in replaced])))
        return ids

    def add_pictures(self, kind: str, pictures: Mapping[str, bytes]) -> int:
        """Keep the check's small copies of these contents (see :meth:`Store.add_pictures`), in one
        transaction. Copies of contents no item holds any more are dropped when their last item goes."""
        if not pictures:
            return 0
        with self._write_txn():
            self._db.executemany(
                "INSERT OR REPLACE INTO pictures(sha256, kind, data) VALUES(?, ?, ?)",
                [(sha, kind, sqlite3.Binary(data)) for sha, data in pictures.items()],
            )
        return len(pictures)

    def pictures(self, kind: str, sha256s: Sequence[str]) -> dict[str, bytes]:
        if "pictures" not in self._tables or not sha256s:
            return {}  # an index made before pictures were kept, opened read-only
        wanted = list(dict.fromkeys(sha256s))
        out: dict[str, bytes] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                rows = self._db.execute(
                    f"SELECT sha256, data FROM pictures WHERE kind = ? AND sha256 IN ({','.join('?' * len(chunk))})",
                    [kind, *chunk],
                ).fetchall()
                out.update((str(sha), bytes(data)) for sha, data in rows)
        return out

    def _pictures_info(self) -> dict[str, int]:
        """How many of the check's copies the index keeps, and their bytes (part of ``size_bytes``)."""
        if "pictures" not in self._tables:
            return {"check_pictures": 0, "check_pictures_bytes": 0}
        count, total = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM pictures").fetchone()
        return {"check_pictures": int(count), "check_pictures_bytes": int(total)}

    def _prune_pictures(self, sha256s: set[str]) -> None:
        """Inside a write transaction: drop the kept copies of these contents where no item holds them."""
        self._db.executemany(
            "DELETE FROM pictures WHERE sha256 = ? AND NOT EXISTS (SELECT 1 FROM items WHERE sha256 = ?)",
            [(sha, sha) for sha in sha256s],
        )

    def move(self, item_id: int, new_path: str, mtime_ns: int) -> None:
        with self._write_txn():
            self._db.execute("UPDATE items SET path = ?, mtime_ns = ? WHERE id = ?", (new_path, mtime_ns, item_id))

    def touch(self, item_id: int, size: int, mtime_ns: int) -> None:
        with self._write_txn():
            self._db.execute("UPDATE items SET size = ?, mtime_ns = ? WHERE id = ?", (size, mtime_ns, item_id))

    def update_extra(self, updates: Mapping[int, Mapping[str, object]]) -> int:
        """Merge keys into items' ``extra`` in one transaction (the vectors and slots are untouched)."""
        if not updates:
            return 0
        with self._write_txn():
            done = 0
            for item_id, fields in updates.items():
                row = self._db.execute("SELECT extra FROM items WHERE id = ?", (int(item_id),)).fetchone()
                if row is None:
                    continue
                merged = {**(json.loads(row[0]) if row[0] else {}), **fields}
                self._db.execute("UPDATE items SET extra = ? WHERE id = ?", (json.dumps(merged), int(item_id)))
                done += 1
        return done

    def remove(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        with self._write_txn():
            slots, shas = [], set()
            for item_id in ids:
                row = self._db.execute(
                    "DELETE FROM items WHERE id = ? RETURNING slot, sha256", (int(item_id),)
                ).fetchone()
                if row:
                    slots.append(int(row[0]))
                    shas.add(str(row[1]))
            self._prune_pictures(shas)
            self._pending.append(("dead", np.asarray(slots, dtype=np.int64)))
        return len(slots)

    def get(self, item_id: int) -> ItemRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM items WHERE id = ?", (int(item_id),)).fetchone()
        return _record(row) if row else None

    def get_by_path(self, path: str) -> ItemRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM items WHERE path = ?", (path,)).fetchone()
        return _record(row) if row else None

    def find_by_sha256(self, sha256: str) -> list[ItemRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM items WHERE sha256 = ? ORDER BY id", (sha256,)).fetchall()
        return [_record(r) for r in rows]

    def items(self, offset: int = 0, limit: int | None = None) -> Iterator[ItemRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM items ORDER BY id LIMIT ? OFFSET ?", (-1 if limit is None else limit, offset)
            ).fetchall()
        return iter([_record(r) for r in rows])

    def file_states(self) -> dict[str, tuple[int, int, int]]:
        """path -> (id, size, mtime_ns) of every item: what an incremental run compares stat() with."""
        with self._lock:
            rows = self._db.execute("SELECT path, id, size, mtime_ns FROM items").fetchall()
        return {path: (int(i), int(size), int(mtime)) for path, i, size, mtime in rows}

    def known_skips(self) -> dict[str, tuple[int, int, str, str]]:
        """path -> (size, mtime_ns, reason, detail) of files that failed before (not re-decoded if unchanged)."""
        if "skipped" not in self._tables:
            return {}  # an index from before this table, opened read-only (nothing created)
        with self._lock:
            rows = self._db.execute("SELECT path, size, mtime_ns, reason, detail FROM skipped").fetchall()
        return {path: (int(size), int(mtime), reason, detail or "") for path, size, mtime, reason, detail in rows}

    def record_skips(self, skips: Sequence[tuple[str, int, int, str, str]], forget: Sequence[str] = ()) -> None:
        with self._write_txn():
            self._db.executemany("DELETE FROM skipped WHERE path = ?", [(p,) for p in forget])
            self._db.executemany(
                "INSERT OR REPLACE INTO skipped(path, size, mtime_ns, reason, detail) VALUES(?, ?, ?, ?, ?)", skips
            )

    def mark_not_duplicates(self, pairs: Sequence[tuple[str, str]]) -> int:
        """Remember that these sha256 pairs are distinct pictures (kept across moves and re-indexing)."""
        rows = [(min(a, b), max(a, b), time.time()) for a, b in pairs if a != b]
        with self._write_txn():
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO not_duplicates(a, b, added_at) VALUES(?, ?, ?)", rows)
            return self._db.total_changes - before

    def not_duplicates(self) -> set[tuple[str, str]]:
        if "not_duplicates" not in self._tables:
            return set()  # an index from before this table, opened read-only (nothing created)
        with self._lock:
            return {(a, b) for a, b in self._db.execute("SELECT a, b FROM not_duplicates").fetchall()}

    def paths_under(self, folder: str) -> list[tuple[int, str]]:
        """(id, path) of every item whose path lies under ``folder``."""
        prefix = folder.rstrip(os.sep) + os.sep
        # A range on the path column's index: every string starting with prefix sorts in [prefix, prefix + max).
        with self._lock:
            rows = self._db.execute(
                "SELECT id, path FROM items WHERE (path >= ? AND path < ?) OR path = ?",
                (prefix, prefix + "\U0010ffff", folder),
            ).fetchall()
        return [(int(i), p) for i, p in rows]

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        with self._lock:
            self._refresh()
            # In memory, not one SQL lookup per id: the no-match rule reads a query's nearest few per search.
            if self._id_to_slot is None:
                live = np.flatnonzero(self._live)
                table = np.full(int(self._slot_to_id[live].max()) + 1 if len(live) else 0, -1, dtype=np.int64)
                table[self._slot_to_id[live]] = live
                self._id_to_slot = table
            table = self._id_to_slot
            known = (wanted >= 0) & (wanted < len(table))
            slots = np.where(known, table[np.where(known, wanted, 0)] if len(table) else -1, -1)
            if (slots < 0).any():
                raise KeyError(f"no item with id {int(wanted[np.flatnonzero(slots < 0)[0]])}")
            return np.array(self._matrix[slots], dtype=np.float32).reshape(len(slots), -1)

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self._refresh()
            slots = np.flatnonzero(self._live)
            return self._slot_to_id[slots].copy(), np.array(self._matrix[slots], dtype=np.float32)

    def vector_rows(self) -> tuple[np.ndarray, VectorRows]:
        """Ids plus a lazy view of the memory-mapped vector file (nothing copied)."""
        with self._lock:
            self._refresh()
            slots = np.flatnonzero(self._live)
            return self._slot_to_id[slots].copy(), VectorRows(self._matrix, slots)

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[int] = ()) -> list[list[Hit]]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        with self._lock:
            index = self._ensure_search()
            excluded = {int(i) for i in exclude}
            want = k + len(excluded)
            if index.kind != "flat":
                want = 2 * want + 16  # room for dead slots still in the graph
            scores, slots = index.search(queries, want)
            out: list[list[Hit]] = []
            for row_scores, row_slots in zip(scores, slots, strict=True):
                hits = []
                for score, slot in zip(row_scores, row_slots, strict=True):
                    if slot < 0 or slot >= len(self._slot_to_id):
                        continue
                    item_id = int(self._slot_to_id[slot])
                    if item_id < 0 or item_id in excluded:
                        continue
                    hits.append(Hit(item_id, float(score)))
                    if len(hits) == k:
                        break
                out.append(hits)
            return out

    def compact(self, min_dead_fraction: float = 0.3) -> bool:
        """Rewrite the vector file without dead rows when they are at least this fraction of it."""
        with self._lock:
            self._refresh()
            n_slots = len(self._live)
            n_dead = n_slots - int(self._live.sum())
            if n_slots == 0 or n_dead < min_dead_fraction * n_slots:
                return False
            old_path = self._vector_path()
            new_name = f"vectors-{int(self._meta('generation') or 0) + 1}.f32"
            tmp = self.folder / f".{new_name}.tmp"
            try:
                with self._write_txn():
                    rows = self._db.execute("SELECT id, slot FROM items ORDER BY slot").fetchall()
                    old = np.memmap(old_path, dtype=np.float32, mode="r", shape=self._matrix.shape)
                    self._write_rows(tmp, old, [slot for _, slot in rows])
                    os.replace(tmp, self.folder / new_name)
                    self._db.execute("UPDATE items SET slot = -slot - 1")  # dodge the UNIQUE(slot) constraint
                    self._db.executemany(
                        "UPDATE items SET slot = ? WHERE id = ?", [(new, i) for new, (i, _) in enumerate(rows)]
                    )
                    self._set_meta("vector_file", new_name)
                    self._set_meta("n_slots", len(rows))
                    self._pending.append(("reload", None))
            except IndexWriteError as exc:
                if new_name != self._meta("vector_file"):  # never committed: only takes space
                    (self.folder / new_name).unlink(missing_ok=True)
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                return False  # no room for the rewritten file: the dead rows wait for a later run
            del old
            self._ann_cache.drop()  # slots were renumbered: derived caches are void
            self._remove_orphans()
            self._refresh()
            return True

    @staticmethod
    def _write_rows(target: Path, source: np.ndarray, slots: list[int]) -> None:
        """Copy rows to a new file and fsync it; a failed copy leaves no partial file behind."""
        try:
            with open(target, "wb") as handle:
                for start in range(0, len(slots), 65536):
                    handle.write(np.ascontiguousarray(source[slots[start : start + 65536]], dtype="<f4").tobytes())
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            target.unlink(missing_ok=True)
            raise

    def repair(self) -> RepairReport:
        """Drop the items whose vectors are lost and keep every intact one.

        Lost means past the end of a vector file that was cut short, or a row that is all zeros or
        not finite (a hole; a real embedding is a unit vector). The dropped items leave the index as
        if never added, so the next ``index`` run over their folders embeds those files again (they
        count as "added"). The damage is counted before anything changes; ANN caches that cover lost
        rows are deleted *before* the commit: once new rows reuse those slots, a stale cache would
        map them to the old vectors. ``n_slots`` moves back to the intact rows, so the next append
        cuts any partial row.
        """
        with self._lock:
            if self.read_only:
                raise ReadOnlyIndexError(self._read_only_message(), _problem_errno(self.read_only_reason))
            n_slots = int(self._meta("n_slots") or 0)
            dim = self._meta("dim")
            report = RepairReport(self._vector_path().name, n_slots, n_slots)
            if dim is None or n_slots == 0:
                return report
            dim = int(dim)  # type: ignore[call-overload]
            intact = report.rows_intact = self._intact_rows(n_slots, dim)
            slots = np.asarray(
                [s for (s,) in self._db.execute("SELECT slot FROM items WHERE slot < ? ORDER BY slot", (intact,))],
                dtype=np.int64,
            )
            holes: list[int] = []
            if len(slots):
                matrix = np.memmap(self._vector_path(), dtype=np.float32, mode="r", shape=(intact, dim))
                for start in range(0, len(slots), 65536):
                    chunk = slots[start : start + 65536]
                    rows = np.asarray(matrix[chunk])
                    bad = ~np.isfinite(rows).all(axis=1) | ~rows.any(axis=1)
                    holes.extend(int(s) for s in chunk[bad])
                del matrix
            if intact == n_slots and not holes:
                return report
            # holes are harmless to a cache: their slots turn dead, never reused
            report.caches_removed = self._ann_cache.drop(lost_from=intact, n_slots=n_slots)
            with self._write_txn():
                gone = self._db.execute("DELETE FROM items WHERE slot >= ? RETURNING path", (intact,)).fetchall()
                for slot in holes:
                    gone += self._db.execute("DELETE FROM items WHERE slot = ? RETURNING path", (slot,)).fetchall()
                self._db.execute("DELETE FROM pictures WHERE sha256 NOT IN (SELECT sha256 FROM items)")
                self._set_meta("n_slots", intact)
                self._pending.append(("reload", None))
            report.dropped = sorted(path for (path,) in gone)
            self._search = None
            self._refresh()
            return report

    def _remove_orphans(self) -> None:
        current = str(self._meta("vector_file"))
        for path in self.folder.glob("vectors-*.f32"):
            if path.name != current:
                path.unlink(missing_ok=True)
        for path in self.folder.glob(".*.tmp"):
            path.unlink(missing_ok=True)
        self._ann_cache.remove_orphans()

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    def info(self) -> dict[str, object]:
        with self._lock:
            model = self._meta("model") or {}
            search = self._ensure_search()
            return {
                "db": str(self.folder),
                "count": len(self),
                "model": model.get("name") if isinstance(model, dict) else None,
                "model_version": model.get("version") if isinstance(model, dict) else None,
                "preprocessing": model.get("preprocessing") if isinstance(model, dict) else None,
                "dimensions": self._meta("dim"),
                "index": search.kind,
                "index_spec": self.index_kind,
                "access": f"read-only ({self.read_only_reason})" if self.read_only else "read-write",
                **({"index_nprobe": search.nprobe} if isinstance(search, AnnIndex) and search.nprobe else {}),
                "size_bytes": self.disk_bytes(),
                **self._pictures_info(),
                "created_at": self._meta("created_at"),
                "updated_at": self._meta("updated_at"),
                "roots": self._meta("roots") or [],
            }

    def close(self) -> None:
        """Close the database and drop the memory maps (so a read-only mount can be unmounted)."""
        with self._lock:
            db = getattr(self, "_db", None)
            if db is not None:
                db.close()
            self._matrix = np.zeros((0, 1), dtype=np.float32)
            cache = getattr(self, "_ann_cache", None)  # absent when opening failed early
            if cache is not None:
                cache.close()
            self._search = None


def _sqlite_name(exc: BaseException) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _problem(exc: BaseException, folder: Path) -> str:
    """A few words for why the file system or SQLite refused: "no space left on device", ..."""
    if isinstance(exc, OSError):
        return _ERRNO_PROBLEMS.get(exc.errno or 0, exc.strerror or str(exc))
    name = _sqlite_name(exc)
    free = _free_bytes(folder)
    if name == "SQLITE_FULL" or (
        name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) and free is not None and free < _LOW_SPACE_BYTES
    ):
        return NO_SPACE
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")):
        return _not_writable(folder) or str(exc)
    if name == "SQLITE_BUSY":
        return "the index is busy: another process holds its write lock"
    return str(exc)


def _problem_errno(problem: str | None) -> int | None:
    for code, words in _ERRNO_PROBLEMS.items():
        if problem == words:
            return code
    return errno.EROFS if problem is not None and "not writable" in problem else None


def _not_writable(folder: Path) -> str | None:
    """Why the index folder or its files cannot be written, or None.

    ``os.access`` sees read-only mounts and immutable files even for root (who ignores mode bits).
    """
    paths = [folder, *(p for p in (folder / name for name in _DB_FILES) if p.exists()), *folder.glob("vectors-*.f32")]
    if all(os.access(p, os.W_OK) for p in paths):
        return None
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "its folder or files are not writable: permissions or an immutable attribute"


def _probe(db: sqlite3.Connection) -> sqlite3.Connection:
    """The connection, once SQLite has really opened the file (it opens lazily)."""
    try:
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        db.close()
        raise
    return db
