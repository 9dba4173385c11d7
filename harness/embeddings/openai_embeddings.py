"""`openai`: embeddings from the OpenAI API or any server that speaks its `/v1/embeddings` protocol (vLLM,
Text Embeddings Inference, Ollama, LM Studio...), through the official `openai` SDK.

The key policy and the error mapping are the chat backend's (`harness.llm.providers.openai_compat`), and
retries the shared bounded ones (`harness.llm.retry`): the SDK's own retries are switched off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import openai

from harness.embeddings.base import EmbedderInfo
from harness.llm.base import LLMError, TransientLLMError
from harness.llm.providers.openai_compat import classify_api_error, resolve_api_key
from harness.llm.retry import call_with_retries

DEFAULT_TIMEOUT_S = 60.0


class OpenAIEmbedder:
    """Embeds over HTTP with `openai.AsyncOpenAI().embeddings.create`; rows are L2-normalised float32.

    The vector size is not known until the server answers: `info.dim` is None until the first response,
    then `info` is replaced by one that carries it.

    Args:
        model: the embedding model name the server knows (`text-embedding-3-small`, or a local alias).
        base_url: the server's `/v1` URL; None for the OpenAI API (or `OPENAI_BASE_URL`).
        api_key: as for the chat backend: `OPENAI_API_KEY` for the OpenAI API only; a server named in the
            spec gets `HARNESS_SERVER_API_KEY` or a placeholder.
        timeout_s: per-request timeout in seconds.
        batch_size: texts per request (servers cap the inputs of one request).
        max_retries: retries of a transient failure (connection, timeout, rate limit, 5xx) per request.
        backoff_s: base delay of the exponential backoff between retries.
    """

    def __init__(
        self,
        model: str | None,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        batch_size: int = 256,
        max_retries: int = 3,
        backoff_s: float = 1.0,
    ) -> None:
        if not model:
            raise LLMError("the openai embedder needs a model name: openai:MODEL or openai:MODEL@http://host:port/v1")
        key = resolve_api_key(model, base_url, api_key)
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.info = EmbedderInfo(provider="openai", model=model, dim=None, base_url=base_url)
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.calls = 0
        self._client = openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout_s)

    @property
    def _where(self) -> str:
        return f"openai:{self.info.model}"

    async def _request(self, texts: list[str]) -> np.ndarray:
        try:
            response = await self._client.embeddings.create(model=self.info.model, input=texts, encoding_format="float")
        except openai.APIError as error:
            raise classify_api_error(error, self._where) from error
        rows = sorted(response.data, key=lambda item: item.index)
        if len(rows) != len(texts):
            raise TransientLLMError(f"{self._where}: {len(rows)} embeddings for {len(texts)} inputs")
        try:
            vectors = np.asarray([row.embedding for row in rows], dtype=np.float32)
        except ValueError as error:  # ragged rows, e.g. per-token vectors from a server without pooling
            raise LLMError(f"{self._where}: the server's embeddings are not one flat vector per input") from error
        if vectors.ndim != 2:
            raise LLMError(
                f"{self._where}: expected one flat vector per input, got an array of shape {vectors.shape} "
                "(a server that returns per-token vectors needs a pooling setting)"
            )
        if self.info.dim is None:
            self.info = dataclasses.replace(self.info, dim=int(vectors.shape[1]))
        elif vectors.shape[1] != self.info.dim:
            raise LLMError(f"{self._where}: vectors of size {vectors.shape[1]}, earlier ones had {self.info.dim}")
        return vectors

    async def _request_with_retries(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return await call_with_retries(
            lambda: self._request(texts), where=self._where, max_retries=self.max_retries, backoff_s=self.backoff_s
        )

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Raises `LLMCallFailed` once retries are exhausted or on a permanent error."""
        batches = [list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        if not batches:
            return np.zeros((0, self.info.dim or 0), dtype=np.float32)
        parts = await asyncio.gather(*(self._request_with_retries(batch) for batch in batches))
        vectors = np.concatenate(parts)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)

    async def aclose(self) -> None:
        await self._client.close()
