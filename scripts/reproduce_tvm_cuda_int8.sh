#!/usr/bin/env bash
# Reproduce the 2019 tvm-cuda-int8 table on this machine, with the shipped tuning logs:
# six networks x batch 1 and 16, TVM int8 / TVM fp32 / peers, into results/<date>-<target key>-tvm_cuda_int8/
# (JSON records, table.md, table.csv, figure.png).
#   bash scripts/reproduce_tvm_cuda_int8.sh                      # everything, on the GPU if one is visible
#   bash scripts/reproduce_tvm_cuda_int8.sh --target llvm --batches 1 --models resnet50_v1,vgg19
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m harness suite configs/suites/tvm_cuda_int8.yaml "$@"
