"""Duplicate groups: exact copies by sha256, near-duplicates from a k-nearest-neighbour graph.

Scale: the graph is built block by block (a few hundred to 4,096 query rows times all vectors, then
``argpartition`` for the top k), so memory is O(N·d + block·N), never N x N. Past
``EXACT_GRAPH_LIMIT`` items it asks the store's ANN index instead.

Chaining: single-linkage grouping ("connected components of the similarity graph") glues A~B and
B~C into one group even when A and C are unrelated, and on a large collection it grows giant
clusters. We use *anchored* groups instead: every group has an anchor, and a member joins only if it
is within the threshold **of the anchor itself**, so a group's diameter is bounded by two hops
through the anchor. ``linkage="complete"`` is stricter: a member joins only if it is within the
threshold of *every* member already in the group.

Which item anchors: the most *central* one, i.e. the one with the most neighbours above the
threshold (then the highest summed similarity to them). The copy to keep is chosen afterwards, among
the group's members, by the keep rule. Anchoring on the kept copy instead (the one with most pixels)
measured worse (bench/bench_neardup.py): the copy with most pixels is often an edited one (a border
added, a rotation that expanded the canvas), and the other copies were then judged against that
edit instead of against the unedited picture at the centre of the family.

Density margin (the default for ``mobilenet_v2`` and ``mobilenet_v2_ml``): a fixed cosine threshold cannot serve both a
sparse region (different photos at 0.6) and a dense one (upscaled 28-px product shots that the CNN
sees as nearly all alike, 0.85-0.95 to each other). As in copy-detection score normalisation, a pair
(i, j) with score s is accepted only if ``s >= threshold`` and ``s >= max(ref_i, ref_j) + margin``,
where ``ref_i`` is i's k-th-nearest-neighbour score (k = 16): a copy stands out from the crowd around
it, a look-alike in a crowd of look-alikes does not. Families with more than k copies would make the
k-th neighbour a copy itself, so each image's reference skips past its ``sure`` (>= 0.95) neighbours
(the k-th neighbour *after* them, counting at most k of them), and scores ``>= bypass`` (0.98) always
pair. With
fewer than k other images there is no crowd to measure: the reference is then the threshold itself
(a pair needs ``threshold + margin``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from lookalike.dedup.keep import DEFAULT_KEEP, keep_key
from lookalike.imaging.checkpicture import VERIFIED_UP_TO
from lookalike.models.registry import model_settings
from lookalike.store.base import ItemRecord, Store, VectorRows
from lookalike.store.vector_index import AUTO_EXACT_LIMIT

#: Neighbours at or above this are taken for copies when measuring an image's crowd: its reference is
#: the k-th neighbour *after* them (big families would otherwise fail their own margin).
DEFAULT_SURE = 0.95
#: Scores at or above this always pair (families bigger than 2k of near-identical copies). Measured on
#: bench_neardup's full set: a bypass at 0.95 let look-alike distractors through (precision 0.92 vs
#: 0.98); at 0.97-0.98 it changed nothing there.
DEFAULT_BYPASS = 0.98
DEFAULT_K = 16
#: Above this many distinct contents ``method='auto'`` asks the store's ANN index (the same switch
#: point as the store's own ``auto`` index: exact search costs O(N²·d) and 100k items took > 20 min).
EXACT_GRAPH_LIMIT = AUTO_EXACT_LIMIT
LINKAGES = ("anchor", "complete")
_BLOCK_BYTES = 128 * 1024 * 1024


class PairCheck(Protocol):
    """A second opinion on candidate pairs (:class:`lookalike.dedup.verify.GeometricCheck`)."""

    def prepare(self, records: Sequence[ItemRecord]) -> None: ...

    def confirms(self, a: ItemRecord, b: ItemRecord) -> bool: ...

    def denies(self, a: ItemRecord, b: ItemRecord) -> bool: ...

    def confirms_all(self, pairs: Iterable[tuple[ItemRecord, ItemRecord]]) -> list[bool]: ...

    def denies_all(self, pairs: Iterable[tuple[ItemRecord, ItemRecord]]) -> list[bool]: ...


#: Extra views of some records (e.g. their quarter turns, :class:`lookalike.dedup.turns.TurnedViews`):
#: record id -> ``(m, d)`` unit vectors.
ViewProvider = Callable[[Sequence[ItemRecord]], dict[int, np.ndarray]]


def default_margin(model_name: str | None) -> float:
    """The density margin used by default for this model's vectors (0: plain threshold)."""
    return model_settings(model_name).dup_margin


#: Geometric verification is on by default (for models with a ``verified_margin``) up to this many
#: distinct contents: it re-reads most grouped images (bench_dups_heldout: ~950 of 1,300, 15-31 s on
#: 2 cores), which past this size costs many minutes; ``verify=True`` asks for it at any size.
VERIFY_AUTO_LIMIT = VERIFIED_UP_TO


def verify_by_default(model_name: str | None, n_contents: int) -> bool:
    """Whether ``dups`` checks candidate pairs point for point unless told (see :data:`VERIFY_AUTO_LIMIT`)."""
    return model_settings(model_name).verified_margin is not None and n_contents <= VERIFY_AUTO_LIMIT


