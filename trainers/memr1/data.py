"""Memory-R1's training data on LoCoMo: Answer Agent examples and Memory Manager episodes, as TRL-ready rows.

Split (Memory-R1's, by conversation, adversarial questions left out): train conv-26, 152 questions; val conv-30,
81; test the other 8, 1,307.

- Answer Agent: one example per question. The prompt is `systems.memr1.build_answer_agent_messages` over the
  candidates the `memr1` system retrieves from the bank of the whole conversation (30 per speaker, 60 in all).
- Memory Manager: one episode per dialogue turn named as evidence by at least one question. It starts from the
  bank built over the window of turns before it (`banks.BankBuilder.before`); the new facts are those extracted
  from the turn about its speaker (`llm` source: one extraction call, as the system makes; `turns` source: the
  turn itself, "<speaker>: <text>"); the related memories are the speaker's 5 most similar to each fact (merged,
  best first); the prompt is `systems.memr1.build_manager_messages(facts, related)`. Its questions are those
  whose evidence names that turn; a multi-hop question belongs to the episode of each of its evidence turns.
  On the real file: train 150 of 152 questions matched to 133 episodes (2 have no evidence at all); val 81 of
  81, 74 episodes; test 1,305 of 1,307, 1,221 episodes (2 without evidence; 2 evidence ids name no turn).

`to_row()` gives a dict with `prompt` (chat messages) plus the columns the rewards read: TRL's GRPOTrainer
passes every column but `prompt` to reward functions as keyword lists.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from harness.llm import Message
from harness.plugins import TASKS
from harness.task import DataOptions
from harness.types import MemoryItem, Question, Sample
from systems.mem0 import turn_memory_text
from systems.memory_bank import MemoryBank
from systems.memory_ops import extract_facts
from systems.memr1 import build_answer_agent_messages, build_manager_messages
from systems.memr1.system import MemR1System
from trainers.memr1.banks import BankBuilder, PlacedTurn, answering_system, placed_turns
from trainers.memr1.sync import gather_bounded, run_sync

log = logging.getLogger(__name__)

MEMORY_R1_QUESTIONS = {"train": 152, "val": 81, "test": 1307}
"""Questions per split on the released locomo10.json (adversarial left out)."""
MAX_CONCURRENT_BANKS = 8


def load_locomo_split(split: str, data: DataOptions | None = None, **options: str) -> list[Sample]:
    """LoCoMo samples of one Memory-R1 split (`train`, `val`, `test`; `all` for every conversation)."""
    task_data = TASKS.get("locomo").load(data or DataOptions(), split=split, **options)
    samples = list(task_data.samples)
    found = sum(len(s.questions) for s in samples)
    if split in MEMORY_R1_QUESTIONS and not options and found != MEMORY_R1_QUESTIONS[split]:
        log.warning("LoCoMo %s split has %d questions, not Memory-R1's %d", split, found, MEMORY_R1_QUESTIONS[split])
    return samples


def plain_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Chat messages as plain dicts (a `prompt` column)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# --- Answer Agent ---------------------------------------------------------------------------------------------


class AnswerExample(BaseModel):
    question_id: str
    conversation_id: str
    question_type: str
    question: str
    answers: list[str]
    prompt: list[dict[str, str]]
    """The Answer Agent's chat messages, exactly as the `memr1` system sends them."""
    candidate_ids: list[str]
    """The bank ids of the candidates, in prompt order ([1] is the first)."""

    def to_row(self) -> dict[str, object]:
        """`prompt` plus `gold` (the answers, read by `rewards.answer_reward`) and identifying columns."""
        return {
            "prompt": self.prompt,
            "gold": self.answers,
            "question_id": self.question_id,
            "question_type": self.question_type,
            "conversation_id": self.conversation_id,
            "candidate_ids": self.candidate_ids,
        }


async def answer_example(system: MemR1System, question: Question, conversation_id: str) -> AnswerExample:
    """The example of one question, with the candidates `system` (answering from the question's bank) retrieves."""
    groups, _ = await system.candidates(question.to_query())
    candidates = [item for _, items in groups for item in items]  # the order MemR1System.answer shows them in
    messages = build_answer_agent_messages(candidates, question.to_query())
    return AnswerExample(
        question_id=question.question_id,
        conversation_id=conversation_id,
        question_type=question.question_type,
        question=question.text,
        answers=list(question.answers),
        prompt=plain_messages(messages),
        candidate_ids=[item.id for item in candidates],
    )


