"""The store interface: items (a file's metadata) with one vector each, searchable by vector.

Callers (the :class:`~lookalike.index.Index`, the CLI, the web app) only use this interface, so the
embedded :class:`~lookalike.store.local.LocalStore` can be swapped for an ANN-backed or remote store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lookalike.errors import LookalikeError


class StoreError(LookalikeError):
    """A store that cannot be used as asked (wrong model, locked, damaged)."""


class ModelMismatchError(StoreError):
    """The index was built by another model or preprocessing; its vectors must not be mixed."""

    def __init__(self, *args: object, parameters: tuple[str, ...] = ("model", "db")) -> None:
        super().__init__(*args, parameters=parameters)


class DamagedIndexError(StoreError):
    """Index files are cut short or overwritten; the message says what is lost and how to recover."""


class IndexWriteError(StoreError):
    """A write the file system refused (disk full, read-only, permissions); nothing of it was committed.

    ``errno`` is the underlying ``errno`` code when one is known (``errno.ENOSPC``, ``errno.EROFS``...).
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class ReadOnlyIndexError(IndexWriteError):
    """The index is open read-only (its folder cannot be written), so it can be searched but not changed."""


def model_mismatch_message(have: dict[str, object], want: dict[str, object]) -> str:
    """Why a store refuses vectors of another model identity, and what to do: every store says it alike."""
    diffs = [
        f"{key}: index has {have.get(key)!r}, requested {want.get(key)!r}"
        for key in sorted(set(have) | set(want))
        if have.get(key) != want.get(key)
    ]
    return (
        f"this index was built with model {have.get('name')!r} and cannot mix vectors from another model "
        f"or preprocessing ({'; '.join(diffs)}). Open it with model {have.get('name')!r}, or use a new index."
    )


@dataclass
class RepairReport:
    """What :meth:`Store.repair` found: the items whose vectors were lost are dropped, the rest kept."""

    vector_file: str = ""
    rows_expected: int = 0  # vector rows the index pointed into
    rows_intact: int = 0  # rows actually present in the file
    dropped: list[str] = field(default_factory=list)  # paths of the items dropped (re-embedded by `index`)
    caches_removed: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "vector_file": self.vector_file,
            "rows_expected": self.rows_expected,
            "rows_intact": self.rows_intact,
            "dropped": self.dropped,
            "caches_removed": self.caches_removed,
        }

    def summary(self) -> str:
        if not self.dropped:
            return "no damage found: every item has its vector"
        return (
            f"dropped {len(self.dropped)} items whose vectors were lost from {self.vector_file} "
            f"({self.rows_intact} of {self.rows_expected} rows intact); `lookalike index` over the same "
            "folders embeds those files again"
        )


@dataclass(frozen=True)
class ItemRecord:
    """What the store knows about one indexed file."""

    path: str
    sha256: str
    size: int
    mtime_ns: int
    width: int
    height: int
    id: int = -1  # assigned by the store
    added_at: float = 0.0
    extra: dict[str, object] = field(default_factory=dict, compare=False)


class VectorRows:
    """Rows of a matrix (often memory-mapped) picked by row numbers and read only when indexed.

    Lets a million-item job (``dups``) walk the vectors in blocks instead of copying gigabytes
    into RAM; an in-memory array works the same way.
    """

    def __init__(self, matrix: np.ndarray, rows: np.ndarray) -> None:
        self.matrix = matrix
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), int(self.matrix.shape[1]))

    def take(self, picks: np.ndarray) -> VectorRows:
        """A view of some of these rows (no read)."""
        return VectorRows(self.matrix, self.rows[picks])

    def __getitem__(self, key: int | slice | np.ndarray | list[int]) -> np.ndarray:
        picks = self.rows[key]
        if np.ndim(picks) == 0:
            return np.asarray(self.matrix[int(picks)], dtype=np.float32)
        order = np.argsort(picks, kind="stable")  # ascending reads are kinder to the page cache
        out = np.empty((len(picks), self.matrix.shape[1]), dtype=np.float32)
        out[order] = self.matrix[picks[order]]
        return out


@dataclass(frozen=True)
class Hit:
    id: int
    score: float


