"""Memory-R1 PPO on TRL 1.12: the rule-based reward in the shape of TRL's reward model (fast, with a word
tokenizer, and slow, with SmolLM2's), and real PPO updates of both agents on SmolLM2 (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

for _module in ("torch", "transformers", "trl", "datasets"):
    pytest.importorskip(_module)

import torch  # noqa: E402
from trl.experimental.utils import get_reward  # noqa: E402

from harness.embeddings.hashing import HashingEmbedder  # noqa: E402
from harness.llm import Model  # noqa: E402
from harness.llm.providers.mock import MockBackend  # noqa: E402
from trainers.memr1.config import TrainConfig  # noqa: E402
from trainers.memr1.evaluation import drop_long_prompts, prompt_lengths, query_ids  # noqa: E402
from trainers.memr1.ppo import (  # noqa: E402
    QueryIndex,
    RuleRewardModel,
    ScoredBatch,
    UpdateClock,
    pad_token_for,
    ppo_arguments,
    ppo_history,
    ppo_queries,
    train_ppo,
)
from trainers.memr1.rewards import ManagerReward, answer_reward  # noqa: E402

REQUIRED_DATA = ["locomo/locomo10.json"]


class WordTokenizer:
    """Just enough of a tokenizer for the reward model: one id per word, `<pad>` 0, `<eos>` 1, `<unk>` 2."""

    SPECIAL = ("<pad>", "<eos>", "<unk>")

    def __init__(self, pad_token: str | None = "<pad>") -> None:
        self.words = list(self.SPECIAL)
        self.pad_token, self.unk_token, self.eos_token, self.eos_token_id = pad_token, "<unk>", "<eos>", 1

    def ids(self, text: str) -> list[int]:
        for word in text.split():
            if word not in self.words:
                self.words.append(word)
        return [self.words.index(word) for word in text.split()]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": self.ids(text)}

    def apply_chat_template(self, messages, add_generation_prompt: bool, tokenize: bool) -> str:
        assert add_generation_prompt and not tokenize
        return " ".join(f"<{m['role']}> {m['content']} <eos>" for m in messages) + " <assistant>"

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return " ".join(self.words[i] for i in ids if not (skip_special_tokens and self.words[i] in self.SPECIAL))

    def get_vocab(self) -> dict[str, int]:
        return {word: n for n, word in enumerate(self.words)}


def answer_rows() -> list[dict[str, object]]:
    return [
        {"prompt": [{"role": "user", "content": "Capital of France?"}], "gold": ["Paris"], "question_id": "q1"},
        {"prompt": [{"role": "user", "content": "Colour of the sky?"}], "gold": ["blue", "azure"], "question_id": "q2"},
    ]


def trl_batch(queries: list[list[int]], responses: list[list[int]], pad: int) -> tuple[torch.Tensor, int]:
    """query+response rows as TRL's PPO scores them: queries left-padded to one width, responses right-padded."""
    width = max(map(len, queries))
    length = max(map(len, responses))
    rows = [
        [pad] * (width - len(q)) + q + r + [pad] * (length - len(r)) for q, r in zip(queries, responses, strict=True)
    ]
    return torch.tensor(rows), width


def test_the_reward_model_gives_trl_the_em_of_each_decoded_response():
    tokenizer = WordTokenizer()
    rows = answer_rows()
    queries = [query_ids(tokenizer, row["prompt"]) for row in rows]
    model = RuleRewardModel(answer_reward, tokenizer, rows, queries)
    planted = {
        ("**Answer:** Paris <eos>", "**Answer:** azure <eos>"): [1.0, 1.0],
        ("**Answer:** Lyon <eos>", "**Answer:** blue <eos>"): [0.0, 1.0],
        ("**Answer:** Paris", "blue <eos> <eos>"): [1.0, 1.0],  # no EOS (truncated); tokens after an EOS
        ("**Answer:** Rome <eos>", "**Answer:** green <eos>"): [0.0, 0.0],
    }
    for texts, expected in planted.items():
        batch, context = trl_batch(queries, [tokenizer.ids(t) for t in texts], pad=0)
        _, scores, _ = get_reward(model, batch, 0, context)  # exactly what PPOTrainer.train calls
        assert scores.tolist() == expected
        assert scores.dtype == torch.float32
    last = model.backbone.batches[-1]
    assert last.completions == ["**Answer:** Rome", "**Answer:** green"]
    assert len(model.backbone.batches) == len(planted)


