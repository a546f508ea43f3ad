"""The one embedding pipeline: reader threads -> the model on full batches -> a sink.

Every job that turns image files into vectors (indexing, evaluation, training features, calibration
copies, Ray actors) runs here, so they share one look-ahead rule, one batch rule and one failure
policy: a file that cannot be read or decoded becomes a :class:`~lookalike.imaging.discover.Skip`
and the run goes on.

* A **prepare** function runs in worker threads (read, hash, decode, preprocess: the CPU-heavy,
  GIL-releasing part) and returns a :class:`Work` with zero or more model inputs, or a ``Skip``.
* The runner keeps at most ``window`` items in flight, consumes results *in submission order*, and
  runs the model in the calling thread on full batches of inputs, so decoding overlaps inference
  and memory stays at a few batches however many files there are. A batch reaches the model in
  calls of at most :data:`MODEL_CALL` inputs (see there: the same vectors, far less memory).
* The **sink** hears of each finished item with its vectors (``(n_inputs, dim)``; an item with no
  inputs, e.g. content already indexed, finishes at once) and of each skip. A sink may ``submit``
  more items while the run is on (e.g. a file to embed after all).

Where the model runs is the distributor's business: here, this process; ``distributed/`` runs the
same runner inside Ray actors.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from lookalike.imaging.discover import Skip
from lookalike.models.base import Embedder

T = TypeVar("T")


@dataclass(eq=False)
class Work(Generic[T]):
    """One prepared item: the caller's ``item``, what the sink needs, and the model inputs to embed."""

    item: T
    inputs: list[np.ndarray] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Sink(Protocol[T]):
    def finished(self, done: list[tuple[Work[T], np.ndarray]], extras: list[dict[str, object]]) -> None:
        """Items whose inputs are all embedded, with their vectors and (per item) the model's extras."""

    def skipped(self, item: T, skip: Skip) -> None:
        """An item that could not be prepared, and why."""


#: Most inputs per model call. A batch (``embedder.batch_size``, e.g. 32: the unit the sink commits)
#: is embedded in calls of at most this many: ONNX Runtime's arena keeps the activations of the largest
#: call it ever ran, and MobileNetV2 at 224 px needs ~9 MB of them per image. Measured
#: (``bench/bench_e2e.py --model-calls``, 2 cores, the model alone): peak RSS 220 MB in calls of 8 vs
#: 461 MB in calls of 32, CPU per image 11.5 vs 11.6 ms, identical vectors; end to end (``bench_e2e.py``,
#: index + dups of 1,000 photos, median of 3 rounds) the peak fell from 563 to 330 MB. Calls of 4
#: measured 175 MB and 10.3 ms: not yet run end to end.
MODEL_CALL = 8


def default_workers() -> int:
    return min(4, os.cpu_count() or 2)


def look_ahead(batch_size: int) -> int:
    """Items in flight: enough to keep the model fed between batches, few enough to bound memory
    (3 batches of 224 px float inputs is ~60 MB; bench_ingest measured no gain from more)."""
    return max(3 * batch_size, 64)


