"""`sweep --like` at its default ("same picture") and at a fixed threshold, on the duplicate sets.

The sets are those of bench/bench_dups_heldout.py (built once, cached): the **tuning** set (photos of
the project's PACKAGES, 60 originals x 18 edits, 156 look-alike singletons) and the **held-out** set
(other Debian packages: 60 originals x 18 edits, 44 natural groups, the photos left as singletons).
Each original is swept by (as an indexed example); for the held-out set each natural group is swept
by its first member too. A match is right when it is a copy of the example (the same family). Pairs
(example, match) are counted over all sweeps: precision, recall, F1; "look-alikes swept" is how many
singletons or other families' files the sweeps took. "next tier" columns: how often the tier the
sweep names below its threshold holds a copy it missed, and the P/R if the user took that tier too.

The default is chosen by rule (precision 0.95 of the collection's own calibration), not tuned on
either set; 0.75 is the old fixed default. Every setting runs with the point-for-point check (the
default: copies under the threshold added, matches the check denies dropped) and with
``--no-verify``; one check (its keypoint cache) serves every sweep. ``--verify-k`` sets how many
items under the threshold each sweep checks (chosen on the tuning set).

    python bench/bench_sweep.py [--sets tuning,heldout] [--thresholds 0.75,0.86] [--quick] [--verify-k 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dups_heldout import SET_TITLES, Label, built_sets


def examples_of(labels: dict[str, Label]) -> list[str]:
    """Each family's original; the first member of each natural group."""
    out = sorted(n for n, lab in labels.items() if lab.kind == "original")
    firsts: dict[str, str] = {}
    for name in sorted(labels):
        lab = labels[name]
        if lab.kind == "natural":
            firsts.setdefault(lab.family, name)
    return out + sorted(firsts.values())


def measure(
    folder: Path, labels: dict[str, Label], settings: list[tuple[float | None, bool]]
) -> list[dict[str, object]]:
    """P/R/F1 of each setting ``(threshold, verify)`` (threshold None: the default rule)."""
    from lookalike.dedup.sweep import sweep
    from lookalike.dedup.verify import GeometricCheck
    from lookalike.index import Index

    examples = examples_of(labels)
    families: dict[str, set[str]] = defaultdict(set)
    for name, lab in labels.items():
        if lab.family:
            families[lab.family].add(name)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lookalike-sweep-") as tmp:
        t0 = time.perf_counter()
        with Index.open(Path(tmp) / "db") as index:
            index.add([folder])  # calibrated, as a user's index is
            print(f"  indexed {len(labels)} files in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            cal = index.calibration
            if cal is not None and cal.ok:
                readings = {p: round(cal.threshold_for_precision(p), 3) for p in (0.8, 0.9, 0.95, 0.99)}
                print(f"  calibration: precision thresholds {readings}, labels {cal.cutoffs}", file=sys.stderr)
            shared = GeometricCheck()  # keypoints read once for every sweep that verifies
            for threshold, verify in settings:
                tp = fp = fn = tier_hit = 0
                tier_tp = tier_fp = 0
                used: list[float] = []
                rule = ""
                check = shared if verify else False
                t0, decoded = time.perf_counter(), shared.decoded
                for example in examples:
                    result = sweep(index, [str(folder / example)], threshold=threshold, verify=check)
                    rule, used = result.rule, [*used, result.threshold]
                    want = families[labels[example].family] - {example}
                    got = {Path(m.record.path).name for m in result.matches} - {example}
                    tp, fp, fn = tp + len(got & want), fp + len(got - want), fn + len(want - got)
                    tier = result.next_tier
                    if tier is not None:
                        wider = sweep(index, [str(folder / example)], threshold=tier.threshold, verify=check)
                        extra = {Path(m.record.path).name for m in wider.matches} - got - {example}
                        tier_hit += bool(extra & want)
                        tier_tp, tier_fp = tier_tp + len(extra & want), tier_fp + len(extra - want)
                p = tp / (tp + fp) if tp + fp else 1.0
                r = tp / (tp + fn) if tp + fn else 1.0
                taken = tp + fp + tier_tp + tier_fp
                wp = (tp + tier_tp) / taken if taken else 1.0
                wr = (tp + tier_tp) / (tp + fn) if tp + fn else 1.0
                seconds = time.perf_counter() - t0
                print(
                    f"  {threshold} verify={verify}: {seconds:.0f} s for {len(examples)} sweeps (and their tiers), "
                    f"{shared.decoded - decoded} images read",
                    file=sys.stderr,
                )
                setting = "default" if threshold is None else f"--threshold {threshold}"
                rows.append(
                    {
                        "setting": setting if verify else f"{setting} --no-verify",
                        "rule": rule,
                        "threshold": f"{min(used):.3f}" if threshold is None else f"{threshold}",
                        "p": p,
                        "r": r,
                        "f1": 2 * p * r / (p + r) if p + r else 0.0,
                        "wrong": fp,
                        "sweeps": len(examples),
                        "tier_hit": tier_hit,
                        "tier_pr": (wp, wr),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="tuning,heldout")
    parser.add_argument("--thresholds", default="0.75", help="fixed thresholds to compare (comma-separated)")
    parser.add_argument("--quick", action="store_true", help="10 originals, 20 singletons, 8 natural groups a set")
    parser.add_argument("--verify-k", type=int, default=None, help="items checked per example (tuning only)")
    args = parser.parse_args()
    if args.verify_k is not None:
        import importlib

        # by its name in sys.modules: lookalike.dedup's `sweep` attribute is the function
        importlib.import_module("lookalike.dedup.sweep").VERIFY_K = args.verify_k
    print("Sweep by example (`sweep --like ORIGINAL`), pairs (example, match) over all sweeps\n")
    print(
        "| set | setting | threshold | precision | recall | F1 | wrong files swept | next tier holds a missed copy"
        " | P / R taking the next tier too |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for which, folder, labels in built_sets(args.sets, args.quick, parser.error):
        fixed = [float(t) for t in args.thresholds.split(",") if t.strip()]
        settings = [(None, True), (None, False), *((t, True) for t in fixed), *((t, False) for t in fixed)]
        for row in measure(folder, labels, settings):
            wp, wr = row["tier_pr"]  # type: ignore[misc]
            print(
                f"| {SET_TITLES[which]} | {row['setting']} ({row['rule']}) | {row['threshold']} | {row['p']:.3f} | "
                f"{row['r']:.3f} | {row['f1']:.3f} | {row['wrong']} | {row['tier_hit']} of {row['sweeps']} | "
                f"{wp:.3f} / {wr:.3f} |"
            )


if __name__ == "__main__":
    main()
