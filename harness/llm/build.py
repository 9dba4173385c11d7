"""Turn a model spec string (`openai:gpt-4o-mini`, `llamacpp`, `mock`) into a backend or a ready `Model`."""

from __future__ import annotations

from typing import Any, cast

from harness.llm.base import Backend
from harness.llm.cache import CallCache
from harness.llm.model import Model
from harness.llm.spec import parse_spec
from harness.plugins import BACKENDS


def build_backend(spec: str, **kwargs: object) -> Backend:
    """The backend a spec names, constructed with `(model, base_url, **kwargs)`.

    A spec without a model (`llamacpp`, `mock`) leaves the choice to the backend's default. An unknown
    provider raises the registry's `UnknownNameError`, which suggests close names.
    """
    parsed = parse_spec(spec)
    backend_class = cast(Any, BACKENDS.get(parsed.provider))
    return cast(Backend, backend_class(parsed.model, parsed.base_url, **kwargs))


def build_model(
    spec: str,
    cache: CallCache | None = None,
    max_retries: int = 3,
    max_concurrency: int = 8,
    *,
    backoff_s: float = 1.0,
    timeout_s: float | None = None,
    **backend_kwargs: object,
) -> Model:
    """A `Model` over the spec's backend, with the given cache, retry budget, concurrency limit and
    per-request timeout (`Model.timeout_s`; a backend's own timeout is one of `backend_kwargs`)."""
    backend = build_backend(spec, **backend_kwargs)
    return Model(
        backend,
        spec=spec,
        cache=cache,
        max_retries=max_retries,
        backoff_s=backoff_s,
        max_concurrency=max_concurrency,
        timeout_s=timeout_s,
    )
