"""Opportunistic micro-batching of uploaded queries, so concurrent uploads share one model call.

Why: on a small CPU box, N concurrent ``session.run`` calls each asking for all cores oversubscribe
the machine, while one batched call of N images keeps every core busy with less overhead. Requests
are decoded in their own threads (Pillow releases the GIL), then queued here; one worker thread takes
*everything* queued at that moment, groups it by ``k`` and runs :meth:`Index.search_many` once per
group. A lone request is never delayed (no timer): batches form only while the model is busy.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from PIL import Image

from lookalike.index import Index
from lookalike.search.results import QueryResult


@dataclass
class _Job:
    image: Image.Image
    k: int
    future: Future[QueryResult] = field(default_factory=Future)


class SearchBatcher:
    """Runs searches for decoded images on one worker thread, batching whatever is waiting."""

    def __init__(self, index: Index, *, max_batch: int = 32) -> None:
        self.index = index
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        #: sizes of the batches run so far (kept small: a counter per size), for /api/health and the bench
        self.batch_sizes: dict[int, int] = {}

    def submit(self, image: Image.Image, k: int) -> Future[QueryResult]:
        self._ensure_started()
        job = _Job(image, k)
        self._queue.put(job)
        return job.future

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lookalike-search-batcher", daemon=True)
                self._thread.start()

    def close(self) -> None:
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            stop = False
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            self._process(jobs)
            if stop:
                return

    def _process(self, jobs: list[_Job]) -> None:
        self.batch_sizes[len(jobs)] = self.batch_sizes.get(len(jobs), 0) + 1
        by_k: dict[int, list[_Job]] = {}
        for job in jobs:
            by_k.setdefault(job.k, []).append(job)
        for k, group in by_k.items():
            live = [j for j in group if j.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                results = self.index.search_many([j.image for j in live], k)
            except BaseException as exc:  # hand the failure to every waiting request, keep serving
                for job in live:
                    job.future.set_exception(exc)
                continue
            for job, result in zip(live, results, strict=True):
                job.future.set_result(result)
