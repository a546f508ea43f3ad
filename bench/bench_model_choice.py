"""Choose the default model by measurement: retrieval quality, duplicate detection and speed.

For every offline model (and preprocessing levers of the default):

* **Fashion-MNIST** test split (10k labelled 28x28 product photos, 10 classes) as a leave-one-out
  retrieval set, as `lookalike eval` runs it: Recall@1, mAP@R, raw and after collection-adaptive
  centering / PCA whitening (learned on the same unlabelled vectors).
* **Near-duplicates** built from real photos (Debian-package photos, 9 standard edits each):
  pair F1 at the model's default duplicate threshold, and the best F1 over thresholds (oracle).
* **images/s**: decode + preprocess + model over the Fashion-MNIST images (wall clock, all cores);
  and, for the README's table, model-only images/s on ready tensors (batch 32, 2 ONNX Runtime
  threads) or, for hashes, ms per 224 px image.

The last table ("Model choice (README table)") is the README's: one row per model, the best of each
quality column in bold.

Usage: ``python bench/bench_model_choice.py [--quick] [--models a,b] [--fashion N] [--photos N] [--threads T]``.
``--quick`` uses 1,000 Fashion-MNIST images (100 per class) and 20 photos.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))  # lookalike_data

import lookalike_data as datasets
from _util import print_table
from lookalike.evaluation.metrics import leave_one_out
from lookalike.evaluation.retrieval import (
    adapt,
    build_neardup_set,
    default_dup_threshold,
    embed_images,
    neardup_scores,
)
from lookalike.models.registry import DEFAULT_MODEL, create_model

OFFLINE = [
    "mobilenet_v2",
    "mobilenet_v2_ml",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "phash",
    "dhash",
]
HASHES = ("phash", "dhash")


def fashion_subset(n: int) -> tuple[list[Image.Image], np.ndarray]:
    """The first ``n / 10`` test images of each class (all 10,000 when n >= 10,000)."""
    images, labels = datasets.fashion_mnist("test")
    if n < len(labels):
        per = n // 10
        keep = np.concatenate([np.nonzero(labels == c)[0][:per] for c in range(10)])
        keep.sort()
        images, labels = images[keep], labels[keep]
    return [Image.fromarray(im, mode="L") for im in images], labels.astype(np.int64)


class Bicubic:
    """Lever: upscale tiny inputs with bicubic instead of the default bilinear (preprocessing only)."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.spec = model.spec  # type: ignore[attr-defined]
        self.batch_size = model.batch_size  # type: ignore[attr-defined]
        self.size = self.spec.input_size

    def preprocess(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
        return self.model.preprocess(image)  # type: ignore[attr-defined]

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        return self.model.embed_arrays(batch)  # type: ignore[attr-defined]


def model_only(name: str, seconds: float = 3.0) -> float:
    """Images/s of the network alone on a ready batch of 32 (2 threads); for hashes, ms per 224 px image."""
    if name in HASHES:
        model = create_model(name)
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
        fn, per_call = (lambda: model.preprocess(image)), 1
    else:
        model = create_model(name, intra_op_num_threads=2)
        size = model.spec.input_size
        batch = np.random.default_rng(0).standard_normal((32, 3, size, size)).astype(np.float32)
        fn, per_call = (lambda: model.embed_arrays(batch)), 32  # type: ignore[attr-defined]
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            break
    per_second = calls * per_call / elapsed
    return 1000.0 / per_second if name in HASHES else per_second


def readme_rows(results: dict[str, dict[str, tuple[str, ...]]], speed: dict[str, float]) -> list[list[str]]:
    """The README's table: one row per model, default first; the best of each quality column in bold."""
    names = sorted(results, key=lambda n: (n != DEFAULT_MODEL, OFFLINE.index(n) if n in OFFLINE else 99))
    cols = {c: max(results[n]["none"][c] for n in names) for c in range(4)}
    fastest = max((v for n, v in speed.items() if n not in HASHES), default=0.0)

    def cell(name: str, c: int) -> str:
        value = results[name]["none"][c]
        return f"**{value}**" if value == cols[c] else value

    rows = []
    for name in names:
        label = f"**{name}** (default)" if name == DEFAULT_MODEL else name
        if name in HASHES:
            rate = f"hash: {speed[name]:.1f} ms per 224 px image"
        else:
            rate = f"{speed[name]:.0f}"
            rate = f"**{rate}**" if rate == f"{fastest:.0f}" else rate
        adapted = [" / ".join(results[name][mode][c] for c in (0, 1, 3)) for mode in ("center", "whiten")]
        rows.append([label, *(cell(name, c) for c in range(4)), *adapted, rate])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", default=",".join(OFFLINE))
    parser.add_argument("--fashion", type=int, default=None, help="Fashion-MNIST images (default 10000)")
    parser.add_argument("--photos", type=int, default=None, help="photos for the near-dup set (default 40)")
    parser.add_argument("--levers", action="store_true", help="also try preprocessing levers on mobilenet_v2")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per model (default: all)")
    args = parser.parse_args()
    n_fashion = args.fashion or (1000 if args.quick else 10000)
    n_photos = args.photos or (20 if args.quick else 40)

    fm_images, fm_labels = fashion_subset(n_fashion)
    photo_paths = datasets.photos(limit=n_photos)
    dup_set = build_neardup_set(photo_paths)
    print(
        f"Fashion-MNIST: {len(fm_labels)} test images (leave-one-out); near-dup: {len(photo_paths)} photos x "
        f"{len(dup_set.images) // max(1, len(photo_paths))} versions = {len(dup_set.images)} images; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )

    variants: list[tuple[str, str]] = [(name, "default") for name in args.models.split(",") if name]
    if args.levers:
        variants.append(("mobilenet_v2", "bicubic"))
    rows = []
    readme: dict[str, dict[str, tuple[str, ...]]] = {}
    speeds: dict[str, float] = {}
    for name, lever in variants:
        model = (
            create_model(name, intra_op_num_threads=args.threads)
            if args.threads and name not in HASHES
            else create_model(name)
        )
        embedder = Bicubic(model) if lever == "bicubic" else model
        label = name if lever == "default" else f"{name} ({lever} upscale)"
        embed_images(embedder, fm_images[:64])  # warm-up: first-run ONNX export and session start
        started = time.perf_counter()
        fm = embed_images(embedder, fm_images)
        speed = len(fm.ok) / (time.perf_counter() - started)
        dup_vectors = embed_images(embedder, dup_set.images).vectors
        threshold = default_dup_threshold(name)
        for mode in ("none", "center", "whiten"):
            vectors = adapt(fm.vectors, mode)
            scores = leave_one_out(vectors, fm_labels[fm.ok], ks=(1, 10))
            dup = neardup_scores(adapt(dup_vectors, mode), dup_set, threshold)
            rows.append(
                [
                    label,
                    mode,
                    f"{scores.recall[1]:.3f}",
                    f"{scores.recall[10]:.3f}",
                    f"{scores.map_at_r:.3f}",
                    f"{dup['f1']:.3f}" if mode == "none" else "–",
                    f"{dup['best_f1']:.3f}",
                    f"{speed:.1f}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
            if lever == "default":  # R@1, mAP@R, dup F1 at the default threshold, best dup F1
                readme.setdefault(name, {})[mode] = (rows[-1][2], rows[-1][4], rows[-1][5], rows[-1][6])
        if lever == "default":
            speeds[name] = model_only(name)
    print_table(
        f"Model choice: Fashion-MNIST leave-one-out ({len(fm_labels)} test images) and near-duplicates "
        f"({len(dup_set.images)} images from {len(photo_paths)} photos)",
        ["model", "adaptation", "R@1", "R@10", "mAP@R", "dup F1 @ default thr.", "best dup F1", "images/s"],
        rows,
    )
    print(
        "\nadaptation: vectors centred / PCA-whitened with statistics of the same (unlabelled) collection. "
        "dup F1 at the model's default threshold is only meaningful without adaptation (thresholds are for raw "
        "cosine); best dup F1 picks the threshold with the labels (an upper bound). images/s: decode + model on "
        "28x28 inputs upscaled to the model's size, wall clock on this machine (shared CPUs make it noisy)."
    )
    print_table(
        "Model choice (README table)",
        [
            "model",
            "Recall@1",
            "mAP@R",
            "dup F1 at default threshold",
            "best dup F1",
            "centred: Recall@1 / mAP@R / best dup F1",
            "whitened: Recall@1 / mAP@R / best dup F1",
            "images/s",
        ],
        readme_rows(readme, speeds),
    )


if __name__ == "__main__":
    main()
