"""End to end: ``lookalike index`` + ``lookalike dups`` vs fastdup 2.54 on the same folder of photos.

What is timed is what a user waits for: each tool runs as its own process(es), from a cold Python
start to its result, on the same files, in interleaved rounds (A B, B A, A B ...) so that the
machine's drifting speed hits both alike. Reported: medians of wall time and of peak memory, where
peak memory is the largest resident set of the whole process tree, polled every 20 ms from /proc
and never below the kernel's own ``ru_maxrss`` of the child.

* lookalike: ``python -m lookalike index FOLDER --db NEW -q`` then ``python -m lookalike dups --db NEW``
  (a fresh index every round; the ONNX graph is cached, as after any first run). Wall = the sum of
  both commands, peak = the larger of the two.
* fastdup 2.54, in its own virtualenv (``--fastdup-python``; it would replace numpy and Pillow):
  ``fastdup.create(work_dir=NEW, input_dir=FOLDER).run()`` at its defaults, ``SENTRY_OPT_OUT=1``.

The folder (``--folder``, else built once into ``--cache``): ``--count`` JPEGs of 2-12 MP from the real
photos of the data cache (tools/lookalike_data.py, tuning and held-out photos). Most of those are
small (median 0.4 MP), so each file is a random crop of one, **upscaled** to a random 2-12 MP size,
with luminance noise (sigma 4) so that it compresses like a camera JPEG instead of a smooth
upscale (a smooth file decodes faster than a real photo of its size); quality 90. Sources are reused
(about 2.5 files each), so the folder holds real near-duplicate families for ``dups`` to find.

``--profile`` adds a per-stage profile of one lookalike run (same folder, one process, the library
calls the CLI makes, with timers around them): imports, model load, walk, the pipeline (read+hash,
decode, pixel statistics, preprocess on the worker threads as CPU seconds; the model and store
writes on the main thread as wall seconds), finish, calibration, dups.

Usage: python bench/bench_e2e.py [--rounds 3] [--count 1000] [--profile] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tools"))  # lookalike_data

from _util import print_table  # noqa: E402

FASTDUP_PYTHON = "/work/peers-venv/bin/python"
FASTDUP_SCRIPT = r"""
import sys
import fastdup
folder, work = sys.argv[1:3]
fd = fastdup.create(work_dir=work, input_dir=folder)
fd.run()
"""
NOISE_SIGMA = 4


def photo_folder(count: int, cache: Path) -> Path:
    """``count`` 2-12 MP JPEGs made from the cache's real photos (see the module docstring); cached."""
    import numpy as np
    from PIL import Image, ImageChops

    from lookalike_data import heldout_photos, photos

    folder = cache / f"e2e-{count}"
    done = cache / f"e2e-{count}.complete"  # outside the folder: both tools would try to read it
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    sources = photos() + heldout_photos()
    rng = np.random.default_rng(17)
    for i in range(count):
        target = folder / f"photo{i:05d}.jpg"
        source = sources[int(rng.integers(len(sources)))]
        megapixels = rng.uniform(2, 12)
        crop = rng.uniform(0.7, 1.0)  # side fraction kept: copies of one source differ
        if target.exists():
            continue
        with Image.open(source) as src:
            img = src.convert("RGB")
        w, h = int(img.width * crop), int(img.height * crop)
        x0 = int(rng.integers(0, img.width - w + 1))
        y0 = int(rng.integers(0, img.height - h + 1))
        img = img.crop((x0, y0, x0 + w, y0 + h))
        aspect = w / h
        th = int((megapixels * 1e6 / aspect) ** 0.5)
        img = img.resize((max(1, int(th * aspect)), th), Image.Resampling.BICUBIC)
        noise = Image.effect_noise(img.size, NOISE_SIGMA)  # grey noise centred on 128
        img = ImageChops.add(img, Image.merge("RGB", (noise, noise, noise)), offset=-128)
        tmp = target.with_suffix(".tmp")
        img.save(tmp, format="JPEG", quality=90)
        os.replace(tmp, target)
    done.write_text("ok\n")
    return folder


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})


