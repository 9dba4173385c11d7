"""LLM access: backends behind one `generate` interface, a persistent call cache, retries and roles."""

from harness.llm.base import (
    Backend,
    BackendInfo,
    Completion,
    GenerateConfig,
    LLMCallFailed,
    LLMError,
    Message,
    TransientLLMError,
)
from harness.llm.model import Model, usage_of

__all__ = [
    "Backend",
    "BackendInfo",
    "Completion",
    "GenerateConfig",
    "LLMCallFailed",
    "LLMError",
    "Message",
    "Model",
    "TransientLLMError",
    "usage_of",
]
