"""Finding, fetching and checking a task's data file, and the errors task loaders raise.

A task names its official file as a `RemoteFile` (a plain URL: LoCoMo's raw GitHub file) or a `HubFile` (a
file of a Hugging Face hub repository at a pinned commit: LongMemEval, MSC). `resolve_data_file` looks in
this order and takes the first hit:

1. `--data-file` (`DataOptions.data_file`): exactly that path, taken as is (a subset or a local copy is
   allowed, so no checksum is checked; its sha256 is still recorded).
2. `--data-dir` or `$HARNESS_DATA_DIR`: the official file name, directly inside or one level down in the
   task's folder (`<data_dir>/locomo/locomo10.json`, the layout of `../shared/data`). Checked against the
   pinned sha256.
3. A cached copy. A `RemoteFile` in the harness's download cache (`--cache-dir`, else
   `$HARNESS_CACHE_DIR/data`, else `~/.cache/memory-harness/data`), laid out as
   `<cache>/<task>/<revision>/<file>` so two pinned revisions never overwrite each other. A `HubFile` in the
   user's Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`; `DataOptions.cache_dir` replaces it),
   which every tool using the hub shares. Checked against the pinned sha256.
4. A download, unless `HARNESS_OFFLINE` or `HF_HUB_OFFLINE` is set. A `RemoteFile` over httpx, streamed to a
   temporary file, checked, then renamed into the cache. A `HubFile` by `huggingface_hub.hf_hub_download`,
   so the hub's own settings apply: the token (`$HF_TOKEN` or `hf auth login`; never logged), a mirror
   (`$HF_ENDPOINT`), proxies, its progress bars. Either way a download whose sha256 differs from the pinned
   one is deleted, not kept.

A file whose checksum is not pinned is used with a warning; its sha256 is recorded so a run still says
which bytes it read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from harness.inputs import InputError, read_text, short_repr
from harness.paths import cache_root
from harness.task import DataFileInfo, DataOptions

logger = logging.getLogger(__name__)

OFFLINE_ENV_VARS = ("HARNESS_OFFLINE", "HF_HUB_OFFLINE")
_PROGRESS_MIN_BYTES = 1 << 20
_CHUNK = 1 << 20

T = TypeVar("T")
Origin = Literal["data-dir", "cache", "hf-cache", "download"]


class DataFileError(RuntimeError):
    """A task's data file could not be found, downloaded or verified."""


class ChecksumError(DataFileError):
    """A data file's sha256 differs from the pinned one."""


class DataFormatError(InputError):
    """A data file does not have the shape its loader expects."""


@dataclass(frozen=True, kw_only=True)
class DataFile:
    """What every official data file has, wherever it is downloaded from."""

    filename: str
    """The official file name, looked for in data folders (and its path in a hub repository)."""
    revision: str
    """The upstream commit that pins the file (or a branch name where no commit could be pinned)."""
    sha256: str | None = None
    """None when no checksum is pinned: the file is then used unchecked, with a warning."""
    subdir: str | None = None
    """The task's folder name under a data folder and in the harness cache (e.g. `locomo`)."""


@dataclass(frozen=True, kw_only=True)
class RemoteFile(DataFile):
    """A file at a plain URL, downloaded over httpx into the harness's own cache."""

    url: str
    size: int | None = None
    """The expected size in bytes, for the progress bar when the server sends no length."""

    @property
    def source(self) -> str:
        return self.url

    @property
    def fetch_hint(self) -> str:
        return f"Fetch it from {self.url} and put it in one of those places (or pass --data-dir / --data-file)."


@dataclass(frozen=True, kw_only=True)
class HubFile(DataFile):
    """A file of a Hugging Face hub repository, downloaded by huggingface_hub into the user's HF cache."""

    repo_id: str
    repo_type: Literal["dataset", "model"] = "dataset"

    @property
    def source(self) -> str:
        return f"the Hugging Face {self.repo_type} {self.repo_id} at revision {self.revision}"

    @property
    def fetch_hint(self) -> str:
        return (
            f"Fetch it into that cache while online with `hf download {self.repo_id} {self.filename} --repo-type "
            f"{self.repo_type} --revision {self.revision}`, or put it in a data folder (--data-dir) or pass "
            "--data-file."
        )


