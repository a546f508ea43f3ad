"""Find image files under folders by their content, following symlinks without looping.

Image files are recognised by their first bytes (magic numbers), so ``photo`` without an extension
is found and ``notes.txt`` is not. Files whose extension claims an image but whose content does not
are reported, because the user probably expected them to be indexed.

lookalike's own folders are never walked, wherever they lie: an index (its thumbnails live inside
it), a folder tagged by the Cache Directory Tagging spec (``CACHEDIR.TAG``: our thumbnail and model
caches, and other programs' caches), and a quarantine folder (its manifest). Half-copied files that a
killed move left (``.NAME.lookalike-partial``) are never yielded either.
"""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lookalike.imaging.formats import RAW_EXTENSIONS, ftyp_kind, raw_signature

IMAGE_EXTENSIONS = RAW_EXTENSIONS | frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".gif",
        ".webp",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".ico",
        ".tga",
        ".jp2",
        ".j2k",
        ".heic",
        ".heif",
        ".hif",
        ".avif",
    ]
)

#: A folder holding this file is a lookalike index (store/local.py's database file).
INDEX_MARKER = "items.sqlite"
#: The Cache Directory Tagging spec's file name and signature (also honoured by tar, borg, restic).
CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
#: A move across file systems copies to ``.NAME`` + this first (dedup/quarantine.py).
PARTIAL_SUFFIX = ".lookalike-partial"


def tag_cache_dir(folder: str | os.PathLike[str], owner: str = "lookalike") -> None:
    """Mark ``folder`` as a cache (CACHEDIR.TAG), so no index, backup or archiver walks into it."""
    tag = Path(folder) / CACHEDIR_TAG
    if tag.exists():
        return
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tag.write_bytes(
            CACHEDIR_SIGNATURE
            + f"\n# This file is a cache directory tag created by {owner}.\n"
            "# For information about cache directory tags, see https://bford.info/cachedir/\n".encode()
        )
    except OSError:
        pass  # a read-only cache folder: the index-folder rule still keeps ours out


def own_folder_kind(folder: str, names: Iterable[str]) -> str | None:
    """What lookalike folder ``folder`` (with these entry names) is, or None for a user folder."""
    names = set(names)
    if INDEX_MARKER in names:
        return "index"
    if CACHEDIR_TAG in names and _starts_with(os.path.join(folder, CACHEDIR_TAG), CACHEDIR_SIGNATURE):
        return "cache"
    for name in names:
        if (
            name.startswith("manifest-")
            and name.endswith(".jsonl")
            and _is_quarantine_manifest(os.path.join(folder, name))
        ):
            return "quarantine"
    return None


def _starts_with(path: str, prefix: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(prefix)) == prefix
    except OSError:
        return False


def _is_quarantine_manifest(path: str) -> bool:
    """A lookalike quarantine manifest's first line is a JSON header naming its quarantine folder."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline(4096)
    except OSError:
        return False
    return first.startswith("{") and '"state": "header"' in first and '"quarantine"' in first


def sniff_image(head: bytes) -> bool:
    """True when the first bytes of a file look like an image format lookalike can decode: Pillow's,
    HEIC/HEIF and AVIF, and camera RAW (those that begin like a TIFF are TIFFs here). A file whose
    decoder is not installed is still found: decoding it then says what to install."""
    return (
        head.startswith(b"\xff\xd8\xff")  # JPEG
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or head.startswith((b"GIF87a", b"GIF89a"))
        or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")
        or head.startswith(b"BM")
        or head.startswith((b"II*\x00", b"MM\x00*"))  # TIFF
        or (len(head) > 2 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n#")
        or head.startswith(b"\x00\x00\x01\x00")  # ICO
        or ftyp_kind(head) is not None  # HEIC/HEIF, AVIF, Canon CR3
        or raw_signature(head)  # CR2, ORF, RW2, RAF
        or head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51"))  # JPEG 2000
    )


@dataclass(frozen=True)
class FoundFile:
    path: str  # absolute, normalised, symlinks in folder names kept as the user sees them
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str
    detail: str


def walk_images(
    roots: Iterable[str | os.PathLike[str]],
    on_skip: Callable[[Skip], None],
    is_known: Callable[[str, int, int], bool] | None = None,
    on_excluded: Callable[[str], None] | None = None,
) -> Iterator[FoundFile]:
    """Yield every image file under ``roots`` (files or folders), each real file once.

    Problems (unreadable folders, symlink loops, vanished paths, non-image files) go to ``on_skip``.
    ``is_known(path, size, mtime_ns)`` true means "indexed and unchanged": such files are yielded
    without opening them, so re-indexing an unchanged folder costs only stat calls. lookalike's own
    folders (see the module docstring) are not entered; ``on_excluded`` hears of each.
    """
    known = is_known or (lambda path, size, mtime_ns: False)
    excluded = on_excluded or (lambda folder: None)
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for root in roots:
        root_path = os.path.abspath(os.fspath(root))
        st = _stat_or_skip(root_path, on_skip, "no such file or folder")
        if st is None:
            continue
        if os.path.isdir(root_path):
            yield from _walk_dir(root_path, seen_dirs, seen_files, on_skip, known, excluded)
        elif os.path.basename(root_path).endswith(PARTIAL_SUFFIX):
            on_skip(Skip(root_path, "partial copy", "a move that was interrupted left this half-copied file"))
        else:
            found = _check_file(root_path, st, seen_files, on_skip, known, explicit=True)
            if found:
                yield found


def _stat_or_skip(path: str, on_skip: Callable[[Skip], None], missing: str) -> os.stat_result | None:
    """stat() that reports a vanished or unreadable path instead of raising."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        on_skip(Skip(path, "missing", missing))
    except OSError as exc:
        on_skip(Skip(path, "unreadable", exc.strerror or str(exc)))
    return None


