#!/usr/bin/env bash
# The engine benchmark at full size with random weights, in one command, on a bare CUDA machine that has
# PyTorch but no internet. The other Python packages travel as wheels in .whl/ (made by `make gpu-wheels`
# on a machine that reaches the package registry).
#   benchmarks/gpu.sh [more bench_engine.py flags]      results in $OUT (default benchmarks/results)
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/fluxserve-site .whl/*.whl
    export PYTHONPATH=/tmp/fluxserve-site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import torch, diffusers; assert torch.cuda.is_available(), 'no CUDA device visible'"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONUNBUFFERED=1 python3 benchmarks/bench_engine.py --random-full-size --device cuda \
    --sizes 1024,512 --batches 1,4 --out "${OUT:-benchmarks/results}" "$@"
