"""Rotation-aware duplicates (``dups --turns``): quarter turns (and mirrors) embedded at ``dups`` time.

Why: the model's vectors are not rotation invariant, so a copy turned by 90/180/270 degrees often
scores below the threshold against its original (bench/bench_dups_heldout.py: quarter-turn recall
0.6-0.7 at the default). Turning every image at index time would cost 3 extra embeddings per image
on every ingest, so this is opt-in and done at ``dups`` time, and only for the images that the
ordinary rule left ungrouped: a rotated copy is itself left over (the original is usually grouped
with its other copies, or alone), and turning it back finds its original.

The files are decoded again through the library's own loader (:func:`~lookalike.imaging.load.load_image`:
the same byte and pixel limits as indexing) and embedded through the shared pipeline
(:mod:`lookalike.pipeline.runner`), so an unreadable or vanished file is simply skipped. Vectors
are cached per content (sha256) in memory for the life of the :class:`TurnedViews` object.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from lookalike.imaging.discover import Skip
from lookalike.imaging.load import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from lookalike.models.base import Embedder
from lookalike.pipeline.runner import Pipeline, Work
from lookalike.store.base import ItemRecord

#: The views of an image that ``--turns`` embeds: its three quarter turns.
TURNS = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
#: Added with ``mirror=True``: the mirror image and its quarter turns (a mirror alone the model
#: already matches: bench_dups_heldout's mirror recall is 0.98-1.00 without it).
MIRRORS = (
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.TRANSVERSE,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.TRANSPOSE,
)


#: ``crops=True`` (``dups --crops``): central and right-of-centre crops at 70/55/40% of each side,
#: for a photo shown inside a larger picture (a screenshot, a page): its copy is one of these
#: regions. Measured on bench_dups_heldout's tuning set (crops alone): embedded-copy recall 0.12 -> 0.72.
CROPS = tuple((f, cx) for f in (0.7, 0.55, 0.4) for cx in (0.5, 0.6))


def crop_box(size: tuple[int, int], fraction: float, centre_x: float) -> tuple[int, int, int, int]:
    """The box of a ``fraction``-sized crop centred at ``centre_x`` of the width, kept inside the image."""
    w, h = size
    cw, ch = max(1, int(w * fraction)), max(1, int(h * fraction))
    x0 = max(0, min(w - cw, int(w * centre_x - cw / 2)))
    y0 = (h - ch) // 2
    return x0, y0, x0 + cw, y0 + ch


class TurnedViews:
    """Turned (and optionally cropped) views of indexed images, embedded on demand:
    ``views(records) -> {record id: (m, d)}``.

    ``embedded`` counts the images embedded so far (each costs one model input per view).
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        mirror: bool = False,
        turns: bool = True,
        crops: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        workers: int | None = None,
    ) -> None:
        self.embedder = embedder
        self.turns = (TURNS if turns else ()) + (MIRRORS if mirror else ())
        self.crops = CROPS if crops else ()
        if not self.turns and not self.crops:
            raise ValueError("no views asked for: give turns, mirror or crops")
        self.max_pixels = max_pixels
        self.workers = workers
        self.embedded = 0
        self.skipped = 0
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, records: Sequence[ItemRecord]) -> dict[int, np.ndarray]:
        """Unit vectors of each record's turned views (records whose file cannot be read are left out)."""
        todo = [rec for rec in records if rec.sha256 not in self._cache]
        embedder, turns, crops = self.embedder, self.turns, self.crops
        # crops keep detail when decoded larger (the photo may be 40% of the frame)
        draft = embedder.spec.input_size * (3 if crops else 1)

        def prepare(rec: ItemRecord) -> Work[ItemRecord] | Skip:
            try:
                image = load_image(rec.path, draft_size=draft, max_pixels=self.max_pixels).image
            except ImageLoadError as exc:
                return Skip(rec.path, exc.reason, exc.detail)
            views = [image.transpose(t) for t in turns] + [image.crop(crop_box(image.size, *c)) for c in crops]
            return Work(rec, [embedder.preprocess(view) for view in views])

        cache = self._cache
        outer = self

        class Collect:
            def finished(
                self, done: list[tuple[Work[ItemRecord], np.ndarray]], extras: list[dict[str, object]]
            ) -> None:
                for work, vectors in done:
                    vecs = np.asarray(vectors, dtype=np.float32)
                    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
                    cache[work.item.sha256] = vecs / np.maximum(norms, 1e-12)
                    outer.embedded += 1

            def skipped(self, item: ItemRecord, skip: Skip) -> None:
                outer.skipped += 1

        if todo:
            Pipeline(prepare, Collect(), embedder, workers=self.workers).run(todo)
        return {rec.id: cache[rec.sha256] for rec in records if rec.sha256 in cache}
