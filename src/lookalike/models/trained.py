"""Models trained with ``lookalike train``: finding a saved package on disk and running it.

``create_model(NAME)`` resolves a name that is not a built-in to the package saved under NAME (as
timm's ``create_model`` resolves a hub or file name): this module reads packages and builds their
inference models. Writing them is :mod:`lookalike.training.package`'s job; training imports from
here, never the reverse, so the model registry never needs the training code.

Layout of ``<models dir>/<NAME>/``:

* ``config.json`` -- recipe, architecture sizes, backbone identity, preprocessing, class names,
  sha256 of the weights; enough to rebuild the network and to refuse a mismatched backbone.
* ``weights.pt`` -- the torch state dict (head only for ``head``; the whole CNN for ``scratch``).
* ``report.json`` -- the training report (data, hyper-parameters, per-epoch loss/Recall@1, timings).

The models dir is ``$LOOKALIKE_MODELS_DIR`` or ``platformdirs.user_data_dir("lookalike")/models``
(data, not cache: a trained model cannot be re-downloaded). Inference runs through ONNX Runtime: the
weights are exported once with :mod:`lookalike.models.onnx_backend` (cached, verified against torch);
a ``head`` package runs the backbone's cached ONNX graph, then the head's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from platformdirs import user_data_dir

from lookalike.errors import LookalikeError
from lookalike.models.base import Embedder, ModelSpec, l2_normalize
from lookalike.models.onnx_backend import ExportRecipe, OnnxModel, file_sha256, load_or_export
from lookalike.models.registry import ModelInfo, create_model

MODELS_ENV = "LOOKALIKE_MODELS_DIR"
PACKAGE_FORMAT = 1
#: Names become folder and file names and registry keys: kept plain.
PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PackageError(LookalikeError, ValueError):
    """A model package is missing, malformed, or cannot be written; the message says why."""


def models_dir() -> Path:
    return Path(os.environ.get(MODELS_ENV) or Path(user_data_dir("lookalike")) / "models").expanduser()


@dataclass
class ModelPackage:
    path: Path
    config: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def recipe(self) -> str:
        return str(self.config["recipe"])

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def weights_path(self) -> Path:
        return self.path / "weights.pt"

    @cached_property
    def report(self) -> dict[str, Any]:
        path = self.path / "report.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def spec(self) -> ModelSpec:
        c = self.config
        return ModelSpec(
            name=self.name,
            version=f"{self.recipe}-{c['weights_sha256'][:12]}",
            dim=int(c["dim"]),
            preprocessing=str(c["preprocessing"]),
            input_size=int(c["input_size"]),
        )

    def describe(self) -> str:
        c = self.config
        base = f"on {c['backbone']}" if self.recipe == "head" else "CNN from scratch"
        return f"trained ({self.recipe} {base}) on {len(self.classes)} classes; {c['dim']}-d"

    def info(self) -> ModelInfo:
        """The registry entry: what ``list_models`` shows and ``create_model`` builds."""
        return ModelInfo(self.name, self.embedder, self.describe(), int(self.config["dim"]), True)

    def export_recipe(self) -> ExportRecipe:
        """The ONNX export of the trained part, cached like the built-in models' graphs."""
        c = self.config
        weights = str(self.weights_path)
        if self.recipe == "head":

            def build():  # -> torch.nn.Module
                import torch

                from lookalike.models.projection_head import load_head

                state = torch.load(weights, map_location="cpu", weights_only=True)
                # Packages from before the blend have no head_dim/alpha: their head output is the embedding.
                head_dim = int(c.get("head_dim", c["dim"]))
                return load_head(state, int(c["in_dim"]), int(c["hidden"]), head_dim, float(c.get("alpha", 0.0)))

            shape: tuple[int, ...] = (int(c["in_dim"]),)
        elif self.recipe == "scratch":

            def build():  # -> torch.nn.Module
                import torch

                from lookalike.models.scratch_cnn import embedding_module, load_scratch

                state = torch.load(weights, map_location="cpu", weights_only=True)
                return embedding_module(load_scratch(state, len(c["classes"])))

            size = int(c["input_size"])
            shape = (3, size, size)
        else:
            raise PackageError(f"{self.path}: unknown recipe {self.recipe!r}")
        return ExportRecipe(
            name=f"trained-{self.name}-{self.recipe}",
            version=f"{PACKAGE_FORMAT}"
            if self.recipe != "head" or not c.get("alpha")
            else f"{PACKAGE_FORMAT}a{c['alpha']}",
            weights_path=weights,
            build=build,
            input_shape=shape,  # type: ignore[arg-type]  # the head's input is a vector, not CHW
            output_names=("embedding",),
        )

    def embedder(self, *, intra_op_num_threads: int | None = None, batch_size: int | None = None) -> Embedder:
        """The inference model. Raises :class:`PackageError` if the weights changed or the backbone differs."""
        if file_sha256(self.weights_path) != self.config["weights_sha256"]:
            raise PackageError(f"{self.weights_path} does not match the sha256 in config.json; retrain or restore it")
        onnx = load_or_export(self.export_recipe(), intra_op_num_threads=intra_op_num_threads)
        if self.recipe == "head":
            kwargs: dict[str, Any] = {"intra_op_num_threads": intra_op_num_threads}
            if batch_size:
                kwargs["batch_size"] = batch_size
            backbone = create_model(self.config["backbone"], **kwargs)
            want = self.config["backbone_identity"]
            if backbone.spec.identity() != want:
                raise PackageError(
                    f"model {self.name!r} was trained on backbone {want}, but the installed "
                    f"{self.config['backbone']!r} is {backbone.spec.identity()}; retrain it"
                )
            return HeadEmbedder(self.spec(), backbone, onnx)
        from lookalike.models.scratch_cnn import preprocessor

        return ScratchEmbedder(self.spec(), onnx, preprocessor(), batch_size or 64)


