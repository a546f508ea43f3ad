"""Geometric verification (``dups``, on by default): do two images show the same picture, point for point?

Why: the model's vectors say how *alike* two images look, not whether one is a copy of the other.
A copy turned by a quarter, cropped to half, bordered, overprinted with text or heavily filtered
can score below a look-alike of the same kind of scene, and no cosine threshold separates them
(bench/bench_dups_heldout.py). Local features can: SIFT keypoints are found at the same places
of the picture whatever its rotation and scale, and a copy's keypoints map onto the original's
through one similarity transform (rotation, scale, shift), which RANSAC finds. A look-alike
shares few keypoints, and those do not agree on one transform.

Shared *parts* are not copies: two screenshots of one application share their window chrome, two
collages can share a tile. So a match counts only when its inliers cover most of the textured
area of at least one of the two images (:attr:`Match.cover`): a copy covers the whole of the
smaller picture, a shared title bar or one tile of four does not. A photo pasted small into a busy
screenshot keeps too few of its fine keypoints to be covered "whole"; it confirms when the
transform puts its entire frame inside the screenshot (:attr:`Match.inside`) and the inliers cover
a good part of it, which shared chrome (whose frame is the whole window) never does.

Mirror images do not *confirm* (SIFT descriptors are not mirror-invariant); the model's vectors
already pair mirror copies (bench_dups_heldout: recall 0.98). The other way round,
:meth:`GeometricCheck.denies` says two images are plainly different pictures (no geometry at all,
as they are or mirrored), which parts distinct look-alikes of a homogeneous collection that score
as high as copies.

Two looks: a pair is matched with each image's 300 strongest keypoints; one that this first look
refuses but where it found a few inliers is matched again with up to 800 a side (the *second look*,
:data:`FINE_FEATURES`): a photo that is one tile of a collage keeps a quarter of the collage's
keypoints, too few of the 300 strongest over the whole collage.

Cost: one decode at ``side`` pixels and one SIFT pass per image taking part (about 35 ms on one
core at 320 px, plus the decode), then about 0.8 ms per checked pair and 1.6 ms per second look
(:func:`ratio_matches`: the ratio test as one matrix product; OpenCV's brute-force matcher took 1.1
and 3.0 ms, with the same matches).
Features are cached per content (sha256) for the life of the :class:`GeometricCheck`. Files are
read through the library's loader (the same byte and pixel limits as indexing); an unreadable file
simply does not match.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from lookalike.imaging.checkpicture import CHECK_SIDE, PICTURE_KIND, check_picture, decode_check_picture
from lookalike.imaging.load import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from lookalike.store.base import ItemRecord, Store

#: Longest side the images are decoded to for keypoints. On bench_dups_heldout's tuning set 320 px
#: matched as many copies as 512 px at 60% of the time. Smaller sides (160 / 192 / 224 / 256 px: pair F1
#: 0.905 / 0.920 / 0.923 / 0.923 vs 0.910, `dups` 6.8 / 9.7 / 14.1 / 14.2 s vs 18.3 s) were not taken:
#: at 224 px a turned half-crop of a tuning-side photo no longer covers enough cells to confirm
#: (tests/test_dups_verify.py) and the held-out F1 fell 0.844 -> 0.838 (docs/cleaning.md).
DEFAULT_SIDE = CHECK_SIDE
#: Keypoints of the first look per image (SIFT's strongest): :meth:`GeometricCheck.check` and
#: :meth:`GeometricCheck.denies` match these.
DEFAULT_FEATURES = 300
#: Keypoints of the *second look* (:meth:`GeometricCheck.confirms`): a pair the first look does not
#: accept is matched again with up to this many keypoints a side (the first look's 300 and the next
#: strongest) when the first look found at least FINE_GATE inliers. Why: a photo that is one tile of a
#: collage, or a part of a screenshot, keeps a quarter to a half of the container's keypoints, and
#: 300 strongest over the whole container leave it too few to confirm. Chosen on bench_dups_heldout's
#: tuning set (pair F1 0.951 with one look of 300): 600 / 800 for every refused pair gave 0.968 /
#: 0.971 (collage recall 0.62 -> 0.83 / 0.88), `dups` 22.2 -> 29.9 / 33.3 s; at 320 px most photos
#: hold fewer than 800 keypoints (checked directly, 1,200 confirmed no more collage, embed or
#: heavy-filter copies than 800).
FINE_FEATURES = 800
#: The second look is taken when the first found at least this many inliers (none: two different
#: pictures, most of the refused pairs). Chosen on the same tuning set: of the 7,060 pairs the first
#: look refused, gates 2 / 3 / 4 / 6 took a second look at 5,825 / 3,199 / 1,373 / 640 of them and kept
#: 20 / 19 / 15 / 15 of the 21 true pairs it saves; pair F1 0.969 / **0.968** / 0.964, `dups` 37.9 /
#: **32.2** / 29.8 s (26.2 s with no second look, same run).
FINE_GATE = 3
#: Lowe's ratio test: a keypoint match counts when its best descriptor distance is below this
#: fraction of the second best.
RATIO = 0.8
#: RANSAC's reprojection error, as a fraction of ``side``.
REPROJECTION = 0.025
#: Inliers a match needs (:meth:`GeometricCheck.accepts`; 12, 15 and 20 scored alike on the tuning set).
DEFAULT_MIN_INLIERS = 12
#: Fraction of an image's textured cells that the inliers must cover, in at least one of the two
#: (chosen on the tuning set: 0.5 / 0.6 gave F1 0.897 / 0.894 with 16 neighbours).
DEFAULT_MIN_COVER = 0.5
#: Share of the descriptor matches that must be inliers (:attr:`Match.inlier_ratio`).
DEFAULT_MIN_RATIO = 0.3
#: Either one image is matched (nearly) all over, or the match is plainly a part of the other image
#: (a photo inside a screenshot or a collage): cover at least FULL_COVER on one side, or at most
#: PART_COVER on the other. Two different images sharing an overlay (the same watermark, the same
#: window chrome) match half of each image and fail both.
FULL_COVER = 0.75
PART_COVER = 0.3
#: How far (a share of the other image's sides) a frame mapped into the other may spill out and still
#: count as lying inside it (:attr:`Match.inside`).
INSIDE_SLACK = 0.1
#: A picture shown inside a larger one (a photo in a screenshot, on a page) confirms when its whole
#: frame maps inside the other, taking at most INSIDE_AREA of it, and the inliers cover at least
#: INSIDE_COVER of the picture itself: the other image's cover does not count, since its chrome,
#: text and margins are textured too (a pasted photo covers 0.3-0.5 of a screenshot, between
#: PART_COVER and FULL_COVER). Chosen on bench_dups_heldout's tuning set (pair F1 0.932 without the
#: rule): areas 0.5 / 0.6 / 0.7 at cover 0.5 gave 0.944 each; covers 0.5 / 0.4 / 0.35 / 0.3 at area 0.6
#: gave 0.944 / 0.948 / 0.949 / 0.950, precision 0.994 each. 0.4 keeps a margin above PART_COVER.
INSIDE_AREA = 0.6
INSIDE_COVER = 0.4
#: A copy shows the picture at most this many times larger or smaller (in ``side``-pixel images).
#: RANSAC also finds degenerate transforms that shrink one image's keypoints onto a few pixels of
#: the other (scale near 0): those are not copies. On the tuning set every true match that was not
#: degenerate lay within 1-2.1x (95%).
MAX_SCALE = 4.0
#: RANSAC runs again without the inliers of a degenerate transform (up to this many runs in all): a
#: patch of repeated keypoints (one spot of one image, many of its descriptors alike) can outvote
#: the true transform, which the matches left over still hold.
RANSAC_TRIES = 3
#: :meth:`GeometricCheck.denies`: below this many inliers (as it is and mirrored) two images that
#: both hold at least DENY_MIN_POINTS keypoints show different pictures. Chosen on the tuning set of
#: bench_dups_heldout: distinct look-alikes matched 0-7 inliers, copies (turned back or mirrored)
#: 9-290; inliers 6 / 8 / 10 gave F1 0.910 / 0.911 / 0.911; points 30 / 50 / 100 left 2 / 2 / 8
#: look-alike singletons grouped.
DENY_INLIERS = 8
DENY_MIN_POINTS = 50
#: The image is cut into GRID x GRID cells to measure cover (4 beat 6 and 8 on the tuning set: a match
#: has tens of inliers, too few to fill finer cells).
GRID = 4
#: Cover counts at least this share of the cells as textured: an image whose keypoints all sit in
#: one or two cells is not "covered" by a match there.
MIN_TEXTURED = 0.5


#: Where each of a SIFT descriptor's 128 values (4 rows x 4 columns x 8 orientation bins) comes from
#: in the descriptor of the same keypoint in the mirror image (:meth:`Keypoints.mirrored`).
_MIRROR_BINS = np.arange(128).reshape(4, 4, 8)[::-1, :, :][:, :, (-np.arange(8)) % 8].reshape(-1)


@dataclass(frozen=True)
class Keypoints:
    """One image's keypoints: positions (n, 2) in a ``size`` image, their descriptors (n, 128),
    strongest first. OpenCV's SIFT descriptors are whole numbers 0-255 held as floats; they are kept
    as uint8 (a quarter of the memory: 100 KB an image at 800 keypoints) and matched as float32."""

    points: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]

    @cached_property
    def _prefixes(self) -> dict[int, Keypoints]:
        return {}

    def strongest(self, n: int) -> Keypoints:
        """The ``n`` strongest keypoints (they are stored strongest first; views, kept per ``n`` so
        that what is derived from them, :attr:`textured`, is computed once per image and look)."""
        if len(self.points) <= n:
            return self
        kept = self._prefixes.get(n)
        if kept is None:
            kept = self._prefixes[n] = Keypoints(self.points[:n], self.descriptors[:n], self.size)
        return kept

    @cached_property
    def textured(self) -> int:
        """How many grid cells hold any of these keypoints."""
        return len(self.cells(self.points))

    def mirrored(self) -> Keypoints:
        """These keypoints as SIFT describes the mirror image, without reading or detecting again.
        Why it holds: a SIFT descriptor is a 4 x 4 grid of 8-bin gradient histograms in the
        keypoint's own frame; mirroring the picture mirrors that frame, so the mirror image's
        descriptor at the mirrored place is this one with the grid's rows reversed and the bins
        reflected (bin o -> -o). OpenCV's first octave doubles the image, so x maps to
        ``width - 0.5 - x``. Checked on real photos: every keypoint SIFT finds in both the picture and
        its mirror image gets the same descriptor this way (a byte apart at most, interpolation);
        SIFT's own run on the mirror finds 50-90% of the same keypoints and some others."""
        points = self.points.copy()
        points[:, 0] = self.size[0] - 0.5 - points[:, 0]
        return Keypoints(points, self.descriptors[:, _MIRROR_BINS], self.size)

    def cells(self, points: np.ndarray) -> set[int]:
        """The grid cells (``GRID`` x ``GRID``) that hold these points."""
        w, h = self.size
        cx = np.clip((points[:, 0] * GRID / max(w, 1)).astype(int), 0, GRID - 1)
        cy = np.clip((points[:, 1] * GRID / max(h, 1)).astype(int), 0, GRID - 1)
        return set((cy * GRID + cx).tolist())


