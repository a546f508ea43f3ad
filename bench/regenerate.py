"""Regenerate the README's benchmark tables from the scripts that print them (one command).

Each table in README.md sits between ``<!-- bench:NAME -->`` and ``<!-- /bench -->``; NAME is a
script below. A run records what the script printed (only its tables) in ``bench/results/NAME.md``,
with the command, date and machine, and writes it into the README block. The headline table
(``<!-- bench:headline -->``) is assembled from the one row each script marked ``headline`` prints
under ``| what | measured | script |``; a row whose script prints none is left as written and
reported as such by ``--check``.

    python bench/regenerate.py --list                  # blocks, commands, which data tuned each default
    python bench/regenerate.py --only bench_query      # run it, record it, rewrite its README block
    python bench/regenerate.py                         # every script that is not heavy
    python bench/regenerate.py --all                   # heavy ones too (hours on 2 cores)
    python bench/regenerate.py --quick                 # quick modes: compare columns only, write nothing
    python bench/regenerate.py --check                 # run, report which README tables differ, write nothing
    python bench/regenerate.py --check --from-cache    # same against bench/results/, nothing run
    python bench/regenerate.py --from-cache            # rewrite the README from bench/results/, nothing run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _readme import (  # noqa: E402
    HEADLINE_HEADER,
    MarkerError,
    diff_summary,
    find_blocks,
    markdown_tables,
    merge_headline,
    pick_tables,
    replace_block,
    script_of_row,
    table_rows,
)

RESULTS = HERE / "results"
README = ROOT / "README.md"


@dataclass(frozen=True)
class Bench:
    """One script and the README block its tables fill."""

    name: str
    command: tuple[str, ...]  # script and arguments, as the README names them
    picks: tuple[str, ...]  # heading or header text of each table that goes into the block, in order
    quick: tuple[str, ...]  # arguments of a quick run (columns checked, nothing written)
    heavy: bool  # minutes to hours: run only when named with --only, or with --all
    tuned_on: str  # which data the defaults this table measures were chosen on
    headline: bool = False  # also prints its row of the headline table

    def shown(self) -> str:
        return "python " + " ".join(self.command)


BENCHES = [
    Bench(
        "bench_ingest",
        ("bench/bench_ingest.py",),
        ("Ingest throughput",),
        ("--large", "40", "--small", "200"),
        True,
        "nothing tuned on these sets (pipeline threads and batch 32 were set on this 2-core machine)",
    ),
    Bench(
        "bench_query",
        ("bench/bench_query.py",),
        ("Query latency",),
        ("--quick",),
        False,
        "the IVF probe rule is measured at build time on the collection's own vectors; the queries are "
        "held-out photos from other Debian packages",
    ),
    Bench(
        "bench_server",
        ("bench/bench_server.py",),
        ("lookalike serve under load", "server process"),
        ("--clients", "2", "--uploads", "20"),
        False,
        "nothing tuned (batching window and threads are the server's defaults)",
    ),
    Bench(
        "bench_e2e",
        ("bench/bench_e2e.py",),
        ("| run | wall s",),
        ("--rounds", "1"),
        True,
        "nothing tuned; fastdup at its defaults",
    ),
    Bench(
        "bench_model_choice",
        ("bench/bench_model_choice.py",),
        ("Model choice (README table)",),
        ("--quick",),
        True,
        "the default model was chosen on this same Fashion-MNIST test split and the same 40 photos: no held-out set",
    ),
    Bench(
        "bench_audit",
        ("bench/bench_audit.py",),
        ("Audit findings at the shipped cut-offs",),
        ("--quick",),
        True,
        "cut-offs chosen on the tuning part (GCompris photos); reported on the held-out part",
    ),
    Bench(
        "bench_calibration",
        ("bench/bench_calibration.py",),
        (),
        ("--quick",),
        True,
        "the fit is made on each collection's own edited copies; measured on held-out photos' copies",
        headline=True,
    ),
    Bench(
        "bench_ood",
        ("bench/bench_ood.py",),
        (),
        ("--quick",),
        True,
        "the k-NN rule's acceptance rate (95%) is a setting; its threshold is measured on each collection",
        headline=True,
    ),
    Bench(
        "bench_ann",
        ("bench/bench_ann.py", "--n", "1000000", "--configs", "auto", "--queries", "500"),
        (),
        ("--n", "30000", "--configs", "auto", "--queries", "200"),
        True,
        "the probe rule is measured at build time on the collection's own vectors",
        headline=True,
    ),
]
BY_NAME = {b.name: b for b in BENCHES}


# -- running and recording --------------------------------------------------------------------------
def run_script(bench: Bench, quick: bool) -> tuple[str, float]:
    """The script's stdout (its stderr passes through) and its wall time."""
    args = [sys.executable, *bench.command] if not quick else [sys.executable, bench.command[0], *bench.quick]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    print(f"$ {' '.join(['python', *args[1:]])}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{bench.name}: exit status {proc.returncode}\n{proc.stdout[-2000:]}")
    return proc.stdout, seconds