def test_the_response_ends_at_the_first_pad_as_in_trl():
    tokenizer = WordTokenizer()
    rows = answer_rows()
    queries = [query_ids(tokenizer, row["prompt"]) for row in rows]
    model = RuleRewardModel(answer_reward, tokenizer, rows, queries)
    response = tokenizer.ids("**Answer:** Paris <pad> **Answer:** Lyon")  # TRL's sequence ends at the pad
    batch, context = trl_batch(queries[:1], [response], pad=0)
    _, scores, _ = get_reward(model, batch, 0, context)
    assert scores.tolist() == [1.0]


def test_queries_are_matched_by_their_token_ids():
    index = QueryIndex([{"id": "short"}, {"id": "long"}, {"id": "again"}], [[5, 6], [5, 6, 7], [5, 6]])
    assert index.match([5, 6, 7, 9]) == ({"id": "long"}, 3)  # the longest query that starts the row
    assert index.match([5, 6, 9]) == ({"id": "short"}, 2)  # a repeated query keeps its first row
    with pytest.raises(KeyError, match="no training query"):
        index.match([6, 5, 7])


def test_ppo_queries_drop_long_and_repeated_prompts():
    tokenizer = WordTokenizer()
    rows = [*answer_rows(), answer_rows()[0], {"prompt": [{"role": "user", "content": "a b c d e f g h"}]}]
    kept, queries = ppo_queries(rows, tokenizer, max_prompt_length=8, role="train")
    assert [row.get("question_id") for row in kept] == ["q1", "q2"]
    assert queries == [query_ids(tokenizer, row["prompt"]) for row in kept]
    assert tokenizer.decode(queries[0]) == "<user> Capital of France? <eos> <assistant>"


def test_prompts_over_the_limit_are_dropped_by_their_token_count():
    tokenizer = WordTokenizer()
    rows = [*answer_rows(), {"prompt": [{"role": "user", "content": "a b c d e f g h"}]}]
    assert prompt_lengths(rows, tokenizer) == [6, 7, 11]  # <user> ... <eos> <assistant>
    assert drop_long_prompts(rows, tokenizer, max_prompt_length=7) == rows[:2]


def test_the_pad_token_is_neither_eos_nor_in_a_query():
    assert pad_token_for(WordTokenizer(), [[3, 4]]) == "<pad>"
    assert pad_token_for(WordTokenizer(pad_token="<eos>"), [[3, 4]]) == "<unk>"  # SmolLM2: pad is its EOS
    with pytest.raises(ValueError, match="pad token other than EOS"):
        pad_token_for(WordTokenizer(pad_token="<eos>"), [[0, 2, 3]])  # <pad> and <unk> occur in prompts


def test_ppo_arguments_need_one_full_batch(tmp_path):
    config = TrainConfig(per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=3, bf16=False)
    with pytest.raises(ValueError, match="at least one batch of 4"):
        ppo_arguments(config, tmp_path, train_rows=3)
    args = ppo_arguments(config, tmp_path, train_rows=4)
    assert (args.total_episodes, args.stop_token, args.temperature) == (12, "eos", 1.0)
    assert (args.learning_rate, args.kl_coef, args.num_sample_generations) == (1e-6, 0.05, 0)


def test_an_updates_reward_is_the_mean_over_its_scored_micro_batches():
    """TRL scores an update's rollouts `local_rollout_forward_batch_size` at a time: 2 updates of 4 rollouts
    scored 2 at a time are 4 scored batches."""
    log = [{"loss/policy_avg": 0.5, "loss/value_avg": 2.0, "step": n} for n in (1, 2)]
    batches = [ScoredBatch(["a", "b"], scores) for scores in ([1.0, 0.0], [0.5, 0.5], [0.0, 0.0], [0.25, 0.25])]
    clock = UpdateClock()
    clock.wall, clock.cpu = [10.0, 12.0], [9.0, 11.0]
    steps = ppo_history(log, batches, clock, vf_coef=0.1, batches_per_update=2)
    assert [(s.step, s.reward, s.loss) for s in steps] == [(1, 0.5, pytest.approx(0.7)), (2, 0.125, pytest.approx(0.7))]
    assert steps[1].values["update_seconds"] == 12.0
    with pytest.raises(RuntimeError, match=r"4 rollout batches scored \(3 per update"):
        ppo_history(log, batches, clock, vf_coef=0.1, batches_per_update=3)