def folder_summary(folder: Path) -> str:
    from PIL import Image

    files = image_files(folder)
    sizes = [p.stat().st_size for p in files]
    pixels = []
    for p in files:
        with Image.open(p) as im:
            pixels.append(im.width * im.height)
    mp = sorted(x / 1e6 for x in pixels)
    kinds = "/".join(sorted({p.suffix[1:].upper() for p in files}))
    return (
        f"{len(files):,} {kinds} files, {min(mp):.1f}-{max(mp):.1f} MP (median {statistics.median(mp):.1f}), "
        f"median {statistics.median(sizes) / 2**20:.2f} MB, {sum(sizes) / sum(pixels):.2f} bytes/pixel, "
        f"{sum(sizes) / 2**30:.2f} GB in all"
    )


# -- measuring a process tree ---------------------------------------------------------------------


def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants now."""
    tree, total, todo = _children_of(), 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(tree.get(pid, []))
    return total


def measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run ``cmd``; its wall seconds, the peak RSS (MB) of its process tree and its CPU seconds (all threads
    and waited-for children, user + system: steadier than wall time on a shared machine)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {err[-3000:]}")
    return wall, max(peak / 2**20, usage.ru_maxrss / 1024), usage.ru_utime + usage.ru_stime


def run_lookalike(folder: Path, tmp: Path, tree: Path = ROOT) -> dict[str, float]:
    """``index`` + ``dups`` with the lookalike source tree ``tree`` (this checkout, or ``--baseline``)."""
    db = Path(tempfile.mkdtemp(dir=tmp, prefix="db-"))
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    base = [sys.executable, "-m", "lookalike"]
    index_s, index_mb, index_cpu = measured([*base, "index", str(folder), "--db", str(db), "-q"], env)
    dups_s, dups_mb, dups_cpu = measured([*base, "dups", "--db", str(db)], env)
    return {
        "wall": index_s + dups_s,
        "peak": max(index_mb, dups_mb),
        "cpu": index_cpu + dups_cpu,
        "index": index_s,
        "dups": dups_s,
    }


def run_fastdup(folder: Path, tmp: Path, python: str) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(dir=tmp, prefix="fastdup-"))
    env = {**os.environ, "SENTRY_OPT_OUT": "1"}
    env.pop("PYTHONPATH", None)
    wall, peak, cpu = measured([python, "-c", FASTDUP_SCRIPT, str(folder), str(work)], env)
    return {"wall": wall, "peak": peak, "cpu": cpu}


# -- the per-stage profile (runs in a child process) ----------------------------------------------


def profile_worker(folder: str, db: str) -> None:
    """One lookalike run with timers around each stage; prints one JSON document."""
    import threading

    t0, c0 = time.perf_counter(), time.process_time()
    import lookalike.cli.app  # noqa: F401  (what `lookalike` imports before any work)

    imports = time.perf_counter() - t0
    process_cpu = {"imports": time.process_time() - c0}
    import lookalike.ingest as ingest_mod
    import lookalike.search.measure as measure_mod
    from lookalike.dedup.groups import find_duplicate_groups
    from lookalike.index import Index

    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    lock = threading.Lock()

    def cpu_timed(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapped(*a, **k):  # type: ignore[no-untyped-def]
            start = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                with lock:
                    cpu[name] = cpu.get(name, 0.0) + time.thread_time() - start

        return wrapped

    def wall_timed(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapped(*a, **k):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                wall[name] = wall.get(name, 0.0) + time.perf_counter() - start

        return wrapped

    ingest_mod.read_bytes = cpu_timed("read", ingest_mod.read_bytes)
    real_sha = ingest_mod.hashlib.sha256
    ingest_mod.hashlib = type("H", (), {"sha256": staticmethod(cpu_timed("sha256", real_sha))})  # type: ignore[assignment]
    ingest_mod.decode_image = cpu_timed("decode", ingest_mod.decode_image)
    ingest_mod.pixel_stats = cpu_timed("pixel stats", ingest_mod.pixel_stats)
    ingest_mod.IngestRun.plan = wall_timed("walk + plan", ingest_mod.IngestRun.plan)
    ingest_mod.IngestRun.commit = wall_timed("store writes", ingest_mod.IngestRun.commit)
    ingest_mod.IngestRun.finish = wall_timed("finish (compact, search index)", ingest_mod.IngestRun.finish)
    measure_mod._neighbour_scores = wall_timed("calibration: neighbours", measure_mod._neighbour_scores)
    measure_mod._copy_scores = wall_timed("calibration: copies", measure_mod._copy_scores)
    measure_mod.open_rgb = cpu_timed("calibration: decode", measure_mod.open_rgb)
    measure_mod.copy_edit = cpu_timed("calibration: edit", measure_mod.copy_edit)

    t0, c0 = time.perf_counter(), time.process_time()
    index = Index.open(db, read_only=False, repair=True)
    model = index.model
    model_load = time.perf_counter() - t0
    process_cpu["model_load"] = time.process_time() - c0
    model.preprocess = cpu_timed("preprocess", model.preprocess)  # type: ignore[method-assign]
    in_calibration = [False]
    embed_fn = model.embed_arrays_with_extra  # type: ignore[attr-defined]
    plain_fn = model.embed_arrays

    def embed_extra(batch):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return embed_fn(batch)
        finally:
            key = "calibration: model" if in_calibration[0] else "model"
            wall[key] = wall.get(key, 0.0) + time.perf_counter() - start

    model.embed_arrays_with_extra = embed_extra  # type: ignore[attr-defined]
    model.embed_arrays = wall_timed("calibration: model", plain_fn)  # type: ignore[method-assign]
    calibrate = index.calibrate

    def timed_calibrate(*a, **k):  # type: ignore[no-untyped-def]
        in_calibration[0] = True
        start, c_start = time.perf_counter(), time.process_time()
        try:
            return calibrate(*a, **k)
        finally:
            wall["calibration"] = time.perf_counter() - start
            process_cpu["calibration"] = time.process_time() - c_start
            in_calibration[0] = False

    index.calibrate = timed_calibrate  # type: ignore[method-assign]
    t0, c0 = time.perf_counter(), time.process_time()
    index.add([folder])
    add = time.perf_counter() - t0
    process_cpu["add"] = time.process_time() - c0
    index.close()
    t0, c0 = time.perf_counter(), time.process_time()
    index = Index.open(db, create=False)
    groups = find_duplicate_groups(index.store)  # the defaults, as `lookalike dups` runs them
    index.close()
    dups = time.perf_counter() - t0
    process_cpu["dups"] = time.process_time() - c0
    from _util import peak_rss_mb

    print(
        json.dumps(
            {
                "imports": imports,
                "model_load": model_load,
                "add": add,
                "dups": dups,
                "groups": len(groups),
                "cpu": cpu,
                "process_cpu": process_cpu,
                "wall": wall,
                "torch_imported": "torch" in sys.modules,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def run_profile(folder: Path, tmp: Path, tree: Path = ROOT) -> dict[str, object]:
    db = Path(tempfile.mkdtemp(dir=tmp, prefix="db-")) / "db"
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{Path(__file__).resolve().parent}"}
    out = subprocess.run(
        [sys.executable, __file__, "--profile-worker", str(folder), str(db)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_profile(p: dict[str, object], which: str) -> None:
    wall: dict[str, float] = p["wall"]  # type: ignore[assignment]
    cpu: dict[str, float] = p["cpu"]  # type: ignore[assignment]
    pcpu: dict[str, float] = p["process_cpu"]  # type: ignore[assignment]
    calibration = wall.get("calibration", 0.0)
    pipeline = p["add"] - calibration - wall.get("walk + plan", 0) - wall.get("finish (compact, search index)", 0)  # type: ignore[operator]
    rows = [
        ["imports (`import lookalike.cli.app`)", f"{p['imports']:.2f}", f"{pcpu['imports']:.2f}"],
        ["open index + model load (ONNX session, self-check)", f"{p['model_load']:.2f}", f"{pcpu['model_load']:.2f}"],
        ["`add` in all: walk, pipeline, finish, calibration", f"{p['add']:.2f}", f"{pcpu['add']:.2f}"],
        ["walk + plan", f"{wall.get('walk + plan', 0):.2f}", ""],
        ["pipeline (read, hash, decode, stats, preprocess, model, store)", f"{pipeline:.2f}", ""],
        ["  worker threads: read", "", f"{cpu.get('read', 0):.2f}"],
        ["  worker threads: sha256", "", f"{cpu.get('sha256', 0):.2f}"],
        ["  worker threads: decode (draft mode)", "", f"{cpu.get('decode', 0):.2f}"],
        ["  worker threads: pixel statistics", "", f"{cpu.get('pixel stats', 0):.2f}"],
        ["  worker threads: preprocess", "", f"{cpu.get('preprocess', 0):.2f}"],
        ["  main thread: model (ONNX Runtime, wall)", f"{wall.get('model', 0):.2f}", ""],
        ["  main thread: store writes (wall)", f"{wall.get('store writes', 0):.2f}", ""],
        ["finish (compact, search index)", f"{wall.get('finish (compact, search index)', 0):.2f}", ""],
        ["calibration", f"{calibration:.2f}", f"{pcpu.get('calibration', 0):.2f}"],
        ["  copies: decode (threads, CPU)", "", f"{cpu.get('calibration: decode', 0):.2f}"],
        ["  copies: edit (threads, CPU)", "", f"{cpu.get('calibration: edit', 0):.2f}"],
        ["  copies: model (wall)", f"{wall.get('calibration: model', 0):.2f}", ""],
        ["  copies in all (wall)", f"{wall.get('calibration: copies', 0):.2f}", ""],
        ["  neighbours (wall)", f"{wall.get('calibration: neighbours', 0):.2f}", ""],
        ["dups (open + groups)", f"{p['dups']:.2f}", f"{pcpu['dups']:.2f}"],
        [
            "**total**",
            f"**{p['imports'] + p['model_load'] + p['add'] + p['dups']:.2f}**",  # type: ignore[operator]
            "",
        ],
    ]
    print_table(
        f"One lookalike run, stage by stage, {which} (torch imported: {p['torch_imported']}; "
        f"peak RSS {p['peak_rss_mb']:.0f} MB; {p['groups']} groups)",
        ["stage", "wall s", "CPU s (process, or the threads named)"],
        rows,
    )


def calls_worker(call: int, out: str) -> None:
    """Child process: the index's model (as ``Index.model`` builds it) in calls of ``call`` images."""
    import numpy as np

    from lookalike.index import _create_model
    from lookalike.models.registry import DEFAULT_MODEL

    model = _create_model(DEFAULT_MODEL)
    batch = np.random.default_rng(0).normal(size=(32, 3, 224, 224)).astype(np.float32)
    vectors = np.concatenate([model.embed_arrays(batch[i : i + call]) for i in range(0, 32, call)])
    start = time.process_time()
    for _ in range(8):
        for i in range(0, 32, call):
            model.embed_arrays(batch[i : i + call])
    cpu_ms = (time.process_time() - start) / 256 * 1000
    np.save(out, vectors)
    from _util import peak_rss_mb

    print(json.dumps({"call": call, "cpu_ms": cpu_ms, "peak_rss_mb": peak_rss_mb()}))


