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
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from lookalike.dedup.keep import DEFAULT_KEEP, keep_key
from lookalike.store.base import ItemRecord, Store
from lookalike.store.vector_index import AUTO_EXACT_LIMIT

#: Cosine threshold per model, measured with bench/bench_neardup.py (see docs/cleaning.md).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "mobilenet_v2": 0.86,
    "efficientnet_lite0": 0.86,
    "efficientnet_lite1": 0.86,
    "efficientnet_lite2": 0.86,
    # hashes: cosine = 1 - 2 * hamming / 64, so 0.6875 is a Hamming distance of 10 (imagededup's default)
    "phash": 0.6875,
    "dhash": 0.6875,
}
FALLBACK_THRESHOLD = 0.9
DEFAULT_K = 16
#: Above this many distinct contents ``method='auto'`` asks the store's ANN index (the same switch
#: point as the store's own ``auto`` index: exact search costs O(N²·d) and 100k items took > 20 min).
EXACT_GRAPH_LIMIT = AUTO_EXACT_LIMIT
LINKAGES = ("anchor", "complete")
_BLOCK_BYTES = 128 * 1024 * 1024


def default_threshold(model_name: str | None) -> float:
    """The near-duplicate threshold for vectors of this model."""
    return DEFAULT_THRESHOLDS.get(model_name or "", FALLBACK_THRESHOLD)


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
def knn_edges(
    vectors: np.ndarray, k: int, threshold: float, block_rows: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(rows, cols, scores)`` of each row's top-k neighbours (itself excluded) scoring >= threshold.

    Exact (matrix products), in blocks sized so one block of scores stays under ~256 MB.
    """
    n = len(vectors)
    if n < 2:
        return
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    k = min(k, n - 1)
    block = block_rows or max(16, min(4096, _BLOCK_BYTES // (4 * n)))
    for start in range(0, n, block):
        stop = min(n, start + block)
        scores = vectors[start:stop] @ vectors.T
        local = np.arange(stop - start)
        scores[local, start + local] = -np.inf
        # Scores above a near-duplicate threshold are rare: filter first, then keep each row's best k.
        # (argpartition over the whole block would cost more than the matrix product.)
        rows, cols = np.nonzero(scores >= threshold)
        if len(rows) > 8 * k * (stop - start):  # a dense block (huge exact-copy families): partition instead
            cols = (
                np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n - 1 else np.tile(np.arange(n), (len(local), 1))
            )
            top = np.take_along_axis(scores, cols, axis=1)
            mask = top >= threshold
            yield np.broadcast_to((start + local)[:, None], cols.shape)[mask], cols[mask], top[mask]
            continue
        vals = scores[rows, cols]
        order = np.lexsort((-vals, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
        keep = rank < k
        yield start + rows[keep], cols[keep], vals[keep]


def ann_edges(
    store: Store, ids: np.ndarray, vectors: np.ndarray, k: int, threshold: float, block_rows: int = 4096
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Like :func:`knn_edges` but through ``store.search`` (its ANN index): for millions of items."""
    row_of = {int(i): r for r, i in enumerate(ids)}
    for start in range(0, len(ids), block_rows):
        stop = min(len(ids), start + block_rows)
        hits = store.search(vectors[start:stop], k + 1)
        rows, cols, scores = [], [], []
        for offset, row_hits in enumerate(hits):
            me = start + offset
            for hit in row_hits:
                col = row_of.get(hit.id)
                if col is None or col == me or hit.score < threshold:
                    continue
                rows.append(me)
                cols.append(col)
                scores.append(hit.score)
        yield np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64), np.asarray(scores, dtype=np.float32)


def adjacency(edges: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[int, dict[int, float]]:
    """Symmetric neighbour lists (top-k is not symmetric: B may be in A's top-k but not A in B's)."""
    adj: dict[int, dict[int, float]] = defaultdict(dict)
    for rows, cols, scores in edges:
        for r, c, s in zip(rows.tolist(), cols.tolist(), scores.tolist(), strict=True):
            adj[r][c] = s
            adj[c][r] = s
    return adj


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
    vectors: np.ndarray | None = None,
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


def find_duplicate_groups(
    store: Store,
    threshold: float | None = None,
    *,
    keep: str = DEFAULT_KEEP,
    k: int = DEFAULT_K,
    linkage: str = "anchor",
    method: str = "auto",
) -> list[DupGroup]:
    """Exact and near-duplicate groups of everything in ``store``, largest groups first.

    Exact copies (same sha256) share one vector, so the graph is built over one representative per
    content; each group then lists every file of its contents. Pairs marked "not a duplicate"
    (:meth:`Store.mark_not_duplicates`) are never grouped together.
    """
    if threshold is None:
        identity = store.model_identity or {}
        threshold = default_threshold(str(identity.get("name", "")))
    key = keep_key(keep)
    records = {rec.id: rec for rec in store.items()}
    ids, vectors = store.all_vectors()
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
    rep_ids, rep_vectors = ids[rows], vectors[rows] if len(rows) else vectors[:0]
    del vectors
    sha_index = {sha: i for i, sha in enumerate(shas)}
    forbidden = {
        (min(sha_index[a], sha_index[b]), max(sha_index[a], sha_index[b]))
        for a, b in store.not_duplicates()
        if a in sha_index and b in sha_index
    }
    if method == "auto":
        method = "exact" if len(shas) <= EXACT_GRAPH_LIMIT else "ann"
    if method == "exact":
        edges = knn_edges(rep_vectors, k, threshold)
    elif method == "ann":
        edges = ann_edges(store, rep_ids, rep_vectors, k, threshold)
    else:
        raise ValueError(f"unknown method {method!r}; use auto, exact or ann")
    adj = adjacency(edges)
    clusters = anchored_groups(
        central_order(adj, len(shas)),
        adj,
        vectors=rep_vectors,
        threshold=threshold,
        linkage=linkage,
        forbidden=forbidden,
    )
    groups: list[DupGroup] = []
    grouped: set[int] = set()
    for anchor, members in clusters:
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
