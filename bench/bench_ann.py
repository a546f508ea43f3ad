"""ANN benchmark for the embedded store at up to millions of vectors (prints a table).

Vectors are drawn from a mixture that mimics pooled CNN embeddings (clustered, non-negative like
post-ReLU features, a strong common component, uneven cluster sizes, some near-duplicates), not
uniform random noise. Each configuration is built and then served in its own process, so RAM (RSS)
and reopen time are that configuration's alone.

    python bench/bench_ann.py --n 1000000 --configs flat pca256,ivf1024,sq8 ivf1024,sq8 ivf1024,pq64
    python bench/bench_ann.py --n 1000000 --configs auto --queries 500   # the README's headline row

Besides the fixed-width progress lines it prints a markdown table (the docs/scale.md columns) and, for
an ``auto`` configuration, the README's headline row under ``| what | measured | script |``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from lookalike.store.base import ItemRecord  # noqa: E402
from lookalike.store.local import LocalStore  # noqa: E402
from lookalike.store.vector_index import AnnIndex, slug_of  # noqa: E402

DEFAULT_CONFIGS = ["auto", "flat", "ivf1024,sq8", "pca256,ivf1024,sq8", "pca256,ivf1024,pq32"]


def embedding_like(n: int, dim: int, seed: int, n_clusters: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The generator's shared parameters: cluster centres, their (Zipf-like) sizes, a variation basis.

    Real CNN embeddings vary along relatively few directions (their PCA spectrum decays fast), so
    within-cluster variation is drawn in a 96-d random subspace plus weak isotropic noise.
    """
    rng = np.random.default_rng(seed)
    basis = (0.5 * rng.normal(size=(96, dim)) / np.sqrt(96)).astype(np.float32)
    common = np.abs(rng.normal(size=dim)) * (rng.random(dim) < 0.6)  # features most images share
    centres = np.maximum(rng.normal(size=(n_clusters, dim)), 0) * (rng.random((n_clusters, dim)) < 0.3)
    centres = 0.6 * common + 1.4 * centres
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.7
    return centres.astype(np.float32), (weights / weights.sum()), basis


def draw(rng: np.random.Generator, params: tuple[np.ndarray, np.ndarray, np.ndarray], n: int) -> np.ndarray:
    """Points around random centres, ReLU'd and L2-normalised; 2% are near-copies of a neighbour."""
    centres, weights, basis = params
    labels = rng.choice(len(centres), size=n, p=weights)
    latent = rng.normal(size=(n, basis.shape[0])).astype(np.float32) * rng.uniform(0.5, 1.1, (n, 1)).astype(np.float32)
    noise = latent @ basis + 0.25 * rng.normal(size=(n, centres.shape[1])).astype(np.float32)
    x = np.maximum(centres[labels] + noise, 0)
    dup = rng.random(n) < 0.02
    if dup.sum() > 1:
        x[dup] = x[np.roll(np.flatnonzero(dup), 1)] + 0.05 * np.abs(rng.normal(size=(dup.sum(), x.shape[1])))
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    return x.astype(np.float32)


