"""Duplicates on a held-out collection: `lookalike dups` at its frozen defaults, tuning set vs held-out set.

The defaults of the duplicate rule (threshold, density margin) were measured on photos from the
Debian packages in ``tools/lookalike_data.py: PACKAGES``. This benchmark builds two sets with the same
recipe and reports the same figures for both, side by side (issue #15):

* **tuning**: originals drawn from the PACKAGES photos, each with the 18 edits of
  ``bench/_dup_edits.py: FAMILY`` (7 mild, 11 hard), plus other PACKAGES photos as singletons;
* **held-out**: originals from ``HELDOUT_PACKAGES`` (Debian packages never used for tuning), the same
  18 edits, other held-out photos as *look-alike singletons* (same kinds of scenes, no copy anywhere
  in the set: the hard negatives), and **natural groups** (``NATURAL_GROUPS``: one picture shipped
  several times by a package, as a thumbnail and full renderings, at 4:3 and 16:9, in colour and
  black and white, mirrored...).

Collage tiles (three per collage) are random crops of PACKAGES photos that neither set uses.
Nothing here is tuned: every setting is the model's default (``resolve_rule``: threshold, margin,
second-chance margin, and geometric verification, on by default for the default model). The rule was
chosen on the tuning set; the held-out set was looked at after each choice (docs/cleaning.md lists
how often).

Reported per set, pairwise (two files of one family or natural group are a true pair; a predicted
pair is two files in one returned group): precision / recall / F1 overall, on natural groups, on
copies (originals and their edits), on hard copies (pairs touching a hard edit); recall of each edit
(the edit lands in its original's group); and copy **search** accuracy@1 per edit (the copy's nearest
neighbour, among every file that is not a copy, is its original).

Reproduce (the sets are built once and cached under ``$LOOKALIKE_DATA_DIR/bench-dups-heldout``)::

    python scripts/fetch_data.py --heldout            # the PACKAGES and the HELDOUT_PACKAGES
    python bench/bench_dups_heldout.py --quick        # 10 originals, 20 singletons, 8 natural groups a set
    python bench/bench_dups_heldout.py --markdown     # full: 60 originals x 18 edits, all singletons/groups
    python bench/bench_dups_heldout.py --markdown --peers   # + imagededup and fastdup on the same files
    python bench/bench_dups_heldout.py --markdown --turns   # + the opt-in `dups --turns`, with its cost

Peers (optional, ``--peers``): imagededup 0.3.3.post2 in this venv (``pip install --no-deps
imagededup==0.3.3.post2`` plus the ``bench`` extra of pyproject.toml): PHash and DHash at their default
Hamming distance (10) and at their best on each set, and its CNN method with a ``CustomModel`` wrapping
lookalike's offline MobileNetV2 (torchvision is stubbed: imagededup imports it for its own models only)
at its default cosine 0.9 and at its best. fastdup 2.54 would replace numpy and Pillow, so it lives in
its own venv (``python3 -m venv /work/peers-venv && /work/peers-venv/bin/pip install fastdup==2.54``;
``--fastdup-python``) and runs there as a subprocess, offline (``SENTRY_OPT_OUT=1``): its components at
the default ``ccthreshold`` 0.96 and its similarity pairs at the default 0.9, and each at its best.
"Best" settings are chosen on the very set they are scored on (an oracle, so an upper bound).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # lookalike_data
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _dup_edits

import lookalike_data as datasets
from _dup_edits import FAMILY, HARD, MILD, edit, load_rgb
from _util import stub_torchvision

SETS = ("tuning", "heldout")
SET_TITLES = {"tuning": "tuning", "heldout": "held-out"}
#: Bump when the way a set is built changes, so cached sets are rebuilt.
BUILD_VERSION = 2
Pair = frozenset[str]
OPT_IN = "--turns"  # the opt-in views run (its table's title)


@dataclass(frozen=True)
class Label:
    """What one file of a set is: ``family`` is ``f<i>`` (an original and its edits), ``n:<group>``
    (a natural group) or ``""`` (a singleton); ``kind`` is ``original``, an edit, ``natural`` or ``singleton``."""

    family: str
    kind: str
    source: str  # the package it came from


# -- building the sets --------------------------------------------------------------------------------
def _tile(path: Path, rng: random.Random) -> Image.Image:
    """A random 50-80% crop of a photo, maybe mirrored: a collage tile that is no file of the set."""
    image = load_rgb(path, 512)
    w, h = image.size
    keep = rng.uniform(0.5, 0.8)
    cw, ch = int(w * keep), int(h * keep)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    tile = image.crop((x, y, x + cw, y + ch))
    return tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else tile


def build(which: str, args: argparse.Namespace) -> tuple[Path, dict[str, Label]]:
    """Write (once) the set's folder; return it and file name -> label."""
    tuning = list(datasets.photos())
    rng = random.Random(args.seed)
    rng.shuffle(tuning)
    groups: dict[str, list[Path]] = {}
    if which == "tuning":
        originals, rest = tuning[: args.originals], tuning[args.originals :]
        count = args.singletons if args.singletons is not None else min(156, len(rest) - 24)
        singletons = rest[:count]
        tiles = tuning[args.originals + len(singletons) :]
    else:
        held = list(datasets.heldout_photos())
        random.Random(args.seed + 1).shuffle(held)
        originals, rest = held[: args.originals], held[args.originals :]
        singletons = rest[: args.singletons] if args.singletons is not None else rest
        all_groups = datasets.heldout_natural_groups()
        names = sorted(all_groups)
        if args.natural is not None:
            names = sorted(random.Random(args.seed + 2).sample(names, min(args.natural, len(names))))
        groups = {name: all_groups[name] for name in names}
        tiles = tuning[-max(24, args.originals) :]  # PACKAGES photos: never in the held-out set
    if len(originals) < args.originals:
        raise SystemExit(f"{which}: need {args.originals} originals, have {len(originals)}")
    if len(tiles) < 3:
        raise SystemExit(f"{which}: need >= 3 spare photos for collage tiles, have {len(tiles)}")
    tag = f"{which}-o{len(originals)}-s{len(singletons)}-n{len(groups)}-seed{args.seed}-v{BUILD_VERSION}"
    root = datasets.data_cache_dir() / "bench-dups-heldout" / tag
    folder = root / "images"
    if (root / ".complete").exists():
        raw = json.loads((root / "labels.json").read_text())
        return folder, {name: Label(**value) for name, value in raw.items()}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    labels: dict[str, Label] = {}
    edit_rng = random.Random(args.seed + 3)
    for fam, src in enumerate(originals):
        source = datasets.package_of(src)
        base = load_rgb(src)
        name = f"f{fam:03d}_original.jpg"
        base.save(folder / name, quality=92)
        labels[name] = Label(f"f{fam}", "original", source)
        for kind in FAMILY:
            tile_set = [_tile(p, edit_rng) for p in edit_rng.sample(tiles, 3)] if kind == "collage" else []
            out, quality = edit(base, kind, edit_rng, tiles=tile_set)
            ename = f"f{fam:03d}_{kind}.jpg"
            out.save(folder / ename, quality=quality)
            labels[ename] = Label(f"f{fam}", kind, source)
    for i, src in enumerate(singletons):
        name = f"s{i:04d}.jpg"
        load_rgb(src).save(folder / name, quality=92)
        labels[name] = Label("", "singleton", datasets.package_of(src))
    for g, (group, files) in enumerate(groups.items()):
        for j, src in enumerate(files):
            name = f"n{g:02d}_{j}.jpg"
            load_rgb(src, 1600).save(folder / name, quality=92)
            labels[name] = Label(f"n:{group}", "natural", datasets.package_of(src))
    (root / "labels.json").write_text(json.dumps({n: vars(lab) for n, lab in labels.items()}, indent=0))
    (root / "sources.txt").write_text(
        "".join(f"original {p}\n" for p in originals)
        + "".join(f"singleton {p}\n" for p in singletons)
        + "".join(f"natural {g} {p}\n" for g, files in groups.items() for p in files)
    )
    (root / ".complete").write_text("ok")
    return folder, labels


