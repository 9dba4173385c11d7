"""Reading what users hand the harness — files and `KEY=VALUE` options — with one-line errors.

Every message names the file (and line or field) or the option, what was expected and what was found, so
the CLI can print it as one `error:` line instead of a traceback or pydantic's multi-line report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

M = TypeVar("M", bound=BaseModel)

_SHOWN_PROBLEMS = 3


class InputError(ValueError):
    """A file or option given by the user is not what it must be."""


class OptionError(InputError):
    """A task or system was given an unknown option or a value it cannot take."""


def read_text(path: Path) -> str:
    """The file's text as UTF-8; a missing or unreadable file, or bytes that are not UTF-8, are an InputError
    naming the file (and the line and the offending byte)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: expected a readable file, got: {error.strerror or error}.") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputError(
            f"{path}: line {line}: expected UTF-8 text, found byte 0x{data[error.start]:02x} at offset "
            f"{error.start} (save the file as UTF-8)."
        ) from None


def short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_problems(error: ValidationError) -> str:
    """pydantic's errors on one line: `field 'a.b': <what it expects>, got <what it found>; ...`."""
    problems = [_problem(detail) for detail in error.errors(include_url=False)]
    more = len(problems) - _SHOWN_PROBLEMS
    return "; ".join(problems[:_SHOWN_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")


def _problem(detail: ErrorDetails) -> str:
    where = ".".join(map(str, detail["loc"]))
    if not where:  # the text as a whole, e.g. invalid JSON
        return detail["msg"]
    if detail["type"] == "missing":
        return f"field {where!r}: required, got nothing (field missing)"
    found = detail.get("input")
    return f"field {where!r}: {detail['msg']}, got {type(found).__name__} {short_repr(found)}"


def parse_options(kind: str, name: str, model: type[M], options: Mapping[str, object]) -> M:
    """Coerce the options of task or system `name` (strings from `-T`/`-S`) with `model`; unknown names and
    bad values are OptionErrors that list the valid options."""
    unknown = sorted(set(options) - set(model.model_fields))
    if unknown:
        raise OptionError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for {kind} {name!r}. "
            f"{describe_options(kind, model)}"
        )
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise OptionError(f"Invalid option for {kind} {name!r}: {problems}. {describe_options(kind, model)}") from None


def describe_options(kind: str, model: type[BaseModel]) -> str:
    if not model.model_fields:
        return f"This {kind} takes no options."
    parts = [
        f"{name} (default {field.default!r}){': ' + field.description if field.description else ''}"
        for name, field in model.model_fields.items()
    ]
    return "Valid options: " + "; ".join(parts) + "."
