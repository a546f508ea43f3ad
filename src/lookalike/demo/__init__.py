"""A small, freely licensed photo set shipped with the package so the demo works offline.

See ATTRIBUTION.md next to this file for sources and licences.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path


def _dir(name: str) -> Path:
    # Package data lives on the file system for normal installs; as_file also covers zipped ones.
    with as_file(files(__name__) / name) as path:
        return Path(path)


def demo_images_dir() -> Path:
    """Folder with the demo photos (a few related groups: windmills, fish, solar panels...)."""
    return _dir("images")


def demo_queries_dir() -> Path:
    """Folder with demo queries: an edited copy, a related photo and an out-of-domain graphic."""
    return _dir("queries")