class HeadEmbedder(Embedder):
    """Backbone ONNX graph -> its unit-norm vector -> head ONNX graph -> unit-norm embedding.

    The head sees exactly what it was trained on: the backbone's normalised vector from the same
    ``embed_arrays`` call that filled the feature cache.
    """

    def __init__(self, spec: ModelSpec, backbone: Embedder, head: OnnxModel) -> None:
        self.spec = spec
        self.backbone = backbone
        self.head = head
        self.batch_size = backbone.batch_size

    def preprocess(self, image):  # type: ignore[no-untyped-def]
        return self.backbone.preprocess(image)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        return self.embed_features(self.backbone.embed_arrays(batch))

    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """Head only, on backbone vectors (e.g. from the feature cache)."""
        return l2_normalize(self.head.run(np.asarray(features, dtype=np.float32))[0])


class ScratchEmbedder(Embedder):
    """The scratch CNN's 514-d fc1 activation, L2-normalised."""

    def __init__(self, spec: ModelSpec, onnx: OnnxModel, pre: Any, batch_size: int) -> None:
        self.spec = spec
        self.onnx = onnx
        self.preprocessor = pre
        self.batch_size = batch_size

    def preprocess(self, image):  # type: ignore[no-untyped-def]
        return self.preprocessor(image)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        return l2_normalize(self.onnx.run(batch)[0])


def find_package(name: str) -> ModelPackage | None:
    """The package saved under ``name``, or None. Malformed packages raise :class:`PackageError`."""
    if not PACKAGE_NAME.match(name):
        return None
    path = models_dir() / name
    config_path = path / "config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise PackageError(f"{config_path} is unreadable: {exc}") from exc
    if config.get("format") != PACKAGE_FORMAT or config.get("name") != name:
        raise PackageError(f"{config_path}: not a lookalike model package (format {PACKAGE_FORMAT}) named {name!r}")
    return ModelPackage(path, config)


def list_packages() -> list[ModelPackage]:
    root = models_dir()
    if not root.is_dir():
        return []
    out = []
    for child in sorted(root.iterdir()):
        try:
            package = find_package(child.name)
        except PackageError:
            continue
        if package is not None:
            out.append(package)
    return out
