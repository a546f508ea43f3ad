"""`lookalike audit` against planted problems and planted odd ones, tuning part vs held-out part.

Data (see ``_audit_data.py``): real photos from Debian packages, split by source package (tuning:
GCompris; held-out: the wallpaper packages and scikit-image's samples). Per part:

* **quality pool**: the clean photos, one planted problem per photo and kind made from them (blur,
  under/over-exposure, near-solid and gradient images, 10:1 strips, 32 px images, greyscale), and
  drawn "pictures coming soon" placeholders (``low_information``). Everything is indexed by the real
  pipeline (``Index.add``), so the scores are computed from the statistics the indexer stored.
* **odd-one-out trials**: collections of one or two kinds of photo (GCompris: by activity; held-out:
  the wallpapers, with and without the sample photos) plus a few planted odd ones (placeholders,
  diagrams, cards, screenshots, close-ups of photos); ``audit()`` runs on each.

Cut-offs are chosen on the tuning part (each quality cut-off: the middle of the range that reaches
the best tuning F1; the odd-one-out cut-off likewise) and every row is reported at the cut-offs the
library ships, on both parts. A finding that is true of a planted picture by construction is
neither rewarded nor penalised: a near-solid picture of a dark colour is dark too, an over-exposed
photo with nothing left is low-information too (``DONT_CARE``). Pictures made from a greyscale
photo count as greyscale.

cleanvision (PyPI, at its defaults) runs on the same files when its virtualenv exists
(``--peers-venv``, default /work/peers-venv: ``python -m venv /work/peers-venv &&
/work/peers-venv/bin/pip install cleanvision==0.3.7 fastdup==2.54``; it is never installed by this
script, and runs in a subprocess so its numpy/pillow never meet lookalike's). fastdup's outliers are
run on the held-out trials the same way, when it imports.

Usage: python bench/bench_audit.py [--quick] [--model NAME] [--peers-venv DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # lookalike_data

from _audit_data import ODD, ODD_KINDS, PLANT, PROBLEMS, load_photo, package_of, placeholder, save, split_photos
from _util import print_table
from lookalike import Index
from lookalike.audit import DEFAULT_CUTOFFS, DEFAULT_OUTLIER_CUTOFF, audit
from lookalike.audit.outliers import MIN_K, TONE_WEIGHT
from lookalike.audit.quality import ISSUES, QualityCutoffs, assess
from lookalike.audit.quality import scores as quality_scores
from lookalike.models.registry import DEFAULT_MODEL
from lookalike.store.local import LocalStore
from lookalike_data import photos

DONT_CARE = {
    "low_information": {"dark", "bright", "grayscale", "blurry"},
    "dark": {"low_information", "grayscale", "blurry"},
    "bright": {"low_information", "grayscale", "blurry"},
}
#: Kinds of GCompris photo (by the activity folder they come from), grouped into the tuning trials.
TUNING_COLLECTIONS = (
    ("monuments",),
    ("fishes", "sea"),
    ("tools", "others"),
    ("renewable", "animals"),
    ("erase", "details"),
    ("tools",),
    ("animals", "music"),
)


@dataclass
class Item:
    path: Path
    part: str
    kind: str  # clean, a planted problem (ISSUES), or odd:<kind>
    grey_source: bool = False
    source: str = ""
    truth: set[str] = field(default_factory=set)


def photo_kind(path: Path) -> str:
    """The kind of a GCompris photo: its activity's folder (fishes, monuments, tools, ...)."""
    parts = path.parts
    if "categorization" in parts:
        return parts[-2]
    for name, kind in (("explore_monuments", "monuments"), ("animals", "animals"), ("clickgame", "sea")):
        if name in parts:
            return kind
    for name in ("erase", "details", "explore_world_music"):
        if name in parts:
            return "music" if name == "explore_world_music" else name
    return package_of(path)