async def build_answer_examples(
    samples: Sequence[Sample], banks: BankBuilder, memories_per_speaker: int | None = None
) -> list[AnswerExample]:
    """One example per question, each over the bank of its whole conversation (`memories_per_speaker` candidates
    per speaker; default the system's 30)."""
    examples: list[AnswerExample] = []
    for sample in samples:
        built = await banks.whole(sample.conversation)
        system = answering_system(built.bank, sample.conversation.speakers, memories_per_speaker=memories_per_speaker)
        jobs = [answer_example(system, question, sample.sample_id) for question in sample.questions]
        examples.extend(await asyncio.gather(*jobs))
    return examples


def answer_agent_examples(
    split: str, banks: BankBuilder, data: DataOptions | None = None, memories_per_speaker: int | None = None
) -> list[AnswerExample]:
    """The Answer Agent examples of one LoCoMo split (sync; see `build_answer_examples`)."""
    return run_sync(build_answer_examples(load_locomo_split(split, data), banks, memories_per_speaker))


# --- Memory Manager -------------------------------------------------------------------------------------------


class EpisodeQuestion(BaseModel):
    question_id: str
    text: str
    answers: list[str]
    question_type: str

    @classmethod
    def of(cls, question: Question) -> EpisodeQuestion:
        return cls(
            question_id=question.question_id,
            text=question.text,
            answers=list(question.answers),
            question_type=question.question_type,
        )


class ManagerEpisode(BaseModel):
    """One Memory Manager decision to learn: the facts of one turn against the bank built before it."""

    episode_id: str
    """`<conversation id>/<turn id>`."""
    conversation_id: str
    speakers: list[str]
    """The conversation's speakers (the Answer Agent's retrieval runs over each one's memories)."""
    turn_id: str
    session_id: str
    session_date: str | None
    speaker: str
    """Who said the turn: the facts are about them, and what the manager ADDs goes to their memories."""
    turn_text: str
    facts: list[str]
    related_ids: list[str]
    """Bank ids of the related memories, in prompt order: shown id "n" is `related_ids[n]`."""
    bank: list[MemoryItem]
    """The starting bank (ids numbered per speaker, no history)."""
    bank_path: str
    """The cached bank file it was read from (for inspection; the rows carry the bank itself)."""
    questions: list[EpisodeQuestion] = Field(min_length=1)

    @property
    def related(self) -> list[MemoryItem]:
        by_id = {item.id: item for item in self.bank}
        return [by_id[memory_id] for memory_id in self.related_ids]

    @property
    def id_map(self) -> dict[str, str]:
        """Shown id -> bank id, as `build_manager_messages` makes it."""
        return {str(n): memory_id for n, memory_id in enumerate(self.related_ids)}

    def messages(self) -> list[dict[str, str]]:
        messages, id_map = build_manager_messages(self.facts, self.related)
        assert id_map == self.id_map
        return plain_messages(messages)

    def to_row(self) -> dict[str, object]:
        """`prompt` plus the columns `rewards.ManagerReward` reads; `bank` is a JSON string (Arrow-friendly)."""
        row = self.model_dump(exclude={"bank", "questions"})
        row["bank"] = json.dumps([item.model_dump(exclude={"history", "score"}) for item in self.bank])
        row["questions"] = [q.model_dump() for q in self.questions]
        return {"prompt": self.messages(), **row}

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> ManagerEpisode:
        """The episode of a row made by `to_row` (`prompt` may be missing: it is rebuilt from the rest)."""
        fields = {key: value for key, value in row.items() if key in cls.model_fields}
        bank = fields.get("bank")
        if isinstance(bank, str):
            fields["bank"] = json.loads(bank)
        fields["questions"] = _records(fields.get("questions"))
        return cls.model_validate(fields)


def _records(value: object) -> object:
    """A list of dicts, also when `datasets` hands a list-of-struct column back as a dict of lists."""
    if isinstance(value, Mapping):
        keys = list(value)
        columns = [list(value[key]) for key in keys]
        return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]
    return value


class EvidenceMatch(BaseModel):
    """How a split's questions map onto evidence turns."""

    questions: int
    matched: int
    """Questions with at least one evidence id naming a turn of their conversation."""
    without_evidence: list[str]
    """Questions with no evidence id at all."""
    unmatched: list[str]
    """Questions with evidence ids, none of which names a turn."""
    ids_naming_no_turn: list[str]
    """`<question id>:<evidence id>` of every evidence id that names no turn."""
    episodes: int
    """Distinct evidence turns: one manager episode each."""


