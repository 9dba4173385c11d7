"""The `openai` backend: the OpenAI API or any server that speaks its chat-completions protocol (vLLM,
llama.cpp's server, Ollama, LM Studio...), through the official `openai` SDK.

The SDK's own retries are switched off: `Model` retries, with its own bounded budget, only what
`classify_api_error` calls transient.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion

from harness.llm.base import BackendInfo, Completion, GenerateConfig, LLMError, Message, TransientLLMError

DEFAULT_TIMEOUT_S = 120.0
LOCAL_API_KEY = "EMPTY"
"""Sent to a custom base URL when no key is set: local servers ignore it, the SDK insists on one."""
SERVER_KEY_ENV = "HARNESS_SERVER_API_KEY"
"""The key for servers named in a spec (`openai:MODEL@URL`), e.g. a vLLM server started with `--api-key`."""
_RETRYABLE_STATUS = frozenset({408, 409, 429})


def classify_api_error(error: openai.APIError, where: str) -> LLMError:
    """The harness error for an SDK error: transient for connection failures, timeouts, rate limits and 5xx.

    litellm's exceptions subclass the SDK's, so its backend uses this too. The message carries the error's
    class and text only; neither the SDK nor this function puts the API key in it.
    """
    message = f"{where}: {type(error).__name__}: {error}"
    if isinstance(error, openai.APIConnectionError | openai.RateLimitError | openai.InternalServerError):
        return TransientLLMError(message)
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and (status >= 500 or status in _RETRYABLE_STATUS):
        return TransientLLMError(message)
    return LLMError(message)


def resolve_api_key(model: str, base_url: str | None, api_key: str | None) -> str:
    """The key to send: `api_key` if given; for a server named in the spec (`base_url` set),
    `HARNESS_SERVER_API_KEY` or a placeholder, never `OPENAI_API_KEY` (so a real OpenAI key does not reach a
    third-party server by accident); for the OpenAI API, `OPENAI_API_KEY` or a clear error."""
    if base_url is not None:
        return api_key or os.environ.get(SERVER_KEY_ENV) or LOCAL_API_KEY
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise LLMError(f"openai:{model}: set OPENAI_API_KEY, or give a server as openai:{model}@http://host:port/v1")
    return key


class OpenAIBackend:
    """Chat completions over HTTP with `openai.AsyncOpenAI`.

    Args:
        model: the model name the server knows (`gpt-4o-mini`, or what a local server was started with).
        base_url: the server's `/v1` URL; None for the OpenAI API (or `OPENAI_BASE_URL`).
        api_key: defaults to `OPENAI_API_KEY` for the OpenAI API. A custom base URL (from the spec) gets
            `HARNESS_SERVER_API_KEY` or a placeholder, never `OPENAI_API_KEY`, so a real OpenAI key is not
            sent to a third-party server by accident.
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
            raise LLMError("the openai backend needs a model name: openai:MODEL or openai:MODEL@http://host:port/v1")
        key = resolve_api_key(model, base_url, api_key)
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        # Servers of this protocol (OpenAI, vLLM, llama.cpp's) compile a strict `json_schema` into their decoder.
        self.info = BackendInfo(provider="openai", model=model, base_url=base_url, structured_outputs="enforced")
        # The OpenAI API wants `max_completion_tokens` (reasoning models reject `max_tokens`); servers that
        # copy the protocol (llama.cpp, older vLLM) know only `max_tokens`.
        self._max_tokens_param = "max_completion_tokens" if base_url is None else "max_tokens"
        self._client = openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout_s)
        self._schema_dialect: Literal["json_schema", "json_object"] = "json_schema"
        """How this server takes a schema: OpenAI's `json_schema` type, or llama-cpp-python's `json_object`."""

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        options = config.sampling_options()
        options[self._max_tokens_param] = config.max_tokens
        if config.json_schema is not None and self._schema_dialect == "json_object":
            options["response_format"] = {"type": "json_object", "schema": config.json_schema.schema}
        try:
            response = await self._create(messages, options)
        except openai.APIStatusError as error:
            rejected_format = "response_format" in str(error) and error.status_code in (400, 422, 500)
            if config.json_schema is None or self._schema_dialect != "json_schema" or not rejected_format:
                raise classify_api_error(error, f"openai:{self.info.model}") from error
            # llama-cpp-python's server knows only `json_object` with a `schema` beside it (it answers the
            # `json_schema` type with a 500 naming `response_format`): try its form once, and keep it for this
            # server if it is accepted.
            options["response_format"] = {"type": "json_object", "schema": config.json_schema.schema}
            try:
                response = await self._create(messages, options)
            except openai.APIError as retry_error:
                raise classify_api_error(error, f"openai:{self.info.model}") from retry_error
            self._schema_dialect = "json_object"
            self.info.extra["schema_format"] = "json_object+schema"
        except openai.APIError as error:
            raise classify_api_error(error, f"openai:{self.info.model}") from error
        return self._completion(response)

    async def _create(self, messages: list[Message], options: dict[str, Any]) -> ChatCompletion:
        response: ChatCompletion = await self._client.chat.completions.create(
            model=self.info.model,
            messages=messages,  # type: ignore[arg-type]
            **options,
        )
        return response

    def _completion(self, response: ChatCompletion) -> Completion:
        if not response.choices:
            raise LLMError(f"openai:{self.info.model}: the response has no choices")
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason,
        )

    def count_tokens(self, text: str) -> int | None:
        return None

    async def aclose(self) -> None:
        await self._client.close()
