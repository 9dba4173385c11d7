"""Memory-R1's outcome rewards as TRL reward functions: exact match of the Answer Agent's answer, and exact match of
a frozen Answer Agent's answers on the bank a Memory Manager decision leaves.

TRL's convention: `reward(prompts=..., completions=..., completion_ids=..., **columns) -> list[float]`, one float
per completion; every dataset column but `prompt` comes as a list with one value per completion, beside TRL's own
keywords (`trainer_state`, `log_metric`, ...), which are ignored here. A completion is a string, or for chat
prompts a list of messages whose last one is the assistant's reply.

Both rewards parse with the `memr1` system's own parsers and score with `harness.metrics.exact_match` (SQuAD
normalisation; correct if any gold answer matches).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

from harness.embeddings.base import DEFAULT_EMBEDDER_SPEC, Embedder
from harness.embeddings.build import build_embedder
from harness.llm import Model
from harness.llm.build import build_model
from harness.llm.cache import CallCache, default_cache_path
from harness.metrics.exact_match import exact_match_score
from harness.types import Query
from systems.memory_bank import MemoryBank, MissingMemory, Provenance
from systems.memr1 import parse_answer_agent_reply, parse_manager_reply
from trainers.memr1.banks import answering_system, load_bank, memo_embedder
from trainers.memr1.data import ManagerEpisode
from trainers.memr1.sync import run_sync

CompletionLike = str | Sequence[Mapping[str, object]]
Gold = str | Sequence[str]


def completion_text(completion: CompletionLike) -> str:
    """The text of a completion: the string itself, or the content of the last message of a conversation."""
    if isinstance(completion, str):
        return completion
    content = completion[-1].get("content") if completion else None
    return content if isinstance(content, str) else ""


def exact_match_any(answer: str, gold: Gold) -> float:
    """1.0 when `answer` matches any gold answer after normalisation (`exact_match_max` semantics)."""
    answers = [gold] if isinstance(gold, str) else list(gold)
    return max((exact_match_score(answer, g) for g in answers), default=0.0)


def answer_exact_match(reply: str, gold: Gold, require_marker: bool = False) -> float:
    """EM of the answer `parse_answer_agent_reply` reads from `reply` (without `**Answer:**` it takes the last
    line; `require_marker` scores that 0 instead)."""
    parsed = parse_answer_agent_reply(reply, ())  # the answer does not depend on the candidates
    if require_marker and not parsed.marker_found:
        return 0.0
    return exact_match_any(parsed.answer, gold)


def answer_reward(
    prompts: Sequence[object],
    completions: Sequence[CompletionLike],
    gold: Sequence[Gold],
    require_marker: bool = False,
    **_: object,
) -> list[float]:
    """The Answer Agent's reward: EM of each completion's answer against its row's `gold` answers."""
    if len(gold) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(gold)} gold answers")
    return [answer_exact_match(completion_text(c), g, require_marker) for c, g in zip(completions, gold, strict=True)]


class ManagerReward:
    """The Memory Manager's reward: its decision is applied to a copy of the episode's starting bank, then a frozen
    Answer Agent (the `memr1` system's answer path, run by `answer_model`) answers each of the episode's questions
    from the updated bank; the reward is the mean EM.

    Invalid output is a NOOP, and an operation the bank cannot apply (an UPDATE of a memory already deleted by
    the same decision) is skipped, as the system does: the reward is then that of the unchanged bank. A failed
    answer call raises; it never becomes a reward.

    Call it like a TRL reward function (sync: it runs on `sync.run_sync`'s loop), or await `score` / `score_batch`.
    """

    __name__ = "manager_reward"

    def __init__(self, answer_model: Model, embedder: Embedder, memories_per_speaker: int | None = None) -> None:
        self.answer_model = answer_model
        self.embedder = memo_embedder(embedder)
        self.memories_per_speaker = memories_per_speaker
        """The frozen Answer Agent's candidates per speaker (None: the memr1 system's default, 30)."""

    @classmethod
    def from_specs(
        cls,
        answer_model: str,
        embedder: str = DEFAULT_EMBEDDER_SPEC,
        *,
        use_cache: bool = True,
        memories_per_speaker: int | None = None,
    ) -> ManagerReward:
        """With the frozen Answer Agent `answer_model` (a model spec), through the persistent LLM-call cache."""
        cache = CallCache(default_cache_path()) if use_cache else None
        model = build_model(answer_model, cache=cache)
        return cls(model, build_embedder(embedder, use_cache=use_cache), memories_per_speaker)

    async def updated_bank(self, episode: ManagerEpisode, reply: str) -> MemoryBank:
        """The episode's starting bank after the decision `reply` (a manager completion)."""
        bank = await load_bank(episode.bank, self.embedder)
        decision = parse_manager_reply(reply, episode.id_map)
        provenance = Provenance(episode.speaker, episode.session_date, episode.session_id, (episode.turn_id,))
        for operation in decision.operations:
            try:
                await bank.apply(operation, provenance)
            except (MissingMemory, ValueError):
                continue
        return bank

    async def score(self, episode: ManagerEpisode, completion: CompletionLike) -> float:
        bank = await self.updated_bank(episode, completion_text(completion))
        system = answering_system(bank, episode.speakers, self.answer_model, self.memories_per_speaker)
        predictions = await asyncio.gather(
            *(system.answer(Query(question_id=q.question_id, text=q.text)) for q in episode.questions)
        )
        scores = [exact_match_any(p.answer, q.answers) for p, q in zip(predictions, episode.questions, strict=True)]
        return sum(scores) / len(scores)

    async def score_batch(
        self, episodes: Sequence[ManagerEpisode], completions: Sequence[CompletionLike]
    ) -> list[float]:
        if len(episodes) != len(completions):
            raise ValueError(f"{len(completions)} completions for {len(episodes)} episodes")
        return list(await asyncio.gather(*(self.score(e, c) for e, c in zip(episodes, completions, strict=True))))

    def __call__(
        self, prompts: Sequence[object], completions: Sequence[CompletionLike], **columns: object
    ) -> list[float]:
        """TRL entry point: the episodes are read back from the row columns (`ManagerEpisode.to_row`)."""
        rows: list[dict[str, object]] = [{} for _ in completions]
        for key, value in columns.items():
            if key not in ManagerEpisode.model_fields:
                continue
            values = list(value) if isinstance(value, Iterable) and not isinstance(value, str | Mapping) else None
            if values is None or len(values) != len(completions):
                raise ValueError(f"column {key!r} must hold one value per completion")
            for row, item in zip(rows, values, strict=True):
                row[key] = item
        return run_sync(self.score_batch([ManagerEpisode.from_row(row) for row in rows], completions))
