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
# The GNA TMA producer's boxes must land where the wgmma layouts read them (host-only check).
cutlass=${CUTLASS_DIR:-$(python3 -c "import cutlass_library; print(cutlass_library.source_path)")}
nvcc=$(grep -m1 '^CMAKE_CUDA_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2)
"${nvcc:-nvcc}" -std=c++17 --expt-relaxed-constexpr -Icpp -isystem "$cutlass/include" \
  tools/check_gna_tma_layout.cu -o "$build/check_gna_tma_layout"
"$build/check_gna_tma_layout"
# The GNA kernels' column masks: the accumulator layout they assume and their per-axis runs.
"${nvcc:-nvcc}" -std=c++17 --expt-relaxed-constexpr -Icpp -isystem "$cutlass/include" \
  tools/check_gna_column_masks.cu -o "$build/check_gna_column_masks"
"$build/check_gna_column_masks"
