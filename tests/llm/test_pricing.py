"""Dollar prices from litellm's bundled price table, read offline, and their way into usage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.llm import GenerateConfig, Model, usage_of
from harness.llm.cache import CallCache
from harness.llm.pricing import FREE_LOCAL, PRICE_TABLE_FILE, price_of
from harness.llm.providers.mock import MockBackend
from harness.types import Usage

pytest.importorskip("litellm", reason="the price table ships with litellm (extra [litellm])")


def _table_entry(key: str) -> dict[str, float]:
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.submodule_search_locations
    table = json.loads((Path(next(iter(spec.submodule_search_locations))) / PRICE_TABLE_FILE).read_text())
    return table[key]


def test_openai_model_is_priced_from_the_table() -> None:
    price = price_of("openai", "gpt-4o-mini")
    entry = _table_entry("gpt-4o-mini")
    assert price is not None
    assert (price.input_per_token, price.output_per_token) == (
        entry["input_cost_per_token"],
        entry["output_cost_per_token"],
    )
    # 1,000 prompt tokens and 100 completion tokens, by hand from the two per-token prices.
    expected = 1000 * entry["input_cost_per_token"] + 100 * entry["output_cost_per_token"]
    assert price.cost(1000, 100) == pytest.approx(expected)


def test_provider_prefix_is_dropped_when_the_table_lists_the_bare_name() -> None:
    assert price_of("litellm", "anthropic/claude-haiku-4-5") == price_of("litellm", "claude-haiku-4-5")
    assert price_of("litellm", "anthropic/claude-haiku-4-5") is not None


def test_unknown_and_self_hosted_models_have_no_price_and_local_engines_are_free() -> None:
    assert price_of("openai", "no-such-model-xyz") is None
    # The same name served by one's own vLLM server is not OpenAI's product: its price is unknown.
    assert price_of("openai", "gpt-4o-mini", "http://127.0.0.1:8000/v1") is None
    assert price_of("llamacpp", "smollm2-135m") == FREE_LOCAL
    assert price_of("mock", "anything") == FREE_LOCAL


class PricedMock(MockBackend):
    """A mock that claims to be gpt-4o-mini on OpenAI, to exercise pricing without a network."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.info.provider, self.info.model = "openai", "gpt-4o-mini"


async def test_usage_sums_cost_and_counts_unpriced_calls(tmp_path: Path) -> None:
    model = Model(PricedMock(replies=["Paris"]), spec="openai:gpt-4o-mini", cache=CallCache(tmp_path / "c.sqlite"))
    first = await model.generate([{"role": "user", "content": "Capital of France?"}], GenerateConfig())
    hit = await model.generate([{"role": "user", "content": "Capital of France?"}], GenerateConfig())
    assert hit.cached
    assert model.price is not None
    one_call = model.price.cost(first.prompt_tokens, first.completion_tokens)
    assert first.cost_usd == hit.cost_usd == pytest.approx(one_call) != 0
    unknown = Model(MockBackend(model="x"), spec="mock")
    unknown.__dict__["price"] = None  # as for a self-hosted server
    unpriced = await unknown.generate([{"role": "user", "content": "hi"}], GenerateConfig())
    total = Usage()
    for completion in (first, hit, unpriced):
        total.add(usage_of(completion))
    assert total.cost_usd == pytest.approx(2 * one_call)
    assert (total.calls, total.unpriced_calls) == (3, 1)
