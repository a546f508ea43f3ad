"""Near-duplicate quality: `lookalike dups` against imagededup's PHash and DHash on the same files.

Builds (once, cached under $LOOKALIKE_DATA_DIR/bench-neardup) a set of real photos, each with the
standard copy-detection edits, plus distractors (other photos and upscaled Fashion-MNIST). Reports
pairwise precision, recall and F1 at each method's default setting, per edit type, and a
precision-recall sweep over thresholds.

    python bench/bench_neardup.py --quick            # 50 originals, 1,000 distractors
    python bench/bench_neardup.py                    # 200 originals, 5,000 distractors
    python bench/bench_neardup.py --photo-list F     # photo paths, one a line (else tools/lookalike_data.py)

imagededup 0.3.3 imports torchvision at import time (for its CNN method, which needs downloaded
weights anyway); torchvision does not work here, so a stub stands in for it and only the hashing
methods are compared.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # lookalike_data
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _dup_edits

from _dup_edits import NEARDUP_EDITS, edit
from _util import stub_torchvision

EDITS = NEARDUP_EDITS
MILD = ("downscale", "jpeg", "crop90")


def _cache() -> Path:
    env = os.environ.get("LOOKALIKE_DATA_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("lookalike")) / "data"


def photo_paths(args: argparse.Namespace) -> list[Path]:
    if args.photo_list:
        return [Path(line) for line in Path(args.photo_list).read_text().splitlines() if line.strip()]
    from lookalike_data import photos

    return list(photos())


def fashion_arrays(n: int) -> np.ndarray:
    try:
        from lookalike_data import fashion_mnist

        images, _ = fashion_mnist("train")
        return images[:n]
    except ImportError:
        import gzip

        candidates = list(_cache().rglob("train-images-idx3-ubyte*")) + list(
            Path("/usr/share/datasets").rglob("train-images-idx3-ubyte*")
        )
        if not candidates:  # fetch the Debian package once into the cache (nothing installed)
            import subprocess
            import tempfile

            dest = _cache() / "debian" / "dataset-fashion-mnist"
            with tempfile.TemporaryDirectory() as tmp:
                os.chmod(tmp, 0o777)
                subprocess.run(["apt-get", "download", "-q", "dataset-fashion-mnist"], cwd=tmp, check=True)
                deb = next(Path(tmp).glob("*.deb"))
                subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
            candidates = list(dest.rglob("train-images-idx3-ubyte*"))
        if not candidates:
            raise SystemExit(
                "no Fashion-MNIST: install dataset-fashion-mnist or put tools/ (lookalike_data) on sys.path"
            ) from None
        raw = candidates[0].read_bytes()
        if candidates[0].suffix == ".gz":
            raw = gzip.decompress(raw)
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:n]


def build(args: argparse.Namespace) -> tuple[Path, dict[str, tuple[int, str]]]:
    """Write the benchmark folder; returns it and file name -> (family or -1, edit kind)."""
    tag = f"o{args.originals}-d{args.distractors}-s{args.seed}"
    folder = _cache() / "bench-neardup" / tag / "images"
    labels: dict[str, tuple[int, str]] = {}
    rng = random.Random(args.seed)
    photos = photo_paths(args)
    if len(photos) < args.originals:
        raise SystemExit(f"need {args.originals} photos, have {len(photos)}")
    rng.shuffle(photos)
    originals, spare = photos[: args.originals], photos[args.originals :]
    done = (folder.parent / ".complete").exists()
    folder.mkdir(parents=True, exist_ok=True)
    for fam, src in enumerate(originals):
        name = f"f{fam:04d}_original.jpg"
        labels[name] = (fam, "original")
        base = None
        if not done:
            base = Image.open(src).convert("RGB")
            base.thumbnail((1024, 1024))
            base.save(folder / name, quality=92)
        for kind in EDITS:
            ename = f"f{fam:04d}_{kind}.jpg"
            labels[ename] = (fam, kind)
            if not done:
                out, quality = edit(base, kind, rng)  # type: ignore[arg-type]
                out.save(folder / ename, quality=quality)
    n_photo_distractors = min(len(spare), args.distractors // 5)
    for i, src in enumerate(spare[:n_photo_distractors]):
        name = f"d_photo{i:05d}.jpg"
        labels[name] = (-1, "distractor")
        if not done:
            im = Image.open(src).convert("RGB")
            im.thumbnail((1024, 1024))
            im.save(folder / name, quality=90)
    n_fashion = args.distractors - n_photo_distractors
    if not done:
        for i, arr in enumerate(fashion_arrays(n_fashion)):
            Image.fromarray(arr).resize((224, 224), Image.BICUBIC).convert("RGB").save(folder / f"d_fashion{i:05d}.png")
    for i in range(n_fashion):
        labels[f"d_fashion{i:05d}.png"] = (-1, "distractor")
    (folder.parent / ".complete").write_text("ok")
    return folder, labels


# -- scoring ----------------------------------------------------------------------------------------
def truth_pairs(labels: dict[str, tuple[int, str]]) -> set[frozenset[str]]:
    families: dict[int, list[str]] = defaultdict(list)
    for name, (fam, _) in labels.items():
        if fam >= 0:
            families[fam].append(name)
    return {frozenset(p) for names in families.values() for p in itertools.combinations(sorted(names), 2)}


def prf(pred: set[frozenset[str]], truth: set[frozenset[str]]) -> tuple[float, float, float]:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else 1.0
    r = tp / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def per_edit(pred: set[frozenset[str]], labels: dict[str, tuple[int, str]]) -> dict[str, tuple[float, float, float]]:
    """Per edit kind: the (original, edited) pairs found (recall) and the precision of pairs touching that kind."""
    out = {}
    for kind in EDITS:
        truth = {frozenset((f"f{fam:04d}_original.jpg", n)) for n, (fam, k) in labels.items() if k == kind}
        involving = {p for p in pred if any(labels[n][1] == kind for n in p)}
        correct = {p for p in involving if len({labels[n][0] for n in p}) == 1 and labels[next(iter(p))][0] >= 0}
        found = len(pred & truth)
        precision = len(correct) / len(involving) if involving else 1.0
        recall = found / len(truth) if truth else 1.0
        out[kind] = (precision, recall, 2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return out


def group_pairs(groups: list[dict[str, object]]) -> set[frozenset[str]]:
    pairs = set()
    for g in groups:
        names = [Path(str(g["keep"])).name] + [Path(str(d)).name for d in g["duplicates"]]  # type: ignore[union-attr]
        pairs.update(frozenset(p) for p in itertools.combinations(names, 2))
    return pairs


def dict_pairs(dups: dict[str, list[str]]) -> set[frozenset[str]]:
    return {frozenset((a, b)) for a, bs in dups.items() for b in bs if a != b}


def import_imagededup():  # type: ignore[no-untyped-def]
    stub_torchvision()
    from imagededup.methods import DHash, PHash

    return PHash, DHash


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 originals, 1,000 distractors")
    parser.add_argument("--originals", type=int, default=200)
    parser.add_argument("--distractors", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photo-list", type=Path)
    parser.add_argument("--model", default=None, help="embedding model (default: lookalike's default)")
    parser.add_argument("--threshold", type=float, default=None, help="lookalike threshold (default: the model's)")
    parser.add_argument("--margin", type=float, default=None, help="density margin (default: the model's; 0: off)")
    parser.add_argument("--no-imagededup", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.originals, args.distractors = 50, 1000
    from lookalike.dedup.groups import default_threshold, find_duplicate_groups, resolve_rule
    from lookalike.index import Index
    from lookalike.models.registry import DEFAULT_MODEL

    args.model = args.model or DEFAULT_MODEL

    t0 = time.perf_counter()
    folder, labels = build(args)
    print(
        f"benchmark set: {args.originals} originals x {len(EDITS)} edits + {args.distractors} distractors "
        f"= {len(labels)} files in {folder} ({time.perf_counter() - t0:.0f} s)"
    )
    truth = truth_pairs(labels)
    db = folder.parent / f"db-{args.model}"
    t0 = time.perf_counter()
    with Index.open(db, model=args.model) as index:
        index.add([folder])
        index_s = time.perf_counter() - t0
        n_contents = len({rec.sha256 for rec in index.store.items()})
        default, margin, leftover_margin, verify = resolve_rule(
            args.model, n_contents, threshold=args.threshold, margin=args.margin
        )
        checked = ", verified" if verify else ""
        t0 = time.perf_counter()
        results: dict[str, set[frozenset[str]]] = {}
        results[f"lookalike {args.model} @{default:.3f} margin {margin:.2f}{checked}"] = group_pairs(
            [
                g.to_dict()
                for g in find_duplicate_groups(
                    index.store, default, margin=margin, leftover_margin=leftover_margin, verify=verify
                )
            ]
        )
        dups_s = time.perf_counter() - t0
        if verify:  # the similarity rule alone (`dups --no-verify`), for comparison
            t0 = time.perf_counter()
            results[f"lookalike {args.model} --no-verify"] = group_pairs(
                [g.to_dict() for g in find_duplicate_groups(index.store, verify=False)]
            )
            print(f"lookalike --no-verify: dups {time.perf_counter() - t0:.1f} s")
        if margin > 0:  # the plain-threshold rule, for comparison
            plain = default_threshold(args.model, 0.0)
            results[f"lookalike {args.model} @{plain:.3f} margin 0"] = group_pairs(
                [g.to_dict() for g in find_duplicate_groups(index.store, plain, margin=0.0, verify=False)]
            )
        curve = []
        settings = [(t, 0.0) for t in (0.70, 0.75, 0.78, 0.80, 0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94, 0.96)]
        settings += [(t, m) for t in (0.70, 0.72, 0.74, 0.76, 0.78, 0.80, 0.82, 0.84) for m in (0.03, 0.05, 0.07, 0.09)]
        for t, m in settings:
            pred = group_pairs([g.to_dict() for g in find_duplicate_groups(index.store, t, margin=m, verify=False)])
            touching = {pair for pair in pred if any(labels[n][0] >= 0 for n in pair)}
            curve.append((f"{t:.2f} | {m:.2f}", prf(pred, truth), len(touching & truth) / max(1, len(touching))))
    print(f"lookalike: index {index_s:.0f} s, dups {dups_s:.1f} s")
    hash_curves = {}
    if not args.no_imagededup:
        PHash, DHash = import_imagededup()
        for name, cls in (("PHash", PHash), ("DHash", DHash)):
            t0 = time.perf_counter()
            method = cls(verbose=False)
            encodings = method.encode_images(image_dir=str(folder))
            results[f"imagededup {name} @10"] = dict_pairs(
                method.find_duplicates(encoding_map=encodings, max_distance_threshold=10)
            )
            hash_curves[name] = [
                (
                    str(d),
                    prf(dict_pairs(method.find_duplicates(encoding_map=encodings, max_distance_threshold=d)), truth),
                )
                for d in (2, 4, 6, 8, 10, 12, 14, 16)
            ]
            print(f"imagededup {name}: {time.perf_counter() - t0:.0f} s")

    print("\n## Overall (pairwise, default settings)\n")
    print("| method | precision | recall | F1 | mild-edit F1 | precision, distractor-only pairs left out |")
    print("|---|---|---|---|---|---|")
    for name, pred in results.items():
        p, r, f = prf(pred, truth)
        mild = per_edit(pred, labels)
        mild_truth = {pair for pair in truth if all(labels[n][1] in (*MILD, "original") for n in pair)}
        mild_pred = {pair for pair in pred if all(labels[n][1] in (*MILD, "original") for n in pair)}
        _, _, mf = prf(mild_pred, mild_truth)
        touching = {pair for pair in pred if any(labels[n][0] >= 0 for n in pair)}
        tp = len(touching & truth) / len(touching) if touching else 1.0
        print(f"| {name} | {p:.3f} | {r:.3f} | {f:.3f} | {mf:.3f} | {tp:.3f} |")
        del mild
    print("\n## Per edit (original <-> edited pair; precision of pairs touching that edit / recall / F1)\n")
    names = list(results)
    print("| edit | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    tables = {n: per_edit(results[n], labels) for n in names}
    for kind in EDITS:
        cells = [f"{tables[n][kind][0]:.2f} / {tables[n][kind][1]:.2f} / {tables[n][kind][2]:.2f}" for n in names]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print(f"\n## Precision-recall: lookalike {args.model} by cosine threshold and density margin (no verify)\n")
    print("| threshold | margin | precision | recall | F1 | precision, distractor-only pairs left out |")
    print("|---|---|---|---|---|---|")
    for t, (p, r, f), tp in curve:
        print(f"| {t} | {p:.3f} | {r:.3f} | {f:.3f} | {tp:.3f} |")
    for name, rows in hash_curves.items():
        print(f"\n## Precision-recall: imagededup {name} by max Hamming distance\n")
        print("| distance | precision | recall | F1 |")
        print("|---|---|---|---|")
        for d, (p, r, f) in rows:
            print(f"| {d} | {p:.3f} | {r:.3f} | {f:.3f} |")


if __name__ == "__main__":
    main()