def built_sets(names: str, quick: bool, error: Callable[[str], object]) -> Iterator[tuple[str, Path, dict[str, Label]]]:
    """``(set name, folder, labels)`` of each comma-separated set name, at the full size or ``quick``'s
    (the other benchmarks on these sets: bench_sweep.py, bench_check.py); ``error`` reports a bad name."""
    build_args = argparse.Namespace(originals=60, singletons=None, natural=None, seed=0)
    if quick:
        build_args.originals, build_args.singletons, build_args.natural = 10, 20, 8
    for which in [s.strip() for s in names.split(",") if s.strip()]:
        if which not in SETS:
            error(f"unknown set {which!r}")
            continue
        yield (which, *build(which, build_args))


# -- scoring -----------------------------------------------------------------------------------------
def truth_pairs(labels: dict[str, Label]) -> set[Pair]:
    families: dict[str, list[str]] = defaultdict(list)
    for name, lab in labels.items():
        if lab.family:
            families[lab.family].append(name)
    return {frozenset(p) for names in families.values() for p in itertools.combinations(sorted(names), 2)}


def group_pairs(groups: list[list[str]]) -> set[Pair]:
    return {frozenset(p) for names in groups for p in itertools.combinations(sorted(set(names)), 2)}


def dict_pairs(dups: dict[str, list[str]]) -> set[Pair]:
    return {frozenset((a, b)) for a, bs in dups.items() for b in bs if a != b}


