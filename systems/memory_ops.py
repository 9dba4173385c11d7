"""The fact-extraction and memory-update (Memory Manager) steps: prompts, parsers and the calls that join them.

This is the one implementation shared by `mem0`, `memr1` and the trainers, so an RL rollout sees exactly the
prompt the system sends and is judged by exactly the parser the system applies.

Contracts (modelled on Mem0's two-phase pipeline and Memory-R1's Memory Manager; the wording is ours):
- Extraction: one message pair, the session date and a target speaker in; `{"facts": ["...", ...]}` out,
  facts about that speaker only, relative dates resolved against the session date.
- Update: new fact(s) and the related memories, listed under small integer ids ("0", "1", ...) so the model
  cannot name a real id it never saw; out comes `{"memory": [{"id", "text", "event", "old_memory"}]}` with
  event ADD / UPDATE / DELETE / NONE (NOOP is accepted as NONE). The systems call it once per fact, each fact
  with its own retrieval of related memories (see `systems.mem0`).
- The system texts are constants (the speaker, facts and memories go in the user message) so that local
  engines reuse the cached prompt prefix from call to call.
- Anything malformed (invalid JSON, an unknown id, an unknown event, a missing text) is recorded as an
  invalid reason and becomes a NOOP; it never raises.
- Both replies have JSON schemas (`extraction_schema`, `manager_schema`): backends that can enforce one
  (llama.cpp's grammar, servers' strict `json_schema`) cannot write anything else, and the manager's ids are
  restricted to the ids shown plus "new". The parsers stay lenient for backends that cannot constrain.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from harness.llm import GenerateConfig, Message, Model, usage_of
from harness.llm.structured import JSONSchema, patched
from harness.types import MemoryItem, Turn, Usage
from systems.memory_bank import Operation, OpEvent

__all__ = [
    "EXTRACTION_CONFIG",
    "MANAGER_CONFIG",
    "ExtractedFacts",
    "ExtractionCall",
    "ManagerCall",
    "ManagerDecision",
    "MemoryManager",
    "Operation",
    "build_extraction_messages",
    "build_manager_messages",
    "extract_facts",
    "extraction_config",
    "extraction_schema",
    "load_json_reply",
    "manager_config",
    "manager_schema",
    "parse_extraction_reply",
    "parse_manager_reply",
]

EXTRACTION_CONFIG = GenerateConfig(max_tokens=256, temperature=0.0, json_mode=True)
MANAGER_CONFIG = GenerateConfig(max_tokens=256, temperature=0.0, json_mode=True)

EXTRACTION_INSTRUCTIONS = """\
You keep notes about the people in a conversation. From a snippet of it, write down the facts worth \
remembering about the person you are asked about: events in their life, plans, activities, preferences, \
opinions, relationships, family, work, places, possessions, health and dates.
Rules:
- Only facts about that person, whether they said it or the other person did.
- One short sentence per fact, naming the person.
- Replace relative times ("yesterday", "last week", "next month") with absolute dates, counted from the \
session date.
- Skip greetings, small talk and questions that carry no information.
Reply with a JSON object only: {"facts": [...]}, a list of strings; {"facts": []} if there is nothing \
worth remembering."""
# No worked example: measured on Qwen2.5-Coder-0.5B over 15 real LoCoMo and LongMemEval pairs, an example in the
# prompt was copied into the facts of 3 calls (0 without it) and 9 of 15 facts drew on the snippet (13 of 16).

MANAGER_INSTRUCTIONS = """\
You manage a memory bank. You get new facts and the existing memories most related to them, each with an \
id. For every new fact choose one operation:
- ADD: the fact is new information. Add it as a new memory.
- UPDATE: the fact is about the same thing as an existing memory and adds to it or changes it. Rewrite \
that memory to hold both (one short sentence); give its id, the new text and the old text.
- DELETE: the fact shows that an existing memory is no longer true. Give the id of that memory.
- NONE: the fact is already in the memories, or not worth keeping. Change nothing.
Use only ids from the list of existing memories. Reply with a JSON object only, one operation per new fact, \
in this form:
{"memory": [{"event": "ADD|UPDATE|DELETE|NONE", "id": "<id, or new for ADD>", "text": "<memory text>"}]}
Examples:
- Existing memories [], new facts ["Ann adopted a cat"] -> {"memory": [{"event": "ADD", "id": "new", "text": \
"Ann adopted a cat"}]}
- Existing memories [{"id": "0", "text": "Ann likes tea"}], new facts ["Ann now prefers coffee to tea"] -> \
{"memory": [{"event": "UPDATE", "id": "0", "text": "Ann prefers coffee to tea"}]}
- Existing memories [{"id": "0", "text": "Ann lives in Oslo"}], new facts ["Ann lives in Oslo"] -> \
{"memory": [{"event": "NONE", "id": "0", "text": "Ann lives in Oslo"}]}"""


class _FactsReply(BaseModel):
    facts: list[str]


class _OperationReply(BaseModel):
    event: Literal["ADD", "UPDATE", "DELETE", "NONE"]
    id: str
    text: str


class _ManagerReply(BaseModel):
    memory: list[_OperationReply]


def extraction_schema(min_facts: int = 0, max_facts: int | None = None, max_chars: int | None = None) -> JSONSchema:
    """`{"facts": [str, ...]}` with between `min_facts` and `max_facts` facts of at most `max_chars` characters.
    A small model allowed an empty list tends to always choose it; `min_facts=1` makes it write something
    (often the turn itself). The caps stop a small model that repeats itself before the token limit cuts the
    JSON off."""
    bounds: dict[str, int] = {"minItems": min_facts} if min_facts else {}
    if max_facts is not None:
        bounds["maxItems"] = max_facts

    def restrict(schema: dict[str, Any]) -> None:
        patched(schema, ("facts",), **bounds)
        if max_chars is not None:
            patched(schema, ("facts", "[]"), maxLength=max_chars)

    return JSONSchema.of(_FactsReply, name="facts", patch=restrict)


def extraction_config(min_facts: int = 0, max_facts: int | None = None, max_chars: int | None = None) -> GenerateConfig:
    """`EXTRACTION_CONFIG` with the schema, and room for the longest reply the schema allows (about 4 characters
    a token) when it is capped, so that no valid reply is cut off."""
    schema = extraction_schema(min_facts, max_facts, max_chars)
    tokens = EXTRACTION_CONFIG.max_tokens
    if max_facts is not None and max_chars is not None:
        tokens = max(tokens, 16 + max_facts * (max_chars // 4 + 4))
    return dataclasses.replace(EXTRACTION_CONFIG, json_schema=schema, max_tokens=tokens)


MANAGER_TEXT_CHARS = 200
"""The longest memory text the manager schema allows: a 0.5B model otherwise repeated a phrase until the token
limit cut the JSON off (1 of 76 real replies)."""


def manager_schema(shown_ids: Sequence[str], operations: int) -> JSONSchema:
    """`{"memory": [...]}` with exactly `operations` operations (one per new fact): an ADD names the id "new";
    UPDATE, DELETE and NONE name one of the ids shown in the prompt (NONE may say "new" when none was shown).
    Measured without the split: 3 of 76 real Qwen2.5-Coder-0.5B decisions were an UPDATE of "new"."""

    def restrict(schema: dict[str, Any]) -> None:
        patched(schema, ("memory",), minItems=operations, maxItems=operations)
        operation = schema["properties"]["memory"]["items"]
        operation["properties"]["text"]["maxLength"] = MANAGER_TEXT_CHARS
        add = copy.deepcopy(operation)
        add["properties"].update(event={"type": "string", "enum": ["ADD"]}, id={"type": "string", "enum": ["new"]})
        change = copy.deepcopy(operation)
        events, ids = (["UPDATE", "DELETE", "NONE"], list(shown_ids)) if shown_ids else (["NONE"], ["new"])
        change["properties"].update(event={"type": "string", "enum": events}, id={"type": "string", "enum": ids})
        schema["properties"]["memory"]["items"] = {"anyOf": [add, change]}

    return JSONSchema.of(_ManagerReply, name="memory_operations", patch=restrict)


def manager_config(id_map: Mapping[str, str], operations: int, base: GenerateConfig | None = None) -> GenerateConfig:
    """`base` (default `MANAGER_CONFIG`) with the schema of a decision on `operations` facts over `id_map`, and
    room in `max_tokens` for the longest reply it allows."""
    config = base or MANAGER_CONFIG
    tokens = max(config.max_tokens, 16 + operations * (MANAGER_TEXT_CHARS // 4 + 24))
    return dataclasses.replace(config, json_schema=manager_schema(list(id_map), operations), max_tokens=tokens)


def build_extraction_messages(turns: Sequence[Turn], speaker: str, date: str | None) -> list[Message]:
    """Messages asking for the facts about `speaker` in `turns` (one message pair) said on `date`."""
    transcript = "\n".join(f"{t.speaker}: {t.text}" for t in turns)
    when = f"Session date: {date}\n" if date else ""
    return [
        {"role": "system", "content": EXTRACTION_INSTRUCTIONS},
        {"role": "user", "content": f"{when}Conversation:\n{transcript}\n\nFacts about {speaker} (JSON):"},
    ]


def build_manager_messages(facts: Sequence[str], related: Sequence[MemoryItem]) -> tuple[list[Message], dict[str, str]]:
    """Messages for the update decision, and the map from the small ids shown ("0", "1", ...) to bank ids."""
    id_map = {str(number): item.id for number, item in enumerate(related)}
    listing = json.dumps([{"id": str(n), "text": item.text} for n, item in enumerate(related)], ensure_ascii=False)
    user = (
        f"Existing memories:\n{listing}\n\nNew facts:\n{json.dumps(list(facts), ensure_ascii=False)}\n\n"
        "Reply with the JSON object."
    )
    return [{"role": "system", "content": MANAGER_INSTRUCTIONS}, {"role": "user", "content": user}], id_map


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def load_json_reply(text: str) -> object:
    """The JSON value in a model reply: the whole reply, a ```json fenced block, or the outermost {...} / [...]
    span of surrounding prose. Raises ValueError when none parses."""
    candidates = [text.strip(), *(m.strip() for m in _FENCE.findall(text))]
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise ValueError("no JSON value in the reply")


class ExtractedFacts(BaseModel):
    facts: list[str] = Field(default_factory=list)
    invalid: str | None = None
    """Why the reply was unusable (then `facts` is empty), else None."""


def parse_extraction_reply(text: str) -> ExtractedFacts:
    """`{"facts": [str, ...]}` (a bare list is accepted too); facts are stripped and de-duplicated."""
    try:
        data = load_json_reply(text)
    except ValueError as error:
        return ExtractedFacts(invalid=f"invalid JSON: {error}")
    raw = data.get("facts") if isinstance(data, dict) else data
    if not isinstance(raw, list):
        return ExtractedFacts(invalid="no 'facts' list")
    if not all(isinstance(fact, str) for fact in raw):
        return ExtractedFacts(invalid="a fact is not a string")
    return ExtractedFacts(facts=list(dict.fromkeys(f.strip() for f in raw if f.strip())))


class ManagerDecision(BaseModel):
    """A parsed manager reply: never empty (nothing to do is one NOOP), invalid parts turned into NOOPs."""

    operations: list[Operation]
    invalid: list[str] = Field(default_factory=list)
    """One reason per malformed part of the reply; empty when the reply was well formed."""


_EVENTS: dict[str, OpEvent] = {"ADD": "ADD", "UPDATE": "UPDATE", "DELETE": "DELETE", "NONE": "NOOP", "NOOP": "NOOP"}
_NOOP = Operation(event="NOOP")


def _text_of(entry: Mapping[str, object], key: str) -> str:
    value = entry.get(key)
    return value.strip() if isinstance(value, str) else ""


def _parse_operation(entry: object, id_map: Mapping[str, str]) -> Operation | str:
    """One entry of the `memory` list as an Operation with a bank id, or the reason it is invalid."""
    if not isinstance(entry, dict):
        return "an operation is not a JSON object"
    event = _EVENTS.get(str(entry.get("event", "")).strip().upper())
    if event is None:
        return f"unknown event {entry.get('event')!r}"
    text = _text_of(entry, "text")
    if event == "NOOP":
        return _NOOP
    if event == "ADD":
        return Operation(event="ADD", text=text) if text else "ADD without text"
    shown_id = str(entry.get("id", "")).strip()
    if shown_id not in id_map:
        return f"{event} of unknown id {shown_id!r}"
    if event == "UPDATE" and not text:
        return "UPDATE without text"
    old = _text_of(entry, "old_memory") or None
    return Operation(event=event, id=id_map[shown_id], text=text, old_memory=old)


def parse_manager_reply(text: str, id_map: Mapping[str, str]) -> ManagerDecision:
    """Operations with bank ids from a manager reply; `id_map` maps the ids shown in the prompt to bank ids.

    Accepts `{"memory": [...]}`, a bare list of operations, or one operation object; NONE and NOOP are the
    same; ids may be strings or numbers; the id of an ADD is ignored (the bank assigns one).
    """
    try:
        data = load_json_reply(text)
    except ValueError as error:
        return ManagerDecision(operations=[_NOOP], invalid=[f"invalid JSON: {error}"])
    if isinstance(data, dict) and "event" in data:
        entries: object = [data]
    else:
        entries = data.get("memory") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        return ManagerDecision(operations=[_NOOP], invalid=["no 'memory' list of operations"])
    operations: list[Operation] = []
    invalid: list[str] = []
    for entry in entries:
        parsed = _parse_operation(entry, id_map)
        if isinstance(parsed, str):
            invalid.append(parsed)
            parsed = _NOOP
        operations.append(parsed)
    return ManagerDecision(operations=operations or [_NOOP], invalid=invalid)


@dataclass(frozen=True)
class ExtractionCall:
    """One extraction with the raw reply and what it cost."""

    extracted: ExtractedFacts
    reply: str
    usage: Usage


async def extract_facts(
    model: Model,
    turns: Sequence[Turn],
    speaker: str,
    date: str | None,
    config: GenerateConfig = EXTRACTION_CONFIG,
    *,
    background: bool = False,
) -> ExtractionCall:
    """One extraction call (LLMCallFailed propagates: a failed call is not an empty extraction); `background`
    for calls made ahead of need, which yield their slot to calls on the critical path (`Model.generate`)."""
    completion = await model.generate(build_extraction_messages(turns, speaker, date), config, background=background)
    return ExtractionCall(parse_extraction_reply(completion.text), completion.text, usage_of(completion))


@dataclass(frozen=True)
class ManagerCall:
    """One manager decision with what it was shown and what it cost."""

    decision: ManagerDecision
    reply: str
    id_map: dict[str, str]
    usage: Usage


class MemoryManager:
    """The update step: new fact(s) + related memories -> operations. Mem0 runs it with the `memory` role,
    Memory-R1 with its own (trained) `manager` role; the contract is the same."""

    def __init__(self, model: Model, config: GenerateConfig = MANAGER_CONFIG, *, constrained: bool = True) -> None:
        self.model = model
        self.config = config
        self.constrained = constrained
        """Send each call's `manager_schema`; off, only the config's JSON mode."""

    async def decide(self, facts: Sequence[str], related: Sequence[MemoryItem]) -> ManagerCall:
        messages, id_map = build_manager_messages(facts, related)
        config = manager_config(id_map, len(facts), self.config) if self.constrained else self.config
        completion = await self.model.generate(messages, config)
        decision = parse_manager_reply(completion.text, id_map)
        return ManagerCall(decision=decision, reply=completion.text, id_map=id_map, usage=usage_of(completion))
