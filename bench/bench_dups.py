"""`dups` at scale: N synthetic clustered 1280-d vectors in a real LocalStore; time and peak RSS.

The collection has topic clusters (members ~0.5-0.7 similar, like "same kind of picture") and planted
near-duplicate groups (~0.95 similar). The grouping runs in a fresh child process so its peak RSS is
not inflated by building the store. Prints a table; also reports how many planted groups came back.

    python bench/bench_dups.py --n 100000                # auto: the store's ANN index above 20k items
    python bench/bench_dups.py --n 100000 --method exact # exact blocked k-NN graph (O(N^2 d))
    python bench/bench_dups.py --n 1000000 --db /tmp/d1m # keep the store to rerun without rebuilding

The ANN time includes building the store's `auto` index (IVF + SQ8 above 20k items; a store that
was searched before has it saved).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DIM = 1280


def build(db: Path, n: int, seed: int = 0) -> dict[str, int]:
    from lookalike.store.base import ItemRecord
    from lookalike.store.local import LocalStore

    rng = np.random.default_rng(seed)
    store = LocalStore(db, index_kind="flat")
    store.set_model_identity({"name": "mobilenet_v2", "version": "bench", "dim": DIM, "preprocessing": "synthetic"})
    topics = rng.normal(size=(max(1, n // 100), DIM)).astype(np.float32)
    n_groups = n // 50  # 2% of items are planted originals with 3 near-copies each
    planted = 0
    chunk = 20_000
    i = 0
    while i < n:
        m = min(chunk, n - i)
        vecs = topics[rng.integers(0, len(topics), m)] + 1.2 * rng.normal(size=(m, DIM)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        # plant groups: an original and 3 copies at ~0.95 similarity
        for start in range(0, m - 3, 200):
            if planted >= n_groups:
                break
            noise = rng.normal(size=(3, DIM)).astype(np.float32)
            noise /= np.linalg.norm(noise, axis=1, keepdims=True)
            vecs[start + 1 : start + 4] = vecs[start] + 0.33 * noise
            vecs[start + 1 : start + 4] /= np.linalg.norm(vecs[start + 1 : start + 4], axis=1, keepdims=True)
            planted += 1
        recs = [
            ItemRecord(f"/bench/{(i + j) // 1000:04d}/{i + j:07d}.jpg", f"{i + j:064x}", 1000 + j, i + j, 640, 480)
            for j in range(m)
        ]
        store.add(recs, vecs)
        i += m
    store.close()
    return {"planted_groups": planted}


def planted_found(groups: list) -> int:  # type: ignore[type-arg]
    """Planted groups recovered exactly: keep + 3 duplicates at consecutive item numbers."""
    found = 0
    for g in groups:
        numbers = sorted(int(Path(r.path).stem) for r in [g.keep, *g.duplicates])
        if len(numbers) == 4 and numbers == list(range(numbers[0], numbers[0] + 4)):
            found += 1
    return found


class MemorySampler(threading.Thread):
    """Peak heap (RssAnon) and peak memory-mapped file pages (RssFile), sampled every 0.2 s.

    ru_maxrss counts the pages of the memory-mapped vector file too (5 GB at 1M x 1280-d, all touched
    once); those are page cache the kernel can drop, so the heap is reported separately.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = {"RssAnon": 0.0, "RssFile": 0.0}
        self.stop = threading.Event()

    def sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.peak:
                self.peak[key] = max(self.peak[key], int(value.split()[0]) / 1024)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.sample()


def run(db: Path, method: str, threshold: float) -> dict[str, object]:
    from lookalike.dedup.groups import find_duplicate_groups
    from lookalike.store.local import LocalStore

    store = LocalStore(db, create=False, index_kind={"exact": "flat"}.get(method, "auto"))
    index_cached = any(db.glob("ann-*.faiss"))
    sampler = MemorySampler()
    sampler.start()
    started = time.perf_counter()
    groups = find_duplicate_groups(store, threshold, method=method)
    seconds = time.perf_counter() - started
    sampler.stop.set()
    sampler.sample()
    exact_sizes = [1 + len(g.duplicates) for g in groups]
    return {
        "seconds": seconds,
        "index_cached": index_cached,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_heap_mb": sampler.peak["RssAnon"],
        "peak_mapped_mb": sampler.peak["RssFile"],
        "groups": len(groups),
        "groups_of_4": sum(1 for s in exact_sizes if s == 4),
        "largest_group": max(exact_sizes, default=0),
        "planted_found": planted_found(groups),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--method", choices=["auto", "exact", "ann"], default="auto")
    parser.add_argument("--threshold", type=float, default=0.86)
    parser.add_argument("--db", type=Path, help="reuse/keep the store here (default: a temp folder)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.db, args.method, args.threshold)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "db"
        info: dict[str, int] = {"planted_groups": -1}
        t0 = time.perf_counter()
        if not (db / "items.sqlite").exists():
            info = build(db, args.n)
        build_s = time.perf_counter() - t0
        cmd = [sys.executable, __file__, "--child", "--db", str(db), "--method", args.method]
        cmd += ["--threshold", str(args.threshold)]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    print(
        "| items | method | build store (s) | ANN index | dups (s) | peak RSS (MB) | peak heap (MB) "
        "| peak mapped file pages (MB) | groups | planted | planted found exactly |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.n:,} | {args.method} | {build_s:.0f} | "
        f"{'cached' if result['index_cached'] else 'built in the dups time'} | {result['seconds']:.1f} | "
        f"{result['peak_rss_mb']:.0f} | {result['peak_heap_mb']:.0f} | {result['peak_mapped_mb']:.0f} | "
        f"{result['groups']:,} | {info['planted_groups']:,} | "
        f"{result['planted_found']:,} (largest group {result['largest_group']}) |"
    )


if __name__ == "__main__":
    main()
