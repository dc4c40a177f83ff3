#!/usr/bin/env bash
# One device check for a lent accelerator machine, sized to its 15-minute budget. Runs from the
# repository root on an image that already has jax, optax, chex and pytest (no install):
#   bash benchmarks/gpu_check.sh            # writes logs and JSON under $OUT (or /tmp/sghmc_gpu)
# 1. the tests that depend on how XLA compiles for the device: face identity and SGNHT = SGHMC
#    (bit for bit), the noise generator's exactness and layout, the per-platform generator
#    choice, dtypes (test_diagnostics is skipped: it needs arviz, a test extra the image lacks);
# 2. the quick benchmarks: update only (10M and 200 leaves, with the every-leaf-fused path whose
#    compile time bounds `_noise._FUSED_ON_ACCELERATORS`) and the training steps
#    (benchmarks/README.md, "GPU figures"). About 6 minutes on an H200.
set -uo pipefail
out=${OUT:-/tmp/sghmc_gpu}
mkdir -p "$out"
export PYTHONPATH=.
python3 -c "import jax, optax; print(jax.__version__, optax.__version__, jax.devices())" 2>&1 | tee "$out/devices.txt"
timeout 150 python3 -m pytest -q -m "not slow" -p no:cacheprovider --ignore=tests/test_diagnostics.py \
    -k "bit_identical or bit_for_bit or faces or noise or dtype or accelerators" tests/ 2>&1 | tail -40 | tee "$out/tests.txt"
timeout 150 python3 benchmarks/update_only.py --quick --json "$out/update_only.json" 2>&1 | tee "$out/update_only.txt"
timeout 150 python3 benchmarks/training.py --quick --no-posteriors --json "$out/training.json" 2>&1 | tee "$out/training.txt"
