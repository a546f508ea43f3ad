"""Writing model packages: what ``lookalike train`` saves for ``create_model(NAME)`` to load.

The layout, and reading a package back (:class:`~lookalike.models.trained.ModelPackage`), are in
:mod:`lookalike.models.trained`: the model registry resolves trained names without importing
anything from training.

Packages are written to a temporary sibling folder and renamed into place, so a crash never leaves a
half-written package under NAME; ``--force`` swaps the new one in before removing the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.models.onnx_backend import file_sha256
from lookalike.models.registry import builtin_names
from lookalike.models.trained import (
    PACKAGE_FORMAT,
    PACKAGE_NAME,
    ModelPackage,
    PackageError,
    find_package,
    models_dir,
)


def validate_name(name: str) -> None:
    """Names become folder and file names and registry keys: keep them plain, and never shadow a built-in."""
    if not PACKAGE_NAME.match(name):
        raise PackageError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if name in builtin_names():
        raise PackageError(f"{name!r} is a built-in model; choose another name", parameters=("name",))


def check_can_save(name: str, force: bool) -> None:
    """Fail before training, not after, when NAME is taken or invalid."""
    validate_name(name)
    if (models_dir() / name).exists() and not force:
        raise PackageError(
            f"a model named {name!r} already exists in {models_dir()}; choose another name, or replace it",
            parameters=("name", "force"),
        )


def save_package(
    name: str,
    config: dict[str, Any],
    state_dict: dict[str, Any],
    report: dict[str, Any],
    *,
    force: bool = False,
) -> ModelPackage:
    """Write the package atomically (temp folder + rename) and return it."""
    import torch

    check_can_save(name, force)
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-new-", dir=root))
    try:
        torch.save(state_dict, tmp / "weights.pt")
        config = {**config, "format": PACKAGE_FORMAT, "name": name}
        config["weights_sha256"] = file_sha256(tmp / "weights.pt")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
        for child in tmp.iterdir():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        dest = root / name
        old: Path | None = None
        if dest.exists():
            if not force:
                raise PackageError(
                    f"a model named {name!r} appeared while training; replace it or choose another name",
                    parameters=("force", "name"),
                )
            old = Path(tempfile.mkdtemp(prefix=f".{name}-old-", dir=root))
            os.replace(dest, old / name)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # our own previous package, replaced on --force
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    package = find_package(name)
    assert package is not None
    return package


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
