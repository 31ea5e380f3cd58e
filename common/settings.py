"""The settings base every config in tuneloop is built on (serving/tuneloop settings, training configs,
eval suites, trigger policies, loop specs).

* `ConfigModel` - a pydantic base: unknown keys are errors, field docstrings are the documentation,
  defaults are validated too;
* `ConfigPath` - a path field: `~` and `$VARS` expanded, a relative path resolved against the folder of the
  file it was read from (the `base_dir` passed to `validate_config` / `load_config_file`);
* `load_config_file(Model, path, overrides=...)` - read YAML, apply dotted overrides
  (`train.max_steps=5`, `data.sources.0.path=...`), validate; `validate_config(Model, mapping)` - validate;
* every problem is reported at once, each with its field path and, for an unknown key, a "did you mean"
  and the keys allowed there (`SettingsError.problems`).

Each package raises its own error type (a subclass of `SettingsError`, or any exception built from a
message through `error=`), so callers keep catching what they caught before.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo

__all__ = [
    "ConfigModel",
    "ConfigPath",
    "SettingsError",
    "apply_overrides",
    "did_you_mean",
    "expand_path",
    "load_config_file",
    "read_yaml_mapping",
    "validate_config",
    "validation_problems",
]

M = TypeVar("M", bound=BaseModel)
ErrorFactory = Callable[[str], Exception]


class SettingsError(ValueError):
    """A settings file is missing, unreadable or invalid; `problems` holds one line per problem."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class ConfigModel(BaseModel):
    """Base of every settings section: unknown keys are errors; attribute docstrings document fields."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)


def expand_path(value: str | Path, base_dir: Path | None = None) -> Path:
    """`~` and `$VARS` expanded; a relative path joined to `base_dir` (when given) and normalised."""
    path = Path(os.path.expandvars(os.path.expanduser(str(value))))
    if base_dir is not None and not path.is_absolute():
        path = (base_dir / path).resolve()
    return path


def _resolve_against_context(value: Path, info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, Mapping) else {}
    base_dir = context.get("base_dir")
    return expand_path(value, Path(base_dir) if base_dir is not None else None)


ConfigPath = Annotated[Path, AfterValidator(_resolve_against_context)]
"""A path in a settings file: expanded, and relative to the file's folder when read from a file."""


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """` (did you mean 'x'?)` when a close match exists, else ``."""
    hint = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = get_origin(annotation)
    if origin is None:
        return []
    args = get_args(annotation)
    if origin is Annotated:
        return _models_in(args[0])
    if origin in (Union, types.UnionType, list, tuple, set, frozenset, dict, typing.Literal):
        found: list[type[BaseModel]] = []
        for arg in args:
            found.extend(_models_in(arg))
        return found
    return []


def _allowed_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names allowed at `loc` inside `model` (the union of candidates where the path is ambiguous)."""
    candidates: list[type[BaseModel]] = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for candidate in candidates:
            field = candidate.model_fields.get(str(part))
            if field is not None:
                nxt.extend(_models_in(field.annotation))
        if nxt:
            candidates = nxt
        # a part that names no field is a union tag (pydantic puts the member's tag in the path): stay
    keys: set[str] = set()
    for candidate in candidates:
        keys.update(candidate.model_fields)
    return sorted(keys)


def _is_tag(model: type[BaseModel], loc: Sequence[Any], index: int) -> bool:
    """True when `loc[index]` is a union member's tag pydantic inserted, not a key of the file."""
    part = loc[index]
    if not isinstance(part, str):
        return False
    allowed = _allowed_keys(model, [p for i, p in enumerate(loc[:index]) if not _is_tag(model, loc, i)])
    return part not in allowed and index < len(loc) - 1


def validation_problems(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per problem: `field.path: message`, unknown keys with a hint and the allowed keys."""
    problems: list[str] = []
    for err in exc.errors():
        raw = list(err["loc"])
        loc = [p for i, p in enumerate(raw) if not _is_tag(model, raw, i)]
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            msg = f"unknown key '{loc[-1]}'" + did_you_mean(str(loc[-1]), allowed)
            if allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
        line = f"{key}: {msg}"
        if line not in problems:
            problems.append(line)
    return problems


def _raise(error: ErrorFactory | None, message: str, problems: Sequence[str] = ()) -> typing.NoReturn:
    if error is None:
        raise SettingsError(message, problems)
    exc = error(message)
    if isinstance(exc, SettingsError) and not exc.problems:
        exc.problems = list(problems)
    raise exc


def validate_config(
    model: type[M],
    data: Any,
    *,
    what: str = "settings",
    base_dir: Path | None = None,
    error: ErrorFactory | None = None,
) -> M:
    """Validate a mapping as `model`; `ConfigPath` fields resolve against `base_dir`. Every problem is
    reported at once: `invalid <what>: <path>: <message>` (one per line when several)."""
    if not isinstance(data, Mapping):
        _raise(error, f"{what} must be a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(dict(data), context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = validation_problems(exc, model)
        detail = problems[0] if len(problems) == 1 else "\n  " + "\n  ".join(problems)
        _raise(error, f"invalid {what}: {detail}", problems)


def read_yaml_mapping(
    path: str | Path, *, what: str = "settings", error: ErrorFactory | None = None
) -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file is `{}`); missing, unreadable, not UTF-8,
    not YAML or not a mapping is an error naming the file."""
    file = Path(path).expanduser()
    if not file.is_file():
        _raise(error, f"{what} file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        _raise(error, f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})")
    except yaml.YAMLError as exc:
        _raise(error, f"{file} is not valid YAML: {exc}")
    except OSError as exc:
        _raise(error, f"cannot read {file}: {exc.strerror or exc}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        _raise(error, f"{file}: the top level must be a mapping of {what} keys")
    return data


def apply_overrides(
    data: dict[str, Any], overrides: Mapping[str, Any] | None, *, error: ErrorFactory | None = None
) -> dict[str, Any]:
    """Set dotted keys in a raw mapping in place (`train.max_steps`, `data.sources.0.path`); `None`
    values are skipped. A path that crosses a value that is not a section is an error naming it."""
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node: Any = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    _raise(error, f"cannot override '{dotted}': no list item {key}")
                node = node[int(key)]
                continue
            if not isinstance(node, dict):
                _raise(error, f"cannot override '{dotted}': '{key}' is not a section")
            child = node.setdefault(key, {})
            if child is None:
                child = node[key] = {}
            node = child
        if isinstance(node, list) and leaf.isdigit() and int(leaf) < len(node):
            node[int(leaf)] = value
        elif isinstance(node, dict):
            node[leaf] = value
        else:
            _raise(error, f"cannot override '{dotted}'")
    return data


def load_config_file(
    model: type[M],
    path: str | Path,
    *,
    what: str = "settings",
    overrides: Mapping[str, Any] | None = None,
    error: ErrorFactory | None = None,
) -> M:
    """Read a YAML file, apply dotted `overrides`, validate as `model` with paths relative to the file."""
    file = Path(path).expanduser()
    data = read_yaml_mapping(file, what=what, error=error)
    apply_overrides(data, overrides, error=error)
    return validate_config(model, data, what=what, base_dir=file.resolve().parent, error=error)