def resolve_data_file(remote: RemoteFile | HubFile, options: DataOptions) -> tuple[Path, DataFileInfo]:
    """Find (or fetch) `remote` as described in the module docstring; return its path and provenance."""
    if options.data_file:
        path = Path(options.data_file).expanduser()
        if not path.is_file():
            raise DataFileError(f"Data file {path} (given by --data-file) does not exist or is not a file.")
        info = DataFileInfo(path=str(path), origin="data-file", sha256=file_sha256(path), checksum_verified=False)
        return path, info

    looked: list[str] = []
    data_dir = options.data_dir or os.environ.get("HARNESS_DATA_DIR")
    if data_dir:
        root = Path(data_dir).expanduser()
        candidates = [root / remote.filename]
        if remote.subdir:
            candidates.append(root / remote.subdir / remote.filename)
        for candidate in candidates:
            looked.append(str(candidate))
            if candidate.is_file():
                return candidate, _checked(candidate, remote, "data-dir")
    else:
        looked.append("(no data folder: none was given by --data-dir or $HARNESS_DATA_DIR)")

    if isinstance(remote, HubFile):
        return _from_hub(remote, options, looked)
    cached = cache_path(remote, options)
    looked.append(str(cached))
    if cached.is_file():
        return cached, _checked(cached, remote, "cache")
    _refuse_if_offline(remote, looked)
    digest = download(remote, cached)
    return cached, _info(cached, remote, "download", digest)


def cache_path(remote: RemoteFile, options: DataOptions) -> Path:
    """Where a download of `remote` is kept: `<cache>/<subdir>/<revision>/<filename>`."""
    root = Path(options.cache_dir).expanduser() if options.cache_dir else cache_root() / "data"
    return root / (remote.subdir or "") / remote.revision / remote.filename


