#!/usr/bin/env bash
# Everything GPU-only in one call, under 8 minutes on one GPU: every gpu-marked test, then
# the GPU figures (the meter on known CUDA sleeps and allocations, bf16, fp16 with the
# scaler, torch.compile default and reduce-overhead, resnet50 and gpt_small MFU, FSDP2 under
# torchrun, bench-inference), judged in one table. Exit 1 when a figure does not hold;
# without CUDA, one "no GPU: nothing to check" line and exit 0.
#
#   scripts/gpu-check.sh [--output DIR]          runs and figures.json in DIR (runs/gpu-check)
#   scripts/gpu-check.sh --judge DIR/figures.json   the table of a recorded run again
#
# PYTHON picks the interpreter (default: the repository's .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m scripts.gpu_check "$@"
