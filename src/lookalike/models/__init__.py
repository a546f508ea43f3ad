"""Embedding models: ``create_model(name)`` builds an ``Embedder``; ``list_models()`` lists them.

Importing this package is cheap: model modules (and onnxruntime) load on the first ``create_model``
or ``list_models`` call, and torch only when an ONNX export is missing from the cache.
"""

from lookalike.models.base import Embedder, ModelSpec, l2_normalize
from lookalike.models.registry import (
    DEFAULT_MODEL,
    ModelInfo,
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "Embedder",
    "ModelInfo",
    "ModelSpec",
    "UnknownModelError",
    "create_model",
    "l2_normalize",
    "list_models",
    "model_info",
    "register_model",
]
