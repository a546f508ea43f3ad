"""Models by name, in the spirit of timm's ``create_model``.

A model module registers a factory with ``@register_model("name", ...)``; ``create_model(name)``
builds it. Names with a colon (``clip:ViT-B-32``) pass the part after the colon to the factory of the
prefix (``clip``) as ``variant``. Any other name is resolved to a model saved by ``lookalike train``
(:mod:`lookalike.models.trained`), found on disk, as timm resolves hub and file names.

Each registration also carries the model's :class:`ModelSettings`: the numbers measured for its
vectors (duplicate threshold, density margin, reference speed). Everything that needs one reads it
here through :func:`model_settings`; a model without measurements gets :data:`FALLBACK_SETTINGS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lookalike.errors import LookalikeError
from lookalike.models.base import Embedder

DEFAULT_MODEL = "mobilenet_v2_ml"


@dataclass(frozen=True)
class ModelSettings:
    """Per-model defaults measured on the model's vectors (see docs/cleaning.md and the benchmarks)."""

    #: cosine at or above which two images are near-duplicates with the plain rule (bench_neardup.py)
    dup_threshold: float = 0.9
    #: density margin of the duplicate rule by default (0: the plain threshold; see dedup.groups)
    dup_margin: float = 0.0
    #: the looser threshold measured together with the margin rule (None: the plain one)
    dup_margin_threshold: float | None = None
    #: images/s from bench/bench_models.py on a quiet 2-core machine, model only (None: not measured)
    reference_speed: float | None = None
    #: the density margin when ``dups`` also checks candidate pairs point for point (geometric
    #: verification, dedup.verify), which then is on by default; None: not measured, off by default
    verified_margin: float | None = None

    def duplicate_threshold(self, margin: float | None = None) -> float:
        """The threshold that goes with ``margin`` (None: the default margin)."""
        margin = self.dup_margin if margin is None else margin
        if margin > 0 and self.dup_margin_threshold is not None:
            return self.dup_margin_threshold
        return self.dup_threshold


#: What a model without measurements uses (CLIP, trained models, plug-ins): one value for everyone.
FALLBACK_SETTINGS = ModelSettings()


@dataclass(frozen=True)
class ModelInfo:
    name: str
    factory: Callable[..., Embedder]
    description: str
    dim: int | None
    offline: bool  # weights ship inside an installed package
    #: returns the weights file the model would load (raises if missing); None: needs no weights
    weights: Callable[[], str] | None = None
    settings: ModelSettings = FALLBACK_SETTINGS


_REGISTRY: dict[str, ModelInfo] = {}
_BUILTINS_LOADED = False


class UnknownModelError(LookalikeError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


def register_model(
    name: str,
    *,
    description: str = "",
    dim: int | None = None,
    offline: bool = True,
    weights: Callable[[], str] | None = None,
    settings: ModelSettings = FALLBACK_SETTINGS,
) -> Callable[[Callable[..., Embedder]], Callable[..., Embedder]]:
    """Register ``factory`` under ``name``. ``weights`` lets ``lookalike models`` say whether the model
    can run here (and how big it is) without building it."""

    def wrap(factory: Callable[..., Embedder]) -> Callable[..., Embedder]:
        _REGISTRY[name] = ModelInfo(name, factory, description, dim, offline, weights, settings)
        return factory

    return wrap


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    # Importing a module registers its models. Kept lazy so `import lookalike` stays cheap.
    from lookalike.models import builtin  # noqa: F401


def builtin_names() -> set[str]:
    _load_builtins()
    return set(_REGISTRY)


def _registered(name: str) -> tuple[ModelInfo, dict[str, object]] | None:
    """The registered entry for ``name`` and the factory arguments its name carries, or None."""
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name], {}
    key, _, variant = name.partition(":")
    if variant and key in _REGISTRY:
        return _REGISTRY[key], {"variant": variant}
    return None


def _trained_models() -> list[ModelInfo]:
    """Models saved by ``lookalike train`` (user packages); looked up lazily, after the built-ins."""
    from lookalike.models.trained import list_packages

    return [p.info() for p in list_packages()]


def list_models() -> list[ModelInfo]:
    _load_builtins()
    return sorted([*_REGISTRY.values(), *_trained_models()], key=lambda info: info.name)


def model_info(name: str) -> ModelInfo:
    """Resolve ``name``: a registered model, ``prefix:variant``, else a trained package on disk.

    Raises :class:`UnknownModelError` (naming the known models), or ``PackageError`` for a malformed
    package saved under ``name``."""
    found = _registered(name)
    if found is not None:
        return found[0]
    from lookalike.models.trained import find_package  # reads the models dir: only for other names

    package = find_package(name)
    if package is not None:
        return package.info()
    known = ", ".join(sorted(_REGISTRY)) or "(none)"
    raise UnknownModelError(f"unknown model {name!r}; known models: {known}")


def create_model(name: str = DEFAULT_MODEL, **kwargs: object) -> Embedder:
    """Build the embedder that ``name`` resolves to (see :func:`model_info`)."""
    found = _registered(name)
    if found is not None:
        info, extra = found
        return info.factory(**extra, **kwargs)
    return model_info(name).factory(**kwargs)


def model_settings(name: str | None) -> ModelSettings:
    """The measured settings of ``name``'s vectors; :data:`FALLBACK_SETTINGS` for any other model.

    Never touches the disk (dedup and the web app ask it with an index's model name): a model saved
    by ``lookalike train`` has no measurements of its own and gets the fallback."""
    found = _registered(name or "")
    return found[0].settings if found is not None else FALLBACK_SETTINGS