def _walk_dir(
    top: str,
    seen_dirs: set[tuple[int, int]],
    seen_files: set[tuple[int, int]],
    on_skip: Callable[[Skip], None],
    known: Callable[[str, int, int], bool],
    excluded: Callable[[str], None],
) -> Iterator[FoundFile]:
    stack = [top]
    while stack:
        folder = stack.pop()
        st = _stat_or_skip(folder, on_skip, "the folder disappeared during the run")
        if st is None:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            if os.path.islink(folder):
                on_skip(Skip(folder, "symlink loop", "points to a folder that is already being indexed"))
            continue
        seen_dirs.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            on_skip(Skip(folder, "missing", "the folder disappeared during the run"))
            continue
        except OSError as exc:
            on_skip(Skip(folder, "unreadable", exc.strerror or str(exc)))
            continue
        if own_folder_kind(folder, (e.name for e in entries)) is not None:
            excluded(folder)
            continue
        subdirs = []
        for entry in entries:
            path = os.path.join(folder, entry.name)
            if entry.name.endswith(PARTIAL_SUFFIX):
                continue  # an interrupted move's half-copied file (the move's re-run finishes it)
            try:
                if entry.is_dir(follow_symlinks=True):
                    subdirs.append(path)
                    continue
                st_file = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                if entry.is_symlink():
                    on_skip(Skip(path, "broken link", "the symlink points nowhere"))
                else:
                    on_skip(Skip(path, "missing", "the file disappeared during the run"))
                continue
            except OSError as exc:
                on_skip(Skip(path, "unreadable", exc.strerror or str(exc)))
                continue
            found = _check_file(path, st_file, seen_files, on_skip, known, explicit=False)
            if found:
                yield found
        stack.extend(reversed(subdirs))


def _check_file(
    path: str,
    st: os.stat_result,
    seen_files: set[tuple[int, int]],
    on_skip: Callable[[Skip], None],
    known: Callable[[str, int, int], bool],
    *,
    explicit: bool,
) -> FoundFile | None:
    if not stat_module.S_ISREG(st.st_mode):
        if explicit:
            on_skip(Skip(path, "not a file", "not a regular file"))
        return None
    key = (st.st_dev, st.st_ino)
    if key in seen_files:
        return None  # the same file reached again through a symlink or hard link
    seen_files.add(key)
    if known(path, st.st_size, st.st_mtime_ns):
        return FoundFile(path, st.st_size, st.st_mtime_ns)
    claims_image = Path(path).suffix.lower() in IMAGE_EXTENSIONS
    if st.st_size == 0:
        if claims_image or explicit:
            on_skip(Skip(path, "empty file", "the file has zero bytes"))
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(32)
    except FileNotFoundError:
        on_skip(Skip(path, "missing", "the file disappeared during the run"))
        return None
    except OSError as exc:
        on_skip(Skip(path, "unreadable", exc.strerror or str(exc)))
        return None
    if not sniff_image(head):
        on_skip(Skip(path, "not an image", "the content is not a recognised image format"))
        return None
    return FoundFile(path, st.st_size, st.st_mtime_ns)
