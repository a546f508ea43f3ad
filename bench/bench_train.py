"""Fashion-MNIST: frozen mobilenet_v2 vs the ``head`` recipe vs ``scratch``, seen and unseen classes.

Protocols (train on the train split, evaluate retrieval leave-one-out on the test split):
* seen: train on all 10 classes (10% of train held out for early stopping), evaluate on all 10k test images;
* unseen: train on classes 0-4 only, evaluate on the test images of classes 5-9 (never seen) and 0-4.
Metrics: Recall@1, Recall@5, mAP@R (exact cosine). Times: backbone feature extraction is reported
apart from head training (features are cached on disk by sha256 of each file).

Features: by default computed here through ONNX Runtime and cached (about 150 img/s on 2 free cores;
--limit to subsample). ``--features-from DIR`` imports the float16 features written by
bench/device_fmnist.py on a GPU machine into the same cache (rows keyed by the sha256 of the PNG files
this script writes), and ``--scratch-from DIR/device_report.json`` reports that run's scratch results.

    python bench/bench_train.py [--limit N] [--features-from DIR] [--scratch-report FILE] [--epochs 40]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # lookalike_data
from _util import print_table
from lookalike.evaluation.metrics import leave_one_out
from lookalike.models.projection_head import load_head
from lookalike.models.registry import create_model
from lookalike.training.features import FeatureCache, extract_features
from lookalike.training.head import HeadConfig, embed_with, train_head
from lookalike_data import FASHION_MNIST_CLASSES, data_cache_dir, write_fashion_mnist_folder


def folder(split: str) -> list[Path]:
    """All images of a split as PNG files, index order (written once, ~1 min for train)."""
    root = data_cache_dir() / "fashion-mnist-folders" / split
    if not (root / ".complete").exists():
        write_fashion_mnist_folder(root, split)  # type: ignore[arg-type]
        (root / ".complete").write_text("ok")
    return sorted(root.rglob("*.png"), key=lambda p: int(p.stem.split("-")[1]))


def labels_of(paths: list[Path]) -> np.ndarray:
    return np.array([FASHION_MNIST_CLASSES.index(p.parent.name) for p in paths], dtype=np.int64)


def import_device_features(model_cache: FeatureCache, directory: Path) -> int:
    n = 0
    for split in ("train", "test"):
        paths = folder(split)
        chunks = sorted(directory.glob(f"feat-{split}-*.npy"))
        feats = np.concatenate([np.load(c) for c in chunks]) if chunks else np.zeros((0, 1280), np.float16)
        if len(feats) != len(paths):
            raise SystemExit(f"{directory}: {len(feats)} {split} rows for {len(paths)} images")
        rows = [(hashlib.sha256(p.read_bytes()).hexdigest(), 0, f) for p, f in zip(paths, feats, strict=True)]
        for start in range(0, len(rows), 5000):
            model_cache.put_many(rows[start : start + 5000])
        n += len(rows)
    return n


def metrics(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Leave-one-out Recall@1/5 and mAP@R, computed as `lookalike eval` computes them."""
    s = leave_one_out(emb, labels, ks=(1, 5))
    return {"recall@1": s.recall[1], "recall@5": s.recall[5], "map@r": s.map_at_r, "queries": float(s.n_queries)}


