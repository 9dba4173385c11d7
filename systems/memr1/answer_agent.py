"""Memory-R1's Answer Agent: memory distillation, then a short answer, in one reply.

The agent sees the candidate memories (Memory-R1 retrieves 60: 30 per speaker), numbered [1], [2], ... in
the order given, under one header per speaker. It first lists the memories it selects as relevant, one per
line ("- [n] <memory>"), then writes the answer after the marker `**Answer:**`. The harness keeps the
answer and the distilled list (as memory ids), so both steps are visible in the record.

Parsing (`parse_answer_agent_reply`):
- The answer is the first non-empty line after the last `**Answer:**` (`**Answer**:` is accepted too);
  without a marker, the last non-empty line of the reply, with `marker_found` False (a format error a
  trainer can penalise).
- A selected memory is a line before the marker, a bullet or one starting with "[n]", that names a candidate
  by its number ("[7] ..." or a bare "7") or quotes its text; bullets naming no candidate go to `unmatched`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, Field

from harness.llm import GenerateConfig, Message
from harness.types import MemoryItem, Query
from systems.prompts import clean_short_answer

ANSWER_AGENT_CONFIG = GenerateConfig(max_tokens=256, temperature=0.0)
ANSWER_MARKER = "**Answer:**"

ANSWER_AGENT_INSTRUCTIONS = """\
You answer a question about a long conversation between people, using memories taken from it. Each memory \
is numbered and begins with the date of the session it comes from.
Work in two steps:
1. Select the memories that help answer the question. List each on its own line as "- [number] memory". \
If none helps, write "- none".
2. On the last line write **Answer:** followed by the answer alone: a few words (a name, a date, a place, \
a short phrase), no explanation. When the question is about time, work out the actual date from the \
memory dates. If the memories do not contain the answer, write **Answer:** Not mentioned."""


def render_candidates(candidates: Sequence[MemoryItem]) -> str:
    """Candidates numbered from 1 in the order given, with a header wherever the speaker changes."""
    lines: list[str] = []
    previous: object = object()
    for number, item in enumerate(candidates, start=1):
        if item.speaker != previous:
            lines.extend(([""] if lines else []) + [f"Memories of {item.speaker or 'unknown speaker'}:"])
            previous = item.speaker
        dated = f"{item.timestamp}: {item.text}" if item.timestamp else item.text
        lines.append(f"[{number}] {dated}")
    return "\n".join(lines) if lines else "(no memories)"


def build_answer_agent_messages(candidates: Sequence[MemoryItem], query: Query) -> list[Message]:
    """The Answer Agent's prompt: instructions, the numbered candidates, then the question (last, so the long
    shared part comes first)."""
    asked_on = f"\nThe question is asked on {query.date}." if query.date else ""
    user = f"{render_candidates(candidates)}\n\nQuestion: {query.text}{asked_on}"
    return [{"role": "system", "content": ANSWER_AGENT_INSTRUCTIONS}, {"role": "user", "content": user}]


class AnswerAgentReply(BaseModel):
    answer: str
    distilled: list[str] = Field(default_factory=list)
    """Ids of the candidates the agent selected, in the order it listed them, without repeats."""
    unmatched: list[str] = Field(default_factory=list)
    """Selection lines that named no candidate."""
    marker_found: bool


_MARKER = re.compile(r"\*\*\s*answer\s*(?::\s*\*\*|\*\*\s*:)", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*)$")
_BRACKETED = re.compile(r"^\[(\d+)\]")
_BARE_NUMBER = re.compile(r"^(?:memory\s*)?#?(\d+)[.):]?$", re.IGNORECASE)
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def _normal(text: str) -> str:
    return _NOT_WORD.sub(" ", text.lower()).strip()


def _candidate_of(line: str, candidates: Sequence[MemoryItem]) -> str | None:
    """The id of the candidate a selection line names, by number or by quoting its text."""
    number = _BRACKETED.match(line) or _BARE_NUMBER.match(line)
    if number and 1 <= int(number.group(1)) <= len(candidates):
        return candidates[int(number.group(1)) - 1].id
    said = f" {_normal(line)} "
    quoted = [item for item in candidates if _normal(item.text) and f" {_normal(item.text)} " in said]
    return max(quoted, key=lambda item: len(item.text)).id if quoted else None


def parse_answer_agent_reply(text: str, candidates: Sequence[MemoryItem]) -> AnswerAgentReply:
    """Answer and distilled memories of a reply to `build_answer_agent_messages(candidates, ...)`."""
    markers = list(_MARKER.finditer(text))
    if markers:
        selection, answer = text[: markers[-1].start()], clean_short_answer(text[markers[-1].end() :])
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        selection = "\n".join(lines[:-1])
        answer = clean_short_answer(lines[-1]) if lines else ""
    distilled: list[str] = []
    unmatched: list[str] = []
    for line in selection.splitlines():
        bullet = _BULLET.match(line)
        content = bullet.group(1).strip() if bullet else line.strip()
        if bullet is None and not _BRACKETED.match(content):
            continue
        if _normal(content) in ("none", ""):
            continue
        memory_id = _candidate_of(content, candidates)
        if memory_id is None:
            unmatched.append(content)
        elif memory_id not in distilled:
            distilled.append(memory_id)
    return AnswerAgentReply(answer=answer, distilled=distilled, unmatched=unmatched, marker_found=bool(markers))
