"""Real image data for the tests, benchmarks and scripts, taken from Debian packages.

Not part of the installed ``lookalike`` package: nothing in the library uses it, and it runs
``apt-get download`` and parses Qt resource files, which an installed library has no business doing.
``tests/conftest.py``, the ``bench/`` scripts and ``scripts/fetch_data.py`` put ``tools/`` on
``sys.path`` and ``import lookalike_data``.

Why Debian packages: they are the only image source reachable from CI (no general
internet), they are versioned, and every package carries a machine-readable
``copyright`` file, so each image's licence is known.

Everything is downloaded with ``apt-get download`` (no root, nothing installed) and
extracted once into :func:`data_cache_dir`.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import platformdirs
from PIL import Image

__all__ = [
    "FASHION_MNIST_CLASSES",
    "HELDOUT_PACKAGES",
    "NATURAL_GROUPS",
    "PACKAGES",
    "DatasetUnavailable",
    "PackageInfo",
    "data_cache_dir",
    "debian_package",
    "fashion_mnist",
    "fetch_heldout",
    "heldout_natural_groups",
    "heldout_photos",
    "ood_images",
    "photos",
    "read_idx",
    "read_rcc",
    "write_fashion_mnist_folder",
]


class DatasetUnavailable(RuntimeError):
    """A data set could not be fetched (no apt-get, no network, unknown package...)."""


@dataclass(frozen=True)
class PackageInfo:
    """One Debian package we take images from, and which of its files we use."""

    gives: str
    licence: str
    #: kind -> glob patterns (``fnmatch``, relative to the extracted package root).
    include: dict[str, tuple[str, ...]]
    exclude: tuple[str, ...] = ()


_GC = "_rcc/{}/gcompris/src/activities/{}/resource/"
_SKIMAGE = "usr/lib/python3/dist-packages/skimage/data/"

#: The single table of packages we use. Licences are read from each package's
#: ``usr/share/doc/<name>/copyright`` (bookworm versions); per-file licences for the
#: committed demo images are in ``lookalike/demo/ATTRIBUTION.md``.
PACKAGES: dict[str, PackageInfo] = {
    "gcompris-qt-data": PackageInfo(
        gives="~260 Wikimedia Commons photos (fish, tools, windmills, monuments, animals, musicians) "
        "inside Qt .rcc archives; drawn word-cards used as clipart",
        licence="per file: CC-BY-SA-2.0/3.0/4.0, CC-BY-1.0/2.0/3.0, CC0-1.0, public domain, GPL-3+",
        include={
            "photo": tuple(
                _GC.format(activity, activity) + pattern
                for activity, pattern in [
                    ("categorization", "images/*/*.webp"),
                    ("explore_monuments", "*/*.webp"),
                    ("explore_world_animals", "animals/*.webp"),
                    ("explore_farm_animals", "animals/*.webp"),
                    ("explore_world_music", "*/*.webp"),
                    ("erase", "*.webp"),
                    ("clickgame", "sea*.webp"),
                    ("details", "**/*_background.webp"),
                ]
            ),
            "clipart": (_GC.format("lang", "lang") + "words_sample/*.webp",),
        },
        # Paintings are not photographs.
        exclude=("*Gogh*", "*PortraitOfPereTanguy*", "*Auvers*"),
    ),
    "lomiri-wallpapers-16.04": PackageInfo(
        gives="14 large wallpaper photographs (1.5-16 MP JPEGs)",
        licence="CC-BY-4.0, CC-BY-SA-4.0, CC0-1.0 (per file)",
        include={"photo": ("usr/share/backgrounds/*.jpg",)},
        exclude=("*umang_by_*",),  # a rendered gradient, not a photograph
    ),
    "lomiri-wallpapers-20.04": PackageInfo(
        gives="2 large wallpaper photographs (16-20 MP JPEGs); the other two are graphics",
        licence="CC-BY-SA-4.0 (per file)",
        include={
            "photo": (
                "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
                "usr/share/backgrounds/Infinite-Sea_by_Aury88.jpg",
            )
        },
    ),
    "mate-backgrounds": PackageInfo(
        gives="12 nature wallpaper photographs (1-5 MP JPEGs)",
        licence="GPL-2+",
        include={"photo": ("usr/share/backgrounds/mate/nature/*.jpg",)},
    ),
    "python3-skimage": PackageInfo(
        gives="scikit-image sample photos (astronaut, cat, coffee, rocket...) and astronomy images",
        licence="BSD-3-Clause (skimage/data/_fetchers.py: the photos used are public domain or CC0)",
        include={
            "photo": tuple(
                _SKIMAGE + name
                for name in (
                    "astronaut.png",
                    "camera.png",
                    "chelsea.png",
                    "coffee.png",
                    "coins.png",
                    "motorcycle_left.png",
                    "rocket.jpg",
                )
            ),
            "astronomy": (_SKIMAGE + "hubble_deep_field.jpg", _SKIMAGE + "moon.png"),
        },
    ),
    "xplanet-images": PackageInfo(
        gives="whole-planet Earth day/night maps (astronomy / remote sensing)",
        licence="GPL-2+",
        include={"astronomy": ("usr/share/xplanet/images/earth.jpg", "usr/share/xplanet/images/night.jpg")},
    ),
    "tango-icon-theme": PackageInfo(
        gives="~500 distinct 32x32 desktop icons (PNG)",
        licence="public-domain",
        include={"icons": ("usr/share/icons/Tango/32x32/*/*.png",)},
    ),
    "dataset-fashion-mnist": PackageInfo(
        gives="Fashion-MNIST: 70,000 labelled 28x28 greyscale product photos, 10 classes (idx, gzipped)",
        licence="Expat (MIT)",
        include={},
    ),
}

PHOTO_PACKAGES = tuple(name for name, info in PACKAGES.items() if "photo" in info.include)

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)

_FASHION_DIR = "usr/share/datasets/fashion-mnist"
_MIN_PHOTO_SIDE = 200
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


# --------------------------------------------------------------------------- cache & packages


def data_cache_dir() -> Path:
    """Where fetched data lives: ``$LOOKALIKE_DATA_DIR`` or the per-user cache.

    An env override lets CI point every job at one persistent cache.
    """
    env = os.environ.get("LOOKALIKE_DATA_DIR")
    root = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("lookalike")) / "data"
    root.mkdir(parents=True, exist_ok=True)
    return root


def debian_package(name: str) -> Path:
    """Download and extract a Debian package once; return the extracted root.

    Extraction happens in a temporary sibling directory that is renamed into place
    with ``os.replace``, so an interrupted run never leaves a half-extracted package
    that later runs would trust. Qt ``.rcc`` resource archives inside the package are
    unpacked under ``_rcc/<archive stem>/`` because that is where GCompris keeps its photos.
    """
    root = data_cache_dir() / "debian"
    dest = root / name
    if (dest / ".complete").exists():
        return dest
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DatasetUnavailable(
            f"cannot fetch Debian package {name!r}: apt-get/dpkg-deb not found "
            "(run on Debian/Ubuntu, or set LOOKALIKE_DATA_DIR to a pre-filled cache)"
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp_name:
        tmp = Path(tmp_name)
        # apt drops privileges to _apt when it can; a world-writable download dir avoids the warning.
        os.chmod(tmp, 0o777)
        proc = subprocess.run(["apt-get", "download", "-q", name], cwd=tmp, capture_output=True, text=True, check=False)
        debs = sorted(tmp.glob("*.deb"))
        if proc.returncode != 0 or not debs:
            raise DatasetUnavailable(
                f"apt-get download {name} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}\n"
                "Is the package index current (apt-get update) and the mirror reachable?"
            )
        tree = tmp / "tree"
        proc = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tree)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DatasetUnavailable(f"dpkg-deb -x {debs[0].name} failed: {proc.stderr.strip()[-500:]}")
        for rcc in sorted(tree.rglob("*.rcc")):
            _unpack_rcc(rcc, tree / "_rcc" / rcc.stem)
        (tree / ".deb-size").write_text(str(debs[0].stat().st_size))
        (tree / ".complete").write_text(debs[0].name)
        if dest.exists():  # a stale, incomplete extraction from an older run
            shutil.rmtree(dest)
        os.replace(tree, dest)
    return dest


def package_copyright(name: str) -> str:
    """The package's Debian copyright file (the licence source of truth)."""
    return (debian_package(name) / "usr/share/doc" / name / "copyright").read_text(errors="replace")


