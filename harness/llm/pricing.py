"""Dollar prices per token, from the model price table bundled with litellm, read offline.

litellm fetches its price map from GitHub at import time unless `LITELLM_LOCAL_MODEL_COST_MAP` is set; we never
import litellm for this: the JSON file it ships (`model_prices_and_context_window_backup.json`) is read directly.
Local engines cost nothing per token; a model served from a custom base URL (vLLM, llama.cpp server) or missing
from the table has no known price and is reported as unpriced, never as free.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

PRICE_TABLE_FILE = "model_prices_and_context_window_backup.json"
LOCAL_PROVIDERS = frozenset({"llamacpp", "hf", "vllm", "mock"})


@dataclass(frozen=True)
class Price:
    input_per_token: float
    output_per_token: float
    source: str
    """Where the price comes from: "local" or "litellm table: <key>"."""

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


FREE_LOCAL = Price(0.0, 0.0, "local")


def price_of(provider: str, model: str, base_url: str | None = None) -> Price | None:
    """The per-token price of `model` as served by `provider`; None when unknown."""
    if provider in LOCAL_PROVIDERS:
        return FREE_LOCAL
    if base_url is not None:
        return None
    table = _price_table()
    for key in _candidate_keys(model):
        entry = table.get(key)
        if isinstance(entry, dict) and "input_cost_per_token" in entry and "output_cost_per_token" in entry:
            return Price(
                float(entry["input_cost_per_token"]), float(entry["output_cost_per_token"]), f"litellm table: {key}"
            )
    return None


def _candidate_keys(model: str) -> list[str]:
    """`anthropic/claude-haiku-4-5` is listed as `claude-haiku-4-5`: try the name, then without its prefix."""
    keys = [model]
    prefix, slash, rest = model.partition("/")
    if slash and prefix and rest:
        keys.append(rest)
    return keys


@functools.cache
def _price_table() -> dict[str, object]:
    spec = importlib.util.find_spec("litellm")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / PRICE_TABLE_FILE
    if not path.exists():
        return {}
    table = json.loads(path.read_text(encoding="utf-8"))
    return table if isinstance(table, dict) else {}