@dataclass(frozen=True)
class Match:
    """How two images' keypoints agree: ``inliers`` under one similarity transform, and the share of
    each image's textured cells (cells holding any keypoint) that the inliers cover."""

    inliers: int
    cover: tuple[float, float]
    matches: int = 0  # ratio-test matches given to the last RANSAC run (a degenerate run's inliers left out)
    scale: float = 1.0  # how much larger the second image shows the picture than the first
    #: Where the transform puts each image's whole frame in the other: the share of the other's area
    #: it takes when it lies inside it (within ``INSIDE_SLACK``), None when it spills out.
    inside: tuple[float | None, float | None] = (None, None)

    @classmethod
    def none(cls) -> Match:
        return cls(0, (0.0, 0.0))

    @property
    def inlier_ratio(self) -> float:
        """Share of the descriptor matches that agree on the transform (low: repeated texture, e.g.
        star fields, where many keypoints look alike and some agree on a transform by chance)."""
        return self.inliers / self.matches if self.matches else 0.0


def _flipped(match: Match) -> Match:
    """The same match seen from the other image."""
    return Match(
        match.inliers,
        (match.cover[1], match.cover[0]),
        match.matches,
        1.0 / max(match.scale, 1e-9),
        (match.inside[1], match.inside[0]),
    )