# --------------------------------------------------------------------------- Qt rcc archives


def read_rcc(data: bytes) -> dict[str, bytes]:
    """Parse a Qt binary resource file (``rcc`` format 1-3) into ``{path: bytes}``.

    zlib-compressed entries are inflated; zstd-compressed entries (format 3, flag 4)
    are skipped since nothing we use needs them.
    """
    if data[:4] != b"qres":
        raise ValueError("not a Qt rcc file")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    entry_size = 14 if version == 1 else 22
    out: dict[str, bytes] = {}

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        start = names + offset + 6  # skip length and hash
        return data[start : start + 2 * length].decode("utf-16-be")

    stack: list[tuple[int, str]] = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        base = tree + index * entry_size
        name_offset, flags = struct.unpack(">IH", data[base : base + 6])
        path = f"{prefix}/{name_at(name_offset)}" if index else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", data[base + 6 : base + 14])
            stack.extend((child, path) for child in range(first, first + count))
            continue
        (offset,) = struct.unpack(">I", data[base + 10 : base + 14])
        (size,) = struct.unpack(">I", data[payload + offset : payload + offset + 4])
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & 4:
            continue
        if flags & 1:
            blob = zlib.decompress(blob[4:])  # qCompress: 4-byte length, then zlib
        out[path.lstrip("/")] = blob
    return out


