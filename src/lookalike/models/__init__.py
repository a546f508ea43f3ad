"""Embedding models: ``create_model(name)`` builds an ``Embedder``; ``list_models()`` lists them;
``model_settings(name)`` gives the numbers measured for a model's vectors (duplicate threshold...).

Importing this package is cheap: model modules (and onnxruntime) load on the first ``create_model``
or ``list_models`` call, and torch only when an ONNX export is missing from the cache.
"""

from lookalike.models.base import Embedder, ModelSpec, l2_normalize
from lookalike.models.registry import (
    DEFAULT_MODEL,
    ModelInfo,
    ModelSettings,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    model_settings,
    register_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "Embedder",
    "ModelInfo",
    "ModelSettings",
    "ModelSpec",
    "UnknownModelError",
    "create_model",
    "l2_normalize",
    "list_models",
    "model_info",
    "model_settings",
    "register_model",
]