def evidence_turns(samples: Sequence[Sample]) -> tuple[dict[tuple[str, str], list[Question]], EvidenceMatch]:
    """Questions by (conversation id, evidence turn id), in conversation order, and how the matching went."""
    by_turn: dict[tuple[str, str], list[Question]] = {}
    matched = 0
    without: list[str] = []
    unmatched: list[str] = []
    naming_nothing: list[str] = []
    for sample in samples:
        order = {p.turn.turn_id: p.index for p in placed_turns(sample.conversation)}
        found: dict[str, list[Question]] = {}
        for question in sample.questions:
            hits = [e for e in dict.fromkeys(question.evidence) if e in order]
            naming_nothing += [f"{question.question_id}:{e}" for e in question.evidence if e not in order]
            if hits:
                matched += 1
            elif question.evidence:
                unmatched.append(question.question_id)
            else:
                without.append(question.question_id)
            for turn_id in hits:
                found.setdefault(turn_id, []).append(question)
        for turn_id in sorted(found, key=order.__getitem__):
            by_turn[(sample.sample_id, turn_id)] = found[turn_id]
    match = EvidenceMatch(
        questions=sum(len(s.questions) for s in samples),
        matched=matched,
        without_evidence=without,
        unmatched=unmatched,
        ids_naming_no_turn=naming_nothing,
        episodes=len(by_turn),
    )
    return by_turn, match


async def episode_facts(banks: BankBuilder, placed: PlacedTurn) -> list[str]:
    """The new facts of a turn: extracted about its speaker (`llm`), or the turn itself (`turns`)."""
    if banks.config.source == "turns" or banks.model is None:
        return [turn_memory_text(placed.turn)]
    call = await extract_facts(banks.model, [placed.turn], placed.turn.speaker, placed.session.date)
    return call.extracted.facts


async def related_memories(bank: MemoryBank, facts: Sequence[str], speaker: str, k: int) -> list[MemoryItem]:
    """The speaker's `k` memories most similar to each fact, merged, best first."""
    best: dict[str, MemoryItem] = {}
    for fact in facts:
        for item in await bank.search(fact, k, speaker):
            if item.id not in best or (item.score or 0.0) > (best[item.id].score or 0.0):
                best[item.id] = item
    return sorted(best.values(), key=lambda item: -(item.score or 0.0))


async def manager_episode(
    banks: BankBuilder, sample: Sample, placed: PlacedTurn, questions: Sequence[Question]
) -> ManagerEpisode:
    conversation = sample.conversation
    built = await banks.before(conversation, placed.turn.turn_id)
    facts = await episode_facts(banks, placed)
    related = await related_memories(built.bank, facts, placed.turn.speaker, banks.config.top_k_related)
    return ManagerEpisode(
        episode_id=f"{sample.sample_id}/{placed.turn.turn_id}",
        conversation_id=sample.sample_id,
        speakers=list(conversation.speakers),
        turn_id=placed.turn.turn_id,
        session_id=placed.session.session_id,
        session_date=placed.session.date,
        speaker=placed.turn.speaker,
        turn_text=placed.turn.text,
        facts=facts,
        related_ids=[item.id for item in related],
        bank=[item.model_copy(update={"history": []}) for item in built.items],
        bank_path=str(built.path),
        questions=[EpisodeQuestion.of(q) for q in questions],
    )


async def build_manager_episodes(samples: Sequence[Sample], banks: BankBuilder) -> list[ManagerEpisode]:
    """One episode per evidence turn, in conversation order (see the module docstring)."""
    by_turn, _ = evidence_turns(samples)
    placed = {(s.sample_id, p.turn.turn_id): (s, p) for s in samples for p in placed_turns(s.conversation)}
    jobs = [manager_episode(banks, *placed[key], questions) for key, questions in by_turn.items()]
    return await gather_bounded(jobs, MAX_CONCURRENT_BANKS)


def manager_episodes(split: str, banks: BankBuilder, data: DataOptions | None = None) -> list[ManagerEpisode]:
    """The Memory Manager episodes of one LoCoMo split (sync; see `build_manager_episodes`)."""
    return run_sync(build_manager_episodes(load_locomo_split(split, data), banks))
