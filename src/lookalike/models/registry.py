"""Models by name, in the spirit of timm's ``create_model``.

A model module registers a factory with ``@register_model("name", ...)``; ``create_model(name)``
builds it. Names with a colon (``clip:ViT-B-32``) pass the part after the colon to the factory of the
prefix (``clip``) as ``variant``. Any other name is resolved to a model saved by ``lookalike train``
(:mod:`lookalike.models.trained`), found on disk, as timm resolves hub and file names.

"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lookalike.models.base import Embedder

DEFAULT_MODEL = "mobilenet_v2_ml"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    factory: Callable[..., Embedder]
    description: str
    dim: int | None
    offline: bool  # weights ship inside an installed package
    #: returns the weights file the model would load (raises if missing); None: needs no weights
    weights: Callable[[], str] | None = None


_REGISTRY: dict[str, ModelInfo] = {}
_BUILTINS_LOADED = False


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


def register_model(
    name: str,
    *,
    description: str = "",
    dim: int | None = None,
    offline: bool = True,
    weights: Callable[[], str] | None = None,
) -> Callable[[Callable[..., Embedder]], Callable[..., Embedder]]:
    """Register ``factory`` under ``name``. ``weights`` lets ``lookalike models`` say whether the model
    can run here (and how big it is) without building it."""

    def wrap(factory: Callable[..., Embedder]) -> Callable[..., Embedder]:
        _REGISTRY[name] = ModelInfo(name, factory, description, dim, offline, weights)
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