def _supports(match: Match) -> bool:
    """Whether a match holds any geometry of one picture: a few inliers under a transform of sane
    scale (a degenerate one that shrinks every keypoint onto one spot is no evidence), covering more
    than ``PART_COVER`` of at least one image. Two screenshots of one application match their window
    chrome in place, a tenth to a quarter of each: a shared part, not one picture. (On the tuning set
    of bench_dups_heldout, no cover floor / 0.2 / **0.3** / 0.4 / 0.5 gave F1 0.929 / 0.930 / **0.932** /
    0.930 / 0.929.)"""
    return (
        match.inliers >= DENY_INLIERS and 1.0 / MAX_SCALE <= match.scale <= MAX_SCALE and max(match.cover) > PART_COVER
    )


def _frame_inside(transform: np.ndarray, size: tuple[int, int], other: tuple[int, int]) -> float | None:
    """The share of ``other``'s area that ``size``'s frame takes once mapped by ``transform`` (2 x 3),
    or None when the mapped frame spills out of ``other`` by more than ``INSIDE_SLACK`` of its sides."""
    w, h = size
    ow, oh = other
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64) @ transform.T
    slack_x, slack_y = INSIDE_SLACK * ow, INSIDE_SLACK * oh
    x, y = corners[:, 0], corners[:, 1]
    if x.min() < -slack_x or y.min() < -slack_y or x.max() > ow + slack_x or y.max() > oh + slack_y:
        return None
    scale2 = float(transform[0, 0] ** 2 + transform[1, 0] ** 2)
    return scale2 * w * h / max(ow * oh, 1)


