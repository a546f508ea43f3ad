"""Thumbnails made once per image content and kept on disk.

Files are named by the item's sha256 and the size, so a file whose content changes gets a new
thumbnail automatically and identical copies share one. Writes go to a temp name and are renamed
into place, so concurrent requests for the same thumbnail never see a half-written file. Where
the folder cannot be written (a read-only index, a full disk) they go to a private temp folder.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from PIL import Image

from lookalike.imaging.discover import tag_cache_dir
from lookalike.imaging.load import DEFAULT_MAX_PIXELS, load_image

THUMBNAIL_SIZE = 320


class ThumbnailCache:
    """JPEG thumbnails (longest side ``size`` px) under ``folder``."""

    def __init__(self, folder: str | os.PathLike[str], *, size: int = THUMBNAIL_SIZE, quality: int = 82) -> None:
        self.folder = Path(folder)
        self.size = size
        self.quality = quality
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._fallback: Path | None = None  # where thumbnails go when ``folder`` cannot be written

    def path_for(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / f"{sha256}-{self.size}.jpg"

    def get(self, source: str | os.PathLike[str], sha256: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Path:
        """The thumbnail file for ``source`` (content ``sha256``), made now if missing.

        Raises :class:`~lookalike.imaging.load.ImageLoadError` if the source cannot be decoded.
        """
        target = self.path_for(sha256)
        if target.exists():
            return target
        with self._lock_for(sha256):  # one decode per thumbnail, even under a burst of requests
            if target.exists():
                return target
            spare = self._fallback / target.relative_to(self.folder) if self._fallback is not None else None
            if spare is not None and spare.exists():
                return spare
            loaded = load_image(source, draft_size=self.size, max_pixels=max_pixels)
            image = loaded.image
            image.thumbnail((self.size, self.size))
            try:
                self._write(image, target)
            except OSError:  # read-only or full: serve from a private temp folder instead
                target = self._fallback_folder() / target.relative_to(self.folder)
                self._write(image, target)
        with self._locks_guard:
            self._locks.pop(sha256, None)
        return target

    def _write(self, image: Image.Image, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tag_cache_dir(self.folder)  # never indexed, wherever the user puts it (a no-op when read-only)
        fd, tmp = tempfile.mkstemp(prefix=".thumb-", suffix=".jpg", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                image.save(handle, "JPEG", quality=self.quality, optimize=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _fallback_folder(self) -> Path:
        with self._locks_guard:
            if self._fallback is None:
                self._fallback = Path(tempfile.mkdtemp(prefix="lookalike-thumbs-"))
            return self._fallback

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())