def prf(pred: set[Pair], truth: set[Pair]) -> tuple[float, float, float]:
    tp = len(pred & truth)
    p = tp / len(pred) if pred else 1.0
    r = tp / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def scoped_prf(pred: set[Pair], truth: set[Pair], scope: set[str]) -> tuple[float, float, float]:
    """P/R/F1 over the pairs that touch ``scope`` (a false pair from a scoped file to anything counts)."""
    touching = {p for p in pred if p & scope}
    return prf(touching, {p for p in truth if p & scope})


@dataclass
class Scores:
    overall: tuple[float, float, float]
    natural: tuple[float, float, float] | None
    copies: tuple[float, float, float]
    hard: tuple[float, float, float]
    recall: dict[str, float]
    singletons_grouped: tuple[int, int]
    pairs: int


def score(pred: set[Pair], labels: dict[str, Label]) -> Scores:
    truth = truth_pairs(labels)
    natural = {n for n, lab in labels.items() if lab.kind == "natural"}
    copies = {n for n, lab in labels.items() if lab.family.startswith("f")}
    hard = {n for n, lab in labels.items() if lab.kind in HARD}
    singles = {n for n, lab in labels.items() if lab.kind == "singleton"}
    recall = {}
    for kind in FAMILY:
        want = {frozenset((f"{n[:4]}_original.jpg", n)) for n, lab in labels.items() if lab.kind == kind}
        recall[kind] = len(pred & want) / len(want) if want else float("nan")
    grouped = {n for p in pred for n in p} & singles
    return Scores(
        prf(pred, truth),
        scoped_prf(pred, truth, natural) if natural else None,
        scoped_prf(pred, truth, copies),
        scoped_prf(pred, truth, hard),
        recall,
        (len(grouped), len(singles)),
        len(pred),
    )


def search_at1(names: list[str], vectors: np.ndarray, labels: dict[str, Label]) -> dict[str, float]:
    """Per edit: share of copies whose nearest non-copy file (cosine) is their original."""
    is_copy = np.array([labels[n].kind in FAMILY for n in names])
    db = np.flatnonzero(~is_copy)
    vecs = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    top = db[np.argmax(vecs[is_copy] @ vecs[db].T, axis=1)]
    hits: dict[str, list[bool]] = defaultdict(list)
    for q, t in zip(np.flatnonzero(is_copy), top, strict=True):
        lab = labels[names[q]]
        hits[lab.kind].append(names[t] == f"{names[q][:4]}_original.jpg")
    return {kind: float(np.mean(hits[kind])) for kind in FAMILY if hits[kind]}


def search_at1_verified(
    names: list[str],
    vectors: np.ndarray,
    labels: dict[str, Label],
    records: dict[str, object],
    check: object,
    verify_k: int,
) -> dict[str, float]:
    """:func:`search_at1` as ``search --verify`` ranks: the copy's ``verify_k`` nearest non-copy files
    (at least ``VERIFY_FLOOR``) checked point for point, confirmed ones first (``copies_first``)."""
    from lookalike.dedup.copies import copies_first

    @dataclass(frozen=True)
    class Hit:
        name: str
        score: float

    is_copy = np.array([labels[n].kind in FAMILY for n in names])
    db = np.flatnonzero(~is_copy)
    vecs = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    hits: dict[str, list[bool]] = defaultdict(list)
    for q in np.flatnonzero(is_copy):
        scores = vecs[db] @ vecs[q]
        order = np.argsort(-scores)[: max(1, verify_k)]
        ranked = [Hit(names[db[j]], float(scores[j])) for j in order]
        query = records[names[q]]
        ordered, _ = copies_first(
            ranked,
            lambda hit: check.confirms(query, records[hit.name]),  # type: ignore[attr-defined]  # noqa: B023
            verify_k=verify_k,
        )
        hits[labels[names[q]].kind].append(ordered[0].name == f"{names[q][:4]}_original.jpg")
    return {kind: float(np.mean(hits[kind])) for kind in FAMILY if hits[kind]}


