"""A harness benchmark as an lm-evaluation-harness `generate_until` task, asked as `full-context` asks it.

The YAML files beside this module (`memory_locomo`, `memory_longmemeval`) name `FullContextTask`. It is built
from the harness's own pieces, so that `lm_eval --model hf --model_args pretrained=DIR --apply_chat_template`
sends each question what `harness run --system full-context --answer-model hf:DIR` sends, and scores it alike:

- docs: one per question, from the harness task loader, in the order the runner meets them;
- prompt: `FullContextSystem.prompt`, the history fitted into the model's window by the model's own tokenizer
  (oldest sessions dropped first), rendered by the tokenizer's chat template (lm-eval's `--apply_chat_template`
  calls it as the `hf` backend does; without that flag the task refuses to run rather than send plain text);
- decoding: greedy, `max_gen_toks` = full-context's `max_answer_tokens`, stopping only at the end of turn;
- answer: `clean_short_answer`, applied as lm-eval's filter `harness_answer` (so `--log_samples` shows the
  scored answer);
- scores: the harness's text metrics (the task's defaults), overall and per question type, e.g.
  `f1_locomo/single-hop`; values are fractions (the harness's tables show them x100).

`--limit N`: lm-eval takes the first N docs, so for a run limited to N the docs are reordered with the
questions of the harness's `--limit N --seed S` subset (seeded, stratified by type) first.

Settings are the task's metadata: the YAML's, then every `--model_args` entry, then `--metadata` (JSON), later
ones winning. Read here: `pretrained` or `tokenizer` (whose tokenizer and `config.json` window fit the
history), `max_length` (lm-eval's window for the model; it becomes the history's window too),
`max_context_tokens` and `max_answer_tokens` (full-context's `-S` options), `seed` (`--seed`, default 0),
`data_file` and `data_dir` (`--data-file`, `--data-dir`; default `$HARNESS_DATA_DIR`), `metrics` (a list of
text metrics) and the task options the YAML lists under `task_options` (LoCoMo's `split`, ...).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from datasets import Dataset, DatasetDict
from lm_eval.api.task import ConfigurableTask
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.inputs import InputError, validation_problems
from harness.llm.base import Message
from harness.llm.build import build_model
from harness.llm.model import Model
from harness.metrics.base import MetricContext, TextMetric
from harness.plugins import TASKS
from harness.scoring import build_metric, is_judge_metric
from harness.selection import stratified_subset
from harness.system import SystemContext, ingest_history
from harness.task import DataOptions, TaskData
from harness.types import Question
from systems.full_context import FullContextOptions, FullContextSystem
from systems.prompts import clean_short_answer

TEST_SPLIT = "test"
ANSWER_FILTER = "harness_answer"


class BridgeSettings(BaseModel):
    """What the task reads from its metadata (which also carries every model argument: those are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    harness_task: str
    task_options: list[str] = Field(default_factory=list)
    """The harness task's option names that a metadata key of the same name sets (the YAML lists them)."""
    data_file: str | None = None
    data_dir: str | None = None
    seed: int = 0
    metrics: list[str] | None = None
    pretrained: str | None = None
    tokenizer: str | None = None
    max_length: int | None = None
    max_context_tokens: int | None = None
    max_answer_tokens: int | None = None

    @property
    def tokenizer_source(self) -> str | None:
        return self.pretrained or self.tokenizer

    def full_context_options(self) -> FullContextOptions:
        window = self.max_context_tokens or self.max_length
        answer_tokens = {} if self.max_answer_tokens is None else {"max_answer_tokens": self.max_answer_tokens}
        return FullContextOptions(max_context_tokens=window, **answer_tokens)


def read_settings(task: str, metadata: Mapping[str, Any]) -> BridgeSettings:
    # `pretrained` may be a model object when lm-eval is called from Python: only a name tells us a tokenizer.
    named = {
        key: value
        for key, value in metadata.items()
        if key not in ("pretrained", "tokenizer") or isinstance(value, str)
    }
    try:
        return BridgeSettings.model_validate(named)
    except ValidationError as error:
        raise InputError(f"lm_eval task {task}: metadata: {validation_problems(error)}") from None


def option_text(value: object) -> str:
    """A metadata value as the harness's `-T KEY=VALUE` would spell it."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def load_task(settings: BridgeSettings, metadata: Mapping[str, Any]) -> TaskData:
    options = {name: option_text(metadata[name]) for name in settings.task_options if name in metadata}
    data = DataOptions(data_file=settings.data_file, data_dir=settings.data_dir)
    return TASKS.get(settings.harness_task).load(data, **options)


def text_metrics(names: Iterable[str]) -> list[TextMetric]:
    metrics = []
    for name in names:
        metric = None if is_judge_metric(name) else build_metric(name, MetricContext())
        if not isinstance(metric, TextMetric):
            raise InputError(
                f"metric {name} is not a text metric (answer vs gold); lm_eval tasks score with those only"
            )
        metrics.append(metric)
    return metrics


def per_type(metric: str, question_type: str) -> str:
    return f"{metric}/{question_type}"


def short_answers(resps: Iterable[list[str]], docs: object) -> list[list[str]]:
    """lm-eval's `custom` filter: each reply cut to its answer as `full-context` cuts it."""
    return [[clean_short_answer(reply) for reply in replies] for replies in resps]


def score_answer(doc: Mapping[str, Any], results: list[str], metrics: list[TextMetric]) -> dict[str, float]:
    """lm-eval's `process_results`: the harness metrics of the filtered answer, overall and per question type.
    (A plain function: lm-eval deep-copies its config, and a bound method would copy the whole task.)"""
    question = Question.model_validate_json(doc["harness_question"])
    scores = {}
    for metric in metrics:
        value = metric.fn(results[0], question)
        scores[metric.name] = scores[per_type(metric.name, question.question_type)] = value
    return scores


class FullContextTask(ConfigurableTask):
    """One question per doc, prompted and scored as `harness run --system full-context` does (module docstring)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        name = str(config.get("task"))
        metadata = dict(config.get("metadata") or {})
        self.settings = read_settings(name, metadata)
        self.task_data = load_task(self.settings, metadata)
        self.metrics = text_metrics(self.settings.metrics or self.task_data.default_metrics)
        self.options = self.settings.full_context_options()
        self._systems: dict[str, FullContextSystem] = {}
        self._order: list[int] | None = None
        """Doc positions in evaluation order for the current `--limit`; None: the task's order."""
        metadata["version"] = self.task_data.version
        lm_eval_config = {key: value for key, value in config.items() if key != "class"}
        super().__init__(config={**lm_eval_config, **self._lm_eval_config(), "metadata": metadata})

    def _lm_eval_config(self) -> dict[str, Any]:
        keys = [(m.name, m.higher_is_better) for m in self.metrics]
        keys += [(per_type(m.name, t), m.higher_is_better) for m in self.metrics for t in self.task_data.question_types]
        return {
            "output_type": "generate_until",
            "test_split": TEST_SPLIT,
            "doc_to_target": "target",
            "num_fewshot": 0,
            "generation_kwargs": {
                "until": [],  # lm-eval adds the end-of-turn token, where the `hf` backend stops too
                "max_gen_toks": self.options.max_answer_tokens,
                "do_sample": False,
                "temperature": 0.0,
            },
            "filter_list": [
                {
                    "name": ANSWER_FILTER,
                    "filter": [{"function": "custom", "filter_fn": short_answers}, {"function": "take_first"}],
                }
            ],
            "metric_list": [{"metric": k, "aggregation": "mean", "higher_is_better": hib} for k, hib in keys],
            "process_results": functools.partial(score_answer, metrics=self.metrics),
        }

    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: object) -> None:
        rows = [
            {
                "question_id": q.question_id,
                "sample_id": sample.sample_id,
                "question_type": q.question_type,
                "question": q.text,
                "answers": list(q.answers),
                "target": q.answers[0] if q.answers else "",
                "harness_question": q.model_dump_json(),
            }
            for sample in self.task_data.samples
            for q in sample.questions
        ]
        if not rows:
            raise InputError(f"lm_eval task {self.settings.harness_task}: the task options select no questions")
        self.dataset = DatasetDict({TEST_SPLIT: Dataset.from_list(rows)})

    def test_docs(self) -> Dataset:
        docs = self.dataset[TEST_SPLIT]
        return docs if self._order is None else docs.select(self._order)

    def build_all_requests(self, *, limit: int | None = None, **kwargs: Any) -> None:
        self._order = self.harness_order(limit)
        super().build_all_requests(limit=limit, **kwargs)

    def harness_order(self, limit: int | None) -> list[int] | None:
        """Doc positions with the harness's `--limit` subset first (None: no limit, or one that takes all)."""
        ids = self.dataset[TEST_SPLIT]["question_id"]
        if limit is None or limit >= len(ids):
            return None
        chosen = stratified_subset(self.task_data.samples, limit, self.settings.seed)
        position = {question_id: index for index, question_id in enumerate(ids)}
        first = [position[q.question_id] for sample in chosen for q in sample.questions]
        taken = set(first)
        return first + [index for index in range(len(ids)) if index not in taken]

    @functools.cached_property
    def answer_model(self) -> Model:
        """The `hf` backend over the model's directory: its tokenizer and window fit the history (the model
        itself is never loaded here)."""
        source = self.settings.tokenizer_source
        if source is None:
            raise InputError(
                f"lm_eval task {self.config.task}: the history is fitted to the model's tokenizer; pass "
                "pretrained=DIR (or tokenizer=DIR) in --model_args or --metadata"
            )
        return build_model(f"hf:{source}")

    def system_for(self, sample_id: str) -> FullContextSystem:
        """The `full-context` system holding a sample's history (built once per sample)."""
        if sample_id not in self._systems:
            sample = next(s for s in self.task_data.samples if s.sample_id == sample_id)
            context = SystemContext(roles={"model": self.answer_model}, speakers=sample.conversation.speakers)
            options = {k: str(v) for k, v in self.options.model_dump(exclude_none=True).items()}
            system = FullContextSystem(context, **options)
            asyncio.run(ingest_history(system, sample.conversation.sessions))
            self._systems[sample_id] = system
        return self._systems[sample_id]

    def messages_for(self, doc: Mapping[str, Any]) -> list[Message]:
        query = Question.model_validate_json(doc["harness_question"]).to_query()
        return self.system_for(doc["sample_id"]).prompt(query)

    def doc_to_text(self, doc: Mapping[str, Any], doc_to_text: object = None) -> str:
        return self.messages_for(doc)[-1]["content"]

    def fewshot_context(
        self,
        doc: Mapping[str, Any],
        num_fewshot: int,
        system_instruction: str | None = None,
        apply_chat_template: bool = False,
        fewshot_as_multiturn: bool = False,
        chat_template: Callable[..., str] | None = None,
        gen_prefix: str | None = None,
    ) -> str:
        task = self.config.task
        if not apply_chat_template or chat_template is None:
            raise InputError(
                f"lm_eval task {task}: pass --apply_chat_template; the harness's prompt is chat messages, "
                "rendered by the model's chat template as `harness run` renders them"
            )
        if system_instruction:
            raise InputError(f"lm_eval task {task}: --system_instruction would change the harness's prompt")
        return chat_template(self.messages_for(doc))
