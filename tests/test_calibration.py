"""Per-collection calibration: stored, monotone, data-driven no-match, honest fallbacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from typer.testing import CliRunner

from conftest import make_picture
from lookalike import Index
from lookalike.cli.app import app
from lookalike.demo import demo_images_dir
from lookalike.imaging import edits
from lookalike.search import calibration as calib
from lookalike.search import measure
from lookalike.search.calibration import (
    Calibration,
    build_calibration,
    threshold_for_precision,
)
from lookalike.search.no_match import NoMatchRule

runner = CliRunner()


def _folder(root: Path, seeds: range, name: str = "pictures") -> Path:
    folder = root / name
    folder.mkdir(exist_ok=True)
    for i in seeds:
        make_picture(i).save(folder / f"pic{i}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def dhash_index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    """30 synthetic pictures under the cheap dHash model: fast, and large enough to calibrate."""
    root = tmp_path_factory.mktemp("dhash")
    index = Index.open(root / "db", model="dhash")
    index.add([_folder(root, range(30))])
    return index


def _synthetic(seed: int = 0, pos_mean: float = 0.9, neg_mean: float = 0.6) -> Calibration:
    rng = np.random.default_rng(seed)
    pos = np.clip(rng.normal(pos_mean, 0.04, 400), -1, 1)
    neg = np.clip(rng.normal(neg_mean, 0.08, 2000), -1, 1)
    knn = np.clip(rng.normal(neg_mean - 0.05, 0.08, 2000), -1, 1)
    return build_calibration(pos, neg, knn, k=1)


def test_calibration_is_computed_by_add_and_stored(dhash_index: Index) -> None:
    cal = dhash_index.calibration
    assert cal is not None and cal.ok, cal
    assert cal.n_items == 30 and len(cal.copy_scores) == measure.EDITS_PER_IMAGE * 30
    assert len(cal.nn_scores) + cal.probable_duplicates == 30
    # Copies of a picture score higher than its nearest *other* picture, typically.
    assert np.median(cal.copy_scores) > np.median(cal.nn_scores)
    stored = dhash_index.store.get_meta(calib.META_KEY)
    assert isinstance(stored, dict) and stored["status"] == "ok"
    reopened = Index.open(dhash_index.store.folder, create=False)  # type: ignore[attr-defined]
    try:
        again = reopened.calibration
        assert again is not None and again.cutoffs == cal.cutoffs and again.knn_scores == cal.knn_scores
        assert reopened.info()["calibration"].startswith("ok")
    finally:
        reopened.close()


def test_search_results_carry_probability_and_label(dhash_index: Index, tmp_path: Path) -> None:
    query = tmp_path / "copy.jpg"
    make_picture(4).resize((200, 150)).save(query, quality=60)
    result = dhash_index.search(query, k=5)
    assert result.results[0].path.endswith("pic4.jpg")
    probs = [m.probability for m in result.results]
    assert all(p is not None and 0 <= p <= 1 for p in probs)
    assert probs == sorted(probs, reverse=True)  # type: ignore[type-var]
    assert all(m.label in calib.LABELS for m in result.results)
    doc = result.to_dict()
    assert doc["no_match_rule"] == "knn" and "knn_threshold" in doc
    assert {"probability", "label"} <= set(doc["results"][0])  # type: ignore[index]


@pytest.mark.parametrize("method", ["logistic", "isotonic"])
def test_probability_and_labels_are_monotone_in_score(dhash_index: Index, method: str) -> None:
    for cal in (dhash_index.calibration, _synthetic()):
        assert cal is not None
        cal.method = method
        grid = np.linspace(-1, 1, 2001)
        probs = cal.probability(grid)
        assert np.all(np.diff(probs) >= -1e-12) and probs[0] < 0.5 < probs[-1]
        rank = {name: i for i, name in enumerate(calib.LABELS)}
        ranks = [rank[cal.label(float(s))] for s in grid]
        assert ranks == sorted(ranks, reverse=True) and ranks[0] == 3 and ranks[-1] == 0


def test_cutoffs_and_precision_follow_the_distributions() -> None:
    near, far = _synthetic(pos_mean=0.95, neg_mean=0.85), _synthetic(pos_mean=0.8, neg_mean=0.4)
    # The same raw score means different things in different collections.
    assert near.probability(0.85) < 0.2 < 0.8 < far.probability(0.85)
    assert near.cutoffs["duplicate"] > far.cutoffs["duplicate"]
    for cal in (near, far):
        thresholds = [threshold_for_precision(cal, p) for p in (0.5, 0.9, 0.99)]
        assert thresholds == sorted(thresholds)
        pos, neg = np.asarray(cal.copy_scores), np.asarray(cal.nn_scores)
        t = thresholds[-1]
        tp, fp = (pos >= t).mean(), (neg >= t).mean()
        assert tp > 0 and tp / (tp + fp) >= 0.99
        # a rarer copy prior needs a stricter threshold
        assert threshold_for_precision(cal, 0.99, prior=0.05) >= t


def test_knn_threshold_follows_acceptance_rate() -> None:
    cal = _synthetic()
    knn = np.asarray(cal.knn_scores)
    assert cal.knn_threshold(0.8) > cal.knn_threshold(0.95) > cal.knn_threshold(0.99)
    assert abs((knn >= cal.knn_threshold(0.95)).mean() - 0.95) < 0.01
    rule = NoMatchRule.for_collection(cal, "knn", 0.95)
    assert (rule.kind, rule.threshold) == ("knn", cal.knn_threshold(0.95))
    assert rule.decide([0.1, 0.05]).no_match and not rule.decide([0.9, 0.8]).no_match


@pytest.mark.slow
def test_knn_rule_flags_what_the_fixed_rule_misses(tmp_path: Path) -> None:
    """A collection of look-alike pictures: unrelated queries still score > 0.5 against it.

    The fixed rule calls them matches; the calibrated k-NN rule (the default once calibrated) does not,
    while in-distribution queries (new pictures of the same kind, edited copies) stay accepted. This
    test fails if calibration is skipped, because the default rule then falls back to the fixed one.
    """
    folder = _folder(tmp_path, range(40))
    text = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(text).text((10, 80), "Hello world, an invoice 2024", fill="black")
    grey = Image.new("RGB", (224, 224), (128, 128, 128))
    in_domain = [make_picture(1000), make_picture(1001), make_picture(7).resize((160, 120))]
    with Index.open(tmp_path / "db") as index:
        index.add([folder])
        ood = index.search_many([text, grey], k=3)
        fixed = index.search_many([text, grey], k=3, no_match_rule="fixed")
        assert all(r.results[0].score > 0.5 for r in fixed)  # the fixed rule is misled ...
        assert not any(r.no_match for r in fixed)
        assert all(r.no_match and r.extra["no_match_rule"] == "knn" for r in ood)  # ... the default is not
        assert not any(r.no_match for r in index.search_many(in_domain, k=3))
        copy = index.search(in_domain[2], k=3).results[0]
        assert copy.path.endswith("pic7.jpg") and copy.label in ("duplicate", "very similar")
        assert copy.probability is not None and copy.probability > 0.5
        assert all(r.results[0].label == "weak" for r in ood)


def test_tiny_collection_falls_back_to_the_fixed_rule(tmp_path: Path) -> None:
    with Index.open(tmp_path / "db", model="dhash") as index:
        index.add([_folder(tmp_path, range(6))])
        cal = index.calibration
        assert cal is not None and not cal.ok and "at least 20" in cal.reason
        result = index.search_many([make_picture(2)], k=3, no_match_rule="knn")[0]
        assert result.extra["no_match_rule"] == "fixed" and "at least 20" in str(result.extra["no_match_note"])
        assert all(m.probability is None and m.label is None for m in result.results)
        assert "probability" not in result.to_dict()["results"][0]  # type: ignore[index]
        assert threshold_for_precision(cal, 0.99) == 0.95
        with pytest.raises(ValueError, match="no calibration"):
            cal.probability(0.5)


def test_recalibrates_when_the_collection_grows(tmp_path: Path) -> None:
    with Index.open(tmp_path / "db", model="dhash") as index:
        index.add([_folder(tmp_path, range(25), "a")])
        first = index.calibration
        assert first is not None and first.ok and first.n_items == 25
        index.add([_folder(tmp_path, range(25, 27), "b")], remove_missing=False)  # +8%: kept
        assert index.calibration.computed_at == first.computed_at  # type: ignore[union-attr]
        index.add([_folder(tmp_path, range(27, 40), "c")], remove_missing=False)  # +60%: refreshed
        assert index.calibration.n_items == 40  # type: ignore[union-attr]
        assert index.calibration.computed_at > first.computed_at  # type: ignore[union-attr]


def test_unreadable_originals_give_an_explained_fallback(tmp_path: Path) -> None:
    folder = _folder(tmp_path, range(22))
    with Index.open(tmp_path / "db", model="dhash") as index:
        index.add([folder], calibrate=False)
        assert index.calibration is None and index.calibration_stale()
        for path in folder.iterdir():
            path.unlink()  # our own test files
        cal = index.calibrate()
        assert not cal.ok and "copies" in cal.reason


def test_cli_calibrate_and_search_json(tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    folder = _folder(tmp_path, range(24))
    assert runner.invoke(app, ["index", str(folder), "--db", db, "--model", "dhash", "-q"]).exit_code == 0
    shown = runner.invoke(app, ["calibrate", "--db", db, "--json", "--copies", "10"])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.stdout)
    assert summary["status"] == "ok" and summary["copies_measured"] == 10 * measure.EDITS_PER_IMAGE
    query = tmp_path / "q.jpg"
    make_picture(3).resize((160, 120)).save(query, quality=70)
    doc = json.loads(runner.invoke(app, ["search", str(query), "--db", db, "--json"]).stdout)
    first = doc["queries"][0]
    assert first["no_match_rule"] == "knn" and {"probability", "label"} <= set(first["results"][0])
    args = ["search", str(query), "--db", db, "--json", "--no-match-rule", "fixed"]
    fixed = json.loads(runner.invoke(app, args).stdout)
    assert fixed["queries"][0]["no_match_rule"] == "fixed"
    bad = runner.invoke(app, ["search", str(query), "--db", db, "--no-match-rule", "nope"])
    assert bad.exit_code == 2


def test_copy_generator_covers_the_standard_edits() -> None:
    """Every standard copy-detection edit can be drawn, and each does what its name says."""
    assert {"crop", "rotate", "flip", "jitter", "grayscale", "text", "border", "downscale", "jpeg"} <= set(
        edits.EDIT_KINDS
    )
    picture = make_picture(5)
    rng = np.random.default_rng(0)
    edited = {kind: edits.apply_edit(picture, kind, rng) for kind in edits.EDIT_KINDS}
    assert np.array_equal(np.asarray(edited["flip"]), np.asarray(picture)[:, ::-1])
    assert edited["border"].width > picture.width and edited["border"].height > picture.height
    assert edited["crop"].width < picture.width and edited["downscale"].width <= picture.width // 2
    grey = np.asarray(edited["grayscale"]).astype(int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert not np.array_equal(np.asarray(edited["text"]), np.asarray(picture))
    copies = [edits.copy_edit(picture, rng) for _ in range(20)]
    assert all(c.mode == "RGB" and min(c.size) >= 16 for c in copies)
    assert len({c.size for c in copies}) > 10  # random composites, not one fixed edit


@pytest.mark.slow
def test_rotated_flipped_bordered_copies_read_as_copies(tmp_path: Path) -> None:
    """Copies made with edits outside the first calibration's family (rotation, mirror, border) must
    still read as copies: the calibration's own copies are drawn from the full standard edit family."""
    folder = demo_images_dir()
    source = sorted(folder.glob("*.jpg"))[3]
    original = Image.open(source).convert("RGB")
    queries = [
        original.rotate(12, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=(0, 0, 0)),
        ImageOps.mirror(original),
        ImageOps.expand(original, border=original.width // 10, fill=(255, 255, 255)),
    ]
    with Index.open(tmp_path / "db") as index:
        index.add([folder])
        cal = index.calibration
        assert cal is not None and cal.ok
        for result in index.search_many(queries, k=3):
            best = result.results[0]
            assert Path(best.path).name == source.name
            assert best.probability is not None and best.probability >= 0.8, (best.score, best.probability)
            assert best.label in ("duplicate", "very similar")


def test_precision_threshold_holds_on_fresh_pairs_despite_a_thin_non_copy_sample() -> None:
    """~190 non-copies say nothing about a 1% false-positive tail; the fitted tail must keep 0.99."""
    precisions = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        cal = build_calibration(rng.normal(0.93, 0.04, 200), rng.normal(0.7, 0.07, 190), rng.normal(0.7, 0.07, 190))
        t = threshold_for_precision(cal, 0.99)
        tp = (rng.normal(0.93, 0.04, 100_000) >= t).mean()
        fp = (rng.normal(0.7, 0.07, 100_000) >= t).mean()
        assert tp > 0.3  # still finds copies
        precisions.append(tp / (tp + fp))
    assert np.mean(precisions) >= 0.99 and min(precisions) >= 0.98
