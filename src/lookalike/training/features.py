"""Frozen-backbone features, computed once per (file content, model, view) and cached on disk.

Why: the ``head`` recipe trains only a small network on top of a frozen backbone, so the backbone's
output for an image never changes. Extracting it is >95% of the cost (about 150 images/s for
MobileNetV2 on 2 cores); caching it makes a second training run (other epochs, other seed, more
classes) cost seconds for the images already seen.

Key: ``sha256(file bytes)`` + a model key (hash of the backbone's ``ModelSpec`` identity, so new
weights or another preprocessing never reuse stale vectors) + the view: ``0`` is the plain image,
``1..n`` are augmented views drawn with a seed derived from the file hash and view number, so view 3
of an image is the same picture on every run and can be cached too. The augmentation recipe version
is part of the key of augmented views only.

Storage: one SQLite file per model key under ``<cache root>/features/`` (float16 blobs; the features
are post-ReLU averages where float16 loses nothing measurable for cosine retrieval).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from lookalike.imaging.discover import Skip, tag_cache_dir
from lookalike.imaging.load import ImageLoadError, decode_image, read_bytes
from lookalike.models.base import Embedder
from lookalike.models.onnx_backend import cache_root
from lookalike.pipeline.runner import Pipeline, Work

AUGMENT_VERSION = "aug1"


def features_dir() -> Path:
    return cache_root() / "features"


def model_key(model: Embedder) -> str:
    text = json.dumps(model.spec.identity(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def augment(image: Image.Image, seed: int) -> Image.Image:
    """One random but reproducible view: crop 60-100% of the area (aspect 3:4..4:3), maybe mirror,
    brightness and contrast within +-20%. Mild on purpose: it must keep the class recognisable."""
    rng = np.random.default_rng(seed)
    w, h = image.size
    area = w * h * rng.uniform(0.6, 1.0)
    ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    cw = max(1, round(float(min(w, np.sqrt(area * ratio)))))
    ch = max(1, round(float(min(h, np.sqrt(area / ratio)))))
    left = int(rng.integers(0, w - cw + 1))
    top = int(rng.integers(0, h - ch + 1))
    out = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.8, 1.2)))
    return ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.8, 1.2)))


def view_seed(sha256: str, view: int) -> int:
    return int(sha256[:15], 16) ^ (view * 0x9E3779B1)


class FeatureCache:
    """``(sha256, view) -> float32 vector`` for one backbone, in SQLite. Thread-safe, multi-process safe."""

    def __init__(self, model: Embedder, directory: Path | None = None) -> None:
        self.key = model_key(model)
        self.dim = model.spec.dim
        directory = directory or features_dir()
        directory.mkdir(parents=True, exist_ok=True)
        tag_cache_dir(directory)
        self.path = directory / f"{model.spec.name}-{self.key}.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS features (sha256 TEXT, view TEXT, vector BLOB, PRIMARY KEY (sha256, view))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('identity', ?)",
            (json.dumps(model.spec.identity(), sort_keys=True),),
        )

    @staticmethod
    def view_name(view: int) -> str:
        return "0" if view == 0 else f"{AUGMENT_VERSION}:{view}"

    def get_many(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], np.ndarray]:
        out: dict[tuple[str, int], np.ndarray] = {}
        names = {(sha, self.view_name(v)): (sha, v) for sha, v in keys}
        by_view: dict[str, list[str]] = {}
        for sha, view in names:
            by_view.setdefault(view, []).append(sha)
        with self._lock:
            for view, shas in by_view.items():
                for start in range(0, len(shas), 500):
                    chunk = shas[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(
                        f"SELECT sha256, vector FROM features WHERE view = ? AND sha256 IN ({marks})",
                        (view, *chunk),
                    ).fetchall()
                    for sha, blob in rows:
                        out[names[(sha, view)]] = np.frombuffer(blob, dtype=np.float16).astype(np.float32)
        return out

    def put_many(self, items: Sequence[tuple[str, int, np.ndarray]]) -> None:
        rows = [(sha, self.view_name(v), np.asarray(vec, dtype=np.float16).tobytes()) for sha, v, vec in items]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()


def extract_features(
    model: Embedder,
    paths: Sequence[str | os.PathLike[str]],
    views: Sequence[int] | Callable[[int], Sequence[int]] = (0,),
    *,
    cache: FeatureCache | None = None,
    workers: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> tuple[dict[tuple[int, int], np.ndarray], list[str], list[Skip], int]:
    """Backbone vectors for each ``(path index, view)`` wanted, from cache or computed.

    ``views`` is a list for every path or a function ``index -> views`` (validation images need only
    view 0). Decoding and augmenting run in threads, overlapping the model. Returns
    ``({(i, view): vector}, sha256 per path ('' if unreadable), skips, computed count)``.
    """
    want = views if callable(views) else (lambda _i, _v=tuple(views): _v)
    own_cache = cache is None
    cache = cache or FeatureCache(model)
    workers = workers or min(4, os.cpu_count() or 1)
    results: dict[tuple[int, int], np.ndarray] = {}
    shas = [""] * len(paths)
    skips: list[Skip] = []
    computed = 0
    draft = model.spec.input_size

    def prepare(i: int) -> Work[int] | Skip:
        """Hash, and on a cache miss decode + augment + preprocess, in a worker thread."""
        path = paths[i]
        try:
            data = read_bytes(path)
            sha = hashlib.sha256(data).hexdigest()
            needed = list(want(i))
            cached = {v: vec for (_, v), vec in cache.get_many([(sha, v) for v in needed]).items()}
            missing = [v for v in needed if v not in cached]
            if not missing:
                return Work(i, [], {"sha256": sha, "cached": cached, "missing": []})
            picture = decode_image(data, draft_size=draft, name=path).image
        except ImageLoadError as exc:
            return Skip(str(path), exc.reason, exc.detail)
        inputs = [model.preprocess(picture if v == 0 else augment(picture, view_seed(sha, v))) for v in missing]
        return Work(i, inputs, {"sha256": sha, "cached": cached, "missing": missing})

    class Collect:
        def finished(self, done: list[tuple[Work[int], np.ndarray]], extras: list[dict[str, object]]) -> None:
            nonlocal computed
            fresh: list[tuple[str, int, np.ndarray]] = []
            for work, vectors in done:
                i, sha = work.item, work.info["sha256"]
                shas[i] = sha
                results.update({(i, v): vec for v, vec in work.info["cached"].items()})
                for v, vec in zip(work.info["missing"], vectors, strict=True):
                    results[(i, v)] = vec
                    fresh.append((sha, v, vec))
            if fresh:
                cache.put_many(fresh)
                computed += len(fresh)

        def skipped(self, item: int, skip: Skip) -> None:
            skips.append(Skip(str(paths[item]), skip.reason, skip.detail))

    try:
        Pipeline(prepare, Collect(), model, workers=workers, progress=on_done).run(range(len(paths)))
    finally:
        if own_cache:
            cache.close()
    return results, shas, skips, computed
