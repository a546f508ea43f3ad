"""The Python API: ``Index.open(db)``, ``.add(paths)``, ``.search(image, k)``.

The faces (CLI, HTTP) are thin layers over this class. It ties a :class:`~lookalike.store.base.Store`
to the model recorded in it, and refuses to mix vectors of different models.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.imaging.load import DEFAULT_MAX_PIXELS, ImageLoadError, open_rgb
from lookalike.ingest import IngestReport, Progress, ingest
from lookalike.models.base import Embedder
from lookalike.models.registry import DEFAULT_MODEL, create_model, model_info
from lookalike.search import calibration as calib
from lookalike.search.calibration import Calibration
from lookalike.search.measure import CalibrationProgress, compute_calibration
from lookalike.search.no_match import DEFAULT_ACCEPT, FIXED_NO_MATCH_BELOW, NoMatchRule
from lookalike.search.results import Match, QueryResult
from lookalike.store import open_store
from lookalike.store.base import Hit, ItemRecord, ModelMismatchError, Store

QueryInput = str | os.PathLike[str] | Image.Image | bytes | int

#: Ids are SQLite INTEGERs (int64 in FAISS and Milvus too): a number outside 0..MAX_ITEM_ID names no
#: item, and passing it down would raise OverflowError (a 500 from the server, a traceback from the CLI).
MAX_ITEM_ID = 2**63 - 1


def is_item_id(value: int) -> bool:
    """Whether ``value`` could be an item id at all (not whether such an item exists)."""
    return 0 <= value <= MAX_ITEM_ID


class Index:
    """A searchable collection of images, stored in a folder (``db``)."""

    def __init__(self, store: Store, model: str | Embedder | None = None) -> None:
        self.store = store
        identity = store.model_identity
        if isinstance(model, Embedder):
            self._model: Embedder | None = model
            self.model_name = model.spec.name
        else:
            self._model = None
            self.model_name = model or (str(identity["name"]) if identity else DEFAULT_MODEL)
        if identity is not None and identity.get("name") != self.model_name:
            raise ModelMismatchError(
                f"this index was built with model {identity.get('name')!r}, not {self.model_name!r}; "
                "vectors of different models cannot be mixed. "
                f"Open it with model {identity.get('name')!r}, or use a new index."
            )
        if self._model is not None:
            self._check_identity(self._model)
        self._model_lock = threading.Lock()
        self.no_match_below = FIXED_NO_MATCH_BELOW
        #: "auto" (k-NN rule when the collection is calibrated, else fixed), "knn" or "fixed"
        self.no_match_rule = "auto"
        #: fraction of the collection's own items the k-NN rule accepts as in-distribution
        self.accept_rate = DEFAULT_ACCEPT
        self._calibration_cache: tuple[object, Calibration | None] = (None, None)

    @classmethod
    def open(
        cls,
        db: str | os.PathLike[str],
        *,
        model: str | Embedder | None = None,
        create: bool = True,
        index_kind: str | None = None,
        read_only: bool | None = None,
        repair: bool = False,
    ) -> Index:
        """Open (or create) the index at ``db``. ``model`` defaults to the one that built it.

        ``db`` is a folder (the embedded store), a Milvus Lite ``.db`` file or ``milvus://HOST:PORT/NAME``.
        ``index_kind`` (``auto``, ``flat``, ``hnsw32``, ``ivf4096,sq8`` ...) is remembered by the
        embedded store; None keeps the recorded one. ``read_only``: None opens a folder that cannot
        be written (read-only mount, full disk) for reading; False demands a writable index (a
        :class:`~lookalike.store.base.ReadOnlyIndexError` now rather than at the first write).
        ``repair``: drop the items whose vectors are lost instead of raising
        :class:`~lookalike.store.base.DamagedIndexError` (``add`` then embeds those files again).
        """
        store = open_store(db, index_kind=index_kind, create=create, read_only=read_only, repair=repair)
        try:
            return cls(store, model)
        except BaseException:
            store.close()
            raise

    # -- model ------------------------------------------------------------------------------------
    @property
    def model(self) -> Embedder:
        """The embedder, loaded on first use (so `info` and metadata calls stay instant)."""
        with self._model_lock:
            if self._model is None:
                model = _create_model(self.model_name)
                self._check_identity(model)
                self._model = model
            return self._model

    def _check_identity(self, model: Embedder) -> None:
        identity = self.store.model_identity
        want = model.spec.identity()
        if identity is None:
            if not self.store.read_only:  # an empty read-only index has nothing to mismatch
                self.store.set_model_identity(want)
        elif identity != want:
            self.store.set_model_identity(want)  # raises ModelMismatchError with the differences

    # -- writing ----------------------------------------------------------------------------------
    def add(
        self,
        paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        workers: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        remove_missing: bool = True,
        calibrate: bool | None = None,
        ray: str | None = None,
        rehash: bool = False,
    ) -> IngestReport:
        """Index files and folders (recursively), incrementally. Returns what was done and skipped.

        ``rehash``: read and hash every file instead of trusting an unchanged (size, mtime), which
        misses a file rewritten in place with both restored (e.g. by ``touch -r`` or some sync tools).

        ``calibrate``: None (default) recalibrates score readings when the collection has no
        calibration or changed size by more than 20% (a bounded cost: at most 200 extra embeddings);
        True forces it, False skips it. ``ray`` (a Ray address, ``auto`` or ``local``) embeds on a Ray
        cluster instead of this process; ``workers`` is then the number of Ray actors.
        """
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        options = {"progress": progress, "workers": workers, "max_pixels": max_pixels}
        options |= {"remove_missing": remove_missing, "rehash": rehash}
        if ray is None:
            report = ingest(self.store, self.model, list(paths), **options)  # type: ignore[arg-type]
        else:  # the same run, distributed: Ray actors embed, this process plans and commits
            from lookalike.distributed.ray_ingest import ingest_ray

            report = ingest_ray(self.store, self.model, list(paths), address=ray, **options)  # type: ignore[arg-type]
        if calibrate or (calibrate is None and self.calibration_stale()):
            self.calibrate()
        return report

    # -- calibration ------------------------------------------------------------------------------
    @property
    def calibration(self) -> Calibration | None:
        """The stored calibration of this collection (see docs/calibration.md), or None."""
        raw = self.store.get_meta(calib.META_KEY)
        stamp = raw.get("computed_at") if isinstance(raw, dict) else None
        if self._calibration_cache[0] != stamp or stamp is None:
            self._calibration_cache = (stamp, calib.parse_calibration(raw))  # parsed once per stored record
        return self._calibration_cache[1]

    def calibration_stale(self) -> bool:
        """True when there is no calibration or the collection changed size by more than 20% since."""
        cal = self.calibration
        return cal is None or cal.is_stale(len(self.store))

    def calibrate(self, progress: CalibrationProgress | None = None, **options: object) -> Calibration:
        """Measure the collection now and store the result (options: see ``compute_calibration``)."""
        cal = compute_calibration(self.store, self.model, progress=progress, **options)  # type: ignore[arg-type]
        calib.save_calibration(self.store, cal)
        return cal

    def remove(self, ids: Sequence[int]) -> int:
        """Drop items from the index (the files are left alone)."""
        return self.store.remove([i for i in ids if is_item_id(i)])

    # -- reading ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.store)

    def item(self, item_id: int) -> ItemRecord | None:
        return self.store.get(item_id) if is_item_id(item_id) else None

    def embed(self, images: Sequence[QueryInput]) -> np.ndarray:
        """Vectors for query images (paths, bytes or PIL images) with this index's model."""
        model = self.model
        pictures = [open_rgb(im, draft_size=model.spec.input_size) for im in images]  # type: ignore[arg-type]
        return model.embed(pictures)

    def search(self, query: QueryInput, k: int = 4) -> QueryResult:
        """The k most similar indexed images to one query (a path, bytes, a PIL image or an item id)."""
        return self.search_many([query], k)[0]

    def similar(self, item_id: int, k: int = 4) -> QueryResult:
        """ "More like this" for an indexed item: its stored vector, itself excluded."""
        return self.search_many([item_id], k)[0]

    def search_many(
        self,
        queries: Sequence[QueryInput],
        k: int = 4,
        *,
        no_match_rule: str | None = None,
        accept_rate: float | None = None,
    ) -> list[QueryResult]:
        """Search several queries with one model load and one batched matrix product.

        An ``int`` is an item id; a path that is indexed and unchanged uses its stored vector (and is
        left out of its own results). A query that cannot be read gets ``error`` set, not an exception.
        ``no_match_rule`` / ``accept_rate`` override :attr:`no_match_rule` / :attr:`accept_rate`.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        cal = self.calibration
        rule = NoMatchRule.for_collection(
            cal,
            no_match_rule or self.no_match_rule,
            self.accept_rate if accept_rate is None else accept_rate,
            self.no_match_below,
        )
        vectors, excludes, errors = self._resolve_and_embed(queries)
        ready = [i for i, v in enumerate(vectors) if v is not None]
        hits_by_query: dict[int, list[Hit]] = {}
        if ready:
            found = self._search_hits(
                np.stack([vectors[i] for i in ready]), max(k, rule.neighbours), [excludes[i] for i in ready]
            )
            hits_by_query = dict(zip(ready, found, strict=True))
        out = []
        for i, query in enumerate(queries):
            if i in errors:
                out.append(QueryResult(_label(query), [], True, error=errors[i]))
                continue
            hits = hits_by_query.get(i, [])
            decision = rule.decide(rule.read(self.store, vectors[i], hits))  # type: ignore[arg-type]
            matches = self._matches(hits[:k], cal)  # only the shown results need their records
            out.append(QueryResult(_label(query), matches, decision.no_match, extra=decision.detail))
        return out

    def _resolve_and_embed(
        self, queries: Sequence[QueryInput]
    ) -> tuple[list[np.ndarray | None], list[list[int]], dict[int, str]]:
        """Each query's vector (stored for indexed items, embedded in one batch otherwise), the ids
        to leave out of its results (itself), and the error of each query that cannot be read."""
        vectors: list[np.ndarray | None] = [None] * len(queries)
        excludes: list[list[int]] = [[] for _ in queries]
        errors: dict[int, str] = {}
        to_embed: list[tuple[int, QueryInput]] = []
        for i, query in enumerate(queries):
            item = self._indexed_item(query)
            if item is not None:
                vectors[i] = self.store.vectors([item.id])[0]
                excludes[i] = [item.id]
            elif isinstance(query, int):
                errors[i] = f"no item with id {query}"
            else:
                to_embed.append((i, query))
        if not to_embed:
            return vectors, excludes, errors
        model = self.model
        pictures: list[tuple[int, Image.Image]] = []
        for i, query in to_embed:
            try:
                pictures.append((i, open_rgb(query, draft_size=model.spec.input_size)))  # type: ignore[arg-type]
            except ImageLoadError as exc:
                errors[i] = str(exc)
        if pictures:
            for (i, _), vec in zip(pictures, model.embed([p for _, p in pictures]), strict=True):
                vectors[i] = vec
        return vectors, excludes, errors

    def search_text(self, text: str, k: int = 4) -> QueryResult:
        """Find images by words. ``extra["mode"]`` says how:

        * ``clip``: the model has a text tower (``embed_text``); ranked by text-image cosine.
        * ``keyword-tags``: otherwise, the words are matched against each image's stored ImageNet
          tags (see :mod:`lookalike.models.tags`): keyword search, not semantic search. Scores are
          ``sum(prob * share of query words matched)``, not cosine similarities.

        ``no_match`` is true when nothing matched (keywords) or the index is empty; the image rule's
        cosine cut-off does not apply to text-image scores, which live on a lower scale.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        text = text.strip()
        if not text:
            return QueryResult(text, [], True, error="empty text query")
        model = self._text_model()
        if model is not None:
            vector = model.embed_text([text])  # type: ignore[attr-defined]
            matches = self._search_vectors(vector, k, [[]])[0] if len(self.store) else []
            return QueryResult(text, matches, not matches, extra={"mode": "clip"})
        from lookalike.models.tags import TAGS_KEY, keyword_score, words

        query_words = words(text)
        scored: list[tuple[float, ItemRecord]] = []
        tagged = 0
        for rec in self.store.items():
            tags = rec.extra.get(TAGS_KEY)
            if tags is None:
                continue
            tagged += 1
            score = keyword_score(query_words, tags)  # type: ignore[arg-type]
            if score > 0:
                scored.append((score, rec))
        scored.sort(key=lambda item: (-item[0], item[1].id))
        matches = [Match(r.id, r.path, s, r.width, r.height) for s, r in scored[:k]]
        result = QueryResult(text, matches, not matches, extra={"mode": "keyword-tags"})
        if tagged == 0 and len(self.store):
            return QueryResult(
                text,
                [],
                True,
                error="this index has no keyword tags: they are stored at index time by ImageNet classifier "
                "models (mobilenet_v2, efficientnet_lite*) in lookalike >= 0.1; re-index into a new --db, "
                "or use a CLIP model for search by words",
                extra={"mode": "keyword-tags"},
            )
        return result

    def _text_model(self) -> Embedder | None:
        """The model if it embeds text (CLIP), else None. Avoids loading a CNN just to ask."""
        if not self.model_name.startswith("clip:") and self._model is None:
            return None
        model = self.model
        return model if callable(getattr(model, "embed_text", None)) else None

    def _search_vectors(
        self, vectors: np.ndarray, k: int, excludes: list[list[int]], cal: Calibration | None = None
    ) -> list[list[Match]]:
        return [self._matches(hits, cal) for hits in self._search_hits(vectors, k, excludes)]

    def _search_hits(self, vectors: np.ndarray, k: int, excludes: list[list[int]]) -> list[list[Hit]]:
        """The k best (id, score) per query, each query's excluded ids left out."""
        exclude_all = sorted({i for ex in excludes for i in ex})
        raw = self.store.search(vectors, k + len(exclude_all))
        return [[h for h in hits if h.id not in exclude][:k] for hits, exclude in zip(raw, excludes, strict=True)]

    def _matches(self, hits: Sequence[Hit], cal: Calibration | None) -> list[Match]:
        """Hits as results: the item's path and size, and the calibrated reading when there is one."""
        matches = []
        probs = cal.probability([h.score for h in hits]) if cal is not None and cal.ok else None
        for j, hit in enumerate(hits):
            rec = self.store.get(hit.id)
            if rec is None:
                continue
            if probs is not None:
                assert cal is not None
                prob, label = float(probs[j]), cal.label(hit.score)
            else:
                prob, label = None, None
            matches.append(Match(hit.id, rec.path, hit.score, rec.width, rec.height, prob, label))
        return matches

    def _indexed_item(self, query: QueryInput) -> ItemRecord | None:
        if isinstance(query, bool):
            return None
        if isinstance(query, int):
            return self.item(query)
        if isinstance(query, str | os.PathLike):
            path = os.path.abspath(os.fspath(query))
            rec = self.store.get_by_path(path)
            if rec is not None:
                try:
                    st = os.stat(path)
                except OSError:
                    return None
                if st.st_size == rec.size and st.st_mtime_ns == rec.mtime_ns:
                    return rec
        return None

    def info(self) -> dict[str, object]:
        info = self.store.info()
        cal = self.calibration
        if cal is None:
            info["calibration"] = "none (run `lookalike calibrate`)"
        elif cal.ok:
            info["calibration"] = f"ok ({cal.n_items} items{', stale' if cal.is_stale(len(self.store)) else ''})"
        else:
            info["calibration"] = f"fallback: {cal.reason}"
        return info

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create_model(name: str) -> Embedder:
    """The index's model, with ONNX Runtime's idle threads sleeping instead of spin-waiting.

    Why: an index's model runs beside decode threads (indexing, calibration copies) that need the
    cores its spinning threads would burn. Measured (2 cores, model only, 8 images a call): 12.1 CPU ms
    per image without spinning vs 17.4 with it; indexing 250 photos used 8-10% less CPU. Models whose
    factory has no such option (hashes, CLIP, trained packages) are built as they are.
    """
    accepts = inspect.signature(model_info(name).factory).parameters
    return create_model(name, **({"allow_spinning": False} if "allow_spinning" in accepts else {}))


def _label(query: QueryInput) -> str:
    if isinstance(query, int) and not isinstance(query, bool):
        return f"id:{query}"
    if isinstance(query, str | os.PathLike):
        return str(Path(query))
    if isinstance(query, bytes | bytearray):
        return "<bytes>"
    return "<image>"
