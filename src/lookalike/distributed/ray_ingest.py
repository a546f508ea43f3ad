"""Distributed embedding with Ray Data: ``lookalike index PATH --ray ADDRESS``.

The driver (this process) walks the folders and decides what needs embedding exactly like the local
pipeline (unchanged files cost one ``stat``; failed files are not retried while unchanged). Ray
Data's ``map_batches`` then reads, hashes, decodes, preprocesses and embeds the file list on the
cluster's workers, one model per actor. Results stream back to the driver, which writes them through
the store's ordinary ``add`` in batches, so a run that dies (driver, worker or task) keeps every
committed batch and a re-run resumes with the files still missing. Ray retries failed tasks itself.

Files must be readable under the same path on every worker (a shared or replicated file system).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence

import numpy as np

from lookalike.imaging.discover import FoundFile, Skip, walk_images
from lookalike.imaging.load import DEFAULT_MAX_PIXELS, ImageLoadError, decode_image, read_bytes
from lookalike.ingest import IngestReport, Progress, _Prepared, _record, _reuse_known_content, _same
from lookalike.models.base import Embedder
from lookalike.store.base import Store


class EmbedFiles:
    """The Ray actor's callable: one model per actor, a batch of paths in, vectors out."""

    def __init__(self, model_name: str, max_pixels: int, threads: int) -> None:
        from lookalike.models.registry import create_model

        self.max_pixels = max_pixels
        self.model: Embedder = create_model(model_name, intra_op_num_threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        shas, widths, heights, reasons, details, arrays, ok = [], [], [], [], [], [], []
        for path in paths:
            sha, width, height, reason, detail = "", 0, 0, "", ""
            try:
                data = read_bytes(path)
                sha = hashlib.sha256(data).hexdigest()
                loaded = decode_image(data, draft_size=self.model.spec.input_size, max_pixels=self.max_pixels)
                width, height = loaded.width, loaded.height
                arrays.append(self.model.preprocess(loaded.image))
                ok.append(True)
            except ImageLoadError as exc:
                reason, detail = exc.reason, exc.detail
                ok.append(False)
            except Exception as exc:  # one bad file must not fail the task (Ray would retry it forever)
                reason, detail = "corrupt", f"{type(exc).__name__}: {exc}"
                ok.append(False)
            shas.append(sha)
            widths.append(width)
            heights.append(height)
            reasons.append(reason)
            details.append(detail)
        dim = self.model.spec.dim
        vectors = np.zeros((len(paths), dim), dtype=np.float32)
        if arrays:
            vectors[np.asarray(ok)] = self.model.embed_arrays(np.stack(arrays))
        return {
            "path": np.asarray(paths, dtype=object),
            "sha256": np.asarray(shas, dtype=object),
            "width": np.asarray(widths, dtype=np.int64),
            "height": np.asarray(heights, dtype=np.int64),
            "reason": np.asarray(reasons, dtype=object),
            "detail": np.asarray(details, dtype=object),
            "vector": vectors,
        }


def connect(address: str | None, *, ship_code: bool = True) -> None:
    """Join the Ray cluster at ``address`` (``auto``: the one RAY_ADDRESS / ``ray start`` names;
    ``local``: a private in-process cluster). The lookalike package is shipped to the workers so
    they run the driver's exact code."""
    import ray

    if ray.is_initialized():
        return
    import lookalike

    runtime_env = {"py_modules": [os.path.dirname(lookalike.__file__)]} if ship_code else None
    kwargs: dict[str, object] = {"runtime_env": runtime_env, "log_to_driver": False}
    if address in (None, "", "local"):
        ray.init(**kwargs)  # type: ignore[arg-type]
    else:
        ray.init(address=address, **kwargs)  # type: ignore[arg-type]


def ingest_ray(
    store: Store,
    model: Embedder,
    roots: Sequence[str | os.PathLike[str]],
    *,
    address: str | None = None,
    workers: int | None = None,
    batch_size: int = 32,
    progress: Progress | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    remove_missing: bool = True,
) -> IngestReport:
    """Like :func:`lookalike.ingest.ingest`, with the embedding done by Ray actors.

    ``workers`` actors (default: one per CPU of the cluster) each hold one model with one ONNX
    thread and ask for one CPU, so the pool always fits the cluster (a pool asking for more CPUs
    than exist waits forever).
    """
    import ray

    progress = progress or Progress()
    report = IngestReport()
    started = time.perf_counter()
    abs_roots = [os.path.abspath(os.fspath(r)) for r in roots]

    def on_skip(skip: Skip) -> None:
        report.skipped.append(skip)
        progress.skipped(skip)

    states = store.file_states()
    old_skips = store.known_skips()
    seen: set[str] = set()
    todo: list[FoundFile] = []
    for found in walk_images(abs_roots, on_skip, is_known=lambda p, size, mtime: _same(states.get(p), size, mtime)):
        seen.add(found.path)
        state = states.get(found.path)
        if state and state[1] == found.size and state[2] == found.mtime_ns:
            report.unchanged += 1
            continue
        old = old_skips.get(found.path)
        if old and old[0] == found.size and old[1] == found.mtime_ns:
            on_skip(Skip(found.path, old[2], old[3]))
            continue
        todo.append(found)
    progress.found(len(todo))

    new_skips: list[tuple[str, int, int, str, str]] = []
    if todo:
        connect(address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        pool = max(1, min(workers or cpus, cpus, len(todo)))
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        by_path = {f.path: f for f in todo}
        blocks = min(len(todo), max(2 * pool, -(-len(todo) // batch_size)))  # every actor gets work
        ds = ray.data.from_items([{"path": f.path} for f in todo], override_num_blocks=blocks)
        embedded = ds.map_batches(
            EmbedFiles,
            fn_constructor_args=(model.spec.name, max_pixels, 1),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=pool),
            num_cpus=1,
        )
        for batch in embedded.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
            records, vectors = [], []
            for i, path in enumerate(batch["path"]):
                found = by_path[str(path)]
                if batch["reason"][i]:
                    on_skip(Skip(found.path, str(batch["reason"][i]), str(batch["detail"][i])))
                    new_skips.append(
                        (found.path, found.size, found.mtime_ns, str(batch["reason"][i]), str(batch["detail"][i]))
                    )
                    progress.advance()
                    continue
                prepared = _Prepared(
                    found, str(batch["sha256"][i]), int(batch["width"][i]), int(batch["height"][i]), None
                )
                if store.find_by_sha256(prepared.sha256):
                    _reuse_known_content(store, prepared, states, report)  # a move or copy: no new vector
                    progress.advance()
                    continue
                records.append(_record(prepared))
                vectors.append(batch["vector"][i])
            if records:
                for rec in records:
                    if rec.path in states:
                        report.updated += 1
                    else:
                        report.added += 1
                store.add(records, np.stack(vectors))  # the store's crash-safe commit, one per batch
                report.embedded += len(records)
                progress.advance(len(records))

    stale_ids = [states[s.path][0] for s in report.skipped if s.path in states]
    if remove_missing:
        for root in abs_roots:
            for item_id, path in store.paths_under(root):
                if path not in seen and not os.path.lexists(path):
                    stale_ids.append(item_id)
    report.removed = store.remove(sorted(set(stale_ids)))
    store.record_skips(new_skips, forget=[f.path for f in todo if f.path not in {s[0] for s in new_skips}])
    roots_meta = list(store.get_meta("roots") or [])  # type: ignore[arg-type]
    for root in abs_roots:
        folder = root if os.path.isdir(root) else os.path.dirname(root)
        if folder not in roots_meta and os.path.exists(folder):
            roots_meta.append(folder)
    store.set_meta("roots", roots_meta)
    store.compact()
    store.save_search_index()
    report.seconds = time.perf_counter() - started
    return report
