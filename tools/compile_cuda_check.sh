#!/usr/bin/env bash
# Compiles every CUDA kernel library for sm_90a without installing anything, so GPU code cannot
# break unseen on machines that have nvcc but no GPU (CI). Usage: bash tools/compile_cuda_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-deps nvidia-cutlass==4.2.0.0 nanobind
command -v ninja >/dev/null 2>&1 || python3 -m pip install -q ninja
command -v cmake >/dev/null 2>&1 || python3 -m pip install -q cmake
build=build-cuda-check
cmake -S . -B "$build" -G Ninja -DJAXK_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$(command -v python3)" -DCMAKE_CUDA_ARCHITECTURES=90a
cmake --build "$build" -j "${JOBS:-2}"
echo "CUDA sources compiled for sm_90a"
