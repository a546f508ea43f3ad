"""Static INT8 quantisation of a cached fp32 ONNX graph, built once at first use and cached next to it.

Why: ONNX Runtime's INT8 kernels (VNNI) run MobileNetV2 faster than fp32 on CPU, and the network is
half the cost of indexing. Why not at install time: the fp32 graph itself is exported at first use and
cached (see :mod:`lookalike.models.onnx_backend`), so the INT8 graph follows it; quantising from the
cached fp32 graph takes seconds (measured ~6 s on 2 busy cores) and needs no torch.

Determinism: the calibration data are the real photos shipped in ``lookalike/demo/images`` (tuning
photos: the benchmarks report on other, held-out photos), each as is, mirrored and centre-cropped, in
sorted file order; MinMax calibration over a fixed data set gives the same scales every time. The
cache name carries a fingerprint of the fp32 graph's fingerprint, the quantisation settings, the
calibration files' bytes and the ONNX Runtime version (its quantiser is what writes the graph).

Self-check: an INT8 graph does not reproduce fp32 to ``atol`` 1e-3 (cosine ~0.96), so the fp32 check
cannot be used. At build time we store the fp32 embeddings of a few fixed real photos; a cached INT8
graph is accepted only if its embeddings of the same photos are within ``min_cosine`` of those
(quantisation error is bounded; damaged weights are not), and the fingerprint matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lookalike.imaging.discover import tag_cache_dir
from lookalike.models.onnx_backend import (
    ExportError,
    ExportRecipe,
    OnnxModel,
    file_sha256,
    load_or_export,
    open_cached,
)
from lookalike.models.preprocessing import ImagePreprocessor

log = logging.getLogger(__name__)

_FINGERPRINT_KEY = "lookalike.fingerprint"
_INT8_REFERENCE_KEY = "lookalike.int8_reference_fp32"
#: photos (by sorted position among the calibration files) whose fp32 embeddings the self-check keeps
_CHECK_IMAGES = 3


def demo_photos() -> list[Path]:
    """The real photos shipped with the package, sorted: calibration and self-check data."""
    folder = Path(__file__).resolve().parent.parent / "demo" / "images"
    return sorted(folder.glob("*.jpg"))


@dataclass(frozen=True)
class Int8Recipe:
    """How to quantise one fp32 graph: which nodes stay fp32 and which photos calibrate it.

    ``exclude_prefixes``: nodes whose names start with any of these stay in fp32. Measured on 160
    tuning photos (docs/models.md): quantising everything gives cosine(fp32, int8) mean 0.926, min
    0.765 and no-match view min 0.730; keeping the first conv and the pooling/normalisation/head tail
    in fp32 gives mean 0.964, min 0.905 (no-match view 0.956 / 0.876), and runs faster too.
    """

    fp32: ExportRecipe
    preprocessor: ImagePreprocessor
    exclude_prefixes: tuple[str, ...] = ()
    exclude_from: str | None = None  # this node and every node after it (graph order) stay fp32
    min_cosine: float = 0.85
    #: ``CalibrationMethod`` member name. MinMax by default: Percentile gave closer vectors on tuning
    #: photos (cosine mean 0.974 vs 0.964) but its histograms made the first-use build ~20x slower.
    calibrate_method: str = "MinMax"
    calibration: tuple[str, ...] = field(default_factory=lambda: tuple(str(p) for p in demo_photos()))

    def fingerprint(self, fp32_fingerprint: str | None = None) -> str:
        """Identity of the INT8 graph: the fp32 graph's, the settings, the calibration bytes, ORT's version."""
        parts = [
            fp32_fingerprint or self.fp32.fingerprint(),
            f"qdq-perchannel-u8act-s8w-{self.calibrate_method}-mirror-crop",
            repr(self.exclude_prefixes),
            repr(self.exclude_from),
            self.preprocessor.describe(),
            ort.__version__,
            *(file_sha256(p) for p in self.calibration),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def cache_path(self, fingerprint: str) -> Path:
        base = self.fp32.cache_path()
        return base.with_name(f"{self.fp32.name}-int8-{fingerprint}.onnx")

    def calibration_batch(self) -> np.ndarray:
        """Each calibration photo as is, mirrored, and centre-cropped by 1/8 a side, preprocessed."""
        from PIL import Image, ImageOps

        arrays = []
        for path in self.calibration:
            with Image.open(path) as raw:
                image = raw.convert("RGB")
            w, h = image.size
            for view in (image, ImageOps.mirror(image), image.crop((w // 8, h // 8, w - w // 8, h - h // 8))):
                arrays.append(self.preprocessor(view))
        return np.stack(arrays)

    def check_batch(self) -> np.ndarray:
        from PIL import Image

        arrays = []
        for path in self.calibration[:_CHECK_IMAGES]:
            with Image.open(path) as raw:
                arrays.append(self.preprocessor(raw.convert("RGB")))
        return np.stack(arrays)


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def int8_self_check(model: OnnxModel, recipe: Int8Recipe) -> bool:
    """Whether ``model`` embeds the fixed real photos within ``recipe.min_cosine`` of fp32's stored vectors."""
    stored = model.session.get_modelmeta().custom_metadata_map.get(_INT8_REFERENCE_KEY)
    if stored is None:
        return False
    reference = np.asarray(json.loads(stored), dtype=np.float64)
    got = model.run(recipe.check_batch())[0]
    if got.shape != reference.shape:
        return False
    cosines = np.sum(_unit(reference) * _unit(got), axis=1)
    return bool(np.all(cosines >= recipe.min_cosine))