def _unpack_rcc(rcc: Path, dest: Path) -> None:
    for rel, blob in read_rcc(rcc.read_bytes()).items():
        target = dest / rel
        if ".." in Path(rel).parts:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)


# --------------------------------------------------------------------------- image selection


def _matching(root: Path, patterns: Iterable[str], exclude: Iterable[str]) -> list[Path]:
    exclude = tuple(exclude)
    found: set[Path] = set()
    for pattern in patterns:
        for path in root.glob(pattern):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not any(fnmatch.fnmatch(rel, ex) for ex in exclude):
                found.add(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _image_size(path: Path) -> tuple[int, int] | None:
    """Size of a fully decodable image, else None (truncated files are skipped here, not in a benchmark)."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (256, 256))  # JPEG: decode at reduced scale, still validates the stream
            size = im.size
            im.load()
    except Exception:
        return None
    return size


def _dhash(path: Path) -> int:
    with Image.open(path) as im:
        im.draft("L", (64, 64))
        grey = np.asarray(im.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def photos(limit: int | None = None) -> list[Path]:
    """Distinct real photographs (>= 200x200, decodable), in a stable order.

    Exact copies are dropped by sha256, and re-encoded copies of one photo (GCompris
    ships a few monuments twice) by a 64-bit difference hash, because the
    near-duplicate benchmark needs its "distinct" set to be really distinct.
    The order is by package, then path, so ``limit`` gives the same prefix everywhere.
    """
    # The list is keyed by the table so that editing PACKAGES invalidates it.
    key = hashlib.sha256(repr([(n, PACKAGES[n]) for n in PHOTO_PACKAGES]).encode()).hexdigest()[:12]
    cache = data_cache_dir() / f"photos-{key}.list"
    chosen: list[Path]
    if cache.exists():
        chosen = [Path(line) for line in cache.read_text().splitlines() if line]
        if all(p.exists() for p in chosen):
            return chosen[:limit] if limit is not None else chosen
    seen_sha: set[str] = set()
    seen_hash: list[int] = []
    chosen = []
    for name in PHOTO_PACKAGES:
        info = PACKAGES[name]
        root = debian_package(name)
        for path in _matching(root, info.include["photo"], info.exclude):
            size = _image_size(path)
            if size is None or min(size) < _MIN_PHOTO_SIDE:
                continue
            digest = _sha256(path)
            if digest in seen_sha:
                continue
            dh = _dhash(path)
            if any(bin(dh ^ other).count("1") <= 4 for other in seen_hash):
                continue
            seen_sha.add(digest)
            seen_hash.append(dh)
            chosen.append(path)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text("".join(f"{p}\n" for p in chosen))
    os.replace(tmp, cache)
    return chosen[:limit] if limit is not None else chosen


def ood_images() -> dict[str, list[Path]]:
    """Out-of-distribution images by kind, for the "no similar images" evaluation.

    Kinds: ``clipart`` (drawn word-cards), ``icons`` (Tango 32x32), ``astronomy``
    (Hubble deep field, Moon, Earth maps) and ``fashion-mnist`` (one PNG per class
    x 10, written from the arrays). Generated noise is left to the caller since it
    needs no download. Only kinds whose package could be fetched are returned.
    """
    out: dict[str, list[Path]] = {}
    for name, info in PACKAGES.items():
        for kind, patterns in info.include.items():
            if kind == "photo":
                continue
            files = [p for p in _matching(debian_package(name), patterns, info.exclude) if _image_size(p)]
            if files:
                out.setdefault(kind, []).extend(files)
    fm = data_cache_dir() / "fashion-mnist-ood"
    if not fm.exists():
        with tempfile.TemporaryDirectory(dir=data_cache_dir(), prefix=".fm-") as tmp:
            write_fashion_mnist_folder(Path(tmp) / "out", "test", per_class=10, size=224)
            os.replace(Path(tmp) / "out", fm)
    out["fashion-mnist"] = sorted(fm.rglob("*.png"))
    return out


# --------------------------------------------------------------------------- held-out photo set

_PLASMA = "usr/share/wallpapers/{}/contents/"
_LXQT = "usr/share/lxqt/wallpapers/"
_OPENCV = "usr/share/doc/opencv-doc/examples/"
_SCRIBUS = "usr/share/scribus/templates/"
_TUX = "usr/share/tuxpaint/stamps/"
_NEBULAE = "usr/share/stellarium/nebulae/default/"
_DB = "usr/share/desktop-base/"
#: Messier images credited to other authors than the Grasslands Observatory in stellarium-data's
#: copyright (sections 4.8-4.25); only the Grasslands ones, "use freely ... as long as it is
#: credited", are taken.
_MESSIER_OTHERS = (
    1,
    3,
    8,
    13,
    15,
    16,
    17,
    20,
    21,
    27,
    31,
    33,
    42,
    44,
    45,
    47,
    51,
    57,
    63,
    64,
    78,
    81,
    82,
    97,
    101,
    105,
)
#: 30 of the remaining Messier images, a stable pick (every Messier number in range, minus the above).
_MESSIER = tuple(n for n in range(2, 110) if n not in _MESSIER_OTHERS)[:30]

#: Wallpapers of plasma-workspace-wallpapers: each ships a thumbnail (``screenshot``) next to one or
#: two full-size renderings (landscape, and for some a portrait crop). Every one is a natural group.
PLASMA_WALLPAPERS = (
    "Altai",
    "Autumn",
    "BytheWater",
    "Canopee",
    "Cascade",
    "Cluster",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "Elarun",
    "EveningGlow",
    "FallenLeaf",
    "Flow",
    "FlyingKonqui",
    "Grey",
    "Honeywave",
    "IceCold",
    "Kay",
    "Kite",
    "Kokkini",
    "MilkyWay",
    "OneStandsOut",
    "Opal",
    "PastelHills",
    "Patak",
    "Path",
    "SafeLanding",
    "Shell",
    "Volna",
    "summer_1am",
)

#: Packages for the *held-out* duplicate benchmark (bench/bench_dups_heldout.py): none of them is in
#: :data:`PACKAGES`, so nothing the defaults were tuned on comes from them. Kinds: ``photo`` (distinct
#: photographs: the held-out originals and the look-alike singletons) and ``natural`` (files that are
#: members of :data:`NATURAL_GROUPS`). Licences read from each ``usr/share/doc/<name>/copyright``
#: (bookworm versions) and, where it points to one, the upstream licence file shipped next to the images.
HELDOUT_PACKAGES: dict[str, PackageInfo] = {
    "plasma-workspace-wallpapers": PackageInfo(
        gives="30 KDE wallpapers (12 photographs, 18 graphics), each as a 400 px thumbnail plus 1-2 "
        "full renderings (landscape 2560-5120 px, some also a portrait crop): natural groups",
        licence="GPL-2+",
        include={
            "natural": tuple(
                _PLASMA.format(name) + p for name in PLASMA_WALLPAPERS for p in ("screenshot.*", "images/*")
            )
        },
    ),
    "lxqt-themes": PackageInfo(
        gives="11 wallpaper photographs (clouds, mountains, flowers, butterflies, fog; 2-6 MP)",
        licence="CC-BY-SA-3.0 (wallpapers/License: LXQt Project Team; photos by stefonarch)",
        include={
            "photo": tuple(
                _LXQT + name
                for name in (
                    "Butterfly-Kenneth-Wimer.jpg",
                    "Valendas.png",
                    "after-the-rain.jpg",
                    "appleflower.png",
                    "beam.png",
                    "butterfly.png",
                    "cloud.png",
                    "drop.png",
                    "flowers.png",
                    "fog.jpg",
                    "this-is-not-windows.jpg",
                )
            )
        },
    ),
    "palapeli-data": PackageInfo(
        gives="5 jigsaw-puzzle photographs (castle, bridge, citrus fruits, bee, chameleon)",
        licence="GPL-2+",
        include={"photo": ("usr/share/palapeli/collection/*.jpg",)},
    ),
    "python3-sklearn": PackageInfo(
        gives="2 sample photographs (china.jpg: a temple, flower.jpg)",
        licence="BSD-3-Clause (package); the photos CC-BY-2.0 (sklearn/datasets/images/README.txt)",
        include={"photo": ("usr/lib/python3/dist-packages/sklearn/datasets/images/*.jpg",)},
    ),
    "python-matplotlib-data": PackageInfo(
        gives="1 sample photograph (grace_hopper.jpg, a US Navy portrait)",
        licence="matplotlib licence (PSF-style); the portrait is a US Navy photo, public domain",
        include={"photo": ("usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg",)},
    ),
    "scribus-template": PackageInfo(
        gives="5 template photographs (moon, night sky, nature, sunset, pizza) and a colour/black-and-white "
        "pair of one photo (teriyaki): a natural group",
        licence="public domain (the templates by Riku Leino, per the copyright file)",
        include={
            "photo": tuple(
                _SCRIBUS + p
                for p in ("br2/halfmoon.jpg", "br2/moon.jpg", "br2/nature.jpg", "br2/sunset.jpg", "menu2/pizza.jpg")
            ),
            "natural": (_SCRIBUS + "menu1/teriyaki.png", _SCRIBUS + "menu1-bw/teriyaki-bw.png"),
        },
    ),
    "opencv-doc": PackageInfo(
        gives="18 sample photographs (fruit, baboon, butterfly, buildings, circuit board, street signs...) and "
        "one original/doctored pair (ela_original/ela_modified): a natural group",
        licence="Apache-2.0 AND BSD-3-Clause (Files: *; Debian removed the samples of unclear licence)",
        include={
            "photo": tuple(
                _OPENCV + "data/" + name
                for name in (
                    "HappyFish.jpg",
                    "apple.jpg",
                    "baboon.jpg",
                    "board.jpg",
                    "building.jpg",
                    "butterfly.jpg",
                    "chicky_512.png",
                    "fruits.jpg",
                    "home.jpg",
                    "orange.jpg",
                    "squirrel_cls.jpg",
                    "sudoku.png",
                )
            )
            + tuple(_OPENCV + f"text/scenetext0{i}.jpg" for i in range(1, 7)),
            "natural": (_OPENCV + "data/ela_original.jpg", _OPENCV + "data/ela_modified.jpg"),
        },
    ),
    "tuxpaint-stamps-default": PackageInfo(
        gives="photographic stamps (animals, fruit, vegetables, plants, vehicles, household objects; cut out, "
        "alpha on white) >= 200 px, and 4 original/mirrored pairs: natural groups",
        licence="GPL-2",
        include={
            "photo": tuple(_TUX + d + "/**/*.png" for d in ("animals", "food", "plants", "vehicles", "household")),
            "natural": tuple(
                _TUX + p + s
                for p in (
                    "military/vehicles/bradley",
                    "vehicles/construction/dumper",
                    "vehicles/emergency/sedan_police",
                    "household/tools/measuring_tape",
                )
                for s in (".png", "_mirror.png")
            ),
        },
        exclude=(
            "*cartoon*",
            "*_mirror*",
            "*/military/*",
            "*/bradley*",
            "*/dumper*",
            "*/sedan_police*",
            "*/measuring_tape*",
            # drawn or rendered, not photographs (checked by eye)
            "*/hedgehog*",
            "*/pizza.png",
            "*/glass.png",
            "*/7spoke256*",
            "*/balloon360*",
            "*/bee.png",
            "*/fly.png",
        ),
    ),
    "stellarium-data": PackageInfo(
        gives=f"{len(_MESSIER)} Messier-object photographs (galaxies, clusters, nebulae; 256-1024 px) from the "
        "Grasslands Observatory: look-alikes of one another",
        licence="GPL-2+ (package); the Grasslands images: free use, modification and redistribution with credit",
        include={"photo": tuple(f"{_NEBULAE}m{n}.png" for n in _MESSIER)},
    ),
    "desktop-base": PackageInfo(
        gives="Debian theme artwork: each theme's GRUB background at 4:3 and 16:9 and its login preview: "
        "natural groups (graphics)",
        licence="GPL-2+ (spacefun-theme: GPL-2)",
        include={"natural": (_DB + "*-theme/grub/grub-*.png", _DB + "*-theme/login/sddm-preview*.jpg")},
    ),
    "debian-edu-artwork-emerald": PackageInfo(
        gives="the Debian Edu rendering of desktop-base's emerald GRUB background (4:3, 16:9)",
        licence="GPL-2+",
        include={"natural": (_DB + "debian-edu-emerald-theme/grub/grub-*.png",)},
    ),
    "debian-edu-artwork-softwaves": PackageInfo(
        gives="the Debian Edu rendering of desktop-base's softwaves GRUB background (4:3, 16:9; an Edu logo added)",
        licence="GPL-2+",
        include={"natural": (_DB + "debian-edu-softwaves-theme/grub/grub-*.png",)},
    ),
    "debian-edu-artwork-spacefun": PackageInfo(
        gives="the Debian Edu rendering of desktop-base's spacefun GRUB background (4:3, 16:9; an Edu logo added)",
        licence="GPL-2+",
        include={"natural": (_DB + "debian-edu-spacefun-theme/grub/grub-*.png",)},
    ),
    "sway-backgrounds": PackageInfo(
        gives="the sway wallpaper at 8 sizes/aspects (landscape and portrait): one natural group (3 of them used)",
        licence="Expat",
        include={
            "natural": tuple(
                "usr/share/backgrounds/sway/Sway_Wallpaper_Blue_" + s + ".png"
                for s in ("1920x1080", "2048x1536", "768x1024_Portrait")
            )
        },
    ),
}

_DB_THEMES = (
    "emerald",
    "futureprototype",
    "homeworld",
    "joy",
    "joy-inksplat",
    "lines",
    "moonlight",
    "softwaves",
    "spacefun",
)


def _natural_group_specs() -> dict[str, tuple[tuple[str, str], ...]]:
    """Natural groups as ``name -> ((package, glob), ...)``: one picture, shipped several times.

    Checked by eye (contact sheets of every group) when the table was written.
    """
    specs: dict[str, tuple[tuple[str, str], ...]] = {}
    for name in PLASMA_WALLPAPERS:
        base = _PLASMA.format(name)
        specs[f"plasma-{name}"] = tuple(("plasma-workspace-wallpapers", base + p) for p in ("screenshot.*", "images/*"))
    for theme in _DB_THEMES:
        members = [
            ("desktop-base", f"{_DB}{theme}-theme/grub/grub-*.png"),
            ("desktop-base", f"{_DB}{theme}-theme/login/sddm-preview*.jpg"),
        ]
        edu = f"debian-edu-artwork-{theme}"
        if edu in HELDOUT_PACKAGES:
            members.append((edu, f"{_DB}debian-edu-{theme}-theme/grub/grub-*.png"))
        specs[f"debian-{theme}"] = tuple(members)
    specs["sway"] = tuple(("sway-backgrounds", p) for p in HELDOUT_PACKAGES["sway-backgrounds"].include["natural"])
    specs["scribus-teriyaki"] = tuple(
        ("scribus-template", p) for p in HELDOUT_PACKAGES["scribus-template"].include["natural"]
    )
    specs["opencv-ela"] = tuple(("opencv-doc", p) for p in HELDOUT_PACKAGES["opencv-doc"].include["natural"])
    tux = HELDOUT_PACKAGES["tuxpaint-stamps-default"].include["natural"]
    for i in range(0, len(tux), 2):
        specs["tuxpaint-" + Path(tux[i]).stem] = (
            ("tuxpaint-stamps-default", tux[i]),
            ("tuxpaint-stamps-default", tux[i + 1]),
        )
    return specs


#: name -> ((package, glob), ...), see :func:`_natural_group_specs`.
NATURAL_GROUPS: dict[str, tuple[tuple[str, str], ...]] = _natural_group_specs()


def _real_files(root: Path, patterns: Iterable[str], exclude: Iterable[str] = ()) -> list[Path]:
    """Like :func:`_matching`, but symlinks are left out (wallpaper packages link one file to many names)."""
    return [p for p in _matching(root, patterns, exclude) if not p.is_symlink()]


def fetch_heldout() -> dict[str, Path]:
    """Download and extract every package of :data:`HELDOUT_PACKAGES` (not done by default anywhere)."""
    return {name: debian_package(name) for name in HELDOUT_PACKAGES}


def _table_key(table: object) -> str:
    return hashlib.sha256(repr(table).encode()).hexdigest()[:12]


def heldout_natural_groups() -> dict[str, list[Path]]:
    """The natural groups: name -> its files (>= 2 decodable, distinct by sha256, smaller side >= 200 px)."""
    out: dict[str, list[Path]] = {}
    for name, members in NATURAL_GROUPS.items():
        files: list[Path] = []
        seen: set[str] = set()
        for package, pattern in members:
            for path in _real_files(debian_package(package), [pattern]):
                size = _image_size(path)
                digest = _sha256(path)
                if size is None or min(size) < _MIN_PHOTO_SIDE or digest in seen:
                    continue
                seen.add(digest)
                files.append(path)
        if len(files) >= 2:
            out[name] = files
    return out


def heldout_photos() -> list[Path]:
    """Distinct held-out photographs (>= 200 px, decodable), in a stable order (by package, then path).

    Distinct as in :func:`photos` (sha256, then a 64-bit difference hash within 4 bits), and also
    distinct from every tuning photo (:func:`photos`) and every natural-group member, so that no
    held-out original or look-alike singleton has an unlabelled copy anywhere in either set.
    """
    key = _table_key([(n, HELDOUT_PACKAGES[n]) for n in HELDOUT_PACKAGES] + [NATURAL_GROUPS, PACKAGES])
    cache = data_cache_dir() / f"heldout-photos-{key}.list"
    if cache.exists():
        chosen = [Path(line) for line in cache.read_text().splitlines() if line]
        if all(p.exists() for p in chosen):
            return chosen
    known = [_dhash(p) for p in photos()]
    known += [_dhash(p) for files in heldout_natural_groups().values() for p in files]
    seen_sha: set[str] = set()
    chosen = []
    for name, info in HELDOUT_PACKAGES.items():
        if "photo" not in info.include:
            continue
        for path in _real_files(debian_package(name), info.include["photo"], info.exclude):
            size = _image_size(path)
            if size is None or min(size) < _MIN_PHOTO_SIDE:
                continue
            digest = _sha256(path)
            dh = _dhash(path)
            if digest in seen_sha or any(bin(dh ^ other).count("1") <= 4 for other in known):
                continue
            seen_sha.add(digest)
            known.append(dh)
            chosen.append(path)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text("".join(f"{p}\n" for p in chosen))
    os.replace(tmp, cache)
    return chosen


def package_of(path: Path) -> str:
    """The Debian package an extracted file came from (its folder under the cache's ``debian/``)."""
    parts = path.parts
    return parts[parts.index("debian") + 1] if "debian" in parts else "?"


# --------------------------------------------------------------------------- Fashion-MNIST


def read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (the MNIST format), gzipped or not, into a numpy array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an idx file")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = raw[2], raw[3]
    if code not in dtypes:
        raise ValueError(f"{path}: unknown idx element type 0x{code:02x}")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(dtypes[code])
    count = int(np.prod(shape)) if shape else 0
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=4 + 4 * ndim)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def _fashion_file(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    raise DatasetUnavailable(f"Fashion-MNIST file {stem} missing from {directory}")


def fashion_mnist(split: Literal["train", "test"] = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 28, 28) uint8`` and labels ``(n,) uint8`` (indices into FASHION_MNIST_CLASSES)."""
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test'")
    directory = debian_package("dataset-fashion-mnist") / _FASHION_DIR
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_fashion_file(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_fashion_file(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.shape[0] != labels.shape[0]:
        raise ValueError("Fashion-MNIST images and labels disagree in length")
    return images.astype(np.uint8), labels.astype(np.uint8)


def _first_per_class(labels: np.ndarray, per_class: int | None) -> Iterator[tuple[int, int]]:
    """Yield (index, label) keeping the first ``per_class`` of each label, in data order."""
    counts: dict[int, int] = {}
    for index, label in enumerate(labels.tolist()):
        if per_class is not None and counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        yield index, label


def write_fashion_mnist_folder(
    dest: Path,
    split: Literal["train", "test"] = "test",
    per_class: int | None = None,
    size: int | None = None,
    *,
    arrays: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write Fashion-MNIST as ``dest/<class name>/<split>-<index>.png`` (a labelled image folder).

    ``size`` upscales (bicubic) for models that expect e.g. 224 px input. ``arrays``
    overrides the downloaded data (tests pass a tiny fake set).
    """
    images, labels = arrays if arrays is not None else fashion_mnist(split)
    dest = Path(dest)
    for index, label in _first_per_class(labels, per_class):
        folder = dest / FASHION_MNIST_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(np.ascontiguousarray(images[index], dtype=np.uint8), mode="L")
        if size is not None:
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        (folder / f"{split}-{index:05d}.png").write_bytes(buf.getvalue())
    return dest
