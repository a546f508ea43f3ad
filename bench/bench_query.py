"""Query latency: lookalike's warm in-process search vs the original app's approach, side by side.

The original: a pickled list of (vector, filename), ``torch.nn.functional.cosine_similarity`` called
once per item in a Python loop, a pandas Series sorted for the top 4. lookalike: one batched matrix
product (exact, ``flat``) or an HNSW graph (``auto`` above 20k items), over the on-disk store.

Vectors: real MobileNetV2 embeddings of real photos, plus mixtures of them (non-negative, clustered
like real features) to reach N. Usage: python bench/bench_query.py [--sizes 8000 100000]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # lookalike_data

from _util import pct, print_table, time_each
from lookalike import Index
from lookalike.imaging.load import load_image
from lookalike.store.base import ItemRecord
from lookalike_data import photos


def collection_vectors(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n unit vectors: the real ones, then convex mixtures of 2-3 real ones plus a little noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    m = min(n, len(real))
    out[:m] = real[:m]
    for start in range(m, n, 8192):
        stop = min(n, start + 8192)
        idx = rng.integers(0, len(real), (stop - start, 3))
        weights = rng.dirichlet([0.7, 0.7, 0.7], stop - start).astype(np.float32)
        mixed = np.einsum("bk,bkd->bd", weights, real[idx])
        mixed += np.abs(rng.normal(0, 0.01, mixed.shape)).astype(np.float32)
        out[start:stop] = mixed
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def fill_index(db: Path, vectors: np.ndarray, identity: dict[str, object], kind: str) -> Index:
    index = Index.open(db, index_kind=kind)
    index.store.set_model_identity(identity)
    for start in range(0, len(vectors), 20000):
        chunk = vectors[start : start + 20000]
        records = [
            ItemRecord(f"/bench/img{start + i:07d}.jpg", f"{start + i:064x}", 1, 1, 224, 224) for i in range(len(chunk))
        ]
        index.store.add(records, chunk)
    return index


def baseline_search(items: list[tuple[np.ndarray, str]], query: np.ndarray) -> list[str]:
    """The original app's search, as written there (the pickle is loaded once, outside the timing)."""
    import pandas as pd
    import torch

    q = torch.from_numpy(query)
    sims = {}
    for vector, filename in items:
        sims[filename] = torch.nn.functional.cosine_similarity(q, torch.from_numpy(vector), dim=0).item()
    return list(pd.Series(sims).sort_values(ascending=False).index[:4])


def recall_at_10(index: Index, vectors: np.ndarray, queries: np.ndarray) -> float:
    """Overlap of the store's top 10 with exact top 10 (item ids are row numbers + 1 here)."""
    truth = np.argsort(-(vectors @ queries.T), axis=0)[:10].T
    found = index.store.search(queries, 10)
    return float(
        np.mean([len({h.id - 1 for h in hits} & set(t.tolist())) / 10 for hits, t in zip(found, truth, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8000, 100000])
    parser.add_argument("--held-out", type=int, default=50, help="real photos kept out as queries")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--baseline-queries", type=int, default=5)
    args = parser.parse_args()

    files = photos()
    n_base = len(files) - args.held_out
    probe = Index.open(Path(tempfile.mkdtemp()) / "probe")
    model = probe.model
    pictures = [load_image(p, draft_size=224).image for p in files]
    real = model.embed(pictures[:n_base])
    query_pictures = pictures[n_base:]
    identity = model.spec.identity()

    rows = []
    queries = model.embed(query_pictures)
    n_queries = len(queries)
    for n in args.sizes:
        vectors = collection_vectors(real, n)
        for kind in ("flat", "auto"):
            if kind == "auto" and n <= 20000:
                continue
            index = fill_index(Path(tempfile.mkdtemp()) / "db", vectors, identity, kind)
            index._model = model  # share the loaded model (same identity)
            t0 = time.perf_counter()
            index.store.search(vectors[:1], 4)  # builds the search structure (HNSW for auto at 100k)
            build_s = time.perf_counter() - t0
            picks = [queries[i % n_queries][None] for i in range(args.queries)]
            search_ms = time_each(lambda q, index=index: index.store.search(q, 4), picks)
            images = [query_pictures[i % n_queries] for i in range(min(50, args.queries))]
            full_ms = time_each(lambda im, index=index: index.search(im, k=4), images, warmup=10)
            recall = recall_at_10(index, vectors, queries)
            rows.append(
                [
                    f"{n:,}",
                    index.store.info()["index"],
                    f"{build_s:.1f}",
                    pct(search_ms, 50),
                    pct(search_ms, 99),
                    pct(full_ms, 50),
                    pct(full_ms, 99),
                    f"{recall:.3f}",
                ]
            )
            index.close()

        # The original approach, same vectors, same queries.
        pkl = Path(tempfile.mkdtemp()) / "vectors.pkl"
        with open(pkl, "wb") as handle:
            pickle.dump([(v, f"img{i:07d}.jpg") for i, v in enumerate(vectors)], handle)
        with open(pkl, "rb") as handle:
            items = pickle.load(handle)
        base_ms = time_each(
            lambda q, items=items: baseline_search(items, q), list(queries[: args.baseline_queries]), warmup=0
        )
        rows.append([f"{n:,}", "original (loop + pandas)", "-", pct(base_ms, 50), pct(base_ms, 99), "-", "-", "1.000"])
        ours = [r for r in rows if r[0] == f"{n:,}" and not str(r[1]).startswith(("original", "**"))]
        best = min(float(r[3]) for r in ours)
        rows.append(
            [f"{n:,}", f"**speed-up of the search part: {pct(base_ms, 50) / best:,.0f}x**", "", "", "", "", "", ""]
        )
        del items

    print_table(
        "Query latency (warm, in-process, k=4, 2 cores)",
        [
            "N",
            "search",
            "build s",
            "search p50 ms",
            "search p99 ms",
            "embed+search p50 ms",
            "embed+search p99 ms",
            "recall@10",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
