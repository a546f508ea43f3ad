"""Ingest throughput: end-to-end `index` (read, hash, decode, preprocess, embed, store) vs model-only.

Sets: (a) large photos, 2-12 megapixel JPEGs made from real photos; (b) small images
(Fashion-MNIST test split as PNG files). Each ingest runs in its own process so that its peak
memory (ru_maxrss) is its own; running the same set at two sizes shows whether memory grows with N.
Usage: python bench/bench_ingest.py [--large 1000] [--small 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tools"))  # lookalike_data

from _util import peak_rss_mb, print_table  # noqa: E402
from lookalike.models.registry import DEFAULT_MODEL  # noqa: E402


def large_photo_set(count: int, cache: Path) -> Path:
    """count JPEGs of 2-12 MP made by resizing real photos (cached between runs)."""
    from lookalike_data import photos

    folder = cache / f"large-{count}"
    if folder.exists() and len(list(folder.iterdir())) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    sources = photos(limit=200)
    rng = np.random.default_rng(0)
    for i in range(count):
        target = folder / f"photo{i:05d}.jpg"
        if target.exists():
            continue
        with Image.open(sources[i % len(sources)]) as src:
            img = src.convert("RGB")
        megapixels = rng.uniform(2, 12)
        aspect = img.width / img.height
        h = int((megapixels * 1e6 / aspect) ** 0.5)
        img.resize((int(h * aspect), h), Image.Resampling.BILINEAR).save(target, quality=90)
    return folder


def small_image_set(count: int, cache: Path) -> Path:
    from lookalike_data import fashion_mnist

    folder = cache / f"small-{count}"
    if folder.exists() and len(list(folder.iterdir())) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = fashion_mnist("test")
    for i in range(count):
        Image.fromarray(images[i % len(images)]).save(folder / f"item{i:05d}.png")
    return folder


def worker(folder: str, db: str, limit: int) -> None:
    """Runs in a child process: index `limit` files of `folder`, print JSON with speed and peak RSS."""
    from lookalike import Index

    files = sorted(os.listdir(folder))[:limit]
    index = Index.open(db)
    _ = index.model  # load (and export, if needed) before timing
    paths = [os.path.join(folder, f) for f in files]
    start = time.perf_counter()
    report = index.add(paths, calibrate=False)  # the pipeline alone; calibration is timed below
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    again = index.add(paths, calibrate=False)  # unchanged files: stat calls only
    reindex = time.perf_counter() - start
    assert again.embedded == 0
    start = time.perf_counter()
    index.calibrate()
    calibrate = time.perf_counter() - start
    print(
        json.dumps(
            {
                "images": report.embedded,
                "seconds": seconds,
                "reindex_seconds": reindex,
                "calibrate_seconds": calibrate,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def model_only(input_size: int = 224, batches: int = 20) -> float:
    """Images/s of inference alone on ready preprocessed tensors, batch 32."""
    from lookalike.models.registry import DEFAULT_MODEL, create_model

    model = create_model(DEFAULT_MODEL)  # what the ingest runs below use
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(model.batch_size, 3, input_size, input_size)).astype(np.float32)
    model.embed_arrays(batch)
    start = time.perf_counter()
    for _ in range(batches):
        model.embed_arrays(batch)
    return batches * len(batch) / (time.perf_counter() - start)


def decode_cost_ms(folder: Path, n: int = 100) -> float:
    """Single-thread CPU cost per image of everything but the model: read, hash, decode, preprocess."""
    from lookalike.imaging.discover import FoundFile
    from lookalike.ingest import prepare_file
    from lookalike.models.registry import DEFAULT_MODEL, create_model

    model = create_model(DEFAULT_MODEL)
    files = sorted(folder.iterdir())[:n]
    start = time.process_time()
    for path in files:
        st = path.stat()
        prepare_file(FoundFile(str(path), st.st_size, st.st_mtime_ns), model, 130_000_000, lambda sha: False)
    return (time.process_time() - start) / len(files) * 1000


def run_worker(folder: Path, limit: int) -> dict[str, float]:
    db = Path(tempfile.mkdtemp()) / "db"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(folder), str(db), str(limit)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large", type=int, default=1000)
    parser.add_argument("--small", type=int, default=10000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "lookalike-bench")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return

    model_rate = model_only()
    cores = os.cpu_count() or 1
    rows = [["model only (ready tensors, batch 32)", "-", f"{model_rate:.1f}", "100%", "-", "-", "-", "-", "-"]]
    for name, folder, n in (
        ("(a) photos, 2-12 MP JPEG", large_photo_set(args.large, args.cache), args.large),
        ("(b) small images (28x28 PNG)", small_image_set(args.small, args.cache), args.small),
    ):
        decode_ms = decode_cost_ms(folder)
        # If decoding and inference overlapped perfectly on all cores, CPU time per image would be the bound.
        ceiling = 1000 * cores / (decode_ms + 1000 * cores / model_rate)
        for limit in (n // 4, n):
            result = run_worker(folder, limit)
            rate = result["images"] / result["seconds"]
            rows.append(
                [
                    name,
                    f"{limit:,}",
                    f"{rate:.1f}",
                    f"{rate / model_rate:.0%}",
                    f"{decode_ms:.1f}",
                    f"{rate / ceiling:.0%}",
                    f"{result['reindex_seconds']:.2f}",
                    f"{result['calibrate_seconds']:.1f}",
                    f"{result['peak_rss_mb']:.0f}",
                ]
            )
    print_table(
        f"Ingest throughput, {DEFAULT_MODEL} on ONNX Runtime, {cores} cores",
        [
            "set",
            "images",
            "images/s",
            "of model-only",
            "decode+prep ms/img (1 core)",
            "of CPU-bound ceiling",
            "re-index unchanged s",
            "calibration s",
            "peak RSS MB",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
