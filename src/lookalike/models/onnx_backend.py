"""Export a torch network to ONNX once, cache it, and run it with ONNX Runtime.

Why: ONNX Runtime on CPU is faster than eager torch for these small CNNs and, once the ``.onnx`` file
is cached, indexing never imports torch at all (seconds of start-up and hundreds of MB saved).

Cache layout: ``<cache root>/models/<name>-<version>-<weights hash>.onnx`` where the cache root is
``$LOOKALIKE_CACHE_DIR`` or ``platformdirs.user_cache_dir("lookalike")``. The weights hash is taken
from the weights *file*, so a cache hit needs neither torch nor the network.

Robustness: a file is written to a temp name in the same directory, fsync'ed, checked against eager
torch on a fixed random batch, and only then ``os.replace``-d into place, so a concurrent or killed
export never leaves a half-written file under the final name (two concurrent exports both produce
valid files; the last rename wins). A cached file that ONNX Runtime cannot load, whose embedded
fingerprint does not match, or that no longer reproduces the reference outputs stored in it at
export time, is treated as missing and exported again.

Thread safety: ``OnnxModel.run`` may be called from several threads at once on one instance;
``InferenceSession.run`` is documented thread-safe and we keep no mutable state around it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from platformdirs import user_cache_dir

from lookalike.errors import LookalikeError
from lookalike.imaging.discover import tag_cache_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CACHE_ENV = "LOOKALIKE_CACHE_DIR"
OPSET = 17
_FINGERPRINT_KEY = "lookalike.fingerprint"
_REFERENCE_KEY = "lookalike.reference_outputs"
_REFERENCE_VALUES = 32  # per output, from the first image of the fixed batch


class ExportError(LookalikeError, RuntimeError):
    """The exported graph does not reproduce the torch network."""


def cache_root() -> Path:
    """``$LOOKALIKE_CACHE_DIR`` if set, else the per-user cache directory."""
    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("lookalike"))


def model_cache_dir() -> Path:
    return cache_root() / "models"


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ExportRecipe:
    """Everything needed to produce (or find) one cached ONNX graph.

    ``build`` constructs the eval-mode torch module; it is only called on a cache miss or when eager
    torch is asked for. The module's ``forward`` takes one NCHW float32 tensor and returns a tensor
    or a tuple of tensors named by ``output_names``.
    """

    name: str
    version: str
    weights_path: str
    build: Callable[[], torch.nn.Module]
    input_shape: tuple[int, int, int]  # C, H, W
    output_names: tuple[str, ...] = ("embedding",)

    def fingerprint(self) -> str:
        """Identity of the graph: architecture version + exact weights bytes + input shape + opset."""
        text = f"{self.name}|{self.version}|{file_sha256(self.weights_path)}|{self.input_shape}|{OPSET}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def cache_path(self, fingerprint: str | None = None) -> Path:
        fp = fingerprint or self.fingerprint()
        return model_cache_dir() / f"{self.name}-{self.version}-{fp}.onnx"


def _fixed_batch(input_shape: Sequence[int], n: int = 2) -> np.ndarray:
    """A deterministic batch that looks like normalised images (values roughly in -2..2)."""
    rng = np.random.default_rng(1234)
    return rng.standard_normal((n, *input_shape)).astype(np.float32)


def _close(want: np.ndarray, have: np.ndarray, atol: float) -> bool:
    """Max abs difference within ``atol`` times the output's scale (at least 1): logits and pooled
    features live on different scales."""
    if want.shape != have.shape:
        return False
    diff = float(np.max(np.abs(want - have), initial=0.0))
    return diff <= atol * max(1.0, float(np.max(np.abs(want), initial=0.0)))


def _torch_outputs(module: torch.nn.Module, batch: np.ndarray) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        out = module(torch.from_numpy(batch))
    outs = out if isinstance(out, tuple | list) else (out,)
    return [o.detach().cpu().numpy() for o in outs]


def export_onnx(recipe: ExportRecipe, path: Path, *, fingerprint: str | None = None, atol: float = 1e-3) -> Path:
    """Export ``recipe`` to ``path`` atomically, after checking ONNX Runtime reproduces torch
    (``atol`` relative to each output's scale) on a fixed random batch."""
    import onnx
    import torch

    fingerprint = fingerprint or recipe.fingerprint()
    module = recipe.build().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        dummy = torch.zeros((1, *recipe.input_shape), dtype=torch.float32)
        dynamic = {"input": {0: "batch"}} | {name: {0: "batch"} for name in recipe.output_names}
        with torch.inference_mode(), warnings.catch_warnings():
            # tracer chatter about shape inference; the numeric check below is what counts
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (dummy,),
                str(tmp),
                input_names=["input"],
                output_names=list(recipe.output_names),
                dynamic_axes=dynamic,
                opset_version=OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
        batch = _fixed_batch(recipe.input_shape, n=3)  # n != 1 exercises the dynamic batch axis
        expected = _torch_outputs(module, batch)
        got = OnnxModel(tmp, intra_op_num_threads=1).run(batch)
        for name, want, have in zip(recipe.output_names, expected, got, strict=True):
            if not _close(want, have, atol):
                diff = float(np.max(np.abs(want - have)))
                raise ExportError(f"{recipe.name}: ONNX output {name!r} differs from torch by {diff:.3g}")

        # Stamp the fingerprint and a few reference outputs into the graph, so that a cache hit can
        # check it is the file it expects and that its weights are intact (see ``OnnxModel.self_check``).
        reference = [o[:1].ravel()[:_REFERENCE_VALUES].tolist() for o in expected]
        graph = onnx.load(str(tmp))
        onnx.helper.set_model_props(graph, {_FINGERPRINT_KEY: fingerprint, _REFERENCE_KEY: json.dumps(reference)})
        onnx.save(graph, str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared between users of one box
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)
    tag_cache_dir(path.parent)  # a cache: never indexed or backed up (a failed export leaves nothing)
    log.info("exported %s to %s", recipe.name, path)
    return path


class OnnxModel:
    """An ONNX Runtime CPU session on one graph with a single NCHW float32 input.

    ``intra_op_num_threads`` defaults to ``os.cpu_count()``; inter-op parallelism is 1 because these
    graphs are a single chain. ``allow_spinning=False`` stops idle ORT threads from busy-waiting, which
    frees cores for decode workers when indexing overlaps decoding with inference (ORT's default is to
    spin, which is best when the model runs alone). Safe to ``run`` from several threads concurrently.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        intra_op_num_threads: int | None = None,
        allow_spinning: bool = True,
    ) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_num_threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def fingerprint(self) -> str | None:
        return self.session.get_modelmeta().custom_metadata_map.get(_FINGERPRINT_KEY)

    def self_check(self, input_shape: Sequence[int], atol: float = 1e-3) -> bool:
        """Run the fixed export batch and compare with the outputs stored at export time.

        Catches a cached file whose protobuf still parses but whose weights were damaged. Costs one
        single-image forward pass (a few ms to tens of ms).
        """
        stored = self.session.get_modelmeta().custom_metadata_map.get(_REFERENCE_KEY)
        if stored is None:
            return False
        reference = json.loads(stored)
        outputs = self.run(_fixed_batch(input_shape, n=3)[:1])
        if len(reference) != len(outputs):
            return False
        return all(
            _close(np.asarray(ref, np.float32), out.ravel()[: len(ref)], atol)
            for ref, out in zip(reference, outputs, strict=True)
        )

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(self.output_names, {self.input_name: batch})


def open_cached(
    path: Path,
    fingerprint: str,
    output_names: Sequence[str],
    check: Callable[[OnnxModel], bool],
    session_args: dict[str, Any],
) -> OnnxModel | None:
    """The cached graph at ``path`` if it carries ``fingerprint``, these outputs and passes ``check``;
    None (with the reason logged) when it is missing, unreadable or stale, so the caller rebuilds it."""
    if not path.exists():
        return None
    try:
        model = OnnxModel(path, **session_args)
        if model.fingerprint == fingerprint and tuple(model.output_names) == tuple(output_names) and check(model):
            return model
        log.warning("cached %s does not match its fingerprint or self-check; building it again", path)
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... classes
        log.warning("cached %s is unreadable (%s); building it again", path, exc)
    return None


def load_or_export(
    recipe: ExportRecipe, *, intra_op_num_threads: int | None = None, allow_spinning: bool = True
) -> OnnxModel:
    """Open the cached graph for ``recipe``, exporting it first if missing or unusable."""
    session_args = {"intra_op_num_threads": intra_op_num_threads, "allow_spinning": allow_spinning}
    fingerprint = recipe.fingerprint()
    path = recipe.cache_path(fingerprint)
    check = lambda model: model.self_check(recipe.input_shape)  # noqa: E731
    model = open_cached(path, fingerprint, recipe.output_names, check, session_args)
    if model is not None:
        return model
    export_onnx(recipe, path, fingerprint=fingerprint)
    return OnnxModel(path, **session_args)