def build_store(folder: Path, n: int, dim: int, seed: int) -> np.ndarray:
    """Fill an embedded store with n synthetic vectors; return held-out query vectors."""
    params = embedding_like(n, dim, seed, n_clusters=max(50, n // 500))
    rng = np.random.default_rng(seed + 1)
    store = LocalStore(folder, index_kind="flat")
    store.set_model_identity({"name": "synthetic", "version": "1", "dim": dim, "preprocessing": "none"})
    step = 20_000
    for start in range(0, n, step):
        m = min(step, n - start)
        recs = [ItemRecord(f"/synthetic/{i:08d}.jpg", f"{i:064x}", 1, 1, 1, 1) for i in range(start, start + m)]
        store.add(recs, draw(rng, params, m))
    store.close()
    return draw(np.random.default_rng(seed + 2), params, 1000)


def ground_truth(folder: Path, queries: np.ndarray, k: int) -> np.ndarray:
    store = LocalStore(folder)
    _, matrix = store._matrix.shape, store._matrix
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for start in range(0, matrix.shape[0], 100_000):
        block = np.asarray(matrix[start : start + 100_000])
        s = queries @ block.T
        idx = np.argpartition(-s, k - 1, axis=1)[:, :k]
        cand_s = np.hstack([best_s, np.take_along_axis(s, idx, axis=1)])
        cand_i = np.hstack([best_i, idx + start])
        top = np.argsort(-cand_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    ids = store._slot_to_id[best_i]
    store.close()
    return ids


def rss() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024 / 1024  # GiB
    return out


def child_build(folder: str, spec: str) -> dict[str, object]:
    t = time.perf_counter()
    store = LocalStore(folder, index_kind=spec)
    store.save_search_index()
    search = store._ensure_search()
    seconds = time.perf_counter() - t
    extra: dict[str, object] = {}
    if isinstance(search, AnnIndex):
        extra["rerank"] = search.spec.rerank
        if search.adaptive and search.probes is not None:
            p = search.probes
            extra["probes"] = {"low": p.low, "high": p.high, "delta": p.delta, "mean": p.mean_probes}
        elif search.nprobe:
            extra["nprobe"] = search.nprobe
    kind = search.kind
    store.close()
    return {"build_s": seconds, "kind": kind, "build_peak_gib": rss()["VmHWM"], **extra}


def child_serve(folder: str, spec: str, queries_file: str, gt_file: str, n_single: int) -> dict[str, object]:
    queries = np.load(queries_file)
    gt = np.load(gt_file)
    t = time.perf_counter()
    store = LocalStore(folder, index_kind=spec)
    store.search(queries[:1], 10)
    reopen = time.perf_counter() - t
    lat = []
    hits = []
    for q in queries[:n_single]:
        t = time.perf_counter()
        hits.append(store.search(q[None], 10)[0])
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    batch = store.search(queries, 10)
    qps = len(queries) / (time.perf_counter() - t)
    recall = float(np.mean([len({h.id for h in hs} & set(g.tolist())) / 10 for hs, g in zip(batch, gt, strict=True)]))
    ann = sorted(Path(folder).glob(f"ann-{slug_of(spec)}-*.faiss"))
    mem = rss()
    store.close()
    return {
        "reopen_s": reopen,
        "p50_ms": 1000 * float(np.percentile(lat, 50)),
        "p99_ms": 1000 * float(np.percentile(lat, 99)),
        "qps": qps,
        "recall10": recall,
        "rss_gib": mem["VmRSS"],
        "anon_gib": mem["RssAnon"],
        "file_gib": mem["RssFile"],
        "index_disk_gib": sum(p.stat().st_size for p in ann) / 2**30,
    }


def run_child(*args: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


MARKDOWN_HEADER = [
    "config",
    "build s",
    "reopen s",
    "p50 ms",
    "p99 ms",
    "QPS (batch)",
    "recall@10",
    "RSS GiB",
    "heap GiB",
    "mapped file pages GiB",
    "index file GiB",
]


def describe(row: dict[str, object]) -> str:
    """The config cell: the spec, what it resolved to, and its measured probe rule."""
    text = f"`{row['config']}`" + (f" = `{row['kind']}`" if row.get("kind") != row["config"] else "")
    probes = row.get("probes")
    if isinstance(probes, dict):
        text += (
            f", adaptive probes ({probes['low']}-{probes['high']} lists, delta {probes['delta']:g},"
            f" mean {probes['mean']:.1f})"
        )
    elif row.get("nprobe"):
        text += f", nprobe {row['nprobe']}"
    if row.get("rerank"):
        text += f", rerank {row['rerank']}"
    return text


def markdown_row(row: dict[str, object]) -> str:
    cells = [
        describe(row),
        f"{row['build_s']:.0f}",
        f"{row['reopen_s']:.2f}",
        f"{row['p50_ms']:.1f}",
        f"{row['p99_ms']:.1f}",
        f"{row['qps']:.0f}",
        f"{row['recall10']:.3f}",
        f"{row['rss_gib']:.2f}",
        f"{row['anon_gib']:.2f}",
        f"{row['file_gib']:.2f}",
        f"{row['index_disk_gib']:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def headline_row(row: dict[str, object], n: int, queries: int) -> str:
    """The README's headline row for an ``auto`` run (``| what | measured | script |``)."""
    size = "1M" if n == 1_000_000 else f"{n:,}"
    rule = "query-adaptive probes measured at build time" if row.get("probes") else f"nprobe {row.get('nprobe')}"
    what = f"{size} vectors, `{row['config']}` index (`{row['kind']}`, {rule}, exact re-rank)"
    measured = (
        f"recall@10 {row['recall10']:.3f} at p50 {row['p50_ms']:.1f} ms / p99 {row['p99_ms']:.1f} ms;"
        f" reopen {row['reopen_s']:.1f} s; heap {row['anon_gib']:.2f} GiB + {row['index_disk_gib']:.2f} GiB"
        f" memory-mapped codes; build {row['build_s'] / 60:.1f} min"
    )
    script = f"`bench/bench_ann.py --n {n} --configs {row['config']} --queries {queries}`"
    return f"| {what} | {measured} | {script} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    ap.add_argument("--queries", type=int, default=1000, help="batch size for QPS and recall")
    ap.add_argument("--single", type=int, default=300, help="single queries timed for p50/p99 (flat: 20)")
    ap.add_argument("--dir", help="keep the data here (reused if it already holds --n vectors)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, *rest = args.child
        res = child_build(*rest) if mode == "build" else child_serve(*rest[:4], int(rest[4]))
        print(json.dumps(res))
        return

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-ann-"))
    folder = work / "store"
    qfile, gfile = work / "queries.npy", work / "gt.npy"
    disk = 0.0
    if not (folder.exists() and qfile.exists() and len(LocalStore(folder)) == args.n):
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        queries = build_store(folder, args.n, args.dim, args.seed)[: args.queries]
        print(f"generated {args.n} x {args.dim} vectors in {time.perf_counter() - t:.0f} s", flush=True)
        np.save(qfile, queries)
        t = time.perf_counter()
        np.save(gfile, ground_truth(folder, queries, 10))
        print(f"exact ground truth for {len(queries)} queries in {time.perf_counter() - t:.0f} s", flush=True)
    disk = sum(p.stat().st_size for p in folder.glob("vectors-*.f32")) / 2**30
    print(f"\nn={args.n:,} dim={args.dim} raw vectors {disk:.2f} GiB on disk; cores={os.cpu_count()}\n")
    header = (
        f"{'config':<22}{'build s':>9}{'reopen s':>9}{'p50 ms':>8}{'p99 ms':>8}{'QPS':>8}{'R@10':>7}"
        f"{'RSS GiB':>9}{'anon':>7}{'file':>7}{'idx GiB':>8}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for spec in args.configs:
        built = run_child("build", str(folder), spec)
        single = min(args.single, 20) if spec == "flat" else args.single
        served = (
            run_child("serve", str(folder), spec, str(qfile), str(gfile), str(single)) if "error" not in built else {}
        )
        row = {"config": spec, **built, **served}
        rows.append(row)
        if "error" in row:
            print(f"{spec:<22} ERROR {row['error']}", flush=True)
            continue
        print(
            f"{spec:<22}{row['build_s']:>9.1f}{row['reopen_s']:>9.2f}{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}"
            f"{row['qps']:>8.0f}{row['recall10']:>7.3f}{row['rss_gib']:>9.2f}{row['anon_gib']:>7.2f}"
            f"{row['file_gib']:>7.2f}{row['index_disk_gib']:>8.2f}",
            flush=True,
        )
    print(
        "\nRSS = resident set after the queries (anon = heap incl. in-RAM index; file = pages of memory-mapped"
        " files, i.e. page cache the kernel can drop). build s includes training + adding every vector."
    )
    done = [row for row in rows if "error" not in row]
    print(f"\n### ANN index, {args.n:,} x {args.dim} vectors, {len(queries_of(qfile))} queries\n")
    print("| " + " | ".join(MARKDOWN_HEADER) + " |")
    print("|" + "---|" * len(MARKDOWN_HEADER))
    for row in done:
        print(markdown_row(row))
    for row in done:
        if row["config"] == "auto":
            print("\n### README headline row\n\n| what | measured | script |\n|---|---|---|")
            print(headline_row(row, args.n, len(queries_of(qfile))))
            break
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def queries_of(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


if __name__ == "__main__":
    main()
