"""Memory-R1 rewards: EM of the Answer Agent's parsed answer; a frozen Answer Agent scoring manager decisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.embeddings.hashing import HashingEmbedder
from harness.llm import Message, Model
from harness.llm.providers.mock import MockBackend
from harness.task import DataOptions
from harness.types import Conversation, Question, Sample, Session, Turn
from systems.memr1.answer_agent import ANSWER_AGENT_INSTRUCTIONS
from trainers.memr1.banks import BankBuilder, BankConfig
from trainers.memr1.data import ManagerEpisode, build_manager_episodes, load_locomo_split
from trainers.memr1.rewards import ManagerReward, answer_reward, completion_text
from trainers.memr1.sync import run_sync

REQUIRED_DATA = ["locomo/locomo10.json"]


@pytest.mark.parametrize(
    ("completion", "gold", "reward"),
    [
        ("- [1] Caroline went to a support group\n**Answer:** 7 May 2023", ["7 May 2023"], 1.0),
        ("**Answer:** 8 May 2023", ["7 May 2023"], 0.0),
        ("- [2]\n**answer**: 7 may, 2023", ["7 May 2023"], 1.0),  # marker variant; case and punctuation normalised
        ("I think it is\n7 May 2023", ["7 May 2023"], 1.0),  # no marker: the last line is the answer
        ("**Answer:** The Answer.", ["answer"], 1.0),  # articles and punctuation dropped
        ("**Answer:** an answer and more", ["answer"], 0.0),
        ("**Answer:** Paris", ["London", "paris"], 1.0),  # any gold answer
        ("**Answer:** Paris", "Paris", 1.0),  # a plain string column
        ("**Answer:** Paris", [], 0.0),
        ([{"role": "assistant", "content": "- [3]\n**Answer:** Paris"}], ["Paris"], 1.0),  # conversational format
        ([], ["Paris"], 0.0),
    ],
)
def test_answer_reward(completion, gold, reward):
    assert answer_reward(prompts=["p"], completions=[completion], gold=[gold]) == [reward]


def test_answer_reward_takes_trl_keywords_and_can_require_the_marker():
    completions = ["**Answer:** Paris", "Paris", [{"role": "assistant", "content": "Paris"}]]
    kwargs = {"completion_ids": [[1], [2], [3]], "trainer_state": None, "question_id": ["a", "b", "c"]}
    gold = [["Paris"]] * 3
    assert answer_reward(prompts=[[]] * 3, completions=completions, gold=gold, **kwargs) == [1.0, 1.0, 1.0]
    assert answer_reward([[]] * 3, completions, gold, require_marker=True) == [1.0, 0.0, 0.0]
    assert answer_reward([[]] * 3, completions, gold, format_weight=0.25) == [1.25, 1.0, 1.0]
    with pytest.raises(ValueError, match="2 gold"):
        answer_reward([[]] * 3, completions, gold[:2])


def test_completion_text_takes_the_last_message():
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "b"


NEEDED = "Alice adopted a puppy named Biscuit"
CONVERSATION = Conversation(
    conversation_id="c1",
    speakers=("Alice", "Bob"),
    sessions=(
        Session(
            session_id="session_1",
            date="1 May 2023",
            turns=(
                Turn(turn_id="D1:1", speaker="Alice", text="Hi Bob, I live in Porto now."),
                Turn(turn_id="D1:2", speaker="Bob", text="Nice! I play the violin these days."),
                Turn(turn_id="D1:3", speaker="Alice", text="Guess what, I adopted a puppy! His name is Biscuit."),
            ),
        ),
    ),
)


def frozen_agent(gold_by_question: dict[str, str], needed: str):
    """A mock Answer Agent that answers right only when the memory it needs is among its candidates."""

    def respond(messages: list[Message]) -> str:
        assert messages[0]["content"] == ANSWER_AGENT_INSTRUCTIONS
        user = messages[-1]["content"]
        question = user.rsplit("Question: ", 1)[1].split("\n", 1)[0]
        return f"- [1]\n**Answer:** {gold_by_question[question] if needed in user else 'Not mentioned'}"

    return respond


async def episode(tmp_path: Path) -> ManagerEpisode:
    question = Question(
        question_id="c1/q0",
        text="What is the name of Alice's puppy?",
        answers=("Biscuit",),
        question_type="single-hop",
        evidence=("D1:3",),
    )
    sample = Sample(sample_id="c1", conversation=CONVERSATION, questions=(question,))
    banks = BankBuilder(BankConfig(source="turns"), embedder=HashingEmbedder(), cache_dir=tmp_path)
    (only,) = await build_manager_episodes([sample], banks)
    return only


ADD = json.dumps({"memory": [{"id": "new", "text": NEEDED, "event": "ADD"}]})
NOOP = json.dumps({"memory": [{"id": "0", "event": "NONE"}]})


@pytest.mark.parametrize(
    ("reply", "reward"),
    [
        (ADD, 1.0),
        (NOOP, 0.0),
        ("I would add it.", 0.0),  # invalid output is a NOOP
        (json.dumps({"memory": [{"id": "0", "text": f"Alice lives in Porto. {NEEDED}", "event": "UPDATE"}]}), 1.0),
        (json.dumps({"memory": [{"id": "7", "text": NEEDED, "event": "UPDATE"}]}), 0.0),  # unknown id: a NOOP
        (json.dumps({"memory": [{"id": "0", "event": "DELETE"}, {"id": "0", "text": NEEDED, "event": "UPDATE"}]}), 0.0),
    ],
)
async def test_manager_reward_is_the_frozen_agents_em_on_the_updated_bank(tmp_path, reply, reward):
    the_episode = await episode(tmp_path)
    assert the_episode.facts == ["Alice: Guess what, I adopted a puppy! His name is Biscuit."]
    assert the_episode.related_ids == ["alice-1"]  # Alice's only memory in the window before D1:3
    backend = MockBackend(responder=frozen_agent({"What is the name of Alice's puppy?": "Biscuit"}, NEEDED))
    scorer = ManagerReward(Model(backend, spec="mock"), HashingEmbedder())
    assert await scorer.score(the_episode, reply) == reward
    assert len(backend.calls) == 1


def test_manager_reward_as_a_trl_reward_function(tmp_path):
    row = run_sync(episode(tmp_path)).to_row()
    columns = {key: [value, value] for key, value in row.items() if key != "prompt"}  # GRPO: 2 generations
    backend = MockBackend(responder=frozen_agent({"What is the name of Alice's puppy?": "Biscuit"}, NEEDED))
    scorer = ManagerReward(Model(backend, spec="mock"), HashingEmbedder())
    completions = [[{"role": "assistant", "content": ADD}], [{"role": "assistant", "content": NOOP}]]
    rewards = scorer(prompts=[row["prompt"]] * 2, completions=completions, completion_ids=[[], []], **columns)
    assert rewards == [1.0, 0.0]
    assert scorer.__name__ == "manager_reward"


def test_manager_reward_reads_rows_back_from_a_datasets_table(tmp_path):
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_list([run_sync(episode(tmp_path)).to_row()])
    columns = {key: [row[key] for row in table] for key in table.column_names if key != "prompt"}  # as TRL does
    backend = MockBackend(responder=frozen_agent({"What is the name of Alice's puppy?": "Biscuit"}, NEEDED))
    scorer = ManagerReward(Model(backend, spec="mock"), HashingEmbedder())
    assert scorer(prompts=table["prompt"], completions=[ADD], **columns) == [1.0]
    whole_columns = {key: table[key] for key in table.column_names if key != "prompt"}
    assert scorer(prompts=table["prompt"], completions=[NOOP], **whole_columns) == [0.0]


async def test_manager_reward_on_a_real_train_episode(shared_data_dir, tmp_path):
    """conv-26 D1:3 ("I went to a LGBTQ support group yesterday", 8 May 2023) is the evidence of two questions."""
    samples = load_locomo_split("train", DataOptions(data_dir=str(shared_data_dir)))
    banks = BankBuilder(BankConfig(source="turns"), embedder=HashingEmbedder(), cache_dir=tmp_path)
    (sample,) = samples
    sample = sample.model_copy(update={"questions": tuple(q for q in sample.questions if "D1:3" in q.evidence)})
    (real,) = [e for e in await build_manager_episodes([sample], banks) if e.turn_id == "D1:3"]
    assert len(real.questions) == 2
    gold = {q.text: q.answers[0] for q in real.questions}
    assert gold["When did Caroline go to the LGBTQ support group?"] == "7 May 2023"
    needed = "Caroline went to a LGBTQ support group on 7 May 2023"
    scorer = ManagerReward(Model(MockBackend(responder=frozen_agent(gold, needed)), spec="mock"), HashingEmbedder())
    add = json.dumps({"memory": [{"id": "new", "text": needed, "event": "ADD"}]})
    assert await scorer.score_batch([real, real], [add, NOOP]) == [1.0, 0.0]
