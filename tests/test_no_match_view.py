"""The no-match view: a model whose vector has a semantic part and a shape part has "no similar
images" decided on the semantic part alone, the same way at calibration and at query time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_picture
from lookalike import Index
from lookalike.evaluation.retrieval import ood_scores
from lookalike.models.base import Embedder, ModelSpec, NoMatchView, l2_normalize
from lookalike.search.no_match import NO_MATCH_POOL, NoMatchRule
from lookalike.store.base import Hit

SEMANTIC = 12


class TwoPartEmbedder(Embedder):
    """Leading part: a 12-d colour/layout summary (the "semantic" part); trailing part: 12 values
    that are the same for every image, twice as long (a stand-in for mid-level features that lift every score)."""

    batch_size = 8

    def __init__(self) -> None:
        view = NoMatchView(SEMANTIC, 1.0)
        self.spec = ModelSpec("two-part-test", "1", 2 * SEMANTIC, "rgb;2x2-means", 64, view)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        small = np.asarray(image.convert("RGB").resize((2, 2), Image.Resampling.BOX), dtype=np.float32)
        return small.reshape(-1) / 255.0 - 0.5  # 12 signed values

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        head = l2_normalize(batch)
        tail = np.full_like(head, 2.0 / np.sqrt(SEMANTIC))  # |tail| = 2: every whole score >= 0.6
        return l2_normalize(np.hstack([head, tail]))


@pytest.fixture(scope="module")
def two_part_index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    root = tmp_path_factory.mktemp("view")
    pictures = root / "pictures"
    pictures.mkdir()
    for i in range(30):  # reddish pictures, so that other colours are clearly unlike all of them
        picture = make_picture(i)
        Image.blend(picture, Image.new("RGB", picture.size, (255, 0, 0)), 0.6).save(pictures / f"pic{i}.png")
    index = Index.open(root / "db", model=TwoPartEmbedder())
    index.add([pictures])
    return index


def test_view_applies_dims_and_power() -> None:
    view = NoMatchView(2, 2.0)
    out = view.apply(np.array([[3.0, -4.0, 100.0], [0.0, 0.0, 1.0]], dtype=np.float32))
    np.testing.assert_allclose(out[0], np.array([9.0, -16.0]) / np.hypot(9.0, 16.0), rtol=1e-6)
    assert np.all(out[1] == 0.0)  # a zero part stays zero instead of dividing by zero
    assert NoMatchView.from_json(view.to_json()) == view and NoMatchView.from_json(None) is None


def test_calibration_measures_the_kth_score_in_the_view(two_part_index: Index) -> None:
    cal = two_part_index.calibration
    assert cal is not None and cal.ok and cal.view == NoMatchView(SEMANTIC, 1.0)
    # The nearest-neighbour sample (read by copy probabilities) stays on whole vectors, which the
    # constant tail lifts to >= 0.6; the k-NN sample is read in the view, which the tail does not lift.
    assert min(cal.nn_scores) >= 0.6 - 1e-6
    assert min(cal.knn_scores) < min(cal.nn_scores)
    assert "leading 12 values" in str(cal.summary()["no_match_reads"])


def test_query_knn_score_is_the_kth_view_score_of_the_nearest(two_part_index: Index) -> None:
    index = two_part_index
    cal = index.calibration
    assert cal is not None
    query = make_picture(1000)
    result = index.search(query, k=3)
    qvec = index.embed([query])[0]
    ids, vectors = index.store.all_vectors()
    full = vectors @ qvec
    pool = np.argsort(-full)[: cal.knn_k + NO_MATCH_POOL]
    in_view = np.sort(cal.view.apply(vectors[pool]) @ cal.view.apply(qvec))[::-1]  # type: ignore[union-attr]
    assert result.extra["knn_score"] == pytest.approx(in_view[cal.knn_k - 1], abs=1e-5)
    assert result.no_match == (in_view[cal.knn_k - 1] < cal.knn_threshold())
    assert [m.id for m in result.results] == [int(ids[j]) for j in pool[:3]]  # ranking: whole vectors
    # The fixed rule reads the best view score: a query whose view scores are all below 0.5 is
    # "no match" even though its whole-vector scores are all >= 0.6.
    corners = [Image.new("RGB", (64, 64), (r, g, b)) for r in (0, 255) for g in (0, 255) for b in (0, 255)]
    results = index.search_many(corners, k=3, no_match_rule="fixed")
    best_views = []
    for picture, result in zip(corners, results, strict=True):
        hits = [Hit(m.id, m.score) for m in result.results]
        view_scores = NoMatchRule.fixed(view=cal.view).read(index.store, index.embed([picture])[0], hits)
        best_views.append(view_scores.max())
        assert min(m.score for m in result.results) >= 0.6 - 1e-6
        assert result.no_match == (view_scores.max() < 0.5)
    assert min(best_views) < 0.5 < max(best_views)  # both outcomes were exercised


def test_ood_scores_read_the_view() -> None:
    """Out-of-distribution queries that share only the trailing part: inseparable on whole vectors
    (every score is the same), perfectly separated in the view."""
    rng = np.random.default_rng(0)
    heads = l2_normalize(np.abs(rng.normal(size=(40, 4))) + 2.0)  # the collection: one positive cluster
    ood_heads = l2_normalize(-np.abs(rng.normal(size=(10, 4))) - 2.0)  # the opposite direction
    tail = np.ones((1, 4), dtype=np.float32) * 10.0
    collection = l2_normalize(np.hstack([heads, np.repeat(tail, 40, 0)]))
    ood = l2_normalize(np.hstack([ood_heads, np.repeat(tail, 10, 0)]))
    whole = ood_scores(collection, ood)
    viewed = ood_scores(collection, ood, view=NoMatchView(4))
    assert viewed["auroc"] == 1.0 and viewed["ood_missed"] == 0.0
    assert whole["rules"]["fixed"]["ood_missed"] == 1.0  # type: ignore[index]
    assert viewed["rules"]["fixed"]["ood_missed"] == 0.0  # type: ignore[index]


def test_models_without_a_view_read_whole_scores(tmp_path: Path) -> None:
    hits = [Hit(1, 0.9), Hit(2, 0.4)]
    np.testing.assert_array_equal(NoMatchRule.fixed().read(None, np.zeros(3), hits), [0.9, 0.4])  # type: ignore[arg-type]