class Store(ABC):
    """Items + vectors + search. Implementations must make every write atomic."""

    @staticmethod
    def _checked_batch(records: Sequence[ItemRecord], vectors: np.ndarray, dim: int | None) -> np.ndarray:
        """The batch as float32 rows, after checking one vector per record of the index's width."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(records) != len(vectors):
            raise ValueError("one vector per record")
        if records and (dim is None or vectors.shape[1] != dim):
            raise StoreError(f"vectors are {vectors.shape[1]}-d, the index holds {dim}-d vectors")
        return vectors

    #: True when the store can be read but not written (e.g. a read-only folder); writes then raise
    #: :class:`ReadOnlyIndexError`.
    read_only: bool = False

    @property
    @abstractmethod
    def model_identity(self) -> dict[str, object] | None:
        """The ModelSpec identity that made the vectors, or None for an empty, new store."""

    @abstractmethod
    def set_model_identity(self, identity: dict[str, object]) -> None: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def add(self, records: Sequence[ItemRecord], vectors: np.ndarray) -> list[int]:
        """Insert or replace (by path) items with their vectors in one atomic step; return their ids."""

    @abstractmethod
    def move(self, item_id: int, new_path: str, mtime_ns: int) -> None:
        """Record that a file was renamed/moved (same content, same vector)."""

    @abstractmethod
    def touch(self, item_id: int, size: int, mtime_ns: int) -> None:
        """Record a new mtime for unchanged content (e.g. after `touch`), so the next run skips it."""

    @abstractmethod
    def remove(self, ids: Sequence[int]) -> int:
        """Drop items (never the user's files); returns how many were removed."""

    @abstractmethod
    def get(self, item_id: int) -> ItemRecord | None: ...

    @abstractmethod
    def get_by_path(self, path: str) -> ItemRecord | None: ...

    @abstractmethod
    def find_by_sha256(self, sha256: str) -> list[ItemRecord]: ...

    @abstractmethod
    def items(self, offset: int = 0, limit: int | None = None) -> Iterator[ItemRecord]: ...

    @abstractmethod
    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors of these items, in order."""

    @abstractmethod
    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every item; used by dedup, calibration and evaluation."""

    def vector_rows(self) -> tuple[np.ndarray, VectorRows]:
        """(ids, rows): like :meth:`all_vectors`, but stores that can read rows lazily do so."""
        ids, vectors = self.all_vectors()
        return ids, VectorRows(vectors, np.arange(len(ids)))

    @abstractmethod
    def file_states(self) -> dict[str, tuple[int, int, int]]:
        """path -> (id, size, mtime_ns) for every item."""

    @abstractmethod
    def paths_under(self, folder: str) -> list[tuple[int, str]]:
        """(id, path) of items whose path lies under ``folder``."""

    def known_skips(self) -> dict[str, tuple[int, int, str, str]]:
        """Files that failed before: path -> (size, mtime_ns, reason, detail). Optional cache."""
        return {}

    def record_skips(self, skips: Sequence[tuple[str, int, int, str, str]], forget: Sequence[str] = ()) -> None:
        """Remember failed files so unchanged ones are not decoded again. Optional cache."""

    def mark_not_duplicates(self, pairs: Sequence[tuple[str, str]]) -> int:
        """Remember that these sha256 pairs are distinct pictures; returns how many marks are new.

        Keyed by content, not path, so a mark survives renames and re-indexing. This default keeps the
        marks in metadata; stores with tables (LocalStore) override it.
        """
        marks = self.not_duplicates()
        new = {(min(a, b), max(a, b)) for a, b in pairs if a != b} - marks
        if new:
            self.set_meta("not_duplicates", sorted(marks | new))
        return len(new)

    def not_duplicates(self) -> set[tuple[str, str]]:
        """Every (sha256, sha256) pair marked "not a duplicate", smaller hash first."""
        return {(str(a), str(b)) for a, b in (self.get_meta("not_duplicates") or [])}  # type: ignore[union-attr]

    def update_extra(self, updates: Mapping[int, Mapping[str, object]]) -> int:
        """Merge these keys into the ``extra`` of existing items (by id); returns how many were updated.

        For facts measured after indexing (pixel statistics of items indexed before they existed), so
        they are measured once. Optional: this default keeps nothing (the caller measures again next
        time); stores with tables (LocalStore) override it.
        """
        return 0

    def add_pictures(self, kind: str, pictures: Mapping[str, bytes]) -> int:
        """Keep small copies of pictures (content sha256 -> bytes of recipe ``kind``, e.g.
        :data:`lookalike.imaging.checkpicture.PICTURE_KIND`) for the geometric check; returns how many
        were kept. Optional: this default keeps none, and the check then reads the files."""
        return 0

    def pictures(self, kind: str, sha256s: Sequence[str]) -> dict[str, bytes]:
        """The kept copies of recipe ``kind`` among these contents (missing ones are left out)."""
        return {}

    @abstractmethod
    def get_meta(self, key: str) -> object: ...

    @abstractmethod
    def set_meta(self, key: str, value: object) -> None: ...

    def save_search_index(self) -> None:
        """Persist derived search structures, if the store keeps any."""

    def compact(self, min_dead_fraction: float = 0.3) -> bool:
        """Reclaim space from removed items, if the store needs it."""
        return False

    def repair(self) -> RepairReport:
        """Drop items whose vectors are lost, keeping the rest (stores that keep their own files)."""
        raise StoreError(f"{type(self).__name__} cannot be repaired by lookalike; use the backend's own tools")

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, exclude: Sequence[int] = ()) -> list[list[Hit]]:
        """Top-k items by cosine similarity (inner product of unit vectors) for each query row."""

    @abstractmethod
    def info(self) -> dict[str, object]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