def is_grey(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("L", "LA", "I", "I;16", "1"):
            return True
        arr = np.asarray(img.convert("RGB"), dtype=np.int16)
    return bool(np.abs(arr - arr.mean(axis=2, keepdims=True)).max() <= 2)


# -- building the data ---------------------------------------------------------------------------------
def build_part(part: str, sources: list[Path], folder: Path, quick: bool, seed: int) -> list[Item]:
    """Files of one part: clean photos (copied as they are), planted problems, placeholders, odd ones."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    items: list[Item] = []
    every_kind = part == "held-out"  # the held-out part is small: every photo gets every problem
    for i, src in enumerate(sources):
        grey = is_grey(src)
        dest = folder / f"clean-{i:03d}{src.suffix}"
        shutil.copyfile(src, dest)
        items.append(Item(dest, part, "clean", grey, str(src), {"grayscale"} if grey else set()))
        photo = load_photo(src)
        kinds = PROBLEMS if every_kind else [PROBLEMS[i % len(PROBLEMS)], PROBLEMS[(i + 3) % len(PROBLEMS)]]
        for kind in kinds:
            path = save(PLANT[kind](photo, rng), folder / f"{kind}-{i:03d}", rng)
            truth = {kind} | ({"grayscale"} if grey and kind not in ("low_information",) else set())
            items.append(Item(path, part, kind, grey, str(src), truth))
    n_placeholders = 10 if quick else 25
    for j in range(n_placeholders):
        path = save(placeholder(rng), folder / f"placeholder-{j:03d}", rng)
        items.append(Item(path, part, "odd:placeholder", truth={"low_information"}))
    # close-ups are details of objects: large GCompris photos; held-out: scikit-image's sample photos
    objects = [p for p in sources if package_of(p) == "python3-skimage"]
    large = objects or [p for p in sources if max(_size(p)) >= 1000] or sources
    per_kind = 6 if quick else 12
    for kind in ODD_KINDS:
        if kind == "placeholder":
            continue  # the placeholders above serve both pools
        for j in range(per_kind):
            origin = large[int(rng.integers(len(large)))] if kind == "close-up" else None
            source = load_photo(origin, 4096) if origin is not None else None
            path = save(ODD[kind](rng, source=source), folder / f"odd-{kind}-{j:03d}", rng)
            items.append(Item(path, part, f"odd:{kind}", source=str(origin or "")))
    return items


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


# -- quality -------------------------------------------------------------------------------------------
def quality_rows(items: list[Item], records: dict[str, object]) -> list[tuple[Item, dict[str, float], object]]:
    """(item, scores, record) of the quality pool: clean, planted problems and placeholders."""
    out = []
    for item in items:
        if item.kind.startswith("odd:") and item.kind != "odd:placeholder":
            continue
        rec = records[str(item.path)]
        out.append((item, quality_scores(rec.extra["stats"], rec.width, rec.height), rec))  # type: ignore[attr-defined]
    return out


def prf(truth: list[bool], pred: list[bool], care: list[bool] | None = None) -> tuple[float, float, float, int]:
    t, p = np.asarray(truth, dtype=bool), np.asarray(pred, dtype=bool)
    c = np.ones(len(t), dtype=bool) if care is None else np.asarray(care, dtype=bool)
    tp = int((t & p & c).sum())
    fp = int((~t & p & c).sum())
    fn = int((t & ~p & c).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1, int(t.sum())


def evaluate_quality(rows: list, cutoffs: QualityCutoffs) -> dict[str, tuple[float, float, float, int]]:
    flags = [set(assess(rec.extra["stats"], rec.width, rec.height, cutoffs).issues) for _, _, rec in rows]
    out = {}
    for issue in ISSUES:
        truth = [issue in item.truth for item, _, _ in rows]
        care = [issue in item.truth or issue not in DONT_CARE.get(item.kind, ()) for item, _, _ in rows]
        out[issue] = prf(truth, [issue in f for f in flags], care)
    return out


def best_interval(values: np.ndarray, f1_of) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The middle of the candidate range with the best F1, and that F1."""
    f1s = np.array([f1_of(v) for v in values])
    best = float(f1s.max())
    at = np.flatnonzero(f1s >= best - 1e-9)
    # the longest run of best values, then its middle
    runs, start = [], at[0]
    for a, b in zip(at, [*at[1:], None], strict=True):
        if b is None or b != a + 1:
            runs.append((start, a))
            start = b
    lo, hi = max(runs, key=lambda r: r[1] - r[0])
    return float((values[lo] + values[hi]) / 2), best


def tune_quality(rows: list) -> QualityCutoffs:
    """Each cut-off on its own (the others at their defaults), on the tuning part."""
    chosen: dict[str, float] = {}
    grid = np.round(np.linspace(0.0, 1.0, 401), 4)
    for name in [*ISSUES, "low_information_tone"]:
        issue = "low_information" if name == "low_information_tone" else name

        def f1_of(value: float, name: str = name, issue: str = issue) -> float:
            cut = DEFAULT_CUTOFFS.with_overrides({name: float(value)})
            return evaluate_quality(rows, cut)[issue][2]

        coarse = grid[::8]
        centre, _ = best_interval(coarse, f1_of)
        fine = grid[(grid >= centre - 0.1) & (grid <= centre + 0.1)]
        chosen[name], _ = best_interval(fine, f1_of)
    return DEFAULT_CUTOFFS.with_overrides({k: round(v, 3) for k, v in chosen.items()})


# -- odd ones out --------------------------------------------------------------------------------------
def trial_collections(items: list[Item], part: str, quick: bool, seed: int) -> list[tuple[list[Item], list[Item]]]:
    """(base photos, planted odd ones) per trial."""
    rng = np.random.default_rng(seed)
    clean = [i for i in items if i.kind == "clean"]
    odd = [i for i in items if i.kind.startswith("odd:")]
    if part == "tuning":
        bases = []
        by_kind: dict[str, list[Item]] = defaultdict(list)
        for item in clean:
            by_kind[photo_kind(Path(item.source))].append(item)
        for kinds in TUNING_COLLECTIONS:
            bases.append([i for k in kinds for i in by_kind.get(k, [])])
        bases = [b for b in bases if len(b) >= 12]
        repeats = 3 if quick else 4
    else:
        wallpapers = [i for i in clean if package_of(Path(i.source)) != "python3-skimage" and "clean" in i.kind]
        bases = [wallpapers, clean]
        repeats = 3 if quick else 8
    trials = []
    for base in bases:
        # a close-up of a photo in the collection is a crop of it (a near-duplicate), not an odd one
        in_base = {i.source for i in base}
        candidates = [o for o in odd if not o.source or o.source not in in_base]
        for _ in range(repeats):
            n_odd = max(2, round(0.08 * len(base)))
            pick = rng.choice(len(candidates), n_odd, replace=False)
            trials.append((base, [candidates[int(j)] for j in pick]))
    return trials


def run_trials(pool: Index, trials: list, folder: Path, ks: list[int | None]) -> dict[int | None, list]:
    """Audit each trial collection (a store holding its items' vectors, copied from the pool) per k.

    Per trial and k: (truth, knn part, tone part, kind) of every member.
    """
    store = pool.store
    out: dict[int | None, list] = {k: [] for k in ks}
    for t, (base, odd) in enumerate(trials):
        members = [*base, *odd]
        recs = [store.get_by_path(str(m.path)) for m in members]
        db = folder / f"trial-{t}"
        shutil.rmtree(db, ignore_errors=True)
        trial_store = LocalStore(db)
        trial_store.set_model_identity(store.model_identity)  # type: ignore[arg-type]
        trial_store.add(recs, store.vectors([r.id for r in recs]))  # type: ignore[union-attr]
        with Index(trial_store, model=pool.model) as index:
            for k in ks:
                report = audit(index, k=k, measure=False)
                parts = {a.record.path: a.outlier_parts for a in report.items}
                truth = [m.kind.startswith("odd:") for m in members]
                knn = [parts[str(m.path)]["knn"] for m in members]
                tone = [parts[str(m.path)]["tone"] for m in members]
                out[k].append((truth, knn, tone, [m.kind for m in members]))
        shutil.rmtree(db)
    return out


def outlier_flags(
    results: list, cutoff: float, weight: float = TONE_WEIGHT
) -> tuple[list[bool], list[bool], list[str]]:
    truth = [t for tr, _, _, _ in results for t in tr]
    pred = [a + weight * b >= cutoff for _, knn, tone, _ in results for a, b in zip(knn, tone, strict=True)]
    kinds = [k for _, _, _, kinds in results for k in kinds]
    return truth, pred, kinds


def outlier_prf(results: list, cutoff: float, weight: float = TONE_WEIGHT) -> tuple[float, float, float, int]:
    truth, pred, _ = outlier_flags(results, cutoff, weight)
    return prf(truth, pred)


def tune_outliers(results: dict[int | None, list]) -> tuple[int | None, float, float, float, list[list[object]]]:
    """(k, tone weight, cut-off, tuning F1, one row per k) on the tuning trials.

    Per k, the weight and cut-off with the best tuning F1; then the smallest k within 0.02 of the best
    F1 (the F1 of a few dozen odd ones moves by more than that between samples; fewer neighbours keep
    the statistic local).
    """
    grid = np.round(np.arange(1.0, 12.01, 0.1), 2)
    per_k: dict[int | None, tuple[float, float, float]] = {}
    for k, res in results.items():
        best = (-1.0, TONE_WEIGHT, DEFAULT_OUTLIER_CUTOFF)
        for weight in (0.0, 0.1, 0.15, 0.2, 0.3, 0.5):
            cut, f1 = best_interval(grid, lambda c, res=res, w=weight: outlier_prf(res, c, w)[2])
            if f1 > best[0] + 1e-9:
                best = (f1, weight, cut)
        per_k[k] = best
    top = max(f1 for f1, _, _ in per_k.values())
    order = sorted(per_k, key=lambda k: 0 if k is None else k)  # None: the shipped rule, max(MIN_K, auto_k)
    chosen = next(k for k in order if k is not None and per_k[k][0] >= top - 0.02)
    rows = [
        [k or "shipped rule", f"{f1:.2f}", w, f"{c:.2f}"]
        for k, (f1, w, c) in sorted(per_k.items(), key=lambda kv: kv[0] or 0)
    ]
    f1, weight, cut = per_k[chosen]
    return chosen, weight, cut, f1, rows


# -- peers (subprocesses in their own virtualenv) ------------------------------------------------------
CLEANVISION_SCRIPT = """
import json, sys
from cleanvision import Imagelab
paths = json.load(open(sys.argv[1]))
lab = Imagelab(filepaths=paths)
lab.find_issues(issue_types={"dark": {}, "light": {}, "blurry": {}, "low_information": {}, "odd_aspect_ratio": {},
                             "odd_size": {}, "grayscale": {}}, verbose=False)
df = lab.issues
out = {p: [c[3:-6] for c in df.columns if c.startswith("is_") and bool(df.loc[p, c])] for p in df.index}
json.dump(out, open(sys.argv[2], "w"))
"""
CLEANVISION_NAMES = {
    "dark": "dark",
    "light": "bright",
    "blurry": "blurry",
    "low_information": "low_information",
    "odd_aspect_ratio": "odd_aspect",
    "odd_size": "tiny",
    "grayscale": "grayscale",
}
FASTDUP_SCRIPT = """
import json, sys, tempfile
import fastdup
paths = json.load(open(sys.argv[1]))
work = tempfile.mkdtemp()
fd = fastdup.create(work_dir=work, input_dir=paths)
fd.run(verbose=False, overwrite=True)
df = fd.outliers()
json.dump(sorted(set(df["filename_outlier"].astype(str))), open(sys.argv[2], "w"))
"""


def run_peer(venv: Path, script: str, paths: list[str], tmp: Path, name: str) -> object | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    inp, outp = tmp / f"{name}-in.json", tmp / f"{name}-out.json"
    inp.write_text(json.dumps(paths))
    done = subprocess.run(
        [str(python), "-c", script, str(inp), str(outp)], capture_output=True, text=True, timeout=3600, check=False
    )
    if done.returncode != 0 or not outp.exists():
        print(f"{name} failed: {done.stderr.strip().splitlines()[-1:] if done.stderr else done.returncode}")
        return None
    return json.loads(outp.read_text())


# -- cost of the statistics ----------------------------------------------------------------------------
def stats_cost(paths: list[Path], index: Index, repeats: int = 3) -> list[list[object]]:
    """CPU per picture on one thread: decoding + preprocessing as indexing does, the statistics, the model."""
    from lookalike.imaging.load import decode_image, read_bytes
    from lookalike.imaging.stats import pixel_stats

    model = index.model
    data = [read_bytes(p) for p in paths]
    decoded = [decode_image(d, draft_size=model.spec.input_size).image for d in data]
    tensors = [model.preprocess(im) for im in decoded]

    def per_image(fn) -> float:  # type: ignore[no-untyped-def]
        best = float("inf")
        for _ in range(repeats):
            started = time.process_time()
            fn()
            best = min(best, (time.process_time() - started) / len(paths) * 1000)
        return best

    decode_ms = per_image(
        lambda: [model.preprocess(decode_image(d, draft_size=model.spec.input_size).image) for d in data]
    )
    stats_ms = per_image(lambda: [pixel_stats(im) for im in decoded])
    model_ms = per_image(
        lambda: [model.embed_arrays(np.stack(tensors[i : i + 32])) for i in range(0, len(tensors), 32)]
    )
    total = decode_ms + model_ms
    return [
        [
            len(paths),
            f"{decode_ms:.1f}",
            f"{model_ms:.1f}",
            f"{stats_ms:.2f}",
            f"{100 * stats_ms / total:.1f}%",
        ]
    ]


# -- scale ---------------------------------------------------------------------------------------------
def run_scale(n: int, db: Path | None) -> None:
    """Time ``audit()`` on n synthetic vectors (bench_dups' clustered 1280-d set) in a real LocalStore.

    The items have no files, so no pixel statistics: the quality part is skipped (it is a few
    microseconds of arithmetic per item) and everything else runs as on a real index.
    """
    from _util import peak_rss_mb
    from bench_dups import build
    from lookalike.search import calibration as calib

    holder = None
    if db is None:
        holder = tempfile.TemporaryDirectory(prefix="bench-audit-scale-")
        db = Path(holder.name) / "db"
    if not (db / "items.sqlite").exists():
        started = time.perf_counter()
        build(db, n)
        print(f"built {n:,} synthetic items in {time.perf_counter() - started:.0f} s")
    store = LocalStore(db, index_kind="auto")  # IVF + SQ8 above 20k items, as `lookalike index` builds
    calib.save_calibration(store, calib.fallback("synthetic vectors", len(store)))  # no model to load
    with Index(store, model="mobilenet_v2") as index:
        started = time.perf_counter()
        report = audit(index, measure=False)
        seconds = time.perf_counter() - started
    counts = report.counts()
    print_table(
        f"audit() of {len(report.items):,} synthetic items (index built beforehand; the time includes "
        "building its `auto` ANN index when it was never searched)",
        ["items", "seconds", "odd ones out", "near-duplicate groups", "clusters", "peak RSS MB"],
        [
            [
                len(report.items),
                f"{seconds:.1f}",
                counts["outliers"],
                counts["near_duplicate_groups"],
                counts["clusters"],
                f"{peak_rss_mb():.0f}",
            ]
        ],
    )
    if holder is not None:
        holder.cleanup()


# -- main ----------------------------------------------------------------------------------------------
def fmt(p: float, r: float, f: float) -> str:
    return f"{p:.2f} / {r:.2f} / **{f:.2f}**" if f >= 0.9 else f"{p:.2f} / {r:.2f} / {f:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer photos and trials (a few minutes)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--peers-venv", type=Path, default=Path("/work/peers-venv"))
    parser.add_argument(
        "--keep", type=Path, help="build the data here and keep it; a later run with the same folder reuses it"
    )
    parser.add_argument("--scale", type=int, help="instead: time audit() on this many synthetic vectors")
    parser.add_argument("--db", type=Path, help="with --scale: keep the synthetic store here (reused when present)")
    args = parser.parse_args()
    if args.scale:
        run_scale(args.scale, args.db)
        return
    started = time.perf_counter()
    parts = split_photos(photos())
    if args.quick:
        parts["tuning"] = parts["tuning"][::3]
    tmp_holder = None
    if args.keep:
        root = args.keep
        root.mkdir(parents=True, exist_ok=True)
    else:
        tmp_holder = tempfile.TemporaryDirectory(prefix="bench-audit-")
        root = Path(tmp_holder.name)
    items: dict[str, list[Item]] = {}
    pools: dict[str, Index] = {}
    records: dict[str, dict[str, object]] = {}
    for n, (part, sources) in enumerate(parts.items()):
        saved = root / part / "items.json"
        if saved.exists():
            items[part] = [
                Item(Path(d["path"]), d["part"], d["kind"], d["grey"], d["source"], set(d["truth"]))
                for d in json.loads(saved.read_text())
            ]
        else:
            shutil.rmtree(root / part, ignore_errors=True)
            items[part] = build_part(part, sources, root / part / "files", args.quick, seed=10 + n)
        pools[part] = Index.open(root / part / "pool", model=args.model)
        report = pools[part].add([root / part / "files"], calibrate=False)
        saved.write_text(
            json.dumps(
                [
                    {
                        "path": str(i.path),
                        "part": i.part,
                        "kind": i.kind,
                        "grey": i.grey_source,
                        "source": i.source,
                        "truth": sorted(i.truth),
                    }
                    for i in items[part]
                ]
            )
        )
        records[part] = {r.path: r for r in pools[part].store.items()}
        print(
            f"{part}: {len(sources)} photos from {sorted({package_of(p) for p in sources})}, "
            f"{len(items[part])} files indexed ({report.summary()})"
        )

    # quality
    rows = {part: quality_rows(items[part], records[part]) for part in parts}
    tuned = tune_quality(rows["tuning"])
    shipped = {part: evaluate_quality(rows[part], DEFAULT_CUTOFFS) for part in parts}
    tuned_eval = {part: evaluate_quality(rows[part], tuned) for part in parts}

    # odd ones out
    ks: list[int | None] = [None, 2, 3, 4, 5, 8]
    trials = {part: trial_collections(items[part], part, args.quick, seed=20 + n) for n, part in enumerate(parts)}
    results = {part: run_trials(pools[part], trials[part], root / part, ks) for part in parts}
    best_k, best_weight, best_cut, best_f1, k_rows = tune_outliers(results["tuning"])
    shipped_odd = {part: outlier_prf(results[part][None], DEFAULT_OUTLIER_CUTOFF) for part in parts}

    # peers on the held-out part
    peers_tmp = root / "peers"
    peers_tmp.mkdir(exist_ok=True)
    held_paths = [str(item.path) for item, _, _ in rows["held-out"]]
    cv = run_peer(args.peers_venv, CLEANVISION_SCRIPT, held_paths, peers_tmp, "cleanvision")
    cv_eval: dict[str, tuple[float, float, float, int]] = {}
    if isinstance(cv, dict):
        for issue in ISSUES:
            truth, pred, care = [], [], []
            for item, _, _ in rows["held-out"]:
                found = {CLEANVISION_NAMES.get(name, name) for name in cv.get(str(item.path), [])}
                truth.append(issue in item.truth)
                pred.append(issue in found)
                care.append(issue in item.truth or issue not in DONT_CARE.get(item.kind, ()))
            cv_eval[issue] = prf(truth, pred, care)
    fastdup_eval = None
    fd_truth, fd_pred = [], []
    for t, (base, odd) in enumerate(trials["held-out"]):
        members = [*base, *odd]
        found = run_peer(args.peers_venv, FASTDUP_SCRIPT, [str(m.path) for m in members], peers_tmp, f"fastdup{t}")
        if found is None:
            break
        names = {Path(p).name for p in found}  # type: ignore[union-attr]
        fd_truth += [m.kind.startswith("odd:") for m in members]
        fd_pred += [m.path.name in names for m in members]
    if fd_truth:
        fastdup_eval = prf(fd_truth, fd_pred)
    cost = stats_cost([i.path for i in items["held-out"] if i.kind == "clean"], pools["held-out"])
    for pool in pools.values():
        pool.close()

    header = ["finding", "held-out n", "lookalike P / R / F1 (held-out)", "cleanvision P / R / F1", "tuning F1"]
    table = []
    for issue in ISSUES:
        p, r, f, n = shipped["held-out"][issue]
        peer = fmt(*cv_eval[issue][:3]) if issue in cv_eval else "not run"
        table.append([f"`{issue}`", n, fmt(p, r, f), peer, f"{shipped['tuning'][issue][2]:.2f}"])
    p, r, f, n = shipped_odd["held-out"]
    peer = f"fastdup outliers: {fmt(*fastdup_eval[:3])}" if fastdup_eval else "no outlier check"
    table.append(["odd ones out", n, fmt(p, r, f), peer, f"{shipped_odd['tuning'][2]:.2f}"])
    print_table(
        "Audit findings at the shipped cut-offs (precision / recall / F1; cut-offs chosen on the tuning part)",
        header,
        table,
    )

    cut_rows = []
    for name, value in DEFAULT_CUTOFFS.to_dict().items():
        issue = "low_information" if name == "low_information_tone" else name
        cut_rows.append(
            [
                f"`{name}`",
                f"{value:.3f}",
                f"{getattr(tuned, name):.3f}",
                f"{tuned_eval['tuning'][issue][2]:.2f}",
                f"{tuned_eval['held-out'][issue][2]:.2f}",
            ]
        )
    cut_rows.append(
        [
            "odd ones out",
            f"{DEFAULT_OUTLIER_CUTOFF:.2f} (k = max({MIN_K}, auto_k), tone weight {TONE_WEIGHT})",
            f"{best_cut:.2f} (k = {best_k or f'max({MIN_K}, auto_k)'}, tone weight {best_weight})",
            f"{best_f1:.2f}",
            f"{outlier_prf(results['held-out'][best_k], best_cut, best_weight)[2]:.2f}",
        ]
    )
    print_table(
        "Cut-offs: shipped vs chosen on the tuning part now (and the F1 each gives)",
        ["cut-off", "shipped", "tuned now", "tuning F1 at tuned", "held-out F1 at tuned"],
        cut_rows,
    )

    for row in k_rows:
        k = None if row[0] == "shipped rule" else row[0]
        row.append(f"{outlier_prf(results['held-out'][k], float(row[3]), float(row[2]))[2]:.2f}")  # type: ignore[arg-type]
    print_table(
        "Odd ones out per k: the tone weight and cut-off with the best tuning F1 (held-out F1 at them)",
        ["k", "tuning F1", "tone weight", "cut-off", "held-out F1"],
        k_rows,
    )
    per_kind = []
    for part in parts:
        truth, pred, kinds = outlier_flags(results[part][None], DEFAULT_OUTLIER_CUTOFF)
        for kind in ODD_KINDS:
            hits = [p for p, k in zip(pred, kinds, strict=True) if k == f"odd:{kind}"]
            if hits:
                per_kind.append([part, kind, len(hits), f"{np.mean(hits):.2f}"])
        wrong = [p for p, t in zip(pred, truth, strict=True) if not t]
        per_kind.append([part, "photos wrongly flagged", len(wrong), f"{np.mean(wrong):.3f}"])
    print_table(
        "Odd ones out by kind (recall), and photos flagged (false-positive rate), shipped settings",
        ["part", "kind", "n", "rate"],
        per_kind,
    )
    print_table(
        "Pixel statistics at index time: CPU ms per picture (process CPU time; held-out photos, 0.2-25 MP)",
        ["photos", "decode + preprocess", "model (batch 32)", "statistics", "statistics / indexing CPU"],
        cost,
    )
    n_trials = {part: len(found) for part, found in trials.items()}
    print(f"\ntrials: {n_trials}; total {time.perf_counter() - started:.0f} s")
    if tmp_holder is not None:
        tmp_holder.cleanup()


if __name__ == "__main__":
    main()
