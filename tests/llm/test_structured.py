"""Structured outputs: strict schemas from pydantic models, the subset validator, the cache key and the mock."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel

from harness.llm import GenerateConfig, LLMError, Model
from harness.llm.cache import request_document
from harness.llm.providers.mock import MockBackend
from harness.llm.structured import JSONSchema, patched, validate


class Inner(BaseModel):
    note: str = "default"
    kind: Literal["a", "b"]


class Outer(BaseModel):
    items: list[Inner]
    title: str


def test_schema_of_a_model_is_strict_inlined_and_keeps_field_order():
    schema = JSONSchema.of(Outer).schema

    assert "$defs" not in json.dumps(schema) and "$ref" not in json.dumps(schema)
    assert schema["required"] == ["items", "title"] and schema["additionalProperties"] is False
    inner = schema["properties"]["items"]["items"]
    assert list(inner["properties"]) == ["note", "kind"], "the model's order: the order a grammar writes them in"
    assert inner["required"] == ["note", "kind"], "strict mode: optional fields become required"
    assert JSONSchema.of(Outer).text.index('"note"') < JSONSchema.of(Outer).text.index('"kind"')
    assert inner["properties"]["kind"]["enum"] == ["a", "b"]
    assert "default" not in inner["properties"]["note"] and "title" not in inner


def test_patch_restricts_a_nested_field():
    def restrict(schema: dict) -> None:
        patched(schema, ("items",), minItems=2)
        patched(schema, ("items", "[]", "note"), enum=["x"])

    schema = JSONSchema.of(Outer, patch=restrict)
    assert schema.errors('{"items": [{"kind": "a", "note": "x"}], "title": "t"}') == ["$.items: fewer than 2 items"]
    assert schema.errors('{"items": [{"kind": "a", "note": "x"}, {"kind": "b", "note": "x"}], "title": "t"}') == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"items": [], "title": "t"}, []),
        ({"items": [{"note": "", "kind": "c"}], "title": "t"}, ["$.items[0].kind: 'c' is not one of ['a', 'b']"]),
        ({"items": [], "title": 3}, ["$.title: expected string, got int"]),
        ({"items": []}, ["$: missing 'title'"]),
        ({"items": [], "title": "t", "extra": 1}, ["$: unexpected 'extra'"]),
        ([], ["$: expected object, got list"]),
    ],
)
def test_validator_names_where_and_what(value: object, expected: list[str]):
    assert validate(value, JSONSchema.of(Outer).schema) == expected


def test_not_json_is_an_error():
    assert JSONSchema.of(Outer).errors("the answer is a")[0].startswith("not JSON")


def test_openai_response_format_is_a_strict_json_schema():
    schema = JSONSchema.of(Outer, name="outer")
    options = GenerateConfig(json_schema=schema).sampling_options()
    assert options["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "outer", "schema": schema.schema, "strict": True},
    }
    assert GenerateConfig(json_mode=True).sampling_options()["response_format"] == {"type": "json_object"}


def test_the_schema_is_part_of_the_cache_key():
    identity = {"provider": "mock", "model": "m", "base_url": None}
    messages = [{"role": "user", "content": "hi"}]
    plain = request_document(identity, messages, GenerateConfig())  # type: ignore[arg-type]
    one = request_document(identity, messages, GenerateConfig(json_schema=JSONSchema.of(Outer)))  # type: ignore[arg-type]
    other = JSONSchema.of(Outer, patch=lambda s: patched(s, ("items",), minItems=1))
    two = request_document(identity, messages, GenerateConfig(json_schema=other))  # type: ignore[arg-type]
    assert len({plain, one, two}) == 3


async def test_the_mock_fails_a_scripted_reply_that_does_not_fit_and_can_be_told_not_to_check():
    config = GenerateConfig(json_schema=JSONSchema.of(Outer, name="outer"))
    checking = Model(MockBackend(replies=['{"items": []}']), spec="mock", max_retries=0)
    with pytest.raises(LLMError, match="does not fit schema 'outer'"):
        await checking.generate([{"role": "user", "content": "x"}], config)

    lenient = Model(MockBackend(replies=["not json"], validate_schema=False), spec="mock", max_retries=0)
    assert (await lenient.generate([{"role": "user", "content": "x"}], config)).text == "not json"
    assert checking.info.structured_outputs == "validated" and lenient.info.structured_outputs == "unconstrained"


async def test_a_cached_schema_reply_is_not_served_to_a_backend_that_enforces_differently(tmp_path):
    from harness.llm.cache import CallCache

    cache = CallCache(tmp_path / "calls.sqlite")
    config = GenerateConfig(json_schema=JSONSchema.of(Outer, name="outer"))
    question = [{"role": "user", "content": "x"}]
    free = Model(MockBackend(replies=["not json"], validate_schema=False), spec="mock", cache=cache)
    assert (await free.generate(question, config)).text == "not json"  # type: ignore[arg-type]
    fitting = '{"items": [], "title": "t"}'
    enforcing = Model(MockBackend(replies=[fitting]), spec="mock", cache=cache)
    reply = await enforcing.generate(question, config)  # type: ignore[arg-type]
    assert (reply.text, reply.cached) == (fitting, False)
