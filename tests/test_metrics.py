"""Every metric against small cases computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.evaluation.metrics import (
    auroc,
    average_precision_at_r,
    best_f1_threshold,
    knn,
    leave_one_out,
    map_at_r,
    pair_scores,
    pairs_above,
    recall_at_k,
    retrieval_scores,
    unit_rows,
)


def circle(degrees: list[float]) -> np.ndarray:
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def test_recall_at_k_by_hand() -> None:
    query = np.array([0, 1, 0])
    neighbours = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    assert recall_at_k(neighbours, query, 1).tolist() == [0.0, 1.0, 0.0]
    assert recall_at_k(neighbours, query, 2).tolist() == [1.0, 1.0, 0.0]
    assert recall_at_k(neighbours, query, 3).tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        recall_at_k(neighbours, query, 0)


def test_average_precision_at_r_by_hand() -> None:
    # R=3, first three A B A: P(1)=1, P(3)=2/3 -> (1 + 2/3) / 3 = 5/9 (the 4th A is beyond R)
    assert average_precision_at_r(["A", "B", "A", "A"], "A", 3) == pytest.approx(5 / 9)
    # R=2, B A: only P(2)=1/2 counts -> 0.5 / 2 = 0.25
    assert average_precision_at_r(["B", "A", "A"], "A", 2) == pytest.approx(0.25)
    # Musgrave et al.'s example: R=10, only the first is relevant -> 1/10
    assert average_precision_at_r([1] + [0] * 9, 1, 10) == pytest.approx(0.1)
    assert average_precision_at_r(["A", "A"], "A", 2) == 1.0
    assert average_precision_at_r(["B", "B"], "A", 2) == 0.0
    with pytest.raises(ValueError):
        average_precision_at_r(["A"], "A", 0)
    with pytest.raises(ValueError):
        average_precision_at_r(["A"], "A", 2)


def test_map_at_r_vectorised_matches_scalar() -> None:
    rng = np.random.default_rng(0)
    neighbours = rng.integers(0, 3, size=(50, 12))
    query = rng.integers(0, 3, size=50)
    r = rng.integers(1, 13, size=50)
    vec = map_at_r(neighbours, query, r)
    for i in range(50):
        assert vec[i] == pytest.approx(average_precision_at_r(neighbours[i], query[i], int(r[i])))
    assert math.isnan(map_at_r(neighbours[:1], query[:1], np.array([0]))[0])


def test_knn_excludes_self_and_breaks_ties_by_index() -> None:
    v = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    idx, scores = knn(v, 1)
    assert idx[:, 0].tolist() == [1, 0, 0, 0]  # item 3 ties at 0 with 0, 1, 2 -> lowest index
    assert scores[:, 0].tolist() == [1.0, 1.0, 1.0, 0.0]
    idx, _ = knn(v, 2)
    assert idx.tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]
    idx, _ = knn(v, 10)  # clipped to the 3 other items
    assert idx.shape == (4, 3)
    idx, scores = knn(v, 2, queries=np.array([[0, 1]], dtype=np.float32))
    assert idx.tolist() == [[3, 0]] and scores.tolist() == [[1.0, 0.0]]


def test_leave_one_out_on_a_circle_by_hand() -> None:
    # angles (degrees) and classes; neighbours by angular distance:
    # 0 (a,   0): 1(10) 2(62) 3(100) 4(120) 5(160)  -> a b b b a   R=2: AP = 1/2           R@1 hit
    # 1 (a,  10): 0(10) 2(52) 3(90) 4(110) 5(170)   -> a b b b a   R=2: AP = 1/2           R@1 hit
    # 2 (b,  62): 3(38) 1(52) 4(58) 0(62) 5(138)    -> b a b a a   R=2: AP = 1/2           R@1 hit
    # 3 (b, 100): 4(20) 2(38) ...                   -> b b         R=2: AP = 1             R@1 hit
    # 4 (b, 120): 3(20) 2(58) 5(80) ...             -> b b         R=2: AP = 1             R@1 hit
    # 5 (a, 200): 4(80) 3(100) 2(138) 0(160) 1(170) -> b b b a a   R=2: AP = 0  R@1 miss, R@5 hit (4th)
    v = circle([0, 10, 62, 100, 120, 200])
    labels = [0, 0, 1, 1, 1, 0]
    s = leave_one_out(v, labels, class_names=["a", "b"], ks=(1, 3, 5))
    assert s.recall[1] == pytest.approx(5 / 6)
    assert s.recall[3] == pytest.approx(5 / 6)
    assert s.recall[5] == pytest.approx(1.0)
    assert s.map_at_r == pytest.approx((0.5 + 0.5 + 0.5 + 1 + 1 + 0) / 6)
    assert s.per_class["a"]["recall@1"] == pytest.approx(2 / 3)
    assert s.per_class["a"]["map@r"] == pytest.approx(1 / 3)
    assert s.per_class["b"]["recall@1"] == pytest.approx(1.0)
    assert s.per_class["b"]["map@r"] == pytest.approx(5 / 6)
    assert s.per_class["a"]["n"] == 3
    assert s.n_queries == 6 and s.skipped == 0
    d = s.to_dict()
    assert set(d) >= {"recall@1", "recall@3", "recall@5", "map@r", "per_class"}


def test_leave_one_out_on_a_line_by_hand() -> None:
    # Four points; cosine neighbours: 0->1, 1->0, 2->3, 3->2 (2nd: 0->2, 1->2, 2->1, 3->1).
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.2, 0.8], [0.0, 1.0]], dtype=np.float32)
    s = leave_one_out(x, [0, 0, 1, 1], ks=(1,))
    assert s.recall[1] == 1.0 and s.map_at_r == 1.0
    # Labels a b a b: every nearest neighbour has the other label (R@1 0, AP@R 0 since R=1); the 2nd
    # neighbour is right for 0 (->2) and 3 (->1) but wrong for 1 (->2) and 2 (->1): R@2 = 0.5.
    s = leave_one_out(x, [0, 1, 0, 1], ks=(1, 2))
    assert s.recall[1] == 0.0 and s.recall[2] == 0.5 and s.map_at_r == 0.0


def tie_case() -> tuple[np.ndarray, np.ndarray]:
    """Items 2 and 3 are the same vector with different labels; 0, 1 and 4 score 0.5 with both."""
    h = [0.5, 0.5, 0.5, 0.5]  # every value exact in float32: the tie is exact
    x = np.array([[1, 0, 0, 0], [0, 1, 0, 0], h, h, [0, 0, 1, 0]], dtype=np.float32)
    return x, np.array([0, 0, 0, 1, 1])


def test_recall_ties_go_to_the_lower_index() -> None:
    # 0 (a) -> 2 (a) hit, 1 (a) -> 2 hit, 2 (a) -> 3 (b) miss, 3 (b) -> 2 (a) miss, 4 (b) -> 2 miss: 2/5.
    # The former training metric ranked ties in argpartition's order whenever it also computed mAP@R
    # (bench_train, the training tests): item 3 came first, 0.2 for the same vectors.
    x, labels = tie_case()
    assert leave_one_out(x, labels, ks=(1,)).recall[1] == pytest.approx(0.4)
    assert leave_one_out(x, labels, ks=(1,), with_map_at_r=False).recall[1] == pytest.approx(0.4)
    # AP@R (R = 2, 2, 2, 1, 1): 0 -> 2 3 (1/2), 1 -> 2 3 (1/2), 2 -> 3 0 (P(2)/2 = 1/4), 3 and 4 -> 2 (0)
    assert leave_one_out(x, labels, ks=(1,)).map_at_r == pytest.approx(1.25 / 5)


def hash_like(n: int = 60, bits: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sign vectors over few bits (many exact ties, like phash/dhash) scaled to length ~1, as a model
    would return them: ``1/sqrt(8)`` is not exact in float32, so the rows are 1 +- 1e-7 long."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 2, (n, bits)) * 2 - 1).astype(np.float32) / np.float32(np.sqrt(bits))
    return x, rng.integers(0, 3, n)


@pytest.mark.parametrize("vectors", ["ties", "hash-like", "float16-features"])
def test_train_and_eval_report_the_same_recall_at_1(vectors: str) -> None:
    """``lookalike train``'s validation Recall@1 and ``lookalike eval``'s on the same vectors.

    Before one implementation, training re-normalised every row and eval did not: on ``hash-like``
    vectors that alone turned exact ties into near-ties, and train said 0.333 where eval said 0.350."""
    from lookalike.training.head import validation_recall

    if vectors == "ties":
        x, labels = tie_case()
    elif vectors == "hash-like":
        x, labels = hash_like()
    else:  # the head recipe's cached backbone features: float16, so no row is exactly unit
        x, labels = hash_like(bits=16, seed=1)
        x = (x + np.random.default_rng(2).normal(0, 0.05, x.shape)).astype(np.float16).astype(np.float32)
    empty = x[:0], labels[:0]
    evaluated = leave_one_out(x, labels).recall[1]  # what `lookalike eval` reports (evaluate_model)
    assert validation_recall(x, labels, *empty) == evaluated
    # With a gallery: validation rows search validation + training rows, as in every training epoch;
    # each validation query gets the neighbour it gets in the whole collection's leave-one-out.
    n_val = len(x) // 3
    idx, _ = knn(unit_rows(x), 1)
    per_query = recall_at_k(labels[idx], labels, 1)[:n_val]
    has_mate = (np.bincount(labels)[labels] > 1)[:n_val]
    trained = validation_recall(x[:n_val], labels[:n_val], x[n_val:], labels[n_val:])
    assert trained == pytest.approx(per_query[has_mate].mean(), abs=1e-12)


def test_knn_query_rows_exclude_their_own_row() -> None:
    v = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    idx, scores = knn(v, 1, query_rows=np.array([1, 3]))
    assert idx[:, 0].tolist() == [0, 2] and scores[:, 0].tolist() == [1.0, 1.0]
    s = leave_one_out(v, [0, 0, 1, 0], ks=(1,), query_rows=np.array([1, 3]))
    # 1 -> 0 (same label) hit; 3 -> 2 (label 1) miss; class 0 has 3 items, so R = 2 for both
    assert s.recall[1] == 0.5 and s.n_queries == 2 and s.per_class["0"]["n"] == 2
    # AP@R: 1 -> 0 (hit) 2 (tie with 3, lower index) -> 1/2; 3 -> 2 (miss) 0 (hit) -> P(2)/2 = 1/4
    assert s.map_at_r == pytest.approx((1 / 2 + 1 / 4) / 2)


def test_singleton_class_is_skipped_not_scored() -> None:
    # item 2 is alone in class 1: it has no correct answer, so it is left out of every mean
    neighbours = np.array([[0, 1], [0, 1], [0, 0]])
    s = retrieval_scores(neighbours, np.array([0, 0, 1]), ks=(1,))
    assert s.n_queries == 2 and s.skipped == 1
    assert s.recall[1] == 1.0 and s.map_at_r == 1.0
    assert math.isnan(s.per_class["1"]["recall@1"])


def test_pair_scores_by_hand() -> None:
    # predicted {01, 12, 34}; true {01, 12, 56}: tp 2, fp 1, fn 1 -> P = R = F1 = 2/3
    s = pair_scores({(0, 1), (2, 1), (3, 4)}, {(1, 0), (1, 2), (5, 6)})
    assert (s.true_positives, s.false_positives, s.false_negatives) == (2, 1, 1)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 / 3)
    # all wrong
    assert pair_scores({(0, 1)}, {(2, 3)}).f1 == 0.0
    # nothing predicted: precision 1 by convention, recall 0
    empty = pair_scores(set(), {(0, 1)})
    assert (empty.precision, empty.recall, empty.f1) == (1.0, 0.0, 0.0)


def test_pairs_above_and_best_threshold_by_hand() -> None:
    # angles 0, 10, 90, 95: cos(10)=0.985 (0-1), cos(5)=0.996 (2-3), cos(80)=0.17 (1-2), rest lower
    v = circle([0, 10, 90, 95])
    assert pairs_above(v, 0.9) == {(0, 1), (2, 3)}
    assert pairs_above(v, 0.99) == {(2, 3)}
    # truth: only 0-1 -> at 0.985 (the 0-1 score): tp 1, fp 1 (2-3 scores higher) -> P 1/2, R 1, F1 2/3;
    # at 0.996: tp 0 -> F1 0. Best is 2/3 at cos(10 deg).
    threshold, s = best_f1_threshold(v, {(1, 0)})
    assert threshold == pytest.approx(np.cos(np.deg2rad(10)), abs=1e-6)
    assert s.f1 == pytest.approx(2 / 3)
    threshold, s = best_f1_threshold(v, {(0, 1), (2, 3)})
    assert s.f1 == 1.0 and s.true_positives == 2


def test_auroc_by_hand() -> None:
    # pos 0.9 and 0.8 beat all three negatives (6 wins); 0.4 beats 0.1, ties 0.4 (1/2), loses to 0.5
    # -> (6 + 1.5) / 9
    assert auroc([0.9, 0.8, 0.4], [0.5, 0.4, 0.1]) == pytest.approx(7.5 / 9)
    assert auroc([2, 3], [0, 1]) == 1.0
    assert auroc([0, 1], [2, 3]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    with pytest.raises(ValueError):
        auroc([], [1.0])
