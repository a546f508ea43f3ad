"""New files against a library (`lookalike check` / `dups --against`) on the duplicate sets.

The sets are those of bench/bench_dups_heldout.py (built once, cached): the **tuning** set (photos of
the project's PACKAGES, 60 originals x 18 edits, 156 look-alike singletons) and the **held-out** set
(other Debian packages: 60 originals x 18 edits, 44 natural groups, the photos left as singletons).
Each set is split in two indexes:

* the **library**: the originals of the even-numbered families, the first member of the
  even-numbered natural groups, and the even-numbered singletons;
* the **new batch**: every edit (18 per original), the other members of every natural group, and
  the odd-numbered singletons. So half of the batch's copies have their picture in the library (the
  positives) and half do not (their original was never added: look-alikes at best), beside
  look-alike singletons of the same kinds of scenes.

A new file is rightly reported (``exact`` or ``near``) when its picture is in the library and the
best match is that picture; a report on any other file, or naming another picture, is wrong.
Nothing here is tuned: the rule and the check are ``dups``' defaults (chosen on bench_dups_heldout's
tuning set); each set runs with the check (the default) and with ``--no-verify``.

    python bench/bench_check.py [--sets tuning,heldout] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _dup_edits import HARD
from bench_dups_heldout import SET_TITLES, Label, built_sets


def split(labels: dict[str, Label]) -> tuple[set[str], set[str]]:
    """(library files, new files) as described in the module docstring."""
    library, new = set(), set()
    firsts: dict[str, str] = {}
    for name in sorted(labels):
        if labels[name].kind == "natural":
            firsts.setdefault(labels[name].family, name)
    families = sorted({lab.family for lab in labels.values() if lab.family})
    in_library = {fam for i, fam in enumerate(families) if i % 2 == 0}
    singles = sorted(n for n, lab in labels.items() if lab.kind == "singleton")
    for name, lab in labels.items():
        if lab.kind == "singleton":
            (library if singles.index(name) % 2 == 0 else new).add(name)
        elif lab.kind == "original" or firsts.get(lab.family) == name:
            if lab.family in in_library:
                library.add(name)
        else:
            new.add(name)
    return library, new


def measure(folder: Path, labels: dict[str, Label]) -> list[dict[str, object]]:
    from lookalike.audit import check_against
    from lookalike.dedup.verify import GeometricCheck
    from lookalike.index import Index

    library, new = split(labels)
    holds = {labels[n].family for n in library if labels[n].family}
    rows = []
    with tempfile.TemporaryDirectory(prefix="lookalike-check-") as tmp:
        for part, names in (("library", library), ("new", new)):
            (Path(tmp) / part).mkdir()
            for name in names:
                shutil.copy2(folder / name, Path(tmp) / part / name)
        t0 = time.perf_counter()
        with Index.open(Path(tmp) / "library.db") as lib, Index.open(Path(tmp) / "new.db") as batch:
            lib.add([Path(tmp) / "library"])
            batch.add([Path(tmp) / "new"], calibrate=False)
            print(f"  indexed {len(library)} + {len(new)} files in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            for setting, verify in (("default", None), ("--no-verify", False)):
                check = GeometricCheck() if verify is None else False
                t0 = time.perf_counter()
                results = check_against(batch, lib, verify=check)
                seconds = time.perf_counter() - t0
                tp = fp = fn = wrong = tp_hard = fn_hard = 0
                for result in results:
                    name = Path(result.path).name
                    lab = labels[name]
                    positive = bool(lab.family) and lab.family in holds
                    said = result.status in ("exact", "near")
                    right = said and labels[Path(result.matches[0].record.path).name].family == lab.family
                    if said and right and positive:
                        tp += 1
                    elif said:
                        fp += 1
                        wrong += 1
                    if positive and not (said and right):
                        fn += 1
                    if positive and lab.kind in HARD:
                        tp_hard += said and right
                        fn_hard += not (said and right)
                p = tp / (tp + fp) if tp + fp else 1.0
                r = tp / (tp + fn) if tp + fn else 1.0
                rows.append(
                    {
                        "setting": setting,
                        "p": p,
                        "r": r,
                        "f1": 2 * p * r / (p + r) if p + r else 0.0,
                        "hard_r": tp_hard / (tp_hard + fn_hard) if tp_hard + fn_hard else 1.0,
                        "wrong": wrong,
                        "positives": tp + fn,
                        "files": len(results),
                        "seconds": seconds,
                        "read": getattr(check, "decoded", 0),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="tuning,heldout")
    parser.add_argument("--quick", action="store_true", help="10 originals, 20 singletons, 8 natural groups a set")
    args = parser.parse_args()
    print("New files against a library (`dups --db NEW --against LIBRARY`), one answer per new file\n")
    print(
        "| set | setting | new files (in the library) | precision | recall | F1 | recall of hard edits "
        "| wrong answers | time s (images read) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for which, folder, labels in built_sets(args.sets, args.quick, parser.error):
        for row in measure(folder, labels):
            print(
                f"| {SET_TITLES[which]} | {row['setting']} | {row['files']} ({row['positives']}) | {row['p']:.3f} | "
                f"{row['r']:.3f} | {row['f1']:.3f} | {row['hard_r']:.3f} | {row['wrong']} | "
                f"{row['seconds']:.1f} ({row['read']}) |"
            )


if __name__ == "__main__":
    main()
