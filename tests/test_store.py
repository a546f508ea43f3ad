"""The embedded store: atomic writes, compaction, HNSW cache, several handles on one folder."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest

from lookalike.store.base import ItemRecord, ModelMismatchError, StoreError
from lookalike.store.local import LocalStore

IDENTITY = {"name": "test", "version": "1", "dim": 16, "preprocessing": "none", "input_size": 1}


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _records(n: int, prefix: str = "/x") -> list[ItemRecord]:
    return [ItemRecord(f"{prefix}/{i}.jpg", f"{prefix}{i}", 1, 1, 10, 10) for i in range(n)]


def _store(path: Path, **kw: object) -> LocalStore:
    store = LocalStore(path, **kw)  # type: ignore[arg-type]
    store.set_model_identity(IDENTITY)
    return store


def test_exact_search_matches_brute_force(tmp_path: Path) -> None:
    store = _store(tmp_path / "db")
    vecs = _vectors(500)
    ids = store.add(_records(500), vecs)
    queries = _vectors(5, seed=1)
    truth = np.argsort(-(queries @ vecs.T), axis=1)[:, :7]
    for hits, want in zip(store.search(queries, 7), truth, strict=True):
        assert [h.id for h in hits] == [ids[j] for j in want]
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_replace_remove_compact_and_reopen(tmp_path: Path) -> None:
    store = _store(tmp_path / "db")
    vecs = _vectors(100)
    ids = store.add(_records(100), vecs)
    new_vec = _vectors(1, seed=9)
    [same_id] = store.add([ItemRecord("/x/50.jpg", "changed", 2, 2, 10, 10)], new_vec)
    assert same_id == ids[50]  # replacing a path keeps its id
    assert np.allclose(store.vectors([ids[0], ids[50]]), [vecs[0], new_vec[0]])  # builds the id -> slot table
    assert store.remove(ids[:40]) == 40
    with pytest.raises(KeyError):
        store.vectors([ids[0]])  # the table follows removals in this process
    [extra_id] = store.add([ItemRecord("/x/new.jpg", "new", 2, 2, 10, 10)], _vectors(1, seed=11))
    assert np.allclose(store.vectors([extra_id])[0], _vectors(1, seed=11)[0])  # ... and additions
    assert store.remove([extra_id]) == 1
    assert store.compact(min_dead_fraction=0.3)
    assert len(list((tmp_path / "db").glob("vectors-*.f32"))) == 1
    reopened = LocalStore(tmp_path / "db")
    assert len(reopened) == 60
    got = reopened.vectors([ids[50], ids[99]])
    assert np.allclose(got[0], new_vec[0]) and np.allclose(got[1], vecs[99])
    # in the order asked, repeats kept, across the 900-id chunks of the lookup
    order = [ids[99], ids[45], ids[99], *ids[40:]] * 20
    expected = {ids[j]: vecs[j] for j in range(40, 100)} | {ids[50]: new_vec[0]}
    assert np.allclose(reopened.vectors(order), np.stack([expected[i] for i in order]))
    with pytest.raises(KeyError, match=str(ids[0])):
        reopened.vectors([ids[50], ids[0]])  # removed
    assert reopened.search(new_vec, 1)[0][0].id == ids[50]
    assert reopened.get(ids[50]).sha256 == "changed"  # type: ignore[union-attr]
    assert {h.id for h in reopened.search(vecs[:40], 1)[0]}.isdisjoint(ids[:40])


def test_uncommitted_tail_is_ignored_and_cut(tmp_path: Path) -> None:
    store = _store(tmp_path / "db")
    store.add(_records(10), _vectors(10))
    vector_file = next((tmp_path / "db").glob("vectors-*.f32"))
    with open(vector_file, "ab") as handle:  # what a writer killed before its commit leaves behind
        handle.write(b"\x00" * 16 * 4 * 3)
    reopened = LocalStore(tmp_path / "db")
    assert len(reopened) == 10 and reopened.search(_vectors(1), 3)[0]
    reopened.add(_records(5, "/y"), _vectors(5, seed=3))
    assert vector_file.stat().st_size == 15 * 16 * 4


def test_model_identity_is_enforced(tmp_path: Path) -> None:
    store = _store(tmp_path / "db")
    with pytest.raises(ModelMismatchError, match="version"):
        store.set_model_identity({**IDENTITY, "version": "2"})
    with pytest.raises(StoreError, match="16-d"):
        store.add(_records(1), np.ones((1, 8), dtype=np.float32))


def test_refuses_a_folder_that_is_not_an_index(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(StoreError, match="not a lookalike index"):
        LocalStore(tmp_path / "photos")


def test_hnsw_is_cached_and_extended_on_reopen(tmp_path: Path) -> None:
    store = _store(tmp_path / "db", index_kind="hnsw16")
    vecs = _vectors(1000)
    ids = store.add(_records(1000), vecs)
    assert str(store.info()["index"]).startswith("hnsw")
    hits = store.search(vecs[:20], 1)
    assert sum(h[0].id == ids[i] for i, h in enumerate(hits)) >= 19
    store.save_search_index()
    assert list((tmp_path / "db").glob("ann-*.faiss"))
    more = _vectors(50, seed=5)
    more_ids = store.add(_records(50, "/z"), more)
    store.remove(ids[:10])
    reopened = LocalStore(tmp_path / "db")  # loads the saved graph; the 50 new slots are searchable too
    assert reopened.index_kind == "hnsw16"  # remembered by the index
    found = reopened.search(more, 1)
    assert sum(h[0].id == more_ids[i] for i, h in enumerate(found)) >= 48
    assert all(h.id not in ids[:10] for row in reopened.search(vecs[:10], 5) for h in row)


def test_a_second_handle_sees_the_writers_commits(tmp_path: Path) -> None:
    writer = _store(tmp_path / "db")
    reader = LocalStore(tmp_path / "db")
    writer.add(_records(5), _vectors(5))
    assert len(reader.search(_vectors(1), 10)[0]) == 5
    reader_ids = reader.add(_records(3, "/r"), _vectors(3, seed=2))  # the reader may write too
    assert len(writer.search(_vectors(1), 10)[0]) == 8
    assert writer.get(reader_ids[0]) is not None


def test_concurrent_searches_while_adding(tmp_path: Path) -> None:
    store = _store(tmp_path / "db")
    store.add(_records(50), _vectors(50))
    errors: list[BaseException] = []

    def searcher() -> None:
        try:
            for _ in range(200):
                hits = store.search(_vectors(2, seed=7), 5)
                assert all(len(h) == 5 for h in hits)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for batch in range(20):
        store.add(_records(10, f"/b{batch}"), _vectors(10, seed=100 + batch))
    for t in threads:
        t.join()
    assert not errors
    assert len(store) == 250


def test_opening_an_index_writes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path / "db")
    store.add(_records(3), _vectors(3))
    before = (store.get_meta("generation"), store.get_meta("updated_at"))
    store.close()
    again = LocalStore(tmp_path / "db")
    again.search(_vectors(1), 2)
    assert (again.get_meta("generation"), again.get_meta("updated_at")) == before


def test_vector_rows_read_lazily_and_match_all_vectors(tmp_path: Path) -> None:
    store = _store(tmp_path / "db")
    vecs = _vectors(50)
    ids = store.add(_records(50), vecs)
    store.remove(ids[10:20])
    all_ids, all_vecs = store.all_vectors()
    lazy_ids, rows = store.vector_rows()
    assert lazy_ids.tolist() == all_ids.tolist() and rows.shape == all_vecs.shape
    assert isinstance(rows.matrix, np.memmap)  # a view of the file, not a copy in RAM
    np.testing.assert_array_equal(rows[:], all_vecs)
    picks = np.array([30, 2, 17, 2])  # unsorted, repeated
    np.testing.assert_array_equal(rows[picks], all_vecs[picks])
    np.testing.assert_array_equal(rows[5], all_vecs[5])
    np.testing.assert_array_equal(rows.take(picks)[1:3], all_vecs[picks[1:3]])
    store.close()
