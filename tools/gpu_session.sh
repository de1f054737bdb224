#!/usr/bin/env bash
# Runs on the GPU machine (device tool), from the repository root, with `.whl` carried:
#   bash tools/gpu_session.sh [build] [test] [bench NAME ...] [cmd "shell command"]
# Stages the carried wheels, builds the CUDA extension against the machine's own jax (no build
# isolation: its FFI headers then match the runtime), runs the GPU tests and benchmarks, and
# copies logs and results under $OUT. Stage the wheels first, here:
#   ../shared/tools/stage-gpu-wheels e3nn-jax ase matscipy   (+ cuequivariance wheels for bench)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  export CUTLASS_DIR=/tmp/site/cutlass_library/source
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
status=0
while [ $# -gt 0 ]; do
  case "$1" in
    build)
      t0=$(date +%s)
      JAXK_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install --no-build-isolation \
        --no-deps -e . -Cbuild-dir=build/gpu >"$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
      echo "build: $(( $(date +%s) - t0 )) s"
      python3 -c "import jax_gna, jax_mace; print(jax_gna.cuda_status()); print(jax_mace.cuda_status())"
      ;;
    test)
      python3 -m pytest -m gpu -q -x tests 2>&1 | tee "$OUT/gpu_tests.log" | tail -30
      [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
      ;;
    bench)
      shift
      python3 "bench/$1.py" --out bench/results 2>&1 | tee "$OUT/bench_$1.log" | tail -40
      [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
      cp bench/results/*.json "$OUT/" 2>/dev/null
      ;;
    cmd)
      shift
      bash -c "$1" 2>&1 | tee -a "$OUT/cmd.log" | tail -60
      [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
      ;;
  esac
  shift
done
exit $status
