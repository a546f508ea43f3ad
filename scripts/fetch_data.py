"""Pre-fetch every data set the tests and benchmarks use, so they run offline afterwards.

CI runs this before the test suite; it exits non-zero if a required set is missing.
Usage: ``python scripts/fetch_data.py`` (honours ``LOOKALIKE_DATA_DIR``). ``--heldout`` also fetches
the ``HELDOUT_PACKAGES`` of the held-out duplicate benchmark (bench/bench_dups_heldout.py); nothing
else uses them, so they are not fetched by default.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # lookalike_data
import lookalike_data as datasets

#: Fewer photos than this and the near-duplicate benchmark is not meaningful.
MIN_PHOTOS = 200
REQUIRED_OOD_KINDS = ("clipart", "icons", "fashion-mnist")


def _mb(paths: list[Path]) -> str:
    return f"{sum(p.stat().st_size for p in paths) / 1e6:.1f} MB"


def fetch_heldout() -> int:
    """Fetch the held-out packages; print what they give (photos, natural groups)."""
    try:
        download = 0
        for name, info in datasets.HELDOUT_PACKAGES.items():
            root = datasets.debian_package(name)
            size = int((root / ".deb-size").read_text())
            download += size
            print(f"  {name:28} {size / 1e6:7.1f} MB  {info.licence[:60]}")
        photos = datasets.heldout_photos()
        groups = datasets.heldout_natural_groups()
    except datasets.DatasetUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    members = sum(len(files) for files in groups.values())
    print(f"held-out photos: {len(photos)} ({_mb(photos)}); natural groups: {len(groups)} ({members} files)")
    print(f"downloaded held-out .deb total: {download / 1e6:.1f} MB")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heldout", action="store_true", help="also fetch the held-out benchmark's packages")
    args = parser.parse_args()
    start = time.monotonic()
    print(f"data cache: {datasets.data_cache_dir()}")
    try:
        download = 0
        for name, info in datasets.PACKAGES.items():
            root = datasets.debian_package(name)
            size = int((root / ".deb-size").read_text())
            download += size
            print(f"  {name:26} {size / 1e6:7.1f} MB  {info.licence[:60]}")
        photos = datasets.photos()
        ood = datasets.ood_images()
        for split in ("train", "test"):
            images, labels = datasets.fashion_mnist(split)
            classes = len(set(labels.tolist()))
            print(f"fashion-mnist {split}: {images.shape[0]} images {images.shape[1:]}, {classes} classes")
    except datasets.DatasetUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    megapixel = 0
    for p in photos:
        with Image.open(p) as im:
            megapixel += im.width * im.height >= 2_000_000 and p.suffix.lower() in (".jpg", ".jpeg")
    print(f"photos: {len(photos)} ({_mb(photos)}; {megapixel} JPEGs of >= 2 MP)")
    for kind, files in sorted(ood.items()):
        print(f"ood {kind}: {len(files)} ({_mb(files)})")
    print(f"downloaded .deb total: {download / 1e6:.1f} MB; took {time.monotonic() - start:.0f} s")

    problems = []
    if len(photos) < MIN_PHOTOS:
        problems.append(f"only {len(photos)} photos, need >= {MIN_PHOTOS}")
    problems += [f"no OOD images of kind {kind!r}" for kind in REQUIRED_OOD_KINDS if not ood.get(kind)]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if args.heldout and fetch_heldout() != 0:
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
