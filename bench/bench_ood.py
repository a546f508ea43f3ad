"""'No similar images': the calibrated k-NN rule vs the original fixed 0.5 rule, on the same queries.

Collection: real photos (two thirds of ``lookalike_data.photos()``), calibrated by ``Index.add``.
In-distribution queries: the held-out third (photos of the same kinds, not indexed) and edited copies
of indexed photos. Out-of-distribution queries, by kind: clipart, icons, astronomy (tiles of the
Hubble deep field, Moon and Earth maps), Fashion-MNIST products, noise.

Per OOD kind: AUROC and FPR at 95% TPR of each rule's score (the best similarity for the fixed
rule, the k-th best for the k-NN rule), and each rule's actual operating point as shipped (fixed:
best < 0.5; k-NN: k-th below the collection's 5% quantile). In-distribution is the positive class.
Scores are read as the index reads them: in the model's no-match view when it has one.

Usage: python bench/bench_ood.py [--quick] [--k 1 5 10] [--model NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # lookalike_data

from _calib_common import auroc, build_index, edited, fpr_at_tpr, noise_images, split_photos
from _util import print_table
from lookalike.imaging.load import open_rgb
from lookalike.models.registry import DEFAULT_MODEL
from lookalike.search.no_match import NO_MATCH_POOL, NoMatchRule
from lookalike.search.results import QueryResult
from lookalike.store.base import Hit
from lookalike_data import ood_images


def astronomy_tiles(paths: list[Path], per_image: int, seed: int = 0) -> list[Image.Image]:
    """Square crops of the (few, large) astronomy images, so the kind has more than four queries."""
    rng = np.random.default_rng(seed)
    out = []
    for path in paths:
        img = open_rgb(path)
        side = min(img.size)
        for _ in range(per_image):
            s = int(side * rng.uniform(0.4, 0.9))
            x0, y0 = int(rng.integers(0, img.width - s + 1)), int(rng.integers(0, img.height - s + 1))
            out.append(img.crop((x0, y0, x0 + s, y0 + s)).resize((384, 384)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer photos and OOD images (a few minutes)")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5, 10], help="k values of the k-NN score to show")
    parser.add_argument("--accept", type=float, default=0.95)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"embedding model (default: {DEFAULT_MODEL})")
    args = parser.parse_args()
    per_kind = 40 if args.quick else 120
    start = time.perf_counter()
    indexed, held = split_photos(150 if args.quick else None)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        index = build_index(Path(tmp) / "db", indexed, args.model)
        cal = index.calibration
        assert cal is not None and cal.ok, cal
        print(f"collection: {len(indexed)} photos; held out: {len(held)}; calibration {cal.seconds:.1f} s")
        copies = [im for _, im in edited(list(rng.choice(indexed, len(held), replace=False)), seed=7)]
        id_queries: dict[str, list] = {"held-out photos": list(held), "edited copies": copies}
        ood = ood_images()
        ood_queries: dict[str, list] = {}
        for kind in ("clipart", "icons", "fashion-mnist"):
            files = sorted(ood.get(kind, []))
            if files:
                pick = rng.choice(len(files), min(per_kind, len(files)), replace=False)
                ood_queries[kind] = [files[i] for i in sorted(pick)]
        if ood.get("astronomy"):
            ood_queries["astronomy"] = astronomy_tiles(ood["astronomy"], max(1, per_kind // len(ood["astronomy"])))
        ood_queries["noise"] = noise_images(per_kind)

        kmax = max([*args.k, cal.knn_k])
        threshold = cal.knn_threshold(args.accept)

        view = cal.view  # the model's no-match view (None: whole vectors), as the index reads it
        reader = NoMatchRule.fixed(view=view)  # reads scores as the index's rule does

        def hits_of(result: QueryResult) -> list[Hit]:
            return [Hit(m.id, m.score) for m in result.results]

        def scores(queries: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            results = index.search_many(queries, k=kmax + (NO_MATCH_POOL if view else 0), no_match_rule="fixed")
            vectors = index.embed(queries)  # unreadable queries would raise: these are all valid images
            mat = np.array(
                [reader.read(index.store, v, hits_of(r))[:kmax] for v, r in zip(vectors, results, strict=True)]
            )
            knn_rule = np.array([r.no_match for r in index.search_many(queries, k=1, no_match_rule="knn")])
            fixed_rule = np.array([r.no_match for r in results if not r.error])
            return mat, fixed_rule, knn_rule, np.array([r.error is None for r in results])

        id_mats = {name: scores(q) for name, q in id_queries.items()}
        id_all = np.concatenate([m[0] for m in id_mats.values()])
        id_fixed = np.concatenate([m[1] for m in id_mats.values()])
        id_knn = np.concatenate([m[2] for m in id_mats.values()])
        ood_mats = {name: scores(q) for name, q in ood_queries.items()}
        index.close()

    header = ["OOD kind", "n", "AUROC top-1 (fixed)"]
    header += [f"AUROC {k}-th NN" for k in args.k]
    header += ["FPR@95 top-1 (fixed)"] + [f"FPR@95 {k}-th NN" for k in args.k]
    rows = []
    for name, (mat, _, _, _) in ood_mats.items():
        row: list[object] = [name, len(mat), f"{auroc(id_all[:, 0], mat[:, 0]):.3f}"]
        row += [f"{auroc(id_all[:, k - 1], mat[:, k - 1]):.3f}" for k in args.k]
        row += [f"{fpr_at_tpr(id_all[:, 0], mat[:, 0]):.3f}"]
        row += [f"{fpr_at_tpr(id_all[:, k - 1], mat[:, k - 1]):.3f}" for k in args.k]
        rows.append(row)
    print_table(
        f"Score separation, in-distribution ({len(id_all)} queries) vs each OOD kind (AUROC higher, FPR lower)",
        header,
        rows,
    )

    op_rows = [
        [
            "in-distribution (accepted = TPR)",
            len(id_all),
            f"{1 - id_fixed.mean():.3f}",
            f"{1 - id_knn.mean():.3f}",
        ]
    ]
    for name, (mat, fixed, knn, _) in id_mats.items():
        op_rows.append([f"  {name}", len(mat), f"{1 - fixed.mean():.3f}", f"{1 - knn.mean():.3f}"])
    for name, (mat, fixed, knn, _) in ood_mats.items():
        op_rows.append([f"OOD {name} (accepted = FPR)", len(mat), f"{1 - fixed.mean():.3f}", f"{1 - knn.mean():.3f}"])
    print_table(
        f"Rules as shipped: fraction of queries accepted (not flagged no_match). fixed: best < 0.5; "
        f"knn: {cal.knn_k}-th NN < {threshold:.3f} (collection's {1 - args.accept:.0%} quantile)",
        ["queries", "n", "fixed 0.5 rule", f"k-NN rule (k={cal.knn_k})"],
        op_rows,
    )
    print("\n### README headline row\n\n| what | measured | script |\n|---|---|---|")
    print(headline_row(1 - id_knn.mean(), 1 - id_fixed.mean(), ood_mats, list(ood_queries)))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


def headline_row(id_knn: float, id_fixed: float, ood_mats: dict[str, tuple], kinds: list[str]) -> str:
    """The README's headline row: in-collection acceptance, and the range of wrong acceptance over the
    unrelated kinds, for the shipped k-NN rule and the fixed 0.5 rule."""
    knn = [1 - float(m[2].mean()) for m in ood_mats.values()]
    fixed = [1 - float(m[1].mean()) for m in ood_mats.values()]
    names = ", ".join("Fashion-MNIST" if k == "fashion-mnist" else k for k in kinds)
    return (
        f'| "no similar images" accepts in-collection queries / wrongly accepts unrelated ones ({names}) |'
        f" {id_knn:.0%} / {100 * min(knn):.0f}-{max(knn):.0%} (fixed 0.5 rule: {id_fixed:.0%} /"
        f" {100 * min(fixed):.0f}-{max(fixed):.0%}) | `bench/bench_ood.py` |"
    )


if __name__ == "__main__":
    main()