# -- lookalike -----------------------------------------------------------------------------------------
@dataclass
class LookalikeRun:
    model: str
    threshold: float
    margin: float
    pred: set[Pair]
    at1: dict[str, float]
    names: list[str]
    vectors: np.ndarray
    index_s: float
    dups_s: float
    best: tuple[float, float, set[Pair]]  # threshold, margin, pairs: the best F1 on this set (oracle)
    turned: tuple[set[Pair], float, int] | None = None  # `dups --turns`: pairs, seconds, images turned
    verify: bool = False  # the default ran the geometric check
    leftover_margin: float = 0.0
    reread: int = 0  # images the check decoded in the default run
    from_files: int = 0  # of them, read from their files (not from the copies the index keeps)
    plain: set[Pair] = field(default_factory=set)  # `dups --no-verify`
    plain_s: float = 0.0
    at1_verified: dict[str, float] = field(default_factory=dict)  # `search --verify`
    search_verify_s: float = 0.0


def run_lookalike(
    folder: Path,
    labels: dict[str, Label],
    model: str | None,
    turns: bool = False,
    crops: bool = False,
    search_verify_k: int | None = None,
) -> LookalikeRun:
    """`dups` at its defaults (geometric verification on where the model has it), the plain rule
    (`--no-verify`) beside it, the best threshold/margin on this set (an oracle), and the opt-in views."""
    from lookalike.dedup.groups import find_duplicate_groups, resolve_rule
    from lookalike.dedup.verify import GeometricCheck
    from lookalike.index import Index
    from lookalike.models.registry import DEFAULT_MODEL

    model = model or DEFAULT_MODEL
    truth = truth_pairs(labels)
    with tempfile.TemporaryDirectory(prefix="lookalike-heldout-") as tmp:
        t0 = time.perf_counter()
        with Index.open(Path(tmp) / "db", model=model) as index:
            index.add([folder], calibrate=False)
            index_s = time.perf_counter() - t0
            n_contents = len({rec.sha256 for rec in index.store.items()})
            threshold, margin, leftover_margin, verify = resolve_rule(model, n_contents)
            # one for every run below (each image is read once), reading the index's copies as `dups` does
            check = GeometricCheck(stores=[index.store])

            def pairs(**rule: object) -> set[Pair]:
                found = find_duplicate_groups(index.store, **rule)  # type: ignore[arg-type]
                return group_pairs([[Path(r.path).name for r in [g.keep, *g.duplicates]] for g in found])

            t0 = time.perf_counter()
            pred = pairs(verify=check if verify else False)  # every other setting at its default
            dups_s = time.perf_counter() - t0
            reread, from_files = check.decoded, check.decoded - check.from_index
            t0 = time.perf_counter()
            plain = pairs(verify=False)
            plain_s = time.perf_counter() - t0
            best = (threshold, margin, pred)
            for m in (0.0, margin):
                for t in np.arange(0.60, 0.97, 0.02):
                    cand = pairs(
                        threshold=float(t), margin=m, leftover_margin=leftover_margin, verify=check if verify else False
                    )
                    if prf(cand, truth)[2] > prf(best[2], truth)[2]:
                        best = (float(t), m, cand)
            turned = None
            if turns or crops:
                from lookalike.dedup.turns import TurnedViews

                views = TurnedViews(index.model, turns=turns, crops=crops)
                before = check.decoded
                t0 = time.perf_counter()
                found = find_duplicate_groups(index.store, views=views, verify=check if verify else False)
                turned = (
                    group_pairs([[Path(r.path).name for r in [g.keep, *g.duplicates]] for g in found]),
                    time.perf_counter() - t0,
                    views.embedded + check.decoded - before,
                )
            records = {rec.id: Path(rec.path).name for rec in index.store.items()}
            ids, vectors = index.store.all_vectors()
            names = [records[int(i)] for i in ids]
            vectors = np.asarray(vectors, dtype=np.float32)
            at1_verified: dict[str, float] = {}
            search_verify_s = 0.0
            if verify:
                from lookalike.dedup.copies import VERIFY_K as SEARCH_VERIFY_K

                by_name = {Path(rec.path).name: rec for rec in index.store.items()}
                t0 = time.perf_counter()
                at1_verified = search_at1_verified(
                    names, vectors, labels, by_name, check, search_verify_k or SEARCH_VERIFY_K
                )
                search_verify_s = time.perf_counter() - t0
    return LookalikeRun(
        model,
        threshold,
        margin,
        pred,
        search_at1(names, vectors, labels),
        names,
        vectors,
        index_s,
        dups_s,
        best,
        turned,
        verify,
        leftover_margin,
        reread,
        from_files,
        plain,
        plain_s,
        at1_verified,
        search_verify_s,
    )


