"""Is the copy probability honest? A reliability table and the expected calibration error (ECE).

Collection: real photos (two thirds of ``lookalike_data.photos()``), calibrated by ``Index.add`` from its
own images. Held-out test pairs, balanced (as many copies as non-copies, the calibration's prior):

* copies: new edited copies of indexed photos (other random draws than the calibration's), of three
  families: the calibration's own edit generator (``same``); ``shifted``: rotation, mirror, caption
  band, border, blur, heavy crop (the edits the first calibration never saw; blur is still outside
  the generator); ``benchmark``: the near-duplicate benchmark's standard edits (bench_neardup.py:
  downscale, JPEG q20-50, crops 90/70/50%, rotation, flip, colour jitter, greyscale, text, border),
  one kind per copy, kinds in turn;
* non-copies: held-out photos, plain and with benchmark edits, whose best match is therefore not a copy.

Each query's best match gets the predicted P(copy); the truth is whether that match is the query's
source. With ``--whitening`` it also measures centering / PCA whitening learned on the collection:
recall@1 of copies and the copy-vs-distractor AUROC of the best score.

Usage: python bench/bench_calibration.py [--quick] [--whitening] [--model NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _calib_common import auroc, build_index, edited, split_photos
from _util import print_table
from lookalike.search.whitening import fit_whitening


def reliability(prob: np.ndarray, truth: np.ndarray, bins: int = 10) -> tuple[list[list[object]], float]:
    """Rows (bin, n, mean predicted, observed fraction) and the ECE (count-weighted |gap|)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        mean_p, frac = float(prob[sel].mean()), float(truth[sel].mean())
        ece += sel.sum() / len(prob) * abs(mean_p - frac)
        rows.append([f"{edges[b]:.1f}-{edges[b + 1]:.1f}", int(sel.sum()), f"{mean_p:.3f}", f"{frac:.3f}"])
    return rows, ece


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer photos (a few minutes)")
    parser.add_argument("--whitening", action="store_true", help="also measure centering / PCA whitening")
    parser.add_argument("--model", default=None, help="embedding model (default: lookalike's default)")
    parser.add_argument("--save-scores", type=Path, help="write the score samples and test pairs (npz)")
    args = parser.parse_args()
    start = time.perf_counter()
    indexed, held = split_photos(150 if args.quick else None)
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory() as tmp:
        index = build_index(Path(tmp) / "db", indexed, *([args.model] if args.model else []))
        cal = index.calibration
        assert cal is not None and cal.ok, cal
        print(
            f"collection: {len(indexed)} photos, held out: {len(held)}; calibration: {len(cal.copy_scores)} copies, "
            f"{len(cal.nn_scores)} neighbours, {cal.probable_duplicates} probable duplicates, {cal.seconds:.1f} s"
        )
        per = 2
        n_neg = len(held) * (per + 1)
        sources = list(rng.choice(indexed, n_neg, replace=len(indexed) < n_neg))
        families = {
            "same": edited(sources, seed=11, family="same"),
            "shifted": edited(sources, seed=12, family="shifted"),
            "benchmark": edited(sources, seed=14, family="benchmark"),
        }
        negatives = [(p, None) for p in held] + [(p, im) for p, im, _ in edited(held, 13, per, "benchmark")]
        ids, coll = index.store.all_vectors()
        path_of = {int(i): index.store.get(int(i)).path for i in ids}  # type: ignore[union-attr]

        def embed(pairs: list) -> np.ndarray:
            return index.embed([pair[0] if pair[1] is None else pair[1] for pair in pairs])

        neg_vecs = embed(negatives)
        fam_vecs = {name: embed(pairs) for name, pairs in families.items()}
        index.close()

    def top1(queries: np.ndarray, collection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = queries @ collection.T
        best = sims.argmax(axis=1)
        return sims[np.arange(len(queries)), best], best

    neg_score, _ = top1(neg_vecs, coll)
    saved: dict[str, np.ndarray] = {"cal_copy": np.asarray(cal.copy_scores), "cal_nn": np.asarray(cal.nn_scores)}
    nn = np.asarray(cal.nn_scores)
    print(
        f"non-copy tail: calibration sample n={len(nn)} p95 {np.quantile(nn, 0.95):.4f} max {nn.max():.4f}; "
        f"held-out non-copies n={len(neg_score)} p95 {np.quantile(neg_score, 0.95):.4f} "
        f"p99 {np.quantile(neg_score, 0.99):.4f} max {neg_score.max():.4f}; "
        f"copy sample p05 {np.quantile(cal.copy_scores, 0.05):.4f} median {np.median(cal.copy_scores):.4f}"
    )
    headline: dict[str, float] = {}
    for name, pairs in families.items():
        pos_score, best = top1(fam_vecs[name], coll)
        correct = np.array([path_of[int(ids[b])] == str(pair[0]) for b, pair in zip(best, pairs, strict=True)])
        scores = np.concatenate([pos_score, neg_score])
        truth = np.concatenate([correct, np.zeros(len(neg_score), bool)]).astype(float)
        saved[f"{name}_scores"], saved[f"{name}_truth"] = scores, truth
        for method in ("logistic", "isotonic"):
            cal.method = method
            rows, ece = reliability(cal.probability(scores), truth)
            if (name, method) == ("benchmark", "logistic"):  # the shipped fit on the benchmark's edits
                headline["ece"] = ece
            print_table(
                f"Reliability, {name} edits, {method} fit: {len(pos_score)} copies + {len(neg_score)} non-copies "
                f"(copy recall@1 {correct.mean():.3f}); ECE = {ece:.3f}",
                ["predicted P(copy)", "pairs", "mean predicted", "observed copy fraction"],
                rows,
            )
        cal.method = "logistic"
        labels = [cal.label(float(s)) for s in scores]
        label_rows = []
        for lab in ("duplicate", "very similar", "similar", "weak"):
            sel = np.array([x == lab for x in labels])
            label_rows.append([lab, int(sel.sum()), f"{truth[sel].mean():.3f}" if sel.any() else "-"])
        print_table(f"Labels on the {name}-edit pairs", ["label", "pairs", "copy fraction"], label_rows)
        t99 = cal.threshold_for_precision(0.99)
        above = scores >= t99
        prec = truth[above].mean() if above.any() else float("nan")
        if name == "benchmark":
            headline["precision"], headline["recall"] = prec, truth[above].sum() / max(1, truth.sum())
        print(
            f"\nthreshold_for_precision(0.99) = {t99:.4f}: measured precision {prec:.3f}, "
            f"recall {truth[above].sum() / max(1, truth.sum()):.3f} ({name} edits)"
        )
        if name == "benchmark":
            kinds = np.array([pair[2] for pair in pairs])
            p_copy = cal.probability(pos_score)
            kind_rows = []
            for kind in dict.fromkeys(kinds):
                sel = kinds == kind
                kind_rows.append(
                    [
                        kind,
                        int(sel.sum()),
                        f"{correct[sel].mean():.3f}",
                        f"{p_copy[sel].mean():.3f}",
                        f"{(pos_score[sel] >= t99).mean():.3f}",
                    ]
                )
            print_table(
                "Benchmark edits, per kind (copies only)",
                ["edit", "copies", "recall@1", "mean P(copy)", "found at the 0.99 threshold"],
                kind_rows,
            )

    if args.save_scores:
        np.savez(args.save_scores, **saved)
    if args.whitening:
        variants = {"raw": None, "center": fit_whitening(coll, "center")}
        for dim in (64, 128):
            for shrink in (0.25, 0.5):
                variants[f"pca{dim} shrink{shrink}"] = fit_whitening(coll, "pca", dim=dim, shrink=shrink)
        rows = []
        for name, tf in variants.items():
            c = coll if tf is None else tf.apply(coll)
            n_s, _ = top1(neg_vecs if tf is None else tf.apply(neg_vecs), c)
            row: list[object] = [name]
            for fam, pairs in families.items():
                q = fam_vecs[fam] if tf is None else tf.apply(fam_vecs[fam])
                p_s, best = top1(q, c)
                ok = np.array([path_of[int(ids[b])] == str(p[0]) for b, p in zip(best, pairs, strict=True)])
                row += [f"{ok.mean():.3f}", f"{auroc(p_s[ok], n_s):.3f}"]
            rows.append(row)
        print_table(
            "Collection-adaptive processing (learned on the indexed vectors): copy retrieval and detection",
            ["variant", "recall@1 same", "AUROC copy vs non-copy, same", "recall@1 shifted", "AUROC shifted"],
            rows,
        )
    if headline:
        print("\n### README headline row\n\n| what | measured | script |\n|---|---|---|")
        print(headline_row(**headline))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


def headline_row(ece: float, precision: float, recall: float) -> str:
    """The README's headline row: ECE of the shipped (logistic) fit and the measured precision at the
    0.99-precision threshold, both on the benchmark family of edits."""
    return (
        "| copy-probability calibration error (ECE) on the near-duplicate benchmark's edits; `--precision 0.99`"
        f" measured | {ece:.3f}; precision {precision:.3f} (recall {recall:.2f}) | `bench/bench_calibration.py` |"
    )


if __name__ == "__main__":
    main()
