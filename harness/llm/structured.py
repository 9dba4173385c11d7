"""Structured outputs: a JSON schema a call's reply must follow, and how each backend honours it.

A `JSONSchema` is built from a pydantic model (optionally patched, e.g. to restrict an id field to the ids a
prompt showed) and travels inside `GenerateConfig`, so it enters the cache key. Backends enforce it where they
can and say how in `BackendInfo.structured_outputs`:

- `enforced`: the decoder cannot leave the schema (llama.cpp's schema grammar; an OpenAI-compatible server
  given `response_format` of type `json_schema`, strict).
- `requested`: the schema is passed on to a provider that may or may not honour it (litellm, for providers it
  does not know to support response schemas).
- `validated`: the scripted mock checks each reply against the schema and fails the call when it does not fit.
- `unconstrained`: the backend generates freely; the prompt asks for JSON and the parsers stay lenient.

The schemas use only what every enforcing engine accepts (objects with required properties and no extra ones,
arrays with `minItems`/`maxItems`, strings with `maxLength`, `enum`, `anyOf`), the subset `validate` checks.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

StructuredOutputs = Literal["enforced", "requested", "validated", "unconstrained"]

SchemaPatch = Callable[[dict[str, Any]], None]


def _inline_refs(node: Any, definitions: dict[str, Any]) -> Any:
    """`$ref`s to `$defs` replaced by the definitions themselves (grammar converters handle refs unevenly)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {key: _inline_refs(value, definitions) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(value, definitions) for value in node]
    return node


_ANNOTATIONS = frozenset({"title", "default", "description"})


def _strict(node: Any) -> Any:
    """Every object closed (`additionalProperties: false`) with all its properties required, as OpenAI's strict
    mode demands; titles and defaults dropped (noise to a grammar, rejected by some servers)."""
    if isinstance(node, dict):
        out = {key: _strict(value) for key, value in node.items() if key not in _ANNOTATIONS}
        if "properties" in node:  # property names are data, not annotations: keep every one
            out["properties"] = {name: _strict(sub) for name, sub in node["properties"].items()}
        if out.get("type") == "object" and "properties" in out:
            out["required"] = list(out["properties"])
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(value) for value in node]
    return node


@functools.cache
def _strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Built once per model: pydantic's schema generation costs about a millisecond, per call too much."""
    raw = model.model_json_schema()
    return dict(_strict(_inline_refs(raw, raw.get("$defs", {}))))


@dataclass(frozen=True)
class JSONSchema:
    """A named JSON schema, held as compact JSON text (in the model's field order, which decoders follow) so a
    `GenerateConfig` stays hashable and its cache key stable."""

    name: str
    text: str

    @classmethod
    def of(cls, model: type[BaseModel], name: str | None = None, patch: SchemaPatch | None = None) -> JSONSchema:
        """The strict schema of a pydantic model; `patch` may edit the schema dict (after `$ref`s are inlined)."""
        schema = copy.deepcopy(_strict_schema(model))
        if patch is not None:
            patch(schema)
        # Not sorted: grammars and strict decoders write the properties in the order the schema lists them.
        return cls(name=name or model.__name__, text=json.dumps(schema, separators=(",", ":")))

    @property
    def schema(self) -> dict[str, Any]:
        return dict(json.loads(self.text))

    def openai_response_format(self) -> dict[str, Any]:
        """The `response_format` of OpenAI's chat-completions API (also vLLM's, llama.cpp's and litellm's)."""
        return {"type": "json_schema", "json_schema": {"name": self.name, "schema": self.schema, "strict": True}}

    def errors(self, reply: str) -> list[str]:
        """Why `reply` does not fit the schema (empty when it does)."""
        try:
            value = json.loads(reply)
        except json.JSONDecodeError as error:
            return [f"not JSON: {error}"]
        return validate(value, self.schema)


def validate(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Errors of `value` against the schema subset the harness builds (anyOf, type, enum, properties, required,
    additionalProperties, items, minItems, maxItems, maxLength)."""
    if "anyOf" in schema:
        branches = [validate(value, branch, where) for branch in schema["anyOf"]]
        return [] if any(not errors for errors in branches) else min(branches, key=len)
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    kind = schema.get("type")
    checks: dict[str, Callable[[Any], bool]] = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    if isinstance(kind, str) and not checks[kind](value):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    errors: list[str] = []
    if kind == "object":
        properties = schema.get("properties", {})
        errors += [f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"{where}: unexpected {key!r}" for key in value if key not in properties]
        for key, sub in properties.items():
            if key in value:
                errors += validate(value[key], sub, f"{where}.{key}")
    if kind == "string" and len(value) > schema.get("maxLength", len(value)):
        errors.append(f"{where}: longer than {schema['maxLength']} characters")
    if kind == "array":
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: more than {schema['maxItems']} items")
        for index, item in enumerate(value):
            errors += validate(item, schema.get("items", {}), f"{where}[{index}]")
    return errors


def patched(schema: dict[str, Any], path: tuple[str, ...], **fields: Any) -> None:
    """Set `fields` on the sub-schema at `path`: property names, and `[]` to step into an array's items."""
    node = schema
    for step in path:
        node = node["items"] if step == "[]" else node["properties"][step]
    node.update(copy.deepcopy(fields))
