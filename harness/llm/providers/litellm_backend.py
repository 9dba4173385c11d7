"""The `litellm` backend: any provider litellm routes to (`anthropic/...`, `gemini/...`, `openai/...@URL`).

litellm's own retries are off (`num_retries=0`): `Model` retries. Parameters a provider does not support
(a seed for Anthropic, say) are dropped by litellm rather than failing every call; they still enter the
cache key, which is harmless.
"""

from __future__ import annotations

import os

from harness.llm.base import BackendInfo, Completion, GenerateConfig, LLMError, Message
from harness.llm.providers.openai_compat import DEFAULT_TIMEOUT_S, classify_api_error, resolve_api_key
from harness.llm.structured import StructuredOutputs

# litellm fetches its model price map from the network at import unless told otherwise.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import openai

# Otherwise every exception also prints litellm's "Give Feedback / Get Help" banner to stdout.
litellm.suppress_debug_info = True


def _schema_support(model: str) -> StructuredOutputs:
    """`enforced` where litellm's model table says the provider honours `response_format` schemas; else the
    schema is still passed on (`requested`), and whether it was honoured is unknown."""
    try:
        supported = litellm.supports_response_schema(model=model)
    except Exception:  # litellm raises assorted errors for models its table does not know
        supported = False
    return "enforced" if supported else "requested"


class LiteLLMBackend:
    """Chat completions through `litellm.acompletion`.

    Args:
        model: litellm's `provider/model` name, e.g. `anthropic/claude-3-5-haiku-latest`.
        base_url: passed as litellm's `api_base` (an OpenAI-compatible server: `openai/NAME@http://.../v1`).
        api_key: defaults to the provider's usual environment variable (read by litellm); with a custom base
            URL, `HARNESS_SERVER_API_KEY` or a placeholder (never the provider's key, e.g. `OPENAI_API_KEY`).
        timeout_s: per-request timeout in seconds.
    """

    def __init__(
        self,
        model: str | None,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not model:
            raise LLMError(
                "the litellm backend needs a model name: litellm:PROVIDER/MODEL (e.g. gemini/gemini-2.0-flash)"
            )
        self.info = BackendInfo(
            provider="litellm", model=model, base_url=base_url, structured_outputs=_schema_support(model)
        )
        self._api_key = api_key
        if base_url is not None:
            # As for the openai backend: a provider's own key is never sent to a server named in the spec.
            self._api_key = resolve_api_key(model, base_url, api_key)
        self._timeout_s = timeout_s

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        where = f"litellm:{self.info.model}"
        try:
            response = await litellm.acompletion(
                model=self.info.model,
                messages=list(messages),
                max_tokens=config.max_tokens,
                api_base=self.info.base_url,
                api_key=self._api_key,
                timeout=self._timeout_s,
                num_retries=0,
                drop_params=True,
                **config.sampling_options(),
            )
        except openai.APIError as error:
            # litellm's exception classes derive from the openai SDK's.
            raise classify_api_error(error, where) from error
        choices = getattr(response, "choices", None)
        if not choices:
            raise LLMError(f"{where}: the response has no choices")
        choice = choices[0]
        usage = getattr(response, "usage", None)
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            finish_reason=choice.finish_reason,
        )

    def count_tokens(self, text: str) -> int | None:
        # litellm.token_counter falls back to a tiktoken encoding for models it cannot tokenize exactly
        # (every local model, Claude): an estimate, and this method promises exact counts or None.
        return None

    async def aclose(self) -> None:
        # litellm keeps its HTTP clients in a process-wide cache shared by every backend; nothing per instance.
        return None
