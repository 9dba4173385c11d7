"""Cutting a history into retrievable chunks that remember which turns they came from.

Every chunk is a `MemoryItem` whose `source_turn_ids` list the turns it covers (what evidence recall is
measured on) and whose `timestamp` is its session's date. Chunks never cross a session boundary, so each has
one date.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.types import MemoryItem, Session


def turn_line(speaker: str, text: str) -> str:
    return f"{speaker}: {text}"


def chunk_by_turn(session: Session) -> list[MemoryItem]:
    """One chunk per turn: text `speaker: text`, id the turn's id."""
    return [
        MemoryItem(
            id=turn.turn_id,
            text=turn_line(turn.speaker, turn.text),
            timestamp=session.date,
            source_turn_ids=[turn.turn_id],
        )
        for turn in session.turns
    ]


def chunk_by_tokens(sessions: Sequence[Session], size: int, overlap: int = 0) -> list[MemoryItem]:
    """Windows of `size` whitespace tokens of turn text, each starting `size - overlap` tokens after the last.

    A window may begin or end inside a turn: that turn's piece keeps its `speaker: ` prefix (not counted in
    `size`), one line per turn, and its id is listed in the chunk's sources. Chunk ids are
    `<session_id>#<n>`. A session whose turns have no text yields no chunk.
    """
    if size <= 0:
        raise ValueError(f"chunk size must be positive, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be in [0, size), got {overlap} for size {size}")
    chunks: list[MemoryItem] = []
    for session in sessions:
        # (turn index, word) for every word of the session, in order
        words = [(i, word) for i, turn in enumerate(session.turns) for word in turn.text.split()]
        # the last window starts before the previous one's overlap ends, so no window is wholly inside another
        stop = max(len(words) - overlap, 1) if words else 0
        for n, start in enumerate(range(0, stop, size - overlap)):
            chunks.append(_window_chunk(session, words[start : start + size], f"{session.session_id}#{n}"))
    return chunks


def _window_chunk(session: Session, window: list[tuple[int, str]], chunk_id: str) -> MemoryItem:
    pieces: dict[int, list[str]] = {}
    for turn_index, word in window:
        pieces.setdefault(turn_index, []).append(word)
    turns = [session.turns[i] for i in pieces]
    return MemoryItem(
        id=chunk_id,
        text="\n".join(turn_line(t.speaker, " ".join(pieces[i])) for i, t in zip(pieces, turns, strict=True)),
        timestamp=session.date,
        source_turn_ids=[t.turn_id for t in turns],
    )