def model_calls(tmp: Path, rounds: int) -> None:
    """Peak RSS and CPU per image of the model alone by call size, each in its own process, interleaved."""
    import numpy as np

    sizes = (4, 8, 16, 32)
    runs: dict[int, list[dict[str, float]]] = {c: [] for c in sizes}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for r in range(rounds):
        for call in sizes if r % 2 == 0 else sizes[::-1]:
            out = tmp / f"calls-{call}.npy"
            done = subprocess.run(
                [sys.executable, __file__, "--calls-worker", str(call), str(out)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            runs[call].append(json.loads(done.stdout.strip().splitlines()[-1]))
    reference = np.load(tmp / "calls-32.npy")
    rows = []
    for call in sizes:
        diff = float(np.abs(np.load(tmp / f"calls-{call}.npy") - reference).max())
        rows.append(
            [
                call,
                f"{statistics.median(x['peak_rss_mb'] for x in runs[call]):.0f}",
                f"{statistics.median(x['cpu_ms'] for x in runs[call]):.1f}",
                f"{diff:.1g}",
            ]
        )
    print_table(
        f"The index's model alone by call size ({os.cpu_count()} cores, median of {rounds} interleaved runs)",
        ["images per call", "peak RSS MB", "CPU ms/image", "max abs diff vs calls of 32"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--folder", type=Path, help="use these files instead of building the photo folder")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "lookalike-bench")
    parser.add_argument("--fastdup-python", default=FASTDUP_PYTHON)
    parser.add_argument("--profile", action="store_true", help="also print the per-stage profile")
    parser.add_argument(
        "--baseline", type=Path, help="another lookalike checkout (e.g. the main branch) run in the same rounds"
    )
    parser.add_argument("--no-peer", action="store_true", help="lookalike only (while iterating)")
    parser.add_argument("--quick", action="store_true", help="250 photos, 1 round")
    parser.add_argument("--model-calls", action="store_true", help="only the model, by images per call")
    parser.add_argument("--profile-worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--calls-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_worker:
        profile_worker(*args.profile_worker)
        return
    if args.calls_worker:
        calls_worker(int(args.calls_worker[0]), args.calls_worker[1])
        return
    if args.model_calls:
        with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp_name:
            model_calls(Path(tmp_name), max(args.rounds, 3))
        return
    if args.quick:
        args.count, args.rounds = 250, 1
    folder = args.folder or photo_folder(args.count, args.cache)
    summary = folder_summary(folder)
    print(f"folder: {folder}: {summary}", file=sys.stderr)
    peer = not args.no_peer and Path(args.fastdup_python).exists()
    results: dict[str, list[dict[str, float]]] = {"lookalike": [], "fastdup": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        for r in range(args.rounds):
            order = ["lookalike", "fastdup", "baseline"]
            order = order if r % 2 == 0 else order[::-1]
            for who in order:
                if (who == "fastdup" and not peer) or (who == "baseline" and not args.baseline):
                    continue
                if who == "lookalike":
                    res = run_lookalike(folder, tmp)
                elif who == "baseline":
                    res = run_lookalike(folder, tmp, args.baseline)
                else:
                    res = run_fastdup(folder, tmp, args.fastdup_python)
                results[who].append(res)
                print(f"round {r + 1} {who}: {json.dumps({k: round(v, 2) for k, v in res.items()})}", file=sys.stderr)
        profiles = []
        if args.profile:
            profiles.append(("this checkout", run_profile(folder, tmp)))
            if args.baseline:
                profiles.append((f"before (`{args.baseline}`)", run_profile(folder, tmp, args.baseline)))

    def med(who: str, key: str) -> float:
        return statistics.median(x[key] for x in results[who])

    n = len(image_files(folder))
    rows = []
    la = {key: med("lookalike", key) for key in ("wall", "peak", "cpu", "index", "dups")}
    rows.append(
        [
            "lookalike `index` + `dups`",
            f"{la['wall']:.1f} ({la['index']:.1f} + {la['dups']:.1f})",
            f"{n / la['wall']:.1f}",
            f"{la['cpu']:.1f}",
            f"{la['peak']:.0f}",
        ]
    )
    if results["baseline"]:
        base = {key: med("baseline", key) for key in ("wall", "peak", "cpu", "index", "dups")}
        rows.append(
            [
                f"lookalike before (`{args.baseline}`)",
                f"{base['wall']:.1f} ({base['index']:.1f} + {base['dups']:.1f})",
                f"{n / base['wall']:.1f}",
                f"{base['cpu']:.1f}",
                f"{base['peak']:.0f}",
            ]
        )
    if results["fastdup"]:
        fd = {key: med("fastdup", key) for key in ("wall", "peak", "cpu")}
        rows.append(
            [
                "fastdup 2.54 `create(...).run()`, defaults",
                f"{fd['wall']:.1f}",
                f"{n / fd['wall']:.1f}",
                f"{fd['cpu']:.1f}",
                f"{fd['peak']:.0f}",
            ]
        )
        # The ratio of each round's pair (run back to back), then their median: drift cancels within a pair.
        pairs = list(zip(results["lookalike"], results["fastdup"], strict=False))
        speed = statistics.median(f["wall"] / la_["wall"] for la_, f in pairs)
        cpu = statistics.median(f["cpu"] / la_["cpu"] for la_, f in pairs)
        rows.append(
            [
                "**fastdup / lookalike** (median of the rounds' ratios)",
                f"**{speed:.2f}x**",
                "",
                f"**{cpu:.2f}x**",
                f"**{fd['peak'] / la['peak']:.2f}x**",
            ]
        )
    print_table(
        f"End to end: {summary}; {os.cpu_count()} cores, median of {args.rounds} interleaved rounds",
        ["run", "wall s", "images/s", "CPU s", "peak RSS MB"],
        rows,
    )
    for which, profile in profiles:
        print_profile(profile, which)


if __name__ == "__main__":
    main()