def _inside(
    transform: np.ndarray, size_a: tuple[int, int], size_b: tuple[int, int]
) -> tuple[float | None, float | None]:
    """:attr:`Match.inside` for a transform from image a to image b."""
    forward = np.asarray(transform, dtype=np.float64)
    square = np.vstack([forward, [0.0, 0.0, 1.0]])
    try:
        backward = np.linalg.inv(square)[:2]
    except np.linalg.LinAlgError:
        return (None, None)
    return (_frame_inside(forward, size_a, size_b), _frame_inside(backward, size_b, size_a))


def ratio_matches(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowe's ratio test between two descriptor sets (n, 128) and (m, 128), m >= 2: the rows of ``a``
    whose nearest row of ``b`` lies closer than ``RATIO`` times the second nearest, and those nearest
    rows, in the order of ``a``. The same matches as OpenCV's brute-force ``knnMatch(k=2)`` (checked
    on real keypoints), at half its time: one matrix product for the squared distances, whose
    ``|a|^2`` term is added only to the two kept per row (it does not change which are nearest)."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    d2 = fa @ fb.T
    d2 *= -2.0
    d2 += np.einsum("ij,ij->i", fb, fb)[None, :]
    rows = np.arange(len(fa))
    nearest = d2.argmin(axis=1)
    best = d2[rows, nearest]
    d2[rows, nearest] = np.inf
    second = d2.min(axis=1)
    norms = np.einsum("ij,ij->i", fa, fa)
    best, second = np.maximum(best + norms, 0.0), np.maximum(second + norms, 0.0)
    kept = np.flatnonzero(np.sqrt(best) < RATIO * np.sqrt(second))
    return kept, nearest[kept]


