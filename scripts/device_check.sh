#!/usr/bin/env bash
# The CUDA checks, for a machine with a GPU (run from the repository root):
#   bash scripts/device_check.sh [OUT_DIR]
# 1. the CUDA-marked tests; 2. benchmarks/gpu.py; 3. the paper's MNIST reproduction at the
# paper's width 1000 on the GPU (scripts/reproduce_mnist5k.py); 4. the whole fast suite with a
# GPU present (every device="auto" path then takes CUDA). Python packages missing there can
# travel as wheels in .whl/ (installed into /tmp/site first). Logs and results go to OUT_DIR;
# the whole script stays within BUDGET_S seconds (default 560: the suite gets what is left).
set -u
OUT_DIR=${1:-${OUT:-out/device}}
mkdir -p "$OUT_DIR"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start)) s] $*"; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nproc
  $PY -c "import torch, numpy, cvxpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cvxpy', cvxpy.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT_DIR/env.txt"
stamp "cuda tests"
timeout 90 $PY -m pytest -q -m cuda -p no:cacheprovider -rs tests 2>&1 | tail -15 | tee "$OUT_DIR/cuda_tests.log"
stamp "gpu benchmark"
timeout 120 $PY benchmarks/gpu.py 2>&1 | tee "$OUT_DIR/gpu_bench.md"
stamp "reproduction (width 1000, CUDA)"
timeout 300 $PY scripts/reproduce_mnist5k.py --no-progress --run /tmp/mnist5k-w1000 \
  --out "$OUT_DIR/mnist5k_cuda" > "$OUT_DIR/reproduce.log" 2>&1
tail -45 "$OUT_DIR/reproduce.log"
if [ -d "$OUT_DIR/mnist5k_cuda" ]; then
  tar czf "$OUT_DIR/mnist5k_cuda.tgz" -C "$OUT_DIR" mnist5k_cuda && rm -rf "$OUT_DIR/mnist5k_cuda"
fi
left=$((${BUDGET_S:-560} - ($(date +%s) - start)))
stamp "full fast suite with a GPU present (${left} s left)"
[ "$left" -gt 30 ] && timeout "$left" $PY -m pytest -q -p no:cacheprovider -n 12 2>&1 | tail -40 > "$OUT_DIR/full_suite.log"
tail -12 "$OUT_DIR/full_suite.log"
stamp "done"