# -- peers ---------------------------------------------------------------------------------------------
def _best(curve: list[tuple[str, set[Pair]]], truth: set[Pair]) -> tuple[str, set[Pair]]:
    return max(curve, key=lambda item: prf(item[1], truth)[2])


def run_imagededup(folder: Path, labels: dict[str, Label]) -> dict[str, set[Pair]]:
    """PHash/DHash at distance 10 and at their best; the CNN method with lookalike's MobileNetV2."""
    stub_torchvision()
    import torch
    from imagededup.methods import CNN, DHash, PHash
    from imagededup.utils.models import CustomModel

    from lookalike.models.builtin import MOBILENET_PIP, MOBILENET_WEIGHTS
    from lookalike.models.mobilenet_v2 import load_mobilenet_v2
    from lookalike.models.weights import package_file

    truth = truth_pairs(labels)
    out: dict[str, set[Pair]] = {}
    for name, cls in (("PHash", PHash), ("DHash", DHash)):
        method = cls(verbose=False)
        enc = method.encode_images(image_dir=str(folder))
        curve = [
            (str(d), dict_pairs(method.find_duplicates(encoding_map=enc, max_distance_threshold=d)))
            for d in range(0, 33, 2)
        ]
        out[f"imagededup {name} @10 (default)"] = dict(curve)["10"]
        d, pairs = _best(curve, truth)
        out[f"imagededup {name} @{d} (best)"] = pairs

    class Net(torch.nn.Module):
        """lookalike's MobileNetV2 (ImageNet weights, offline), pooled 1280-d features."""

        def __init__(self) -> None:
            super().__init__()
            self.net = load_mobilenet_v2(package_file(*MOBILENET_WEIGHTS, MOBILENET_PIP))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)[0]

    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def transform(image: Image.Image) -> torch.Tensor:  # imagededup's MobileNetV3 recipe, without torchvision
        image = image.convert("RGB").resize((256, 256), Image.Resampling.BILINEAR).crop((16, 16, 240, 240))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - mean) / std

    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    cnn = CNN(
        verbose=False, model_config=CustomModel(name="lookalike-mobilenet_v2", model=Net().eval(), transform=transform)
    )
    enc = cnn.encode_images(image_dir=str(folder), num_enc_workers=0)
    curve = []
    for t in np.arange(0.50, 0.99, 0.02):
        dups = cnn.find_duplicates(encoding_map=enc, min_similarity_threshold=float(t), num_sim_workers=0)
        curve.append((f"{t:.2f}", dict_pairs(dups)))
    default = cnn.find_duplicates(encoding_map=enc, min_similarity_threshold=0.9, num_sim_workers=0)
    out["imagededup CNN (lookalike MobileNetV2) @0.90 (default)"] = dict_pairs(default)
    t, pairs = _best(curve, truth)
    out[f"imagededup CNN (lookalike MobileNetV2) @{t} (best)"] = pairs
    return out


_FASTDUP_SCRIPT = r"""
import json, os, sys
import fastdup
folder, work, out = sys.argv[1:4]
fd = fastdup.create(work_dir=work, input_dir=folder)
fd.run(threshold=0.5, overwrite=True, verbose=False)
sim = fd.similarity()
name = os.path.basename
rows = zip(sim["filename_from"], sim["filename_to"], sim["distance"])
pairs = [[name(a), name(b), float(d)] for a, b, d in rows]
cc, _ = fd.connected_components()
comps = {}
for fname, comp in zip(cc["filename"], cc["component_id"]):
    comps.setdefault(int(comp), []).append(name(fname))
json.dump({"pairs": pairs, "components": [v for v in comps.values() if len(v) > 1]}, open(out, "w"))
"""


