"""A Milvus backend for the Store interface, for collections that outgrow one machine.

``--db milvus://HOST:PORT/COLLECTION`` talks to a Milvus server or cluster (token from
``LOOKALIKE_MILVUS_TOKEN``; ``?index=HNSW`` picks the server-side index, default AUTOINDEX);
``--db photos.milvus.db`` (or ``milvus-lite:PATH``) uses an embedded Milvus Lite file with an exact
FLAT index. The same pymilvus client code serves both.

Layout: collection ``NAME`` holds one row per item (id, vector, path, sha256, size, mtime_ns, width,
height, added_at, extra); ``NAME__meta`` holds key/value metadata (model identity, the next item id,
roots). Milvus needs a vector field in every collection, so the meta rows carry a 2-d dummy.

Writes are upserts keyed by item id; Milvus makes each call atomic, not a batch across calls, and
this store assumes one writer at a time (like ``lookalike index``), which it does not enforce.
Milvus is the right place to serve billions of vectors; for one machine the embedded store is
faster (see docs/scale.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from urllib.parse import parse_qs, urlparse

import numpy as np

from lookalike.store.base import Hit, ItemRecord, ModelMismatchError, Store, StoreError, model_mismatch_message

# pymilvus logs a harmless fallback warning on every query iterator against Milvus Lite.
logging.getLogger("pymilvus").setLevel(logging.ERROR)

_SCALARS = ["id", "path", "sha256", "size", "mtime_ns", "width", "height", "added_at", "extra"]
_MAX_PATH = 4096
_IN_CHUNK = 1000  # ids/paths per "in [...]" filter


def _quote(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Milvus string literal


def _record(row: dict) -> ItemRecord:
    return ItemRecord(
        path=row["path"],
        sha256=row["sha256"],
        size=int(row["size"]),
        mtime_ns=int(row["mtime_ns"]),
        width=int(row["width"]),
        height=int(row["height"]),
        id=int(row["id"]),
        added_at=float(row["added_at"]),
        extra=json.loads(row["extra"]) if row.get("extra") else {},
    )


class MilvusStore(Store):
    """Items and vectors in a Milvus collection (server, cluster or Milvus Lite file)."""

    def __init__(self, uri: str, collection: str, *, token: str = "", index_type: str = "", create: bool = True):
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StoreError("the Milvus backend needs `pip install lookalike[distributed]` (pymilvus)") from exc
        self.uri = uri
        self.collection = collection
        self._meta_name = f"{collection}__meta"
        self._lite = not uri.startswith(("http://", "https://"))
        self.index_type = (index_type or ("FLAT" if self._lite else "AUTOINDEX")).upper()
        self._lock = threading.RLock()
        try:
            self._client = MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
        except Exception as exc:
            raise StoreError(f"cannot connect to Milvus at {uri}: {exc}") from exc
        exists = self._client.has_collection(self._meta_name)
        if not exists and not create:
            raise StoreError(f"no lookalike collection {collection!r} at {uri} (create one with `lookalike index`)")
        if not exists:
            if self._client.has_collection(collection):
                raise StoreError(f"Milvus collection {collection!r} exists and is not a lookalike index")
            self._create_meta()
        self._client.load_collection(self._meta_name)
        dim = self.get_meta("dim")
        if dim is not None:
            self._ensure_items(int(dim))  # type: ignore[arg-type]

    @classmethod
    def open(cls, db: str, *, create: bool = True) -> MilvusStore:
        """Parse ``milvus://host:port/name[?index=HNSW]``, ``milvus-lite:PATH`` or ``PATH.db``."""
        if db.startswith("milvus://"):
            parsed = urlparse(db)
            name = parsed.path.strip("/") or "lookalike"
            if not parsed.hostname:
                raise StoreError(f"{db!r}: expected milvus://HOST:PORT/COLLECTION")
            params = parse_qs(parsed.query)
            scheme = "https" if params.get("tls", ["0"])[0] in ("1", "true") else "http"
            uri = f"{scheme}://{parsed.hostname}:{parsed.port or 19530}"
            token = os.environ.get("LOOKALIKE_MILVUS_TOKEN", "")
            return cls(uri, _safe_name(name), token=token, index_type=params.get("index", [""])[0], create=create)
        path = db.removeprefix("milvus-lite:")
        if not path.endswith(".db"):
            raise StoreError(f"{path!r}: a Milvus Lite file must end in .db")
        if not os.path.exists(path) and not create:
            raise StoreError(f"no Milvus Lite file at {path}")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return cls(os.path.abspath(path), "lookalike", create=create)

    # -- collections ------------------------------------------------------------------------------
    def _create_meta(self) -> None:
        from pymilvus import DataType

        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("value", DataType.VARCHAR, max_length=65535)
        schema.add_field("dummy", DataType.FLOAT_VECTOR, dim=2)
        index = self._client.prepare_index_params()
        index.add_index(field_name="dummy", index_type="FLAT", metric_type="L2")
        self._client.create_collection(self._meta_name, schema=schema, index_params=index, consistency_level="Strong")

    def _ensure_items(self, dim: int) -> None:
        from pymilvus import DataType

        if not self._client.has_collection(self.collection):
            schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            schema.add_field("path", DataType.VARCHAR, max_length=_MAX_PATH)
            schema.add_field("sha256", DataType.VARCHAR, max_length=64)
            schema.add_field("size", DataType.INT64)
            schema.add_field("mtime_ns", DataType.INT64)
            schema.add_field("width", DataType.INT32)
            schema.add_field("height", DataType.INT32)
            schema.add_field("added_at", DataType.DOUBLE)
            schema.add_field("extra", DataType.VARCHAR, max_length=65535)
            index = self._client.prepare_index_params()
            index.add_index(field_name="vector", index_type=self.index_type, metric_type="IP")
            if not self._lite:  # scalar indexes: Milvus Lite does not support them
                index.add_index(field_name="path", index_type="INVERTED")
                index.add_index(field_name="sha256", index_type="INVERTED")
            self._client.create_collection(
                self.collection, schema=schema, index_params=index, consistency_level="Strong"
            )
        self._client.load_collection(self.collection)
        self._has_items = True

    # -- metadata ---------------------------------------------------------------------------------
    def get_meta(self, key: str) -> object:
        with self._lock:
            rows = self._client.query(self._meta_name, filter=f"key == {_quote(key)}", output_fields=["value"])
        return json.loads(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: object) -> None:
        with self._lock:
            self._client.upsert(self._meta_name, [{"key": key, "value": json.dumps(value), "dummy": [0.0, 0.0]}])

    @property
    def model_identity(self) -> dict[str, object] | None:
        return self.get_meta("model")  # type: ignore[return-value]

    def set_model_identity(self, identity: dict[str, object]) -> None:
        with self._lock:
            current = self.get_meta("model")
            if current is not None and current != identity:
                raise ModelMismatchError(model_mismatch_message(current, identity))  # type: ignore[arg-type]
            if current is None:
                self.set_meta("model", identity)
                self.set_meta("dim", identity["dim"])
                self.set_meta("created_at", time.time())
            self._ensure_items(int(identity["dim"]))  # type: ignore[arg-type]

    @property
    def dim(self) -> int | None:
        dim = self.get_meta("dim")
        return int(dim) if dim is not None else None  # type: ignore[arg-type]

    # -- helpers ----------------------------------------------------------------------------------
    def _ready(self) -> bool:
        return getattr(self, "_has_items", False)

    def _query(self, filter: str, fields: Sequence[str] = tuple(_SCALARS)) -> list[dict]:
        if not self._ready():
            return []
        rows: list[dict] = []
        iterator = self._client.query_iterator(
            self.collection, batch_size=4096, filter=filter, output_fields=list(fields)
        )
        try:
            while True:
                batch = iterator.next()
                if not batch:
                    break
                rows.extend(batch)
        finally:
            iterator.close()
        return rows

    def _rows_by_ids(self, ids: Sequence[int], fields: Sequence[str]) -> dict[int, dict]:
        out: dict[int, dict] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = [int(i) for i in ids[start : start + _IN_CHUNK]]
            if chunk and self._ready():
                for row in self._client.query(self.collection, ids=chunk, output_fields=list(fields)):
                    out[int(row["id"])] = row
        return out

    def _by_paths(self, paths: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(paths), _IN_CHUNK):
            chunk = list(paths[start : start + _IN_CHUNK])
            if chunk and self._ready():
                expr = f"path in [{', '.join(_quote(p) for p in chunk)}]"
                for row in self._client.query(self.collection, filter=expr, output_fields=["id", "path"]):
                    out[row["path"]] = int(row["id"])
        return out

    def _upsert(self, rows: list[dict]) -> None:
        for start in range(0, len(rows), 2000):
            self._client.upsert(self.collection, rows[start : start + 2000])

    # -- Store interface --------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            if not self._ready():
                return 0
            res = self._client.query(self.collection, filter="", output_fields=["count(*)"])
            return int(res[0]["count(*)"])

    def add(self, records: Sequence[ItemRecord], vectors: np.ndarray) -> list[int]:
        vectors = self._checked_batch(records, vectors, self.dim)
        if not records:
            return []
        with self._lock:
            existing = self._by_paths([r.path for r in records])
            next_id = int(self.get_meta("next_id") or 1)  # type: ignore[arg-type]
            ids: list[int] = []
            fresh: dict[str, int] = {}
            for rec in records:  # a path seen twice in one batch keeps one id, like the embedded store
                item_id = existing.get(rec.path) or fresh.get(rec.path)
                if item_id is None:
                    item_id, next_id = next_id, next_id + 1
                    fresh[rec.path] = item_id
                ids.append(item_id)
            self.set_meta("next_id", next_id)  # reserve ids first: a crash then only skips some
            now = time.time()
            rows = {
                item_id: {
                    "id": item_id,
                    "vector": vec.tolist(),
                    "path": rec.path,
                    "sha256": rec.sha256,
                    "size": rec.size,
                    "mtime_ns": rec.mtime_ns,
                    "width": rec.width,
                    "height": rec.height,
                    "added_at": now,
                    "extra": json.dumps(rec.extra) if rec.extra else "",
                }
                for item_id, rec, vec in zip(ids, records, vectors, strict=True)
            }
            self._upsert(list(rows.values()))
            self.set_meta("updated_at", now)
            return ids

    def _update(self, item_id: int, **changes: object) -> None:
        with self._lock:
            rows = self._rows_by_ids([item_id], [*_SCALARS, "vector"])
            if item_id not in rows:
                raise KeyError(f"no item with id {item_id}")
            row = {**rows[item_id], **changes}
            row["vector"] = [float(v) for v in row["vector"]]
            self._upsert([row])

    def move(self, item_id: int, new_path: str, mtime_ns: int) -> None:
        self._update(item_id, path=new_path, mtime_ns=mtime_ns)

    def touch(self, item_id: int, size: int, mtime_ns: int) -> None:
        self._update(item_id, size=size, mtime_ns=mtime_ns)

    def remove(self, ids: Sequence[int]) -> int:
        if not ids or not self._ready():
            return 0
        with self._lock:
            present = self._rows_by_ids(list(ids), ["id"])
            if present:
                self._client.delete(self.collection, ids=sorted(present))
            return len(present)

    def get(self, item_id: int) -> ItemRecord | None:
        with self._lock:
            rows = self._rows_by_ids([int(item_id)], _SCALARS)
        return _record(rows[int(item_id)]) if rows else None

    def get_by_path(self, path: str) -> ItemRecord | None:
        with self._lock:
            rows = self._query(f"path == {_quote(path)}")
        return _record(rows[0]) if rows else None

    def find_by_sha256(self, sha256: str) -> list[ItemRecord]:
        with self._lock:
            rows = self._query(f"sha256 == {_quote(sha256)}")
        return sorted((_record(r) for r in rows), key=lambda r: r.id)

    def items(self, offset: int = 0, limit: int | None = None) -> Iterator[ItemRecord]:
        with self._lock:
            rows = sorted(self._query("id >= 0"), key=lambda r: int(r["id"]))
        end = None if limit is None else offset + limit
        return iter([_record(r) for r in rows[offset:end]])

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        with self._lock:
            rows = self._rows_by_ids(list(ids), ["id", "vector"])
        missing = [i for i in ids if int(i) not in rows]
        if missing:
            raise KeyError(f"no item with id {missing[0]}")
        dim = self.dim or 0
        return np.asarray([rows[int(i)]["vector"] for i in ids], dtype=np.float32).reshape(len(ids), dim)

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            rows = sorted(self._query("id >= 0", ["id", "vector"]), key=lambda r: int(r["id"]))
        dim = self.dim or 0
        ids = np.asarray([int(r["id"]) for r in rows], dtype=np.int64)
        return ids, np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), dim)

    def file_states(self) -> dict[str, tuple[int, int, int]]:
        with self._lock:
            rows = self._query("id >= 0", ["id", "path", "size", "mtime_ns"])
        return {r["path"]: (int(r["id"]), int(r["size"]), int(r["mtime_ns"])) for r in rows}

    def paths_under(self, folder: str) -> list[tuple[int, str]]:
        prefix = folder.rstrip(os.sep) + os.sep
        with self._lock:
            rows = self._query("id >= 0", ["id", "path"])
        return [(int(r["id"]), r["path"]) for r in rows if r["path"].startswith(prefix) or r["path"] == folder]

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[int] = ()) -> list[list[Hit]]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if not self._ready() or k <= 0:
            return [[] for _ in queries]
        excluded = sorted({int(i) for i in exclude})
        expr = f"id not in [{', '.join(map(str, excluded))}]" if excluded else ""
        with self._lock:
            n = len(self)
            if n == 0:
                return [[] for _ in queries]
            res = self._client.search(
                self.collection,
                data=[q.tolist() for q in queries],
                filter=expr,
                limit=min(k, n, 16384),
                anns_field="vector",
                search_params={"metric_type": "IP"},
                output_fields=[],
            )
        return [[Hit(int(hit["id"]), float(hit["distance"])) for hit in row] for row in res]

    def info(self) -> dict[str, object]:
        model = self.get_meta("model") or {}
        return {
            "db": self.uri if self._lite else f"{self.uri}/{self.collection}",
            "backend": "milvus-lite" if self._lite else "milvus",
            "count": len(self),
            "model": model.get("name") if isinstance(model, dict) else None,
            "model_version": model.get("version") if isinstance(model, dict) else None,
            "preprocessing": model.get("preprocessing") if isinstance(model, dict) else None,
            "dimensions": self.get_meta("dim"),
            "index": f"milvus {self.index_type}",
            "size_bytes": os.path.getsize(self.uri) if self._lite and os.path.exists(self.uri) else None,
            "created_at": self.get_meta("created_at"),
            "updated_at": self.get_meta("updated_at"),
            "roots": self.get_meta("roots") or [],
        }

    def close(self) -> None:
        # Closing twice or a dropped connection is not worth raising.
        with self._lock, contextlib.suppress(Exception):
            self._client.close()


def _safe_name(name: str) -> str:
    """Milvus collection names: letters, digits and underscores, starting with a letter or _."""
    clean = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    if not clean or clean[0].isdigit():
        clean = f"_{clean}"
    return clean