def pair_check_for(
    model_name: str | None,
    verify: PairCheck | bool | None,
    *,
    within_limit: bool = True,
    stores: Sequence[Store] = (),
) -> PairCheck | None:
    """The check a face runs (``sweep``, ``check``): ``verify`` itself when it is a check, a default
    :class:`lookalike.dedup.verify.GeometricCheck` for True, none for False; None asks for a default
    one for models whose rule was measured with it (``verified_margin``), when ``within_limit``.
    A default check reads the pictures kept in ``stores`` (the indexes the records come from)."""
    if verify is None:
        verify = model_settings(model_name).verified_margin is not None and within_limit
    if verify is False:
        return None
    if verify is True:
        from lookalike.dedup.verify import GeometricCheck

        return GeometricCheck(stores=stores)
    return verify


def default_rule(model_name: str | None, *, verify: bool) -> tuple[float, float, float]:
    """``(threshold, margin, leftover margin)`` of the duplicate rule by default, with or without
    geometric verification: with it, the model's ``verified_margin`` (stricter: the check recovers
    the hard copies it leaves out), and the second chance keeps the plain margin."""
    settings = model_settings(model_name)
    plain = settings.dup_margin
    margin = settings.verified_margin if verify and settings.verified_margin is not None else plain
    return settings.duplicate_threshold(margin), margin, plain


def resolve_rule(
    model_name: str | None,
    n_contents: int,
    *,
    threshold: float | None = None,
    margin: float | None = None,
    leftover_margin: float | None = None,
    verify: bool | None = None,
) -> tuple[float, float, float, bool]:
    """``(threshold, margin, leftover margin, verify)`` with every unset value filled in as
    :func:`find_duplicate_groups` fills it (faces call this to show the rule they ran)."""
    if verify is None:
        verify = verify_by_default(model_name, n_contents)
    _, default_m, plain = default_rule(model_name, verify=verify)
    if margin is None:
        margin = default_m
        leftover_margin = plain if leftover_margin is None else leftover_margin
    elif leftover_margin is None:
        leftover_margin = margin
    if threshold is None:
        threshold = default_threshold(model_name, margin)
    return threshold, margin, leftover_margin, verify


def default_threshold(model_name: str | None, margin: float | None = None) -> float:
    """The near-duplicate threshold for vectors of this model (its ``ModelSettings``, measured with
    bench/bench_neardup.py; see docs/cleaning.md).

    ``margin`` None means the model's default margin. With a margin > 0 the threshold is the looser one
    measured together with the margin rule (0.80 for mobilenet_v2); with margin 0, the plain one (0.86).
    """
    return model_settings(model_name).duplicate_threshold(margin)


@dataclass
class DupGroup:
    """One picture's copies: the one to keep and the others, each with its similarity to the kept one."""

    keep: ItemRecord
    duplicates: list[ItemRecord] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "keep": self.keep.path,
            "duplicates": [d.path for d in self.duplicates],
            "scores": [round(float(s), 4) for s in self.scores],
        }


