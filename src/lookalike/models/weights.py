"""Find weight files shipped inside installed PyPI packages, without importing those packages.

Weight packages often import torch (or worse) at import time; locating the file through the import
system's spec keeps a cache hit torch-free.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lookalike.errors import LookalikeError


class WeightsNotInstalledError(LookalikeError, RuntimeError):
    """The package that ships a model's weights is missing; the message says what to install."""


def package_file(package: str, relative: str, install_hint: str) -> str:
    """Absolute path of ``relative`` inside installed ``package``, or a clear error naming the fix."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for base in locations:
        candidate = Path(base) / relative
        if candidate.is_file():
            return str(candidate)
    where = "is not installed" if not locations else f"has no {relative}"
    raise WeightsNotInstalledError(f"the weights package {package!r} {where}. Install it with:\n  {install_hint}")