def cells(m: dict[str, float]) -> list[str]:
    return [f"{m['recall@1']:.4f}", f"{m['recall@5']:.4f}", f"{m['map@r']:.4f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="images per split (first N in file order)")
    ap.add_argument("--features-from", type=Path, help="import features from bench/device_fmnist.py output")
    ap.add_argument("--scratch-report", type=Path, help="device_report.json of bench/device_fmnist.py")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--json", type=Path, help="also write all numbers here")
    args = ap.parse_args()

    model = create_model("mobilenet_v2")
    cache = FeatureCache(model)
    if args.features_from:
        t0 = time.perf_counter()
        n = import_device_features(cache, args.features_from)
        print(f"imported {n} feature rows in {time.perf_counter() - t0:.0f} s", flush=True)
    data = {}
    timings = {}
    for split in ("train", "test"):
        paths = folder(split)[: args.limit]
        t0 = time.perf_counter()
        found, _, _skips, computed = extract_features(model, paths, (0,), cache=cache)
        timings[f"features_{split}"] = (time.perf_counter() - t0, computed, len(paths))
        feats = np.stack([found[(i, 0)] for i in range(len(paths))])
        data[split] = (feats, labels_of(paths))
        print(f"{split}: {len(paths)} images, {computed} computed, {timings[f'features_{split}'][0]:.0f} s", flush=True)
    cache.close()

    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    results: dict[str, object] = {"train_images": len(xtr), "test_images": len(xte)}
    rows = []

    def run_head(classes: list[int]) -> tuple[np.ndarray, np.ndarray, float, int, object]:
        """Train once; return the default (blended) embedding and the head-only one (alpha 0, the old default)."""
        keep = np.isin(ytr, classes)
        x, y = xtr[keep], ytr[keep]
        remap = np.full(10, -1)
        remap[classes] = np.arange(len(classes))
        y = remap[y]
        rng = np.random.default_rng(0)
        order = rng.permutation(len(x))
        n_val = len(x) // 10
        val, tr = np.sort(order[:n_val]), np.sort(order[n_val:])
        config = HeadConfig(epochs=args.epochs, views=0)
        res = train_head(
            x[tr], y[tr], len(classes), config,
            gallery_features=x[tr], gallery_labels=y[tr], val_features=x[val], val_labels=y[val],
        )  # fmt: skip
        head = load_head(res.state_dict, x.shape[1], config.hidden, config.dim, config.alpha)
        only = load_head(
            {k: v for k, v in res.state_dict.items() if k != "mean"}, x.shape[1], config.hidden, config.dim
        )
        return embed_with(head, xte), embed_with(only, xte), res.train_seconds, len(tr), res

    alpha = HeadConfig().alpha

    def blend(frozen: np.ndarray, head_only: np.ndarray, a: float) -> np.ndarray:
        out = np.concatenate([a * frozen, (1 - a) * head_only], axis=1)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    sweep_rows: list[list[str]] = []

    frozen_all = metrics(xte, yte)
    emb, emb0, secs, n_tr, res = run_head(list(range(10)))
    head_all = metrics(emb, yte)
    head0_all = metrics(emb0, yte)
    results["seen"] = {
        "frozen": frozen_all,
        "head": head_all,
        "head_only_alpha0": head0_all,
        "head_train_seconds": secs,
        "head_epochs": len(res.history) - 1,
    }
    rows.append(
        [
            "frozen mobilenet_v2",
            "all 10",
            f"{frozen_all['recall@1']:.4f}",
            f"{frozen_all['recall@5']:.4f}",
            f"{frozen_all['map@r']:.4f}",
            "-",
        ]
    )
    how = f"{secs:.0f} s CPU, {n_tr} imgs, {len(res.history) - 1} epochs (best {res.best_epoch})"
    rows.append(["head only, alpha 0 (old default)", "all 10", *cells(head0_all), how])
    rows.append([f"head blended, alpha {alpha} (default)", "all 10", *cells(head_all), "same training"])

    seen5, unseen5 = list(range(5)), list(range(5, 10))
    emb5, emb5_0, secs5, n_tr5, res5 = run_head(seen5)
    m_seen, m_unseen = np.isin(yte, seen5), np.isin(yte, unseen5)
    results["unseen"] = {
        "frozen_seen5": metrics(xte[m_seen], yte[m_seen]), "frozen_unseen5": metrics(xte[m_unseen], yte[m_unseen]),
        "head_seen5": metrics(emb5[m_seen], yte[m_seen]), "head_unseen5": metrics(emb5[m_unseen], yte[m_unseen]),
        "head0_seen5": metrics(emb5_0[m_seen], yte[m_seen]),
        "head0_unseen5": metrics(emb5_0[m_unseen], yte[m_unseen]),
        "head_train_seconds": secs5,
    }  # fmt: skip
    u = results["unseen"]
    for label, key, sub in (
        ("frozen mobilenet_v2", "frozen_seen5", "classes 0-4 (seen)"),
        ("head only, alpha 0 (trained on 0-4)", "head0_seen5", "classes 0-4 (seen)"),
        (f"head blended, alpha {alpha} (trained on 0-4)", "head_seen5", "classes 0-4 (seen)"),
        ("frozen mobilenet_v2", "frozen_unseen5", "classes 5-9 (unseen)"),
        ("head only, alpha 0 (trained on 0-4)", "head0_unseen5", "classes 5-9 (unseen)"),
        (f"head blended, alpha {alpha} (trained on 0-4)", "head_unseen5", "classes 5-9 (unseen)"),
    ):
        m = u[key]  # type: ignore[index]
        extra = "-"
        if key == "head0_seen5":
            extra = f"{secs5:.0f} s CPU, {n_tr5} imgs, {len(res5.history) - 1} epochs (best {res5.best_epoch})"
        rows.append([label, sub, *cells(m), extra])

    # Alpha sweep on the same two trainings (blending needs no retraining): how the default was chosen.
    fte = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    for a in (0.0, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 1.0):
        e10, e5 = blend(fte, emb0, a), blend(fte, emb5_0, a)
        m10 = metrics(e10, yte)
        ms, mu = metrics(e5[m_seen], yte[m_seen]), metrics(e5[m_unseen], yte[m_unseen])
        results.setdefault("alpha_sweep", {})[str(a)] = {"all10": m10, "seen5": ms, "unseen5": mu}  # type: ignore[union-attr]
        sweep_rows.append([f"{a}", *(f"{m['recall@1']:.4f} / {m['map@r']:.4f}" for m in (m10, ms, mu))])

    if args.scratch_report and args.scratch_report.exists():
        rep = json.loads(args.scratch_report.read_text())
        gpu = rep.get("gpu", "GPU")
        for key, sub_key, sub in (
            ("scratch_all10", "test_seen", "all 10"),
            ("scratch_seen5", "test_seen", "classes 0-4 (seen)"),
            ("scratch_seen5", "test_unseen", "classes 5-9 (unseen)"),
        ):
            entry = rep[key]
            m = entry[sub_key]
            who = "all 10" if key.endswith("10") else "trained on 0-4"
            how = f"{entry['train_seconds_gpu']:.0f} s on {gpu}, {entry['train_images']} imgs"
            how += f", {entry['epochs_run']} epochs"
            rows.append([f"scratch ({who})", sub, *cells(m), how])
        results["scratch"] = {k: v for k, v in rep.items() if k.startswith("scratch")}

    print_table(
        f"Fashion-MNIST retrieval (test split, leave-one-out; train {len(xtr)} / test {len(xte)} images)",
        ["model", "test classes", "Recall@1", "Recall@5", "mAP@R", "training"],
        rows,
    )
    print_table(
        "Alpha sweep (weight of the frozen vector; Recall@1 / mAP@R; 0 = head only, 1 = frozen only)",
        ["alpha", "all 10 (trained on 10)", "0-4 seen (trained on 0-4)", "5-9 unseen (trained on 0-4)"],
        sweep_rows,
    )
    feat_rows = [[s, t[2], t[1], f"{t[0]:.1f}"] for s, t in timings.items()]
    print_table("Backbone features (mobilenet_v2, 224 px)", ["split", "images", "computed here", "seconds"], feat_rows)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