def _components(pairs: list[tuple[str, str]]) -> list[list[str]]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    comps: dict[str, list[str]] = defaultdict(list)
    for x in list(parent):
        comps[find(x)].append(x)
    return list(comps.values())


def run_fastdup(folder: Path, labels: dict[str, Label], python: str) -> dict[str, set[Pair]]:
    """fastdup 2.54 in its own venv: components at ccthreshold 0.96 and similarity pairs at 0.9, and best."""
    truth = truth_pairs(labels)
    with tempfile.TemporaryDirectory(prefix="fastdup-") as tmp:
        out = Path(tmp) / "out.json"
        env = dict(os.environ, SENTRY_OPT_OUT="1")
        proc = subprocess.run(
            [python, "-c", _FASTDUP_SCRIPT, str(folder), str(Path(tmp) / "work"), str(out)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"fastdup failed: {proc.stderr[-2000:]}")
        raw = json.loads(out.read_text())
    scored = [(a, b, d) for a, b, d in raw["pairs"] if a != b]
    results = {"fastdup components @0.96 (default)": group_pairs(raw["components"])}
    results["fastdup similarity pairs @0.90 (default)"] = {frozenset((a, b)) for a, b, d in scored if d >= 0.9}
    pair_curve, comp_curve = [], []
    for t in np.arange(0.50, 0.99, 0.02):
        edges = [(a, b) for a, b, d in scored if d >= t]
        pair_curve.append((f"{t:.2f}", {frozenset(e) for e in edges}))
        comp_curve.append((f"{t:.2f}", group_pairs(_components(edges))))
    t, pairs = _best(comp_curve, truth)
    results[f"fastdup components @{t} (best)"] = pairs
    t, pairs = _best(pair_curve, truth)
    results[f"fastdup similarity pairs @{t} (best)"] = pairs
    return results


# -- report ---------------------------------------------------------------------------------------------
def _f(x: float | None) -> str:
    return "–" if x is None or x != x else f"{x:.3f}"


def _prf(x: tuple[float, float, float] | None) -> str:
    return "–" if x is None else f"{x[0]:.3f} / {x[1]:.3f} / {x[2]:.3f}"


def describe(which: str, labels: dict[str, Label]) -> str:
    kinds = defaultdict(int)
    for lab in labels.values():
        kinds[lab.kind] += 1
    groups = len({lab.family for lab in labels.values() if lab.kind == "natural"})
    return (
        f"{SET_TITLES[which]}: {kinds['original']} originals x {len(FAMILY)} edits, "
        f"{kinds['natural']} files in {groups} natural groups, {kinds['singleton']} singletons = {len(labels)} files"
    )


def print_main_table(runs: dict[str, LookalikeRun], scores: dict[str, Scores]) -> None:
    model = next(iter(runs.values()))
    head = [SET_TITLES[w] for w in runs]
    checked = ", verified" if model.verify else ""
    print(
        f"| `lookalike dups` default ({model.model} @{model.threshold:.2f}, margin {model.margin:.2f}"
        f"{checked}) | " + " | ".join(head) + " |"
    )
    print("|---|" + "---|" * len(runs))
    rows: list[tuple[str, list[str]]] = [
        ("pairs: precision / recall / F1", [_prf(scores[w].overall) for w in runs]),
        ("natural groups: P / R / F1", [_prf(scores[w].natural) for w in runs]),
        ("copies (original + 18 edits): P / R / F1", [_prf(scores[w].copies) for w in runs]),
        ("hard copies (pairs touching a hard edit): P / R / F1", [_prf(scores[w].hard) for w in runs]),
        (
            "singletons wrongly grouped",
            [f"{scores[w].singletons_grouped[0]} of {scores[w].singletons_grouped[1]}" for w in runs],
        ),
    ]
    for name, cells in rows:
        print(f"| {name} | " + " | ".join(cells) + " |")
    checked = all(runs[w].at1_verified for w in runs)
    title = "recall per edit / copy search accuracy@1" + (" / with `search --verify`" if checked else "")
    print(f"| **{title}** | " + " | ".join("" for _ in runs) + " |")
    for kind in FAMILY:
        tag = " (hard)" if kind in HARD else ""
        cells = [
            f"{_f(scores[w].recall.get(kind))} / {_f(runs[w].at1.get(kind))}"
            + (f" / {_f(runs[w].at1_verified.get(kind))}" if checked else "")
            for w in runs
        ]
        print(f"| {kind}{tag} | " + " | ".join(cells) + " |")
    mild = [float(np.mean([scores[w].recall[k] for k in MILD])) for w in runs]
    hard = [float(np.mean([scores[w].recall[k] for k in HARD])) for w in runs]
    at1 = [float(np.mean(list(runs[w].at1.values()))) for w in runs]
    print(
        "| mean recall: mild edits / hard edits | "
        + " | ".join(f"{m:.3f} / {h:.3f}" for m, h in zip(mild, hard, strict=True))
        + " |"
    )
    print("| mean copy search accuracy@1 | " + " | ".join(f"{a:.3f}" for a in at1) + " |")
    if checked:
        at1v = [float(np.mean(list(runs[w].at1_verified.values()))) for w in runs]
        cells = [f"{a:.3f} ({runs[w].search_verify_s:.0f} s)" for a, w in zip(at1v, runs, strict=True)]
        title = "mean copy search accuracy@1 with `search --verify` (time for every copy)"
        print(f"| {title} | " + " | ".join(cells) + " |")
    cells = [
        f"{runs[w].reread} of {len(runs[w].names)} ({runs[w].from_files} from their files); "
        f"{runs[w].dups_s:.1f} s vs {runs[w].plain_s:.1f} s"
        for w in runs
    ]
    title = "cost: images the check read (from their files, not the index's copies); `dups` time vs `--no-verify`"
    print(f"| {title} | " + " | ".join(cells) + " |")


def print_turns_table(runs: dict[str, LookalikeRun], labels: dict[str, dict[str, Label]]) -> None:
    """`dups --turns` (opt-in) beside the default, with its cost."""
    sets = [w for w in runs if runs[w].turned is not None]
    if not sets:
        return
    print(f"| `lookalike dups {OPT_IN}` | " + " | ".join(SET_TITLES[w] for w in sets) + " |")
    print("|---|" + "---|" * len(sets))
    scored = {w: score(runs[w].turned[0], labels[w]) for w in sets}  # type: ignore[index]
    print("| pairs: precision / recall / F1 | " + " | ".join(_prf(scored[w].overall) for w in sets) + " |")
    print("| natural groups: P / R / F1 | " + " | ".join(_prf(scored[w].natural) for w in sets) + " |")
    for kind in ("rot90", "rot180", "rot270", "mirror", "embed", "collage", "crop50", "border5", "heavy_filter"):
        print(f"| recall {kind} | " + " | ".join(_f(scored[w].recall.get(kind)) for w in sets) + " |")
    cells = [
        f"{runs[w].turned[2]} of {len(runs[w].names)}; {runs[w].turned[1]:.1f} s vs {runs[w].dups_s:.1f} s"  # type: ignore[index]
        for w in sets
    ]
    print("| cost: images re-read; `dups` time vs default | " + " | ".join(cells) + " |")


def print_peer_table(results: dict[str, dict[str, set[Pair]]], labels: dict[str, dict[str, Label]]) -> None:
    sets = list(results)
    methods: list[str] = []
    for w in sets:
        methods += [m for m in results[w] if m not in methods]
    print(
        "| method | "
        + " | ".join(f"{SET_TITLES[w]}: P / R / F1" for w in sets)
        + " | held-out natural groups F1 | held-out hard copies F1 |"
    )
    print("|---|" + "---|" * (len(sets) + 2))

    def key(method: str) -> str:  # "best" settings differ per set: match on the name before the "@"
        return method.split(" @")[0] + (" (best)" if method.endswith("(best)") else "")

    for method in methods:
        if any(key(m) == key(method) for m in methods[: methods.index(method)]):
            continue
        cells = []
        extra = ["–", "–"]
        for w in sets:
            found = [m for m in results[w] if key(m) == key(method)]
            if not found:
                cells.append("–")
                continue
            s = score(results[w][found[0]], labels[w])
            setting = found[0].split(" @")[1].removesuffix(" (best)") if " @" in found[0] else ""
            note = f" (@{setting})" if method.endswith("(best)") else ""
            cells.append(_prf(s.overall) + note)
            if w == "heldout":
                extra = [_f(s.natural[2] if s.natural else None), _f(s.hard[2])]
        print(f"| {key(method)} | " + " | ".join(cells) + " | " + " | ".join(extra) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 originals, 20 singletons, 8 natural groups a set")
    parser.add_argument("--originals", type=int, default=60)
    parser.add_argument("--singletons", type=int, default=None, help="default: every held-out photo left")
    parser.add_argument("--natural", type=int, default=None, help="natural groups to use (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", default="tuning,heldout")
    parser.add_argument("--model", default=None, help="embedding model (default: lookalike's default)")
    parser.add_argument("--markdown", action="store_true", help="print only the README-ready tables")
    parser.add_argument("--peers", action="store_true", help="also run imagededup and fastdup")
    parser.add_argument("--turns", action="store_true", help="also run the opt-in `dups --turns`")
    parser.add_argument("--crops", action="store_true", help="also run the opt-in `dups --crops` (with --turns: both)")
    parser.add_argument("--fastdup-python", default="/work/peers-venv/bin/python")
    parser.add_argument(
        "--search-verify-k", type=int, default=None, help="results `search --verify` checks (default: the library's)"
    )
    args = parser.parse_args()
    if args.quick:
        args.originals, args.singletons, args.natural = 10, 20, 8
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = set(sets) - set(SETS)
    if unknown:
        parser.error(f"unknown sets: {sorted(unknown)}")
    log = (lambda *a: print(*a, file=sys.stderr)) if args.markdown else print
    started = time.perf_counter()
    built: dict[str, tuple[Path, dict[str, Label]]] = {}
    runs: dict[str, LookalikeRun] = {}
    scores: dict[str, Scores] = {}
    peers: dict[str, dict[str, set[Pair]]] = {}
    timings: dict[str, dict[str, float]] = defaultdict(dict)
    for which in sets:
        t0 = time.perf_counter()
        folder, labels = build(which, args)
        built[which] = (folder, labels)
        log(f"{describe(which, labels)} in {folder} ({time.perf_counter() - t0:.0f} s)")
        runs[which] = run_lookalike(folder, labels, args.model, args.turns, args.crops, args.search_verify_k)
        scores[which] = score(runs[which].pred, labels)
        timings[which]["lookalike index"] = runs[which].index_s
        timings[which]["lookalike dups"] = runs[which].dups_s
        log(f"  lookalike: index {runs[which].index_s:.0f} s, dups {runs[which].dups_s:.1f} s")
        bt, bm, bp = runs[which].best
        peers[which] = {f"lookalike {runs[which].model} @{bt:.2f} margin {bm:.2f} (best)": bp}
        if args.peers:
            t0 = time.perf_counter()
            try:
                peers[which].update(run_imagededup(folder, labels))
            except ImportError as exc:
                log(f"  imagededup unavailable: {exc}")
            timings[which]["imagededup"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            if Path(args.fastdup_python).exists():
                try:
                    peers[which].update(run_fastdup(folder, labels, args.fastdup_python))
                except RuntimeError as exc:
                    log(f"  {exc}")
            else:
                log(f"  fastdup skipped: no {args.fastdup_python}")
            timings[which]["fastdup"] = time.perf_counter() - t0
            log("  peers: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings[which].items()))

    print(f"\nSets: {'; '.join(describe(w, built[w][1]) for w in sets)}.\n")
    print_main_table(runs, scores)
    print()
    if args.turns or args.crops:
        global OPT_IN
        flags = (("--turns", args.turns), ("--crops", args.crops))
        OPT_IN = " ".join(flag for flag, on in flags if on)
        print_turns_table(runs, {w: built[w][1] for w in sets})
        print()
    named = {
        w: {
            f"lookalike {runs[w].model} default": runs[w].pred,
            f"lookalike {runs[w].model} --no-verify": runs[w].plain,
            **peers[w],
        }
        for w in sets
    }
    print_peer_table(named, {w: built[w][1] for w in sets})
    print(
        f"\nTotal {time.perf_counter() - started:.0f} s; "
        + "; ".join(f"{SET_TITLES[w]}: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings[w].items()) for w in sets)
    )


if __name__ == "__main__":
    main()
