"""Model specs: parsing, building backends through the registry, and the "did you mean" error."""

from __future__ import annotations

import pytest

from harness.llm import Model
from harness.llm.build import build_backend, build_model
from harness.llm.providers.mock import MockBackend
from harness.llm.spec import BackendSpec, parse_spec
from harness.registry import UnknownNameError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("openai:gpt-4o-mini", BackendSpec("openai", "gpt-4o-mini")),
        ("openai:smollm2@http://127.0.0.1:8000/v1", BackendSpec("openai", "smollm2", "http://127.0.0.1:8000/v1")),
        ("openai:m@https://api.example.com/v1", BackendSpec("openai", "m", "https://api.example.com/v1")),
        ("litellm:anthropic/claude-3-5-haiku", BackendSpec("litellm", "anthropic/claude-3-5-haiku")),
        (
            "litellm:openai/smollm2@http://localhost:9/v1",
            BackendSpec("litellm", "openai/smollm2", "http://localhost:9/v1"),
        ),
        ("llamacpp", BackendSpec("llamacpp", None)),
        ("llamacpp:smollm2-135m", BackendSpec("llamacpp", "smollm2-135m")),
        ("llamacpp:/models/qwen.gguf", BackendSpec("llamacpp", "/models/qwen.gguf")),
        ("  mock  ", BackendSpec("mock", None)),
        ("openai:team@model", BackendSpec("openai", "team@model")),
    ],
)
def test_parse_spec_forms(text: str, expected: BackendSpec) -> None:
    assert parse_spec(text) == expected


@pytest.mark.parametrize("text", ["openai:gpt-4o-mini", "openai:smollm2@http://127.0.0.1:8000/v1", "llamacpp"])
def test_spec_round_trips(text: str) -> None:
    assert str(parse_spec(text)) == text


def test_empty_spec_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty model spec"):
        parse_spec("   ")


def test_unknown_provider_suggests_the_close_name() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'openai'"):
        build_backend("opnai:gpt-4o-mini")


def test_build_backend_passes_model_and_kwargs() -> None:
    backend = build_backend("mock:scripted", replies=["hello"])
    assert isinstance(backend, MockBackend)
    assert backend.info.model == "scripted"
    assert backend.info.base_url is None


def test_build_backend_uses_the_provider_default_model() -> None:
    assert build_backend("mock").info.model == "mock"


async def test_build_model_wires_backend_and_settings() -> None:
    model = build_model("mock:m", max_retries=5, max_concurrency=2, backoff_s=0.0, default="Paris")
    assert isinstance(model, Model)
    assert (model.spec, model.max_retries, model.backoff_s, model.cache) == ("mock:m", 5, 0.0, None)
    completion = await model.generate([{"role": "user", "content": "Capital of France?"}])
    assert completion.text == "Paris"
