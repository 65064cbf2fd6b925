#!/usr/bin/env bash
# Everything GPU-specific in one run, for a machine with a CUDA GPU: the CUDA tests (learner update
# equal to the CPU's, bf16 autocast, pinned host-to-device copies, NCCL replicas when there are two
# GPUs), then learner samples/s per model and batch size in bf16 and fp32. Prints one table per run
# of bench_learner; the figures go to docs/performance.md with the GPU's name.
#
#     bash scripts/gpu_check.sh            # PYTHON=... to pick the interpreter (default: python)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py
"$python" scripts/bench_learner.py --device cuda --models crop nethack e3b impala_cnn --batches 16 64 256
"$python" scripts/bench_learner.py --device cuda --precision fp32 --models crop nethack --batches 64 256
