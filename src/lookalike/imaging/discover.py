"""Find image files under folders by their content, following symlinks without looping.

Image files are recognised by their first bytes (magic numbers), so ``photo`` without an extension
is found and ``notes.txt`` is not. Files whose extension claims an image but whose content does not
are reported, because the user probably expected them to be indexed.
"""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset(
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
        ".avif",
    ]
)


def sniff_image(head: bytes) -> bool:
    """True when the first bytes of a file look like an image format Pillow can read."""
    return (
        head.startswith(b"\xff\xd8\xff")  # JPEG
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or head.startswith((b"GIF87a", b"GIF89a"))
        or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")
        or head.startswith(b"BM")
        or head.startswith((b"II*\x00", b"MM\x00*"))  # TIFF
        or (len(head) > 2 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n#")
        or head.startswith(b"\x00\x00\x01\x00")  # ICO
        or head[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1")
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
) -> Iterator[FoundFile]:
    """Yield every image file under ``roots`` (files or folders), each real file once.

    Problems (unreadable folders, symlink loops, vanished paths, non-image files) go to ``on_skip``.
    ``is_known(path, size, mtime_ns)`` true means "indexed and unchanged": such files are yielded
    without opening them, so re-indexing an unchanged folder costs only stat calls.
    """
    known = is_known or (lambda path, size, mtime_ns: False)
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for root in roots:
        root_path = os.path.abspath(os.fspath(root))
        st = _stat_or_skip(root_path, on_skip, "no such file or folder")
        if st is None:
            continue
        if os.path.isdir(root_path):
            yield from _walk_dir(root_path, seen_dirs, seen_files, on_skip, known)
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
        subdirs = []
        for entry in entries:
            path = os.path.join(folder, entry.name)
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
