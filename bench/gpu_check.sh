#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) on a lent GPU machine that has torch, transformers, peft and accelerate but
# no TRL, datasets or network. Prepare on a machine with PyPI first (bench/gpu_check_prepare.sh --cpu-figures),
# carry bench/out along, then run this one command; it stays within GPU_CHECK_TIMEOUT seconds (default 450):
#   bash bench/gpu_check.sh
# The wheels go into a private folder (nothing is installed into the machine's site-packages); the result is
# $OUT/gpu_check_cuda.json (or bench/out/), printed beside bench/out/gpu_check_cpu.json where that exists.
# Without a CUDA device it prints "skipped: no CUDA device (...)" and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=bench/out/gpu_wheels
if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "no wheels in $wheels: run bench/gpu_check_prepare.sh on a machine with PyPI and carry bench/out" >&2
    exit 2
fi
site="${TMPDIR:-/tmp}/gpu_check_site"
python -m pip install --quiet --no-index --no-deps --target "$site" "$wheels"/*.whl
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
compare=()
[[ -f bench/out/gpu_check_cpu.json ]] && compare=(--compare bench/out/gpu_check_cpu.json)
timeout "${GPU_CHECK_TIMEOUT:-450}" python bench/gpu_check.py --device cuda "${compare[@]}" "$@"
