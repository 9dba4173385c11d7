"""The answer prompt every system shares, so that systems differ only in what context they hand it.

It follows the short-answer style of the Mem0 and Memory-R1 evaluations: answer from the given context only,
in a few words, with absolute dates. The long, shared context comes first and the question last, so local
engines can reuse the cached prompt prefix across the questions of one history.
"""

from __future__ import annotations

import re

from harness.llm import Message
from harness.types import Query

ANSWER_INSTRUCTIONS = """\
You answer questions about the memories of a long conversation between people.
Use only the context below. Reply with the answer alone: a few words (a name, a date, a place, a short \
phrase), no explanation and no full sentence.
Dates: the context gives when each session or memory happened. When it speaks of relative time \
("last year", "yesterday", "next month"), work out the actual date from that timestamp and answer with it.
If the context does not contain the answer, reply: Not mentioned."""

CONTEXT_HEADER = "Context:"


def answer_messages(context: str, query: Query) -> list[Message]:
    """The chat messages for answering `query` from `context` (history transcript or rendered memories)."""
    asked_on = f"\nThe question is asked on {query.date}." if query.date else ""
    return [
        {"role": "system", "content": ANSWER_INSTRUCTIONS},
        {"role": "user", "content": f"{CONTEXT_HEADER}\n{context}\n\nQuestion: {query.text}{asked_on}\nAnswer:"},
    ]


_ANSWER_PREFIX = re.compile(r"^\s*(?:\*\*)?answer(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.IGNORECASE)


def clean_short_answer(text: str) -> str:
    """The answer part of a reply: its first non-empty line, without a leading `Answer:` label."""
    for line in text.strip().splitlines():
        line = _ANSWER_PREFIX.sub("", line).strip()
        if line:
            return line
    return ""
