"""GPU helper for bench_train.py: Fashion-MNIST backbone features (all 70k images) and the ``scratch``
recipe trained on the full train split. Run on a machine with a CUDA GPU; writes into OUT.

Why a GPU: on the 2-core CPU, MobileNetV2 features for 70k images take 8+ minutes when the cores
are free (much longer when shared), and the scratch CNN needs ~3 GFLOP per image per epoch (hours
for 60k images). The head recipe itself -- the thing the 10-minute target is about -- is trained
on the CPU by bench_train.py from these cached features.

Features are MobileNetV2 (torchvision ImageNet weights, the same network as ``mobilenet_v2``) run in
eager torch on CUDA instead of ONNX Runtime on CPU (the graphs agree to ~4e-5), L2-normalised,
stored as float16 in row order of the idx files.

Usage: python bench/device_fmnist.py SRC_DIR DATA_DIR OUT_DIR  (DATA_DIR holds the idx .gz files and
mobilenet_v2-b0353104.pth).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_pkg(src: Path) -> None:
    """Import lookalike's torch/numpy-only modules without its package __init__ (no onnxruntime/faiss)."""
    pkg = types.ModuleType("lookalike")
    pkg.__path__ = [str(src / "lookalike")]  # type: ignore[attr-defined]
    sys.modules["lookalike"] = pkg


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main() -> None:
    src, data, out = (Path(a) for a in sys.argv[1:4])
    out.mkdir(parents=True, exist_ok=True)
    load_pkg(src)
    from lookalike.evaluation.metrics import leave_one_out
    from lookalike.models.mobilenet_v2 import load_mobilenet_v2
    from lookalike.models.preprocessing import ImagePreprocessor
    from lookalike.models.scratch_cnn import load_scratch, preprocessor
    from lookalike.training.scratch import ScratchConfig, embed_pixels, train_scratch

    def retrieval_metrics(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        s = leave_one_out(emb, labels, ks=(1, 5))
        return {"recall@1": s.recall[1], "recall@5": s.recall[5], "map@r": s.map_at_r, "queries": float(s.n_queries)}

    splits = {
        "train": (read_idx(data / "train-images-idx3-ubyte.gz"), read_idx(data / "train-labels-idx1-ubyte.gz")),
        "test": (read_idx(data / "t10k-images-idx3-ubyte.gz"), read_idx(data / "t10k-labels-idx1-ubyte.gz")),
    }
    dev = os.environ.get("DEVICE", "cuda")  # DEVICE=cpu LIMIT=300 for a local smoke run
    limit = int(os.environ.get("LIMIT", "0")) or None
    splits = {k: (im[:limit], lab[:limit]) for k, (im, lab) in splits.items()}
    report: dict[str, object] = {"gpu": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"}
    pool = ThreadPoolExecutor(16)

    # -- backbone features -------------------------------------------------------------------------
    model = load_mobilenet_v2(str(data / "mobilenet_v2-b0353104.pth")).to(dev).eval()
    pre = ImagePreprocessor(size=224)

    def prep(img: np.ndarray) -> np.ndarray:
        return pre(Image.fromarray(img, "L").convert("RGB"))

    for split, (images, _) in splits.items():
        t0 = time.perf_counter()
        feats = []
        for start in range(0, len(images), 500):
            batch = np.stack(list(pool.map(prep, images[start : start + 500])))
            with torch.inference_mode():
                pooled, _ = model(torch.from_numpy(batch).to(dev))
            feats.append(torch.nn.functional.normalize(pooled, dim=1).half().cpu().numpy())
        feats_all = np.concatenate(feats)
        for i, chunk in enumerate(range(0, len(feats_all), 6000)):
            np.save(Path("/tmp") / f"feat-{split}-{i:02d}.npy", feats_all[chunk : chunk + 6000])
        report[f"features_{split}_seconds"] = time.perf_counter() - t0
        print(split, feats_all.shape, f"{time.perf_counter() - t0:.1f}s", flush=True)

    # -- scratch recipe ----------------------------------------------------------------------------
    spre = preprocessor()

    def pix(img: np.ndarray) -> np.ndarray:
        return np.asarray(spre.resize(Image.fromarray(img, "L").convert("RGB")), dtype=np.uint8).transpose(2, 0, 1)

    pixels = {s: np.stack(list(pool.map(pix, imgs))) for s, (imgs, _) in splits.items()}
    labels = {s: lab.astype(np.int64) for s, (_, lab) in splits.items()}
    epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 15
    for protocol, classes in (("all10", list(range(10))), ("seen5", [0, 1, 2, 3, 4])):
        tr = np.isin(labels["train"], classes)
        rng = np.random.default_rng(0)
        idx = np.flatnonzero(tr)
        rng.shuffle(idx)
        n_val = len(idx) // 10
        val_idx, train_idx = np.sort(idx[:n_val]), np.sort(idx[n_val:])
        remap = {c: i for i, c in enumerate(classes)}
        ytr = np.array([remap[c] for c in labels["train"][train_idx]])
        yva = np.array([remap[c] for c in labels["train"][val_idx]])
        t0 = time.perf_counter()
        res = train_scratch(
            pixels["train"][train_idx],
            ytr,
            len(classes),
            ScratchConfig(epochs=epochs, batch_size=128, device=dev),
            val_pixels=pixels["train"][val_idx],
            val_labels=yva,
        )
        seconds = time.perf_counter() - t0
        net = load_scratch(res.state_dict, len(classes)).to(dev)
        test_emb = embed_pixels(net, pixels["test"], device=dev)
        seen = np.isin(labels["test"], classes)
        entry = {
            "train_images": len(train_idx),
            "epochs_run": len(res.history) - 1,
            "best_epoch": res.best_epoch,
            "train_seconds_gpu": seconds,
            "history": [h.to_dict() for h in res.history],
            "test_seen": retrieval_metrics(test_emb[seen], labels["test"][seen]),
        }
        if (~seen).any():
            entry["test_unseen"] = retrieval_metrics(test_emb[~seen], labels["test"][~seen])
        report[f"scratch_{protocol}"] = entry
        print(protocol, json.dumps({k: v for k, v in entry.items() if k != "history"}), flush=True)
    (out / "device_report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