class _OneBlasThread:
    """BLAS on one thread while any thread is inside :func:`one_blas_thread`: the first to enter
    sets the limit, the last to leave restores it. (threadpoolctl's limit is per process: two
    overlapping blocks restored in the wrong order would leave BLAS on one thread for good.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limit = None  # threadpoolctl's limit object while held

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                from threadpoolctl import threadpool_limits

                self._limit = threadpool_limits(limits=1, user_api="blas")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._limit is not None:
                    self._limit.restore_original_limits()
                    self._limit = None


one_blas_thread = _OneBlasThread()


def _sift(features: int):  # type: ignore[no-untyped-def]
    import cv2  # imported here: only --verify needs OpenCV loaded

    return cv2.SIFT_create(nfeatures=features)


class GeometricCheck:
    """Checks candidate pairs of indexed images with local features (module docstring).

    ``check(a, b)`` returns the :class:`Match`; ``confirms(a, b)`` whether it makes them copies.
    ``prepare(records)`` computes keypoints for many records at once on ``workers`` threads
    (OpenCV releases the GIL). ``decoded``/``unreadable`` count images, ``from_index`` those of them
    read from the copies kept in ``stores`` (:mod:`lookalike.imaging.checkpicture`; the indexes the
    records come from) instead of their files, ``mirrored`` the images also checked mirrored
    (:meth:`denies`); ``checked`` counts pairs.
    """

    def __init__(
        self,
        *,
        side: int = DEFAULT_SIDE,
        features: int = DEFAULT_FEATURES,
        fine_features: int | None = FINE_FEATURES,
        fine_gate: int = FINE_GATE,
        min_inliers: int = DEFAULT_MIN_INLIERS,
        min_cover: float = DEFAULT_MIN_COVER,
        min_ratio: float = DEFAULT_MIN_RATIO,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        workers: int = 2,
        stores: Sequence[Store] = (),
    ) -> None:
        if side < 32 or features < 8 or min_inliers < 4 or not 0.0 <= min_cover <= 1.0:
            raise ValueError("side >= 32, features >= 8, min_inliers >= 4 and 0 <= min_cover <= 1")
        if fine_features is not None and fine_features < features:
            raise ValueError("fine_features >= features (None: no second look)")
        self.side, self.features = side, features
        self.fine_features, self.fine_gate = fine_features, fine_gate
        self.min_inliers, self.min_cover, self.min_ratio = min_inliers, min_cover, min_ratio
        self.max_pixels, self.workers = max_pixels, max(1, workers)
        self.stores = tuple(stores)
        self.decoded = self.unreadable = self.checked = self.mirrored = self.second_looks = self.from_index = 0
        self._cache: dict[str, Keypoints | None] = {}
        self._matches: dict[tuple[str, str], Match] = {}
        self._fine: dict[tuple[str, str], Match] = {}
        self._local = threading.local()
        self._lock = threading.Lock()

    def _detector(self):  # type: ignore[no-untyped-def]
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = _sift(self.fine_features or self.features)
        return detector

    def _kept(self, records: Iterable[ItemRecord]) -> dict[str, bytes]:
        """The stores' kept copies of these records' contents (none when they were made at another side)."""
        if not self.stores or self.side != CHECK_SIDE:
            return {}
        wanted = {rec.sha256 for rec in records if not rec.sha256.startswith("picture:")}
        kept: dict[str, bytes] = {}
        for store in self.stores:
            if wanted - kept.keys():
                kept.update(store.pictures(PICTURE_KIND, sorted(wanted - kept.keys())))
        return kept

    def _compute(self, rec: ItemRecord, kept: bytes | None = None) -> Keypoints | None:
        """Keypoints from the kept copy when there is one (a damaged copy falls back to the file)."""
        if kept is not None:
            try:
                image = decode_check_picture(kept)
            except (OSError, ValueError, Image.DecompressionBombError):
                pass
            else:
                with self._lock:
                    self.from_index += 1
                return self._features(image)
        try:
            image = load_image(rec.path, draft_size=self.side, max_pixels=self.max_pixels).image
        except ImageLoadError:
            return None
        return self._features(image)

    def _features(self, image: Image.Image) -> Keypoints:
        grey = check_picture(image, self.side)
        points, descriptors = self._detector().detectAndCompute(np.asarray(grey), None)
        if descriptors is None or len(points) < 4:
            return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), grey.size)
        # strongest first, so that the first look's keypoints are a prefix (what SIFT would keep for
        # ``features``: it keeps the strongest by response)
        order = np.argsort([-p.response for p in points], kind="stable")
        xy = np.asarray([points[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
        kept = np.clip(np.rint(np.asarray(descriptors)[order]), 0, 255).astype(np.uint8)  # lossless: see Keypoints
        return Keypoints(xy, kept, grey.size)

    def prepare(self, records: Iterable[ItemRecord]) -> None:
        """Compute (and cache) the keypoints of these records, ``workers`` at a time."""
        todo: dict[str, ItemRecord] = {}
        for rec in records:
            if rec.sha256 not in self._cache:
                todo.setdefault(rec.sha256, rec)
        if not todo:
            return
        kept = self._kept(todo.values())
        with ThreadPoolExecutor(self.workers) as pool:
            computed = pool.map(lambda rec: self._compute(rec, kept.get(rec.sha256)), todo.values())
            for sha, keypoints in zip(todo, computed, strict=True):
                self._store(sha, keypoints)

    def _store(self, sha: str, keypoints: Keypoints | None) -> None:
        with self._lock:
            self._cache[sha] = keypoints
            if keypoints is None:
                self.unreadable += 1
            else:
                self.decoded += 1

    def picture(self, image: Image.Image, name: str = "<image>") -> ItemRecord:
        """A record standing for a picture that is not in the index (an uploaded sweep example), its
        keypoints cached, so that :meth:`check`, :meth:`confirms` and :meth:`denies` take it on
        either side."""
        digest = hashlib.sha256(image.tobytes()).hexdigest()
        rec = ItemRecord(
            path=name,
            sha256=f"picture:{image.size[0]}x{image.size[1]}:{digest}",
            size=0,
            mtime_ns=0,
            width=image.size[0],
            height=image.size[1],
        )
        if rec.sha256 not in self._cache:
            self._store(rec.sha256, self._features(image))
        return rec

    def keypoints(self, rec: ItemRecord) -> Keypoints | None:
        """This record's keypoints (None: its file could not be read)."""
        if rec.sha256 not in self._cache:
            self._store(rec.sha256, self._compute(rec, self._kept([rec]).get(rec.sha256)))
        return self._cache[rec.sha256]

    def check(self, a: ItemRecord, b: ItemRecord) -> Match:
        """Match two records' keypoints (cached per pair of contents)."""
        flip = a.sha256 > b.sha256
        first, second = (b, a) if flip else (a, b)
        key = (first.sha256, second.sha256)
        match = self._matches.get(key)
        if match is None:
            kf, ks = self.keypoints(first), self.keypoints(second)
            match = (
                Match.none()
                if kf is None or ks is None
                else self._match(kf.strongest(self.features), ks.strongest(self.features))
            )
            match = self._keep(self._matches, key, match)
        return _flipped(match) if flip else match

    def second_look(self, a: ItemRecord, b: ItemRecord) -> Match | None:
        """The match with up to ``fine_features`` keypoints a side (cached per pair of contents), or
        None where it would see nothing new (no second look, or neither image has more keypoints)."""
        if self.fine_features is None:
            return None
        ka, kb = self.keypoints(a), self.keypoints(b)
        if ka is None or kb is None or max(len(ka.points), len(kb.points)) <= self.features:
            return None
        flip = a.sha256 > b.sha256
        key = (b.sha256, a.sha256) if flip else (a.sha256, b.sha256)
        match = self._fine.get(key)
        if match is None:
            first, second = (kb, ka) if flip else (ka, kb)
            match = self._match(first.strongest(self.fine_features), second.strongest(self.fine_features))
            match = self._keep(self._fine, key, match, second_look=True)
        return _flipped(match) if flip else match

    def mirrored_keypoints(self, rec: ItemRecord) -> Keypoints | None:
        """The keypoints of this record's mirror image (SIFT descriptors are not mirror-invariant),
        derived from its own (:meth:`Keypoints.mirrored`)."""
        key = "mirror:" + rec.sha256
        if key not in self._cache:
            own = self.keypoints(rec)
            with self._lock:
                if key not in self._cache:  # another thread may have derived it meanwhile
                    self._cache[key] = None if own is None else own.mirrored()
                    self.mirrored += 1
        return self._cache[key]

    def denies(self, a: ItemRecord, b: ItemRecord) -> bool:
        """Whether the two are plainly *not* the same picture: both hold texture enough to tell
        (``DENY_MIN_POINTS`` keypoints), and no one transform maps even ``DENY_INLIERS`` keypoints of
        one onto the other, as it is or mirrored. Anything else (a match too weak to confirm, an
        unreadable file, a flat image) does not deny: the similarity rule's call stands. A
        degenerate transform (scale beyond ``MAX_SCALE``) is no support."""
        ka, kb = self.keypoints(a), self.keypoints(b)
        if ka is None or kb is None or min(len(ka.points), len(kb.points)) < DENY_MIN_POINTS:
            return False
        if _supports(self.check(a, b)):
            return False
        key = (a.sha256, "mirror:" + b.sha256)
        match = self._matches.get(key)
        if match is None:
            kb_mirror = self.mirrored_keypoints(b)
            match = (
                Match.none()
                if kb_mirror is None
                else self._match(ka.strongest(self.features), kb_mirror.strongest(self.features))
            )
            match = self._keep(self._matches, key, match)
        return not _supports(match)

    def _keep(
        self, cache: dict[tuple[str, str], Match], key: tuple[str, str], match: Match, second_look: bool = False
    ) -> Match:
        """Cache a pair's match and count it once (two threads may have matched the same pair)."""
        with self._lock:
            if key in cache:
                return cache[key]
            cache[key] = match
            if second_look:
                self.second_looks += 1
            else:
                self.checked += 1
            return match

    def confirms_all(self, pairs: Iterable[tuple[ItemRecord, ItemRecord]]) -> list[bool]:
        """:meth:`confirms` for many pairs, ``workers`` at a time (the same answers, cached alike)."""
        return self._all(self.confirms, list(pairs))

    def denies_all(self, pairs: Iterable[tuple[ItemRecord, ItemRecord]]) -> list[bool]:
        """:meth:`denies` for many pairs, ``workers`` at a time (the same answers, cached alike)."""
        return self._all(self.denies, list(pairs))

    def _all(
        self, ask: Callable[[ItemRecord, ItemRecord], bool], pairs: list[tuple[ItemRecord, ItemRecord]]
    ) -> list[bool]:
        """Why threads: the ratio test's matrix product, RANSAC and numpy's reductions release the
        GIL, so two threads check pairs at 1.6-1.8x the rate of one. BLAS runs one thread meanwhile:
        at 300 x 300 its own threads cost more than they give (0.38 ms a product on one, 0.56 on two)."""
        if not pairs:
            return []
        self.prepare(r for pair in pairs for r in pair)
        with one_blas_thread():
            if self.workers == 1 or len(pairs) == 1:
                return [ask(a, b) for a, b in pairs]
            with ThreadPoolExecutor(self.workers) as pool:
                return list(pool.map(lambda pair: ask(*pair), pairs))

    def confirms(self, a: ItemRecord, b: ItemRecord) -> bool:
        """Whether the two records show the same picture: :meth:`accepts` their :class:`Match`, or
        failing that, where the first look found at least ``fine_gate`` inliers, the
        :meth:`second_look`'s (a photo that is a part of a collage or a screenshot)."""
        first = self.check(a, b)
        if self.accepts(first):
            return True
        if first.inliers < self.fine_gate:
            return False
        fine = self.second_look(a, b)
        return fine is not None and self.accepts(fine)

    def accepts(self, match: Match) -> bool:
        """The rule: enough inliers, most descriptor matches among them, a sane scale, and one image
        covered: at least ``min_cover`` and either nearly all of it or plainly a part of the other,
        or (a picture lying inside the other) at least ``INSIDE_COVER`` of it."""
        high, low = max(match.cover), min(match.cover)
        if not (
            match.inliers >= self.min_inliers
            and match.inlier_ratio >= self.min_ratio
            and 1.0 / MAX_SCALE <= match.scale <= MAX_SCALE
        ):
            return False
        if high >= self.min_cover and (high >= FULL_COVER or low <= PART_COVER):
            return True
        return any(
            area is not None and area <= INSIDE_AREA and cover >= INSIDE_COVER
            for area, cover in zip(match.inside, match.cover, strict=True)
        )

    def _match(self, ka: Keypoints, kb: Keypoints) -> Match:
        import cv2

        if len(ka.points) < 4 or len(kb.points) < 4:
            return Match.none()
        query, train = ratio_matches(ka.descriptors, kb.descriptors)
        if len(query) < 4:
            return Match(0, (0.0, 0.0), len(query))
        src, dst = ka.points[query], kb.points[train]
        for tries_left in range(RANSAC_TRIES - 1, -1, -1):
            transform, mask = cv2.estimateAffinePartial2D(
                src, dst, method=cv2.RANSAC, ransacReprojThreshold=REPROJECTION * self.side
            )
            if mask is None or transform is None:
                return Match(0, (0.0, 0.0), len(src))
            keep = mask.ravel().astype(bool)
            scale = float(np.hypot(transform[0, 0], transform[1, 0]))
            if 1.0 / MAX_SCALE <= scale <= MAX_SCALE or not tries_left or len(src) - int(keep.sum()) < 4:
                break
            src, dst = src[~keep], dst[~keep]  # a degenerate transform: look again without its points
        inliers = int(keep.sum())
        floor = GRID * GRID * MIN_TEXTURED
        cover = (
            len(ka.cells(src[keep])) / max(floor, ka.textured),
            len(kb.cells(dst[keep])) / max(floor, kb.textured),
        )
        return Match(inliers, cover, len(src), scale, _inside(transform, ka.size, kb.size))
