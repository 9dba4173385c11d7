"""The lm-evaluation-harness bridge (harness/lm_eval_tasks): docs, prompts, `--limit` order and scores match
`harness run --system full-context`, and both give the same answers (a tiny random model on a synthetic LoCoMo
file here; the real SmolLM2 on real LoCoMo in the slow test)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import write_tiny_llama

from harness.inputs import InputError
from harness.lm_eval_tasks import include_path
from harness.lm_eval_tasks.__main__ import main as lm_eval_tasks_main
from harness.metrics.base import MetricContext
from harness.results import RunDir
from harness.runner import RunConfig, run
from harness.scoring import build_metric
from harness.selection import stratified_subset
from harness.task import DataOptions
from harness.types import Prediction, Question
from systems.prompts import ANSWER_INSTRUCTIONS, clean_short_answer

pytest.importorskip("lm_eval", reason="needs lm-eval: pip install -e '.[lm-eval]'")
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from harness.lm_eval_tasks.bridge import FullContextTask, read_settings, short_answers, text_metrics

REQUIRED_DATA = ["locomo/locomo10.json"]
TINY_WINDOW = 512
SPEAKERS = ("Ann", "Ben")
TOPICS = ["a red bicycle", "the lake house", "a job in Lisbon", "her sister Cleo", "a jazz concert", "the garden"]


def synthetic_locomo(path: Path) -> Path:
    """Two conversations in locomo10.json's format: six dated sessions each (longer together than the tiny
    model's window, so full-context drops the oldest), questions of three categories plus an adversarial one."""
    items = []
    for c in range(2):
        conversation: dict[str, Any] = {"speaker_a": SPEAKERS[0], "speaker_b": SPEAKERS[1]}
        for s, topic in enumerate(TOPICS, start=1):
            conversation[f"session_{s}"] = [
                {"speaker": SPEAKERS[t % 2], "dia_id": f"D{s}:{t + 1}", "text": f"Turn {t} of talk {c}: about {topic}."}
                for t in range(6)
            ]
            conversation[f"session_{s}_date_time"] = f"1:00 pm on {s} May, 2023"
        qa = [
            {"question": f"What did Ann say about {topic}?", "answer": topic, "evidence": ["D1:1"], "category": cat}
            for topic, cat in zip(TOPICS, (1, 2, 4, 4, 2, 4), strict=True)
        ]
        qa.append({"question": "Who won?", "adversarial_answer": "Ben", "evidence": [], "category": 5})
        items.append({"sample_id": f"conv-{c}", "conversation": conversation, "qa": qa})
    path.write_text(json.dumps(items))
    return path


@pytest.fixture(scope="module")
def locomo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_locomo(tmp_path_factory.mktemp("locomo") / "locomo10.json")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, locomo_file: Path) -> Path:
    texts = [ANSWER_INSTRUCTIONS, locomo_file.read_text()]
    # A vocabulary learnt on these texts takes about as many tokens for the instructions as a real tokenizer; the
    # wide initialisation makes its noise depend on the prompt.
    folder = tmp_path_factory.mktemp("tiny-llama")
    return write_tiny_llama(folder, texts, max_positions=TINY_WINDOW, vocab_size=1000, initializer_range=0.5)


def task_manager(**metadata: object) -> TaskManager:
    return TaskManager(include_path=str(include_path()), include_defaults=False, metadata=metadata)


def load_task(name: str = "memory_locomo", **metadata: object) -> FullContextTask:
    task = task_manager(**metadata).load([name])["tasks"][name]
    assert isinstance(task, FullContextTask)
    return task


def harness_records(output: Path, **config: Any) -> dict[str, dict[str, Any]]:
    """`harness run --system full-context`'s records by question id (one call at a time, as lm-eval's batch 1)."""
    settings: dict[str, Any] = {"system": "full-context", "output_dir": output, "run_id": "r", "use_cache": False}
    result = asyncio.run(run(RunConfig(**settings, max_concurrency=1, **config)))
    records = RunDir(output / config["task"] / "full-context" / result.run_id).read_questions()
    return {r.question_id: r.model_dump() for r in records}


def lm_eval_samples(model: Path, limit: int, **metadata: object) -> list[dict[str, Any]]:
    results = simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model), "device": "cpu"},
        tasks=["memory_locomo"],
        task_manager=task_manager(pretrained=str(model), **metadata),
        limit=limit,
        apply_chat_template=True,
        log_samples=True,
        bootstrap_iters=0,
    )
    assert results is not None
    return list(results["samples"]["memory_locomo"])


