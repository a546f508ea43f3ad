"""Measuring a collection for its calibration: how copies and nearest non-copies score *here*.

Two samples (see :mod:`lookalike.search.calibration` for what is made of them):

* **copy scores**: up to :data:`COPY_SAMPLE` of the collection's own images, each given one random
  composite copy edit (:func:`lookalike.imaging.edits.copy_edit`), embedded on the shared pipeline
  and scored against the stored vector of its original;
* **neighbour scores**: for up to :data:`NEIGHBOUR_SAMPLE` items, the similarity of their nearest and
  k-th nearest *different* items (read in the model's no-match view when it has one, exactly as the
  no-match rule reads a query).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from lookalike.imaging.discover import Skip
from lookalike.imaging.edits import copy_edit
from lookalike.imaging.load import open_rgb
from lookalike.models.base import Embedder, NoMatchView
from lookalike.pipeline.runner import Pipeline, Work
from lookalike.search.calibration import MIN_ITEMS, Calibration, build_calibration, fallback
from lookalike.search.no_match import FIXED_NO_MATCH_BELOW, NoMatchRule, auto_k
from lookalike.store.base import Store, VectorRows

#: Copy-score sample: images edited per calibration, edits per image.
COPY_SAMPLE = 200
EDITS_PER_IMAGE = 1  # 2 measured no better calibrated (bench_calibration) and doubles the cost
MIN_COPIES = 10
#: Items whose neighbours are measured.
NEIGHBOUR_SAMPLE = 2000

CalibrationProgress = Callable[[str, int, int], None]


def compute_calibration(
    store: Store,
    model: Embedder,
    *,
    copies: int = COPY_SAMPLE,
    edits_per_image: int = EDITS_PER_IMAGE,
    neighbours: int = NEIGHBOUR_SAMPLE,
    knn_k: int | None = None,
    method: str = "logistic",
    seed: int = 0,
    progress: CalibrationProgress | None = None,
) -> Calibration:
    """Measure the collection (see the module docstring). Reads sampled files again to edit them."""
    started = time.perf_counter()
    ids, vectors = store.vector_rows()  # rows read on demand: only samples are needed
    n = len(ids)
    if n < MIN_ITEMS:
        return fallback(
            f"only {n} images indexed; at least {MIN_ITEMS} are needed to learn what scores mean here, "
            f"so the fixed rule (best score < {FIXED_NO_MATCH_BELOW}) decides 'no similar images'",
            n,
            model.spec.name,
        )
    view = model.spec.no_match_view
    rng = np.random.default_rng(seed)
    k = max(1, min(knn_k or auto_k(n), n - 1))
    sample = rng.permutation(n)[: min(n, neighbours)]
    nn, knn = _neighbour_scores(store, ids, vectors, sample, k, progress, view)
    copy_scores = _copy_scores(store, model, ids, vectors, rng, copies, edits_per_image, progress)
    if len(copy_scores) < MIN_COPIES or len(nn) < MIN_ITEMS // 2:
        return fallback(
            f"only {len(copy_scores)} copies could be made from the indexed files (are they still on disk?); "
            f"the fixed rule (best score < {FIXED_NO_MATCH_BELOW}) decides 'no similar images'",
            n,
            model.spec.name,
            view,
        )
    cal = build_calibration(copy_scores, nn, knn, k=k, method=method)
    cal.n_items = n
    cal.model = model.spec.name
    cal.no_match_view = view.to_json() if view else None
    cal.seconds = time.perf_counter() - started
    return cal


def _neighbour_scores(
    store: Store,
    ids: np.ndarray,
    vectors: np.ndarray | VectorRows,
    sample: np.ndarray,
    k: int,
    progress: CalibrationProgress | None,
    view: NoMatchView | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest and k-th nearest similarity of sampled items among *other* items of different content.

    The nearest is by the whole vector (copy probabilities read those scores); the k-th is read in
    ``view`` when there is one, by the same :meth:`NoMatchRule.read` and
    :meth:`NoMatchRule.statistic` a search applies to a query.
    """
    rule = NoMatchRule("knn", 0.0, k, view)  # reads only: the threshold is what is being measured
    sha = {}
    nn, knn = [], []
    # room for the item itself and exact copies (same file content) of it, and the view's pool
    extra = 8 + rule.neighbours - k
    batch = 256
    for start in range(0, len(sample), batch):
        rows = sample[start : start + batch]
        hits = store.search(vectors[rows], k + extra)
        for row, row_hits in zip(rows, hits, strict=True):
            me = int(ids[row])
            if me not in sha:
                sha[me] = _sha(store, me)
            kept = []
            for hit in row_hits:
                if hit.id == me:
                    continue
                if hit.id not in sha:
                    sha[hit.id] = _sha(store, hit.id)
                if sha[hit.id] == sha[me]:
                    continue
                kept.append(hit)
            if kept:
                nn.append(kept[0].score)
                knn.append(rule.statistic(rule.read(store, vectors[row], kept[: rule.neighbours])))
        if progress:
            progress("neighbours", min(start + batch, len(sample)), len(sample))
    return np.asarray(nn), np.asarray(knn)


def _sha(store: Store, item_id: int) -> str:
    rec = store.get(item_id)
    return rec.sha256 if rec is not None else f"missing:{item_id}"


def _copy_scores(
    store: Store,
    model: Embedder,
    ids: np.ndarray,
    vectors: np.ndarray | VectorRows,
    rng: np.random.Generator,
    copies: int,
    edits_per_image: int,
    progress: CalibrationProgress | None,
) -> np.ndarray:
    """Scores of edited copies of sampled items against their stored vectors.

    Runs on the shared pipeline: worker threads decode and edit (each sampled row with its own
    random stream, drawn from ``rng``, so the sample is the same whatever the thread timing), the
    model embeds full batches. A file that is gone or unreadable is replaced by the next sampled row.
    """
    order = [int(row) for row in rng.permutation(len(ids))]
    wanted = min(copies, len(ids))
    base_seed = int(rng.integers(0, 2**32))
    scores: dict[int, list[float]] = {}
    next_row = iter(order[wanted:])
    # Decode at a moderate size: edits then act on real detail, and huge photos stay cheap.
    draft = max(512, 2 * model.spec.input_size)

    def prepare(row: int) -> Work[int] | Skip:
        rec = store.get(int(ids[row]))
        if rec is None:
            return Skip(str(row), "missing", "no longer in the index")
        image = open_rgb(rec.path, draft_size=draft)  # ImageLoadError: the pipeline skips this row
        image.thumbnail((640, 640))  # the model sees 224 px; bigger only slows decoding and editing
        row_rng = np.random.default_rng((base_seed, row))
        return Work(row, [model.preprocess(copy_edit(image, row_rng)) for _ in range(edits_per_image)])

    class Collect:
        def finished(self, done: list[tuple[Work[int], np.ndarray]], extras: list[dict[str, object]]) -> None:
            for work, embedded in done:
                scores[work.item] = [float(np.dot(vectors[work.item], vec)) for vec in embedded]
            if progress:
                progress("copies", len(scores), wanted)

        def skipped(self, item: int, skip: Skip) -> None:
            replacement = next(next_row, None)  # moved or deleted since indexing: sample another one
            if replacement is not None:
                pipeline.submit(replacement)

    pipeline = Pipeline(prepare, Collect(), model)
    pipeline.run(order[:wanted])
    return np.asarray([score for row in order if row in scores for score in scores[row]])
