"""LLM access: backends behind one `generate` interface, a persistent call cache, retries and roles."""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from harness.llm.model import Model, usage_of


def __getattr__(name: str) -> Any:
    """`Model` and `usage_of` on first use: they pull in the cache (sqlite3) and asyncio, which `ls` and
    `--help` never need."""
    if name in ("Model", "usage_of"):
        from harness.llm import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
