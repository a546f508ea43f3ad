"""Choose the default model by measurement: retrieval quality, duplicate detection and speed.

For every offline model (and preprocessing levers of the default):

* **Fashion-MNIST** test split (10k labelled 28x28 product photos, 10 classes) as a leave-one-out
  retrieval set, as `lookalike eval` runs it: Recall@1, mAP@R, raw and after collection-adaptive
  centering / PCA whitening (learned on the same unlabelled vectors).
* **Near-duplicates** built from real photos (Debian-package photos, 9 standard edits each):
  pair F1 at the model's default duplicate threshold, and the best F1 over thresholds (oracle).
* **images/s**: decode + preprocess + model over the Fashion-MNIST images (wall clock, all cores).

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
from lookalike.models.registry import create_model

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


if __name__ == "__main__":
    main()
