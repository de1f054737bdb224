set -u
export PYTHONPATH=/tmp/site
t0=$(date +%s)
timeout 330 python3 bench/bench_gna.py --out $OUT 2>&1 | grep -v Warning | tail -12
echo "bench_gna: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
timeout 120 python3 bench/bench_symcon_train.py --out $OUT 2>&1 | tail -8
echo "train: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
timeout $(( 560 - $(date +%s) + T_START )) python3 -m pytest -m gpu -q -p no:cacheprovider tests --ignore tests/test_gna_cuda.py 2>&1 | tail -8 | tee $OUT/other_gpu_tests.txt
echo "other tests: $(( $(date +%s) - t0 )) s"