# -- the k-NN graph ---------------------------------------------------------------------------------
def _top_lists(
    top: np.ndarray,
    cols: np.ndarray,
    rows: np.ndarray,
    k: int,
    threshold: float,
    sure: float,
    refs: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From per-row neighbour lists sorted best first (``-inf`` padded): edges and reference scores.

    A row keeps its ``sure`` neighbours (at most k) plus k more as edges, and its reference is the
    score just after them: the k-th neighbour not counted as sure. Writes ``refs[rows]`` when given.
    """
    n_sure = np.minimum(np.sum(top >= sure, axis=1), k) if np.isfinite(sure) else np.zeros(len(top), dtype=np.int64)
    width = top.shape[1]
    if refs is not None:
        at = k - 1 + n_sure
        inside = at < width
        ref = np.full(len(top), np.nan, dtype=np.float32)  # nan: fewer neighbours than needed (set by caller)
        ref[inside] = top[np.flatnonzero(inside), at[inside]]
        refs[rows] = ref
    rank = np.arange(width)[None, :]
    mask = (rank < (k + n_sure)[:, None]) & (top >= threshold)
    return np.broadcast_to(rows[:, None], top.shape)[mask], cols[mask], top[mask]


def knn_edges(
    vectors: np.ndarray,
    k: int,
    threshold: float,
    block_rows: int | None = None,
    *,
    refs: np.ndarray | None = None,
    floor: float | None = None,
    sure: float = np.inf,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(rows, cols, scores)`` of each row's top-k neighbours (itself excluded) scoring >= threshold.

    Exact (matrix products), in blocks sized so one block of scores stays under ~256 MB.
    For the density margin, pass ``refs`` (float array, one per row) to receive each row's reference
    score (its k-th neighbour after its ``sure`` ones; ``-inf`` when that is below ``floor``, NaN when
    the collection has too few rows); neighbours scoring ``>= sure`` are then edges beyond the top k.
    """
    n = len(vectors)
    if refs is not None:
        refs[:] = np.nan
    if n < 2:
        return
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if n - 1 < k:  # fewer than k other rows: no k-th neighbour, references stay NaN
        refs = None
    k = min(k, n - 1)
    floor = threshold if floor is None else min(floor, threshold)
    width = min(n - 1, 2 * k if np.isfinite(sure) else k)  # neighbours kept per row
    block = block_rows or max(16, min(4096, _BLOCK_BYTES // (4 * n)))
    for start in range(0, n, block):
        stop = min(n, start + block)
        scores = vectors[start:stop] @ vectors.T
        local = np.arange(stop - start)
        scores[local, start + local] = -np.inf
        # Scores above a near-duplicate floor are rare: filter first, then keep each row's best ones.
        # (argpartition over the whole block would cost more than the matrix product.)
        rows, cols = np.nonzero(scores >= floor)
        if len(rows) > 8 * width * (stop - start):  # a dense block (look-alike crowds): partition instead
            cols = (
                np.argpartition(-scores, width - 1, axis=1)[:, :width]
                if width < n - 1
                else np.tile(np.arange(n), (len(local), 1))
            )
            top = np.take_along_axis(scores, cols, axis=1)
            order = np.argsort(-top, axis=1, kind="stable")[:, :width]
            top, cols = np.take_along_axis(top, order, axis=1), np.take_along_axis(cols, order, axis=1)
        else:
            vals = scores[rows, cols]
            order = np.lexsort((-vals, rows))
            rows, cols, vals = rows[order], cols[order], vals[order]
            rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
            keep = rank < width
            top = np.full((stop - start, width), -np.inf, dtype=np.float32)
            top_cols = np.zeros((stop - start, width), dtype=np.int64)
            top[rows[keep], rank[keep]] = vals[keep]
            top_cols[rows[keep], rank[keep]] = cols[keep]
            cols = top_cols
        top[top < floor] = -np.inf
        yield _top_lists(top, cols, start + local, k, threshold, sure, refs)


def ann_edges(
    store: Store,
    ids: np.ndarray,
    vectors: np.ndarray | VectorRows,
    k: int,
    threshold: float,
    block_rows: int = 4096,
    *,
    refs: np.ndarray | None = None,
    floor: float | None = None,
    sure: float = np.inf,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Like :func:`knn_edges` but through ``store.search`` (its ANN index): for millions of items."""
    if refs is not None:
        refs[:] = np.nan
    n = len(ids)
    if n < 2:
        return
    if n - 1 < k:
        refs = None
    k = min(k, n - 1)
    floor = threshold if floor is None else min(floor, threshold)
    width = min(n - 1, 2 * k if np.isfinite(sure) else k)
    row_of = {int(i): r for r, i in enumerate(ids)}
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        hits = store.search(vectors[start:stop], width + 1)
        top = np.full((stop - start, width), -np.inf, dtype=np.float32)
        cols = np.zeros((stop - start, width), dtype=np.int64)
        for offset, row_hits in enumerate(hits):
            me = start + offset
            found = [(row_of[h.id], h.score) for h in row_hits if h.id in row_of and row_of[h.id] != me]
            found.sort(key=lambda cs: -cs[1])
            for j, (col, score) in enumerate(found[:width]):
                if score >= floor:
                    top[offset, j], cols[offset, j] = score, col
        yield _top_lists(top, cols, np.arange(start, stop), k, threshold, sure, refs)


def adjacency(edges: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[int, dict[int, float]]:
    """Symmetric neighbour lists (top-k is not symmetric: B may be in A's top-k but not A in B's)."""
    adj: dict[int, dict[int, float]] = defaultdict(dict)
    for rows, cols, scores in edges:
        for r, c, s in zip(rows.tolist(), cols.tolist(), scores.tolist(), strict=True):
            adj[r][c] = s
            adj[c][r] = s
    return adj


def margin_filter(
    adj: dict[int, dict[int, float]],
    refs: np.ndarray,
    margin: float,
    threshold: float,
    bypass: float = DEFAULT_BYPASS,
) -> dict[int, dict[int, float]]:
    """Keep the edges that stand out from both ends' crowds: ``s >= bypass`` or ``s >= max(ref) + margin``.

    ``refs`` from :func:`knn_edges`: ``-inf`` (crowd below the floor) always passes, NaN (collection
    too small to measure a crowd) counts as the threshold itself.
    """
    ref = np.where(np.isnan(refs), threshold, refs)
    out: dict[int, dict[int, float]] = defaultdict(dict)
    for i, neighbours in adj.items():
        for j, score in neighbours.items():
            if score >= bypass or score >= max(ref[i], ref[j]) + margin - 1e-6:
                out[i][j] = score
    return out


# -- grouping ---------------------------------------------------------------------------------------
def central_order(adj: dict[int, dict[int, float]], n: int) -> np.ndarray:
    """Rows most-central-first: most neighbours above the threshold, then highest summed similarity.

    Ties (and rows without neighbours) keep their index order, which callers make best-copy-first.
    """
    degree = np.zeros(n, dtype=np.int64)
    strength = np.zeros(n, dtype=np.float64)
    for row, neighbours in adj.items():
        degree[row] = len(neighbours)
        strength[row] = sum(neighbours.values())
    return np.lexsort((np.arange(n), -strength, -degree))


def anchored_groups(
    order: np.ndarray | list[int],
    adj: dict[int, dict[int, float]],
    *,
    vectors: np.ndarray | VectorRows | None = None,
    threshold: float = 0.0,
    linkage: str = "anchor",
    forbidden: set[tuple[int, int]] | None = None,
) -> list[tuple[int, list[tuple[int, float]]]]:
    """Group rows without chaining. ``order``: candidate anchors, best first (see :func:`central_order`).

    Returns ``(anchor, [(member, similarity to the anchor)])``; every member is within the threshold
    of its anchor (the adjacency only holds such edges).
    ``forbidden`` holds row pairs ``(min, max)`` marked "not a duplicate": they never share a group.
    ``linkage="complete"`` needs ``vectors`` to check each candidate against every member.
    """
    if linkage not in LINKAGES:
        raise ValueError(f"unknown linkage {linkage!r}; choose one of {', '.join(LINKAGES)}")
    if linkage == "complete" and vectors is None:
        raise ValueError("complete linkage needs the vectors")
    forbidden = forbidden or set()
    assigned: set[int] = set()
    groups: list[tuple[int, list[tuple[int, float]]]] = []
    for anchor in (int(a) for a in order):
        if anchor in assigned or anchor not in adj:
            continue
        candidates = sorted(
            ((j, s) for j, s in adj[anchor].items() if j not in assigned), key=lambda js: (-js[1], js[0])
        )
        members: list[tuple[int, float]] = []
        for j, score in candidates:
            if any((min(j, m), max(j, m)) in forbidden for m in [anchor, *(m for m, _ in members)]):
                continue
            if linkage == "complete" and members:
                others = np.asarray([m for m, _ in members])
                if float(np.min(vectors[others] @ vectors[j])) < threshold:  # type: ignore[index]
                    continue
            members.append((j, score))
        if members:
            assigned.add(anchor)
            assigned.update(m for m, _ in members)
            groups.append((anchor, members))
    return groups


def attach_leftovers(
    clusters: list[tuple[int, list[tuple[int, float]]]],
    adj: dict[int, dict[int, float]],
    refs: np.ndarray | None,
    threshold: float,
    *,
    margin: float = 0.0,
    forbidden: set[tuple[int, int]] | None = None,
) -> int:
    """Second chance: attach each ungrouped row to the group of its best grouped neighbour.

    Why: the density margin asks a pair to beat *both* ends' crowds, and an original with many
    edited copies counts its own copies in its crowd, so its hard copies (quarter turns, borders)
    fail the margin against it and are left alone although they score above the threshold. A
    leftover ``i`` joins the group of its best neighbour ``j`` (``adj``: edges before the margin,
    all ``>= threshold``) when ``s >= ref_i + margin``: the pair still has to stand out from the
    leftover's own crowd, only ``j``'s crowd (full of ``j``'s copies) is not asked. One pass, and
    only onto rows grouped by :func:`anchored_groups` (no chains through attached rows). Updates
    ``clusters`` in place; returns how many rows were attached.
    """
    forbidden = forbidden or set()
    group_of: dict[int, int] = {}
    for g, (anchor, members) in enumerate(clusters):
        group_of[anchor] = g
        group_of.update((m, g) for m, _ in members)
    ref = None if refs is None else np.where(np.isnan(refs), threshold, refs)
    attached: list[tuple[int, int, float]] = []
    for i in sorted(adj):
        if i in group_of:
            continue
        bar = threshold if ref is None else max(threshold, float(ref[i]) + margin - 1e-6)
        for j, score in sorted(adj[i].items(), key=lambda js: (-js[1], js[0])):
            if score < bar:
                break
            g = group_of.get(j)
            if g is None:
                continue
            anchor, members = clusters[g]
            if any((min(i, m), max(i, m)) in forbidden for m in [anchor, *(m for m, _ in members)]):
                continue
            attached.append((g, i, score))
            break
    for g, i, score in attached:
        clusters[g][1].append((i, score))
    return len(attached)


def view_neighbours(
    views: dict[int, np.ndarray],
    vectors: np.ndarray | VectorRows,
    k: int,
    *,
    store: Store | None = None,
    ids: np.ndarray | None = None,
) -> dict[int, tuple[list[tuple[int, float, float]], float]]:
    """For each row's extra views: its best rows ``(row, score, gain)`` and its crowd reference.

    ``score`` is the best view's; ``gain`` how much it beats the plain vectors' score of the pair
    (a turned copy matches its original far better turned; a look-alike does not).

    The reference is the k-th best row score (NaN with fewer than k + 1 other rows), so a turned
    view must stand out from the crowd around *it*, as the margin rule asks of every pair. Exact
    (matrix products) unless ``store`` and ``ids`` are given: then ``store.search`` (its ANN index).
    """
    out: dict[int, tuple[list[tuple[int, float, float]], float]] = {}
    n = len(vectors)
    width = min(n - 1, 2 * k)
    if width < 1:
        return out
    row_of = {int(i): r for r, i in enumerate(ids)} if ids is not None else {}
    matrix = np.asarray(vectors[:], dtype=np.float32) if store is None and views else None
    for row, vecs in views.items():
        if store is not None and ids is not None:
            best: dict[int, float] = {}
            for hits in store.search(np.asarray(vecs, dtype=np.float32), width + 1):
                for h in hits:
                    r = row_of.get(h.id)
                    if r is not None and r != row and h.score > best.get(r, -np.inf):
                        best[r] = float(h.score)
            ranked = sorted(best.items(), key=lambda rs: (-rs[1], rs[0]))[:width]
        else:
            scores = np.max(np.asarray(vecs, dtype=np.float32) @ matrix.T, axis=0)  # type: ignore[union-attr]
            scores[row] = -np.inf
            top = np.argpartition(-scores, width - 1)[:width] if width < n - 1 else np.arange(n)
            ranked = sorted(((int(c), float(scores[c])) for c in top if c != row), key=lambda rs: (-rs[1], rs[0]))
        ref = ranked[k - 1][1] if len(ranked) >= k and n - 1 > k else float("nan")
        cols = [c for c, _ in ranked]
        plain = (vectors[np.asarray(cols, dtype=np.int64)] @ vectors[row]).tolist() if cols else []
        out[row] = ([(c, sc, sc - p) for (c, sc), p in zip(ranked, plain, strict=True)], ref)
    return out


#: How much a turned view must beat the plain vectors' score of the same pair (``views``). Chosen on
#: the tuning set of bench/bench_dups_heldout.py (``--turns``): gain 0 / 0.03 / 0.06 / 0.10 gave F1
#: 0.855 / 0.856 / 0.855 / 0.852 and precision 0.962 / 0.966 / 0.970 / 0.970: the precision plateau.
DEFAULT_TURN_GAIN = 0.06
#: ``views`` are also embedded for the members of groups this small: the quarter turns of one
#: picture (90 and 270, which the model sees alike) often form a group of their own beside the
#: original's group, and a turned view of one of them merges the two.
SMALL_GROUP = 3


def attach_turned(
    clusters: list[tuple[int, list[tuple[int, float]]]],
    neighbours: dict[int, tuple[list[tuple[int, float, float]], float]],
    threshold: float,
    *,
    margin: float = 0.0,
    gain: float = 0.0,
    forbidden: set[tuple[int, int]] | None = None,
) -> int:
    """Pair rows through their extra views: a leftover joins its match's group (or pairs with it), a
    small group (:data:`SMALL_GROUP`) merges into its match's group when that one is no smaller.

    A view's best row ``j`` (score ``s``) outside the row's own group is accepted when ``s >=
    threshold`` and ``s >= ref + margin`` (``ref``: the view's own crowd, see
    :func:`view_neighbours`). Best scores first, and no chains through rows moved in this pass.
    Edits ``clusters`` in place (merged groups are left empty, callers skip them); returns moves.
    """
    forbidden = forbidden or set()
    group_of: dict[int, int] = {}
    for g, (anchor, members) in enumerate(clusters):
        group_of[anchor] = g
        group_of.update((m, g) for m, _ in members)

    def rows_of(g: int) -> list[int]:
        anchor, members = clusters[g]
        return [anchor, *(m for m, _ in members)]

    moved: set[int] = set()
    candidates = sorted(
        ((ranked[0][1], row) for row, (ranked, _) in neighbours.items() if ranked), key=lambda sr: (-sr[0], sr[1])
    )
    count = 0
    for _, row in candidates:
        if row in moved:
            continue
        ranked, ref = neighbours[row]
        mine = group_of.get(row)
        own = [row] if mine is None else rows_of(mine)
        bar = max(threshold, (threshold if np.isnan(ref) else ref) + margin - 1e-6)
        for j, score, better in ranked:
            if score < bar:
                break
            if j in moved or j in own or better < gain:
                continue
            g = group_of.get(j)
            target = [j] if g is None else rows_of(g)
            if mine is not None and (g is None or len(target) < len(own)):
                continue  # a group only merges into a group at least as big
            if any((min(a, b), max(a, b)) in forbidden for a in own for b in target):
                continue
            if g is None:
                clusters.append((j, []))
                g = len(clusters) - 1
                group_of[j] = g
            if mine is not None:
                clusters[mine] = (clusters[mine][0], [])
            for r in own:
                clusters[g][1].append((r, score if r == row else float("nan")))
                group_of[r] = g
                moved.add(r)
            count += len(own)
            break
    for g, (anchor, members) in enumerate(clusters):  # drop rows that moved on
        clusters[g] = (anchor, [(m, s) for m, s in members if m != anchor and group_of.get(m) == g])
    return count


#: ``verify``: candidate pairs for the geometric check are each row's ``VERIFY_K`` nearest rows
#: scoring at least ``VERIFY_FLOOR`` (a quarter-turned copy can score 0.5-0.7 against its original;
#: a photo pasted into a screenshot ranks 50-190th among other screenshots, which share the chrome).
#: Chosen on bench_dups_heldout's tuning set: with the first rules k 12 / 16 / 24 gave F1 0.891 /
#: 0.897 / 0.897; with the rules as shipped (deny step, margin 0.10) 16 / 24 / 32 / 48 / **64** / 96 gave
#: 0.910 / 0.918 / 0.920 / 0.925 / **0.929** / 0.930 at precision 0.994 each, `dups` 18.3 s at 16 and
#: 25.7 s at 64 (the same images read, more pairs matched); floors 0.4-0.6 changed nothing there.
VERIFY_K = 64
VERIFY_FLOOR = 0.5


#: ``verify``: a member that joined its group's anchor below this score is checked against the
#: anchor, and leaves the group when the check *denies* they show one picture
#: (:func:`drop_denied`). Copies mostly score above it, distinct look-alikes of a homogeneous
#: collection (photos of fish on the sea bed) at 0.70-0.92. Chosen on bench_dups_heldout's tuning
#: set: below 0.85 / 0.90 / 0.95 gave F1 0.909 / 0.911 / 0.911 (no check: 0.905); of the two ties,
#: 0.95 (the ``sure`` score) also parts two GCompris fish photos at 0.923 (tests/test_dups_hard_copies.py,
#: tuning-side photos), for 996 images re-read instead of 678.
DENY_BELOW = DEFAULT_SURE


def drop_denied(
    clusters: list[tuple[int, list[tuple[int, float]]]],
    denies: Callable[[int, int], bool],
    *,
    below: float | None = None,
    prepare: Callable[[set[int]], None] | None = None,
    precheck: Callable[[list[tuple[int, int]]], object] | None = None,
) -> int:
    """Take out of each group the members scoring below ``below`` whose pair with the anchor
    ``denies(anchor, member)`` (e.g. no local features agree: two different fish photos). Why:
    in a collection of one kind of picture, distinct photos can score as high as copies and stand
    out from a crowd of other kinds, so no similarity rule keeps them apart; points do. Members with
    an unknown score (NaN) are left alone. ``precheck(pairs)``, when given, is called once with
    every pair to be asked (to check them in parallel before they are asked one by one). Edits
    ``clusters`` in place; returns how many left.
    """
    below = DENY_BELOW if below is None else below
    asked = [(anchor, m) for anchor, members in clusters for m, score in members if score < below]
    if not asked:
        return 0
    if prepare is not None:
        prepare({r for pair in asked for r in pair})
    if precheck is not None:
        precheck(asked)
    out = {pair for pair in asked if denies(*pair)}
    for g, (anchor, members) in enumerate(clusters):
        clusters[g] = (anchor, [(m, sc) for m, sc in members if (anchor, m) not in out])
    return len(out)


#: :func:`merge_verified` announces this many candidate pairs at a time to ``precheck``: enough to
#: keep two threads busy, few enough that merges among them leave little checked in vain (on the
#: 1,000 photos of bench_e2e, 64 at a time checked 7,983 pairs where one by one checked 7,962).
PRECHECK_AHEAD = 64


def merge_verified(
    clusters: list[tuple[int, list[tuple[int, float]]]],
    candidates: Iterable[tuple[int, int, float]],
    confirms: Callable[[int, int], bool],
    *,
    n: int,
    prepare: Callable[[set[int]], None] | None = None,
    precheck: Callable[[list[tuple[int, int]]], object] | None = None,
    forbidden: set[tuple[int, int]] | None = None,
) -> int:
    """Merge groups (and lone rows) whose candidate pair ``confirms(i, j)`` (e.g. a geometric check).

    Units are the groups of ``clusters`` (named by their anchor) and every other row of the ``n``.
    Candidate pairs ``(i, j, score)`` only say which units to compare, best score first: what is
    checked is the two units' *anchors*, once per pair of units. Why anchors: a candidate pair
    can share a part without being copies (two screenshots' window chrome), and a check between two
    members would then glue two whole families together; the anchors are the pictures the groups
    are about. A confirmed pair merges the smaller unit into the larger (keeping its anchor), so a
    family split by the similarity rule (its quarter turns in a group of their own) becomes one
    group again. ``prepare(rows)`` is called once with the anchors to check (to decode them in
    parallel). ``precheck(pairs)``, when given, is called with the next ``PRECHECK_AHEAD`` pairs of
    anchors to be asked (to check them in parallel; a merge among them may leave a few unasked, and
    asks a pair it did not announce). Edits ``clusters`` in place (merged groups are left
    empty; new groups appended); returns how many rows moved.
    """
    forbidden = forbidden or set()
    unit_of = list(range(n))
    rows_in: dict[int, list[int]] = {r: [r] for r in range(n)}
    for anchor, members in clusters:
        rows = [anchor, *(m for m, _ in members)]
        for r in rows:
            unit_of[r] = anchor
        rows_in[anchor] = rows
        for r in rows[1:]:
            rows_in.pop(r, None)
    best: dict[tuple[int, int], tuple[float, int, int]] = {}
    for i, j, score in candidates:
        a, b = unit_of[i], unit_of[j]
        if a == b:
            continue
        key = (min(a, b), max(a, b))
        if key not in best or score > best[key][0]:
            best[key] = (score, i, j)
    order = sorted(best.values(), key=lambda sij: (-sij[0], sij[1], sij[2]))
    if prepare is not None and order:
        prepare({unit_of[r] for _, i, j in order for r in (i, j)})
    moved = 0
    checked: set[tuple[int, int]] = set()
    for at, (_, i, j) in enumerate(order):
        if precheck is not None and at % PRECHECK_AHEAD == 0:
            ahead: dict[tuple[int, int], tuple[int, int]] = {}
            for _, x, y in order[at : at + PRECHECK_AHEAD]:
                u, v = unit_of[x], unit_of[y]
                if u != v and (min(u, v), max(u, v)) not in checked:
                    ahead.setdefault((min(u, v), max(u, v)), (u, v))
            precheck(list(ahead.values()))
        a, b = unit_of[i], unit_of[j]
        if a == b or (min(a, b), max(a, b)) in checked:
            continue
        checked.add((min(a, b), max(a, b)))
        if any((min(x, y), max(x, y)) in forbidden for x in rows_in[a] for y in rows_in[b]):
            continue
        if not confirms(a, b):  # the units' anchors, not the pair that brought them together
            continue
        # the larger unit absorbs the smaller; on a tie the lower row (callers sort best copy first)
        big, small = (a, b) if (-len(rows_in[a]), a) <= (-len(rows_in[b]), b) else (b, a)
        joining = rows_in.pop(small)
        for r in joining:
            unit_of[r] = big
        rows_in[big].extend(joining)
        moved += len(joining)
    grouped = {anchor for anchor, _ in clusters}
    index_of = {anchor: g for g, (anchor, _) in enumerate(clusters)}
    for unit, rows in rows_in.items():
        if len(rows) < 2:
            continue
        if unit in grouped:
            g = index_of[unit]
            known = dict(clusters[g][1])
            clusters[g] = (unit, [(r, known.get(r, float("nan"))) for r in rows if r != unit])
        else:
            clusters.append((unit, [(r, float("nan")) for r in rows if r != unit]))
    for g, (anchor, _members) in enumerate(clusters):  # groups merged into another
        if anchor in grouped and unit_of[anchor] != anchor:
            clusters[g] = (anchor, [])
    return moved


def find_duplicate_groups(
    store: Store,
    threshold: float | None = None,
    *,
    keep: str = DEFAULT_KEEP,
    k: int = DEFAULT_K,
    linkage: str = "anchor",
    method: str = "auto",
    margin: float | None = None,
    sure: float = DEFAULT_SURE,
    bypass: float = DEFAULT_BYPASS,
    leftovers: bool = True,
    leftover_margin: float | None = None,
    views: ViewProvider | None = None,
    turn_gain: float = DEFAULT_TURN_GAIN,
    verify: PairCheck | bool | None = None,
    verify_floor: float = VERIFY_FLOOR,
) -> list[DupGroup]:
    """Exact and near-duplicate groups of everything in ``store``, largest groups first.

    Exact copies (same sha256) share one vector, so the graph is built over one representative per
    content; each group then lists every file of its contents. Pairs marked "not a duplicate"
    (:meth:`Store.mark_not_duplicates`) are never grouped together. ``margin`` (None: the model's
    default, 0: off) applies the density-margin rule (module docstring) with reference rank ``k``,
    ``sure`` and ``bypass``. ``leftovers`` gives rows the rule left alone a second chance
    (:func:`attach_leftovers`, margin ``leftover_margin``, default ``margin``). ``views`` (e.g.
    :class:`lookalike.dedup.turns.TurnedViews`) embeds extra views of the rows still left alone and
    pairs them through those (:func:`attach_turned`). ``verify`` (a
    :class:`lookalike.dedup.verify.GeometricCheck`, True for a default one, False for none, None for
    :func:`verify_by_default`) first takes out of each group the members it denies
    (:func:`drop_denied`), then checks each row's nearest rows down to ``verify_floor`` (and the
    views' matches) and merges the groups it confirms (:func:`merge_verified`). Unset ``threshold``,
    ``margin`` and ``leftover_margin`` come from :func:`default_rule`, which depends on whether
    verification is on.
    """
    model = str((store.model_identity or {}).get("name", ""))
    key = keep_key(keep)
    records = {rec.id: rec for rec in store.items()}
    asked = verify if isinstance(verify, bool) or verify is None else True
    threshold, margin, leftover_margin, verifying = resolve_rule(
        model,
        len({rec.sha256 for rec in records.values()}),
        threshold=threshold,
        margin=margin,
        leftover_margin=leftover_margin,
        verify=asked,
    )
    check: PairCheck | None = None
    if verifying:
        from lookalike.dedup.verify import GeometricCheck

        check = verify if not isinstance(verify, bool) and verify is not None else GeometricCheck(stores=[store])
    if margin < 0:
        raise ValueError("margin must be >= 0 (0 turns the density rule off)")
    ids, vectors = store.vector_rows()  # read lazily: 1M x 1280-d would be 5 GB in RAM
    by_sha: dict[str, list[ItemRecord]] = defaultdict(list)
    rep_row: dict[str, int] = {}
    for row, item_id in enumerate(ids.tolist()):
        rec = records.get(item_id)
        if rec is None:
            continue
        by_sha[rec.sha256].append(rec)
        rep_row.setdefault(rec.sha256, row)
    shas = sorted(by_sha, key=lambda sha: key(min(by_sha[sha], key=key)))  # best content first
    rows = np.asarray([rep_row[sha] for sha in shas], dtype=np.int64)
    rep_ids, rep_vectors = ids[rows], vectors.take(rows)
    sha_index = {sha: i for i, sha in enumerate(shas)}
    forbidden = {
        (min(sha_index[a], sha_index[b]), max(sha_index[a], sha_index[b]))
        for a, b in store.not_duplicates()
        if a in sha_index and b in sha_index
    }
    if method == "auto":
        method = "exact" if len(shas) <= EXACT_GRAPH_LIMIT else "ann"
    refs = np.full(len(shas), np.nan, dtype=np.float32) if margin > 0 else None
    extra: dict[str, object] = {"refs": refs, "floor": threshold - margin, "sure": sure} if margin > 0 else {}
    if method == "exact":
        edges = knn_edges(rep_vectors[:], k, threshold, **extra)  # type: ignore[arg-type]
    elif method == "ann":
        edges = ann_edges(store, rep_ids, rep_vectors, k, threshold, **extra)  # type: ignore[arg-type]
    else:
        raise ValueError(f"unknown method {method!r}; use auto, exact or ann")
    raw = adjacency(edges)
    adj = margin_filter(raw, refs, margin, threshold, bypass) if refs is not None else raw
    clusters = anchored_groups(
        central_order(adj, len(shas)),
        adj,
        vectors=rep_vectors,
        threshold=threshold,
        linkage=linkage,
        forbidden=forbidden,
    )
    if leftovers:
        attach_leftovers(
            clusters,
            raw,
            refs,
            threshold,
            margin=leftover_margin,
            forbidden=forbidden,
        )
    view_matches: dict[int, tuple[list[tuple[int, float, float]], float]] = {}
    if views is not None:
        small = {
            r for anchor, members in clusters if len(members) < SMALL_GROUP for r in (anchor, *(m for m, _ in members))
        }
        grouped_rows = {r for anchor, members in clusters for r in (anchor, *(m for m, _ in members))}
        alone = [r for r in range(len(shas)) if r not in grouped_rows or r in small]
        extra_views = views([by_sha[shas[r]][0] for r in alone])
        row_views = {r: extra_views[by_sha[shas[r]][0].id] for r in alone if by_sha[shas[r]][0].id in extra_views}
        search = {"store": store, "ids": rep_ids} if method == "ann" else {}
        view_matches = view_neighbours(row_views, rep_vectors, k, **search)  # type: ignore[arg-type]
        attach_turned(
            clusters,
            view_matches,
            threshold,
            margin=leftover_margin,
            gain=turn_gain,
            forbidden=forbidden,
        )
    if check is not None:
        pair_check = check

        def record(row: int) -> ItemRecord:
            return by_sha[shas[row]][0]

        drop_denied(
            clusters,
            lambda i, j: pair_check.denies(record(i), record(j)),
            prepare=lambda rows_: pair_check.prepare([record(r) for r in sorted(rows_)]),
            precheck=lambda pairs: pair_check.denies_all([(record(i), record(j)) for i, j in pairs]),
        )

        wide = (
            knn_edges(rep_vectors[:], VERIFY_K, verify_floor)  # type: ignore[arg-type]
            if method == "exact"
            else ann_edges(store, rep_ids, rep_vectors, VERIFY_K, verify_floor)
        )
        candidates = [
            (int(r), int(c), float(sc))
            for rows_, cols, scores in wide
            for r, c, sc in zip(rows_.tolist(), cols.tolist(), scores.tolist(), strict=True)
        ]
        candidates += [
            (r, c, sc) for r, (ranked, _) in view_matches.items() for c, sc, _ in ranked if sc >= verify_floor
        ]
        merge_verified(
            clusters,
            candidates,
            lambda i, j: pair_check.confirms(record(i), record(j)),
            n=len(shas),
            prepare=lambda rows_: pair_check.prepare([record(r) for r in sorted(rows_)]),
            precheck=lambda pairs: pair_check.confirms_all([(record(i), record(j)) for i, j in pairs]),
            forbidden=forbidden,
        )
    groups: list[DupGroup] = []
    grouped: set[int] = set()
    for anchor, members in clusters:
        if not members:
            continue
        rows_in = [anchor, *(m for m, _ in members)]
        grouped.update(rows_in)
        # shas are sorted best-first under the keep rule, so the smallest row holds the copy to keep
        keep_row = min(rows_in)
        copies = sorted(by_sha[shas[keep_row]], key=key)
        group = DupGroup(copies[0], copies[1:], [1.0] * (len(copies) - 1))
        others = sorted(r for r in rows_in if r != keep_row)
        if others:
            sims = rep_vectors[others] @ rep_vectors[keep_row]
            for row, sim in zip(others, sims.tolist(), strict=True):
                for rec in sorted(by_sha[shas[row]], key=key):
                    group.duplicates.append(rec)
                    group.scores.append(min(1.0, float(sim)))
        groups.append(group)
    for i, sha in enumerate(shas):
        if i not in grouped and len(by_sha[sha]) > 1:
            copies = sorted(by_sha[sha], key=key)
            groups.append(DupGroup(copies[0], copies[1:], [1.0] * (len(copies) - 1)))
    groups.sort(key=lambda g: (-len(g.duplicates), g.keep.path))
    return groups