class Pipeline(Generic[T]):
    """Runs ``prepare`` in threads and ``embedder`` on full batches; results go to ``sink`` in order.

    ``embedder=None`` reads only (every ``Work`` must then have no inputs). An embedder that also
    describes images (``embed_arrays_with_extra``, e.g. ImageNet tags) hands the sink one dict per
    item from the same forward pass.
    """

    def __init__(
        self,
        prepare: Callable[[T], Work[T] | Skip],
        sink: Sink[T],
        embedder: Embedder | None,
        *,
        workers: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.prepare = prepare
        self.sink = sink
        self.embedder = embedder
        self.workers = workers or default_workers()
        self.batch_size = max(1, embedder.batch_size) if embedder is not None else 1
        self.window = look_ahead(self.batch_size)
        self.progress = progress
        self._pending: deque[tuple[T, Future[Work[T] | Skip]]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._inputs: list[np.ndarray] = []
        self._owners: list[Work[T]] = []  # one entry per input, in order
        self._waiting: dict[int, int] = {}  # id(work) -> inputs still to embed
        self._vectors: dict[int, list[np.ndarray]] = {}
        self._order: list[Work[T]] = []  # works with inputs, in submission order

    def submit(self, item: T) -> None:
        """Queue one more item (also from a sink, during the run)."""
        assert self._pool is not None, "submit() is for items added while run() is going"
        self._pending.append((item, self._pool.submit(self._safe_prepare, item)))

    def _safe_prepare(self, item: T) -> Work[T] | Skip:
        try:
            return self.prepare(item)
        except Exception as exc:  # a decoder bug on one file must not stop the run
            return Skip(
                str(getattr(item, "path", item)), "corrupt", f"cannot decode the image ({type(exc).__name__}: {exc})"
            )

    def run(self, items: Iterable[T]) -> None:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            self._pool = pool
            try:
                for item in items:
                    self.submit(item)
                    while len(self._pending) >= self.window:
                        self._handle(*self._pending.popleft())
                while self._pending:
                    self._handle(*self._pending.popleft())
                self._flush()
            finally:
                for _, future in self._pending:
                    future.cancel()
                self._pool = None

    def _handle(self, item: T, future: Future[Work[T] | Skip]) -> None:
        result = future.result()
        if isinstance(result, Skip):
            self.sink.skipped(item, result)
            self._advance(1)
            return
        if not result.inputs:
            dim = self.embedder.spec.dim if self.embedder is not None else 0
            self.sink.finished([(result, np.zeros((0, dim), dtype=np.float32))], [{}])
            self._advance(1)
            return
        if self.embedder is None:
            raise ValueError("a reader-only pipeline got model inputs")
        self._waiting[id(result)] = len(result.inputs)
        self._vectors[id(result)] = []
        self._order.append(result)
        for array in result.inputs:
            self._inputs.append(array)
            self._owners.append(result)
            if len(self._inputs) >= self.batch_size:
                self._flush()

    def _flush(self) -> None:
        """Embed the gathered inputs (one model call) and hand over every item now complete."""
        if not self._inputs:
            return
        assert self.embedder is not None
        vectors, extras = self._embed(np.stack(self._inputs))
        extra_of: dict[int, dict[str, object]] = {}
        for owner, vector, extra in zip(self._owners, vectors, extras, strict=True):
            self._vectors[id(owner)].append(vector)
            self._waiting[id(owner)] -= 1
            extra_of.setdefault(id(owner), extra)  # an item's first input is its plain picture
        self._inputs.clear()
        self._owners.clear()
        done = [w for w in self._order if self._waiting[id(w)] == 0]
        if not done:
            return
        self._order = [w for w in self._order if self._waiting[id(w)] > 0]
        finished = [(w, np.stack(self._vectors.pop(id(w)))) for w in done]
        for w in done:
            del self._waiting[id(w)]
        self.sink.finished(finished, [extra_of[id(w)] for w in done])
        self._advance(len(done))

    def _embed(self, batch: np.ndarray) -> tuple[np.ndarray, list[dict[str, object]]]:
        """One batch through the model, :data:`MODEL_CALL` inputs per call: its vectors and extras."""
        assert self.embedder is not None
        tagger = getattr(self.embedder, "embed_arrays_with_extra", None)
        parts, extras = [], []
        for start in range(0, len(batch), MODEL_CALL):
            chunk = batch[start : start + MODEL_CALL]
            if tagger is not None:
                vectors, chunk_extras = tagger(chunk)
            else:
                vectors, chunk_extras = self.embedder.embed_arrays(chunk), [{} for _ in chunk]
            parts.append(vectors)
            extras.extend(chunk_extras)
        return np.concatenate(parts), extras

    def _advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress(n)
