"""Memory-R1's outcome rewards as TRL reward functions: the score of the Answer Agent's answer, and the score of a
frozen Answer Agent's answers on the bank a Memory Manager decision leaves.

The score is `em` (the paper's: exact match) or `f1` (the harness's set-token `f1`, which a small model can earn
partly where it never matches exactly: an EM reward then gives every GRPO group zero variance). An optional format
term adds `format_weight` when the reply keeps its format: the `**Answer:**` marker for the Answer Agent, a reply
that parses as a well-formed manager JSON for the Memory Manager. `require_marker` (answer only) instead scores a
reply without the marker 0.

TRL's convention: `reward(prompts=..., completions=..., completion_ids=..., **columns) -> list[float]`, one float
per completion; every dataset column but `prompt` comes as a list with one value per completion, beside TRL's own
keywords (`trainer_state`, `log_metric`, ...), which are ignored here. A completion is a string, or for chat
prompts a list of messages whose last one is the assistant's reply.

Both rewards parse with the `memr1` system's own parsers and score with `harness.metrics.exact_match` (SQuAD
normalisation) or `harness.metrics.token_f1`, taking the best over the gold answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from harness.embeddings.base import DEFAULT_EMBEDDER_SPEC, Embedder
from harness.embeddings.build import build_embedder
from harness.llm import Model
from harness.llm.build import build_model
from harness.llm.cache import CallCache, default_cache_path
from harness.metrics.exact_match import exact_match_score
from harness.metrics.token_f1 import token_set_f1
from harness.types import Query
from systems.memory_bank import MemoryBank, MissingMemory, Provenance
from systems.memr1 import parse_answer_agent_reply, parse_manager_reply
from trainers.memr1.banks import answering_system, load_bank, memo_embedder
from trainers.memr1.data import ManagerEpisode
from trainers.memr1.sync import run_sync

CompletionLike = str | Sequence[Mapping[str, object]]
Gold = str | Sequence[str]
ScoreName = Literal["em", "f1"]


@dataclass(frozen=True)
class AnswerScores:
    """Both scores of answers against their gold (a mean over questions for a manager decision)."""

    em: float
    f1: float

    def of(self, name: ScoreName) -> float:
        return self.em if name == "em" else self.f1

    @staticmethod
    def mean(scores: Sequence[AnswerScores]) -> AnswerScores:
        if not scores:
            return AnswerScores(0.0, 0.0)
        return AnswerScores(sum(s.em for s in scores) / len(scores), sum(s.f1 for s in scores) / len(scores))


def completion_text(completion: CompletionLike) -> str:
    """The text of a completion: the string itself, or the content of the last message of a conversation."""
    if isinstance(completion, str):
        return completion
    content = completion[-1].get("content") if completion else None
    return content if isinstance(content, str) else ""


def _answers(gold: Gold) -> list[str]:
    return [gold] if isinstance(gold, str) else list(gold)


def exact_match_any(answer: str, gold: Gold) -> float:
    """1.0 when `answer` matches any gold answer after normalisation (`exact_match_max` semantics)."""
    return max((exact_match_score(answer, g) for g in _answers(gold)), default=0.0)


def answer_scores(answer: str, gold: Gold) -> AnswerScores:
    """EM and set-token F1 of `answer`, each the best over the gold answers."""
    answers = _answers(gold)
    return AnswerScores(
        em=exact_match_any(answer, answers), f1=max((token_set_f1(answer, g) for g in answers), default=0.0)
    )


def reply_scores(reply: str, gold: Gold, require_marker: bool = False) -> tuple[AnswerScores, bool]:
    """The scores of the answer `parse_answer_agent_reply` reads from `reply` (without `**Answer:**` it takes the
    last line; `require_marker` scores that 0 instead), and whether the reply had the marker."""
    parsed = parse_answer_agent_reply(reply, ())  # the answer does not depend on the candidates
    if require_marker and not parsed.marker_found:
        return AnswerScores(0.0, 0.0), False
    return answer_scores(parsed.answer, gold), parsed.marker_found


def answer_reward(
    prompts: Sequence[object],
    completions: Sequence[CompletionLike],
    gold: Sequence[Gold],
    score: ScoreName = "em",
    format_weight: float = 0.0,
    require_marker: bool = False,
    **_: object,
) -> list[float]:
    """The Answer Agent's reward: the `score` of each completion's answer against its row's `gold` answers, plus
    `format_weight` when the reply has the `**Answer:**` marker."""
    if len(gold) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(gold)} gold answers")
    rewards = []
    for completion, answers in zip(completions, gold, strict=True):
        scores, marker = reply_scores(completion_text(completion), answers, require_marker)
        rewards.append(scores.of(score) + (format_weight if marker else 0.0))
    return rewards


class ManagerReward:
    """The Memory Manager's reward: its decision is applied to a copy of the episode's starting bank, then a frozen
    Answer Agent (the `memr1` system's answer path, run by `answer_model`) answers each of the episode's questions
    from the updated bank; the reward is the mean `score` (EM or F1), plus `format_weight` when the reply was a
    well-formed manager JSON.

    Invalid output is a NOOP, and an operation the bank cannot apply (an UPDATE of a memory already deleted by
    the same decision) is skipped, as the system does: the reward is then that of the unchanged bank. A failed
    answer call raises; it never becomes a reward.

    Call it like a TRL reward function (sync: it runs on `sync.run_sync`'s loop), or await `score` / `score_batch`.
    """

    __name__ = "manager_reward"

    def __init__(
        self,
        answer_model: Model,
        embedder: Embedder,
        memories_per_speaker: int | None = None,
        *,
        score: ScoreName = "em",
        format_weight: float = 0.0,
    ) -> None:
        self.answer_model = answer_model
        self.embedder = memo_embedder(embedder)
        self.memories_per_speaker = memories_per_speaker
        """The frozen Answer Agent's candidates per speaker (None: the memr1 system's default, 30)."""
        self.score_name: ScoreName = score
        self.format_weight = format_weight

    @classmethod
    def from_specs(
        cls,
        answer_model: str,
        embedder: str = DEFAULT_EMBEDDER_SPEC,
        *,
        use_cache: bool = True,
        memories_per_speaker: int | None = None,
        score: ScoreName = "em",
        format_weight: float = 0.0,
    ) -> ManagerReward:
        """With the frozen Answer Agent `answer_model` (a model spec), through the persistent LLM-call cache."""
        cache = CallCache(default_cache_path()) if use_cache else None
        model = build_model(answer_model, cache=cache)
        embeddings = build_embedder(embedder, use_cache=use_cache)
        return cls(model, embeddings, memories_per_speaker, score=score, format_weight=format_weight)

    async def updated_bank(self, episode: ManagerEpisode, reply: str) -> MemoryBank:
        """The episode's starting bank after the decision `reply` (a manager completion)."""
        bank, _ = await self._apply(episode, reply)
        return bank

    async def _apply(self, episode: ManagerEpisode, reply: str) -> tuple[MemoryBank, bool]:
        bank = await load_bank(episode.bank, self.embedder)
        decision = parse_manager_reply(reply, episode.id_map)
        provenance = Provenance(episode.speaker, episode.session_date, episode.session_id, (episode.turn_id,))
        for operation in decision.operations:
            try:
                await bank.apply(operation, provenance)
            except (MissingMemory, ValueError):
                continue
        return bank, not decision.invalid

    async def answer_scores(self, episode: ManagerEpisode, completion: CompletionLike) -> tuple[AnswerScores, bool]:
        """The frozen Answer Agent's mean scores on the bank the decision leaves, and whether the decision was
        well formed."""
        bank, well_formed = await self._apply(episode, completion_text(completion))
        system = answering_system(bank, episode.speakers, self.answer_model, self.memories_per_speaker)
        predictions = await asyncio.gather(
            *(system.answer(Query(question_id=q.question_id, text=q.text)) for q in episode.questions)
        )
        pairs = zip(predictions, episode.questions, strict=True)
        return AnswerScores.mean([answer_scores(p.answer, q.answers) for p, q in pairs]), well_formed

    async def score(self, episode: ManagerEpisode, completion: CompletionLike) -> float:
        scores, well_formed = await self.answer_scores(episode, completion)
        return scores.of(self.score_name) + (self.format_weight if well_formed else 0.0)

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
