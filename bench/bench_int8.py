"""INT8 vs fp32 side by side: model-only speed ratio, cosine(fp32, int8), and the first-use build time.

Why a ratio from one run: the machine is shared, so absolute images/s drift between runs; fp32 and
INT8 batches are interleaved (same photos, same threads), and the ratio of their medians is what we
report. Photos: the tuning set (``lookalike_data.photos``), never the held-out photos.

Usage: PYTHONPATH=src python bench/bench_int8.py [--threads 2] [--batch 32] [--rounds 15] [--photos 160]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import lookalike_data
from lookalike.models import onnx_backend
from lookalike.models.registry import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--photos", type=int, default=160)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:  # first use: fp32 export, then quantisation
        os.environ[onnx_backend.CACHE_ENV] = cache
        started = time.perf_counter()
        create_model("mobilenet_v2_ml", intra_op_num_threads=args.threads)
        export_s = time.perf_counter() - started
        started = time.perf_counter()
        create_model("mobilenet_v2_ml_int8", intra_op_num_threads=args.threads)
        quant_s = time.perf_counter() - started
        started = time.perf_counter()
        create_model("mobilenet_v2_ml_int8", intra_op_num_threads=args.threads)
        reopen_s = time.perf_counter() - started
    del os.environ[onnx_backend.CACHE_ENV]

    fp32 = create_model("mobilenet_v2_ml", intra_op_num_threads=args.threads)
    int8 = create_model("mobilenet_v2_ml_int8", intra_op_num_threads=args.threads)
    paths = lookalike_data.photos(args.photos)
    arrays = np.stack([fp32.preprocess(Image.open(p).convert("RGB")) for p in paths])
    a, b = fp32.embed_arrays(arrays), int8.embed_arrays(arrays)
    cosine = np.sum(a * b, axis=1)
    view = fp32.spec.no_match_view
    view_cos = np.sum(view.apply(a) * view.apply(b), axis=1) if view else cosine

    batch = arrays[: args.batch]
    fp32.embed_arrays(batch), int8.embed_arrays(batch)  # warm-up
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(args.rounds):
        for name, model in (("fp32", fp32), ("int8", int8)):
            t = time.perf_counter()
            model.embed_arrays(batch)
            times[name].append(time.perf_counter() - t)
    rate = {k: args.batch / float(np.median(v)) for k, v in times.items()}

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"threads={args.threads} batch={args.batch} rounds={args.rounds} load average={load}")
    print(
        f"model only, interleaved: fp32 {rate['fp32']:.0f} img/s, int8 {rate['int8']:.0f} img/s, "
        f"ratio {rate['int8'] / rate['fp32']:.2f}x"
    )
    print(
        f"cosine(fp32, int8) over {len(paths)} tuning photos: mean {cosine.mean():.4f}, min {cosine.min():.4f}; "
        f"no-match view: mean {view_cos.mean():.4f}, min {view_cos.min():.4f}"
    )
    print(
        f"first use: fp32 export {export_s:.1f} s, then INT8 quantisation {quant_s:.1f} s; cached open {reopen_s:.2f} s"
    )


if __name__ == "__main__":
    main()
