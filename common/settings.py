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
from pydantic import AfterValidator, BaseModel, ConfigDict, Tag, ValidationError, ValidationInfo

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


def _unwrap(annotation: Any) -> Any:
    """The annotation without `Annotated` metadata and without `| None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _union_members(annotation: Any) -> list[Any] | None:
    """The members of a union (None excluded), or None when the annotation is not a union."""
    core = _unwrap(annotation)
    if get_origin(core) in (Union, types.UnionType):
        return [m for m in get_args(core) if m is not type(None)]
    return None


def _carries_tag(model: type[BaseModel], tag: str) -> bool:
    """True when `tag` names `model` in a union: its class name, or the one value of a Literal field."""
    if model.__name__ == tag:
        return True
    for field in model.model_fields.values():
        if get_origin(field.annotation) is typing.Literal and get_args(field.annotation) == (tag,):
            return True
    return False


def _names_member(member: Any, tag: str) -> bool:
    """True when pydantic's union tag `tag` names this union member (`Tag(...)`, class name, Literal)."""
    metadata = get_args(member)[1:] if get_origin(member) is Annotated else ()
    if any(isinstance(meta, Tag) and meta.tag == tag for meta in metadata):
        return True
    core = _unwrap(member)
    return isinstance(core, type) and issubclass(core, BaseModel) and _carries_tag(core, tag)


def _step(annotation: Any, part: Any) -> list[Any]:
    """The annotations one key or index further inside `annotation` ([] when `part` does not fit)."""
    core = _unwrap(annotation)
    if isinstance(core, type) and issubclass(core, BaseModel):
        field = core.model_fields.get(str(part))
        return [field.annotation] if field is not None else []
    origin, args = get_origin(core), get_args(core)
    if origin in (list, set, frozenset, Sequence) and args:
        return [args[0]]
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return [args[0]]
        return [args[part]] if isinstance(part, int) and part < len(args) else list(args)
    if origin in (dict, Mapping) and len(args) == 2:
        return [args[1]]
    return []


def _walk(model: type[BaseModel], loc: Sequence[Any]) -> tuple[list[bool], list[Any]]:
    """Follow an error location through the model's annotations: for each part, whether it is a union tag
    pydantic inserted (not a key of the file), and the candidate annotations where the location ends."""
    current: list[Any] = [model]
    tags: list[bool] = []
    for part in loc:
        unions = [members for c in current if (members := _union_members(c)) is not None]
        if unions and isinstance(part, str):
            members = [m for group in unions for m in group]
            current = [m for m in members if _names_member(m, part)] or members
            tags.append(True)
            continue
        current = [n for c in current for n in _step(c, part)]
        tags.append(False)
    return tags, current


def _allowed_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names allowed at (raw, tagged) `loc` inside `model` (the union of candidates where the
    location is ambiguous)."""
    keys: set[str] = set()
    for annotation in _walk(model, loc)[1]:
        for member in _union_members(annotation) or [annotation]:
            core = _unwrap(member)
            if isinstance(core, type) and issubclass(core, BaseModel):
                keys.update(core.model_fields)
    return sorted(keys)


def validation_problems(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per problem: `field.path: message`, unknown keys with a hint and the allowed keys."""
    problems: list[str] = []
    for err in exc.errors():
        raw = list(err["loc"])
        loc = [p for p, is_tag in zip(raw, _walk(model, raw)[0], strict=True) if not is_tag]
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, raw[:-1])  # with the union tags, which pick the member
            # pydantic's own wording first: it is what users (and tests) search for
            msg = f"{err['msg']}: unknown key '{loc[-1]}'" + did_you_mean(str(loc[-1]), allowed)
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
                child = node[int(key)]
            else:
                child = node.setdefault(key, {})
                if child is None:
                    child = node[key] = {}
            if not isinstance(child, dict | list):
                _raise(error, f"cannot override '{dotted}': '{key}' is not a section")
            node = child
        if isinstance(node, dict):
            node[leaf] = value
        elif leaf.isdigit() and int(leaf) < len(node):
            node[int(leaf)] = value
        else:
            _raise(error, f"cannot override '{dotted}': no list item {leaf}")
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