def quantize_int8(recipe: Int8Recipe, fp32_path: Path, path: Path, *, fingerprint: str) -> Path:
    """Quantise the fp32 graph at ``fp32_path`` into ``path`` atomically (temp file, check, rename)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batch = recipe.calibration_batch()

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            # equal chunks (63 = 7 x 9): the histogram calibrators stack them
            self._chunks = iter([batch[i : i + 9] for i in range(0, len(batch), 9)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self._chunks, None)
            return None if chunk is None else {"input": chunk}

    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=path.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        names = [node.name for node in onnx.load(str(prepared)).graph.node]
        excluded = [n for n in names if n.startswith(recipe.exclude_prefixes)] if recipe.exclude_prefixes else []
        if recipe.exclude_from is not None:
            if recipe.exclude_from not in names:
                raise ExportError(f"{recipe.fp32.name}: no node {recipe.exclude_from!r} to keep in fp32")
            excluded += names[names.index(recipe.exclude_from) :]
        quantized = Path(work) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod[recipe.calibrate_method],
            nodes_to_exclude=sorted(set(excluded)),
        )
        check = recipe.check_batch()
        reference = OnnxModel(fp32_path, intra_op_num_threads=1).run(check)[0]
        graph = onnx.load(str(quantized))
        props = {_FINGERPRINT_KEY: fingerprint, _INT8_REFERENCE_KEY: json.dumps(np.round(reference, 6).tolist())}
        onnx.helper.set_model_props(graph, props)
        tmp = Path(work) / "final.onnx"
        onnx.save(graph, str(tmp))
        model = OnnxModel(tmp, intra_op_num_threads=1)
        if not int8_self_check(model, recipe):
            raise ExportError(f"{recipe.fp32.name}: INT8 graph is further than cosine {recipe.min_cosine} from fp32")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    tag_cache_dir(path.parent)
    log.info("quantised %s to INT8 in %.1f s: %s", recipe.fp32.name, time.perf_counter() - started, path)
    return path


def load_or_quantize(
    recipe: Int8Recipe, *, intra_op_num_threads: int | None = None, allow_spinning: bool = True
) -> OnnxModel:
    """Open the cached INT8 graph for ``recipe``, building it (and the fp32 graph) first if needed."""
    session_args = {"intra_op_num_threads": intra_op_num_threads, "allow_spinning": allow_spinning}
    fp32_fingerprint = recipe.fp32.fingerprint()
    fingerprint = recipe.fingerprint(fp32_fingerprint)
    path = recipe.cache_path(fingerprint)
    check = lambda model: int8_self_check(model, recipe)  # noqa: E731
    model = open_cached(path, fingerprint, recipe.fp32.output_names, check, session_args)
    if model is not None:
        return model
    fp32 = load_or_export(recipe.fp32, intra_op_num_threads=1)
    quantize_int8(recipe, fp32.path, path, fingerprint=fingerprint)
    return OnnxModel(path, **session_args)