def assert_same_answers(harness: dict[str, dict[str, Any]], lm_eval: list[dict[str, Any]]) -> None:
    assert sorted(s["doc"]["question_id"] for s in lm_eval) == sorted(harness)
    for sample in lm_eval:
        record = harness[sample["doc"]["question_id"]]
        assert sample["filtered_resps"] == [record["prediction"]["answer"]]
        assert sample["resps"] == [[record["prediction"]["metadata"]["raw_answer"]]]
        qtype = sample["doc"]["question_type"]
        for metric, value in record["scores"].items():
            assert sample[metric] == pytest.approx(value) and sample[f"{metric}/{qtype}"] == pytest.approx(value)


def test_the_module_prints_the_include_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert lm_eval_tasks_main([]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == include_path()
    assert {p.name for p in folder.glob("*.yaml")} == {"memory_locomo.yaml", "memory_longmemeval.yaml"}


def test_lm_eval_lists_the_tasks() -> None:
    names = task_manager().all_tasks
    assert {"memory_locomo", "memory_longmemeval"} <= set(names)


def test_docs_are_the_harness_questions_in_run_order(locomo_file: Path, tiny_model: Path) -> None:
    task = load_task(pretrained=str(tiny_model), data_file=str(locomo_file))
    docs = list(task.test_docs())
    questions = [q for sample in task.task_data.samples for q in sample.questions]
    assert [d["question_id"] for d in docs] == [q.question_id for q in questions]
    assert len(docs) == 12  # the adversarial questions are left out, as `harness run` leaves them out
    assert task.VERSION == "locomo10@3eb6f2c"
    assert docs[0]["target"] == TOPICS[0] and docs[0]["question_type"] == "multi-hop"


def test_task_options_and_data_come_from_the_metadata(locomo_file: Path, tiny_model: Path) -> None:
    task = load_task(pretrained=str(tiny_model), data_file=str(locomo_file), include_adversarial=True)
    assert len(task.test_docs()) == 14
    assert "adversarial" in task.task_data.question_types


def test_limit_puts_the_harness_subset_first(locomo_file: Path, tiny_model: Path) -> None:
    task = load_task(pretrained=str(tiny_model), data_file=str(locomo_file), seed=3)
    for limit in (1, 4, 7):
        order = task.harness_order(limit)
        assert order is not None and sorted(order) == list(range(12))
        chosen = stratified_subset(task.task_data.samples, limit, 3)
        ids = task.dataset["test"]["question_id"]
        assert [ids[i] for i in order[:limit]] == [q.question_id for s in chosen for q in s.questions]
    assert task.harness_order(None) is None and task.harness_order(12) is None


def test_prompt_is_full_context_s_fitted_to_the_window(locomo_file: Path, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    task = load_task(pretrained=str(tiny_model), data_file=str(locomo_file))
    doc = task.test_docs()[0]
    system = task.system_for(doc["sample_id"])
    history = system.fitted_history()
    assert 0 < history.dropped_sessions < len(TOPICS)  # the window is too small for the whole history
    messages = task.messages_for(doc)
    assert messages[0]["content"] == ANSWER_INSTRUCTIONS and history.text in messages[1]["content"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rendered = task.fewshot_context(doc, 0, apply_chat_template=True, chat_template=_chat_template(tokenizer))
    assert rendered == tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert len(tokenizer(rendered, add_special_tokens=False)["input_ids"]) < TINY_WINDOW - 32


def _chat_template(tokenizer: Any) -> Any:
    """What lm-eval's HFLM hands the task as `chat_template`."""
    return lambda messages, add_generation_prompt=True: tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def test_without_a_chat_template_or_with_a_system_instruction_it_refuses(locomo_file: Path, tiny_model: Path) -> None:
    task = load_task(pretrained=str(tiny_model), data_file=str(locomo_file))
    doc = task.test_docs()[0]
    with pytest.raises(InputError, match="--apply_chat_template"):
        task.fewshot_context(doc, 0)
    with pytest.raises(InputError, match="--system_instruction"):
        task.fewshot_context(doc, 0, "Be brief.", apply_chat_template=True, chat_template=lambda m: "")


def test_a_model_without_a_tokenizer_name_is_refused(locomo_file: Path) -> None:
    with pytest.raises(InputError, match="pretrained=DIR"):
        load_task(data_file=str(locomo_file))


def test_bad_metadata_is_one_line() -> None:
    with pytest.raises(InputError, match=r"^lm_eval task memory_locomo: metadata: .*seed") as error:
        read_settings("memory_locomo", {"harness_task": "locomo", "seed": "soon"})
    assert "\n" not in str(error.value)
    assert read_settings("t", {"harness_task": "locomo", "pretrained": object()}).pretrained is None


@pytest.mark.parametrize("metric", ["llm_judge", "evidence_recall@5"])
def test_metrics_other_than_text_metrics_are_refused(metric: str) -> None:
    assert [m.name for m in text_metrics(["f1", "bleu1"])] == ["f1", "bleu1"]
    with pytest.raises(InputError, match=f"metric {metric} is not a text metric"):
        text_metrics(["f1", metric])


def test_scores_are_the_harness_metrics_overall_and_per_type(locomo_file: Path, tiny_model: Path) -> None:
    task = load_task(pretrained=str(tiny_model), data_file=str(locomo_file))
    doc = task.test_docs()[2]  # a single-hop question: gold "a job in Lisbon"
    (answer,) = short_answers([["Answer: a job in Lisbon\nmore"]], [doc])[0]
    assert answer == clean_short_answer("Answer: a job in Lisbon\nmore") == "a job in Lisbon"
    scores = task.process_results(doc, [answer])
    assert scores["exact_match"] == scores["exact_match/single-hop"] == 1.0
    assert scores["f1_locomo"] == 1.0 and set(scores) == {
        f"{m}{suffix}" for m in ("f1_locomo", "f1", "bleu1", "exact_match") for suffix in ("", "/single-hop")
    }
    question = Question.model_validate_json(doc["harness_question"])
    for metric in ("f1_locomo", "f1", "bleu1"):
        harness_score = asyncio.run(
            build_metric(metric, MetricContext()).score(question, Prediction(question_id="q", answer="Lisbon"))
        )
        assert task.process_results(doc, ["Lisbon"])[metric] == harness_score.value
        assert 0 < harness_score.value < 1


def test_longmemeval_asks_on_the_question_date(tiny_model: Path, shared_data_dir: Path) -> None:
    path = shared_data_dir / "longmemeval" / "longmemeval_oracle_sample_2q.json"
    if not path.is_file():
        pytest.skip(f"real data file {path} is absent")
    task = load_task("memory_longmemeval", pretrained=str(tiny_model), data_file=str(path))
    assert task.VERSION.startswith("longmemeval-cleaned@") and task.task_data.options == {"variant": "oracle"}
    docs = list(task.test_docs())
    assert [d["question_type"] for d in docs] == ["knowledge-update", "abstention"]
    question = Question.model_validate_json(docs[0]["harness_question"])
    assert question.date and f"The question is asked on {question.date}." in task.doc_to_text(docs[0])
    assert set(task.process_results(docs[1], ["Not mentioned"])) == {
        f"{m}{suffix}" for m in ("f1", "bleu1", "exact_match") for suffix in ("", "/abstention")
    }


def test_same_answers_as_harness_run_on_a_tiny_model(locomo_file: Path, tiny_model: Path, tmp_path: Path) -> None:
    data = DataOptions(data_file=str(locomo_file))
    harness = harness_records(tmp_path, task="locomo", roles={"model": f"hf:{tiny_model}"}, data=data, limit=3)
    assert all(r["prediction"]["metadata"]["sessions_dropped"] > 0 for r in harness.values())
    assert len({r["prediction"]["answer"] for r in harness.values()}) == 3  # each prompt its own reply
    assert_same_answers(harness, lm_eval_samples(tiny_model, 3, data_file=str(locomo_file)))


@pytest.mark.long  # ~3 minutes on 2 cores: the tiny-model test above keeps the guarantee in the default suite
def test_same_answers_as_harness_run_on_smollm2_and_real_locomo(
    smollm2_hf_dir: Path, shared_data_dir: Path, tmp_path: Path
) -> None:
    """The command the README shows, in a subprocess, against `harness run` on the same two questions."""
    data = DataOptions(data_dir=str(shared_data_dir))
    harness = harness_records(
        tmp_path / "harness", task="locomo", roles={"model": f"hf:{smollm2_hf_dir}"}, data=data, limit=2
    )
    assert all(r["prediction"]["metadata"]["sessions_dropped"] > 0 for r in harness.values())  # ~20k tokens > 8k
    out = tmp_path / "lm_eval"
    command = [
        *(sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={smollm2_hf_dir}"),
        *("--include_path", str(include_path()), "--tasks", "memory_locomo", "--apply_chat_template"),
        *("--limit", "2", "--device", "cpu", "--log_samples", "--output_path", str(out)),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HARNESS_DATA_DIR": str(shared_data_dir)}
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=1200)
    (samples_file,) = out.glob("*/samples_memory_locomo_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert_same_answers(harness, samples)
