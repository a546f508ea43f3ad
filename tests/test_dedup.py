"""Duplicate groups: the k-NN graph, grouping without chaining, keep rules, marks, the real model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imagegen import center_crop, downscale, recompress
from lookalike.cli.app import app
from lookalike.dedup import anchored_groups, find_duplicate_groups, knn_edges, sweep
from lookalike.dedup.groups import adjacency, central_order
from lookalike.dedup.keep import choose_keep, keep_key
from lookalike.dedup.threshold import CalibrationUnavailable, precision_threshold
from lookalike.index import Index
from lookalike.search.calibration import build_calibration, fallback, save_calibration
from lookalike.store.base import ItemRecord
from lookalike.store.local import LocalStore

runner = CliRunner()


def _unit(angles_deg: list[float]) -> np.ndarray:
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


# -- grouping -------------------------------------------------------------------------------------
def test_a_b_c_chain_is_not_merged() -> None:
    """A~B and B~C but A !~ C: A and C are only ever grouped through the kept image B, never chained."""
    vecs = _unit([0, 20, 40])  # cos(20°)=0.94 >= 0.9 > cos(40°)=0.77
    threshold = 0.9
    adj = adjacency(knn_edges(vecs, 5, threshold))
    assert set(adj[0]) == {1} and set(adj[1]) == {0, 2} and set(adj[2]) == {1}
    # A is the best copy: it keeps B; C is not similar to A, so it is not pulled in through B.
    assert anchored_groups([0, 1, 2], adj) == [(0, [(1, pytest.approx(0.9397, abs=1e-3))])]
    # B is the best copy: A and C are both directly similar to the kept B.
    (anchor, members), *rest = anchored_groups([1, 0, 2], adj)
    assert anchor == 1 and {m for m, _ in members} == {0, 2} and not rest
    # complete linkage never puts A and C together, whatever the order.
    for order in ([0, 1, 2], [1, 0, 2], [2, 1, 0]):
        for anchor, members in anchored_groups(order, adj, vectors=vecs, threshold=threshold, linkage="complete"):
            assert {anchor, *(m for m, _ in members)} != {0, 1, 2}


def test_long_chain_does_not_become_one_giant_group() -> None:
    """60 images each 5° from the next: single linkage makes one group of 60; anchoring keeps them small."""
    vecs = _unit([5.0 * i for i in range(60)])  # 0..295°: no wrap-around
    threshold = float(np.cos(np.radians(7.5)))
    adj = adjacency(knn_edges(vecs, 8, threshold))
    groups = anchored_groups(list(range(60)), adj)
    assert max(1 + len(m) for _, m in groups) <= 3
    for anchor, members in groups:
        for member, score in members:
            assert float(vecs[anchor] @ vecs[member]) >= threshold - 1e-6
            assert score == pytest.approx(float(vecs[anchor] @ vecs[member]), abs=1e-5)


def test_anchor_is_the_central_copy_not_the_biggest() -> None:
    """The copy with most pixels is an edit at one side of the family, a downscale at the other side.

    Anchoring on the kept copy would judge the downscale against the bordered edit (cos 50° < t) and
    drop it; the central original anchors instead, so the whole family is one group.
    """
    vecs = _unit([25, 0, -25, 90])  # 0: bordered (most pixels, kept), 1: original, 2: downscaled, 3: other
    threshold = float(np.cos(np.radians(30)))
    adj = adjacency(knn_edges(vecs, 5, threshold))
    order = central_order(adj, len(vecs))
    assert order[0] == 1
    (anchor, members), *rest = anchored_groups(order, adj)
    assert anchor == 1 and {m for m, _ in members} == {0, 2} and not rest
    assert anchored_groups([0, 1, 2, 3], adj) == [(0, [(1, pytest.approx(float(np.cos(np.radians(25))), abs=1e-4))])]


def test_group_keeps_by_rule_and_scores_against_the_kept_copy(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "db")
    store.set_model_identity({"name": "toy", "version": "1", "dim": 2, "preprocessing": "none", "input_size": 8})
    recs = [
        ItemRecord("/p/bordered.jpg", "s0", 900, 3, 1200, 1000),
        ItemRecord("/p/original.jpg", "s1", 800, 1, 1000, 800),
        ItemRecord("/p/small.jpg", "s2", 100, 2, 300, 240),
    ]
    store.add(recs, _unit([25, 0, -25]))
    (group,) = find_duplicate_groups(store, float(np.cos(np.radians(30))))
    assert group.keep.path == "/p/bordered.jpg"
    assert [d.path for d in group.duplicates] == ["/p/original.jpg", "/p/small.jpg"]
    assert group.scores == [
        pytest.approx(float(np.cos(np.radians(25))), abs=1e-4),
        pytest.approx(float(np.cos(np.radians(50))), abs=1e-4),  # via the anchor, not directly
    ]
    assert find_duplicate_groups(store, 0.8, keep="oldest")[0].keep.path == "/p/original.jpg"


def test_knn_edges_match_brute_force_in_small_blocks() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(30, 64))
    vecs = np.repeat(centers, 4, axis=0) + 0.3 * rng.normal(size=(120, 64))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    k, threshold = 5, 0.8
    edges = knn_edges(vecs, k, threshold, block_rows=7)
    got = {(int(r), int(c)) for rows, cols, _ in edges for r, c in zip(rows, cols, strict=True)}
    full = vecs @ vecs.T
    np.fill_diagonal(full, -np.inf)
    want = set()
    for r in range(len(vecs)):
        for c in np.argsort(-full[r])[:k]:
            if full[r, c] >= threshold:
                want.add((r, int(c)))
    assert got == want and len(want) > 100


def test_forbidden_pairs_never_share_a_group() -> None:
    vecs = _unit([0, 5, 10])
    adj = adjacency(knn_edges(vecs, 5, 0.9))
    groups = anchored_groups([0, 1, 2], adj, forbidden={(0, 1)})
    assert groups == [(0, [(2, pytest.approx(float(np.cos(np.radians(10))), abs=1e-4))])]


# -- density margin -------------------------------------------------------------------------------
def _cloud(rng: np.random.Generator, n: int, cos: float, dim: int = 64) -> np.ndarray:
    """n unit vectors around a random centre whose pairwise cosine is about ``cos``."""
    centre = rng.normal(size=dim)
    centre /= np.linalg.norm(centre)
    noise = rng.normal(size=(n, dim)) / np.sqrt(dim)
    noise -= np.outer(noise @ centre, centre)  # orthogonal to the centre
    vecs = centre + np.sqrt(1 / cos - 1) * noise
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def _margin_store(tmp_path: Path, clouds: dict[str, np.ndarray], n_background: int = 200) -> LocalStore:
    rng = np.random.default_rng(1)
    background = rng.normal(size=(n_background, 64))
    parts = {**clouds, "bg": background / np.linalg.norm(background, axis=1, keepdims=True)}
    store = LocalStore(tmp_path / "db")
    store.set_model_identity({"name": "toy", "version": "1", "dim": 64, "preprocessing": "none", "input_size": 8})
    recs, vecs = [], []
    for name, cloud in parts.items():
        for i, v in enumerate(cloud):
            recs.append(ItemRecord(f"/p/{name}_{i:03d}.jpg", f"{name}-{i}", 100, i, 100, 100))
            vecs.append(v)
    store.add(recs, np.asarray(vecs, dtype=np.float32))
    return store


def _families(groups: list) -> list[set[str]]:  # type: ignore[type-arg]
    return [{Path(p).name.split("_")[0] for p in [g.keep.path, *(d.path for d in g.duplicates)]} for g in groups]


@pytest.mark.parametrize("method", ["exact", "ann"])
def test_margin_keeps_a_copy_family_and_drops_a_crowd_of_look_alikes(tmp_path: Path, method: str) -> None:
    """40 different-but-alike items (pairwise ~0.90, like upscaled Fashion-MNIST to a CNN) next to a
    family of 12 copies at the *same* pairwise score: only the family stands out from its crowd."""
    rng = np.random.default_rng(0)
    store = _margin_store(tmp_path, {"crowd": _cloud(rng, 40, 0.90), "fam": _cloud(rng, 12, 0.90)})
    groups = find_duplicate_groups(store, 0.80, margin=0.07, method=method)
    assert _families(groups) == [{"fam"}]
    assert len(groups[0].duplicates) == 11
    # without the rule (margin 0) the crowd pairs up, even at the old, stricter threshold
    plain = find_duplicate_groups(store, 0.86, margin=0.0, method=method)
    assert {"crowd"} in _families(plain) and sum(len(g.duplicates) for g in plain) > 20


def test_margin_big_family_survives_by_skipping_sure_neighbours(tmp_path: Path) -> None:
    """A family of 12 close copies (~0.96) with k=8: the 8th neighbour is itself a copy, so without
    skipping the ``sure`` neighbours the family would fail its own margin and be dropped."""
    rng = np.random.default_rng(2)
    store = _margin_store(tmp_path, {"fam": _cloud(rng, 12, 0.965), "crowd": _cloud(rng, 30, 0.90)})
    groups = find_duplicate_groups(store, 0.80, margin=0.07, k=8)
    assert _families(groups) == [{"fam"}] and len(groups[0].duplicates) == 11
    dropped = find_duplicate_groups(store, 0.80, margin=0.07, k=8, sure=1.01)  # no skipping
    assert sum(len(g.duplicates) for g in dropped) < 11


def test_margin_huge_family_of_near_identical_copies_pairs_through_the_bypass(tmp_path: Path) -> None:
    """15 copies at ~0.99 with k=4: even after skipping 4 sure neighbours the reference is a copy;
    scores >= ``bypass`` (0.98) pair anyway, so the family loses nothing to the plain threshold (with
    k=4 the graph holds only a few edges per image, so not necessarily all 15 are reached)."""
    rng = np.random.default_rng(3)
    store = _margin_store(tmp_path, {"fam": _cloud(rng, 15, 0.99), "crowd": _cloud(rng, 30, 0.90)})
    groups = find_duplicate_groups(store, 0.80, margin=0.07, k=4)
    plain = [g for g in find_duplicate_groups(store, 0.95, margin=0.0, k=4) if "fam" in g.keep.path]
    assert _families(groups) == [{"fam"}] and len(groups[0].duplicates) >= max(10, len(plain[0].duplicates))
    no_bypass = find_duplicate_groups(store, 0.80, margin=0.07, k=4, bypass=1.01)
    assert sum(len(g.duplicates) for g in no_bypass) < len(groups[0].duplicates)


def test_knn_edges_reference_scores() -> None:
    """The reference is the k-th neighbour after the sure ones; -inf below the floor; NaN if too few rows."""
    vecs = _unit([0, 1, 2, 3, 60, 120])  # cos: 1°=0.9998, 2°=0.9994, 3°=0.9986, 60°=0.5
    refs = np.zeros(len(vecs), dtype=np.float32)
    list(knn_edges(vecs, 2, 0.9, refs=refs, floor=0.4, sure=np.inf))
    assert refs[0] == pytest.approx(float(np.cos(np.radians(2))), abs=1e-5)  # 2nd neighbour of 0°: 2°
    assert refs[5] == -np.inf  # 120°: its 2nd neighbour (0°, cos -0.5) is below the floor
    list(knn_edges(vecs, 2, 0.9, refs=refs, floor=0.4, sure=0.999))
    # 0°'s sure neighbours (1°, 2°) are skipped: its reference is the 2nd after them, 60° (0.5)
    assert refs[0] == pytest.approx(0.5, abs=1e-5)
    list(knn_edges(vecs, 8, 0.9, refs=refs, floor=0.4))
    assert np.isnan(refs).all()  # 6 rows cannot have an 8th neighbour


def test_margin_in_a_tiny_collection_needs_threshold_plus_margin(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "db")
    store.set_model_identity({"name": "toy", "version": "1", "dim": 2, "preprocessing": "none", "input_size": 8})
    store.add([ItemRecord(f"/p/{i}.jpg", f"s{i}", 1, i, 10, 10) for i in range(3)], _unit([0, 20, 90]))
    # cos 20° = 0.940: above 0.90 but below 0.90 + 0.07, and there is no crowd to measure
    assert find_duplicate_groups(store, 0.90, margin=0.07) == []
    assert len(find_duplicate_groups(store, 0.90, margin=0.0)) == 1
    assert len(find_duplicate_groups(store, 0.86, margin=0.07)) == 1  # 0.86 + 0.07 <= 0.940


def test_default_threshold_follows_the_margin(tmp_path: Path) -> None:
    from lookalike.dedup.groups import default_margin, default_threshold

    assert default_margin("mobilenet_v2") == 0.07 and default_threshold("mobilenet_v2") == 0.80
    assert default_threshold("mobilenet_v2", 0.0) == 0.86
    # mobilenet_v2_ml's own measured pair (bench_neardup --quick, docs/models.md)
    assert default_margin("mobilenet_v2_ml") == 0.07 and default_threshold("mobilenet_v2_ml") == 0.78
    assert default_threshold("mobilenet_v2_ml", 0.0) == 0.86
    assert default_margin("dhash") == 0.0 and default_threshold("dhash") == 0.6875
    with pytest.raises(ValueError, match="margin"):
        find_duplicate_groups(LocalStore(tmp_path / "db"), 0.8, margin=-0.1)


# -- keep rules -------------------------------------------------------------------------------------
def _rec(path: str, w: int, h: int, size: int, mtime: int, i: int = -1) -> ItemRecord:
    return ItemRecord(path=path, sha256=f"sha-{path}", size=size, mtime_ns=mtime, width=w, height=h, id=i)


def test_keep_rules() -> None:
    big_new = _rec("/c/big_new.jpg", 4000, 3000, 2_000_000, 30)
    big_old_small = _rec("/c/long/path/big_old.jpg", 4000, 3000, 1_000_000, 10)
    small_old = _rec("/s.png", 400, 300, 5_000_000, 5)
    records = [big_new, big_old_small, small_old]
    assert choose_keep(records) is big_new  # most pixels, then largest file
    assert choose_keep(records, "oldest") is small_old
    assert choose_keep(records, "newest") is big_new
    assert choose_keep(records, "largest") is small_old
    assert choose_keep(records, "smallest") is big_old_small
    assert choose_keep(records, "shortest-path") is small_old
    # ties fall back on the default: same pixels and size -> the older one
    twin = _rec("/c/twin.jpg", 4000, 3000, 2_000_000, 1)
    assert choose_keep([big_new, twin]) is twin
    with pytest.raises(ValueError, match="unknown keep rule"):
        keep_key("prettiest")


# -- the store-level pipeline on constructed vectors ---------------------------------------------------
@pytest.fixture
def toy_store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "db")
    store.set_model_identity({"name": "toy", "version": "1", "dim": 2, "preprocessing": "none", "input_size": 8})
    recs = [
        ItemRecord("/p/a_original.jpg", "sha-a", 900, 1, 300, 300),
        ItemRecord("/p/a_copy.jpg", "sha-a", 900, 2, 300, 300),  # same bytes
        ItemRecord("/p/a_small.jpg", "sha-a2", 100, 3, 100, 100),  # near duplicate of a
        ItemRecord("/p/b.jpg", "sha-b", 500, 4, 200, 200),  # unrelated
    ]
    store.add(recs, _unit([0, 0, 3, 90]))
    return store


def test_exact_and_near_duplicates_group_with_the_best_copy_kept(toy_store: LocalStore) -> None:
    groups = find_duplicate_groups(toy_store, 0.95)
    assert [g.to_dict() for g in groups] == [
        {
            "keep": "/p/a_original.jpg",
            "duplicates": ["/p/a_copy.jpg", "/p/a_small.jpg"],
            "scores": [1.0, pytest.approx(float(np.cos(np.radians(3))), abs=1e-4)],
        }
    ]
    assert find_duplicate_groups(toy_store, 0.95, keep="newest")[0].keep.path == "/p/a_small.jpg"


def test_not_dup_marks_are_respected_and_persist(toy_store: LocalStore, tmp_path: Path) -> None:
    assert toy_store.mark_not_duplicates([("sha-a2", "sha-a")]) == 1
    assert toy_store.mark_not_duplicates([("sha-a", "sha-a2")]) == 0  # same pair, either order
    toy_store.close()
    reopened = LocalStore(tmp_path / "db", create=False)
    groups = find_duplicate_groups(reopened, 0.95)
    # the exact copy is still a duplicate; the marked near-duplicate is not
    assert [g.to_dict() for g in groups] == [
        {"keep": "/p/a_original.jpg", "duplicates": ["/p/a_copy.jpg"], "scores": [1.0]}
    ]


def test_precision_uses_the_collection_calibration(toy_store: LocalStore) -> None:
    with pytest.raises(CalibrationUnavailable, match="lookalike calibrate"):
        precision_threshold(toy_store, 0.99)  # never calibrated
    save_calibration(toy_store, fallback("only 4 images indexed", 4, "toy"))
    with pytest.raises(CalibrationUnavailable, match="only 4 images indexed"):
        precision_threshold(toy_store, 0.99)
    rng = np.random.default_rng(0)
    copies = np.clip(rng.normal(0.93, 0.03, 300), -1, 1)
    neighbours = np.clip(rng.normal(0.6, 0.08, 500), -1, 1)
    cal = build_calibration(copies, neighbours, neighbours - 0.05)
    cal.model, cal.n_items = "toy", 4
    save_calibration(toy_store, cal)
    loose, strict = precision_threshold(toy_store, 0.9), precision_threshold(toy_store, 0.999)
    assert 0.6 < loose < strict <= 1.0
    assert strict == pytest.approx(cal.threshold_for_precision(0.999))
    with pytest.raises(ValueError, match="between 0 and 1"):
        precision_threshold(toy_store, 1.0)
    cal.model = "another_model"
    save_calibration(toy_store, cal)
    with pytest.raises(CalibrationUnavailable, match="another_model"):
        precision_threshold(toy_store, 0.99)


def test_cli_precision_without_calibration_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "db"
    store = LocalStore(db)
    store.set_model_identity({"name": "phash", "version": "1", "dim": 2, "preprocessing": "none", "input_size": 8})
    store.add([ItemRecord("/p/a.jpg", "sha-a", 9, 1, 30, 30)], _unit([0]))
    store.close()
    result = runner.invoke(app, ["dups", "--db", str(db), "--precision", "0.99"])
    assert result.exit_code == 2
    assert "lookalike calibrate" in result.output and "Traceback" not in result.output


# -- the real model on real photos -------------------------------------------------------------------
@pytest.fixture(scope="module")
def photo_collection(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """5 real photos plus real edits of two of them, indexed with mobilenet_v2."""
    from lookalike_data import photos

    base = tmp_path_factory.mktemp("photos")
    root = base / "collection"
    root.mkdir()
    originals = []
    for i, src in enumerate(photos(5)):
        image = Image.open(src).convert("RGB")
        image.thumbnail((640, 640))
        path = root / f"photo{i}.jpg"
        image.save(path, quality=92)
        originals.append(path)
    p0 = Image.open(originals[0])
    shutil.copyfile(originals[0], root / "photo0_exact_copy.jpg")
    downscale(p0, 0.5).save(root / "photo0_half.jpg", quality=92)
    recompress(p0, 25).save(root / "photo0_q25.jpg", quality=25)
    center_crop(Image.open(originals[1]), 0.9).save(root / "photo1_crop90.png")
    outside = base / "outside_query.jpg"
    recompress(Image.open(originals[2]), 40).save(outside, quality=40)
    db = base / "db"
    with Index.open(db, model="mobilenet_v2") as index:
        index.add([root])
    return {"root": root, "db": db, "outside": outside}


@pytest.mark.slow
def test_real_edits_are_grouped_and_distinct_photos_are_not(photo_collection: dict[str, object]) -> None:
    root, db = photo_collection["root"], photo_collection["db"]
    with Index.open(db, create=False) as index:
        groups = find_duplicate_groups(index.store)
    got = {Path(g.keep.path).name: sorted(Path(d).name for d in g.to_dict()["duplicates"]) for g in groups}
    assert got == {
        "photo0.jpg": ["photo0_exact_copy.jpg", "photo0_half.jpg", "photo0_q25.jpg"],
        "photo1.jpg": ["photo1_crop90.png"],
    }
    g0 = next(g for g in groups if g.keep.path == str(root / "photo0.jpg"))
    exact = g0.duplicates.index(next(d for d in g0.duplicates if d.path.endswith("exact_copy.jpg")))
    assert g0.scores[exact] == 1.0
    assert all(0.86 <= s <= 1.0 for s in g0.scores)


@pytest.mark.slow
def test_cli_dups_json_contract_and_html(photo_collection: dict[str, object], tmp_path: Path) -> None:
    db, root = photo_collection["db"], photo_collection["root"]
    html = tmp_path / "report.html"
    result = runner.invoke(app, ["dups", "--db", str(db), "--json", "--html", str(html)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {"groups"} <= set(doc)
    for group in doc["groups"]:
        assert set(group) == {"keep", "duplicates", "scores"}
        assert len(group["duplicates"]) == len(group["scores"]) and group["duplicates"]
        assert all(isinstance(s, float) and 0 < s <= 1 for s in group["scores"])
    assert sorted(g["keep"] for g in doc["groups"]) == [str(root / "photo0.jpg"), str(root / "photo1.jpg")]
    page = html.read_text()
    assert len(re.findall(r'src="data:image/jpeg;base64,[A-Za-z0-9+/=]{200,}"', page)) == 6  # 2 keeps + 4 dups
    assert "photo1_crop90.png" in page
    # a stricter threshold drops the weaker edits but not the exact copy
    strict = json.loads(runner.invoke(app, ["dups", "--db", str(db), "--json", "--threshold", "0.9999"]).stdout)
    assert [g["duplicates"] for g in strict["groups"]] == [[str(root / "photo0_exact_copy.jpg")]]
    # the density margin is on by default for mobilenet_v2; --margin 0 is the plain 0.86 threshold
    assert doc["margin"] == 0.07 and doc["threshold"] == 0.80
    plain = json.loads(runner.invoke(app, ["dups", "--db", str(db), "--json", "--margin", "0"]).stdout)
    assert plain["margin"] == 0.0 and plain["threshold"] == 0.86
    assert sorted(g["keep"] for g in plain["groups"]) == sorted(g["keep"] for g in doc["groups"])


@pytest.mark.slow
def test_sweep_with_outside_example_and_unlike(photo_collection: dict[str, object]) -> None:
    db, root, outside = photo_collection["db"], photo_collection["root"], photo_collection["outside"]
    with Index.open(db, create=False) as index:
        result = sweep(index, [outside], threshold=0.85)
        assert [Path(m.record.path).name for m in result.matches] == ["photo2.jpg"]
        # photo0's family: liked via an indexed file, exact copy and edits come along
        fam = sweep(index, [str(root / "photo0.jpg")], threshold=0.85)
        assert {Path(m.record.path).name for m in fam.matches} == {
            "photo0.jpg",
            "photo0_exact_copy.jpg",
            "photo0_half.jpg",
            "photo0_q25.jpg",
        }
        # an unlike example identical to a like example removes everything
        none = sweep(index, [str(root / "photo0.jpg")], [str(root / "photo0_exact_copy.jpg")], threshold=0.85)
        assert none.matches == []
        # a low threshold sweeps more, but the unlike example carves its own photo out
        loose = sweep(index, [outside], [str(root / "photo3.jpg")], threshold=-1.0)
        names = {Path(m.record.path).name for m in loose.matches}
        assert "photo2.jpg" in names and "photo3.jpg" not in names
        assert all(m.score > (m.unlike_score or -2) for m in loose.matches)
