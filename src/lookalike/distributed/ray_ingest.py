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

import json
import os
from collections.abc import Sequence

import numpy as np

from lookalike.imaging.discover import FoundFile, Skip
from lookalike.imaging.load import DEFAULT_MAX_PIXELS
from lookalike.ingest import IngestReport, IngestRun, Progress, file_record, prepare_file
from lookalike.models.base import Embedder
from lookalike.pipeline.runner import Pipeline, Work
from lookalike.store.base import Store


class EmbedFiles:
    """The Ray actor's callable: one model per actor, a batch of paths in, vectors out.

    It runs the same pipeline as local indexing (:func:`lookalike.ingest.prepare_file` in threads,
    the model on full batches), so a file fails, and is measured, exactly as it would locally.
    """

    def __init__(self, model_name: str, max_pixels: int, threads: int, keep_pictures: bool = False) -> None:
        from lookalike.models.registry import create_model

        self.max_pixels, self.keep_pictures = max_pixels, keep_pictures
        self.model: Embedder = create_model(model_name, intra_op_num_threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        row = {path: i for i, path in enumerate(paths)}
        dim = self.model.spec.dim
        out: dict[str, list[object]] = {key: [""] * len(paths) for key in ("sha256", "reason", "detail", "info")}
        out["picture"] = [b""] * len(paths)  # the geometric check's copy (lookalike.imaging.checkpicture)
        vectors = np.zeros((len(paths), dim), dtype=np.float32)

        class Collect:
            def finished(self, done: list[tuple[Work[FoundFile], np.ndarray]], extras: list[dict[str, object]]) -> None:
                for (work, vecs), extra in zip(done, extras, strict=True):
                    i = row[work.item.path]
                    out["sha256"][i] = work.info["sha256"]
                    out["picture"][i] = work.info.pop("picture", b"")
                    out["info"][i] = json.dumps({**work.info, "extra": extra})
                    vectors[i] = vecs[0]

            def skipped(self, item: FoundFile, skip: Skip) -> None:
                i = row[item.path]
                out["reason"][i], out["detail"][i] = skip.reason, skip.detail

        def prepare(found: FoundFile) -> Work[FoundFile] | Skip:
            return prepare_file(
                found, self.model, self.max_pixels, known=lambda sha: False, keep_picture=self.keep_pictures
            )

        Pipeline(prepare, Collect(), self.model, workers=1).run([FoundFile(path, 0, 0) for path in paths])
        return {
            "path": np.asarray(paths, dtype=object),
            **{key: np.asarray(values, dtype=object) for key, values in out.items()},
            "vector": vectors,
        }


def connect(address: str | None, *, ship_code: bool = True) -> None:
    """Join the Ray cluster at ``address`` (``auto``: the one RAY_ADDRESS / ``ray start`` names;
    ``local``: a private in-process cluster). The lookalike package is shipped to the workers so
    they run the driver's exact code."""
    import ray

    if ray.is_initialized():
        return
    # The package folder, from this file's place in it (importing the package itself for its
    # __file__ would make distributed depend on the root package that imports it).
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runtime_env = {"py_modules": [package_dir]} if ship_code else None
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
    rehash: bool = False,
) -> IngestReport:
    """Like :func:`lookalike.ingest.ingest`, with the embedding done by Ray actors.

    ``workers`` actors (default: one per CPU of the cluster) each hold one model with one ONNX
    thread and ask for one CPU, so the pool always fits the cluster (a pool asking for more CPUs
    than exist waits forever).
    """
    import ray

    run = IngestRun(store, roots, progress, rehash=rehash)
    todo = run.plan()
    if todo:
        connect(address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        pool = max(1, min(workers or cpus, cpus, len(todo)))
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        blocks = min(len(todo), max(2 * pool, -(-len(todo) // batch_size)))  # every actor gets work
        ds = ray.data.from_items([{"path": f.path} for f in todo], override_num_blocks=blocks)
        embedded = ds.map_batches(
            EmbedFiles,
            fn_constructor_args=(model.spec.name, max_pixels, 1, run.keeps_pictures(todo)),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=pool),
            num_cpus=1,
        )
        for batch in embedded.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
            records, vectors, pictures = [], [], {}
            for i, path in enumerate(batch["path"]):
                found = run.todo[str(path)]
                if batch["reason"][i]:
                    run.failed(Skip(found.path, str(batch["reason"][i]), str(batch["detail"][i])))
                    continue
                info = json.loads(str(batch["info"][i]))
                extra = info.pop("extra")
                work = Work(found, [], info)
                if store.find_by_sha256(info["sha256"]) and run.reuse(work):
                    continue  # a move or copy: no new vector
                records.append(file_record(work, extra))
                vectors.append(batch["vector"][i])
                if batch["picture"][i]:
                    pictures[info["sha256"]] = bytes(batch["picture"][i])
            if records:
                run.commit(records, np.stack(vectors), pictures)  # the store's crash-safe commit, one per batch
    return run.finish(remove_missing)
