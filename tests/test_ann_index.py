"""The embedded store's index factory: parsing, recall, incremental adds/deletes, caches, rebuilds."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.store.base import ItemRecord, StoreError
from lookalike.store.local import LocalStore
from lookalike.store.vector_index import AnnIndex, FlatIndex, IndexSpecError, auto_spec, parse_spec, probe_file

DIM = 64


def clustered(n: int, seed: int, dim: int = DIM, clusters: int = 40) -> np.ndarray:
    """Non-negative clustered unit vectors (like pooled CNN features), not uniform noise.

    Like real embeddings, within-cluster variation lies mostly in a few directions (here 12).
    """
    rng = np.random.default_rng(1234)
    centres = np.maximum(rng.normal(size=(clusters, dim)), 0)
    basis = rng.normal(size=(12, dim)) / np.sqrt(12)
    rng = np.random.default_rng(seed)
    noise = 0.6 * rng.normal(size=(n, 12)) @ basis + 0.1 * rng.normal(size=(n, dim))
    x = np.maximum(centres[rng.integers(0, clusters, n)] + noise, 0)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def records(start: int, n: int) -> list[ItemRecord]:
    return [ItemRecord(f"/img/{i:06d}.jpg", f"{i:064x}", 10, 1, 8, 8) for i in range(start, start + n)]


def make_store(path, kind: str | None, x: np.ndarray) -> tuple[LocalStore, list[int]]:
    store = LocalStore(path, index_kind=kind)
    store.set_model_identity({"name": "synthetic", "dim": x.shape[1]})
    ids = store.add(records(0, len(x)), x)
    return store, ids


def recall_vs_exact(store: LocalStore, ids: list[int], x: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :k]
    hits = store.search(queries, k)
    id_arr = np.asarray(ids)
    return float(
        np.mean([len({h.id for h in hs} & set(id_arr[e].tolist())) / k for hs, e in zip(hits, exact, strict=False)])
    )


@pytest.mark.parametrize(
    ("text", "factory", "rerank"),
    [
        ("ivf4096,sq8", "IVF4096,SQ8", 64),
        ("IVF16384, PQ64", "IVF16384,PQ64", 256),
        ("pca256,ivf1024,sq8", "PCA256,IVF1024,SQ8", 128),
        ("hnsw", "HNSW32", 0),
        ("hnsw16,ef128", "HNSW16", 0),
        ("ivf256,flat,nprobe8", "IVF256,Flat", 0),
        ("ivf256,pq16,rerank500", "IVF256,PQ16", 500),
        ("pca128", "PCA128,Flat", 128),
        ("ivf64,sq8,norerank", "IVF64,SQ8", 0),
    ],
)
def test_parse_factory_strings(text: str, factory: str, rerank: int) -> None:
    spec = parse_spec(text, 1280)
    assert spec.faiss_factory() == factory
    assert spec.rerank == rerank


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("ivf", "ivf"),
        ("ivf64,sq7", "sq4, sq6 or sq8"),
        ("ivf64,pq", "sub-quantisers"),
        ("pca2048,ivf64,sq8", "does not reduce"),
        ("ivf64,pq48", "multiple of 48"),
        ("lsh", "unexpected"),
        ("nprobe8", "names no index"),
    ],
)
def test_bad_factory_strings_say_why(text: str, why: str) -> None:
    with pytest.raises(IndexSpecError, match=why):
        parse_spec(text, 1280)


def test_bad_spec_is_a_store_error(tmp_path) -> None:
    with pytest.raises(StoreError, match="unexpected"):
        LocalStore(tmp_path / "db", index_kind="kdtree")


def test_auto_policy_exact_then_ivf() -> None:
    assert auto_spec(20_000, 1280).kind == "flat"
    assert auto_spec(400_000, 64).kind == "flat"  # 64-d hashes: 400k is the same ~4 ms scan
    big = auto_spec(1_000_000, 1280)
    assert (big.kind, big.pca, big.nlist, big.encoding) == ("ivf", 0, 4096, "sq8")  # full width: recall
    assert big.rerank > 0 and big.nprobe == 0  # probes are measured at build time
    assert auto_spec(4_000_000, 1280).nlist == 8192
    assert auto_spec(100_000, 1280).nlist == 1024
    assert auto_spec(100_000, 128).pca == 0


@pytest.mark.parametrize(
    "kind",
    [
        "ivf64,sq8",
        "ivf64,flat",
        "hnsw16",
        "pca16,ivf32,sq8",
        "sq8",
    ],
)
def test_ann_recall_and_cache(tmp_path, kind: str) -> None:
    x = clustered(12_000, seed=1)
    queries = clustered(100, seed=2)
    store, ids = make_store(tmp_path / "db", kind, x)
    store.save_search_index()
    assert isinstance(store._ensure_search(), AnnIndex)
    assert recall_vs_exact(store, ids, x, queries) >= 0.95
    caches = list((tmp_path / "db").glob("ann-*.faiss"))
    assert len(caches) == 1
    store.close()
    reopened = LocalStore(tmp_path / "db")  # the recorded index kind, the saved cache
    assert reopened.index_kind == parse_spec(kind).text
    search = reopened._ensure_search()
    assert isinstance(search, AnnIndex) and search.path == caches[0] and search.tail == 0
    assert recall_vs_exact(reopened, ids, x, queries) >= 0.95
    reopened.close()


def test_adds_are_searchable_at_once_and_deletes_vanish(tmp_path) -> None:
    x = clustered(12_000, seed=3)
    store, ids = make_store(tmp_path / "db", "ivf64,sq8", x)
    store.save_search_index()
    extra = clustered(50, seed=4)
    new_ids = store.add(records(100_000, 50), extra)
    search = store._ensure_search()
    assert isinstance(search, AnnIndex) and search.tail == 50  # not merged yet: scanned exactly
    top = store.search(extra, 1)
    assert [h[0].id for h in top] == new_ids
    store.remove(new_ids[:10] + ids[:100])
    gone = set(new_ids[:10] + ids[:100])
    for hits in store.search(np.vstack([extra, x[:100]]), 10):
        assert not gone & {h.id for h in hits}
    # A replaced path keeps its id but its old vector must not be found.
    store.add(records(200, 1), extra[:1])
    hit = store.search(extra[:1], 2)[0]
    assert hit[0].id == ids[200] and hit[0].score > 0.999
    assert store.search(x[200:201], 1)[0][0].id != ids[200]
    store.close()


def test_tail_merged_on_save_and_cache_replaced_atomically(tmp_path) -> None:
    x = clustered(12_000, seed=5)
    store, ids = make_store(tmp_path / "db", "ivf64,sq8", x)
    store.save_search_index()
    few = store.add(records(30_000, 100), clustered(100, seed=60))
    store.save_search_index()  # a small tail stays an exact scan: not worth rewriting the file
    assert store._ensure_search().tail == 100
    more = clustered(13_000, seed=6)
    more_ids = few + store.add(records(50_000, 13_000), more)
    store.save_search_index()
    caches = list((tmp_path / "db").glob("ann-*.faiss"))
    assert len(caches) == 1 and caches[0].name.endswith("-25100.faiss")
    assert not list((tmp_path / "db").glob(".*.tmp"))
    assert store._ensure_search().tail == 0
    all_x = np.vstack([x, clustered(100, seed=60), more])
    assert recall_vs_exact(store, ids + more_ids, all_x, clustered(80, seed=7)) >= 0.95
    store.close()


def test_grown_collection_retrains_in_background(tmp_path) -> None:
    x = clustered(12_000, seed=8)
    store, ids = make_store(tmp_path / "db", "ivf64,sq8", x)
    store.save_search_index()
    assert store._ensure_search().trained == 12_000
    more = clustered(40_000, seed=9)
    more_ids = store.add(records(50_000, 40_000), more)
    store.search(more[:1], 1)  # serves from the old index + exact tail, starts the retrain
    store.wait_for_index(120)
    assert store._bg_error is None
    search = store._ensure_search()
    assert isinstance(search, AnnIndex) and search.trained == 52_000 and search.tail == 0
    assert recall_vs_exact(store, ids + more_ids, np.vstack([x, more]), clustered(80, seed=10)) >= 0.95
    store.close()


def test_damaged_cache_is_rebuilt_not_trusted(tmp_path) -> None:
    x = clustered(12_000, seed=11)
    store, ids = make_store(tmp_path / "db", "ivf64,sq8", x)
    store.save_search_index()
    store.close()
    cache = next((tmp_path / "db").glob("ann-*.faiss"))
    cache.write_bytes(cache.read_bytes()[:1000])  # e.g. a disk that filled up under another tool
    reopened = LocalStore(tmp_path / "db")
    assert recall_vs_exact(reopened, ids, x, clustered(50, seed=12)) >= 0.95
    assert next((tmp_path / "db").glob("ann-*.faiss")).stat().st_size > 100_000
    reopened.close()


def test_compaction_invalidates_the_cache(tmp_path) -> None:
    x = clustered(12_000, seed=13)
    store, ids = make_store(tmp_path / "db", "ivf64,sq8", x)
    store.save_search_index()
    store.remove(ids[:6_000])
    assert store.compact()
    assert not list((tmp_path / "db").glob("ann-*.faiss"))
    keep = x[6_000:]
    assert recall_vs_exact(store, ids[6_000:], keep, clustered(50, seed=14)) >= 0.95
    store.close()


def test_too_few_items_to_train_stay_exact(tmp_path) -> None:
    x = clustered(500, seed=15)
    store, _ = make_store(tmp_path / "db", "ivf1024,sq8", x)
    assert isinstance(store._ensure_search(), FlatIndex)
    store.close()


def test_auto_is_exact_for_small_collections(tmp_path) -> None:
    x = clustered(2_000, seed=16)
    store, ids = make_store(tmp_path / "db", None, x)
    assert store.index_kind == "auto" and store.info()["index"] == "flat"
    assert recall_vs_exact(store, ids, x, x[:20]) == 1.0
    store.close()


def test_search_knobs_share_the_cache(tmp_path) -> None:
    x = clustered(12_000, seed=17)
    store, ids = make_store(tmp_path / "db", "ivf64,sq8", x)
    store.save_search_index()
    store.close()
    tuned = LocalStore(tmp_path / "db", index_kind="ivf64,sq8,nprobe4,rerank16")
    search = tuned._ensure_search()
    assert isinstance(search, AnnIndex) and search.spec.nprobe == 4 and search.spec.rerank == 16
    assert len(list((tmp_path / "db").glob("ann-*.faiss"))) == 1  # no rebuild for a search-time change
    assert recall_vs_exact(tuned, ids, x, clustered(50, seed=18)) > 0.5
    tuned.close()


def test_spec_that_cannot_fit_fails_before_any_work(tmp_path) -> None:
    store = LocalStore(tmp_path / "db", index_kind="pca256,ivf64,sq8")
    with pytest.raises(StoreError, match="does not reduce 64-d"):
        store.set_model_identity({"name": "synthetic", "dim": 64})
    store.close()
    ok = LocalStore(tmp_path / "db2", index_kind="ivf64,sq8")
    ok.set_model_identity({"name": "synthetic", "dim": 64})
    ok.close()
    with pytest.raises(StoreError, match="pq48"):
        LocalStore(tmp_path / "db2", index_kind="ivf64,pq48")


def test_ivf_without_nprobe_tunes_it_for_recall(tmp_path) -> None:
    x = clustered(12_000, seed=21)
    store, ids = make_store(tmp_path / "db", "ivf128,sq8", x)
    search = store._ensure_search()
    assert isinstance(search, AnnIndex)
    nprobe = search.nprobe
    assert nprobe is not None and 2 <= nprobe < 128  # measured, and cheaper than visiting every list
    assert recall_vs_exact(store, ids, x, clustered(200, seed=22)) >= 0.95  # fresh queries
    assert store.info()["index_nprobe"] == nprobe
    store.close()
    # the measured policy is saved beside the cache file: a reopened store uses it without re-measuring
    again = LocalStore(tmp_path / "db", index_kind="ivf128,sq8")
    reopened = again._ensure_search()
    assert isinstance(reopened, AnnIndex) and reopened.tuned is None
    assert reopened.probes == search.probes and reopened.nprobe == nprobe
    again.remove(ids[: len(ids) // 2])
    assert again.compact()  # slots renumbered: the index and its policy file are both void
    assert not list((tmp_path / "db").glob("ann-*"))
    again.close()


def test_queries_unlike_the_collection_visit_more_lists(tmp_path) -> None:
    x = clustered(12_000, seed=27)
    live = np.ones(len(x), bool)
    ann = AnnIndex.build(parse_spec("ivf128,sq8", DIM), x, live, len(x)).attach(x, live)
    assert ann.adaptive and ann.probes is not None and ann.probes.recall >= 0.97
    inside = clustered(100, seed=28)
    rng = np.random.default_rng(29)
    unlike = np.abs(rng.normal(size=(100, DIM))).astype(np.float32)  # no cluster structure at all
    unlike /= np.linalg.norm(unlike, axis=1, keepdims=True)
    assert ann._probe_counts(unlike).mean() > 1.5 * ann._probe_counts(inside).mean()
    truth = np.argsort(-(unlike @ x.T), axis=1)[:, :10]
    found = ann.search(unlike, 10)[1]
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist(), strict=True)]) >= 0.9


def test_tuning_picks_more_probes_for_a_stricter_target(tmp_path) -> None:
    x = clustered(12_000, seed=23)
    live = np.ones(len(x), bool)
    ann = AnnIndex.build(parse_spec("ivf128,sq8,norerank", DIM), x, live, len(x))
    loose = ann.tune_nprobe(x, live, target=0.5)
    strict = ann.tune_nprobe(x, live, target=0.999)
    assert loose[1] >= 0.5 and loose[0] < strict[0]
    assert strict[1] >= 0.999 or strict[0] == 128  # all lists visited when nothing less reaches it


def test_an_untuned_cache_file_gets_the_old_probe_rule(tmp_path) -> None:
    import faiss

    x = clustered(12_000, seed=25)
    live = np.ones(len(x), bool)
    spec = parse_spec("ivf128,sq8", DIM)
    ann = AnnIndex.build(spec, x, live, len(x))
    ann.probes = None  # as files written before tuning existed: no policy file,
    faiss.extract_index_ivf(ann.index).nprobe = 1  # and faiss' default nprobe
    path = ann.save(tmp_path, "ivf128_sq8", "vectors0")
    assert not probe_file(path).exists()
    assert AnnIndex.load(spec, path).nprobe == 16
