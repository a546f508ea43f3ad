"""Model-only throughput (ONNX Runtime vs eager torch) and preprocessing cost per image.

    PYTHONPATH=src python bench/bench_models.py [--threads 2] [--batch 32] [--seconds 3]

Model numbers are on ready preprocessed tensors, so they show what the network costs; preprocessing
numbers are per image on an already decoded PIL image (a 224 px one and a 3000x2000 one; the real
loader decodes big JPEGs in draft mode, which makes the second case cheaper in practice).
Uses $LOOKALIKE_CACHE_DIR (or the user cache) for the ONNX exports.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from lookalike.models.cnn import OnnxCnnEmbedder
from lookalike.models.registry import create_model, list_models
from lookalike.models.weights import WeightsNotInstalledError


def rate(fn: Callable[[], object], items_per_call: int, seconds: float) -> float:
    """Items per second of ``fn`` after one warm-up call, timed for at least ``seconds``."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return calls * items_per_call / elapsed


def test_image(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    return Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    small, big = test_image(224, 224), test_image(3000, 2000)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"threads={args.threads} batch={args.batch} cpus={os.cpu_count()} load average={load}")
    header = f"{'model':<20}{'ORT img/s':>11}{'torch img/s':>13}{'ORT/torch':>10}"
    header += f"{'prep 224px':>12}{'prep 3000x2000':>16}"
    print(header)
    print("-" * len(header))
    for info in list_models():
        if not info.offline:
            continue
        try:
            kwargs = {"intra_op_num_threads": args.threads} if info.dim > 64 else {}  # CNNs, not hashes
            model = create_model(info.name, **kwargs)
        except WeightsNotInstalledError as exc:
            print(f"{info.name:<20}skipped: {str(exc).splitlines()[0]}")
            continue
        prep_small = 1000.0 / rate(lambda m=model: m.preprocess(small), 1, args.seconds / 3)
        prep_big = 1000.0 / rate(lambda m=model: m.preprocess(big), 1, args.seconds / 3)
        if isinstance(model, OnnxCnnEmbedder):
            size = model.spec.input_size
            batch = np.random.default_rng(0).standard_normal((args.batch, 3, size, size)).astype(np.float32)
            ort_rate = rate(lambda m=model, b=batch: m.embed_arrays(b), args.batch, args.seconds)
            torch_rate = rate(lambda m=model, b=batch: m.embed_arrays_torch(b), args.batch, args.seconds)
            model_cols = f"{ort_rate:>11.1f}{torch_rate:>13.1f}{ort_rate / torch_rate:>10.2f}"
        else:  # hashes: all the work is in preprocess
            model_cols = f"{'-':>11}{'-':>13}{'-':>10}"
        print(f"{info.name:<20}{model_cols}{prep_small:>10.2f}ms{prep_big:>14.2f}ms")


if __name__ == "__main__":
    main()