def download(remote: RemoteFile, target: Path) -> str:
    """Stream `remote.url` into `target` (atomically: temp file, verify, rename); return its sha256."""
    import httpx  # only a download needs it, not every command

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    hasher = hashlib.sha256()
    logger.info("Downloading %s from %s", remote.filename, remote.url)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            httpx.stream("GET", remote.url, follow_redirects=True, timeout=httpx.Timeout(30.0, read=300.0)) as resp,
        ):
            resp.raise_for_status()
            # A compressed transfer's Content-Length is not the size written, so the bar falls back to `size`.
            length = resp.headers.get("content-length")
            total = int(length) if length and "content-encoding" not in resp.headers else remote.size
            with _progress(remote.filename, total) as advance:
                for chunk in resp.iter_bytes(_CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    advance(len(chunk))
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise DataFileError(
            f"Could not download {remote.filename} from {remote.url}: {exc}. Check the network, or fetch the "
            "file yourself and pass --data-dir (the folder holding it) or --data-file."
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    digest = hasher.hexdigest()
    if _differs(remote, digest):
        tmp.unlink(missing_ok=True)
        raise ChecksumError(
            f"Checksum mismatch for {remote.filename} downloaded from {remote.url}: expected sha256 "
            f"{remote.sha256}, got {digest}. The upstream file may have changed; nothing was kept. To use a "
            "copy you trust anyway, pass --data-file <path> (it is then used unchecked)."
        )
    os.replace(tmp, target)
    return digest


def _from_hub(remote: HubFile, options: DataOptions, looked: list[str]) -> tuple[Path, DataFileInfo]:
    """The HF cache's copy of `remote`, else a download into that cache (see the module docstring)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_dir = Path(options.cache_dir).expanduser() if options.cache_dir else Path(constants.HF_HUB_CACHE)
    try:
        path = _hub_download(remote, cache_dir, local_files_only=True)
    except LocalEntryNotFoundError:
        looked.append(f"the Hugging Face cache ({cache_dir})")
    else:
        return path, _checked(path, remote, "hf-cache")

    _refuse_if_offline(remote, looked)
    logger.info("Downloading %s from %s (hub endpoint %s)", remote.filename, remote.source, constants.ENDPOINT)
    try:
        path = _hub_download(remote, cache_dir, local_files_only=False)
    except Exception as exc:  # huggingface_hub raises OSErrors and its HTTP client's own (non-OSError) errors
        raise _hub_error(remote, exc, cache_dir) from exc
    digest = file_sha256(path)
    if _differs(remote, digest):
        blob = path.resolve()
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)  # `path` itself where the cache holds copies instead of symlinks
        raise ChecksumError(
            f"Checksum mismatch for {remote.filename} downloaded from {remote.source} (hub endpoint "
            f"{constants.ENDPOINT}): expected sha256 {remote.sha256}, got {digest}. The upstream file or the "
            "mirror may have changed; nothing was kept. To use a copy you trust anyway, pass --data-file <path> "
            "(it is then used unchecked)."
        )
    return path, _info(path, remote, "download", digest)


def _hub_download(remote: HubFile, cache_dir: Path, *, local_files_only: bool) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(
            remote.repo_id,
            remote.filename,
            repo_type=remote.repo_type,
            revision=remote.revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
    )


def _hub_error(remote: HubFile, exc: Exception, cache_dir: Path) -> DataFileError:
    """huggingface_hub's error as one line: which file of which repository and revision, and what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub = constants.ENDPOINT
    login = "your login (`hf auth login` or HF_TOKEN)"
    yourself = "fetch the file yourself and pass --data-dir (the folder holding it) or --data-file"
    advice = f"To run without the hub: {yourself}"
    if isinstance(exc, GatedRepoError):
        page = f"{hub}/{'datasets/' if remote.repo_type == 'dataset' else ''}{remote.repo_id}"
        problem = f"{remote.repo_id} is gated"
        advice = f"Accept its terms at {page} with your account and check {login}, or {yourself}"
    elif isinstance(exc, RepositoryNotFoundError):
        problem = f"the hub at {hub} has no {remote.repo_type} {remote.repo_id} that your token can read"
        advice = f"Check HF_ENDPOINT if you use a mirror and {login} if it is private, or {yourself}"
    elif isinstance(exc, RevisionNotFoundError):
        problem = f"the hub at {hub} has no revision {remote.revision} of {remote.repo_id}"
        advice = f"A mirror may lack it, or it was removed upstream. {advice}"
    elif isinstance(exc, LocalEntryNotFoundError):
        cause = f" ({_one_line(exc.__cause__)})" if exc.__cause__ else ""
        problem = f"the hub at {hub} could not be reached{cause} and the file is not in the HF cache ({cache_dir})"
        advice = f"Check the network, the proxy or HF_ENDPOINT, or {yourself}"
    elif isinstance(exc, EntryNotFoundError):
        problem = f"revision {remote.revision} of {remote.repo_id} has no file {remote.filename}"
    elif isinstance(exc, HfHubHTTPError):
        problem = f"the hub at {hub} answered {_one_line(exc)}"
        advice = f"Check {login} and try again later, or {yourself}"
    else:
        problem = f"{type(exc).__name__}: {_one_line(exc)}"
        advice = f"Check the network and the proxy, or {yourself}"
    return DataFileError(f"Could not download {remote.filename} of {remote.source}: {problem}. {advice}.")


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _refuse_if_offline(remote: RemoteFile | HubFile, looked: list[str]) -> None:
    variable = next((name for name in OFFLINE_ENV_VARS if _truthy(os.environ.get(name))), None)
    if variable:
        places = "\n  ".join(looked)
        raise DataFileError(
            f"{remote.filename} ({remote.source}) is not available and {variable} is set, so it will not be "
            f"downloaded.\nLooked for it in:\n  {places}\n{remote.fetch_hint}"
        )


def _differs(remote: DataFile, digest: str) -> bool:
    return remote.sha256 is not None and digest != remote.sha256.lower()


def _checked(
    path: Path, remote: RemoteFile | HubFile, origin: Literal["data-dir", "cache", "hf-cache"]
) -> DataFileInfo:
    digest = file_sha256(path)
    if _differs(remote, digest):
        # Deleting a hub cache entry's link alone is not enough: huggingface_hub would re-link the same blob.
        also = f" and the blob it links to ({path.resolve()})" if origin == "hf-cache" else ""
        fix = f"delete it{also} and re-download it from {remote.source} (the harness does this itself when absent)"
        raise ChecksumError(
            f"Checksum mismatch for {path}: expected sha256 {remote.sha256} (the {remote.filename} of revision "
            f"{remote.revision}), got {digest}. To fix: {fix}, or pass --data-file {path} to use it unchecked."
        )
    return _info(path, remote, origin, digest)


def _info(path: Path, remote: DataFile, origin: Origin, digest: str) -> DataFileInfo:
    verified = remote.sha256 is not None
    if not verified:
        logger.warning("No sha256 is pinned for %s; using %s unchecked (sha256 %s).", remote.filename, path, digest)
    # A data-dir file that no checksum ties to the pinned revision could be any release.
    revision = remote.revision if verified or origin != "data-dir" else None
    return DataFileInfo(path=str(path), origin=origin, sha256=digest, checksum_verified=verified, revision=revision)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr for big (or unknown-size) downloads; a no-op for small ones."""
    if total is not None and total < _PROGRESS_MIN_BYTES:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task_id = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task_id, n)


# --- helpers for task loaders: reading JSON records and options with errors that say where ------------------


def load_json(path: Path) -> object:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from exc


def json_list_records(path: Path, what: str, id_field: str) -> Iterator[tuple[Record, dict[str, Any], str]]:
    """The objects of a file holding a JSON list of `what`s, each with its `Record` (for errors that name the
    file, the record and the field) and its id, checked to be a unique string."""
    raw = load_json(path)
    if not isinstance(raw, list):
        raise DataFormatError(f"{path}: expected a JSON list of {what}s, got {type(raw).__name__}.")
    seen: set[str] = set()
    for index, item in enumerate(raw):
        rec = Record(path, f"{what} #{index}")
        item = rec.expect(item, dict, f"({what})")
        record_id = rec.get(item, id_field, str)
        if record_id in seen:
            raise rec.error(id_field, "a unique id", record_id)
        seen.add(record_id)
        yield Record(path, f"{what} #{index} ({record_id})"), item, record_id


@dataclass(frozen=True)
class Record:
    """One record of a data file (e.g. `sample conv-26`, `line 3`), for error messages that say where."""

    path: Path
    record: str

    def error(self, field: str, expected: str, got: object) -> DataFormatError:
        shown = "nothing (field missing)" if got is _MISSING else f"{type(got).__name__} {short_repr(got)}"
        return self.invalid(field, f"expected {expected}, got {shown}")

    def invalid(self, field: str, problem: str) -> DataFormatError:
        return DataFormatError(f"{self.path}: {self.record}: field {field!r}: {problem}.")

    def get(self, obj: Mapping[str, object], key: str, kind: type[T], at: str = "") -> T:
        """`obj[key]`, which must exist and be a `kind`; `at` is the path of `obj` inside the record."""
        value = obj.get(key, _MISSING)
        return self.expect(value, kind, f"{at}.{key}" if at else key)

    def get_optional(self, obj: Mapping[str, object], key: str, kind: type[T], at: str = "") -> T | None:
        value = obj.get(key)
        return None if value is None else self.expect(value, kind, f"{at}.{key}" if at else key)

    def get_text(self, obj: Mapping[str, object], key: str, at: str = "") -> str:
        """A string field that may be stored as an integer (answers like `2022`), returned as a string."""
        value = obj.get(key, _MISSING)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self.error(f"{at}.{key}" if at else key, "a string or an integer", value)
        return str(value)

    def expect(self, value: object, kind: type[T], field: str) -> T:
        # bool is an int to isinstance, but never what a field typed int means.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(field, _KIND_NAMES.get(kind, kind.__name__), value)
        return value


_MISSING = object()
_KIND_NAMES: dict[type, str] = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "a bool"}