# --- Slow: SmolLM2 --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_reward_model_with_smollm2s_tokenizer(smollm2_hf_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_hf_dir)
    rows = answer_rows()
    queries = [query_ids(tokenizer, row["prompt"]) for row in rows]
    assert tokenizer.eos_token_id in queries[0]  # <|im_end|> closes each chat turn: PPO cannot pad with it
    assert prompt_lengths(rows, tokenizer) == [len(ids) for ids in queries] and min(map(len, queries)) > 10
    tokenizer.pad_token = pad_token_for(tokenizer, queries)
    assert tokenizer.pad_token == "<|endoftext|>"
    model = RuleRewardModel(answer_reward, tokenizer, rows, queries)
    replies = ["- [1]\n**Answer:** Paris<|im_end|>", "**Answer:** grey<|im_end|>"]
    responses = [tokenizer(reply, add_special_tokens=False)["input_ids"] for reply in replies]
    batch, context = trl_batch(queries, responses, tokenizer.pad_token_id)
    _, scores, _ = get_reward(model, batch, tokenizer.pad_token_id, context)
    assert scores.tolist() == [1.0, 0.0]
    assert model.backbone.batches[0].completions == ["- [1]\n**Answer:** Paris", "**Answer:** grey"]


def smoke_config(data_dir: Path, **data: object) -> TrainConfig:
    """One PPO update of 2 rollouts x 8 tokens, one PPO epoch, on real LoCoMo rows with short prompts."""
    return TrainConfig.model_validate(
        {
            "learning_rate": 1e-5,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "max_steps": 1,
            "max_prompt_length": 1024,
            "max_completion_length": 8,
            "eval_max_new_tokens": 8,
            "bf16": False,
            "use_vllm": False,
            "data": {"data_dir": str(data_dir), "bank_source": "turns", "embedder": "hashing", **data},
            "ppo": {"num_ppo_epochs": 1, "critic_learning_rate": 1e-4},
        }
    )


def assert_finite_update(result) -> None:
    assert result.steps == 1 and len(result.history) == 1
    (step,) = result.history
    assert step.reward is not None and step.loss is not None and math.isfinite(step.loss)
    assert all(math.isfinite(value) for value in step.values.values())
    assert step.values["objective/scores"] == step.reward  # TRL got the adapter's rewards (no EOS penalty set)
    assert step.values["update_seconds"] > 0


@pytest.mark.slow
@pytest.mark.train
def test_ppo_updates_the_answer_agent_and_saves_a_checkpoint(smollm2_hf_dir, shared_data_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = smoke_config(shared_data_dir, candidates_per_speaker=1, limit_train=4, limit_val=1)
    result = train_ppo(config, "answer", "gguf:smollm2-135m", tmp_path / "ckpt")
    assert_finite_update(result)
    assert result.history[0].reward in (0.0, 0.5, 1.0)
    assert [point.step for point in result.val] == [0, 1] and result.val_em_after is not None

    before, after = load_file(smollm2_hf_dir / "model.safetensors"), load_file(tmp_path / "ckpt" / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[name], after[name]) for name in before), "PPO left the policy unchanged"

    meta = json.loads((tmp_path / "ckpt" / "train_meta.json").read_text())
    assert (meta["algorithm"], meta["agent"], meta["steps"]) == ("ppo", "answer", 1)
    assert meta["ppo"]["pad_token"] == "<|endoftext|>"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    assert (tokenizer.pad_token, tokenizer.padding_side) == ("<|im_end|>", "right")  # saved as loaded
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    prompt = tokenizer.apply_chat_template(answer_rows()[0]["prompt"], add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]


@pytest.mark.slow
@pytest.mark.train
def test_ppo_updates_the_manager_against_a_frozen_mock_answer_agent(smollm2_hf_dir, shared_data_dir, tmp_path):
    backend = MockBackend(default="- [1]\n**Answer:** Not mentioned")
    reward = ManagerReward(Model(backend, spec="mock"), HashingEmbedder())
    config = smoke_config(shared_data_dir, window_turns=2, limit_train=4, limit_val=0)
    result = train_ppo(config, "manager", "gguf:smollm2-135m", tmp_path / "ckpt", reward=reward)
    assert_finite_update(result)
    assert result.history[0].reward == 0.0 and backend.calls  # the frozen agent answered every question
    assert result.val == []
    meta = json.loads((tmp_path / "ckpt" / "train_meta.json").read_text())
    assert (meta["algorithm"], meta["agent"]) == ("ppo", "manager")
