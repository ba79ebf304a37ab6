#!/usr/bin/env bash
# One command for the first GPU machine: the GPU-only tests, then forward time and peak memory of the
# paper-size MMVDM (8 views x 49 frames x 512 px, or the largest that fits) and the Gaussian renderer on CUDA.
# Run from the repository root after `make venv`. Without CUDA it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: skipped: no CUDA device (torch.cuda.is_available() is False)"
  exit 0
fi
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
# the tests that skip without CUDA (bf16 autocast path vs CPU, gsplat vs our rasterizer)
"$PY" -m pytest -q -rs tests/test_mmvdm.py::test_cuda_bf16_autocast_matches_cpu \
  tests/test_gaussians.py::test_gsplat_backend_matches_ours_on_cuda
"$PY" -m benchmarks.gpu_check "$@"