def tables_of(bench: Bench, output: str) -> tuple[str, str | None]:
    """(block body, headline row or None) from a script's output or a results file."""
    body = "\n\n".join(pick_tables(output, bench.picks)) if bench.picks else ""
    headline = None
    if bench.headline:
        found = [t for _, t in markdown_tables(output) if t.split("\n", 1)[0].strip() == HEADLINE_HEADER]
        if not found or len(table_rows(found[0])) != 1:
            raise LookupError(f"{bench.name}: no one-row table under {HEADLINE_HEADER!r}")
        headline = table_rows(found[0])[0]
    return body, headline


def record(bench: Bench, body: str, headline: str | None, seconds: float) -> Path:
    load = os.getloadavg()[0]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts = [
        f"<!-- recorded by bench/regenerate.py: `{bench.shown()}`; {stamp}; {os.cpu_count()} cores; "
        f"load average {load:.1f} at the end; {seconds:.0f} s -->"
    ]
    if body:
        parts.append(body)
    if headline is not None:
        parts.append(f"{HEADLINE_HEADER}\n|---|---|---|\n{headline}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{bench.name}.md"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n\n".join(parts) + "\n")
    os.replace(tmp, path)
    return path


def recorded(bench: Bench) -> tuple[str, str | None] | None:
    """(block body, headline row) from ``bench/results/NAME.md``: it holds only the picked tables, in
    order, then the headline table; None when the script was never recorded."""
    path = RESULTS / f"{bench.name}.md"
    if not path.exists():
        return None
    tables = [t for _, t in markdown_tables(path.read_text())]
    body = "\n\n".join(t for t in tables if t.split("\n", 1)[0].strip() != HEADLINE_HEADER)
    heads = [t for t in tables if t.split("\n", 1)[0].strip() == HEADLINE_HEADER]
    return body, (table_rows(heads[0])[0] if heads and table_rows(heads[0]) else None)


# -- comparing and rewriting ------------------------------------------------------------------------
def apply(text: str, results: dict[str, tuple[str, str | None]]) -> tuple[str, list[str]]:
    """README text with the blocks of ``results`` rewritten; returns it and what changed."""
    blocks = find_blocks(text)
    changed = []
    for name, (body, _) in results.items():
        if body and name in blocks and blocks[name].body != body:
            text = replace_block(text, name, body)
            changed.append(name)
    heads = {name: row for name, (_, row) in results.items() if row is not None}
    if heads and "headline" in blocks:
        new, _ = merge_headline(find_blocks(text)["headline"].body, heads)
        if new != find_blocks(text)["headline"].body:
            text = replace_block(text, "headline", new)
            changed.append("headline")
    return text, changed


def check(text: str, results: dict[str, tuple[str, str | None] | None], names: list[str]) -> int:
    """Print one line per block (same / differs / not recorded); return how many are not 'same'."""
    blocks = find_blocks(text)
    bad = 0
    for name in names:
        bench = BY_NAME[name]
        got = results.get(name)
        if bench.picks:
            if name not in blocks:
                print(f"{name}: README has no <!-- bench:{name} --> block")
                bad += 1
            elif got is None:
                print(f"{name}: not recorded (run: python bench/regenerate.py --only {name})")
                bad += 1
            elif blocks[name].body == got[0]:
                print(f"{name}: same as `{bench.shown()}` printed")
            else:
                print(f"{name}: DIFFERS from what `{bench.shown()}` printed:")
                for line in diff_summary(blocks[name].body, got[0]):
                    print(f"    {line}")
                bad += 1
        if bench.headline:
            rows = {r for r in table_rows(blocks["headline"].body)} if "headline" in blocks else set()
            if got is None or got[1] is None:
                print(f"headline row of {name}: not recorded")
                bad += 1
            elif got[1] in rows:
                print(f"headline row of {name}: same as `{bench.shown()}` printed")
            else:
                print(f"headline row of {name}: DIFFERS; the script printed:\n    {got[1]}")
                bad += 1
    if "headline" in blocks:
        sources = {b.name for b in BENCHES if b.headline}
        for row in table_rows(blocks["headline"].body):
            script = script_of_row(row)
            if script not in sources:
                label = row.strip("| ").split(" | ")[0][:70]
                who = f"{script} prints no headline row" if script else "no bench script named"
                print(f"headline row '{label}...': written by hand ({who})")
    return bad


def compare_columns(text: str, bench: Bench, body: str) -> bool:
    """Quick mode: the tables have the README's header rows (the figures are a quick run's)."""
    blocks = find_blocks(text)
    if bench.name not in blocks:
        print(f"{bench.name}: README has no block")
        return False
    want = [line for line in blocks[bench.name].body.split("\n") if line.startswith("|")]
    want_heads = [want[i] for i in range(len(want)) if i + 1 < len(want) and set(want[i + 1]) <= set("|-: ")]
    got_heads = [t.split("\n", 1)[0] for t in body.split("\n\n")]
    same = want_heads == got_heads
    print(f"{bench.name}: columns {'same as' if same else 'DIFFER from'} the README's")
    if not same:
        for line in diff_summary("\n".join(want_heads), "\n".join(got_heads)):
            print(f"    {line}")
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(BY_NAME), help="these scripts (heavy ones included)")
    parser.add_argument("--all", action="store_true", help="heavy scripts too")
    parser.add_argument("--quick", action="store_true", help="quick runs: compare the columns, write nothing")
    parser.add_argument("--check", action="store_true", help="report which README tables differ; write nothing")
    parser.add_argument("--from-cache", action="store_true", help="use bench/results/ instead of running")
    parser.add_argument("--list", action="store_true", help="the blocks, their commands and tuning data")
    parser.add_argument("--readme", type=Path, default=README, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.list:
        for b in BENCHES:
            where = "headline row" if not b.picks else f"block bench:{b.name}"
            print(f"{b.name}: {where}; `{b.shown()}`{' (heavy)' if b.heavy else ''}\n    tuned on: {b.tuned_on}")
        return
    names = args.only or [b.name for b in BENCHES if args.all or args.from_cache or not b.heavy]
    text = args.readme.read_text()
    try:
        find_blocks(text)
    except MarkerError as exc:
        raise SystemExit(f"{args.readme}: {exc}") from exc

    if args.quick:
        ok = True
        for name in names:
            bench = BY_NAME[name]
            output, _ = run_script(bench, quick=True)
            body, headline = tables_of(bench, output)
            if body:
                print(body)
                ok &= compare_columns(text, bench, body)
            if headline is not None:
                print(f"{HEADLINE_HEADER}\n|---|---|---|\n{headline}")
        raise SystemExit(0 if ok else 1)

    results: dict[str, tuple[str, str | None] | None] = {}
    for name in names:
        bench = BY_NAME[name]
        if args.from_cache:
            results[name] = recorded(bench)
            path = RESULTS / f"{name}.md"
            if path.exists():
                print(f"{path}: {path.read_text().split(chr(10), 1)[0]}")
            continue
        output, seconds = run_script(bench, quick=False)
        results[name] = tables_of(bench, output)
        if not args.check:
            print(f"recorded {record(bench, *results[name], seconds)}")

    if args.check:
        raise SystemExit(1 if check(text, results, names) else 0)
    text = args.readme.read_text()  # again: the runs take minutes and the README may have been edited meanwhile
    new, changed = apply(text, {k: v for k, v in results.items() if v is not None})
    missing = [k for k, v in results.items() if v is None]
    if new != text:
        tmp = args.readme.with_suffix(".tmp")
        tmp.write_text(new)
        os.replace(tmp, args.readme)
    print(f"README blocks rewritten: {', '.join(changed) or 'none (already the same)'}")
    if missing:
        print(f"not recorded, left as they are: {', '.join(missing)}")


if __name__ == "__main__":
    main()
