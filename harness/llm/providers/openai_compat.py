"""The `openai` backend: the OpenAI API or any server that speaks its chat-completions protocol (vLLM,
llama.cpp's server, Ollama, LM Studio...).

Requests go through a lean HTTP/1.1 client (`harness.llm.providers.http1`), not the `openai` SDK: the body is
built with orjson and the reply read with `json`, at a fifteenth of the SDK's CPU per call on long prompts
(figures in the module docstring of `http1`). No retries happen here: `Model` retries, with its own
bounded budget, what this backend raises as `TransientLLMError`.

`classify_api_error` maps the SDK's exceptions for the backends that still use the SDK (litellm, embeddings).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import orjson

from harness.llm.base import BackendInfo, Completion, GenerateConfig, LLMError, Message, TransientLLMError
from harness.llm.prefix_memo import SEPARATOR, PrefixMemo
from harness.llm.providers.http1 import HTTPClient, ProtocolError, Response
from harness.llm.retry import parse_retry_after

if TYPE_CHECKING:
    import openai

DEFAULT_TIMEOUT_S = 120.0
OPENAI_API_URL = "https://api.openai.com/v1"
LOCAL_API_KEY = "EMPTY"
"""Sent to a custom base URL when no key is set: local servers ignore it, some insist on one."""
SERVER_KEY_ENV = "HARNESS_SERVER_API_KEY"
"""The key for servers named in a spec (`openai:MODEL@URL`), e.g. a vLLM server started with `--api-key`."""
ACCOUNT_HEADERS_ENV = {"OpenAI-Organization": "OPENAI_ORG_ID", "OpenAI-Project": "OPENAI_PROJECT_ID"}
"""Sent, as the SDK sends them, where `OPENAI_API_KEY` goes (never to a server named in the spec)."""
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_MESSAGE_CHARS = 500


def _transient_status(status: int) -> bool:
    return status >= 500 or status in _RETRYABLE_STATUS


def classify_api_error(error: openai.APIError, where: str) -> LLMError:
    """The harness error for an `openai` SDK error: transient for connection failures, timeouts, rate limits
    and 5xx, with the server's `Retry-After` when it sent one.

    litellm's exceptions subclass the SDK's, so its backend uses this too. The message carries the error's
    class and text only; neither the SDK nor this function puts the API key in it.
    """
    import openai

    message = f"{where}: {type(error).__name__}: {error}"
    status = getattr(error, "status_code", None)
    transient = isinstance(error, openai.APIConnectionError | openai.RateLimitError | openai.InternalServerError)
    if transient or (isinstance(status, int) and _transient_status(status)):
        headers = getattr(getattr(error, "response", None), "headers", None)
        retry_after = parse_retry_after(headers.get("retry-after")) if isinstance(headers, Mapping) else None
        return TransientLLMError(message, retry_after_s=retry_after)
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


def _server_message(body: bytes) -> str:
    """The error message of a reply body (OpenAI's `{"error": {"message"}}`, vLLM's `{"message"}`, or the raw
    text), on one line."""
    try:
        reply = json.loads(body)
    except ValueError:
        reply = None
    if isinstance(reply, dict):
        error = reply.get("error")
        message = error.get("message") if isinstance(error, dict) else error or reply.get("message")
        text = str(message) if message else json.dumps(reply)
    else:
        text = body.decode("utf-8", "replace")
    return " ".join(text.split())[:_MESSAGE_CHARS]


class OpenAIBackend:
    """Chat completions over HTTP (see the module docstring).

    Args:
        model: the model name the server knows (`gpt-4o-mini`, or what a local server was started with).
        base_url: the server's `/v1` URL; None for the OpenAI API (or `OPENAI_BASE_URL`).
        api_key: defaults to `OPENAI_API_KEY` for the OpenAI API. A custom base URL (from the spec) gets
            `HARNESS_SERVER_API_KEY` or a placeholder, never `OPENAI_API_KEY`, so a real OpenAI key is not
            sent to a third-party server by accident.
        timeout_s: per-request timeout in seconds (connecting and reading the whole reply).
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
        self._key = resolve_api_key(model, base_url, api_key)
        headers = {"Authorization": f"Bearer {self._key}", "User-Agent": "memory-harness"}
        if base_url is None:
            headers |= {name: os.environ[env] for name, env in ACCOUNT_HEADERS_ENV.items() if os.environ.get(env)}
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        # Servers of this protocol (OpenAI, vLLM, llama.cpp's) compile a strict `json_schema` into their decoder.
        self.info = BackendInfo(provider="openai", model=model, base_url=base_url, structured_outputs="enforced")
        self._where = f"openai:{model}"
        # The OpenAI API wants `max_completion_tokens` (reasoning models reject `max_tokens`); servers that
        # copy the protocol (llama.cpp, older vLLM) know only `max_tokens`.
        self._max_tokens_param = "max_completion_tokens" if base_url is None else "max_tokens"
        try:
            self._client = HTTPClient(base_url or OPENAI_API_URL, headers, timeout_s)
        except ValueError as error:
            raise LLMError(f"{self._where}: {error}") from error
        self._schema_dialect: Literal["json_schema", "json_object"] = "json_schema"
        """How this server takes a schema: OpenAI's `json_schema` type, or llama-cpp-python's `json_object`."""

    async def generate(self, messages: list[Message], config: GenerateConfig) -> Completion:
        options = config.sampling_options()
        options[self._max_tokens_param] = config.max_tokens
        schema_form = {"type": "json_object", "schema": config.json_schema.schema} if config.json_schema else None
        if schema_form is not None and self._schema_dialect == "json_object":
            options["response_format"] = schema_form
        response = await self._post(messages, options)
        if schema_form is not None and self._schema_dialect == "json_schema" and _rejects_format(response):
            # llama-cpp-python's server knows only `json_object` with a `schema` beside it (it answers the
            # `json_schema` type with a 500 naming `response_format`): try its form once, and keep it for this
            # server if it is accepted.
            retried = await self._post(messages, {**options, "response_format": schema_form})
            if retried.status < 300:
                self._schema_dialect = "json_object"
                self.info.extra["schema_format"] = "json_object+schema"
                response = retried
        if response.status >= 300:
            raise self._status_error(response)
        return self._completion(response.body)

    async def _post(self, messages: list[Message], options: dict[str, Any]) -> Response:
        try:
            body = request_body(self.info.model, messages, options)
        except orjson.JSONEncodeError:  # text json escapes and orjson refuses (a lone surrogate from bad data)
            body = json.dumps({"model": self.info.model, "messages": messages, **options}).encode()
        try:
            return await self._client.post_json("/chat/completions", body)
        except TimeoutError as error:
            raise TransientLLMError(f"{self._where}: no reply within {self._client.timeout_s:g} s") from error
        except (OSError, EOFError, ProtocolError) as error:  # refused, reset, TLS, closed mid-reply, garbled
            raise TransientLLMError(f"{self._where}: connection failed: {type(error).__name__}: {error}") from error

    def _status_error(self, response: Response) -> LLMError:
        message = f"{self._where}: HTTP {response.status}: {_server_message(response.body)}"
        if self._key != LOCAL_API_KEY:  # a server may echo what it was sent
            message = message.replace(self._key, "***")
        if _transient_status(response.status):
            return TransientLLMError(message, retry_after_s=parse_retry_after(response.headers.get("retry-after")))
        return LLMError(message)

    def _completion(self, body: bytes) -> Completion:
        # Malformed 200s (a proxy's error page, a server cut short) are transient: the next attempt may be whole.
        try:
            reply = json.loads(body)
        except ValueError as error:
            raise TransientLLMError(f"{self._where}: the reply is not JSON: {body[:80]!r}") from error
        choices = reply.get("choices") if isinstance(reply, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not (isinstance(choice, dict) and isinstance(choice.get("message"), dict)):
            raise TransientLLMError(f"{self._where}: the reply has no choices with a message: {body[:80]!r}")
        content = choice["message"].get("content")
        usage = reply.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return Completion(
            text=content if isinstance(content, str) else "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
        )

    def count_tokens(self, text: str) -> int | None:
        return None

    async def aclose(self) -> None:
        await self._client.aclose()


def _encoded(text: str) -> bytes:
    return orjson.dumps(text)


_encoded_prefixes = PrefixMemo(_encoded)


def _encoded_content(content: str) -> bytes:
    """The JSON string of a message's content, its long prefix encoded once (JSON escapes character by
    character, so the encoding of prefix + rest is the two encodings joined without the quotes between)."""
    split = _encoded_prefixes.split(content)
    if split is None:
        return orjson.dumps(content)
    prefix, rest = split
    return b"".join((prefix[:-1], orjson.dumps(SEPARATOR + rest)[1:]))


def request_body(model: str, messages: list[Message], options: dict[str, Any]) -> bytes:
    """The chat-completions request as JSON bytes, messages last. orjson encodes a 100 KB prompt in ~0.07 ms of
    CPU (json: ~0.3), and a prefix remembered by `_encoded_content` in ~0.01."""
    head = orjson.dumps({"model": model, **options})
    encoded = [
        b'{"role":' + orjson.dumps(m["role"]) + b',"content":' + _encoded_content(m["content"]) + b"}" for m in messages
    ]
    return b"".join((head[:-1], b',"messages":[', b",".join(encoded), b"]}"))


def _rejects_format(response: Response) -> bool:
    return response.status in (400, 422, 500) and b"response_format" in response.body
